#!/usr/bin/env python3
"""AVS-Reg's object classes and the audio-visual label tree over them, from the pinned source list
(`sources.lock.json`) alone: no media needed.

    python -m avsreg.label_tree --out models/label-trees/avs-reg

* **Visual classes** (a two-stage segmenter's labels, and the values of the generator's class
  maps): `background`, then one class per stamp, named by its file (`dog`, `violin`), in the order
  of the stamps' paths. That order is the one the audio pre-training uses for its targets
  (`train_default.train.stamp_vocab`).
* **Audio labels** (a tagger's outputs): the same stamp names, each the sound AVS-Reg gives that
  stamp, then `silence`, the pre-training's extra class. `silence` is left out of the tree: it
  supports no object.
* **Tree**: one category per folder of the stamp collection (`animals`, `animals/mammals`,
  `animals/mammals/dogs`), each under its parent folder; each stamp's sound sits under its folder
  and supports its own class. A heard category (`animals/birds`) keeps any bird; a heard `crow`
  keeps crows only.

`default_threshold` is 0.5, a starting point: a package tunes the thresholds on its validation
split.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

LOCK = Path(__file__).resolve().parent / "sources.lock.json"
SILENCE = "silence"


def stamp_paths(lock_path: Path = LOCK) -> list[str]:
    """The stamps' paths in vocabulary order (byte order of the path, as the generator sorts)."""
    return sorted((s["path"] for s in json.loads(lock_path.read_text())["stamps"]), key=str.encode)


def class_name(path: str) -> str:
    return path.rsplit("/", 1)[1].rsplit(".", 1)[0]


def visual_labels(paths: list[str]) -> list[str]:
    return ["background"] + [class_name(p) for p in paths]


def class_index(paths: list[str]) -> dict[str, int]:
    """Stamp path -> its class in the class maps (1-based; 0 is background)."""
    return {p: i + 1 for i, p in enumerate(paths)}


def audio_labels(paths: list[str]) -> list[str]:
    return [class_name(p) for p in paths] + [SILENCE]


def tree(paths: list[str]) -> dict:
    folders: list[str] = []
    for p in paths:
        parts = p.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            f = "/".join(parts[:i])
            if f not in folders:
                folders.append(f)
    nodes = []
    for f in sorted(folders, key=str.encode):
        node = {"name": f}
        if "/" in f:
            node["parent"] = f.rsplit("/", 1)[0]
        nodes.append(node)
    for p in paths:
        name = class_name(p)
        nodes.append({"name": name, "parent": p.rsplit("/", 1)[0], "visual": [name]})
    return {"format": "avseg-label-tree", "version": 1, "default_threshold": 0.5,
            "parent_rule": "independent", "nodes": nodes}


def write(out: Path, lock_path: Path = LOCK):
    paths = stamp_paths(lock_path)
    names = [class_name(p) for p in paths]
    if len(set(names)) != len(names):
        raise SystemExit("two stamps share a file name; class names must be unique")
    out.mkdir(parents=True, exist_ok=True)
    (out / "tree.json").write_text(json.dumps(tree(paths), indent=1) + "\n")
    (out / "audio_labels.txt").write_text("".join(f"{a}\n" for a in audio_labels(paths)))
    (out / "visual_labels.txt").write_text("".join(f"{v}\n" for v in visual_labels(paths)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[2] / "models" / "label-trees" / "avs-reg")
    args = ap.parse_args()
    write(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
