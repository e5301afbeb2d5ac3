"""Every official family through `avseg convert`, then tract vs ONNX Runtime on the result.

    AVSEG_BIN=target/debug/avseg .venv/bin/python -m pytest tools/tests/test_convert_families.py

For each of the eight `--family` values of `avseg convert`: write a width-reduced random
checkpoint in the official key layout as .safetensors (TPAVI: plus a separate VGGish file, as
`vggish-10086976.pth` is; AVSegFormer: VGGish inside under `vggish.`), convert it with the avseg
binary ($AVSEG_BIN) exactly as a user would (at 96x96), run `avseg segment --save-logits` on the
sample clip and compare the logits with ONNX Runtime on the same package and inputs
(avseg_tools.tract_vs_ort.check_clip; tolerance 1e-4 max abs). `avseg convert` runs this
interpreter (AVSEG_PYTHON is set to it).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from avseg_export.weights import write_safetensors
from avseg_tools.fixtures import tpavi as tpavi_fixtures
from avseg_tools.fixtures.avsegformer import export_options, make_avsegformer_fixture
from avseg_tools.tract_vs_ort import check_clip, fresh

SEED = 0
SIZE = 96          # package input size (multiple of 32)
TOL = 1e-4

# family -> fixture (TPAVI family or AVSegFormer variant)
FAMILIES = {
    "tpavi-r50": "tpavi-r50", "tpavi-pvt": "tpavi-pvt", "tpavi-r50-avss": "tpavi-r50-avss",
    "tpavi-pvt-avss": "tpavi-pvt-avss",
    "avsegformer-r50": "s4", "avsegformer-pvt": "pvt-s4", "avsegformer-r50-avss": "avss",
    "avsegformer-pvt-avss": "pvt-avss",
}


def checkpoint(family: str, seed: int, out: Path) -> tuple[list, dict]:
    """Write the fixture; return the convert arguments naming its files, and export options."""
    fixture = FAMILIES[family]
    if family.startswith("tpavi"):
        fx = tpavi_fixtures.make(fixture, seed)
        ckpt, vgg = tpavi_fixtures.write(fx, seed, out / "checkpoint.safetensors", out / "vggish.safetensors")
        return ["--checkpoint", ckpt, "--vggish", vgg], dict(fx.export)
    write_safetensors(out / "checkpoint.safetensors", make_avsegformer_fixture(seed, fixture))
    return ["--checkpoint", out / "checkpoint.safetensors"], export_options(fixture)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_convert(family, avseg_bin, sample_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("AVSEG_PYTHON", sys.executable)
    files, options = checkpoint(family, SEED, tmp_path)
    pkg = tmp_path / "package"
    cmd = [avseg_bin, "convert", "--family", family, *files, "--out", pkg, "--size", SIZE]
    if "pvt_head_dim" in options:
        cmd += ["--pvt-head-dim", options["pvt_head_dim"]]
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    assert r.returncode == 0, f"{family}: avseg convert failed:\n{r.stdout}{r.stderr}"
    assert check_clip(avseg_bin, pkg, sample_dir, fresh(tmp_path / "run"), 5, TOL, f"{family} via avseg convert")
