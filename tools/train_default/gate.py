#!/usr/bin/env python3
"""Train a presence gate on a frozen default model (issue 15, fifth round).

    avseg-train-gate --init-from CHECKPOINT --record TRAIN_RECORD.json \
        --cache RUN/cache_train --val-cache RUN/cache_val --out GATE_RUN [--positive-weight 1]
    avseg-train-export --run GATE_RUN --out PACKAGE

Why a gate: the default model's remaining error is off-screen sounds (a sound whose object is not
in view, and the model masks a visible object anyway). Rounds that pushed the mask logits
themselves (more off-screen twins, heavier false-positive losses, higher thresholds) gained under
a point each and cost J. The gate asks a different question, once per frame: is the thing the
mask lies on the thing that sounds? It reads the encoder's deep features pooled under the frame's
own mask probabilities and the frame's audio embedding (`model.gate_inputs`, `PresenceGate`), and
the exported logits are min(logits, s): a kept frame's mask is unchanged, a vetoed frame is empty.

Everything of the checkpoint stays frozen, so the gate trains on features computed once:
  1. every training clip runs through the frozen head with its own audio, with the sound of two
     clips none of whose sounding objects is in view (off-screen twins: targets 0), and, for S4
     clips, with another clip's audio (target 1 only in the seconds where the clip's own object
     sounds in the new mix);
  2. frames the frozen model leaves empty (under --active-fraction of pixels with a positive
     logit) are dropped: the gate changes nothing there;
  3. binary cross-entropy on s, positives weighted by --positive-weight, a fixed number of epochs
     from a fixed seed (no early stopping, no checkpoint picking);
  4. the checkpoint is written with the gate's `presence.*` keys, its input standardisation
     folded into the weights, beside the frozen model's keys; `train_record.json` keeps the frozen
     run's arguments (what the exporter reads) and this run's.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from train_default.data import EMPTY_MAX_FOREGROUND, T, Cache, is_negative
from train_default.export import torch_modules
from train_default.model import PresenceGate, gate_inputs
from train_default.train import HERE, batch_tensors, offscreen_audio, stamp_vocab

FEATURE_KEYS = ("v16", "v32", "audio", "active", "target")


@torch.no_grad()
def frame_features(head, audio_enc, cache: Cache, pairs, batch: int = 8) -> dict[str, np.ndarray]:
    """pairs: [(clip index, audio clip index, per-frame target [T])] -> per-frame arrays."""
    out = {k: [] for k in FEATURE_KEYS}
    for i0 in range(0, len(pairs), batch):
        chunk = pairs[i0:i0 + batch]
        taps, _, _, _ = batch_tensors(cache, np.array([c for c, _, _ in chunk]))
        _, logmel, _, _ = batch_tensors(cache, np.array([a for _, a, _ in chunk]))
        emb = audio_enc(logmel)
        logits = head(taps, emb.view(len(chunk), T, -1))
        v16, v32 = gate_inputs(logits, taps)
        out["v16"].append(v16.numpy())
        out["v32"].append(v32.numpy())
        out["audio"].append(emb.numpy())
        out["active"].append((logits > 0).float().mean((1, 2, 3)).numpy())
        out["target"].append(np.concatenate([t for _, _, t in chunk]).astype(np.float32))
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
    mean = x.mean(0)
    std = x.std(0) + 1e-3
    return torch.from_numpy(mean), torch.from_numpy(std)


def fit_gate(feats: dict, args) -> tuple[PresenceGate, dict, list, dict]:
    """(gate on standardised inputs, the standardisation, the epoch log, what it trained on)."""
    torch.manual_seed(args.seed)
    keep = feats["active"] >= args.active_fraction
    x16, x32, xa = (torch.from_numpy(feats[k][keep]) for k in ("v16", "v32", "audio"))
    y = torch.from_numpy(feats["target"][keep])
    norms = {k: standardiser(feats[k][keep]) for k in ("v16", "v32", "audio")}
    z = lambda k, x: (x - norms[k][0]) / norms[k][1]  # noqa: E731
    x16, x32, xa = z("v16", x16), z("v32", x32), z("audio", xa)
    gate = PresenceGate((x16.shape[1], x32.shape[1]), xa.shape[1], args.rank)
    opt = torch.optim.AdamW(gate.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    n = len(y)
    log = []
    g = torch.Generator().manual_seed(args.seed)
    for epoch in range(1, args.epochs + 1):
        order = torch.randperm(n, generator=g)
        total = 0.0
        for i0 in range(0, n, args.batch):
            b = order[i0:i0 + args.batch]
            s = gate([x16[b], x32[b]], xa[b])
            loss = F.binary_cross_entropy_with_logits(
                s, y[b], pos_weight=torch.tensor(args.positive_weight))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(b)
        with torch.no_grad():
            s = gate([x16, x32], xa)
            acc = float(((s > 0).float() == y).float().mean())
        log.append({"epoch": epoch, "loss": round(total / n, 4), "train_accuracy": round(acc, 4)})
        if epoch % 5 == 0 or epoch == 1:
            print(json.dumps(log[-1]), flush=True)
    return gate, norms, log, {"frames": int(n), "positives": int(y.sum()), "dropped_inactive": int((~keep).sum())}


@torch.no_grad()
def folded(gate: PresenceGate, norms) -> dict[str, np.ndarray]:
    """presence.* with the standardisation folded in: W (x - m) / s = (W / s) x - (W / s) m."""
    def fold(layer, key):
        mean, std = norms[key]
        w = layer.weight / std
        return w, -(w @ mean)

    w16, o16 = fold(gate.visual16, "v16")
    w32, o32 = fold(gate.visual32, "v32")
    wa, oa = fold(gate.audio, "audio")
    return {
        "presence.visual16.weight": w16.numpy(),
        "presence.visual32.weight": w32.numpy(),
        "presence.visual32.bias": (gate.visual32.bias + o16 + o32).numpy(),
        "presence.audio.weight": wa.numpy(),
        "presence.audio.bias": (gate.audio.bias + oa).numpy(),
        "presence.bias": gate.bias.detach().numpy().copy(),
    }


def val_report(gate_state: dict, feats: dict, cache: Cache) -> dict:
    """The gate on val's own-audio frames: what `avseg eval` will count, approximately (the
    frozen model's logits from the cached float16 taps)."""
    gate = PresenceGate(rank=gate_state["presence.audio.weight"].shape[0])
    gate.load_state_dict({k[len("presence."):]: torch.from_numpy(v) for k, v in gate_state.items()})
    with torch.no_grad():
        s = gate([torch.from_numpy(feats["v16"]), torch.from_numpy(feats["v32"])],
                 torch.from_numpy(feats["audio"])).numpy()
    raw_empty = feats["active"] < EMPTY_MAX_FOREGROUND
    kinds = np.repeat([c["kind"] for c in cache.clips], T)
    neg = np.array([is_negative(k) for k in kinds])
    pos = feats["target"] > 0
    return {
        "negative_frames": int(neg.sum()),
        "negatives_empty_before": round(float(raw_empty[neg].mean()), 4),
        "negatives_empty_after": round(float((raw_empty | (s <= 0))[neg].mean()), 4),
        "positive_frames": int(pos.sum()),
        "positives_vetoed": round(float(((s <= 0) & ~raw_empty)[pos].mean()), 4),
    }


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
                    help="train only on frames where the frozen model has at least this fraction of "
                         "positive logits")
    ap.add_argument("--positive-weight", type=float, default=1.0)
    ap.add_argument("--rank", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--weight-decay", type=float, default=1e-4)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--limit", type=int, help="first N clips of each cache (smoke runs)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    from avseg_export.weights import read_safetensors, write_safetensors

    tensors = read_safetensors(args.init_from)
    if any(k.startswith("presence.") for k in tensors):
        raise SystemExit(f"{args.init_from}: already has a presence gate")
    frozen = json.loads(args.record.read_text())
    head, audio_enc, _enc, _gate = torch_modules(tensors, frozen["args"])
    vocab = stamp_vocab(HERE.parent / "avsreg" / "sources.lock.json")
    train_cache, val_cache = Cache(args.cache), Cache(args.val_cache)
    if args.limit:
        train_cache.clips = train_cache.clips[:args.limit]
        val_cache.clips = val_cache.clips[:args.limit]
    args.out.mkdir(parents=True, exist_ok=True)

    t0 = time.time()
    feat_file = args.out / "features_train.npz"
    if feat_file.exists():
        train_feats = dict(np.load(feat_file))
    else:
        rng = np.random.default_rng(args.seed)
        train_feats = frame_features(head, audio_enc, train_cache, training_pairs(train_cache, vocab, rng, args.offscreen))
        np.savez(feat_file, **train_feats)
    val_file = args.out / "features_val.npz"
    if val_file.exists():
        val_feats = dict(np.load(val_file))
    else:
        val_feats = frame_features(head, audio_enc, val_cache, own_pairs(val_cache))
        np.savez(val_file, **val_feats)
    t_feat = time.time() - t0

    t0 = time.time()
    gate, norms, log, data = fit_gate(train_feats, args)
    t_fit = time.time() - t0
    state = folded(gate, norms)
    report = val_report(state, val_feats, val_cache)
    print("val", json.dumps(report), flush=True)

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
        "log": log,
        "val_approx": report,
    }
    (args.out / "train_record.json").write_text(json.dumps(record, indent=1))
    print(f"wrote {args.out / 'checkpoint.safetensors'} (features {t_feat:.0f} s, fit {t_fit:.0f} s)")


if __name__ == "__main__":
    main()
