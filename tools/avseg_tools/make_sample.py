#!/usr/bin/env python3
"""Write the redistributable sample clip in AVSBench S4 layout.

    avseg-make-sample --out models/sample

Produces frames/sample_{1..5}.png (400x300 crops of scikit-image's CC0
`chelsea.png`) and audio.wav (5.0 s, 44.1 kHz, stereo, s16, synthesized here).
Deterministic: rerunning gives byte-identical files.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

from avseg_export import sample


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="models/sample")
    ap.add_argument("--seed", type=int, default=0, help="seed of the audio noise")
    args = ap.parse_args()

    from PIL import Image

    out = Path(args.out)
    (out / "frames").mkdir(parents=True, exist_ok=True)
    written = []
    for i, f in enumerate(sample.sample_frames(), start=1):
        p = out / "frames" / f"sample_{i}.png"
        Image.fromarray(f).save(p, format="PNG", optimize=False, compress_level=9)
        written.append(p)
    wav = out / "audio.wav"
    sample.write_wav(wav, sample.synth_audio(args.seed))
    written.append(wav)
    for p in written:
        print(f"{hashlib.sha256(p.read_bytes()).hexdigest()[:16]}  {p.stat().st_size:>8}  {p}")
    print(f"photo: {sample.photo_path()} (scikit-image {sample.photo_version()})")


if __name__ == "__main__":
    main()
