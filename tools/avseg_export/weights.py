"""State-dict access, safetensors I/O and BatchNorm folding.

Weights arrive keyed exactly as in the official checkpoints (docs/spec/tpavi.md §6.10,
3); everything here works on plain numpy dicts so no torch is needed.
"""

from __future__ import annotations

import json
import struct

import numpy as np

BN_EPS = 1e-5

# Keys that exist in official checkpoints but are never executed (docs/spec/checkpoints.md §12.2).
DEAD_PREFIXES = ("resnet.layer3_2.", "resnet.layer4_2.", "path4.resConfUnit1.",
                 "backbone.layer3_2.", "backbone.layer4_2.", "head.fpn.", "head.attn_fc.")


def read_safetensors(path) -> dict[str, np.ndarray]:
    """Read a safetensors file into float32/int64/float64 numpy arrays.

    BF16 is widened by placing the 16 stored bits in the top half of an f32,
    which is exact (the reference files were generated from those values).
    """
    with open(path, "rb") as f:
        raw = f.read()
    (hlen,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + hlen])
    base = 8 + hlen
    out = {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        lo, hi = info["data_offsets"]
        buf = raw[base + lo: base + hi]
        dt = info["dtype"]
        shape = info["shape"]
        if dt == "BF16":
            arr = (np.frombuffer(buf, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        elif dt == "F32":
            arr = np.frombuffer(buf, dtype="<f4")
        elif dt == "F64":
            arr = np.frombuffer(buf, dtype="<f8")
        elif dt == "I64":
            arr = np.frombuffer(buf, dtype="<i8")
        else:
            raise ValueError(f"{path}: unsupported dtype {dt} for {key}")
        out[key] = arr.reshape(shape).copy()
    return out


def write_safetensors(path, tensors: dict[str, np.ndarray], metadata: dict | None = None):
    """Write float32/int64 arrays as safetensors, keys sorted for reproducibility."""
    names = {np.dtype(np.float32): "F32", np.dtype(np.int64): "I64"}
    header = {}
    blobs = []
    offset = 0
    for key in sorted(tensors):
        arr = np.ascontiguousarray(tensors[key])
        b = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
        header[key] = {"dtype": names[arr.dtype], "shape": list(arr.shape),
                       "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    if metadata:
        header["__metadata__"] = {k: str(v) for k, v in metadata.items()}
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * ((8 - len(hb) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for b in blobs:
            f.write(b)


class StateDict:
    """A key -> array mapping that fails loudly on missing keys and records use.

    After building a graph, `unused()` lists keys that were present but not
    consumed (minus known-dead ones), which catches silent key-grammar drift.
    """

    def __init__(self, tensors: dict[str, np.ndarray]):
        self.t = {k: np.asarray(v) for k, v in tensors.items()}
        self.used: set[str] = set()

    def __contains__(self, key):
        return key in self.t

    def has_prefix(self, prefix) -> bool:
        return any(k.startswith(prefix) for k in self.t)

    def get(self, key, shape=None) -> np.ndarray:
        if key not in self.t:
            raise KeyError(f"missing weight '{key}'")
        arr = self.t[key]
        if shape is not None and tuple(arr.shape) != tuple(shape):
            raise ValueError(f"weight '{key}' has shape {tuple(arr.shape)}, expected {tuple(shape)}")
        self.used.add(key)
        return arr.astype(np.float32) if arr.dtype != np.float32 else arr

    def opt(self, key, shape=None):
        return self.get(key, shape) if key in self.t else None

    def unused(self) -> list[str]:
        return sorted(k for k in self.t if k not in self.used
                      and not k.endswith("num_batches_tracked")
                      and not k.startswith(DEAD_PREFIXES))


def bn_scale_shift(sd: StateDict, prefix: str, channels: int, eps: float | None = None):
    """Per-channel (scale, shift) of an eval-mode BatchNorm, computed in float64."""
    g = sd.get(prefix + ".weight", (channels,)).astype(np.float64)
    b = sd.get(prefix + ".bias", (channels,)).astype(np.float64)
    m = sd.get(prefix + ".running_mean", (channels,)).astype(np.float64)
    v = sd.get(prefix + ".running_var", (channels,)).astype(np.float64)
    s = g / np.sqrt(v + (BN_EPS if eps is None else eps))
    return s, b - m * s


def fold_bn(weight: np.ndarray, bias, scale: np.ndarray, shift: np.ndarray):
    """Fold y = BN(conv(x)) into one conv: W' = s*W, b' = s*b + shift (f64, then f32)."""
    w = weight.astype(np.float64) * scale.reshape((-1,) + (1,) * (weight.ndim - 1))
    b = shift if bias is None else scale * bias.astype(np.float64) + shift
    return w.astype(np.float32), b.astype(np.float32)
