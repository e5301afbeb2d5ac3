#!/usr/bin/env python3
"""Does the model use the audio? Score a split twice with `avseg eval`: as generated, and with
every clip's audio replaced by another clip's (a derangement: clip i gets clip i+k's audio, k
fixed, in CSV order), then report the drop in mIoU.

    avseg-audio-swap-eval --model models/default --dataset DIR \
        --subset ms3 [--subset s4] --out DIR [--avseg target/release/avseg]

The swapped data set is a folder of symlinks: frames, masks and CSVs are the originals; only the
audio links point elsewhere. Ground truth stays that of the original clip, so a model that
ignores the sound scores the same on both, and one that follows it loses the objects whose sound
is gone. Writes OUT/audio_swap.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
from pathlib import Path

LAYOUT = {
    "s4": ("s4_meta_data.csv", "s4_data"),
    "ms3": ("ms3_meta_data.csv", "ms3_data"),
}


def audio_path(root: Path, subset: str, row: dict) -> Path:
    if subset == "s4":
        return root / "s4_data/audio_wav" / row["split"] / row["category"] / f"{row['name']}.wav"
    return root / "ms3_data/audio_wav" / row["split"] / f"{row['name']}.wav"


def swapped_copy(root: Path, subset: str, split: str, dst: Path, shift: int) -> int:
    csv_name, data_dir = LAYOUT[subset]
    rows = [r for r in csv.DictReader(open(root / csv_name)) if r["split"] == split]
    if len(rows) < 2:
        raise SystemExit(f"{root / csv_name}: fewer than 2 {split} clips")
    dst.mkdir(parents=True, exist_ok=True)
    os.symlink(root / csv_name, dst / csv_name)
    (dst / data_dir).mkdir()
    for entry in (root / data_dir).iterdir():
        if entry.name != "audio_wav":
            os.symlink(entry, dst / data_dir / entry.name)
    k = shift % len(rows) or 1
    for i, row in enumerate(rows):
        donor = rows[(i + k) % len(rows)]
        link = audio_path(dst, subset, row)
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(audio_path(root, subset, donor), link)
    return len(rows)


def run_eval(avseg: str, model: Path, dataset: Path, subset: str, split: str, out: Path) -> dict:
    subprocess.run([avseg, "eval", "--model", str(model), "--dataset", str(dataset), "--subset", subset,
                    "--split", split, "--out", str(out), "--threads", str(os.cpu_count() or 1)], check=True)
    return json.loads((out / "eval.json").read_text())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--dataset", type=Path, required=True, help="AVS-Reg (or AVSBench-layout) folder")
    ap.add_argument("--subset", action="append", choices=sorted(LAYOUT), required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--shift", type=int, default=1, help="clip i takes the audio of clip i+shift")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--avseg", default="target/release/avseg")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"model": str(args.model), "dataset": str(args.dataset), "split": args.split, "shift": args.shift}
    for subset in args.subset:
        swapped = args.out / f"swapped_{subset}"
        if swapped.exists():
            subprocess.run(["rm", "-rf", str(swapped)], check=True)
        n = swapped_copy(args.dataset.resolve(), subset, args.split, swapped, args.shift)
        orig = run_eval(args.avseg, args.model, args.dataset, subset, args.split, args.out / f"eval_{subset}")
        swap = run_eval(args.avseg, args.model, swapped, subset, args.split, args.out / f"eval_{subset}_swapped")
        b0, b1 = orig["binary"], swap["binary"]
        report[subset] = {
            "clips": n,
            "original": {"J": b0["miou"], "J_nonempty_gt": b0["miou_nonempty_gt"], "F": b0["fscore"]},
            "audio_swapped": {"J": b1["miou"], "J_nonempty_gt": b1["miou_nonempty_gt"], "F": b1["fscore"]},
            "J_drop": b0["miou"] - b1["miou"],
            "J_nonempty_gt_drop": (b0["miou_nonempty_gt"] or 0) - (b1["miou_nonempty_gt"] or 0),
        }
        r = report[subset]
        print(f"{subset} {args.split}: J {b0['miou']:.4f} -> {b1['miou']:.4f} with swapped audio "
              f"(drop {r['J_drop']:.4f}); J over non-empty GT drop {r['J_nonempty_gt_drop']:.4f}")
    (args.out / "audio_swap.json").write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
