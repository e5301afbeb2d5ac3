#!/usr/bin/env python3
"""Empty-GT frames by kind of AVS-Reg negative: silence or an off-screen sound, S4 or MS3 layout.

`avseg eval` reports one share of empty-GT frames predicted empty (< 1 % foreground). The two
kinds of negative fail for different reasons (silence is easy; an off-screen sound asks the
model to find no visible match), so this splits that share by the clip recipe's kind, from the
logits that `avseg eval --save-logits` wrote.

    avseg-negatives-report --dataset DIR --logits EVAL_S4/logits \
        --logits EVAL_MS3/logits [--json OUT.json]

A frame counts as predicted empty exactly as `avseg eval` counts it: foreground is logit > 0
(sigmoid > 0.5), at the saved logits' resolution, on under 1 % of the pixels.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


import numpy as np

from train_default.data import EMPTY_MAX_FOREGROUND, is_negative


def read_recipes(dataset: Path) -> dict[str, dict]:
    """{clip name: recipe} from an AVS-Reg folder's clips/*.json."""
    recipes = {}
    for p in sorted((dataset / "clips").glob("*.json")):
        try:
            r = json.loads(p.read_text())
            r["kind"]
            recipes[r["name"]] = r
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise SystemExit(f"{p}: not an AVS-Reg clip recipe ({e!r})")
    if not recipes:
        raise SystemExit(f"{dataset / 'clips'}: no AVS-Reg clip recipes")
    return recipes


def saved_logits(dataset: Path, logit_dirs: list[Path], recipes: dict[str, dict]):
    """(file, recipe) for each {video}.npy in the folders; every file must name a clip."""
    for d in logit_dirs:
        files = sorted(d.glob("*.npy"))
        if not files:
            raise SystemExit(f"{d}: no saved logits (*.npy)")
        for f in files:
            recipe = recipes.get(f.stem)
            if recipe is None:
                raise SystemExit(f"{f}: no clip recipe named {f.stem} in {dataset / 'clips'}")
            yield f, recipe


def load_binary_logits(f: Path) -> np.ndarray:
    """[T, 1, H, W] finite f32 logits as `avseg eval --save-logits` writes them."""
    try:
        logits = np.load(f)
    except (OSError, ValueError) as e:
        raise SystemExit(f"{f}: cannot read the logits ({e})")
    if logits.ndim != 4 or logits.shape[1] != 1:
        raise SystemExit(f"{f}: expected binary logits [T,1,H,W], got {logits.shape}")
    if not np.isfinite(logits).all():
        raise SystemExit(f"{f}: logits hold NaN or infinity")
    return logits


def foreground_share(logits: np.ndarray) -> np.ndarray:
    """Per frame, the share of pixels predicted foreground (logit > 0, i.e. sigmoid > 0.5)."""
    return (logits[:, 0] > 0).reshape(logits.shape[0], -1).mean(1)


def negatives_by_kind(dataset: Path, logit_dirs: list[Path]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for f, recipe in saved_logits(dataset, logit_dirs, read_recipes(dataset)):
        kind = recipe["kind"]
        if not is_negative(kind):
            continue
        fg = foreground_share(load_binary_logits(f))
        k = out.setdefault(kind, {"clips": 0, "frames": 0, "predicted_empty": 0, "mean_foreground": 0.0})
        k["clips"] += 1
        k["frames"] += int(fg.size)
        k["predicted_empty"] += int((fg < EMPTY_MAX_FOREGROUND).sum())
        k["mean_foreground"] += float(fg.sum())
    if not out:
        raise SystemExit(f"{dataset}: none of the saved logits is a negative clip")
    for k in out.values():
        k["mean_foreground"] = round(k["mean_foreground"] / k["frames"], 5)
        k["share_empty"] = round(k["predicted_empty"] / k["frames"], 4)
    return dict(sorted(out.items()))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, required=True, help="AVS-Reg folder (reads clips/*.json)")
    ap.add_argument("--logits", type=Path, action="append", required=True,
                    help="a folder of {video}.npy written by `avseg eval --save-logits` (repeatable)")
    ap.add_argument("--json", type=Path, help="also write the table here")
    args = ap.parse_args()
    rows = negatives_by_kind(args.dataset, args.logits)
    total = {"frames": sum(r["frames"] for r in rows.values()),
             "predicted_empty": sum(r["predicted_empty"] for r in rows.values())}
    for kind, r in rows.items():
        print(f"{kind:18s} {r['clips']:3d} clips {r['frames']:4d} frames: predicted empty "
              f"{100 * r['share_empty']:5.1f} %, mean foreground {100 * r['mean_foreground']:.2f} %")
    print(f"{'all negatives':18s} {total['frames']:14d} frames: predicted empty "
          f"{100 * total['predicted_empty'] / total['frames']:5.1f} %")
    if args.json:
        args.json.write_text(json.dumps({"by_kind": rows, "all": total}, indent=1) + "\n")


if __name__ == "__main__":
    main()
