#!/usr/bin/env python3
"""Train a two-stage (`bavs`) package's first stage: an audio-agnostic semantic segmenter on AVS-Reg.

    avseg-train-semantic --train data/v3-train runs/v3/cache_train \
        --train data/var-train runs/sem/cache_var --val data/v3-val runs/v3/cache_val --out runs/sem

It sees frames only and labels every visible object with its class, sounding or not: the targets
are the generator's class maps (`*/class_maps/...`: 0 background, k the k-th stamp in
`avsreg.label_tree`'s order, so the logits' order is the package's visual labels). Deciding which
of them sound is the tagger's and the label tree's job at run time.

The layout is the default model's without TPAVI (model.SemanticHead) over the same frozen
EfficientNet-Lite0, so the caches are train.py's (`--train ROOT CACHE`: a cache folder that lacks
clips.json is built from ROOT's train split, one for val from its val split). This adds each
cache's class maps at the logits' size (class_maps_SIZE.npy, nearest-neighbour: classes are not
averaged). Frames are independent: a batch is `--batch` random frames of the pooled caches.

Loss: cross-entropy over the classes, the object pixels' and the background's averaged apart and
mixed by `--object-weight` (seg_loss). Monitoring on val: pixel accuracy on objects, and the
oracle-tag J (the mask of the classes whose sound is on in that second, against the GT mask of
the sounding objects) on S4 and MS3 frames with foreground: what the two-stage package scores if
its tagger were perfect. Writes OUT/checkpoint.safetensors (encoder.* + the head, TPAVI key
layout) and OUT/train_record.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from train_default.data import OrtEncoder, T, Cache, build_cache, clip_paths, is_negative, list_clips
from train_default.model import LITE0_TAP_CHANNELS, SemanticHead
from train_default.train import HERE, lite0_state, run_context, stamp_vocab


def class_maps(cache_dir: Path, root: Path, split: str, size: int) -> np.ndarray:
    """[N, T, size, size] uint8 class maps of the cache's clips, built once (class_maps_SIZE.npy)."""
    path = cache_dir / f"class_maps_{size}.npy"
    if path.exists():
        return np.load(path)
    recipes = {r["name"]: r for r in list_clips(root, split)}
    clips = json.loads((cache_dir / "clips.json").read_text())["clips"]
    out = np.zeros((len(clips), T, size, size), np.uint8)
    for i, c in enumerate(clips):
        for t, mask in enumerate(clip_paths(root, recipes[c["name"]])["masks"]):
            p = Path(str(mask).replace("/gt_masks/", "/class_maps/"))
            if not p.exists():
                raise SystemExit(f"{p}: no class map (generate the data with a generator that writes class_maps)")
            im = Image.open(p)
            if im.mode != "L":
                raise SystemExit(f"{p}: class map mode {im.mode}, expected L (one class index per pixel)")
            out[i, t] = np.asarray(im.resize((size, size), Image.NEAREST))
    np.save(path, out)
    return out


class Split:
    """A cache plus its class maps."""

    def __init__(self, root: Path, cache_dir: Path, split: str, size: int, encoder, vocab, avseg_bin):
        if not (cache_dir / "clips.json").exists():
            build_cache(root, split, cache_dir, size, encoder(), vocab, avseg_bin)
        self.cache = Cache(cache_dir)
        if self.cache.meta["size"] != size:
            raise SystemExit(f"{cache_dir}: cached at {self.cache.meta['size']} px, not {size}")
        self.classes = class_maps(cache_dir, root, split, size)

    def frames(self, rows: np.ndarray):
        """rows: [(clip, frame)] -> taps [B, C_i, h_i, w_i] float32, class maps [B, H, W] int64."""
        ci, t = rows[:, 0], rows[:, 1]
        taps = [torch.from_numpy(tap[ci, t].astype(np.float32)) for tap in self.cache.taps]
        return taps, torch.from_numpy(self.classes[ci, t].astype(np.int64))


@torch.no_grad()
def evaluate(head, val: Split, batch: int = 40) -> dict:
    head.eval()
    cache = val.cache
    correct = objects = 0
    j = {"s4": [], "ms3": []}
    for i0 in range(0, len(cache), batch // T):
        clips = np.arange(i0, min(i0 + batch // T, len(cache)))
        rows = np.stack(np.meshgrid(clips, np.arange(T), indexing="ij"), -1).reshape(-1, 2)
        taps, target = val.frames(rows)
        pred = head(taps).argmax(1)
        obj = target > 0
        correct += int((pred[obj] == target[obj]).sum())
        objects += int(obj.sum())
        for r, (ci, t) in enumerate(rows):
            c = cache.clips[ci]
            if is_negative(c["kind"]):
                continue
            gt = torch.from_numpy(cache.masks[ci, t] > 0)
            if not gt.any():
                continue
            sounding = torch.from_numpy(np.flatnonzero(cache.labels[ci, t]) + 1)
            mask = torch.isin(pred[r], sounding)
            mask = F.interpolate(mask[None, None].float(), size=gt.shape, mode="nearest")[0, 0] > 0
            j[c["layout"]].append(float((mask & gt).sum() / (mask | gt).sum()))
    head.train()
    return {"object_pixel_accuracy": round(correct / max(objects, 1), 4),
            "oracle_tag_j_s4": round(float(np.mean(j["s4"])), 4) if j["s4"] else None,
            "oracle_tag_j_ms3": round(float(np.mean(j["ms3"])), 4) if j["ms3"] else None}


def seg_loss(logits, target, object_weight: float):
    """Cross-entropy, averaged over background and object pixels separately and mixed
    `object_weight` : 1 - `object_weight`. Averaged over all pixels instead (`--object-weight 0`
    gives that too, as the plain mean), the 75-90 % of background pixels set the pace: after 750
    steps a first run labelled only 23 % of the object pixels right."""
    ce = F.cross_entropy(logits, target, reduction="none")
    if object_weight <= 0:
        return ce.mean()
    obj = target > 0
    fg = ce[obj].mean() if obj.any() else ce.sum() * 0
    bg = ce[~obj].mean() if (~obj).any() else ce.sum() * 0
    return object_weight * fg + (1 - object_weight) * bg


def init_from(head, path: Path, objectness: bool = False) -> dict:
    """Copies into `head` every tensor of the checkpoint at `path` whose name and shape match one of
    its own, so a segmenter can start from a TPAVI model's trained ASPPs and decoder: TPAVI's
    blocks and audio encoder have no place in it, and a head with another output count keeps its
    fresh last layer. With `objectness`, a factored head's two-output last layer starts from a
    binary model's one-output layer instead: its sounding-object logit becomes the objectness and
    its negative the background, so the first steps start from the binary model's outlines rather
    than from a random layer over large activations. Returns what was taken and what was not, for
    the record."""
    from avseg_export.weights import read_safetensors
    try:
        ckpt = read_safetensors(path)
    except (OSError, ValueError) as e:
        raise SystemExit(f"--init-from {path}: cannot read the checkpoint: {e}")
    own = head.state_dict()
    taken = {k: torch.from_numpy(np.asarray(v, np.float32)) for k, v in ckpt.items()
             if k in own and tuple(own[k].shape) == tuple(v.shape)}
    if not taken:
        raise SystemExit(f"--init-from {path}: no tensor matches the segmenter's names and shapes "
                         f"(is it a TPAVI-key-layout checkpoint with --channels {own['conv1.conv2d_list.0.weight'].shape[0]}?)")
    if objectness:
        w, b = ckpt.get("output_conv.4.weight"), ckpt.get("output_conv.4.bias")
        want = tuple(own["output_conv.4.weight"].shape)
        if w is None or b is None or w.shape[0] != 1 or want != (2,) + tuple(w.shape[1:]):
            raise SystemExit(f"--init-objectness: {path} needs a one-output output_conv.4 of the head's width "
                             f"(the head's is {want}, the checkpoint's {None if w is None else tuple(w.shape)})")
        w, b = torch.from_numpy(np.asarray(w, np.float32)), torch.from_numpy(np.asarray(b, np.float32))
        taken["output_conv.4.weight"], taken["output_conv.4.bias"] = torch.cat([-w, w]), torch.cat([-b, b])
    head.load_state_dict(taken, strict=False)
    fresh = sorted(k for k in own if k not in taken)
    print(f"--init-from {path}: {len(taken)} of {len(own)} tensors taken; fresh: {', '.join(fresh[:8])}"
          + (" ..." if len(fresh) > 8 else ""), flush=True)
    return {"checkpoint": str(path), "taken": len(taken), "fresh": fresh, "objectness_from_binary": objectness}


def export_checkpoint(head, lite0: dict, path: Path):
    from avseg_export.weights import write_safetensors
    tensors = {k: v.detach().float().numpy() for k, v in head.state_dict().items()}
    tensors.update({"encoder." + k: v.float().numpy() for k, v in lite0.items()})
    write_safetensors(path, tensors, {"format": "avseg semantic segmenter checkpoint (TPAVI key layout without "
                                                "TPAVI; encoder.* = EfficientNet-Lite0)"})


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", nargs=2, action="append", type=Path, required=True, metavar=("ROOT", "CACHE"),
                    help="an AVS-Reg folder and its train-split cache folder (built if missing); repeatable")
    ap.add_argument("--val", nargs=2, type=Path, metavar=("ROOT", "CACHE"), help="the val split, for monitoring")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--avseg-bin", default="target/release/avseg", help="for the caches' log-mel (train.py's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=160)
    ap.add_argument("--channels", type=int, default=64)
    ap.add_argument("--head-mid", type=int, default=48)
    ap.add_argument("--head-last", type=int, default=48)
    ap.add_argument("--class-branch", type=int, default=0,
                    help="width of the factored class branch (model.SemanticHead; 0: classes from the decoder alone)")
    ap.add_argument("--init-from", type=Path,
                    help="start from a checkpoint's ASPP, decoder and head tensors whose names and shapes match "
                         "(a TPAVI default's, or another segmenter's); the rest starts fresh")
    ap.add_argument("--init-objectness", action="store_true",
                    help="with --init-from a binary (TPAVI) checkpoint and a factored head: start the head's last "
                         "layer from the checkpoint's, its logit as objectness and its negative as background")
    ap.add_argument("--iters", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=16, help="frames per step")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--object-weight", type=float, default=0.5,
                    help="share of the loss from object pixels (0: plain cross-entropy over all pixels)")
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()
    if args.iters < 1 or args.batch < 1:
        ap.error("--iters and --batch must be at least 1")

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    vocab = stamp_vocab(HERE.parent / "avsreg" / "sources.lock.json")
    n_classes = len(vocab) + 1
    lite0_path, lite0 = lite0_state()
    encoder = lambda: OrtEncoder(lite0, args.size, args.threads)  # noqa: E731 (built only when a cache is)

    t0 = time.time()
    train = [Split(root, d, "train", args.size, encoder, vocab, args.avseg_bin) for root, d in args.train]
    val = Split(args.val[0], args.val[1], "val", args.size, encoder, vocab, args.avseg_bin) if args.val else None
    t_cache = time.time() - t0
    rows = np.concatenate([np.stack(np.meshgrid([s], np.arange(len(sp.cache)), np.arange(T), indexing="ij"), -1)
                           .reshape(-1, 3) for s, sp in enumerate(train)])
    print(f"{len(rows)} training frames from {len(train)} caches ({t_cache:.0f} s)", flush=True)

    head = SemanticHead(LITE0_TAP_CHANNELS, args.channels, args.head_mid, args.head_last, n_classes, args.class_branch)
    if args.init_objectness and not args.init_from:
        ap.error("--init-objectness needs --init-from")
    init = init_from(head, args.init_from, args.init_objectness) if args.init_from else None
    opt = torch.optim.AdamW(head.parameters(), lr=args.lr, weight_decay=1e-4)
    warm = max(1, args.iters // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min(1.0, (i + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(i, args.iters) / args.iters)))
    order, pos, log = rng.permutation(len(rows)), 0, []
    t0 = time.time()
    for it in range(1, args.iters + 1):
        if pos + args.batch > len(rows):
            order, pos = rng.permutation(len(rows)), 0
        picked = rows[order[pos:pos + args.batch]]
        pos += args.batch
        taps, target = [], []
        for s, sp in enumerate(train):
            sel = picked[picked[:, 0] == s][:, 1:]
            if len(sel):
                tp, tg = sp.frames(sel)
                taps.append(tp)
                target.append(tg)
        taps = [torch.cat([tp[k] for tp in taps]) for k in range(4)]
        loss = seg_loss(head(taps), torch.cat(target), args.object_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(head.parameters(), 5.0)
        opt.step()
        sched.step()
        if it % 25 == 0 or it == 1:
            rec = {"iter": it, "loss": round(loss.item(), 4), "lr": sched.get_last_lr()[0],
                   "elapsed_s": round(time.time() - t0, 1)}
            if val is not None and (it % args.eval_every == 0 or it == args.iters):
                rec["val"] = evaluate(head, val)
            log.append(rec)
            print(json.dumps(rec), flush=True)
    t_train = time.time() - t0
    export_checkpoint(head, lite0, args.out / "checkpoint.safetensors")
    record = {
        "args": {k: ([[str(a), str(b)] for a, b in v] if k == "train" else [str(x) for x in v] if k == "val" and v
                     else str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "classes": n_classes,
        "data": [{"root": str(sp.cache.meta["root"]), "clips": len(sp.cache)} for sp in train],
        **run_context(lite0_path, args.threads),
        "init_from": init,
        "cache_seconds": round(t_cache, 1),
        "train_seconds": round(t_train, 1),
        "log": log,
        "final_val": log[-1].get("val"),
    }
    (args.out / "train_record.json").write_text(json.dumps(record, indent=1))
    print(f"wrote {args.out / 'checkpoint.safetensors'} (train {t_train:.0f} s)")


if __name__ == "__main__":
    main()
