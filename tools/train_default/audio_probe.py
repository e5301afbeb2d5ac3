#!/usr/bin/env python3
"""Can the audio encoder tell the objects' sounds apart? A nearest-centroid probe on its embeddings.

    avseg-audio-probe --checkpoint RUN/checkpoint.safetensors \
        --cache RUN/cache_train [--worst 12] [--object household/dishes/glass.png ...]

Every one-second patch of the cache in which exactly one object sounds is embedded; each object's
centroid is the mean of its unit-length embeddings, and a patch counts as named when its nearest
centroid (cosine) is its own object's. Prints the overall share and the objects named worst,
with the object they are taken for. An object whose sound is named well but whose masks are still
missed has a visual, not an audio, problem. For the shipped model, `from_package.py` makes the
checkpoint.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from avseg_export.weights import read_safetensors
from train_default.model import VGGishLite

HERE = Path(__file__).resolve().parent


def load_audio_encoder(path: Path) -> VGGishLite:
    try:
        t = {k[len("vggish."):]: torch.from_numpy(v) for k, v in read_safetensors(path).items()
             if k.startswith("vggish.")}
    except (OSError, ValueError) as e:
        raise SystemExit(f"{path}: cannot read the checkpoint ({e})")
    try:
        enc = VGGishLite(width=t["features.0.weight"].shape[0], hidden=t["embeddings.0.weight"].shape[0],
                         dim=t["embeddings.4.weight"].shape[0])
        enc.load_state_dict(t)
    except (KeyError, RuntimeError) as e:
        raise SystemExit(f"{path}: not a train.py checkpoint with a VGGish-layout audio encoder ({e})")
    return enc.eval()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, required=True, help="train.py checkpoint.safetensors")
    ap.add_argument("--cache", type=Path, required=True, help="a train.py feature cache (cache_train or cache_val)")
    ap.add_argument("--worst", type=int, default=12)
    ap.add_argument("--object", action="append", default=[], help="also print this stamp's share (repeatable)")
    args = ap.parse_args()
    enc = load_audio_encoder(args.checkpoint)
    try:
        logmel = np.load(args.cache / "logmel.npy")
        labels = np.load(args.cache / "sound_labels.npy")
    except OSError as e:
        raise SystemExit(f"{args.cache}: not a train.py feature cache ({e})")
    stamps = sorted(s["path"] for s in json.loads((HERE.parent / "avsreg/sources.lock.json").read_text())["stamps"])
    if labels.shape[-1] != len(stamps):
        raise SystemExit(f"{args.cache}: {labels.shape[-1]} sound labels, but the pinned sources have {len(stamps)}")
    x = logmel.reshape(-1, 1, 96, 64)
    y = labels.reshape(-1, labels.shape[-1])
    single = y.sum(1) == 1
    x, y = x[single], y[single].argmax(1)
    with torch.no_grad():
        e = torch.cat([enc(torch.from_numpy(x[i:i + 256].astype(np.float32))) for i in range(0, len(x), 256)]).numpy()
    e = e / (np.linalg.norm(e, axis=1, keepdims=True) + 1e-9)
    present = np.unique(y)
    cent = np.stack([e[y == k].mean(0) for k in present])
    cent /= np.linalg.norm(cent, axis=1, keepdims=True) + 1e-9
    pred = present[(e @ cent.T).argmax(1)]
    acc = {int(k): float((pred[y == k] == k).mean()) for k in present}
    print(f"{len(x)} single-object seconds, {len(present)} objects: nearest centroid names "
          f"{100 * float((pred == y).mean()):.1f} %")
    for k in sorted(acc, key=acc.get)[:args.worst]:
        conf = np.bincount(pred[y == k], minlength=len(stamps))
        conf[k] = 0
        print(f"  {stamps[k]:45s} named {100 * acc[k]:5.1f} % of {int((y == k).sum())}, "
              f"else taken for {stamps[int(conf.argmax())]}")
    for name in args.object:
        if name not in stamps or stamps.index(name) not in acc:
            raise SystemExit(f"--object {name}: no single-object second of it in {args.cache}")
        k = stamps.index(name)
        print(f"  {name:45s} named {100 * acc[k]:5.1f} % of {int((y == k).sum())}")


if __name__ == "__main__":
    main()
