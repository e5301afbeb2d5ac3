#!/usr/bin/env python3
"""Train a presence gate on a frozen default model (issue 15).

    avseg-train-gate --init-from CHECKPOINT --record TRAIN_RECORD.json \
        --cache RUN/cache_train --val-cache RUN/cache_val --out GATE_RUN
    avseg-train-export --run GATE_RUN --out PACKAGE

Why a gate: the default model's remaining error is off-screen sounds (a sound whose object is not
in view, and the model masks a visible object anyway). Rounds that pushed the mask logits
themselves (more off-screen twins, heavier false-positive losses, higher thresholds) gained under
a point each and cost J. The gate asks a different question, once per frame: is the thing the
mask lies on a thing that sounds? (`model.AgreementGate`, the rule in
tools/avsreg/unseen_split.md, sixth round.) A visual classifier names the object under the mask
from the encoder's features pooled under the frame's own mask probabilities (`model.gate_inputs`);
an audio tagger names the objects that sound; the exported logits are min(L, G (a - tau)), a their
agreement, so a kept frame's mask is unchanged and a vetoed frame is empty.

Everything of the checkpoint stays frozen, so the gate trains on features computed once (and
cached in the run folder):
  1. every training clip runs through the frozen head with its own audio, with the sound of
     --offscreen clips none of whose sounding objects is in view, and, for S4 clips, with another
     clip's audio; the frame's pooled features, audio embedding, the fraction of its pixels with a
     positive logit, and whether its ground truth (for a swap: in the seconds its own object still
     sounds) has foreground are stored;
  2. the visual classifier (softmax over the stamps) learns from S4 own-audio frames with
     foreground that the frozen model masks (at least --active-fraction of positive logits): the
     object is the clip's one stamp. The audio tagger (a sigmoid per stamp) learns from every
     own-audio frame which stamps sound in that second, on or off screen. Fixed epochs from a
     fixed seed, no early stopping;
  3. tau: from --thresholds, on val's own-audio frames, the one with the most negative frames
     empty among those that veto at most --max-vetoed of the frames with foreground that the
     frozen model masks (a tie to the lower);
  4. the checkpoint is written with the gate's `presence.*` keys (the inputs' standardisation
     folded into the weights) beside the frozen model's keys; `train_record.json` keeps the frozen
     run's arguments (what the exporter reads) and this run's, with the val table of every tau.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from train_default.data import EMPTY_MAX_FOREGROUND, T, Cache, is_negative
from train_default.export import torch_modules
from train_default.model import AgreementGate, gate_inputs
from train_default.train import HERE, batch_tensors, offscreen_audio, stamp_vocab

FEATURE_KEYS = ("pooled", "audio", "active", "target", "clip", "audio_clip")


@torch.no_grad()
def frame_features(head, audio_enc, cache: Cache, pairs, batch: int = 8) -> dict[str, np.ndarray]:
    """pairs: [(clip index, audio clip index, per-frame target [T])] -> per-frame arrays."""
    out = {k: [] for k in FEATURE_KEYS}
    for i0 in range(0, len(pairs), batch):
        chunk = pairs[i0:i0 + batch]
        clips, audio_clips = np.array([c for c, _, _ in chunk]), np.array([a for _, a, _ in chunk])
        taps, _, _, _ = batch_tensors(cache, clips)
        _, logmel, _, _ = batch_tensors(cache, audio_clips)
        emb = audio_enc(logmel)
        logits = head(taps, emb.view(len(chunk), T, -1))
        out["pooled"].append(gate_inputs(logits, taps).numpy())
        out["audio"].append(emb.numpy())
        out["active"].append((logits > 0).float().mean((1, 2, 3)).numpy())
        out["target"].append(np.concatenate([t for _, _, t in chunk]).astype(np.float32))
        out["clip"].append(np.repeat(clips, T))
        out["audio_clip"].append(np.repeat(audio_clips, T))
        if (i0 // batch) % 100 == 0:
            print(f"[features] {i0 + len(chunk)}/{len(pairs)}", flush=True)
    return {k: np.concatenate(v) for k, v in out.items()}


def training_pairs(cache: Cache, vocab, rng: np.random.Generator, offscreen: int) -> list:
    """Own audio, `offscreen` off-screen twins per positive clip, one swap per S4 clip."""
    pairs = []
    for ci, c in enumerate(cache.clips):
        has = cache.masks[ci].reshape(T, -1).max(1) > 0
        pairs.append((ci, ci, has))
        if is_negative(c["kind"]):
            continue
        for _ in range(offscreen):
            o = offscreen_audio(cache, ci, rng, vocab)
            if o is not None:
                pairs.append((ci, o, np.zeros(T, bool)))
        if c["kind"] == "s4":
            other = int(rng.integers(len(cache)))
            if other != ci:
                keep = cache.labels[other][:, vocab[c["stamps"][0]]] > 0
                pairs.append((ci, other, has & keep))
    return pairs


def own_pairs(cache: Cache) -> list:
    return [(ci, ci, cache.masks[ci].reshape(T, -1).max(1) > 0) for ci in range(len(cache))]


def standardiser(x: np.ndarray):
    return torch.from_numpy(x.mean(0)), torch.from_numpy(x.std(0) + 1e-3)


def fit_linear(x, y, classes: int, multi_label: bool, args, seed: int) -> nn.Linear:
    torch.manual_seed(seed)
    layer = nn.Linear(x.shape[1], classes)
    opt = torch.optim.AdamW(layer.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    g = torch.Generator().manual_seed(seed)
    for _ in range(args.epochs):
        for b in torch.randperm(len(x), generator=g).split(args.batch):
            out = layer(x[b])
            loss = F.binary_cross_entropy_with_logits(out, y[b]) if multi_label else F.cross_entropy(out, y[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return layer


def fit_gate(feats: dict, cache: Cache, vocab, args) -> tuple[dict, dict]:
    """(presence.* tensors without the threshold, what they trained on)."""
    own = feats["clip"] == feats["audio_clip"]
    frame = np.tile(np.arange(T), len(own) // T)
    s4 = np.array([cache.clips[c]["kind"] == "s4" for c in feats["clip"]])
    visual = own & s4 & (feats["target"] > 0) & (feats["active"] >= args.active_fraction)
    if not visual.any():
        raise SystemExit("no S4 frame with foreground that the frozen model masks: nothing to train the visual "
                         "classifier on (too few clips, or --active-fraction too high)")
    stamp = np.array([vocab[cache.clips[c]["stamps"][0]] for c in feats["clip"][visual]], np.int64)
    sounding = cache.labels[feats["clip"][own], frame[own]]
    norms = {k: standardiser(feats[k]) for k in ("pooled", "audio")}
    z = lambda k, m: (torch.from_numpy(feats[k][m]) - norms[k][0]) / norms[k][1]  # noqa: E731
    k = len(vocab)
    vis = fit_linear(z("pooled", visual), torch.from_numpy(stamp), k, False, args, args.seed)
    aud = fit_linear(z("audio", own), torch.from_numpy(sounding), k, True, args, args.seed + 1)
    with torch.no_grad():
        vis_acc = float((vis(z("pooled", visual)).argmax(1).numpy() == stamp).mean())

    def fold(layer, key):
        mean, std = norms[key]
        with torch.no_grad():
            w = layer.weight / std
            return w.numpy(), (layer.bias - w @ mean).numpy()

    wv, bv = fold(vis, "pooled")
    wa, ba = fold(aud, "audio")
    state = {"presence.visual.weight": wv, "presence.visual.bias": bv,
             "presence.audio.weight": wa, "presence.audio.bias": ba}
    return state, {"visual_frames": int(visual.sum()), "visual_train_accuracy": round(vis_acc, 4),
                   "audio_frames": int(own.sum())}


def val_table(state: dict, feats: dict, cache: Cache, thresholds) -> list[dict]:
    """Each tau on val's own-audio frames: what `avseg eval` will count, approximately (the frozen
    model's logits from the cached float16 taps, the host's resize replaced by PIL's)."""
    with torch.no_grad():
        a = AgreementGate.from_state(state).agreement(torch.from_numpy(feats["pooled"]), torch.from_numpy(feats["audio"])).numpy()
    masked = feats["active"] >= EMPTY_MAX_FOREGROUND
    neg = np.array([is_negative(cache.clips[c]["kind"]) for c in feats["clip"]])
    offscreen = np.array([cache.clips[c]["kind"].endswith("offscreen") for c in feats["clip"]])
    pos = (feats["target"] > 0) & masked
    rows = []
    for tau in thresholds:
        empty = ~masked | (a < tau)
        rows.append({"threshold": tau,
                     "negatives_empty": round(float(empty[neg].mean()), 4),
                     "offscreen_empty": round(float(empty[offscreen].mean()), 4),
                     "masked_positives_vetoed": round(float((a < tau)[pos].mean()), 4),
                     "negative_frames": int(neg.sum()), "masked_positive_frames": int(pos.sum())})
    return rows


def choose_threshold(rows: list[dict], max_vetoed: float) -> float | None:
    ok = [r for r in rows if r["masked_positives_vetoed"] <= max_vetoed]
    if not ok:
        return None
    best = max(r["negatives_empty"] for r in ok)
    return min(r["threshold"] for r in ok if r["negatives_empty"] == best)


def cached_features(path: Path, make) -> dict[str, np.ndarray]:
    if path.exists():
        feats = dict(np.load(path))
        missing = [k for k in FEATURE_KEYS if k not in feats]
        if not missing:
            return feats
        print(f"{path}: lacks {missing}, computed again")
    feats = make()
    np.savez(path, **feats)
    return feats


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--init-from", type=Path, required=True, help="the frozen model's train.py checkpoint")
    ap.add_argument("--record", type=Path, required=True,
                    help="its train_record.json (the architecture arguments the exporter needs)")
    ap.add_argument("--cache", type=Path, required=True, help="train.py's cache_train folder")
    ap.add_argument("--val-cache", type=Path, required=True, help="train.py's cache_val folder")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--offscreen", type=int, default=2, help="off-screen twins per positive clip")
    ap.add_argument("--active-fraction", type=float, default=0.005,
                    help="the visual classifier learns from frames where the frozen model has at least "
                         "this fraction of positive logits")
    ap.add_argument("--thresholds", type=float, nargs="+", default=[0.05, 0.08, 0.10, 0.12, 0.15])
    ap.add_argument("--max-vetoed", type=float, default=0.01,
                    help="the most of val's masked frames with foreground a threshold may veto")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--weight-decay", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--limit", type=int, help="first N clips of each cache (smoke runs)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    from avseg_export.weights import read_safetensors, write_safetensors

    try:
        tensors = read_safetensors(args.init_from)
    except (OSError, ValueError, KeyError) as e:
        raise SystemExit(f"{args.init_from}: not a readable train.py checkpoint ({e})")
    if any(k.startswith("presence.") for k in tensors):
        raise SystemExit(f"{args.init_from}: already has a presence gate")
    try:
        frozen = json.loads(args.record.read_text())
        frozen_args = frozen["args"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SystemExit(f"{args.record}: not a train.py record ({str(e)[:160]})")
    head, audio_enc, _enc, _gate = torch_modules(tensors, frozen_args)
    vocab = stamp_vocab(HERE.parent / "avsreg" / "sources.lock.json")

    def cache(d: Path) -> Cache:
        try:
            return Cache(d)
        except (OSError, ValueError, KeyError) as e:
            raise SystemExit(f"{d}: not a train.py cache folder ({e})")

    train_cache, val_cache = cache(args.cache), cache(args.val_cache)
    if args.limit:
        train_cache.clips = train_cache.clips[:args.limit]
        val_cache.clips = val_cache.clips[:args.limit]
    args.out.mkdir(parents=True, exist_ok=True)

    t0 = time.time()
    rng = np.random.default_rng(args.seed)
    train_feats = cached_features(args.out / "features_train.npz", lambda: frame_features(
        head, audio_enc, train_cache, training_pairs(train_cache, vocab, rng, args.offscreen)))
    val_feats = cached_features(args.out / "features_val.npz",
                                lambda: frame_features(head, audio_enc, val_cache, own_pairs(val_cache)))
    t_feat = time.time() - t0

    t0 = time.time()
    state, data = fit_gate(train_feats, train_cache, vocab, args)
    t_fit = time.time() - t0
    table = val_table(state, val_feats, val_cache, args.thresholds)
    for row in table:
        print("val", json.dumps(row), flush=True)
    tau = choose_threshold(table, args.max_vetoed)
    if tau is None:
        raise SystemExit(f"no threshold vetoes at most {args.max_vetoed} of val's masked frames with foreground")
    state["presence.threshold"] = np.array([tau], np.float32)
    print(f"threshold {tau}", flush=True)

    write_safetensors(args.out / "checkpoint.safetensors", {**tensors, **state},
                      {"format": "avseg default model checkpoint with a presence gate (presence.*)"})
    if not (args.out / "cache_val").exists():
        # avseg-train-export checks the exported graphs on validation clips from here.
        os.symlink(args.val_cache.resolve(), args.out / "cache_val")
    record = dict(frozen)
    record["gate"] = {
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "data": data,
        "feature_seconds": round(t_feat, 1),
        "fit_seconds": round(t_fit, 1),
        "val_thresholds": table,
        "threshold": tau,
    }
    (args.out / "train_record.json").write_text(json.dumps(record, indent=1))
    print(f"wrote {args.out / 'checkpoint.safetensors'} (features {t_feat:.0f} s, fit {t_fit:.0f} s)")


if __name__ == "__main__":
    main()
