"""VGGish audio encoder (docs/spec/vggish.md §3) as an ONNX graph.

Layer widths come from the weight shapes, so a width-reduced network that keeps
the official key layout exports with the same code as the real one.
"""

from __future__ import annotations

import numpy as np

from .graph import GraphBuilder
from .weights import StateDict

# Conv keys in order; True where a 2x2/2 max-pool follows the conv's ReLU.
CONV_LAYERS = ((0, True), (3, True), (6, False), (8, True), (11, False), (13, True))
FC_LAYERS = (0, 2, 4)
PATCH_FRAMES, MEL_BANDS = 96, 64


def vggish_features(gb: GraphBuilder, sd: StateDict, x: str, prefix: str = "") -> tuple[str, int]:
    """Conv trunk: [N,1,96,64] -> [N,C,6,4]. Returns (value, C)."""
    c_in = 1
    for idx, pool in CONV_LAYERS:
        key = f"{prefix}features.{idx}"
        w = sd.get(key + ".weight")
        if w.ndim != 4 or w.shape[1] != c_in or w.shape[2:] != (3, 3):
            raise ValueError(f"{key}.weight has shape {w.shape}; expected [*, {c_in}, 3, 3]")
        b = sd.get(key + ".bias", (w.shape[0],))
        x = gb.conv(x, w, b, key, pad=1)
        x = gb.relu(x, key + ".relu")
        if pool:
            x = gb.maxpool(x, key + ".pool", kernel=2, stride=2)
        c_in = w.shape[0]
    return x, c_in


def vggish_flatten(gb: GraphBuilder, x: str, channels: int) -> str:
    """Flatten in the TensorFlow (NHWC) order the first FC layer was trained on."""
    h, w = PATCH_FRAMES // 16, MEL_BANDS // 16
    x = gb.transpose(x, (0, 2, 3, 1), "flatten.nhwc")
    return gb.reshape(x, (-1, h * w * channels), "flatten")


def vggish_embeddings(gb: GraphBuilder, sd: StateDict, x: str, in_features: int, out: str | None = None,
                      prefix: str = ""):
    """Three Linear+ReLU layers; the last ReLU is part of the official output."""
    d = in_features
    for i, idx in enumerate(FC_LAYERS):
        key = f"{prefix}embeddings.{idx}"
        w = sd.get(key + ".weight")
        if w.ndim != 2 or w.shape[1] != d:
            raise ValueError(f"{key}.weight has shape {w.shape}; expected [*, {d}]")
        b = sd.get(key + ".bias", (w.shape[0],))
        x = gb.linear(x, w, b, key)
        last = i == len(FC_LAYERS) - 1
        x = gb.relu(x, key + ".relu", out=out if last else None)
        d = w.shape[0]
    return x, d


def vggish_trunk(gb, sd: StateDict, x, prefix: str = "", out=None):
    """Log-mel patches `x` [N,1,96,64] -> (post-ReLU embedding [N,D], D): the features, the
    flatten and the embeddings. Every key of `sd` must be consumed: a `pproc.*` (PCA
    post-processor) key would be left, and the official models run with it disabled, so its
    presence means a checkpoint avseg cannot mirror."""
    x, c = vggish_features(gb, sd, x, prefix)
    x = vggish_flatten(gb, x, c)
    x, d = vggish_embeddings(gb, sd, x, c * (PATCH_FRAMES // 16) * (MEL_BANDS // 16), out=out, prefix=prefix)
    leftover = sd.unused()
    if leftover:
        raise ValueError(f"VGGish weights not consumed: {leftover[:8]}")
    return x, d


def build_vggish(tensors, input_name="audio_logmel", output_name="audio_embedding", check=True, prefix=""):
    """Full encoder: audio_logmel [N,1,96,64] (N symbolic) -> audio_embedding [N,D].

    `prefix` selects the VGGish keys inside a larger state dict (AVSegFormer
    checkpoints hold it under `vggish.`); keys outside the prefix are ignored,
    keys inside it must all be consumed. Returns (onnx.ModelProto, info dict
    with embedding_dim and parameters).
    """
    if prefix:
        t = tensors.t if isinstance(tensors, StateDict) else tensors
        sd = StateDict({k: v for k, v in t.items() if k.startswith(prefix)})
    else:
        sd = tensors if isinstance(tensors, StateDict) else StateDict(tensors)
    gb = GraphBuilder("vggish")
    x, d = vggish_trunk(gb, sd, gb.input(input_name, ["N", 1, PATCH_FRAMES, MEL_BANDS]), prefix, out=output_name)
    gb.output(x, ["N", d])
    model = gb.build("VGGish audio encoder, post-ReLU embedding, no PCA", check=check)
    return model, {"embedding_dim": int(d), "parameters": gb.parameter_count()}
