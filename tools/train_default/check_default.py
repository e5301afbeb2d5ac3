#!/usr/bin/env python3
"""CI check that the bundled default model really segments sounding objects.

Generates two fresh AVS-Reg test samples with a seed the model never saw (clips, mixes and motions
differ from every training clip): one of the default recipe (backgrounds: its held-out test
photos) and one of the `--variety` recipe (backgrounds: the unseen split's source, a package of
photos that neither training nor validation saw; noise beds, occlusion, same-category silent
distractors). On each it runs the Rust CLI end to end:
  1. `avseg eval` on the S4 and MS3 layouts: J over frames with foreground, and the share of
     empty-GT frames (silent or off-screen sources) predicted empty;
  2. `avseg eval --logits` on the logits saved by (1) must give identical numbers;
  3. the audio-swap check (train_default.audio_swap_eval): MS3 J must drop when each clip's audio is another's.

    avseg-check-default --avseg target/debug/avseg --work DIR

Two kinds of numbers:
- regression floors, a little under what the bundled model measured on this sample (seed 1):
  failing one fails the test. They include the audio: a model whose masks ignore the sound
  (MS3 J drop 0) or segment during silence fails;
- issue 4's targets for a default model (official mIoU: S4 >= 0.70, MS3 >= 0.50; >= 90 % of
  empty-GT frames predicted empty; MS3 J drop >= 0.15 with swapped audio): reported as met or
  NOT MET on every run (models/README.md has the bundled model's status).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from train_default.negatives_report import negatives_by_kind

REPO = Path(__file__).resolve().parents[2]

# Regression floors, a little under the bundled model on the seed-1 sample. The bundled model's
# figures on that sample are kept in one place, models/README.md ("On a fresh sample generated with
# seed 1"); the floors on J apply to the J over non-empty-GT frames given there.
SAMPLES = [
    # The default recipe: held-out test photos (brick, rocket), motions and mixes.
    # Stage 11's veto empties every negative frame of both samples. The empty floors (95 %) still
    # let stage 10 pass (95.0 and 97.5 %: two frames and one masked) and fail a model that masks
    # three of the 40.
    ("default-recipe", [], {"s4_j": 0.69, "ms3_j": 0.52, "empty": 0.95, "ms3_drop": 0.30}),
    # --variety test sources (tools/avsreg/unseen_split.md): photos of a package that neither
    # training nor validation saw, noise beds, occlusion, same-category silent distractors. A model
    # that learnt its training backgrounds rather than the task fails here.
    # Floors a little under the shipped model (stage 11: S4 0.539, MS3 0.427, 100 %, drop 0.330
    # on this sample; stage 10 had 0.562, 0.438, 97.5 %, 0.309; stage 9 0.585, 0.428, 95.0 %, 0.298).
    # The model trained on six photos fails the S4 floor (stage 6: 0.355; tools/train_default/check_default.py
    # on it, 2026-12-05).
    ("unseen-backgrounds", ["--variety"], {"s4_j": 0.52, "ms3_j": 0.38, "empty": 0.95, "ms3_drop": 0.20}),
]
# Issue 4's targets for a default model; reported, not enforced.
TARGETS = {"S4 J": 0.70, "MS3 J": 0.50, "empty-GT frames predicted empty": 0.90, "MS3 J drop with swapped audio": 0.15}


def run(cmd):
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True)


def check_sample(args, name, data, gen_args, floors):
    """Evaluates the model on one generated sample; returns (failures, summary line)."""
    if not (data / "manifest.json").exists():
        run([sys.executable, "-m", "avsreg.generate", "--seed", args.seed, "--out", data,
             "--s4", 16, "--ms3", 16, "--negatives", 8, "--splits", "test"] + gen_args)
    work = args.work / name
    failures, summary = [], {}
    empty_hits, empty_total = 0.0, 0
    for subset, min_j in (("s4", floors["s4_j"]), ("ms3", floors["ms3_j"])):
        out = work / f"eval_{subset}"
        run([args.avseg, "eval", "--model", args.model, "--dataset", data, "--subset", subset,
             "--out", out, "--save-logits", "--threads", 2])
        b = json.loads((out / "eval.json").read_text())["binary"]
        summary[subset] = b
        if b["miou_nonempty_gt"] < min_j:
            failures.append(f"{name} {subset}: J over non-empty GT {b['miou_nonempty_gt']:.4f} < {min_j}")
        if b["empty_gt_predicted_empty"] is not None:
            empty_hits += b["empty_gt_predicted_empty"] * b["empty_gt_frames"]
            empty_total += b["empty_gt_frames"]
        again = work / f"eval_{subset}_logits"
        run([args.avseg, "eval", "--logits", out / "logits", "--dataset", data, "--subset", subset, "--out", again])
        b2 = json.loads((again / "eval.json").read_text())["binary"]
        for k in ("miou", "fscore", "fscore_batch_independent", "miou_nonempty_gt", "empty_gt_predicted_empty"):
            if b[k] != b2[k]:
                failures.append(f"{name} {subset}: eval --logits gives {k} {b2[k]} but the model run gave {b[k]}")
    empty_rate = empty_hits / max(empty_total, 1)
    # The same share split by kind of negative: silence is easy, an off-screen sound is not.
    for kind, r in negatives_by_kind(data, [work / "eval_s4" / "logits", work / "eval_ms3" / "logits"]).items():
        print(f"{name} negatives {kind}: {100 * r['share_empty']:.1f} % of {r['frames']} frames predicted empty")
    swap_dir = work / "audio_swap"
    run([sys.executable, "-m", "train_default.audio_swap_eval", "--model", args.model, "--dataset", data,
         "--subset", "ms3", "--out", swap_dir, "--avseg", args.avseg])
    swap = json.loads((swap_dir / "audio_swap.json").read_text())["ms3"]
    if empty_rate < floors["empty"]:
        failures.append(f"{name}: empty-GT frames predicted empty {empty_rate:.4f} < {floors['empty']}")
    if swap["J_drop"] < floors["ms3_drop"]:
        failures.append(f"{name}: MS3 J drop with swapped audio {swap['J_drop']:.4f} < {floors['ms3_drop']}: "
                        "the masks no longer follow the sound")
    measured = {"S4 J": summary["s4"]["miou"], "MS3 J": summary["ms3"]["miou"],
                "empty-GT frames predicted empty": empty_rate, "MS3 J drop with swapped audio": swap["J_drop"]}
    for target_name, target in TARGETS.items():
        status = "met" if measured[target_name] >= target else "NOT MET"
        print(f"{name}: issue 4 target {target_name} >= {target}: {measured[target_name]:.4f} {status}")
    line = (f"default model on {name} (seed {args.seed}): "
            f"S4 J {summary['s4']['miou']:.4f} (non-empty GT {summary['s4']['miou_nonempty_gt']:.4f}), "
            f"MS3 J {summary['ms3']['miou']:.4f} (non-empty GT {summary['ms3']['miou_nonempty_gt']:.4f}), "
            f"empty-GT frames predicted empty {100 * empty_rate:.1f} % of {empty_total}, "
            f"MS3 J drop with swapped audio {swap['J_drop']:.4f}")
    return failures, line


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--avseg", required=True)
    ap.add_argument("--model", default=str(REPO / "models/default"))
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    failures, lines = [], []
    for name, gen_args, floors in SAMPLES:
        data = args.work / f"avsreg_{name}_seed{args.seed}"
        f, line = check_sample(args, name, data, gen_args, floors)
        failures += f
        lines.append(line)
    print("\n".join(lines))
    if failures:
        print("FAILED:\n  " + "\n  ".join(failures))
        sys.exit(1)


if __name__ == "__main__":
    main()
