#!/usr/bin/env python3
"""Full-size TPAVI-PVT (PVT-v2-b5 widths) from a random official-layout state dict: builds, runs in ORT.

    python -m avseg_tools.fullsize_tpavi_pvt [--runs 3] [--avss]

Not part of CI (about 400 MB of weights and a few GB of RAM). Checks the key
count and parameter count against docs/spec/tpavi.md §6.10 (1,190 keys; 101,320,577
parameters, 81,443,008 of them in the encoder), exports at 224 with the
default head rule (C // 64 -> 1, 2, 5, 8), and times ORT on one 5-frame clip
(10 frames, two groups, with --avss).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from avseg_export.ort import session
from avseg_export.tpavi import PVT_PREFIX, build_tpavi
from avseg_tools.fixtures.tpavi import random_pvt

DIMS, DEPTHS = (64, 128, 320, 512), (3, 6, 40, 3)
C, CP, AUDIO = 256, 128, 128


def official_random(rng, avss):
    sd = random_pvt(rng, PVT_PREFIX, dims=DIMS, depths=DEPTHS)
    f = lambda *s: (0.02 * rng.standard_normal(s)).astype(np.float32)
    for k, c_in in enumerate(DIMS, start=1):
        for i in range(4):
            sd[f"conv{k}.conv2d_list.{i}.weight"], sd[f"conv{k}.conv2d_list.{i}.bias"] = f(C, c_in, 3, 3), f(C)
    for k in range(1, 5):
        p = f"tpavi_b{k}"
        sd[p + ".align_channel.weight"] = f(C, AUDIO)
        if not avss:
            sd[p + ".align_channel.bias"] = f(C)
        for n in ("theta", "phi", "g"):
            sd[f"{p}.{n}.weight"], sd[f"{p}.{n}.bias"] = f(CP, C, 1, 1, 1), f(CP)
        sd[p + ".W_z.0.weight"], sd[p + ".W_z.0.bias"] = f(C, CP, 1, 1, 1), f(C)
        sd[p + ".W_z.1.weight"], sd[p + ".W_z.1.bias"] = f(C) + 0.5, f(C)
        sd[p + ".W_z.1.running_mean"], sd[p + ".W_z.1.running_var"] = f(C), np.ones(C, np.float32)
        sd[p + ".W_z.1.num_batches_tracked"] = np.array(0, np.int64)
        sd[p + ".norm_layer.weight"], sd[p + ".norm_layer.bias"] = np.ones(C, np.float32), f(C)
    for k in (4, 3, 2, 1):
        for u in (1, 2):          # path4.resConfUnit1 is dead but present in the checkpoint
            for j in (1, 2):
                sd[f"path{k}.resConfUnit{u}.conv{j}.weight"] = f(C, C, 3, 3)
                sd[f"path{k}.resConfUnit{u}.conv{j}.bias"] = f(C)
    classes = 71 if avss else 1
    for i, (o, c_in, k) in zip((0, 2, 4), ((128, C, 3), (32, 128, 3), (classes, 32, 1))):
        sd[f"output_conv.{i}.weight"], sd[f"output_conv.{i}.bias"] = f(o, c_in, k, k), f(o)
    return sd


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--avss", action="store_true")
    args = ap.parse_args()
    sd = official_random(np.random.default_rng(0), args.avss)
    params = sum(v.size for k, v in sd.items() if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
    enc = sum(v.size for k, v in sd.items() if k.startswith(PVT_PREFIX))
    print(f"state dict: {len(sd)} keys, {params:,} parameters ({enc:,} in encoder_backbone)")
    t = 10 if args.avss else 5
    t0 = time.perf_counter()
    model, info = build_tpavi(sd, frames=t, height=224, width=224)
    t1 = time.perf_counter()
    ops = {}
    for n in model.graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    print(f"export {t1 - t0:.1f} s: {len(model.graph.node)} nodes, {info['parameters']:,} initializer elements, "
          f"groups {info['tpavi_groups']}; ops {dict(sorted(ops.items(), key=lambda kv: -kv[1]))}")
    sess = session(model, threads=args.threads)
    rng = np.random.default_rng(1)
    feeds = {"frames": rng.standard_normal((t, 3, 224, 224)).astype(np.float32),
             "audio_embedding": np.abs(rng.standard_normal((t, AUDIO))).astype(np.float32)}
    for r in range(args.runs):
        s = time.perf_counter()
        out = sess.run(["mask_logits"], feeds)[0]
        print(f"ORT run {r}: {time.perf_counter() - s:.2f} s, logits {list(out.shape)}, finite {bool(np.isfinite(out).all())}")


if __name__ == "__main__":
    main()
