#!/usr/bin/env python3
"""Pre-train the default model's audio encoder alone: which AVS-Reg sound is in this second?

    avseg-pretrain-audio --cache RUN/cache_train --val-cache RUN/cache_val \
        --out AUDIO_DIR

Trained jointly from scratch, the VGGish-layout encoder never learnt (constant embedding, see
model.VGGishLiteBN); then TPAVI has nothing to match the frame against and masks ignore the sound.
Here it learns on the cached log-mel patches (the runtime's own front end) to name the sounding
stamp of each second, or silence: a softmax over the 100 stamps plus silence, the target spread
evenly over the stamps that sound (MS3 seconds may have two). The 128-d embedding then carries the
identity of the sound, which is what TPAVI's audio-visual affinity needs. Training uses a
BatchNorm after every layer, folded into the convs and Linears at the end, so the written weights
have the plain VGGish layout. `train.py --init-audio AUDIO_DIR/audio_encoder.safetensors` starts
from them. The classifier itself is written as a two-stage (`bavs`) package's audio tagger:
AUDIO_DIR/tagger.onnx (log-mel patches -> a softmax over the 100 stamps' sounds and `silence`) and
AUDIO_DIR/audio_labels.txt, in the order of `avsreg.label_tree`'s audio labels.

Augmentation, all in the log-mel domain log(mel + 0.01): a random gain (exact: through the
linear mel energies), a random circular time shift, and mixing two seconds' energies with the
union of their labels (stamp sounds overlap in MS3 clips).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from train_default.model import VGGishLite, VGGishLiteBN

LOG_OFFSET = 0.01  # VGGish: log(mel + 0.01)


def load(cache: Path):
    x = np.load(cache / "logmel.npy")                      # [N,T,96,64]
    y = np.load(cache / "sound_labels.npy")                # [N,T,V]
    x = x.reshape(-1, 96, 64)
    y = y.reshape(-1, y.shape[-1])
    silence = (y.sum(1) == 0).astype(np.float32)[:, None]
    return torch.from_numpy(x), torch.from_numpy(np.concatenate([y, silence], 1))


def augment(x, y, gen):
    """x [B,96,64] log-mel, y [B,V+1] multi-hot -> augmented log-mel, soft targets."""
    b = x.shape[0]
    energy = (x.exp() - LOG_OFFSET).clamp(min=0)
    gain = torch.exp(torch.empty(b, 1, 1).uniform_(np.log(0.25), np.log(4.0), generator=gen))
    energy = energy * gain
    shift = torch.randint(0, 96, (b,), generator=gen)
    energy = torch.stack([torch.roll(e, int(s), 0) for e, s in zip(energy, shift)])
    mix = torch.rand(b, generator=gen) < 0.3
    partner = torch.randperm(b, generator=gen)
    energy = torch.where(mix.view(b, 1, 1), energy + energy[partner], energy)
    y = torch.where(mix.view(b, 1), torch.maximum(y, y[partner]), y)
    # Silence is only the label when nothing else sounds.
    y[:, -1] = torch.where(y[:, :-1].sum(1) > 0, torch.zeros(b), y[:, -1])
    return (energy + LOG_OFFSET).log(), y / y.sum(1, keepdim=True)


@torch.no_grad()
def evaluate(enc, probe, x, y, batch=256):
    """Top-1 accuracy over seconds with exactly one label (one stamp, or silence), embedding
    spread (mean pairwise cosine distance), and the dead-unit share."""
    enc.eval()
    embs, logits = [], []
    for i in range(0, len(x), batch):
        e = enc(x[i:i + batch, None])
        embs.append(e)
        logits.append(probe(e))
    enc.train()
    e, lg = torch.cat(embs), torch.cat(logits)
    single = y.sum(1) == 1
    acc = float((lg[single].argmax(1) == y[single].argmax(1)).float().mean())
    n = F.normalize(e, dim=1)
    idx = torch.randperm(len(e), generator=torch.Generator().manual_seed(0))[:512]
    cos = n[idx] @ n[idx].T
    return {"top1_single": round(acc, 4), "mean_cosine": round(float(cos.mean()), 4),
            "dead_units": int((e.max(0).values <= 0).sum()), "mean_norm": round(float(e.norm(dim=1).mean()), 3)}


def write_tagger(out: Path, folded: dict, plain, probe, patches, n_cls: int) -> float:
    """The pre-training's classifier as a two-stage package's audio tagger: OUT/tagger.onnx (the
    folded encoder, the probe and a softmax; avseg_export.tagger) and OUT/audio_labels.txt (the
    stamps' names in vocabulary order, then `silence`: avsreg.label_tree.audio_labels, the order of
    the targets). Checked against the PyTorch modules on `patches`; returns the max abs difference
    of the probabilities."""
    from avseg_export.ort import session
    from avseg_export.tagger import build_vggish_tagger
    from avsreg.label_tree import LOCK, audio_labels, stamp_paths

    from train_default.train import stamp_vocab

    if list(stamp_vocab(LOCK)) != stamp_paths():
        raise SystemExit("the targets' stamp order (train.stamp_vocab) differs from avsreg.label_tree's")
    labels = audio_labels(stamp_paths())
    if len(labels) != n_cls:
        raise SystemExit(f"the targets have {n_cls} classes but avsreg.label_tree names {len(labels)} audio labels")
    model, _ = build_vggish_tagger({k: v.numpy() for k, v in folded.items()},
                                   probe.weight.detach().numpy(), probe.bias.detach().numpy())
    x = patches.numpy().astype(np.float32)
    got = session(model, threads=1).run(["tag_scores"], {"audio_logmel": x})[0]
    with torch.no_grad():
        want = F.softmax(probe(plain(patches)), 1).numpy()
    err = float(np.abs(got - want).max())
    print(f"tagger: ONNX vs PyTorch max abs probability diff {err:.2e}")
    if err > 1e-4:
        raise SystemExit("the exported tagger disagrees with the trained modules")
    (out / "tagger.onnx").write_bytes(model.SerializeToString())
    (out / "audio_labels.txt").write_text("".join(label + "\n" for label in labels))
    return err


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, required=True, help="train.py cache folder (train split)")
    ap.add_argument("--val-cache", type=Path, help="train.py cache folder (val split), for monitoring")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--audio-width", type=int, default=16)
    ap.add_argument("--audio-hidden", type=int, default=256)
    ap.add_argument("--audio-dim", type=int, default=128)
    ap.add_argument("--iters", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)

    x, y = load(args.cache)
    val = load(args.val_cache) if args.val_cache else None
    n_cls = y.shape[1]
    enc = VGGishLiteBN(args.audio_width, args.audio_hidden, args.audio_dim)
    probe = torch.nn.Linear(args.audio_dim, n_cls)
    params = list(enc.parameters()) + list(probe.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.iters, pct_start=0.1)
    log, t0 = [], time.time()
    for it in range(1, args.iters + 1):
        idx = torch.randint(0, len(x), (args.batch,), generator=gen)
        xb, yb = augment(x[idx], y[idx], gen)
        loss = -(F.log_softmax(probe(enc(xb[:, None])), 1) * yb).sum(1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if it % 50 == 0 or it == 1:
            rec = {"iter": it, "loss": round(loss.item(), 4), "elapsed_s": round(time.time() - t0, 1)}
            if val is not None and (it % args.eval_every == 0 or it == args.iters):
                rec["val"] = evaluate(enc, probe, *val)
            log.append(rec)
            print(json.dumps(rec), flush=True)

    enc.eval()
    folded = enc.folded_state_dict()
    plain = VGGishLite(args.audio_width, args.audio_hidden, args.audio_dim)
    plain.load_state_dict(folded)
    probe_x = (val or (x, y))[0][:64, None]
    with torch.no_grad():
        fold_err = float((plain(probe_x) - enc(probe_x)).abs().max())
    print(f"BatchNorm fold: max abs embedding diff {fold_err:.2e}")
    if fold_err > 1e-3:
        raise SystemExit("BatchNorm folding changed the embeddings")

    from avseg_export.weights import write_safetensors
    write_safetensors(args.out / "audio_encoder.safetensors",
                      {"vggish." + k: v.numpy() for k, v in folded.items()},
                      {"format": "avseg default-model audio encoder, VGGish layout, BatchNorm folded"})
    tagger_err = write_tagger(args.out, folded, plain, probe, probe_x, n_cls)
    record = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "train_seconds_of_audio": int(len(x)), "classes": int(n_cls),
              "machine": {"cpu": platform.processor() or platform.machine(), "threads": args.threads,
                          "torch": torch.__version__},
              "train_seconds": round(time.time() - t0, 1), "bn_fold_max_abs": fold_err,
              "tagger_onnx_max_abs": tagger_err,
              "log": log, "final_val": log[-1].get("val")}
    (args.out / "pretrain_record.json").write_text(json.dumps(record, indent=1))
    print(f"wrote {args.out / 'audio_encoder.safetensors'}, tagger.onnx and audio_labels.txt")


if __name__ == "__main__":
    main()
