#!/usr/bin/env python3
"""Full-size random checkpoints in the official key layout, for `avseg convert` + `avseg bench`.

    avseg-fullsize-checkpoints --out DIR [--family tpavi-r50 --family ...]

Writes DIR/<family>.safetensors (TPAVI: plus DIR/vggish.safetensors, the separate VGGish file) at
the official widths: TPAVI-R50 (ResNet-50, C = 256), TPAVI-PVT (PVT-v2-b5) and AVSegFormer-R50.
The weights are random (scaled so activations stay finite), so only timing and memory mean
anything. Not part of CI: about 1.5 GB of files.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from avseg_export.weights import write_safetensors
from avseg_tools import make_tiny_model as tiny

OFFICIAL = {"STEM": 64, "WIDTHS": (64, 128, 256, 512), "BLOCKS": (3, 4, 6, 3), "CHANNEL": 256,
            "TPAVI_INNER": 128, "HEAD": (128, 32), "VGG_CONVS": (64, 128, 256, 256, 512, 512),
            "VGG_FC": (4096, 4096, 128)}


def official_tiny_module():
    for k, v in OFFICIAL.items():
        setattr(tiny, k, v)
    return tiny


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--family", action="append", choices=("tpavi-r50", "tpavi-pvt", "avsegformer-r50"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    fams = args.family or ["tpavi-r50", "tpavi-pvt", "avsegformer-r50"]
    t = official_tiny_module()
    rng = np.random.default_rng(0)
    if any(f.startswith("tpavi") for f in fams):
        write_safetensors(args.out / "vggish.safetensors", t.random_vggish(rng))
    if "tpavi-r50" in fams:
        write_safetensors(args.out / "tpavi-r50.safetensors", t.random_tpavi(rng))
    if "tpavi-pvt" in fams:
        from avseg_tools.fullsize_tpavi_pvt import official_random
        write_safetensors(args.out / "tpavi-pvt.safetensors", official_random(rng, avss=False))
    if "avsegformer-r50" in fams:
        from avseg_tools.fixtures.avsegformer import make_avsegformer_fixture
        write_safetensors(args.out / "avsegformer-r50.safetensors", make_avsegformer_fixture(0, "s4", full_size=True))
    for p in sorted(args.out.glob("*.safetensors")):
        print(f"{p.stat().st_size / 1e6:9.1f} MB  {p}")


if __name__ == "__main__":
    main()
