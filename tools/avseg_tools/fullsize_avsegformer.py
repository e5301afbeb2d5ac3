"""Manual check (not for CI): the official-width AVSegFormer-R50 builds and runs in ONNX Runtime.

    python -m avseg_tools.fullsize_avsegformer [--sizes 224,512] [--threads 2] [--out DIR]

Random weights in the official key layout and widths (avseg_tools.fixtures.avsegformer
FULL_SIZE), T = 5. Prints build time, ONNX size, parameter counts and ORT
latency per 5-frame clip (first and second run), for comparison with
docs/spec/avsegformer.md §7.5 / docs/spec/checkpoints.md §13.3.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from avseg_export.avsegformer import build_avsegformer, build_avsegformer_audio
from avseg_export.ort import session
from avseg_tools.fixtures.avsegformer import make_avsegformer_fixture


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="224,512")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--variant", default="s4")
    ap.add_argument("--sampler", default="gather")
    ap.add_argument("--out", help="also save the segmenter ONNX files here")
    args = ap.parse_args()

    t0 = time.time()
    sd = make_avsegformer_fixture(0, args.variant, full_size=True)
    total = sum(int(v.size) for k, v in sd.items() if not k.endswith("num_batches_tracked"))
    print(f"checkpoint: {len(sd)} keys, {total:,} elements ({time.time() - t0:.1f} s to generate)")
    am, ainfo = build_avsegformer_audio(sd)
    print(f"audio encoder: {ainfo['parameters']:,} parameters, {len(am.SerializeToString()) / 1e6:.1f} MB")
    rng = np.random.default_rng(0)
    logmel = rng.uniform(-4.6, 2.0, (5, 1, 96, 64)).astype(np.float32)
    emb = session(am, args.threads).run(["audio_embedding"], {"audio_logmel": logmel})[0]
    for size in (int(s) for s in args.sizes.split(",")):
        t0 = time.time()
        model, info = build_avsegformer(sd, frames=5, height=size, width=size, sampler=args.sampler)
        blob = model.SerializeToString()
        t_build = time.time() - t0
        ops = {}
        for n in model.graph.node:
            ops[n.op_type] = ops.get(n.op_type, 0) + 1
        print(f"[{size}] build {t_build:.1f} s; segmenter ONNX {len(blob) / 1e6:.1f} MB, {len(model.graph.node)} nodes, "
              f"{info['parameters']:,} initializer parameters (+ VGGish {ainfo['parameters']:,} = "
              f"{info['parameters'] + ainfo['parameters']:,}); checkpoint elements used {info['checkpoint_elements_used']:,}")
        print(f"[{size}] ops: {dict(sorted(ops.items(), key=lambda kv: -kv[1]))}")
        if args.out:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            (Path(args.out) / f"segmenter_{size}.onnx").write_bytes(blob)
        sess = session(model, args.threads)
        del model, blob
        frames = rng.standard_normal((5, 3, size, size)).astype(np.float32)
        for run in (1, 2):
            t0 = time.time()
            out = sess.run(["mask_logits"], {"frames": frames, "audio_embedding": emb})[0]
            print(f"[{size}] ORT run {run} ({args.threads} threads): {time.time() - t0:.1f} s per 5-frame clip; "
                  f"logits {list(out.shape)} finite={bool(np.isfinite(out).all())} "
                  f"std {out.std():.3g} max|.| {np.abs(out).max():.3g}")
        del sess


if __name__ == "__main__":
    main()
