"""Audio-agnostic semantic segmenters (a two-stage `bavs` package's first stage) as ONNX graphs.

The layout is TPAVI's without its audio: the same encoders (picked by the keys, as in
`tpavi.build_tpavi`), one ASPP per feature map (`conv1..4`), the same decoder (`path4..1`) and
head (`output_conv`), whose last conv has one output per visual class. No TPAVI block, so the
frames never meet inside the graph and the frame axis is symbolic (`N`): one file serves a window
and a single streamed frame.

A factored head (keys `cls.*`; see `factored_classes`) scores the classes from the deep features
at low resolution and adds them to one full-resolution objectness map.
"""

from __future__ import annotations

from .graph import GraphBuilder
from .tpavi import aspp, decoder, encoder_kind, visual_encoder
from .weights import StateDict


def factored_classes(gb, sd, feats, fused, width):
    """The factored head (train_default.model.SemanticHead with a class branch): the decoder gives
    background b and objectness o; `cls.*` scores each object class k at 1/16 scale from the two
    deepest feature maps, c_k, brought up to the input size by bilinear x2 steps (half-pixel, as
    F.interpolate without align_corners); the logits are [b, o + c_1, ..., o + c_K-1]."""
    y, two = decoder(gb, sd, fused, out=None)
    if two != 2:
        raise ValueError(f"a factored head's output_conv.4 has {two} outputs; expected 2 (background, objectness)")
    (t2, _, _, w2), (t3, _, _, _) = feats[2], feats[3]
    x = gb.op("Concat", [t2, gb.upsample2x(t3, "cls.up_deepest", align_corners=False)], "cls.concat", axis=1)
    x = gb.relu(gb.conv(x, sd.get("cls.0.weight"), sd.get("cls.0.bias"), "cls.0", pad=1), "cls.1")
    x = gb.conv(x, sd.get("cls.2.weight"), sd.get("cls.2.bias"), "cls.2")
    steps, w = 0, w2
    while w < width:
        x, w, steps = gb.upsample2x(x, f"cls.up{steps}", align_corners=False), w * 2, steps + 1
    if w != width:
        raise ValueError(f"the class branch's {w2}-wide map does not double up to the input width {width}")
    starts = lambda i: gb.int_const([i])  # noqa: E731
    b = gb.op("Slice", [y, starts(0), starts(1), starts(1)], "head.background")
    o = gb.op("Slice", [y, starts(1), starts(2), starts(1)], "head.objectness")
    objects = gb.add(o, x, "head.objects")
    n_objects = sd.get("cls.2.weight").shape[0]
    return gb.op("Concat", [b, objects], "head.concat", out="class_logits", axis=1), n_objects + 1


def build_semantic(tensors, height: int, width: int, strict: bool = True, check: bool = True):
    """frames [N,3,H,W] -> class_logits [N,K,H,W]. Returns (onnx.ModelProto, info dict)."""
    if height % 32 or width % 32:
        raise ValueError("height and width must be multiples of 32 (the decoder doubles 1/32 back up)")
    sd = tensors if isinstance(tensors, StateDict) else StateDict(tensors)
    if any(sd.has_prefix(f"tpavi_b{k}.") for k in range(1, 5)):
        raise ValueError("the weights hold TPAVI blocks: an audio-visual model, not an audio-agnostic segmenter")
    encoder = encoder_kind(sd)
    gb = GraphBuilder(f"semantic_{encoder}")
    x = gb.input("frames", ["N", 3, height, width])
    feats = visual_encoder(gb, sd, encoder, x, height, width)
    fused = [aspp(gb, sd, f"conv{k}", f, h, w) for k, (f, _c, h, w) in enumerate(feats, start=1)]
    if sd.has_prefix("cls."):
        logits, n_classes = factored_classes(gb, sd, feats, fused, width)
    else:
        logits, n_classes = decoder(gb, sd, fused, out="class_logits")
    gb.output(logits, ["N", n_classes, height, width])
    leftover = sd.unused()
    if leftover and strict:
        raise ValueError(f"segmenter weights not consumed: {leftover[:8]} ({len(leftover)} total)")
    model = gb.build(f"audio-agnostic semantic segmenter ({encoder}), BatchNorm folded", check=check)
    info = {"encoder": encoder, "num_classes": int(n_classes),
            "encoder_channels": [int(c) for _, c, _, _ in feats], "parameters": gb.parameter_count()}
    return model, info
