"""Whole-model check: exported AVSegFormer ONNX vs an independent, literal numpy forward.

The numpy side follows docs/spec/avsegformer.md §7.2/7.3 step by step in float64, in the
literal forms the exporter avoids: BatchNorm unfolded, GroupNorm over
explicit groups, deformable attention as a loop over (frame, head, level,
point) with hand-written bilinear sampling and zero padding, the query
generator's layer 0 and its one-key cross-attention run as ordinary
attention, CrossModalMixer with per-pixel keys/values, P = einsum(Q, MF)
before the `mlp`, and the PyTorch bilinear coordinate rule for upsampling.
The VGGish graph built from the `vggish.`-prefixed keys is checked too.

The PVT-v2 backbone of the pvt-* variants runs through the literal PVT
forward of test_tpavi_families.py (per-head attention with its
spatial-reduction conv, explicit kv split), with the fixture's head dim.

Runs every fixture variant (R50 and PVT-v2; S4/AVSS; with and without the
query generator) at a non-square 64x96 input so any x/y mix-up shows, T = 2.

    .venv/bin/python -m pytest tools/tests/test_avsegformer_numpy.py [-k pvt-s4]
"""

from __future__ import annotations

import numpy as np
import pytest

from avseg_export.avsegformer import build_avsegformer, build_avsegformer_audio
from avseg_export.ort import session
from avseg_tools.fixtures.avsegformer import VARIANTS, export_options, make_avsegformer_fixture

T, H, W = 2, 64, 96
NHEADS = 8
# float32 ORT vs float64 numpy through a ~60-layer random net: measured <= 2.2e-6 on logits of
# O(1) and <= 1e-5 on VGGish embeddings up to ~16; a wiring error shows as >= 1e-2.
TOL_LOGITS = 2e-5
TOL_AUDIO = 1e-4


# ---- generic layers (float64) ----------------------------------------------

def conv2d(x, w, b=None, stride=1, pad=0):
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    ho, wo = (h + 2 * pad - kh) // stride + 1, (wd + 2 * pad - kw) // stride + 1
    out = np.zeros((n, o, ho, wo))
    for i in range(kh):
        for j in range(kw):
            win = xp[:, :, i: i + stride * (ho - 1) + 1: stride, j: j + stride * (wo - 1) + 1: stride]
            out += np.einsum("nchw,oc->nohw", win, w[:, :, i, j])
    return out if b is None else out + b[None, :, None, None]


def batchnorm(x, sd, p):
    g, b, m, v = (sd[p + s] for s in (".weight", ".bias", ".running_mean", ".running_var"))
    return (x - m[None, :, None, None]) / np.sqrt(v[None, :, None, None] + 1e-5) * g[None, :, None, None] \
        + b[None, :, None, None]


def groupnorm(x, sd, p, groups=32):
    n, c, h, w = x.shape
    g = x.reshape(n, groups, c // groups, h, w)
    mean = g.mean(axis=(2, 3, 4), keepdims=True)
    var = ((g - mean) ** 2).mean(axis=(2, 3, 4), keepdims=True)
    y = ((g - mean) / np.sqrt(var + 1e-5)).reshape(n, c, h, w)
    return y * sd[p + ".weight"][None, :, None, None] + sd[p + ".bias"][None, :, None, None]


def layernorm(x, sd, p):
    m = x.mean(-1, keepdims=True)
    v = ((x - m) ** 2).mean(-1, keepdims=True)
    return (x - m) / np.sqrt(v + 1e-5) * sd[p + ".weight"] + sd[p + ".bias"]


def relu(x):
    return np.maximum(x, 0.0)


def gelu(x):
    from math import erf, sqrt
    return x * 0.5 * (1.0 + np.vectorize(erf)(x / sqrt(2.0)))


def linear(x, sd, p, bias=True):
    y = x @ sd[p + ".weight"].T
    return y + sd[p + ".bias"] if bias and (p + ".bias") in sd else y


def softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def maxpool3s2(x):
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    ho, wo = (h - 1) // 2 + 1, (w - 1) // 2 + 1
    out = np.full((n, c, ho, wo), -np.inf)
    for i in range(3):
        for j in range(3):
            out = np.maximum(out, xp[:, :, i: i + 2 * (ho - 1) + 1: 2, j: j + 2 * (wo - 1) + 1: 2])
    return out


def bilinear_resize(x, oh, ow):
    """F.interpolate(mode='bilinear', align_corners=False) to (oh, ow)."""
    n, c, h, w = x.shape

    def axis_weights(o, i):
        src = np.maximum((np.arange(o) + 0.5) * (i / o) - 0.5, 0.0)
        lo = np.floor(src).astype(int)
        hi = np.minimum(lo + 1, i - 1)
        return lo, hi, src - lo

    y0, y1, fy = axis_weights(oh, h)
    x0, x1, fx = axis_weights(ow, w)
    top = x[:, :, y0][:, :, :, x0] * (1 - fx) + x[:, :, y0][:, :, :, x1] * fx
    bot = x[:, :, y1][:, :, :, x0] * (1 - fx) + x[:, :, y1][:, :, :, x1] * fx
    return top * (1 - fy)[:, None] + bot * fy[:, None]


def mha(sd, p, q_in, kv_in):
    """nn.MultiheadAttention(batch_first) on one frame: [Lq,C], [Lk,C] -> [Lq,C]."""
    c = q_in.shape[-1]
    wi = sd[p + ".in_proj_weight"]
    bi = sd.get(p + ".in_proj_bias", np.zeros(3 * c))
    q = q_in @ wi[:c].T + bi[:c]
    k = kv_in @ wi[c:2 * c].T + bi[c:2 * c]
    v = kv_in @ wi[2 * c:].T + bi[2 * c:]
    d = c // NHEADS
    heads = []
    for h in range(NHEADS):
        s = slice(h * d, (h + 1) * d)
        a = softmax(q[:, s] @ k[:, s].T / np.sqrt(d), axis=-1)
        heads.append(a @ v[:, s])
    o = np.concatenate(heads, axis=1) @ sd[p + ".out_proj.weight"].T
    return o + sd[p + ".out_proj.bias"] if (p + ".out_proj.bias") in sd else o


# ---- model pieces -------------------------------------------------------------

def resnet(sd, x):
    def block(p, x, stride):
        y = relu(batchnorm(conv2d(x, sd[p + ".conv1.weight"]), sd, p + ".bn1"))
        y = relu(batchnorm(conv2d(y, sd[p + ".conv2.weight"], stride=stride, pad=1), sd, p + ".bn2"))
        y = batchnorm(conv2d(y, sd[p + ".conv3.weight"]), sd, p + ".bn3")
        if p + ".downsample.0.weight" in sd:
            x = batchnorm(conv2d(x, sd[p + ".downsample.0.weight"], stride=stride), sd, p + ".downsample.1")
        return relu(y + x)

    x = relu(batchnorm(conv2d(x, sd["backbone.conv1.weight"], stride=2, pad=3), sd, "backbone.bn1"))
    x = maxpool3s2(x)
    outs = []
    for name, stride in (("layer1", 1), ("layer2", 2), ("layer3_1", 2), ("layer4_1", 2)):
        i = 0
        while f"backbone.{name}.{i}.conv1.weight" in sd:
            x = block(f"backbone.{name}.{i}", x, stride if i == 0 else 1)
            i += 1
        outs.append(x)
    return outs


def sine_pos(h, w, c):
    """pos[y*w+x] = [sin/cos of (y+1)/d_j ..., sin/cos of (x+1)/d_j ...], d_j = 10000^(2j/(c/2))."""
    half = c // 2
    pos = np.zeros((h * w, c))
    for y in range(h):
        for x in range(w):
            for j in range(half // 2):
                d = 10000.0 ** (2 * j / half)
                pos[y * w + x, 2 * j] = np.sin((y + 1) / d)
                pos[y * w + x, 2 * j + 1] = np.cos((y + 1) / d)
                pos[y * w + x, half + 2 * j] = np.sin((x + 1) / d)
                pos[y * w + x, half + 2 * j + 1] = np.cos((x + 1) / d)
    return pos


def bilinear_zero(img, u, v):
    """Sample img [C,h,w] at pixel coords (u = x, v = y) arrays; outside neighbours count as 0."""
    c, h, w = img.shape
    x0, y0 = np.floor(u).astype(int), np.floor(v).astype(int)
    out = np.zeros((c,) + u.shape)
    for dx in (0, 1):
        for dy in (0, 1):
            xi, yi = x0 + dx, y0 + dy
            wgt = (1 - np.abs(u - xi)) * (1 - np.abs(v - yi))
            ok = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
            vals = img[:, np.clip(yi, 0, h - 1), np.clip(xi, 0, w - 1)]
            out += np.where(ok, wgt, 0.0) * vals
    return out


def msdeform(sd, p, query, src, shapes, refs):
    """One frame: query/src [N,C], refs [N,2] (x,y) -> [N,C]."""
    n, c = query.shape
    nl = len(shapes)
    npnt = sd[p + ".attention_weights.weight"].shape[0] // (NHEADS * nl)
    d = c // NHEADS
    value = linear(src, sd, p + ".value_proj")
    off = linear(query, sd, p + ".sampling_offsets").reshape(n, NHEADS, nl, npnt, 2)
    att = softmax(linear(query, sd, p + ".attention_weights").reshape(n, NHEADS, nl * npnt), axis=-1)
    att = att.reshape(n, NHEADS, nl, npnt)
    starts = np.cumsum([0] + [h * w for h, w in shapes])
    out = np.zeros((n, c))
    for h in range(NHEADS):
        for lvl, (hl, wl) in enumerate(shapes):
            img = value[starts[lvl]:starts[lvl + 1], h * d:(h + 1) * d].T.reshape(d, hl, wl)
            for k in range(npnt):
                loc_x = refs[:, 0] + off[:, h, lvl, k, 0] / wl
                loc_y = refs[:, 1] + off[:, h, lvl, k, 1] / hl
                samp = bilinear_zero(img, loc_x * wl - 0.5, loc_y * hl - 0.5)     # [d, N]
                out[:, h * d:(h + 1) * d] += att[:, h, lvl, k][:, None] * samp.T
    return linear(out, sd, p + ".output_proj")


def pvt(sd, x, head_dim):
    import test_tpavi_families as tpf           # its literal PVT-v2 reads keys under tpf.PVT
    inner = {tpf.PVT + k[len("backbone."):]: v for k, v in sd.items() if k.startswith("backbone.")}
    return tpf.pvt_v2(inner, x, head_dim)


def segmenter(sd, frames, emb, pvt_head_dim=64):
    c = sd["head.level_embed"].shape[1]
    feats = pvt(sd, frames, pvt_head_dim) if "backbone.patch_embed1.proj.weight" in sd else resnet(sd, frames)
    proj = [groupnorm(conv2d(f, sd[f"head.in_proj.{i}.0.weight"], sd[f"head.in_proj.{i}.0.bias"]), sd,
                      f"head.in_proj.{i}.1") for i, f in enumerate(feats)]
    lv = proj[1:]
    shapes = [f.shape[2:] for f in lv]
    pos = np.concatenate([sine_pos(h, w, c) + sd["head.level_embed"][i] for i, (h, w) in enumerate(shapes)])
    refs = np.concatenate([np.stack(np.meshgrid((np.arange(w) + 0.5) / w, (np.arange(h) + 0.5) / h), -1).reshape(-1, 2)
                           for h, w in shapes])
    audio = emb @ sd["audio_proj.weight"].T + sd["audio_proj.bias"]           # [T,C]
    out = []
    for t in range(frames.shape[0]):
        src = np.concatenate([f[t].reshape(c, -1).T for f in lv])               # [N,C]
        i = 0
        while f"head.transformer.encoder.layers.{i}.norm1.weight" in sd:
            p = f"head.transformer.encoder.layers.{i}"
            src = layernorm(src + msdeform(sd, p + ".self_attn", src + pos, src, shapes, refs), sd, p + ".norm1")
            src = layernorm(src + linear(gelu(linear(src, sd, p + ".linear1")), sd, p + ".linear2"), sd, p + ".norm2")
            i += 1
        memory = src
        a = audio[t:t + 1]                                                       # [1,C]
        if "head.query_generator.query.weight" in sd:
            q = sd["head.query_generator.query.weight"]
            i = 0
            while f"head.query_generator.layers.{i}.norm1.weight" in sd:
                p = f"head.query_generator.layers.{i}"
                q = layernorm(q + mha(sd, p + ".self_attn", q, q), sd, p + ".norm1")
                q = layernorm(q + mha(sd, p + ".cross_attn", q, a), sd, p + ".norm2")
                q = layernorm(q + linear(gelu(linear(q, sd, p + ".ffn.0")), sd, p + ".ffn.2"), sd, p + ".norm3")
                i += 1
        else:
            q = np.repeat(a, sd["head.learnable_query.weight"].shape[0], axis=0)
        q = q + sd["head.learnable_query.weight"]
        i = 0
        while f"head.transformer.decoder.layers.{i}.norm1.weight" in sd:
            p = f"head.transformer.decoder.layers.{i}"
            q = layernorm(q + mha(sd, p + ".self_attn", q, q), sd, p + ".norm1")
            q = layernorm(q + mha(sd, p + ".cross_attn", q, memory), sd, p + ".norm2")
            q = layernorm(q + linear(gelu(linear(q, sd, p + ".linear1")), sd, p + ".linear2"), sd, p + ".norm3")
            i += 1
        (h1, w1), (h0, w0) = shapes[0], proj[0].shape[2:]
        mf = memory[: h1 * w1].T.reshape(1, c, h1, w1)
        mf = bilinear_resize(mf, h0, w0)
        lat = groupnorm(conv2d(proj[0][t:t + 1], sd["head.lateral_conv.0.weight"], sd["head.lateral_conv.0.bias"]),
                        sd, "head.lateral_conv.1")
        mf = relu(groupnorm(conv2d(mf + lat, sd["head.out_conv.0.weight"], sd["head.out_conv.0.bias"], pad=1),
                            sd, "head.out_conv.1"))[0]                           # [C,h0,w0]
        # CrossModalMixer, literal: per-pixel k/v, softmax over all pixels per head.
        tok = mf.reshape(c, -1).T
        qm = a @ sd["head.fusion_block.q_proj.weight"].T                         # [1,C]
        kv = tok @ sd["head.fusion_block.kv_proj.weight"].T
        k_, v_ = kv[:, :c], kv[:, c:]
        d = c // NHEADS
        pooled = np.concatenate([softmax(qm[:, h * d:(h + 1) * d] @ k_[:, h * d:(h + 1) * d].T / np.sqrt(d))
                                 @ v_[:, h * d:(h + 1) * d] for h in range(NHEADS)], axis=1)
        gate = 1.0 / (1.0 + np.exp(-(pooled @ sd["head.fusion_block.proj.weight"].T + sd["head.fusion_block.proj.bias"])))
        mf = mf * gate[0][:, None, None]
        pm = np.einsum("qc,chw->qhw", q, mf)[None]
        y = relu(conv2d(pm, sd["head.mlp.layers.0.weight"], sd["head.mlp.layers.0.bias"]))
        y = relu(conv2d(y, sd["head.mlp.layers.1.weight"], sd["head.mlp.layers.1.bias"]))
        y = conv2d(y, sd["head.mlp.layers.2.weight"], sd["head.mlp.layers.2.bias"])
        pred = mf[None] + y
        y = conv2d(pred, sd["head.fc.0.weight"], sd["head.fc.0.bias"], pad=1)
        y = bilinear_resize(y, 4 * h0, 4 * w0)
        y = relu(conv2d(y, sd["head.fc.2.weight"], sd["head.fc.2.bias"], pad=1))
        out.append(conv2d(y, sd["head.fc.4.weight"])[0])
    return np.stack(out)


def vggish(sd, x):
    for idx, pool in ((0, True), (3, True), (6, False), (8, True), (11, False), (13, True)):
        x = relu(conv2d(x, sd[f"vggish.features.{idx}.weight"], sd[f"vggish.features.{idx}.bias"], pad=1))
        if pool:
            n, c, h, w = x.shape
            x = x.reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))
    x = x.transpose(0, 2, 3, 1).reshape(x.shape[0], -1)          # TensorFlow (NHWC) flatten order
    for idx in (0, 2, 4):
        x = relu(x @ sd[f"vggish.embeddings.{idx}.weight"].T + sd[f"vggish.embeddings.{idx}.bias"])
    return x


@pytest.mark.parametrize("variant", VARIANTS)
def test_variant(variant):
    sd32 = make_avsegformer_fixture(0, variant)
    sd = {k: v.astype(np.float64) for k, v in sd32.items()}
    rng = np.random.default_rng([7, VARIANTS.index(variant)])
    logmel = rng.uniform(-4.6, 2.0, (T, 1, 96, 64)).astype(np.float32)
    frames = rng.standard_normal((T, 3, H, W)).astype(np.float32)

    audio_model, _ = build_avsegformer_audio(sd32)
    emb = session(audio_model).run(["audio_embedding"], {"audio_logmel": logmel})[0]
    d_emb = float(np.abs(emb - vggish(sd, logmel.astype(np.float64))).max())

    opts = export_options(variant)
    model, info = build_avsegformer(sd32, frames=T, height=H, width=W, **opts)
    got = session(model).run(["mask_logits"], {"frames": frames, "audio_embedding": emb})[0]
    want = segmenter(sd, frames.astype(np.float64), emb.astype(np.float64), opts.get("pvt_head_dim", 64))
    assert got.shape == want.shape, f"{variant}: logits {got.shape} != numpy {want.shape}"
    d_log = float(np.abs(got - want).max())
    print(f"{variant:<12} {info['backbone']:<9} {info['query_generator']:<18} K={info['num_classes']:<3} "
          f"logits max|diff| = {d_log:.3e} (tol {TOL_LOGITS:.0e}, max|ref| {np.abs(want).max():.3g})  "
          f"vggish max|diff| = {d_emb:.3e} (tol {TOL_AUDIO:.0e}, max|ref| {np.abs(emb).max():.3g})")
    assert d_log <= TOL_LOGITS, f"{variant}: logits max|diff| {d_log:.3e} > {TOL_LOGITS:.0e}"
    assert d_emb <= TOL_AUDIO, f"{variant}: VGGish max|diff| {d_emb:.3e} > {TOL_AUDIO:.0e}"
