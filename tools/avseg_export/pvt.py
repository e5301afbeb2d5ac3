"""PVT-v2 encoder (docs/spec/tpavi.md §6.3) as an ONNX sub-graph.

Keys follow the official checkpoints (`encoder_backbone.` in TPAVI-PVT,
`backbone.` in AVSegFormer); the prefix is a parameter. Everything but the
number of attention heads is read off the tensors:

- stage widths from `patch_embed{s}.proj.weight`, depths from the
  `block{s}.{j}` keys present, SR ratios from the `attn.sr` kernel (no `sr`
  key means ratio 1), MLP width from `mlp.fc1`;
- patch-embed stride is 4 for stage 1 and 2 after it, padding kernel // 2,
  as hard-coded in the official `OverlapPatchEmbed` calls.

Heads cannot be inferred: q, kv and proj are plain C x C Linears whatever the
split. The rule is `heads = C // head_dim` with head_dim 64 (official b0..b5:
1, 2, 5, 8 heads at 64, 128, 320, 512 channels); pass `head_dim` for
width-reduced models or `heads` (one int per stage) to override outright.

Tokens are kept channels-last [T, N, C] so every Linear is one MatMul and every
LayerNorm is LayerNormalization(axis=-1); the leading T is carried by Reshape's
0 ("copy this dim"), so the encoder itself needs no frame count.
"""

from __future__ import annotations

import math

import numpy as np

from .graph import GraphBuilder
from .weights import StateDict

# Official eps values differ by layer (docs/spec/tpavi.md §6.3, docs/spec/gotchas.md, gotcha 14).
EPS_PATCH_NORM = 1e-5   # patch_embed{s}.norm
EPS_SR_NORM = 1e-5      # attn.norm after the spatial-reduction conv
EPS_BLOCK_NORM = 1e-6   # block norm1/norm2 and the stage-end norm{s}
HEAD_DIM = 64


def _conv_out(size: int, k: int, s: int, p: int) -> int:
    return (size + 2 * p - k) // s + 1


def _linear(gb: GraphBuilder, sd: StateDict, key: str, x: str, scale: float = 1.0) -> tuple[str, int]:
    """Linear on [T, N, C] tokens as MatMul + Add. `scale` is folded into W and b."""
    w = sd.get(key + ".weight")
    b = sd.get(key + ".bias", (w.shape[0],))
    if scale != 1.0:
        w = (w.astype(np.float64) * scale).astype(np.float32)
        b = (b.astype(np.float64) * scale).astype(np.float32)
    y = gb.matmul(x, gb.const(key + ".weight_t", np.ascontiguousarray(w.T)), key + ".mm")
    return gb.add(y, gb.const(key + ".bias", b), key), w.shape[0]


def _tokens_to_map(gb, x, c, h, w, name):
    """[T, h*w, C] -> [T, C, h, w]."""
    x = gb.transpose(x, (0, 2, 1), name + ".cn")
    return gb.reshape(x, (0, c, h, w), name + ".map")


def _map_to_tokens(gb, x, c, name):
    """[T, C, h, w] -> [T, h*w, C] (token = y*w + x)."""
    x = gb.reshape(x, (0, c, -1), name + ".flat")
    return gb.transpose(x, (0, 2, 1), name + ".tokens")


def _gelu_erf(gb, x, name):
    """Exact GELU, x * 0.5 * (1 + erf(x / sqrt 2)); opset 17 has no Gelu op."""
    c = gb._shape_consts
    if ("gelu",) not in c:
        c[("gelu",)] = (gb.const("const.f32.inv_sqrt2", np.array(1.0 / math.sqrt(2.0), np.float32)),
                        gb.const("const.f32.one", np.array(1.0, np.float32)),
                        gb.const("const.f32.half", np.array(0.5, np.float32)))
    inv_sqrt2, one, half = c[("gelu",)]
    e = gb.op("Erf", [gb.mul(x, inv_sqrt2, name + ".scaled")], name + ".erf")
    e = gb.add(e, one, name + ".erf1")
    return gb.mul(gb.mul(x, half, name + ".half"), e, name)


def _layer_norm(gb, sd, key, x, c, eps):
    return gb.layer_norm_last(x, sd.get(key + ".weight", (c,)), sd.get(key + ".bias", (c,)), key, eps=eps)


def _attention(gb, sd, p, x, c, h, w, heads):
    """Spatial-reduction attention: queries at every token, keys/values on the SR-pooled map."""
    if c % heads:
        raise ValueError(f"{p}: {c} channels do not split into {heads} heads")
    d = c // heads
    n = h * w
    q, _ = _linear(gb, sd, p + ".q", x, scale=d ** -0.5)     # scale folded: exact for d = 4^k
    if p + ".sr.weight" in sd:
        sr_w = sd.get(p + ".sr.weight")
        r = sr_w.shape[2]
        if sr_w.shape != (c, c, r, r):
            raise ValueError(f"{p}.sr.weight has shape {sr_w.shape}; expected [{c}, {c}, r, r]")
        m = _tokens_to_map(gb, x, c, h, w, p + ".sr_in")
        m = gb.conv(m, sr_w, sd.get(p + ".sr.bias", (c,)), p + ".sr", stride=r)
        hr, wr = _conv_out(h, r, r, 0), _conv_out(w, r, r, 0)
        kv_in = _layer_norm(gb, sd, p + ".norm", _map_to_tokens(gb, m, c, p + ".sr_out"), c, EPS_SR_NORM)
    else:
        hr, wr = h, w
        kv_in = x
    nk = hr * wr
    kv_w = sd.get(p + ".kv.weight", (2 * c, c))
    kv_b = sd.get(p + ".kv.bias", (2 * c,))
    # kv's first C outputs are k, the last C are v: two MatMuls avoid a runtime split.
    k = gb.add(gb.matmul(kv_in, gb.const(p + ".kv.k.weight_t", np.ascontiguousarray(kv_w[:c].T)), p + ".k.mm"),
               gb.const(p + ".kv.k.bias", kv_b[:c]), p + ".k")
    v = gb.add(gb.matmul(kv_in, gb.const(p + ".kv.v.weight_t", np.ascontiguousarray(kv_w[c:].T)), p + ".v.mm"),
               gb.const(p + ".kv.v.bias", kv_b[c:]), p + ".v")
    q = gb.transpose(gb.reshape(q, (0, n, heads, d), p + ".q.split"), (0, 2, 1, 3), p + ".q.heads")   # [T,H,N,d]
    k = gb.transpose(gb.reshape(k, (0, nk, heads, d), p + ".k.split"), (0, 2, 3, 1), p + ".k.heads")  # [T,H,d,M]
    v = gb.transpose(gb.reshape(v, (0, nk, heads, d), p + ".v.split"), (0, 2, 1, 3), p + ".v.heads")  # [T,H,M,d]
    a = gb.op("Softmax", [gb.matmul(q, k, p + ".scores")], p + ".softmax", axis=-1)
    y = gb.matmul(a, v, p + ".av")                                                                   # [T,H,N,d]
    y = gb.reshape(gb.transpose(y, (0, 2, 1, 3), p + ".merge"), (0, n, c), p + ".concat")
    return _linear(gb, sd, p + ".proj", y)[0]


def _mlp(gb, sd, p, x, c, h, w):
    """fc1 -> depthwise 3x3 on the token map -> GELU(erf) -> fc2."""
    y, hidden = _linear(gb, sd, p + ".fc1", x)
    dw = sd.get(p + ".dwconv.dwconv.weight", (hidden, 1, 3, 3))
    m = _tokens_to_map(gb, y, hidden, h, w, p + ".dw_in")
    m = gb.conv(m, dw, sd.get(p + ".dwconv.dwconv.bias", (hidden,)), p + ".dwconv.dwconv", pad=1, group=hidden)
    y = _gelu_erf(gb, _map_to_tokens(gb, m, hidden, p + ".dw_out"), p + ".gelu")
    y, c_out = _linear(gb, sd, p + ".fc2", y)
    if c_out != c:
        raise ValueError(f"{p}.fc2 gives {c_out} channels; the block is {c} wide")
    return y


def pvt_stage_count(sd: StateDict, prefix: str) -> int:
    n = 0
    while f"{prefix}patch_embed{n + 1}.proj.weight" in sd:
        n += 1
    return n


def pvt_v2_encoder(gb: GraphBuilder, sd: StateDict, prefix: str, x: str, height: int, width: int,
                   heads=None, head_dim: int = HEAD_DIM):
    """x: [T, 3, H, W]. Returns [(value, channels, h, w)] for each stage.

    Each stage output is taken after the stage-end `norm{s}` (LayerNorm eps 1e-6),
    reshaped to a map: that tensor is both what TPAVI/AVSegFormer tap and the next
    patch embedding's input.
    """
    n_stages = pvt_stage_count(sd, prefix)
    if n_stages == 0:
        raise KeyError(f"no PVT stages: '{prefix}patch_embed1.proj.weight' missing")
    if heads is not None and len(heads) != n_stages:
        raise ValueError(f"heads has {len(heads)} entries for {n_stages} stages")
    feats = []
    h, w = height, width
    c_prev = None
    for s in range(1, n_stages + 1):
        pe = f"{prefix}patch_embed{s}"
        pw = sd.get(pe + ".proj.weight")
        c, c_in, k = pw.shape[0], pw.shape[1], pw.shape[2]
        if c_prev is not None and c_in != c_prev:
            raise ValueError(f"{pe}.proj.weight takes {c_in} channels; stage {s - 1} gives {c_prev}")
        stride = 4 if s == 1 else 2
        x = gb.conv(x, pw, sd.get(pe + ".proj.bias", (c,)), pe + ".proj", stride=stride, pad=k // 2)
        h, w = _conv_out(h, k, stride, k // 2), _conv_out(w, k, stride, k // 2)
        t = _layer_norm(gb, sd, pe + ".norm", _map_to_tokens(gb, x, c, pe), c, EPS_PATCH_NORM)

        n_heads = int(heads[s - 1]) if heads is not None else c // head_dim
        if n_heads < 1 or c % n_heads:
            raise ValueError(f"stage {s}: {c} channels cannot use {n_heads} heads (head_dim {head_dim}); "
                             "pass heads= or head_dim=")
        j = 0
        while f"{prefix}block{s}.{j}.norm1.weight" in sd:
            b = f"{prefix}block{s}.{j}"
            a = _attention(gb, sd, b + ".attn", _layer_norm(gb, sd, b + ".norm1", t, c, EPS_BLOCK_NORM),
                           c, h, w, n_heads)
            t = gb.add(t, a, b + ".attn_res")
            m = _mlp(gb, sd, b + ".mlp", _layer_norm(gb, sd, b + ".norm2", t, c, EPS_BLOCK_NORM), c, h, w)
            t = gb.add(t, m, b + ".mlp_res")
            j += 1
        if j == 0:
            raise KeyError(f"no blocks found for {prefix}block{s}")
        t = _layer_norm(gb, sd, f"{prefix}norm{s}", t, c, EPS_BLOCK_NORM)
        x = _tokens_to_map(gb, t, c, h, w, f"{prefix}stage{s}")
        feats.append((x, c, h, w))
        c_prev = c
    return feats
