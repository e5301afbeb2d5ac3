#!/usr/bin/env python3
"""Does a train.py checkpoint's output depend on the audio? For every 6th cached val clip, prints
the predicted foreground share with the clip's own audio, with silence and with another clip's
audio, plus the audio-embedding norms (equal norms for every input mean a dead audio encoder).

    avseg-diagnose-audio --run RUN_DIR
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from avseg_export.weights import read_safetensors
from train_default.data import T, Cache
from train_default.export import torch_modules

SILENCE_LOGMEL = float(np.log(0.01))  # log(mel + 0.01) of digital silence


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--every", type=int, default=6)
    args = ap.parse_args()
    targs = json.loads((args.run / "train_record.json").read_text())["args"]
    head, audio, _, _ = torch_modules(read_safetensors(args.run / "checkpoint.safetensors"), targs)
    cache = Cache(args.run / "cache_val")
    with torch.no_grad():
        for i in range(0, len(cache), args.every):
            taps = [torch.from_numpy(t[i].astype(np.float32)) for t in cache.taps]
            own = torch.from_numpy(cache.logmel[i])[:, None]
            other = torch.from_numpy(cache.logmel[(i + 7) % len(cache)])[:, None]
            fg, norms = [], []
            for lm in (own, torch.full_like(own, SILENCE_LOGMEL), other):
                emb = audio(lm)
                logits = F.interpolate(head(taps, emb.view(1, T, -1)), size=(224, 224), mode="bilinear",
                                       align_corners=False)
                fg.append(float((logits > 0).float().mean()))
                norms.append(float(emb.norm(dim=1).mean()))
            print(f"{cache.clips[i]['kind']:<16} gt fg {float(cache.masks[i].mean()):.3f} | predicted fg: own "
                  f"{fg[0]:.3f} silence {fg[1]:.3f} other {fg[2]:.3f} | embedding norm: own {norms[0]:.2f} "
                  f"silence {norms[1]:.2f} other {norms[2]:.2f}")


if __name__ == "__main__":
    main()
