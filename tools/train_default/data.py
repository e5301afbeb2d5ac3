"""AVS-Reg clips -> cached training tensors.

The frozen encoder makes the visual side a one-off cost: every frame goes through
EfficientNet-Lite0 once and its four taps are stored as float16. Log-mel patches come from the
runtime itself (`avseg features`), so training sees bit-for-bit the audio front end that
deployment runs. Frames are resized with PIL's antialiased bilinear filter, which the runtime's
`bilinear_pil` mode reproduces.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image


class OrtEncoder:
    """The frozen trunk exactly as the package exports it (BN folded, TF SAME padding), run by
    ONNX Runtime: several times faster than PyTorch's CPU depthwise convolutions, and the
    training features are then those of the deployed graph."""

    def __init__(self, lite0: dict, size: int, threads: int):
        import onnxruntime as ort
        from avseg_export.effnet_lite import effnet_lite_encoder
        from avseg_export.graph import GraphBuilder
        from avseg_export.weights import StateDict

        sd = StateDict({"encoder." + k: v.numpy() for k, v in lite0.items()})
        gb = GraphBuilder("effnet_lite0_encoder")
        x = gb.input("frames", ["N", 3, size, size])
        for i, (v, c, h, w) in enumerate(effnet_lite_encoder(gb, sd, "encoder.", x, size, size)):
            gb.output(gb.op("Identity", [v], f"tap{i}", out=f"tap{i}"), ["N", c, h, w])
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        self.sess = ort.InferenceSession(gb.build().SerializeToString(), so, providers=["CPUExecutionProvider"])

    def __call__(self, frames: np.ndarray) -> list[np.ndarray]:
        return self.sess.run(None, {"frames": frames.astype(np.float32)})

# `avseg eval` counts an empty-GT frame as predicted empty when under 1 % of its pixels are
# foreground (src/eval: EMPTY_PREDICTION_MAX_FOREGROUND).
EMPTY_MAX_FOREGROUND = 0.01


def is_negative(kind: str) -> bool:
    """AVS-Reg negatives (silence or an off-screen sound): every frame's GT is empty."""
    return kind.startswith(("s4neg", "ms3neg"))


IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
T = 5


def clip_paths(root: Path, recipe: dict) -> dict:
    name, split = recipe["name"], recipe["split"]
    if recipe["layout"] == "s4":
        cat = recipe["category"]
        return {
            "wav": root / "s4_data/audio_wav" / split / cat / f"{name}.wav",
            "frames": [root / "s4_data/visual_frames" / split / cat / name / f"{name}_{i}.png" for i in range(1, 6)],
            "masks": [root / "s4_data/gt_masks" / split / cat / name / f"{name}_{i}.png" for i in range(1, 6)],
        }
    return {
        "wav": root / "ms3_data/audio_wav" / split / f"{name}.wav",
        "frames": [root / "ms3_data/visual_frames" / name / f"{name}.mp4_{i}.png" for i in range(1, 6)],
        "masks": [root / "ms3_data/gt_masks" / split / name / f"{name}_{i}.png" for i in range(1, 6)],
    }


def list_clips(root: Path, split: str) -> list[dict]:
    recipes = [json.loads(p.read_text()) for p in sorted((root / "clips").glob("*.json"))]
    return [r for r in recipes if r["split"] == split]


def sound_labels(recipe: dict, vocab: dict[str, int]) -> np.ndarray:
    """[T, V] 0/1: which stamps' sounds are active in each second (on or off screen)."""
    y = np.zeros((T, len(vocab)), np.float32)
    for src in recipe.get("sources", []):
        for t, on in enumerate(src["active"]):
            if on:
                y[t, vocab[src["stamp"]]] = 1.0
    return y


def logmel_batch(avseg_bin: str, wavs: list[Path], workers: int = 2) -> np.ndarray:
    """[N, T, 96, 64] float32 from the runtime's own VGGish front end."""
    tmp = Path(tempfile.mkdtemp(prefix="avseg_logmel_"))

    def one(i_w):
        i, wav = i_w
        out = tmp / f"{i}.npy"
        subprocess.run([avseg_bin, "features", "--audio", str(wav), "--out", str(out)],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        a = np.load(out)
        out.unlink()
        assert a.shape == (T, 1, 96, 64), (wav, a.shape)
        return a[:, 0]

    with ThreadPoolExecutor(workers) as pool:
        res = list(pool.map(one, enumerate(wavs)))
    tmp.rmdir()
    return np.stack(res).astype(np.float32)


def load_frames(paths: list[Path], size: int) -> np.ndarray:
    """[T, 3, size, size] normalised float32, as the runtime's `bilinear_pil` front end."""
    out = []
    for p in paths:
        im = Image.open(p).convert("RGB")
        if im.size != (size, size):
            im = im.resize((size, size), Image.BILINEAR)
        a = np.asarray(im, np.float32) / 255.0
        out.append(((a - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1))
    return np.stack(out)


def load_masks(paths: list[Path]) -> np.ndarray:
    return np.stack([np.asarray(Image.open(p).convert("L")) > 127 for p in paths]).astype(np.uint8)


def build_cache(root: Path, split: str, out: Path, size: int, encoder: OrtEncoder,
                vocab: dict[str, int], avseg_bin: str, limit: int | None = None):
    clips = list_clips(root, split)
    if limit:
        clips = clips[:limit]
    if not clips:
        raise SystemExit(f"{root}: no {split} clips")
    out.mkdir(parents=True, exist_ok=True)
    n = len(clips)
    paths = [clip_paths(root, r) for r in clips]
    print(f"[cache] {root} {split}: {n} clips -> {out}", flush=True)
    logmel = logmel_batch(avseg_bin, [p["wav"] for p in paths])
    masks = np.stack([load_masks(p["masks"]) for p in paths])
    labels = np.stack([sound_labels(r, vocab) for r in clips])
    taps = None
    for i0 in range(0, n, 8):
        batch = np.concatenate([load_frames(p["frames"], size) for p in paths[i0:i0 + 8]])
        feats = encoder(batch)
        if taps is None:
            taps = [np.zeros((n, T) + tuple(f.shape[1:]), np.float16) for f in feats]
        for store, f in zip(taps, feats):
            store[i0:i0 + f.shape[0] // T] = f.astype(np.float16).reshape((-1, T) + f.shape[1:])
        if (i0 // 8) % 25 == 0:
            print(f"[cache]   encoder {i0 + len(paths[i0:i0 + 8])}/{n}", flush=True)
    for k, a in enumerate(taps):
        np.save(out / f"tap{k}.npy", a)
    np.save(out / "logmel.npy", logmel)
    np.save(out / "masks.npy", masks)
    np.save(out / "sound_labels.npy", labels)
    meta = [{"name": r["name"], "layout": r["layout"], "kind": r["kind"],
             "stamps": [o["stamp"] for o in r["objects"]]} for r in clips]
    (out / "clips.json").write_text(json.dumps({"root": str(root), "split": split, "size": size,
                                                "clips": meta}, indent=0))


class Cache:
    def __init__(self, d: Path):
        self.taps = [np.load(d / f"tap{k}.npy") for k in range(4)]
        self.logmel = np.load(d / "logmel.npy")
        self.masks = np.load(d / "masks.npy")
        self.labels = np.load(d / "sound_labels.npy")
        self.meta = json.loads((d / "clips.json").read_text())
        self.clips = self.meta["clips"]

    def __len__(self):
        return len(self.clips)
