#!/usr/bin/env python3
"""Average the weights of several fine-tunes of one model (a "model soup") into one run folder.

    avseg-train-soup --member runs/K --member runs/L [--member runs/stage9.safetensors ...] --out runs/S

Each member is a train.py output folder (its `checkpoint.safetensors` and `train_record.json`) or
a bare checkpoint file (for example `avseg-from-package`'s). Every float tensor of the output is the
plain mean of the members' tensors, computed in float64: the head, the audio encoder, and the
BatchNorm running statistics (`avseg-train --ema` averages those the same way over steps). Integer
tensors must be equal in every member. The members must share every key and shape, which holds for
runs that fine-tune one starting point with one architecture; anything else is refused with the
file and key named, since the mean of unrelated networks is not a network.

The output folder gets `checkpoint.safetensors` and a `train_record.json` whose `args` are the first
folder member's (what `avseg-train-export` reads), with every member's path, checkpoint sha256 and
full training record under `soup`. Link the run's `cache_val` into it before exporting, as for any
run folder.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import struct
from pathlib import Path

import numpy as np

from avseg_export.weights import read_safetensors, write_safetensors

# The arguments that fix the exported graph: members that differ in one of them are not one model.
ARCHITECTURE_ARGS = ("size", "channels", "audio_dim", "head_mid", "head_last", "audio_width",
                     "audio_hidden", "tpavi_group")


def member_files(path: Path) -> tuple[Path, Path | None]:
    """(checkpoint, training record or None) of a run folder or a bare checkpoint file."""
    if path.is_dir():
        ckpt, record = path / "checkpoint.safetensors", path / "train_record.json"
        if not ckpt.is_file():
            raise SystemExit(f"{ckpt}: missing: a soup member folder must hold a train.py checkpoint")
        return ckpt, record if record.is_file() else None
    if path.is_file():
        return path, None
    raise SystemExit(f"{path}: no such run folder or checkpoint file")


def mean_tensors(members: list[tuple[Path, dict[str, np.ndarray]]]) -> dict[str, np.ndarray]:
    """The key-by-key mean of the members' tensors; the first member fixes the keys and shapes."""
    (first_path, first), rest = members[0], members[1:]
    for path, tensors in rest:
        missing, extra = sorted(set(first) - set(tensors)), sorted(set(tensors) - set(first))
        if missing or extra:
            raise SystemExit(f"{path}: its keys differ from {first_path}'s (missing {missing[:3]}, "
                             f"extra {extra[:3]}): not a fine-tune of the same model")
        for key, arr in first.items():
            if tensors[key].shape != arr.shape or tensors[key].dtype != arr.dtype:
                raise SystemExit(f"{path}: {key} is {tensors[key].dtype}{list(tensors[key].shape)}, "
                                 f"{first_path} has {arr.dtype}{list(arr.shape)}")
    out = {}
    for key, arr in first.items():
        if np.issubdtype(arr.dtype, np.floating):
            acc = np.zeros(arr.shape, np.float64)
            for _, tensors in members:
                acc += tensors[key]
            out[key] = (acc / len(members)).astype(np.float32)
        else:
            for path, tensors in rest:
                if not np.array_equal(tensors[key], arr):
                    raise SystemExit(f"{path}: integer tensor {key} differs from {first_path}'s, and "
                                     "integers cannot be averaged")
            out[key] = arr
    return out


def main(argv: list[str] | None = None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--member", type=Path, action="append", required=True,
                    help="a train.py run folder or a checkpoint file; at least two, one of them a folder")
    ap.add_argument("--out", type=Path, required=True, help="run folder to write")
    args = ap.parse_args(argv)
    if len(args.member) < 2:
        ap.error("--member: a soup needs at least two members")
    if len(set(p.resolve() for p in args.member)) != len(args.member):
        ap.error("--member: a member is named twice (it would weigh double)")

    members, records = [], []
    for path in args.member:
        ckpt, record_path = member_files(path)
        try:
            tensors = read_safetensors(ckpt)
        except (OSError, ValueError, KeyError, struct.error) as e:
            raise SystemExit(f"{ckpt}: not a readable safetensors checkpoint ({e})")
        try:
            record = json.loads(record_path.read_text()) if record_path else None
            if record is not None and not isinstance(record.get("args"), dict):
                raise ValueError("no 'args' object")
        except (OSError, ValueError, AttributeError) as e:
            raise SystemExit(f"{record_path}: not a train.py training record ({e})")
        members.append((ckpt, tensors))
        records.append({"path": str(path), "checkpoint_sha256": hashlib.sha256(ckpt.read_bytes()).hexdigest(),
                        "record": record})

    with_args = [r for r in records if r["record"] is not None]
    if not with_args:
        raise SystemExit("--member: none of the members is a run folder with a train_record.json, so the "
                         "soup would have no architecture arguments for the exporter")
    base = with_args[0]["record"]["args"]
    for r in with_args[1:]:
        differ = [k for k in ARCHITECTURE_ARGS if r["record"]["args"].get(k) != base.get(k)]
        if differ:
            raise SystemExit(f"{r['path']}: architecture arguments {differ} differ from {with_args[0]['path']}'s")

    soup = mean_tensors(members)
    args.out.mkdir(parents=True, exist_ok=True)
    write_safetensors(args.out / "checkpoint.safetensors", soup,
                      {"format": "avseg default-model checkpoint (uniform weight soup)",
                       "members": ", ".join(str(p) for p in args.member)})
    record = {"args": base,
              "soup": {"method": "uniform mean of every float tensor (float64 accumulation)",
                       "members": records}}
    (args.out / "train_record.json").write_text(json.dumps(record, indent=1))
    print(f"wrote {args.out / 'checkpoint.safetensors'}: mean of {len(members)} members, {len(soup)} tensors")


if __name__ == "__main__":
    main()
