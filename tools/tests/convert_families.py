#!/usr/bin/env python3
"""Every official family through `avseg convert`, then tract vs ONNX Runtime on the result.

    python tools/tests/convert_families.py --avseg target/debug/avseg [--sample models/sample] \\
        [--family NAME ...] [--size 96] [--tol 1e-4] [--keep DIR]

For each of the eight `--family` values of `avseg convert`: write a width-reduced random
checkpoint in the official key layout as .safetensors (TPAVI: plus a separate VGGish file, as
`vggish-10086976.pth` is; AVSegFormer: VGGish inside under `vggish.`), convert it with the avseg
binary exactly as a user would, run `avseg segment --save-logits` on the sample clip and compare
the logits with ONNX Runtime on the same package and inputs (tract_families.check_clip).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
TOOLS = HERE.parent
sys.path.insert(0, str(TOOLS))
sys.path.insert(0, str(HERE))

import make_family_fixture as tpavi_fixtures  # noqa: E402
from fixtures_avsegformer import export_options, make_avsegformer_fixture  # noqa: E402
from tract_families import _fresh, check_clip  # noqa: E402
from avseg_export.weights import write_safetensors  # noqa: E402

# family -> (fixture maker, AVSegFormer variant or None)
FAMILIES = {
    "tpavi-r50": "tpavi-r50", "tpavi-pvt": "tpavi-pvt", "tpavi-r50-avss": "tpavi-r50-avss",
    "tpavi-pvt-avss": "tpavi-pvt-avss",
    "avsegformer-r50": "s4", "avsegformer-pvt": "pvt-s4", "avsegformer-r50-avss": "avss",
    "avsegformer-pvt-avss": "pvt-avss",
}


def checkpoint(family: str, seed: int, out: Path) -> tuple[list[str], dict]:
    """Write the fixture; return the convert arguments naming its files, and export options."""
    fixture = FAMILIES[family]
    if family.startswith("tpavi"):
        fx = tpavi_fixtures.make(fixture, seed)
        ckpt, vgg = tpavi_fixtures.write(fx, seed, out / "checkpoint.safetensors", out / "vggish.safetensors")
        return ["--checkpoint", ckpt, "--vggish", vgg], dict(fx.export)
    write_safetensors(out / "checkpoint.safetensors", make_avsegformer_fixture(seed, fixture))
    return ["--checkpoint", out / "checkpoint.safetensors"], export_options(fixture)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--avseg", required=True)
    ap.add_argument("--sample", default=str(TOOLS.parent / "models" / "sample"))
    ap.add_argument("--family", action="append", choices=list(FAMILIES))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=96, help="package input size (multiple of 32)")
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--keep")
    args = ap.parse_args()
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.keep) if args.keep else Path(tmp)
        for fam in args.family or FAMILIES:
            work = _fresh(root / fam)
            files, options = checkpoint(fam, args.seed, work)
            pkg = work / "package"
            cmd = [args.avseg, "convert", "--family", fam, *files, "--out", pkg, "--size", args.size]
            if "pvt_head_dim" in options:
                cmd += ["--pvt-head-dim", options["pvt_head_dim"]]
            r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
            if r.returncode:
                print(f"{fam}: avseg convert failed:\n{r.stdout}{r.stderr}")
                ok = False
                continue
            ok &= check_clip(args.avseg, pkg, Path(args.sample), _fresh(work / "run"), 5, args.tol,
                             f"{fam} via avseg convert")
    print("OK" if ok else "FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
