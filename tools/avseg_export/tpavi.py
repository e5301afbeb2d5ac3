"""TPAVI segmenters (docs/spec/tpavi.md §6) as static-shape ONNX graphs.

Encoders: ResNet-50 (`resnet.*`), PVT-v2 (`encoder_backbone.*`) and
EfficientNet-Lite0 (`encoder.*`), picked by the keys present. Shapes are
inferred from the tensors; block counts from the keys present.

Layout inside the graph is [T, C, H, W]. The official model reshapes by a
hard-coded 5, so T must be a multiple of 5 and frames [5g, 5g+5) form the g-th
independent attention group: T = 5 for S4/MS3, T = 10 (two groups) for AVSS.

AVSS temporal mask (docs/spec/tpavi.md §6.9): the official AVSS model multiplies features
and logits by a per-frame 0/1 flag (1111100000 for v1 clips, all ones for v2).
The graphs here never multiply: for v2 clips the flag is all ones, and for v1
clips the zeroed frames 5..9 form their own group, so real frames 0..4 get
bit-for-bit the official computation; only the padded frames' (discarded)
outputs differ. A v1 clip can also be run through a T = 5 build of the same
weights.
"""

from __future__ import annotations

import numpy as np

from .effnet_lite import effnet_lite_encoder
from .graph import GraphBuilder
from .pvt import pvt_v2_encoder
from .weights import StateDict, bn_scale_shift, fold_bn

TPAVI_GROUP = 5   # the official reshape(-1, 5, ...)
PVT_PREFIX = "encoder_backbone."
RESNET_LAYERS = (("layer1", 1), ("layer2", 2), ("layer3_1", 2), ("layer4_1", 2))
ASPP_DILATIONS = (3, 6, 12, 18)


def _conv_out(size: int, k: int, s: int, p: int, d: int = 1) -> int:
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


# ---------------------------------------------------------------------------
# ResNet-50 encoder (branch 1 only; layer3_2/layer4_2 are never executed)
# ---------------------------------------------------------------------------

def _conv_bn(gb, sd, conv_key, bn_key, x, stride, pad, relu):
    w = sd.get(conv_key + ".weight")
    s, t = bn_scale_shift(sd, bn_key, w.shape[0])
    wf, bf = fold_bn(w, None, s, t)
    y = gb.conv(x, wf, bf, conv_key, stride=stride, pad=pad)
    return (gb.relu(y, conv_key + ".relu") if relu else y), w.shape[0]


def bottleneck(gb, sd, prefix, x, stride):
    """torchvision v1.5 bottleneck: the stride sits on the 3x3 conv."""
    y, _ = _conv_bn(gb, sd, prefix + ".conv1", prefix + ".bn1", x, 1, 0, True)
    y, _ = _conv_bn(gb, sd, prefix + ".conv2", prefix + ".bn2", y, stride, 1, True)
    y, c_out = _conv_bn(gb, sd, prefix + ".conv3", prefix + ".bn3", y, 1, 0, False)
    if prefix + ".downsample.0.weight" in sd:
        skip, _ = _conv_bn(gb, sd, prefix + ".downsample.0", prefix + ".downsample.1", x, stride, 0, False)
    else:
        skip = x
    y = gb.add(y, skip, prefix + ".add")
    return gb.relu(y, prefix + ".out"), c_out


def resnet_encoder(gb, sd, x, height, width):
    """Returns [(value, channels, h, w)] for layer1..layer4 outputs."""
    x, _ = _conv_bn(gb, sd, "resnet.conv1", "resnet.bn1", x, 2, 3, True)
    h, w = _conv_out(height, 7, 2, 3), _conv_out(width, 7, 2, 3)
    x = gb.maxpool(x, "resnet.maxpool", kernel=3, stride=2, pad=1)
    h, w = _conv_out(h, 3, 2, 1), _conv_out(w, 3, 2, 1)
    feats = []
    for name, stride in RESNET_LAYERS:
        n_blocks = 0
        while f"resnet.{name}.{n_blocks}.conv1.weight" in sd:
            n_blocks += 1
        if n_blocks == 0:
            raise KeyError(f"no blocks found for resnet.{name}")
        c = None
        for i in range(n_blocks):
            s = stride if i == 0 else 1
            x, c = bottleneck(gb, sd, f"resnet.{name}.{i}", x, s)
            h, w = _conv_out(h, 3, s, 1), _conv_out(w, 3, s, 1)
        feats.append((x, c, h, w))
    return feats


# ---------------------------------------------------------------------------
# Classifier_Module: sum of dilated 3x3 convs
# ---------------------------------------------------------------------------

def aspp(gb, sd, prefix, x, h, w, shortcut=True):
    """Sum of the dilated convs `{prefix}.conv2d_list.{i}`.

    With `shortcut`, branches whose dilation reaches past the whole map only
    ever see zero padding off-centre, so they are exactly 1x1 convs with the
    centre tap; all such branches (and every bias) merge into one 1x1 conv.
    """
    branches = []
    i = 0
    while f"{prefix}.conv2d_list.{i}.weight" in sd:
        branches.append((i, ASPP_DILATIONS[i]))
        i += 1
    if not branches:
        raise KeyError(f"no branches for {prefix}.conv2d_list")
    weights = {i: sd.get(f"{prefix}.conv2d_list.{i}.weight") for i, _ in branches}
    biases = {i: sd.get(f"{prefix}.conv2d_list.{i}.bias") for i, _ in branches}
    bias_total = sum(biases[i].astype(np.float64) for i, _ in branches).astype(np.float32)
    if not shortcut:
        acc = None
        for i, d in branches:
            y = gb.conv(x, weights[i], biases[i], f"{prefix}.conv2d_list.{i}", pad=d, dilation=d)
            acc = y if acc is None else gb.add(acc, y, f"{prefix}.sum{i}")
        return acc
    full = [(i, d) for i, d in branches if d < h or d < w]
    centre = [i for i, d in branches if not (d < h or d < w)]
    terms = []
    for j, (i, d) in enumerate(full):
        terms.append(gb.conv(x, weights[i], bias_total if j == 0 else None,
                             f"{prefix}.conv2d_list.{i}", pad=d, dilation=d))
    if centre:
        wc = sum(weights[i][:, :, 1:2, 1:2].astype(np.float64) for i in centre).astype(np.float32)
        name = f"{prefix}.conv2d_list.{'+'.join(str(i) for i in centre)}.centre"
        terms.append(gb.conv(x, wc, bias_total if not full else None, name))
    acc = terms[0]
    for j, t in enumerate(terms[1:]):
        acc = gb.add(acc, t, f"{prefix}.sum{j + 1}")
    return acc


# ---------------------------------------------------------------------------
# TPAVI block, re-associated: y = theta (phi^T g) / N, no N x N matrix
# ---------------------------------------------------------------------------

def tpavi_block(gb, sd, prefix, x, audio, t, h, w, aligned_out=None, group=TPAVI_GROUP):
    """Audio-visual TPAVI over independent groups of `group` frames (official: 5).

    x: [T,C,h,w]; audio: [T,D]. Returns (out [T,C,h,w], audio_aligned [T,C]).
    Works channels-last so every per-position product is a MatMul and the
    channel LayerNorm is a single LayerNormalization(axis=-1).
    """
    if group < 1 or t % group:
        raise ValueError(f"TPAVI needs T a multiple of the group size {group}, got {t}")
    groups = t // group
    th_w = sd.get(prefix + ".theta.weight")
    cp, c = th_w.shape[0], th_w.shape[1]
    th_w = th_w.reshape(cp, c)
    th_b = sd.get(prefix + ".theta.bias", (cp,))
    ph_w = sd.get(prefix + ".phi.weight", (cp, c, 1, 1, 1)).reshape(cp, c)
    ph_b = sd.get(prefix + ".phi.bias", (cp,))
    g_w = sd.get(prefix + ".g.weight", (cp, c, 1, 1, 1)).reshape(cp, c)
    g_b = sd.get(prefix + ".g.bias", (cp,))
    al_w = sd.get(prefix + ".align_channel.weight")
    if al_w.shape[0] != c:
        raise ValueError(f"{prefix}.align_channel.weight has shape {al_w.shape}; expected [{c}, D]")
    al_b = sd.opt(prefix + ".align_channel.bias", (c,))  # absent in AVSS checkpoints
    wz_w = sd.get(prefix + ".W_z.0.weight", (c, cp, 1, 1, 1)).reshape(c, cp)
    wz_b = sd.get(prefix + ".W_z.0.bias", (c,))
    bn_s, bn_t = bn_scale_shift(sd, prefix + ".W_z.1", c)
    wz_wf, wz_bf = fold_bn(wz_w, wz_b, bn_s, bn_t)
    ln_w = sd.get(prefix + ".norm_layer.weight", (c,))
    ln_b = sd.get(prefix + ".norm_layer.bias", (c,))
    n = group * h * w   # N normalises within one group, not over all T frames

    aligned = gb.linear(audio, al_w, al_b, prefix + ".align_channel", out=aligned_out)
    phi = gb.linear(aligned, ph_w, ph_b, prefix + ".phi")                       # [T,C']
    x_cl = gb.transpose(x, (0, 2, 3, 1), prefix + ".nhwc")                      # [T,h,w,C]
    # Sum over positions of g = W_g (sum_yx V) + h*w*b_g: the g conv itself is never needed.
    v_sum = gb.reduce_sum(x_cl, (1, 2), prefix + ".vsum")                       # [T,C]
    g_sum = gb.linear(v_sum, g_w, (g_b.astype(np.float64) * (h * w)).astype(np.float32), prefix + ".g")
    inv_n = gb.const(prefix + ".inv_n", np.array(1.0 / n, dtype=np.float32))
    if groups == 1:
        # Kept node-for-node as first exported, so T = 5 packages stay byte-identical.
        phi_t = gb.transpose(phi, (1, 0), prefix + ".phi_t")                    # [C',T]
        k = gb.matmul(phi_t, g_sum, prefix + ".phiTg")                          # [C',C']
        k = gb.mul(k, inv_n, prefix + ".K")
    else:
        phi_g = gb.reshape(phi, (groups, group, cp), prefix + ".phi_g")
        phi_t = gb.transpose(phi_g, (0, 2, 1), prefix + ".phi_t")              # [G,C',g]
        g_sum = gb.reshape(g_sum, (groups, group, cp), prefix + ".g_g")        # [G,g,C']
        k = gb.matmul(phi_t, g_sum, prefix + ".phiTg")                          # [G,C',C']
        k = gb.mul(k, inv_n, prefix + ".K")
    theta = gb.matmul(x_cl, gb.const(prefix + ".theta.weight_t", np.ascontiguousarray(th_w.T)), prefix + ".theta.mm")
    theta = gb.add(theta, gb.const(prefix + ".theta.bias", th_b), prefix + ".theta")
    if groups == 1:
        y = gb.matmul(theta, k, prefix + ".y")                                  # [T,h,w,C']
    else:
        theta = gb.reshape(theta, (groups, group * h * w, cp), prefix + ".theta_g")
        y = gb.matmul(theta, k, prefix + ".y_g")                                # [G,g*hw,C']
        y = gb.reshape(y, (t, h, w, cp), prefix + ".y")
    z = gb.matmul(y, gb.const(prefix + ".W_z.weight_t_bnfolded", np.ascontiguousarray(wz_wf.T)), prefix + ".W_z.mm")
    z = gb.add(z, gb.const(prefix + ".W_z.bias_bnfolded", wz_bf), prefix + ".W_z")
    z = gb.add(z, x_cl, prefix + ".residual")
    z = gb.layer_norm_last(z, ln_w, ln_b, prefix + ".norm_layer")
    return gb.transpose(z, (0, 3, 1, 2), prefix + ".nchw"), aligned


# ---------------------------------------------------------------------------
# Decoder and head
# ---------------------------------------------------------------------------

def rcu(gb, sd, prefix, x):
    """Residual conv unit; the reference's in-place ReLU means the skip adds ReLU(x)."""
    r = gb.relu(x, prefix + ".relu0")
    y = gb.conv(r, sd.get(prefix + ".conv1.weight"), sd.get(prefix + ".conv1.bias"), prefix + ".conv1", pad=1)
    y = gb.relu(y, prefix + ".relu1")
    y = gb.conv(y, sd.get(prefix + ".conv2.weight"), sd.get(prefix + ".conv2.bias"), prefix + ".conv2", pad=1)
    return gb.add(r, y, prefix + ".add")


def fusion_block(gb, sd, prefix, x, skip=None, out=None):
    """Up2(RCU2(x + RCU1(skip))), or Up2(RCU2(x)) without a skip; Up2 uses align_corners."""
    if skip is not None:
        x = gb.add(x, rcu(gb, sd, prefix + ".resConfUnit1", skip), prefix + ".merge")
    x = rcu(gb, sd, prefix + ".resConfUnit2", x)
    return gb.upsample2x(x, prefix + ".up", align_corners=True, out=out)


def output_conv(gb, sd, prefix, x, out=None):
    """conv3x3 -> bilinear x2 (half-pixel) -> conv3x3 -> ReLU -> conv1x1."""
    y = gb.conv(x, sd.get(prefix + ".0.weight"), sd.get(prefix + ".0.bias"), prefix + ".0", pad=1)
    y = gb.upsample2x(y, prefix + ".1", align_corners=False)
    y = gb.conv(y, sd.get(prefix + ".2.weight"), sd.get(prefix + ".2.bias"), prefix + ".2", pad=1)
    y = gb.relu(y, prefix + ".3")
    w4 = sd.get(prefix + ".4.weight")
    return gb.conv(y, w4, sd.get(prefix + ".4.bias", (w4.shape[0],)), prefix + ".4", out=out), w4.shape[0]


def encoder_kind(sd: StateDict) -> str:
    """Which visual encoder the keys hold: `pvt_v2`, `resnet50` or `efficientnet_lite0`."""
    if PVT_PREFIX + "patch_embed1.proj.weight" in sd:
        return "pvt_v2"
    if "resnet.conv1.weight" in sd:
        stem_w = sd.get("resnet.conv1.weight")
        if stem_w.shape[1:] != (3, 7, 7):
            raise ValueError(f"resnet.conv1.weight has shape {stem_w.shape}; expected [*, 3, 7, 7]")
        return "resnet50"
    if "encoder._conv_stem.weight" in sd:
        return "efficientnet_lite0"
    raise KeyError("no visual encoder found: expected 'resnet.conv1.weight' (TPAVI-R50), "
                   f"'{PVT_PREFIX}patch_embed1.proj.weight' (TPAVI-PVT) or "
                   "'encoder._conv_stem.weight' (EfficientNet-Lite0)")


def visual_encoder(gb, sd, encoder, x, height, width, pvt_heads=None, pvt_head_dim=64):
    """The four feature maps [(value, channels, h, w)] of `encoder` (encoder_kind) on frames `x`."""
    if encoder == "resnet50":
        return resnet_encoder(gb, sd, x, height, width)
    if encoder == "pvt_v2":
        feats = pvt_v2_encoder(gb, sd, PVT_PREFIX, x, height, width, heads=pvt_heads, head_dim=pvt_head_dim)
        if len(feats) != 4:
            raise ValueError(f"TPAVI-PVT needs 4 PVT stages, found {len(feats)}")
        return feats
    return effnet_lite_encoder(gb, sd, "encoder.", x, height, width)


def decoder(gb, sd, fused, out):
    """The four (fused) ASPP maps, coarsest last -> (logits at the input size, class count)."""
    d = fusion_block(gb, sd, "path4", fused[3])
    d = fusion_block(gb, sd, "path3", d, fused[2])
    d = fusion_block(gb, sd, "path2", d, fused[1])
    d = fusion_block(gb, sd, "path1", d, fused[0])
    return output_conv(gb, sd, "output_conv", d, out=out)


# ---------------------------------------------------------------------------
# Presence gate (avseg's default model only; tools/train_default/model.py)
# ---------------------------------------------------------------------------

# The gate's constants; train_default.model (which trains it) imports them from here.
PRESENCE_EPS = 0.1
PRESENCE_TAP = 2
PRESENCE_GAIN = 1000.0
PRESENCE_EXP_CAP = 80.0


def presence_gate(gb, sd, logits, feats, audio, height, width, out):
    """min(logits, G (a - tau)) per frame (`presence.*` keys; train_default.model.AgreementGate).

    a = sum_k softmax(z)_k sigmoid(y)_k: z a linear classifier of what the mask lies on (encoder
    tap PRESENCE_TAP averaged under sigmoid(logits) pooled onto the tap's grid, i.e.
    sum(w * tap) / (sum(w) + eps)), y a linear tagger of the audio embedding. Where a > tau (by a
    few hundredths) every logit passes, so the mask is the same; where a <= tau the frame is empty.

    Every sum is a convolution with constant weights (the pooling a stride-k average, the sums over
    the grid kernels as large as the grid, the sums over the classes 1x1 convolutions), and the
    softmax is exp of the centred, capped logits over their sum: Conv, Gemm and element-wise
    operators are what each of avseg's runtimes runs (tract, and the CUDA runner, which has no
    reduction or softmax launch), so the gated graph runs wherever the ungated one did."""
    f, c, h, w = feats[PRESENCE_TAP]
    k = height // h
    if k * h != height or k * w != width:
        raise ValueError(f"presence gate: tap {PRESENCE_TAP} ({h}x{w}) does not tile the {height}x{width} input")
    wv = sd.get("presence.visual.weight")
    classes = wv.shape[0]
    if wv.shape != (classes, c):
        raise ValueError(f"presence.visual.weight: shape {wv.shape}, expected ({classes}, {c})")
    f32 = lambda name, v: gb.const(name, np.array(v, np.float32))  # noqa: E731
    ones = np.ones((1, classes, 1, 1), np.float32)

    prob = gb.op("Sigmoid", [logits], "presence.mask_prob")
    weight = gb.conv(prob, np.full((1, 1, k, k), 1.0 / (k * k), np.float32), None, "presence.pool", stride=k)
    total = gb.conv(gb.mul(weight, f, "presence.weighted"), np.ones((c, 1, h, w), np.float32), None,
                    "presence.sum", group=c)
    mass = gb.conv(weight, np.ones((1, 1, h, w), np.float32), np.array([PRESENCE_EPS], np.float32), "presence.mass")
    pooled = gb.op("Div", [total, mass], "presence.pooled")
    z = gb.conv(pooled, wv.reshape(classes, c, 1, 1), sd.get("presence.visual.bias", (classes,)), "presence.visual")
    z = gb.op("Sub", [z, gb.conv(z, ones / classes, None, "presence.visual_mean")], "presence.visual_centred")
    z = gb.op("Min", [z, f32("const.f32.presence_exp_cap", PRESENCE_EXP_CAP)], "presence.visual_capped")
    e = gb.op("Exp", [z], "presence.visual_exp")
    seen = gb.conv(e, ones, None, "presence.visual_total")
    wa = sd.get("presence.audio.weight")
    if wa.shape[0] != classes:
        raise ValueError(f"presence.audio.weight: {wa.shape[0]} classes, presence.visual.weight {classes}")
    heard = gb.linear(audio, wa, sd.get("presence.audio.bias", (classes,)), "presence.audio")
    heard = gb.op("Unsqueeze", [gb.op("Sigmoid", [heard], "presence.audio_prob"), gb.int_const([2, 3])],
                  "presence.audio_map")
    both = gb.conv(gb.mul(e, heard, "presence.joint"), ones, None, "presence.agreement_total")
    agreement = gb.op("Div", [both, seen], "presence.agreement")
    tau = sd.get("presence.threshold", (1,))
    score = gb.mul(gb.op("Sub", [agreement, f32("presence.threshold", tau)], "presence.margin"),
                   f32("const.f32.presence_gain", PRESENCE_GAIN), "presence.logit")
    return gb.op("Min", [logits, score], "presence.gated", out=out)


# ---------------------------------------------------------------------------
# Whole segmenter
# ---------------------------------------------------------------------------

def build_tpavi(tensors, frames=5, height=224, width=224, strict=True, check=True,
                pvt_heads=None, pvt_head_dim=64, tpavi_group=TPAVI_GROUP):
    """frames [T,3,H,W] + audio_embedding [T,D] -> mask_logits [T,K,H,W].

    T (`frames`) must be a multiple of 5; each run of 5 frames is one
    independent TPAVI group. All dimensions are static so tract can pick its
    best kernels. `pvt_heads` / `pvt_head_dim` set the PVT attention heads
    (see pvt.py; default C // 64, the official b5 split). `tpavi_group` is
    the attention group size: 5 in every official model; avseg's default
    model uses 1 (each frame attends to its own second of audio). Returns
    (onnx.ModelProto, info dict).
    """
    if height % 32 or width % 32:
        raise ValueError("height and width must be multiples of 32 (the decoder doubles 1/32 back up)")
    if frames < tpavi_group or frames % tpavi_group:
        raise ValueError(f"frames must be a positive multiple of the TPAVI group size {tpavi_group}, got {frames}")
    sd = tensors if isinstance(tensors, StateDict) else StateDict(tensors)
    encoder = encoder_kind(sd)
    graph_name = {"pvt_v2": "tpavi_pvt", "resnet50": "tpavi_r50"}.get(encoder, "tpavi_effnet_lite0")
    stages = [k for k in range(1, 5) if sd.has_prefix(f"tpavi_b{k}.")]
    if not stages:
        raise KeyError("no tpavi_b{1..4} blocks found")
    audio_dim = sd.get(f"tpavi_b{stages[0]}.align_channel.weight").shape[1]

    gb = GraphBuilder(graph_name)
    x = gb.input("frames", [frames, 3, height, width])
    audio = gb.input("audio_embedding", [frames, audio_dim])

    feats = visual_encoder(gb, sd, encoder, x, height, width, pvt_heads, pvt_head_dim)
    fused = []
    for k, (f, _c, h, w) in enumerate(feats, start=1):
        y = aspp(gb, sd, f"conv{k}", f, h, w)
        if k in stages:
            y, _ = tpavi_block(gb, sd, f"tpavi_b{k}", y, audio, frames, h, w, group=tpavi_group)
        fused.append(y)

    gated = sd.has_prefix("presence.")
    logits, n_classes = decoder(gb, sd, fused, out="mask_logits_ungated" if gated else "mask_logits")
    if gated:
        logits = presence_gate(gb, sd, logits, feats, audio, height, width, out="mask_logits")
    gb.output(logits, [frames, n_classes, height, width])

    leftover = sd.unused()
    if leftover and strict:
        raise ValueError(f"TPAVI weights not consumed: {leftover[:8]} ({len(leftover)} total)")
    label = {"resnet50": "TPAVI-R50", "pvt_v2": "TPAVI-PVT-v2"}.get(encoder, "TPAVI-EfficientNet-Lite0")
    model = gb.build(f"{label} segmenter, re-associated attention, BatchNorm folded", check=check)
    info = {
        "encoder": encoder,
        "audio_dim": int(audio_dim),
        "num_classes": int(n_classes),
        "tpavi_stages": stages,
        "tpavi_groups": frames // tpavi_group,
        "tpavi_group_size": tpavi_group,
        "encoder_channels": [int(c) for _, c, _, _ in feats],
        "parameters": gb.parameter_count(),
        "presence_gate": gated,
    }
    return model, info
