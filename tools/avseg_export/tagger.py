"""An audio tagger for two-stage (`bavs`) packages as an ONNX graph: the VGGish-layout encoder, one
Linear layer over its embedding and a softmax, so each 0.96 s log-mel patch gets a probability per
audio label (the labels of the package's `audio_labels` file, in order).

    audio_logmel [N,1,96,64] -> VGGish (post-ReLU embedding) -> Linear -> Softmax -> tag_scores [N,L]

A softmax, not per-label sigmoids: AVS-Reg's audio pre-training (`train_default.pretrain_audio`)
learns one distribution over the stamps' sounds and `silence`, with the target spread evenly over
the sounds of a second. Two sounds in one second then read about 0.5 each, which is what the label
tree's thresholds are set against.
"""

from __future__ import annotations

import numpy as np

from .graph import GraphBuilder
from .vggish import MEL_BANDS, PATCH_FRAMES, vggish_trunk
from .weights import StateDict


def build_vggish_tagger(tensors, head_weight: np.ndarray, head_bias: np.ndarray, check: bool = True):
    """`tensors`: the encoder's VGGish-layout state dict (no prefix); `head_weight` [L, D] and
    `head_bias` [L] the Linear over the D-wide embedding. Returns (onnx.ModelProto, info dict with
    labels and parameters)."""
    sd = tensors if isinstance(tensors, StateDict) else StateDict(tensors)
    gb = GraphBuilder("vggish_tagger")
    x, d = vggish_trunk(gb, sd, gb.input("audio_logmel", ["N", 1, PATCH_FRAMES, MEL_BANDS]))
    head_weight = np.asarray(head_weight, np.float32)
    head_bias = np.asarray(head_bias, np.float32)
    if head_weight.ndim != 2 or head_weight.shape[1] != d:
        raise ValueError(f"tagger head weight has shape {head_weight.shape}; expected [labels, {d}]")
    if head_bias.shape != (head_weight.shape[0],):
        raise ValueError(f"tagger head bias has shape {head_bias.shape}; expected [{head_weight.shape[0]}]")
    x = gb.linear(x, head_weight, head_bias, "tagger.head")
    x = gb.op("Softmax", [x], "tagger.softmax", out="tag_scores", axis=-1)
    gb.output(x, ["N", int(head_weight.shape[0])])
    model = gb.build("VGGish-layout audio tagger: softmax over the audio labels", check=check)
    return model, {"labels": int(head_weight.shape[0]), "parameters": gb.parameter_count()}
