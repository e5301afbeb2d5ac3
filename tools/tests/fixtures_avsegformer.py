"""Width-reduced random AVSegFormer-R50 checkpoints in the official key layout (models.md 7.5).

    make_avsegformer_fixture(seed, variant) -> dict[str, np.ndarray]

Variants: "s4" (1 class, AttentionGenerator, the current code), "avss"
(71 classes), and "s4-repeat" / "avss-repeat" (the April-2023 head: no
`head.query_generator.*` keys, models.md 7.1); "pvt-s4" / "pvt-avss" swap the
R50 for a PVT-v2 backbone under `backbone.` (models.md 6.3, 7.5). PVT head
counts are not in any tensor: the width-reduced PVT uses head dim PVT_TINY
["head_dim"] (16; official 64), which `export_options(variant)` hands to
build_avsegformer, as the TPAVI-PVT fixtures record `export.pvt_head_dim`. Every key family of a real
checkpoint is present, including `vggish.*` and the dead `backbone.layer3_2`,
`backbone.layer4_2`, `head.fpn`, `head.attn_fc` weights the exporter must
drop; layer counts are reduced (the exporter counts them from the keys).

Scaling: BatchNorm statistics are unit (mean 0, var 1) and convs He-scaled, so
the backbone keeps O(1) activations without calibration; each bottleneck's
last BN has a small gamma so the residual stream grows slowly over 16 blocks.
The head is post-norm (LayerNorm/GroupNorm everywhere), so only the pieces
between norms need care: sampling offsets of a few pixels (some fall outside
the map, so zero padding is exercised), a damped last `mlp` layer so that
pred = MF + mlp(Q.MF) keeps both terms comparable. Weights are rounded to
bf16-representable values to keep the fixture bit-stable across numpy
versions' float formatting. The tiny checkpoint is ~3.5 MB of float32 (half of it the dead R50 branch).
"""

from __future__ import annotations

import numpy as np

# New variants go at the end: the index seeds each variant's generator.
VARIANTS = ("s4", "avss", "s4-repeat", "avss-repeat", "pvt-s4", "pvt-avss")

# Reduced widths; official values in the comments (and in FULL_SIZE).
TINY = dict(
    stem=8,                     # 64
    widths=(4, 8, 16, 32),      # 64, 128, 256, 512 (bottleneck outputs are 4x)
    blocks=(3, 4, 6, 3),        # same as ResNet-50
    embed=64,                   # 256 (GroupNorm(32) -> 2 channels per group; 8 heads of 8)
    enc_layers=2, dec_layers=2, gen_layers=2,   # 6, 6, 6
    ffn=128, gen_ffn=96,        # 2048, 1024
    queries=12,                 # 300
    mlp_hidden=48,              # 2048
    fc=(16, 8),                 # 128, 32
    vgg_convs=(4, 8, 16, 16, 32, 32),   # 64, 128, 256, 256, 512, 512
    vgg_fc=(128, 128),                  # 4096, 4096
)
# Official AVSegFormer-R50 widths (models.md 7.1, 7.5): for size/timing checks only, never in CI.
FULL_SIZE = dict(
    stem=64, widths=(64, 128, 256, 512), blocks=(3, 4, 6, 3), embed=256,
    enc_layers=6, dec_layers=6, gen_layers=6, ffn=2048, gen_ffn=1024, queries=300,
    mlp_hidden=2048, fc=(128, 32), vgg_convs=(64, 128, 256, 256, 512, 512), vgg_fc=(4096, 4096),
)
# PVT-v2 backbone for the pvt-* variants: official b5 is (64, 128, 320, 512), depths (3, 6, 40, 3),
# head dim 64. Head dim 16 gives 1, 2, 5, 6 heads and keeps the folded 1/sqrt(d) scale a power of 2.
PVT_TINY = dict(dims=(16, 32, 80, 96), depths=(2, 2, 3, 1), head_dim=16)
PVT_FULL = dict(dims=(64, 128, 320, 512), depths=(3, 6, 40, 3), head_dim=64)
LEVELS, POINTS, HEADS = 3, 4, 8
AUDIO_DIM = 128             # kept: raw VGGish embedding width
CFG = TINY


def _bf16(a):
    a = np.ascontiguousarray(a, dtype=np.float32)
    return ((a.view(np.uint32) + 0x8000) & 0xFFFF0000).view(np.float32)


class _Init:
    def __init__(self, rng):
        self.rng = rng

    def he(self, *shape, gain=1.0):
        fan_in = int(np.prod(shape[1:]))
        return gain * np.sqrt(2.0 / fan_in) * self.rng.standard_normal(shape)

    def uniform_fan(self, *shape, gain=1.0):
        bound = gain / np.sqrt(int(np.prod(shape[1:])))
        return self.rng.uniform(-bound, bound, shape)

    def xavier(self, out, inp):
        bound = np.sqrt(6.0 / (out + inp))
        return self.rng.uniform(-bound, bound, (out, inp))

    def normal(self, shape, std):
        return std * self.rng.standard_normal(shape)


def _resnet(sd, ini, rng):
    def bn(p, c, gamma=(0.5, 1.0)):
        sd[p + ".weight"] = rng.uniform(*gamma, c)
        sd[p + ".bias"] = ini.normal(c, 0.1)
        sd[p + ".running_mean"] = ini.normal(c, 0.1)
        sd[p + ".running_var"] = rng.uniform(0.7, 1.4, c)
        sd[p + ".num_batches_tracked"] = np.array(0, dtype=np.int64)

    sd["backbone.conv1.weight"] = ini.he(CFG["stem"], 3, 7, 7)
    bn("backbone.bn1", CFG["stem"])

    def layer(name, c_in, width, n):
        for i in range(n):
            p = f"backbone.{name}.{i}"
            cin = c_in if i == 0 else 4 * width
            sd[p + ".conv1.weight"] = ini.he(width, cin, 1, 1)
            bn(p + ".bn1", width)
            sd[p + ".conv2.weight"] = ini.he(width, width, 3, 3)
            bn(p + ".bn2", width)
            sd[p + ".conv3.weight"] = ini.he(4 * width, width, 1, 1)
            bn(p + ".bn3", 4 * width, gamma=(0.05, 0.2))
            if i == 0:
                sd[p + ".downsample.0.weight"] = ini.he(4 * width, c_in, 1, 1)
                bn(p + ".downsample.1", 4 * width)
        return 4 * width

    c, outs = CFG["stem"], []
    for name, width, n in zip(("layer1", "layer2", "layer3_1", "layer4_1"), CFG["widths"], CFG["blocks"]):
        c = layer(name, c, width, n)
        outs.append(c)
    # Built and saved by the official model, never run.
    layer("layer3_2", outs[1], CFG["widths"][2], CFG["blocks"][2])
    layer("layer4_2", outs[2], CFG["widths"][3], CFG["blocks"][3])
    return outs


def _vggish(sd, ini):
    c_in = 1
    for idx, c in zip((0, 3, 6, 8, 11, 13), CFG["vgg_convs"]):
        sd[f"vggish.features.{idx}.weight"] = ini.he(c, c_in, 3, 3)
        sd[f"vggish.features.{idx}.bias"] = ini.normal(c, 0.1)
        c_in = c
    d = c_in * 6 * 4
    for idx, n in zip((0, 2, 4), tuple(CFG["vgg_fc"]) + (AUDIO_DIM,)):
        sd[f"vggish.embeddings.{idx}.weight"] = ini.he(n, d)
        sd[f"vggish.embeddings.{idx}.bias"] = ini.normal(n, 0.1)
        d = n


def _norm(sd, p, c, rng, ini):
    sd[p + ".weight"] = rng.uniform(0.5, 1.5, c)
    sd[p + ".bias"] = ini.normal(c, 0.1)


def _linear(sd, p, out, inp, ini, gain=1.0, bias=True):
    sd[p + ".weight"] = ini.uniform_fan(out, inp, gain=gain)
    if bias:
        sd[p + ".bias"] = ini.uniform_fan(out, inp)[:, 0]


def _mha(sd, p, c, ini, bias):
    sd[p + ".in_proj_weight"] = ini.xavier(3 * c, c)
    sd[p + ".out_proj.weight"] = ini.uniform_fan(c, c)
    if bias:
        sd[p + ".in_proj_bias"] = ini.normal(3 * c, 0.1)
        sd[p + ".out_proj.bias"] = ini.normal(c, 0.1)


def _head(sd, ini, rng, backbone_channels, classes, generator):
    c = CFG["embed"]
    for i, ci in enumerate(backbone_channels):
        sd[f"head.in_proj.{i}.0.weight"] = ini.uniform_fan(c, ci, 1, 1, gain=np.sqrt(3))
        sd[f"head.in_proj.{i}.0.bias"] = ini.normal(c, 0.1)
        _norm(sd, f"head.in_proj.{i}.1", c, rng, ini)
    sd["head.level_embed"] = ini.normal((LEVELS, c), 0.5)

    for i in range(CFG["enc_layers"]):
        p = f"head.transformer.encoder.layers.{i}"
        a = p + ".self_attn"
        # Official init: a star of 1..P pixel offsets per head; plus noise so points differ per query.
        theta = np.arange(HEADS) * (2 * np.pi / HEADS)
        star = np.stack([np.cos(theta), np.sin(theta)], -1) / np.abs(np.stack([np.cos(theta), np.sin(theta)], -1)).max(-1, keepdims=True)
        star = np.tile(star[:, None, None, :], (1, LEVELS, POINTS, 1)) * np.arange(1, POINTS + 1)[None, None, :, None]
        sd[a + ".sampling_offsets.weight"] = ini.normal((HEADS * LEVELS * POINTS * 2, c), 0.5 / np.sqrt(c))
        sd[a + ".sampling_offsets.bias"] = star.ravel() + ini.normal(star.size, 0.3)
        sd[a + ".attention_weights.weight"] = ini.normal((HEADS * LEVELS * POINTS, c), 0.5 / np.sqrt(c))
        sd[a + ".attention_weights.bias"] = ini.normal(HEADS * LEVELS * POINTS, 0.5)
        sd[a + ".value_proj.weight"] = ini.xavier(c, c)
        sd[a + ".value_proj.bias"] = ini.normal(c, 0.1)
        sd[a + ".output_proj.weight"] = ini.xavier(c, c)
        sd[a + ".output_proj.bias"] = ini.normal(c, 0.1)
        _norm(sd, p + ".norm1", c, rng, ini)
        _linear(sd, p + ".linear1", CFG["ffn"], c, ini, gain=np.sqrt(3))
        _linear(sd, p + ".linear2", c, CFG["ffn"], ini)
        _norm(sd, p + ".norm2", c, rng, ini)

    for i in range(CFG["dec_layers"]):
        p = f"head.transformer.decoder.layers.{i}"
        _mha(sd, p + ".self_attn", c, ini, bias=True)
        _mha(sd, p + ".cross_attn", c, ini, bias=True)
        for k in (1, 2, 3):
            _norm(sd, f"{p}.norm{k}", c, rng, ini)
        _linear(sd, p + ".linear1", CFG["ffn"], c, ini, gain=np.sqrt(3))
        _linear(sd, p + ".linear2", c, CFG["ffn"], ini)

    if generator:
        g = "head.query_generator"
        sd[g + ".query.weight"] = ini.normal((CFG["queries"], c), 1.0)
        for i in range(CFG["gen_layers"]):
            p = f"{g}.layers.{i}"
            _mha(sd, p + ".self_attn", c, ini, bias=False)
            _mha(sd, p + ".cross_attn", c, ini, bias=False)
            _linear(sd, p + ".ffn.0", CFG["gen_ffn"], c, ini, gain=np.sqrt(3))
            _linear(sd, p + ".ffn.2", c, CFG["gen_ffn"], ini)
            for k in (1, 2, 3):
                _norm(sd, f"{p}.norm{k}", c, rng, ini)
    sd["head.learnable_query.weight"] = ini.normal((CFG["queries"], c), 1.0)

    sd["head.lateral_conv.0.weight"] = ini.uniform_fan(c, c, 1, 1, gain=np.sqrt(3))
    sd["head.lateral_conv.0.bias"] = ini.normal(c, 0.1)
    _norm(sd, "head.lateral_conv.1", c, rng, ini)
    sd["head.out_conv.0.weight"] = ini.uniform_fan(c, c, 3, 3, gain=np.sqrt(3))
    sd["head.out_conv.0.bias"] = ini.normal(c, 0.1)
    _norm(sd, "head.out_conv.1", c, rng, ini)

    sd["head.fusion_block.q_proj.weight"] = ini.xavier(c, c)
    sd["head.fusion_block.kv_proj.weight"] = ini.xavier(2 * c, c)
    _linear(sd, "head.fusion_block.proj", c, c, ini)

    # P = Q.MF sums embed-many products, so layer 0 gets 1/sqrt(embed) on top of He.
    sd["head.mlp.layers.0.weight"] = ini.he(CFG["mlp_hidden"], CFG["queries"], 1, 1, gain=1.0 / np.sqrt(c) * 2)
    sd["head.mlp.layers.0.bias"] = ini.normal(CFG["mlp_hidden"], 0.1)
    sd["head.mlp.layers.1.weight"] = ini.he(CFG["mlp_hidden"], CFG["mlp_hidden"], 1, 1)
    sd["head.mlp.layers.1.bias"] = ini.normal(CFG["mlp_hidden"], 0.1)
    sd["head.mlp.layers.2.weight"] = ini.he(c, CFG["mlp_hidden"], 1, 1, gain=0.3)
    sd["head.mlp.layers.2.bias"] = ini.normal(c, 0.1)

    for name in ("fc", "attn_fc"):          # attn_fc: same shapes, never run
        sd[f"head.{name}.0.weight"] = ini.he(CFG["fc"][0], c, 3, 3, gain=0.7)
        sd[f"head.{name}.0.bias"] = ini.normal(CFG["fc"][0], 0.05)
        sd[f"head.{name}.2.weight"] = ini.he(CFG["fc"][1], CFG["fc"][0], 3, 3)
        sd[f"head.{name}.2.bias"] = ini.normal(CFG["fc"][1], 0.05)
        sd[f"head.{name}.4.weight"] = ini.he(classes, CFG["fc"][1], 1, 1, gain=0.7)
    # SimpleFPN: never run; a few tensors stand in for its keys.
    for i in range(4):
        sd[f"head.fpn.convs.{i}.0.weight"] = ini.uniform_fan(c, c, 3, 3)
        sd[f"head.fpn.convs.{i}.0.bias"] = ini.normal(c, 0.1)
    sd["audio_proj.weight"] = ini.uniform_fan(c, AUDIO_DIM, gain=np.sqrt(3))
    sd["audio_proj.bias"] = ini.normal(c, 0.1)


def _pvt(sd, rng, full_size):
    from make_family_fixture import random_pvt    # same PVT-v2 generator as the TPAVI-PVT fixtures
    cfg = PVT_FULL if full_size else PVT_TINY
    sd.update(random_pvt(rng, "backbone.", dims=cfg["dims"], depths=cfg["depths"]))
    return list(cfg["dims"])


def export_options(variant: str, full_size: bool = False) -> dict:
    """build_avsegformer keyword arguments a checkpoint cannot carry (the PVT head split)."""
    if variant.startswith("pvt-"):
        return {"pvt_head_dim": (PVT_FULL if full_size else PVT_TINY)["head_dim"]}
    return {}


def make_avsegformer_fixture(seed: int, variant: str = "s4", full_size: bool = False) -> dict[str, np.ndarray]:
    """`full_size` gives the official widths and depths (~150 M elements), for manual checks only."""
    global CFG
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; one of {VARIANTS}")
    CFG = FULL_SIZE if full_size else TINY
    pvt = variant.startswith("pvt-")
    task, _, kind = variant.removeprefix("pvt-").partition("-")
    rng = np.random.default_rng([seed, VARIANTS.index(variant)])
    ini = _Init(rng)
    sd: dict[str, np.ndarray] = {}
    chans = _pvt(sd, rng, full_size) if pvt else _resnet(sd, ini, rng)
    _vggish(sd, ini)
    _head(sd, ini, rng, chans, 71 if task == "avss" else 1, generator=kind != "repeat")
    return {k: (v if v.dtype == np.int64 else _bf16(v)) for k, v in sd.items()}
