"""tract vs ONNX Runtime on width-reduced AVSegFormer packages, through the avseg CLI.

For each variant: build a fixture checkpoint (official key layout), export a
package (family "avsegformer", T = 5, 224x224), run `avseg features` and
`avseg segment --save-logits` on the bundled sample clip, then compare the
runtime's logits with ONNX Runtime via tools/check_ort.py.

    python tools/tests/test_avsegformer_tract.py --avseg target/debug/avseg \\
        [--sample models/sample] [--variants s4,avss-repeat,pvt-s4,pvt-avss] [--tol 1e-4] [--keep DIR]

Exits non-zero if any variant fails (check_ort's status).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TESTS = Path(__file__).resolve().parent
TOOLS = TESTS.parent
sys.path.insert(0, str(TOOLS))
sys.path.insert(0, str(TESTS))

from avseg_export.avsegformer import build_avsegformer, build_avsegformer_audio  # noqa: E402
from avseg_export.package import manifest, write_package  # noqa: E402
from fixtures_avsegformer import VARIANTS, export_options, make_avsegformer_fixture  # noqa: E402

T, SIZE = 5, 224


def export(variant, out_dir, seed=0):
    sd = make_avsegformer_fixture(seed, variant)
    audio_model, ainfo = build_avsegformer_audio(sd)
    seg_model, sinfo = build_avsegformer(sd, frames=T, height=SIZE, width=SIZE, **export_options(variant))
    pvt = variant.startswith("pvt-")
    avss = variant.removeprefix("pvt-").startswith("avss")
    if avss:
        k = sinfo["num_classes"]
        rng = np.random.default_rng(k)
        output = {"kind": "semantic", "labels": ["background"] + [f"class{i}" for i in range(1, k)],
                  "palette": [[0, 0, 0]] + rng.integers(0, 256, (k - 1, 3)).tolist()}
    else:
        output = {"kind": "binary", "threshold": 0.5}
    meta = manifest(
        name=f"tiny-avsegformer-{variant}" if pvt else f"tiny-avsegformer-r50-{variant}",
        description=(f"Width-reduced AVSegFormer-{'PVTv2' if pvt else 'R50'} with random weights (test fixture); "
                     "masks are meaningless"),
        family="avsegformer",
        frames_per_clip=T, width=SIZE, height=SIZE,
        embedding_dim=ainfo["embedding_dim"],
        output=output,
        resize="bilinear_pil" if avss else "bilinear_opencv",
        patch_padding="zeros" if avss else "repeat_last",
        provenance={
            "source": "tools/tests/fixtures_avsegformer.py (official AVSegFormer key layout, reduced widths)",
            "licence": "MIT OR Apache-2.0",
            "created_by": f"make_avsegformer_fixture({seed}, {variant!r}); build_avsegformer(**{export_options(variant)!r})",
            "trained": False,
            "parameters": ainfo["parameters"] + sinfo["parameters"],
            "metrics": {},
        },
    )
    return write_package(out_dir, meta, audio_model, seg_model)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--avseg", required=True, help="avseg binary")
    ap.add_argument("--sample", default=str(TOOLS.parent / "models" / "sample"))
    ap.add_argument("--variants", default="s4,avss-repeat,pvt-s4,pvt-avss")
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--python", default=sys.executable, help="python for tools/check_ort.py")
    ap.add_argument("--keep", help="work folder to keep (default: a temporary one)")
    args = ap.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    for v in variants:
        if v not in VARIANTS:
            ap.error(f"unknown variant {v}; one of {VARIANTS}")

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="avsegformer_tract_"))
    work.mkdir(parents=True, exist_ok=True)
    sample = Path(args.sample)
    status = 0
    for v in variants:
        pkg = export(v, work / v)
        d = work / f"{v}.run"
        d.mkdir(exist_ok=True)
        subprocess.run([args.avseg, "features", "--model", str(pkg), "--audio", str(sample / "audio.wav"),
                        "--out", str(d / "logmel.npy"), "--frames", str(sample / "frames"),
                        "--frames-out", str(d / "frames.npy")], check=True)
        t0 = time.time()
        subprocess.run([args.avseg, "segment", "--model", str(pkg), "--clip", str(sample),
                        "--out", str(d / "out"), "--save-logits"], check=True)
        print(f"[{v}] avseg segment (tract) {time.time() - t0:.1f} s")
        r = subprocess.run([args.python, str(TOOLS / "check_ort.py"), "--model", str(pkg),
                            "--logmel", str(d / "logmel.npy"), "--frames", str(d / "frames.npy"),
                            "--logits", str(d / "out" / "logits.npy"), "--tol", str(args.tol)])
        print(f"[{v}] {'PASS' if r.returncode == 0 else 'FAIL'}")
        status = max(status, r.returncode)
    sys.exit(status)


if __name__ == "__main__":
    main()
