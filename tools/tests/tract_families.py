#!/usr/bin/env python3
"""tract (the avseg binary) vs ONNX Runtime on packages of the family fixtures.

    python tools/tests/tract_families.py --avseg target/release/avseg [--sample models/sample] \\
        [--family NAME ...] [--tol 1e-4] [--keep DIR]

For each family: make the fixture (make_family_fixture.py), write a 224x224
(--size) package (write_package; AVSS packages are T = 10, semantic with the 71 AVSS
labels and palette, zero patch padding, PIL-style resize), then
`avseg features` + `avseg segment --save-logits` on the sample clip, and
compare the logits with ORT run on the very inputs `avseg features` wrote.
`--size 96` keeps a debug-build run short (as in tools/test.sh).

The comparison follows Engine::run_clip: a clip of n frames runs as
ceil(n / T) windows, a short last window repeats its last frame, and only the
n real outputs are kept. So the 5-frame sample through a T = 10 package fills
frames 5..9 with copies of frame 4 (outputs dropped); group independence
makes frames 0..4 exactly the v1 result. AVSS packages are also run on a
10-frame clip (sample frames 1..5 then 5..1, audio twice as long) so the second
TPAVI group is checked in tract too.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import wave
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
TOOLS = HERE.parent
sys.path.insert(0, str(TOOLS))
sys.path.insert(0, str(HERE))

import make_family_fixture as fixtures  # noqa: E402
from avseg_export.labels import avss_output  # noqa: E402
from avseg_export.package import manifest, write_package  # noqa: E402
from avseg_export.tpavi import build_tpavi  # noqa: E402
from avseg_export.vggish import build_vggish  # noqa: E402
from ort_reference import run_package  # noqa: E402

SIZE = 224
FAMILIES = ("tpavi-r50", "tpavi-pvt", "tpavi-r50-avss", "tpavi-pvt-avss")


def write_fixture_package(fx, seed, out_dir, size=SIZE):
    audio_model, ainfo = build_vggish(fx.vggish)
    seg_model, sinfo = build_tpavi(fx.checkpoint, frames=fx.frames, height=size, width=size, **fx.export)
    avss = sinfo["num_classes"] > 1
    meta = manifest(
        name=f"fixture-{fx.family}",
        description=f"Width-reduced random {fx.family} fixture for tract/ORT checks; its masks are meaningless",
        family="tpavi",
        frames_per_clip=fx.frames, width=size, height=size,
        embedding_dim=ainfo["embedding_dim"],
        output=avss_output() if avss else {"kind": "binary", "threshold": 0.5},
        resize="bilinear_pil" if avss else "bilinear_opencv",
        patch_padding="zeros" if avss else "repeat_last",
        provenance={
            "source": "tools/tests/make_family_fixture.py (official key layout, reduced widths)",
            "licence": "MIT OR Apache-2.0",
            "created_by": f"tools/tests/tract_families.py --seed {seed}",
            "trained": False,
            "parameters": ainfo["parameters"] + sinfo["parameters"],
            "metrics": {},
        },
    )
    return write_package(out_dir, meta, audio_model, seg_model)


def ten_frame_clip(sample: Path, out: Path) -> Path:
    """Sample frames 1..5 then 5..1 and the sample audio played twice: 10 frames, 10 s."""
    (out / "frames").mkdir(parents=True)
    frames = sorted((sample / "frames").iterdir(), key=lambda p: int(p.stem.rsplit("_", 1)[1]))
    for i, src in enumerate(frames + frames[::-1], start=1):
        shutil.copy(src, out / "frames" / f"frame_{i}{src.suffix}")
    with wave.open(str(sample / "audio.wav")) as w:
        params, pcm = w.getparams(), w.readframes(w.getnframes())
    with wave.open(str(out / "audio.wav"), "wb") as w:
        w.setparams(params)
        w.writeframes(pcm + pcm)
    return out


def run(cmd):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if r.returncode:
        sys.stderr.write(r.stdout + r.stderr)
        raise SystemExit(f"failed: {' '.join(map(str, cmd))}")


def check_clip(avseg, pkg, clip, work, t, tol, label):
    logmel, frames_npy, out = work / "logmel.npy", work / "frames.npy", work / "out"
    run([avseg, "features", "--model", pkg, "--audio", clip / "audio.wav", "--out", logmel,
         "--frames", clip / "frames", "--frames-out", frames_npy])
    run([avseg, "segment", "--model", pkg, "--clip", clip, "--out", out, "--save-logits"])
    got = np.load(out / "logits.npy")
    frames = np.load(frames_npy).astype(np.float32)
    mel = np.load(logmel).astype(np.float32)
    n = frames.shape[0]
    if n > t or mel.shape[0] != t:
        raise SystemExit(f"{label}: expected one window (n = {n} <= T = {t}, {t} patches), got {mel.shape[0]} patches")
    # As Engine::run_clip: complete the window by repeating the last real frame, keep n outputs.
    window = np.concatenate([frames, np.repeat(frames[-1:], t - n, axis=0)])
    _, want = run_package(pkg, mel, window)
    want = want[:n]
    if got.shape != want.shape:
        print(f"{label}: tract logits {list(got.shape)} != ORT {list(want.shape)}")
        return False
    d = np.abs(got.astype(np.float64) - want).max()
    if want.shape[1] > 1:
        agree = f"argmax agreement {100 * (got.argmax(1) == want.argmax(1)).mean():.4f} %"
    else:
        agree = f"mask agreement {100 * ((got > 0) == (want > 0)).mean():.4f} %"
    print(f"{label:<34} tract vs ORT: max|diff| {d:.3e} (max|ORT| {np.abs(want).max():.3g}, tol {tol:.0e}), {agree}")
    return bool(d <= tol)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--avseg", required=True, help="avseg binary")
    ap.add_argument("--sample", default=str(TOOLS.parent / "models" / "sample"))
    ap.add_argument("--family", action="append", choices=FAMILIES)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--size", type=int, default=SIZE, help="package input size (smaller is faster with a debug build)")
    ap.add_argument("--keep", help="write packages and outputs here instead of a temporary folder")
    args = ap.parse_args()
    sample = Path(args.sample)
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.keep) if args.keep else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        for fam in args.family or FAMILIES:
            fx = fixtures.make(fam, args.seed)
            pkg = write_fixture_package(fx, args.seed, root / fam / "package", size=args.size)
            ok &= check_clip(args.avseg, pkg, sample, _fresh(root / fam / "sample5"), fx.frames, args.tol,
                             f"{fam} (T={fx.frames}) 5-frame sample")
            if fx.frames >= 10:
                clip = ten_frame_clip(sample, _fresh(root / fam / "clip10"))
                ok &= check_clip(args.avseg, pkg, clip, _fresh(root / fam / "run10"), fx.frames, args.tol,
                                 f"{fam} (T={fx.frames}) 10-frame clip")
    print("OK" if ok else "FAILED")
    sys.exit(0 if ok else 1)


def _fresh(p: Path) -> Path:
    if p.exists():
        shutil.rmtree(p)
    p.mkdir(parents=True)
    return p


if __name__ == "__main__":
    main()
