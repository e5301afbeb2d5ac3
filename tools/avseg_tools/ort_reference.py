#!/usr/bin/env python3
"""ONNX Runtime reference outputs of a model package, for the Rust runtime's tests.

    avseg-ort-reference --model models/tiny-tpavi --out tests/data/tiny_ort

Writes seeded inputs and ORT outputs as .npy (float32, C order):
  audio_logmel.npy [T,1,96,64]   uniform in [-4.6, 2] (the range of real VGGish log-mel)
  frames.npy       [T,3,H,W]     N(0,1), i.e. already mean/std-normalised
  audio_embedding.npy [T,D]      audio_encoder(audio_logmel)
  mask_logits.npy  [T,K,H,W]     segmenter(frames, audio_embedding)
ORT runs on the CPU provider with one thread, so reruns are bit-identical.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from avseg_export.ort import session
from avseg_export.package import read_package


def run_package(model_dir, logmel, frames):
    """(audio output, segmenter output) under ORT: the embedding and the mask logits, or for a
    two-stage (`bavs`) package the tag scores and the class logits (the segmenter sees frames only)."""
    meta, audio_path, seg_path = read_package(model_dir)
    if meta["family"] == "bavs":
        tags = session(audio_path).run(["tag_scores"], {"audio_logmel": logmel})[0]
        return tags, session(seg_path).run(["class_logits"], {"frames": frames})[0]
    emb = session(audio_path).run(["audio_embedding"], {"audio_logmel": logmel})[0]
    logits = session(seg_path).run(["mask_logits"], {"frames": frames, "audio_embedding": emb})[0]
    return emb, logits


def describe(name, a):
    a = np.asarray(a)
    print(f"{name:<16} {str(list(a.shape)):<18} min {a.min():+.4f} max {a.max():+.4f} "
          f"mean {a.mean():+.4f} std {a.std():.4f} finite {bool(np.isfinite(a).all())}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="models/tiny-tpavi")
    ap.add_argument("--out", default="tests/data/tiny_ort")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    meta, _, _ = read_package(args.model)
    t = meta["frames_per_clip"]
    h, w = meta["vision"]["height"], meta["vision"]["width"]
    rng = np.random.default_rng(args.seed)
    logmel = rng.uniform(-4.6, 2.0, (t, 1, 96, 64)).astype(np.float32)
    frames = rng.standard_normal((t, 3, h, w)).astype(np.float32)
    emb, logits = run_package(args.model, logmel, frames)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, arr in (("audio_logmel", logmel), ("frames", frames),
                      ("audio_embedding", emb), ("mask_logits", logits)):
        np.save(out / f"{name}.npy", np.ascontiguousarray(arr, dtype=np.float32))
        describe(name, arr)

    fg = (logits > 0).mean(axis=(1, 2, 3))
    print("foreground fraction per frame (logit > 0):", " ".join(f"{v:.3f}" for v in fg))
    ok = np.isfinite(logits).all() and logits.std() > 0 and (logits > 0).any() and (logits < 0).any()
    print("sanity:", "OK (finite, non-constant, both signs)" if ok else "FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
