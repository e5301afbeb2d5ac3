"""tract (the avseg binary, $AVSEG_BIN) vs ONNX Runtime on packages of the TPAVI family fixtures.

    AVSEG_BIN=target/debug/avseg .venv/bin/python -m pytest tools/tests/test_tract_families.py

For each family: make the width-reduced fixture (avseg_tools.fixtures.tpavi), write a 96x96
package (small, so a debug build stays quick), then `avseg features` + `avseg segment
--save-logits` on the sample clip, and compare the logits with ORT run on the very inputs
`avseg features` wrote (avseg_tools.tract_vs_ort.check_clip; tolerance 1e-4 max abs). AVSS
packages (T = 10) are also run on a 10-frame clip (sample frames 1..5 then 5..1, audio twice as
long) so the second TPAVI group is checked in tract too.

The CUDA runner on the emulated device (`--backend cuda-emulated`) is held to ORT the same way on
TPAVI-R50 and TPAVI-R50-AVSS (same tolerance; AVSS on the 10-frame clip too, where VGGish keeps an
einsum that sums three axes at once, the flatten folded into the first fully connected layer,
which the runner runs with its weights stored permuted). What it cannot run yet it must refuse
with an error naming the node, not crash: the PVT-v2 families (attention, GELU, softmax).
"""

from __future__ import annotations

import subprocess

import pytest

from avseg_tools.fixtures import tpavi as fixtures
from avseg_tools.tract_vs_ort import FAMILIES, check_clip, fresh, ten_frame_clip, write_fixture_package

SEED = 0
SIZE = 96
TOL = 1e-4


@pytest.mark.parametrize("family", FAMILIES)
def test_family(family, avseg_bin, sample_dir, tmp_path):
    fx = fixtures.make(family, SEED)
    pkg = write_fixture_package(fx, SEED, tmp_path / "package", size=SIZE)
    assert check_clip(avseg_bin, pkg, sample_dir, fresh(tmp_path / "sample5"), fx.frames, TOL,
                      f"{family} (T={fx.frames}) 5-frame sample")
    if fx.frames >= 10:
        clip = ten_frame_clip(sample_dir, fresh(tmp_path / "clip10"))
        assert check_clip(avseg_bin, pkg, clip, fresh(tmp_path / "run10"), fx.frames, TOL,
                          f"{family} (T={fx.frames}) 10-frame clip")


@pytest.mark.parametrize("family", FAMILIES)
def test_family_on_the_emulated_cuda_runner(family, avseg_bin, sample_dir, tmp_path):
    fx = fixtures.make(family, SEED)
    pkg = write_fixture_package(fx, SEED, tmp_path / "package", size=SIZE)
    if "pvt" in family:
        r = subprocess.run([avseg_bin, "segment", "--model", pkg, "--clip", sample_dir, "--out", tmp_path / "out",
                            "--backend", "cuda-emulated"], capture_output=True, text=True)
        assert r.returncode != 0 and "CUDA runner" in r.stderr and "panicked" not in r.stderr, r.stderr
        assert "(Softmax)" in r.stderr, r.stderr
        return
    assert check_clip(avseg_bin, pkg, sample_dir, fresh(tmp_path / "run"), fx.frames, TOL,
                      f"{family} (T={fx.frames}) emulated", backend="cuda-emulated")
    if fx.frames >= 10:
        clip = ten_frame_clip(sample_dir, fresh(tmp_path / "clip10"))
        assert check_clip(avseg_bin, pkg, clip, fresh(tmp_path / "run10"), fx.frames, TOL,
                          f"{family} (T={fx.frames}) 10-frame clip, emulated", backend="cuda-emulated")
