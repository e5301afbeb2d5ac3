#!/usr/bin/env python3
"""Compare mask logits produced elsewhere (e.g. by the Rust runtime) with ONNX Runtime.

    avseg-check-ort --model models/tiny-tpavi \\
        --logmel tests/data/tiny_ort/audio_logmel.npy --frames tests/data/tiny_ort/frames.npy \\
        --logits /tmp/rust_logits.npy [--embedding /tmp/rust_embedding.npy] [--tol 1e-4]

Runs the package's audio encoder and segmenter in ORT on the given inputs and
prints the max/mean abs difference and the binary-mask agreement. For a two-stage (`bavs`)
package the logits are the segmenter's class logits and `--tags` compares the tagger's scores. Exit status:
0 within tolerance, 1 above it, 2 on a shape mismatch or non-finite values.
"""

from __future__ import annotations

import argparse
import math
import sys

import numpy as np

from avseg_export.package import read_package
from avseg_tools.ort_reference import run_package


def compare(label, got, want, tol):
    if got.shape != want.shape:
        print(f"{label}: shape {list(got.shape)} != ORT {list(want.shape)}")
        return 2
    if not np.isfinite(got).all():
        print(f"{label}: non-finite values")
        return 2
    d = np.abs(got.astype(np.float64) - want.astype(np.float64))
    status = 0 if d.max() <= tol else 1
    print(f"{label}: max|diff| {d.max():.3e}  mean|diff| {d.mean():.3e}  (tol {tol:.1e})  "
          f"{'OK' if status == 0 else 'ABOVE TOLERANCE'}")
    return status


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--logmel", required=True)
    ap.add_argument("--frames", required=True)
    ap.add_argument("--logits", required=True)
    ap.add_argument("--embedding", help="optional audio embedding to compare as well")
    ap.add_argument("--tags", help="a two-stage package's tag scores (`avseg segment --save-logits`: tags.npy) "
                                   "to compare as well")
    ap.add_argument("--tol", type=float, default=1e-4)
    args = ap.parse_args()

    meta, _, _ = read_package(args.model)
    logmel = np.load(args.logmel).astype(np.float32)
    frames = np.load(args.frames).astype(np.float32)
    got = np.load(args.logits)
    emb, want = run_package(args.model, logmel, frames)

    status = 0
    two_stage = meta["family"] == "bavs"
    if args.embedding and two_stage:
        print("--embedding: a two-stage (bavs) package has no audio embedding; compare its tagger with --tags")
        sys.exit(2)
    if args.embedding:
        status = max(status, compare("audio_embedding", np.load(args.embedding), emb, args.tol))
    if args.tags:
        if not two_stage:
            print("--tags: the package is not two-stage (bavs)")
            sys.exit(2)
        status = max(status, compare("tag_scores", np.load(args.tags), emb, args.tol))
    s = compare("class_logits" if two_stage else "mask_logits", got, want, args.tol)
    status = max(status, s)
    if s != 2 and meta["output"]["kind"] == "binary":
        thr = float(meta["output"]["threshold"])
        cut = math.log(thr / (1.0 - thr))          # sigmoid(x) > thr  <=>  x > logit(thr)
        agree = ((got > cut) == (want > cut)).mean()
        print(f"mask agreement (sigmoid > {thr}): {100 * agree:.4f} %  "
              f"({int(((got > cut) != (want > cut)).sum())} of {got.size} pixels differ)")
    elif s != 2:
        agree = (got.argmax(axis=1) == want.argmax(axis=1)).mean()
        print(f"argmax agreement: {100 * agree:.4f} %")
    sys.exit(status)


if __name__ == "__main__":
    main()
