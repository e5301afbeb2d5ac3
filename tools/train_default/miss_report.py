#!/usr/bin/env python3
"""Sounding objects left unmasked: frames whose ground truth has foreground but whose prediction
has almost none, by layout, background photo and sounding object.

`avseg eval` gives one J. A model can lose J by drawing loose masks or by missing the object
altogether; the two call for different fixes, and this report separates them, from the logits
that `avseg eval --save-logits` wrote:

    avseg-miss-report --dataset DIR --split test \
        --logits EVAL_S4/logits [--logits EVAL_MS3/logits] [--json OUT.json]

A frame is *missed* when under 1 % of its pixels are predicted foreground (logit > 0), the rule
`avseg eval` uses for "predicted empty". The ground truth is resized to the logits with nearest
neighbour, as `avseg eval` does. Negative clips are skipped (negatives_report.py covers them).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

from train_default.data import EMPTY_MAX_FOREGROUND, clip_paths, is_negative
from train_default.negatives_report import foreground_share, load_binary_logits, read_recipes, saved_logits


def gt_masks(dataset: Path, recipe: dict, size: tuple[int, int]) -> np.ndarray:
    """[T, H, W] bool ground truth at the logits' size."""
    out = []
    for p in clip_paths(dataset, recipe)["masks"]:
        try:
            im = Image.open(p).convert("L")
        except OSError as e:
            raise SystemExit(f"{p}: cannot read the ground-truth mask ({e})")
        out.append(np.asarray(im.resize(size[::-1], Image.NEAREST)) > 127)
    return np.stack(out)


def misses(dataset: Path, split: str, logit_dirs: list[Path]) -> dict:
    recipes = read_recipes(dataset)
    groups = {"layout": defaultdict(lambda: [0, 0]), "background": defaultdict(lambda: [0, 0]),
              "sounding object": defaultdict(lambda: [0, 0])}
    iou_hit, whole_clips = [], []
    for f, r in saved_logits(dataset, logit_dirs, recipes):
        if is_negative(r["kind"]) or r["split"] != split:
            continue
        logits = load_binary_logits(f)
        gt = gt_masks(dataset, r, logits.shape[2:])
        if len(gt) != len(logits):
            raise SystemExit(f"{f}: {len(logits)} frames of logits for {len(gt)} ground-truth masks")
        missed_all, frames = True, 0
        for t, share in enumerate(foreground_share(logits)):
            if not gt[t].any():
                continue
            frames += 1
            miss = share < EMPTY_MAX_FOREGROUND
            missed_all &= bool(miss)
            keys = [("layout", r["layout"]), ("background", r["background"]["path"])]
            keys += [("sounding object", s) for s in r["sounding_per_second"][t]]
            for g, k in keys:
                groups[g][k][0] += int(miss)
                groups[g][k][1] += 1
            if not miss:
                pred = logits[t, 0] > 0
                iou_hit.append(float((pred & gt[t]).sum() / (pred | gt[t]).sum()))
        if frames and missed_all:
            whole_clips.append({"clip": r["name"], "sounding": sorted({s for x in r["sounding_per_second"] for s in x})})
    if not groups["layout"]:
        raise SystemExit(f"{dataset}: no positive {split} clip among the saved logits")
    table = {g: {k: {"missed": m, "frames": n, "share": round(m / n, 4)} for k, (m, n) in sorted(v.items())}
             for g, v in groups.items()}
    return {"split": split, "groups": table, "iou_frames_not_missed": round(float(np.mean(iou_hit)), 4)
            if iou_hit else None, "clips_missed_in_every_frame": whole_clips}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, required=True, help="AVS-Reg folder (clips/*.json and the masks)")
    ap.add_argument("--split", default="test", choices=("train", "val", "test"))
    ap.add_argument("--logits", type=Path, action="append", required=True,
                    help="a folder of {video}.npy written by `avseg eval --save-logits` (repeatable)")
    ap.add_argument("--top", type=int, default=8, help="sounding objects listed, most missed first")
    ap.add_argument("--json", type=Path, help="also write the report here")
    args = ap.parse_args()
    rep = misses(args.dataset, args.split, args.logits)
    for g in ("layout", "background"):
        for k, v in rep["groups"][g].items():
            print(f"{g:10s} {k:40s} {v['frames']:4d} frames with foreground: missed {100 * v['share']:5.1f} %")
    objs = sorted(rep["groups"]["sounding object"].items(), key=lambda kv: (-kv[1]["missed"], kv[0]))
    for k, v in objs[:args.top]:
        print(f"object     {k:40s} {v['frames']:4d} frames: missed {v['missed']}")
    print(f"IoU over frames not missed: {rep['iou_frames_not_missed']}")
    print(f"clips missed in every frame: {len(rep['clips_missed_in_every_frame'])}: "
          + ", ".join(f"{c['clip']} ({'+'.join(c['sounding'])})" for c in rep["clips_missed_in_every_frame"]))
    if args.json:
        args.json.write_text(json.dumps(rep, indent=1) + "\n")


if __name__ == "__main__":
    main()
