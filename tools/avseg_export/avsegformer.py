"""AVSegFormer (docs/spec/avsegformer.md §7) as static-shape ONNX graphs.

The segmenter takes `frames` [T,3,H,W] and the raw VGGish embedding
`audio_embedding` [T,A]; `audio_proj` is part of it. Every module works per
frame, so T is only the batch of one call and nothing couples frames.

Widths, layer counts, query count and class count come from the tensors, so
a width-reduced state dict in the official key layout converts with the same
code as a real checkpoint. Only the head count (8) and the GroupNorm group
count (32) are architectural constants that no weight shape reveals.

Exact simplifications used (docs/spec/avsegformer.md §7.4, all "derived"; the whole-model
numpy check in tools/tests/test_avsegformer_numpy.py runs the literal forms):
- sine positions + level embeddings and the reference points are constants;
- query-generator layer 0 self-attention sees only the constant
  `query.weight`, so it and its norm1 are precomputed in float64;
- query-generator cross-attention has one key, so its softmax weight is 1 and
  the result is W_o W_v a for every query (one fused matrix);
- `mlp` layer 0 is re-associated: W0 (Q . MF) = (W0 Q) . MF;
- CrossModalMixer keys/values are never materialised per pixel: the query is
  pulled through W_k, and the softmax-pooled feature through W_v.

Deformable sampling uses only standard opset-17 ops (MatMul, Max/Min, Floor,
Pad, Cast, Gather, ReduceSum); ONNX GridSample is available as an alternative.
The graph is shaped for tract's fast paths (see _msdeform_gather and _resize):
it is what users run on CPU, and tract 0.23 takes slow generic paths for
batched tiny MatMuls, int64 Casts, middle-axis reductions and Resize.

AVSS: the official model multiplies by `vid_temporal_mask_flag`, which is 1
for every real frame. avseg only ever feeds real frames (padding frames are
never run), so the flag is the identity and is not part of the graph.
"""

from __future__ import annotations

import numpy as np

from .graph import GraphBuilder
from .pvt import pvt_v2_encoder
from .tpavi import _conv_bn, _conv_out, bottleneck
from .vggish import build_vggish
from .weights import StateDict

HEADS = 8                 # MSDeformAttn, decoder, query generator and CrossModalMixer
GN_GROUPS = 32            # GroupNorm(32, C) after every head conv
GN_EPS = 1e-5
LN_EPS = 1e-5
POS_TEMPERATURE = 10000.0
R50_LAYERS = (("layer1", 1), ("layer2", 2), ("layer3_1", 2), ("layer4_1", 2))


# ---------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------

def _lin(gb, x, w, b, name):
    """PyTorch Linear on any-rank input: MatMul with W^T (broadcast) plus bias."""
    y = gb.matmul(x, gb.const(name + ".weight_t", np.ascontiguousarray(w.T)), name + ".mm")
    return y if b is None else gb.add(y, gb.const(name + ".bias", b), name)


def _slice(gb, x, axis, start, end, name):
    return gb.op("Slice", [x, gb.int_const([start]), gb.int_const([end]), gb.int_const([axis])], name)


def _gelu(gb, x, name):
    """Exact erf GELU; opset 17 has no Gelu op."""
    k = gb._shape_consts.get(("gelu",))
    if k is None:
        k = (gb.const("const.f32.inv_sqrt2", np.array(1.0 / np.sqrt(2.0), np.float32)),
             gb.const("const.f32.one", np.array(1.0, np.float32)),
             gb.const("const.f32.half", np.array(0.5, np.float32)))
        gb._shape_consts[("gelu",)] = k
    inv_sqrt2, one, half = k
    e = gb.op("Erf", [gb.mul(x, inv_sqrt2, name + ".scaled")], name + ".erf")
    return gb.mul(gb.mul(x, half, name + ".half"), gb.add(e, one, name + ".1p"), name)


def _layer_norm(gb, sd, prefix, x, c):
    return gb.layer_norm_last(x, sd.get(prefix + ".weight", (c,)), sd.get(prefix + ".bias", (c,)),
                              prefix, eps=LN_EPS)


def group_norm(gb, sd, prefix, x, t, c, h, w, groups=GN_GROUPS, out=None):
    """GroupNorm on [T,C,h,w]: InstanceNormalization over [T,G,C/G*h*w] plus the per-channel affine.

    ONNX GroupNormalization needs opset 18 and changed its scale semantics in
    opset 21; InstanceNormalization (opset 6) has one meaning and tract runs it.
    """
    if c % groups:
        raise ValueError(f"{prefix}: {c} channels do not split into {groups} groups")
    gamma = sd.get(prefix + ".weight", (c,))
    beta = sd.get(prefix + ".bias", (c,))
    y = gb.reshape(x, (t, groups, (c // groups) * h * w), prefix + ".grouped")
    key = ("gn_unit", groups)
    if key not in gb._shape_consts:
        gb._shape_consts[key] = (gb.const(f"const.f32.ones{groups}", np.ones(groups, np.float32)),
                                 gb.const(f"const.f32.zeros{groups}", np.zeros(groups, np.float32)))
    ones, zeros = gb._shape_consts[key]
    y = gb.op("InstanceNormalization", [y, ones, zeros], prefix + ".norm", epsilon=GN_EPS)
    y = gb.reshape(y, (t, c, h, w), prefix + ".ungrouped")
    y = gb.mul(y, gb.const(prefix + ".weight", gamma.reshape(c, 1, 1)), prefix + ".scale")
    return gb.add(y, gb.const(prefix + ".bias", beta.reshape(c, 1, 1)), prefix, out=out)


def _conv_gn(gb, sd, prefix, x, t, h, w, pad=0, relu=False):
    """Sequential(conv(bias), GroupNorm[, ReLU]) stored as `{prefix}.0` and `{prefix}.1`."""
    wt = sd.get(prefix + ".0.weight")
    y = gb.conv(x, wt, sd.get(prefix + ".0.bias", (wt.shape[0],)), prefix + ".0", pad=pad)
    y = group_norm(gb, sd, prefix + ".1", y, t, wt.shape[0], h, w)
    return (gb.relu(y, prefix + ".relu") if relu else y), wt.shape[0]


# ---------------------------------------------------------------------------
# constants (docs/spec/avsegformer.md §7.3, §7.4.1)
# ---------------------------------------------------------------------------

def sine_position(h, w, dim):
    """DETR sine encoding of an h x w map without padding mask: [h*w, dim], y half first."""
    nf = dim // 2
    j = np.arange(nf) // 2
    d = POS_TEMPERATURE ** (2.0 * j / nf)

    def enc(coord):                       # coord: [n] 1-based cumulative positions
        a = coord[:, None] / d[None, :]
        out = np.empty_like(a)
        out[:, 0::2] = np.sin(a[:, 0::2])
        out[:, 1::2] = np.cos(a[:, 1::2])
        return out

    ys, xs = np.meshgrid(np.arange(1, h + 1, dtype=np.float64), np.arange(1, w + 1, dtype=np.float64),
                         indexing="ij")
    return np.concatenate([enc(ys.ravel()), enc(xs.ravel())], axis=1)


def reference_points(shapes):
    """Normalised token centres ((x+0.5)/W, (y+0.5)/H) of each token's own level: [N,2] (x, y)."""
    refs = []
    for h, w in shapes:
        ys, xs = np.meshgrid((np.arange(h) + 0.5) / h, (np.arange(w) + 0.5) / w, indexing="ij")
        refs.append(np.stack([xs.ravel(), ys.ravel()], axis=1))
    return np.concatenate(refs, axis=0)


# ---------------------------------------------------------------------------
# multi-scale deformable attention
# ---------------------------------------------------------------------------

def msdeform_attn(gb, sd, prefix, query, value_in, t, shapes, heads=HEADS, out=None, sampler="gather"):
    """MSDeformAttn on [T,N,C] tokens (levels concatenated in `shapes` order).

    sampler="gather" (default): explicit bilinear corners + Gather, see
    _msdeform_gather. sampler="gridsample": ONNX GridSample (bilinear, zeros,
    align_corners=0), the reference's own grid_sample path; both are exact and
    run in ORT and tract, but tract 0.23's GridSample is a scalar per-element
    loop that re-reads the grid for every channel, so gather is the default.
    For GridSample, the "r + offset/size, then
    2*loc - 1" map into grid coordinates is affine in the query, so it is
    folded into the sampling_offsets Linear: per level, grid = q W_l' + c_l
    with W_l' = W_l * 2/size and c_l = b_l * 2/size + 2 r - 1 (constant).
    """
    levels = len(shapes)
    n = sum(h * w for h, w in shapes)
    w_off = sd.get(prefix + ".sampling_offsets.weight")
    c = w_off.shape[1]
    rows = w_off.shape[0]
    if rows % (heads * levels * 2):
        raise ValueError(f"{prefix}.sampling_offsets has {rows} rows; not heads({heads})*levels({levels})*points*2")
    points = rows // (heads * levels * 2)
    b_off = sd.get(prefix + ".sampling_offsets.bias", (rows,)).astype(np.float64)
    w_att = sd.get(prefix + ".attention_weights.weight", (heads * levels * points, c))
    b_att = sd.get(prefix + ".attention_weights.bias", (heads * levels * points,))
    w_val = sd.get(prefix + ".value_proj.weight", (c, c))
    b_val = sd.get(prefix + ".value_proj.bias", (c,))
    w_out = sd.get(prefix + ".output_proj.weight", (c, c))
    b_out = sd.get(prefix + ".output_proj.bias", (c,))
    if c % heads:
        raise ValueError(f"{prefix}: {c} channels do not split into {heads} heads")
    dh = c // heads
    ref = reference_points(shapes)                                    # [N,2]
    if sampler == "gather":
        return _msdeform_gather(gb, prefix, query, value_in, t, shapes, heads, points, ref,
                                (w_off, b_off, w_att, b_att, w_val, b_val, w_out, b_out), out)
    if sampler != "gridsample":
        raise ValueError(f"unknown sampler {sampler!r}")

    value = _lin(gb, value_in, w_val, b_val, prefix + ".value_proj")  # [T,N,C]
    value = gb.transpose(value, (0, 2, 1), prefix + ".value_cn")      # [T,C,N]; channel = head*dh + j

    att = _lin(gb, query, w_att, b_att, prefix + ".attention_weights")
    att = gb.reshape(att, (t, n, heads, levels * points), prefix + ".att_heads")
    att = gb.op("Softmax", [att], prefix + ".att_softmax", axis=-1)   # over the (level, point) pairs
    att = gb.transpose(att, (0, 2, 1, 3), prefix + ".att_t")
    att = gb.reshape(att, (t * heads, 1, n, levels * points), prefix + ".att")

    hk = np.arange(heads)[:, None, None]
    kk = np.arange(points)[None, :, None]
    xy = np.arange(2)[None, None, :]
    acc = None
    start = 0
    for lvl, (h, w) in enumerate(shapes):
        idx = (((hk * levels + lvl) * points + kk) * 2 + xy).ravel()      # rows in (head, point, xy) order
        scale = np.tile(np.array([2.0 / w, 2.0 / h]), heads * points)      # normalised -> grid units
        w_l = (w_off[idx].astype(np.float64) * scale[:, None]).astype(np.float32)
        c_l = (b_off[idx] * scale)[None, :] + np.tile(2.0 * ref - 1.0, (1, heads * points))
        grid = gb.matmul(query, gb.const(f"{prefix}.sampling_offsets.l{lvl}.weight_t_grid",
                                         np.ascontiguousarray(w_l.T)), f"{prefix}.grid{lvl}.mm")
        grid = gb.add(grid, gb.const(f"const.{prefix}.grid{lvl}.offset", c_l.astype(np.float32)),
                      f"{prefix}.grid{lvl}.add")
        grid = gb.reshape(grid, (t, n, heads, points, 2), f"{prefix}.grid{lvl}.split")
        grid = gb.transpose(grid, (0, 2, 1, 3, 4), f"{prefix}.grid{lvl}.t")
        grid = gb.reshape(grid, (t * heads, n, points, 2), f"{prefix}.grid{lvl}")

        v_l = _slice(gb, value, 2, start, start + h * w, f"{prefix}.value{lvl}.tokens")
        v_l = gb.reshape(v_l, (t * heads, dh, h, w), f"{prefix}.value{lvl}")
        s = gb.op("GridSample", [v_l, grid], f"{prefix}.sample{lvl}",
                  mode="bilinear", padding_mode="zeros", align_corners=0)   # [T*heads, dh, N, P]
        a_l = _slice(gb, att, 3, lvl * points, (lvl + 1) * points, f"{prefix}.att{lvl}")
        s = gb.reduce_sum(gb.mul(s, a_l, f"{prefix}.weighted{lvl}"), (3,), f"{prefix}.sum{lvl}")
        acc = s if acc is None else gb.add(acc, s, f"{prefix}.acc{lvl}")
        start += h * w
    acc = gb.reshape(acc, (t, c, n), prefix + ".heads_cat")
    acc = gb.transpose(acc, (0, 2, 1), prefix + ".tokens")
    y = gb.matmul(acc, gb.const(prefix + ".output_proj.weight_t", np.ascontiguousarray(w_out.T)),
                  prefix + ".output_proj.mm")
    return gb.add(y, gb.const(prefix + ".output_proj.bias", b_out), prefix + ".output_proj", out=out)


def _msdeform_gather(gb, prefix, query, value_in, t, shapes, heads, points, ref, weights, out):
    """MSDeformAttn as one Gather of 2x2 value windows and one weighted sum, all levels at once.

    Same arithmetic as grid_sample(bilinear, zeros, align_corners=False): the
    pixel coordinate u = (r_x + dx/W)*W - 0.5 = dx + (r_x*W - 0.5) is affine
    in the query, so it comes straight out of the (row-permuted)
    sampling_offsets Linear.

    Each level's value map (per frame and head) is zero-padded by 1 before
    and 2 after on both axes, and every 2x2 window is stored as one row of
    4*dh floats, so a point needs one gathered row whatever its position:
    clamping u to [-1, W] (v to [-1, H]) only ever moves a point whose
    corners are all in the padding, and there it keeps weight on zeros. No
    per-corner masks or index clamps are needed.

    The weighted sum over the L*P*4 corners is Mul + ReduceSum, not a
    MatMul: as a MatMul it is T*N*heads separate 1 x k x dh products, which
    tract runs as one tiny kernel call each (~13x slower than ONNX Runtime
    for the whole model).
    """
    w_off, b_off, w_att, b_att, w_val, b_val, w_out, b_out = weights
    levels = len(shapes)
    n = sum(h * w for h, w in shapes)
    c = w_val.shape[0]
    dh = c // heads
    lp = levels * points

    def f32(name, v):
        # shared constants (identical in every layer): one initializer per name
        key = ("msdeform_const", name)
        if key not in gb._shape_consts:
            gb._shape_consts[key] = gb.const(name, np.asarray(v, dtype=np.float32))
        return gb._shape_consts[key]

    # window table [T*heads*M, 4*dh], M = sum over levels of (h+2)(w+2) windows
    value = _lin(gb, value_in, w_val, b_val, prefix + ".value_proj")      # [T,N,C]
    value = gb.transpose(gb.reshape(value, (t, n, heads, dh), prefix + ".value_split"), (0, 2, 1, 3),
                         prefix + ".value_heads")                          # [T,heads,N,dh]
    tables, offsets = [], []
    start = m = 0
    for lvl, (h, w) in enumerate(shapes):
        p = f"{prefix}.l{lvl}"
        v_l = _slice(gb, value, 2, start, start + h * w, p + ".value_tokens")
        v_l = gb.reshape(v_l, (t, heads, h, w, dh), p + ".value_map")
        v_l = gb.op("Pad", [v_l, gb.int_const([0, 0, 1, 1, 0, 0, 0, 2, 2, 0])], p + ".value_padded")
        quads = [_slice(gb, _slice(gb, v_l, 2, dy, dy + h + 2, f"{p}.win_y{dy}_{dx}"), 3, dx, dx + w + 2,
                        f"{p}.win{dy}{dx}") for dy in (0, 1) for dx in (0, 1)]
        win = gb.op("Concat", quads, p + ".windows", axis=4)                 # [T,heads,h+2,w+2,4dh]
        tables.append(gb.reshape(win, (t, heads, (h + 2) * (w + 2), 4 * dh), p + ".window_rows"))
        offsets.append(m)
        start += h * w
        m += (h + 2) * (w + 2)
    table = gb.op("Concat", tables, prefix + ".window_table", axis=2) if levels > 1 else tables[0]
    table = gb.reshape(table, (t * heads * m, 4 * dh), prefix + ".window_flat")

    # pixel coordinates [T,N,2*heads*L*P], columns ordered (xy, head, level, point). Every
    # elementwise step below is on this flat layout against a flat constant: tract runs
    # trailing-axis broadcasts with its fast kernels but not 6-D ones.
    hlp = heads * lp
    hk = np.arange(heads)[:, None, None]
    lk = np.arange(levels)[None, :, None]
    kk = np.arange(points)[None, None, :]
    rows = np.concatenate([(((hk * levels + lk) * points + kk) * 2 + xy).ravel() for xy in (0, 1)])
    sizes = np.array([[w for h, w in shapes], [h for h, w in shapes]], np.float64)   # [2,L]: (x: W, y: H)
    base = np.empty((n, 2, heads, levels, points))
    for xy in (0, 1):
        base[:, xy] = (ref[:, xy][:, None] * sizes[xy][None, :] - 0.5)[:, None, :, None]
    tag = "_".join(f"{h}x{w}" for h, w in shapes) + f".h{heads}p{points}"
    per_col = lambda v: np.broadcast_to(v, (heads, levels, points)).ravel()          # noqa: E731
    uv = gb.matmul(query, gb.const(f"{prefix}.sampling_offsets.weight_t_uv", np.ascontiguousarray(w_off[rows].T)),
                   prefix + ".uv.mm")
    # bias and the per-token base stay separate so the base table is shared by all layers
    uv = gb.add(uv, gb.const(f"{prefix}.sampling_offsets.bias_uv", b_off[rows].astype(np.float32)),
                prefix + ".uv.biased")
    uv = gb.add(uv, f32(f"const.msdeform.uv_base.{tag}", base.reshape(n, -1)), prefix + ".uv")
    uv = gb.op("Max", [uv, f32("const.f32.minus_one_s", -1.0)], prefix + ".uv.lo")
    hi = np.concatenate([per_col(sizes[xy][None, :, None]) for xy in (0, 1)])
    uv = gb.op("Min", [uv, f32(f"const.msdeform.uv_hi.{tag}", hi)], prefix + ".uv.clamped")
    corner = gb.op("Floor", [uv], prefix + ".uv0")
    frac = gb.op("Sub", [uv, corner], prefix + ".uvfrac")

    # window row of (frame, head, level, y0, x0): base + y0*(w+2) + x0
    row0 = np.empty((t, 1, heads, levels, points))
    for lvl, (h, w) in enumerate(shapes):
        row0[:, 0, :, lvl, :] = ((np.arange(t)[:, None] * heads + np.arange(heads)[None, :]) * m
                                 + offsets[lvl] + (w + 2) + 1)[:, :, None]
    stride = per_col(np.array([w + 2 for h, w in shapes], np.float64)[None, :, None])
    x0 = _slice(gb, corner, 2, 0, hlp, prefix + ".x0")
    y0 = _slice(gb, corner, 2, hlp, 2 * hlp, prefix + ".y0")
    idx = gb.add(gb.add(gb.mul(y0, f32(f"const.msdeform.row_stride.{tag}", stride), prefix + ".yrows"),
                        x0, prefix + ".cell"),
                 f32(f"const.msdeform.row_base.t{t}.m{m}.{tag}", row0.reshape(t, 1, hlp)), prefix + ".idx_f")
    # int32: tract reads an int64 Cast as its symbolic-dimension type and converts element by element
    idx = gb.reshape(gb.op("Cast", [idx], prefix + ".idx_i", to=6), (t, n, heads, lp), prefix + ".idx")

    # corner weights (dy, dx) = 00, 01, 10, 11 per point, times the attention weight
    one = f32("const.f32.one_s", 1.0)
    fx = _slice(gb, frac, 2, 0, hlp, prefix + ".fx")
    fy = _slice(gb, frac, 2, hlp, 2 * hlp, prefix + ".fy")
    gx = gb.op("Sub", [one, fx], prefix + ".gx")
    att = _lin(gb, query, w_att, b_att, prefix + ".attention_weights")
    att = gb.reshape(att, (t, n, heads, lp), prefix + ".att_heads")
    att = gb.op("Softmax", [att], prefix + ".att_softmax", axis=-1)      # over the (level, point) pairs
    att = gb.reshape(att, (t, n, hlp), prefix + ".att")
    ay = [gb.mul(att, gb.op("Sub", [one, fy], prefix + ".gy"), prefix + ".att_y0"), gb.mul(att, fy, prefix + ".att_y1")]
    quad = [gb.op("Unsqueeze", [gb.mul(ay[dy], wx, f"{prefix}.w{dy}{dx}"), gb.int_const([3])], f"{prefix}.w{dy}{dx}u")
            for dy in (0, 1) for dx, wx in ((0, gx), (1, fx))]
    wgt = gb.reshape(gb.op("Concat", quad, prefix + ".corner_w", axis=3), (t, n, heads, lp * 4, 1), prefix + ".wgt")

    g = gb.op("Gather", [table, idx], prefix + ".gathered", axis=0)                   # [T,N,heads,LP,4dh]
    g = gb.reshape(g, (t, n, heads, lp * 4, dh), prefix + ".corners")
    acc = gb.reduce_sum(gb.mul(g, wgt, prefix + ".weighted"), (3,), prefix + ".sum")  # [T,N,heads,dh]
    acc = gb.reshape(acc, (t, n, c), prefix + ".heads_cat")
    y = gb.matmul(acc, gb.const(prefix + ".output_proj.weight_t", np.ascontiguousarray(w_out.T)),
                  prefix + ".output_proj.mm")
    return gb.add(y, gb.const(prefix + ".output_proj.bias", b_out), prefix + ".output_proj", out=out)


# ---------------------------------------------------------------------------
# dense multi-head attention (nn.MultiheadAttention, batch_first)
# ---------------------------------------------------------------------------

def mha(gb, sd, prefix, xq, xkv, t, lq, lk, c, heads=HEADS):
    """[T,Lq,C] x [T,Lk,C] -> [T,Lq,C]. The d^-0.5 scale is folded into W_q/b_q."""
    w_in = sd.get(prefix + ".in_proj_weight", (3 * c, c)).astype(np.float64)
    b_in = sd.opt(prefix + ".in_proj_bias", (3 * c,))
    w_out = sd.get(prefix + ".out_proj.weight", (c, c))
    b_out = sd.opt(prefix + ".out_proj.bias", (c,))
    dh = c // heads
    s = dh ** -0.5
    b = [None] * 3 if b_in is None else [b_in[i * c:(i + 1) * c].astype(np.float64) for i in range(3)]
    q = _lin(gb, xq, (w_in[:c] * s).astype(np.float32),
             None if b[0] is None else (b[0] * s).astype(np.float32), prefix + ".q")
    k = _lin(gb, xkv, w_in[c:2 * c].astype(np.float32), None if b[1] is None else b[1].astype(np.float32),
             prefix + ".k")
    v = _lin(gb, xkv, w_in[2 * c:].astype(np.float32), None if b[2] is None else b[2].astype(np.float32),
             prefix + ".v")
    q = gb.transpose(gb.reshape(q, (t, lq, heads, dh), prefix + ".q_split"), (0, 2, 1, 3), prefix + ".q_heads")
    k = gb.transpose(gb.reshape(k, (t, lk, heads, dh), prefix + ".k_split"), (0, 2, 3, 1), prefix + ".k_heads")
    v = gb.transpose(gb.reshape(v, (t, lk, heads, dh), prefix + ".v_split"), (0, 2, 1, 3), prefix + ".v_heads")
    a = gb.op("Softmax", [gb.matmul(q, k, prefix + ".scores")], prefix + ".softmax", axis=-1)
    o = gb.transpose(gb.matmul(a, v, prefix + ".ctx"), (0, 2, 1, 3), prefix + ".ctx_t")
    o = gb.reshape(o, (t, lq, c), prefix + ".ctx_cat")
    return _lin(gb, o, w_out, b_out, prefix + ".out_proj")


def _mha_np(sd, prefix, xq, xkv, heads=HEADS):
    """float64 nn.MultiheadAttention for constant inputs (query-generator layer 0)."""
    c = xq.shape[-1]
    w_in = sd.get(prefix + ".in_proj_weight", (3 * c, c)).astype(np.float64)
    b_in = sd.opt(prefix + ".in_proj_bias", (3 * c,))
    b_in = np.zeros(3 * c) if b_in is None else b_in.astype(np.float64)
    w_out = sd.get(prefix + ".out_proj.weight", (c, c)).astype(np.float64)
    b_out = sd.opt(prefix + ".out_proj.bias", (c,))
    dh = c // heads
    q = (xq @ w_in[:c].T + b_in[:c]).reshape(-1, heads, dh).transpose(1, 0, 2)
    k = (xkv @ w_in[c:2 * c].T + b_in[c:2 * c]).reshape(-1, heads, dh).transpose(1, 0, 2)
    v = (xkv @ w_in[2 * c:].T + b_in[2 * c:]).reshape(-1, heads, dh).transpose(1, 0, 2)
    s = q @ k.transpose(0, 2, 1) * dh ** -0.5
    s = np.exp(s - s.max(axis=-1, keepdims=True))
    s /= s.sum(axis=-1, keepdims=True)
    o = (s @ v).transpose(1, 0, 2).reshape(-1, c) @ w_out.T
    return o if b_out is None else o + b_out.astype(np.float64)


def _ln_np(sd, prefix, x):
    g = sd.get(prefix + ".weight").astype(np.float64)
    b = sd.get(prefix + ".bias").astype(np.float64)
    m = x.mean(-1, keepdims=True)
    v = ((x - m) ** 2).mean(-1, keepdims=True)
    return (x - m) / np.sqrt(v + LN_EPS) * g + b


def _count_layers(sd, prefix, leaf):
    n = 0
    while f"{prefix}.{n}.{leaf}" in sd:
        n += 1
    return n


# ---------------------------------------------------------------------------
# query generators
# ---------------------------------------------------------------------------

def attention_generator(gb, sd, prefix, audio_tok, t, c, heads=HEADS):
    """AttentionGenerator: [T,C] projected audio -> [T,Q,C] queries (before learnable_query)."""
    n_layers = _count_layers(sd, prefix + ".layers", "norm1.weight")
    if n_layers == 0:
        raise KeyError(f"no {prefix}.layers.* found")
    q0 = sd.get(prefix + ".query.weight").astype(np.float64)
    nq = q0.shape[0]
    # Layer 0 self-attention only ever sees the constant query embedding.
    p0 = prefix + ".layers.0"
    q_const = _ln_np(sd, p0 + ".norm1", q0 + _mha_np(sd, p0 + ".self_attn", q0, q0, heads))
    q = None
    for i in range(n_layers):
        p = f"{prefix}.layers.{i}"
        if i > 0:
            q = _layer_norm(gb, sd, p + ".norm1", gb.add(q, mha(gb, sd, p + ".self_attn", q, q, t, nq, nq, c, heads),
                                                        p + ".self_res"), c)
        # One key: softmax weight 1, so the output is W_o W_v a for every query.
        w_in = sd.get(p + ".cross_attn.in_proj_weight", (3 * c, c)).astype(np.float64)
        w_o = sd.get(p + ".cross_attn.out_proj.weight", (c, c)).astype(np.float64)
        if (p + ".cross_attn.in_proj_bias") in sd or (p + ".cross_attn.out_proj.bias") in sd:
            raise ValueError(f"{p}.cross_attn has biases; the AttentionGenerator MHA is bias-free")
        fused = (w_o @ w_in[2 * c:]).astype(np.float32)
        cross = gb.reshape(_lin(gb, audio_tok, fused, None, p + ".cross_attn.WoWv"), (t, 1, c), p + ".cross")
        base = gb.const(p + ".norm1.out_const", q_const.astype(np.float32)) if i == 0 else q
        q = _layer_norm(gb, sd, p + ".norm2", gb.add(base, cross, p + ".cross_res"), c)
        w1 = sd.get(p + ".ffn.0.weight")
        f = _gelu(gb, _lin(gb, q, w1, sd.get(p + ".ffn.0.bias", (w1.shape[0],)), p + ".ffn.0"), p + ".ffn.1")
        f = _lin(gb, f, sd.get(p + ".ffn.2.weight", (c, w1.shape[0])), sd.get(p + ".ffn.2.bias", (c,)), p + ".ffn.2")
        q = _layer_norm(gb, sd, p + ".norm3", gb.add(q, f, p + ".ffn_res"), c)
    return q, nq, n_layers


# ---------------------------------------------------------------------------
# head pieces
# ---------------------------------------------------------------------------

def cross_modal_mixer(gb, sd, prefix, feat, audio_tok, t, c, h, w, heads=HEADS, gate_out=None, out=None):
    """CrossModalMixer channel gate on [T,C,h,w] with audio token [T,C]; one gate per frame.

    Re-associated so no per-pixel k/v projection exists:
    q.k_n = (W_k^T q) . F_n, and sum_n a_n W_v F_n = W_v (sum_n a_n F_n).
    """
    wq = sd.get(prefix + ".q_proj.weight", (c, c)).astype(np.float64)
    wkv = sd.get(prefix + ".kv_proj.weight", (2 * c, c)).astype(np.float64)
    wp = sd.get(prefix + ".proj.weight", (c, c))
    bp = sd.get(prefix + ".proj.bias", (c,))
    dh = c // heads
    hw = h * w
    q = _lin(gb, audio_tok, (wq * dh ** -0.5).astype(np.float32), None, prefix + ".q_proj")     # [T,C]
    q = gb.reshape(q, (t, heads, 1, dh), prefix + ".q_heads")
    wk = wkv[:c].reshape(heads, dh, c).astype(np.float32)
    u = gb.matmul(q, gb.const(prefix + ".kv_proj.k_heads", wk), prefix + ".k_pulled")      # [T,heads,1,C]
    u = gb.reshape(u, (t, heads, c), prefix + ".u")
    f = gb.reshape(feat, (t, c, hw), prefix + ".tokens")                                    # [T,C,HW]
    a = gb.op("Softmax", [gb.matmul(u, f, prefix + ".scores")], prefix + ".softmax", axis=-1)  # [T,heads,HW]
    pooled = gb.matmul(f, gb.transpose(a, (0, 2, 1), prefix + ".attn_t"), prefix + ".pooled")  # [T,C,heads]
    pooled = gb.reshape(gb.transpose(pooled, (0, 2, 1), prefix + ".pooled_t"), (t, heads, c, 1),
                        prefix + ".pooled_heads")
    wv = wkv[c:].reshape(heads, dh, c).astype(np.float32)
    x = gb.matmul(gb.const(prefix + ".kv_proj.v_heads", wv), pooled, prefix + ".v_pooled")  # [T,heads,dh,1]
    x = gb.reshape(x, (t, c), prefix + ".heads_cat")
    gate = gb.op("Sigmoid", [gb.linear(x, wp, bp, prefix + ".proj")], prefix + ".gate", out=gate_out)
    return gb.mul(feat, gb.reshape(gate, (t, c, 1, 1), prefix + ".gate_nchw"), prefix + ".out", out=out)


def _interp_matrix(n_in, factor):
    """[n_in*factor, n_in] rows of bilinear weights, align_corners=False (source clamped at 0 and n_in-1)."""
    n_out = n_in * factor
    src = np.maximum((np.arange(n_out) + 0.5) / factor - 0.5, 0.0)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    a = np.zeros((n_out, n_in))
    np.add.at(a, (np.arange(n_out), lo), 1.0 - (src - lo))
    np.add.at(a, (np.arange(n_out), hi), src - lo)
    return a.astype(np.float32)


def _resize(gb, x, factor, h, w, name):
    """Bilinear, align_corners=False, by an integer factor on [T,C,h,w], as A_h . x . A_w^T.

    Separable and exact (integer factors give dyadic weights); two constant
    MatMuls run on tract's GEMM kernels, where its Resize op is a scalar loop
    (~3x the MatMul time even with the mostly-zero matrices).
    """
    y = gb.matmul(x, gb.const(f"const.f32.interp_t.{w}x{factor}", np.ascontiguousarray(_interp_matrix(w, factor).T)),
                  name + ".x")
    return gb.matmul(gb.const(f"const.f32.interp.{h}x{factor}", _interp_matrix(h, factor)), y, name)


def r50_backbone(gb, sd, prefix, x, height, width):
    """B2_ResNet branch 1 under `prefix`: [(value, channels, h, w)] for layer1..layer4_1."""
    x, _ = _conv_bn(gb, sd, prefix + "conv1", prefix + "bn1", x, 2, 3, True)
    h, w = _conv_out(height, 7, 2, 3), _conv_out(width, 7, 2, 3)
    x = gb.maxpool(x, prefix + "maxpool", kernel=3, stride=2, pad=1)
    h, w = _conv_out(h, 3, 2, 1), _conv_out(w, 3, 2, 1)
    feats = []
    for name, stride in R50_LAYERS:
        n_blocks = _count_layers(sd, prefix + name, "conv1.weight")
        if n_blocks == 0:
            raise KeyError(f"no blocks found for {prefix}{name}")
        for i in range(n_blocks):
            s = stride if i == 0 else 1
            x, c = bottleneck(gb, sd, f"{prefix}{name}.{i}", x, s)
            h, w = _conv_out(h, 3, s, 1), _conv_out(w, 3, s, 1)
        feats.append((x, c, h, w))
    return feats


# ---------------------------------------------------------------------------
# whole segmenter
# ---------------------------------------------------------------------------

def segmenter_state(tensors) -> StateDict:
    """The non-VGGish part of an AVSegFormer checkpoint."""
    t = tensors.t if isinstance(tensors, StateDict) else tensors
    return StateDict({k: v for k, v in t.items() if not k.startswith("vggish.")})


def build_avsegformer(tensors, frames=5, height=224, width=224, heads=HEADS, strict=True, check=True,
                      sampler="gather", pvt_heads=None, pvt_head_dim=64):
    """frames [T,3,H,W] + audio_embedding [T,A] -> mask_logits [T,K,H,W].

    `tensors` is the whole official state dict (the `vggish.` keys are left
    to build_avsegformer_audio). `pvt_heads` / `pvt_head_dim` set the PVT-v2
    backbone's attention heads (no tensor reveals them; official: head dim
    64), as in build_tpavi. Returns (onnx.ModelProto, info dict).
    """
    if height % 32 or width % 32:
        raise ValueError("height and width must be multiples of 32")
    sd = segmenter_state(tensors)
    if "backbone.conv1.weight" in sd:
        backbone = "resnet50"
    elif sd.has_prefix("backbone.patch_embed1."):
        backbone = "pvt_v2"
    else:
        raise KeyError("no AVSegFormer backbone: expected 'backbone.conv1.weight' (R50) or "
                       "'backbone.patch_embed1.*' (PVT-v2)")
    level_embed = sd.get("head.level_embed")
    levels, c = level_embed.shape
    n_in = _count_layers(sd, "head.in_proj", "0.weight")
    if n_in != levels + 1:
        raise ValueError(f"head.in_proj has {n_in} entries; expected levels+1 = {levels + 1}")
    w_ap = sd.get("audio_proj.weight")
    if w_ap.shape[0] != c:
        raise ValueError(f"audio_proj.weight has shape {w_ap.shape}; expected [{c}, A]")
    audio_dim = w_ap.shape[1]
    lq = sd.get("head.learnable_query.weight")
    nq = lq.shape[0]
    t = frames
    if sd.has_prefix("head.query_generator."):
        generator = "AttentionGenerator"
    else:
        generator = "RepeatGenerator"

    gb = GraphBuilder("avsegformer_" + ("r50" if backbone == "resnet50" else "pvt"))
    x = gb.input("frames", [t, 3, height, width])
    audio = gb.input("audio_embedding", [t, audio_dim])

    # 1-2. audio token and backbone
    a = gb.linear(audio, w_ap, sd.get("audio_proj.bias", (c,)), "audio_proj")           # [T,C]
    if backbone == "resnet50":
        feats = r50_backbone(gb, sd, "backbone.", x, height, width)
    else:
        feats = pvt_v2_encoder(gb, sd, "backbone.", x, height, width, heads=pvt_heads, head_dim=pvt_head_dim)

    # 3. in_proj + GroupNorm on every level
    projected = []
    for i, (f, _ci, h, w) in enumerate(feats):
        y, co = _conv_gn(gb, sd, f"head.in_proj.{i}", f, t, h, w)
        if co != c:
            raise ValueError(f"head.in_proj.{i} outputs {co} channels; expected {c}")
        projected.append((y, h, w))
    feat14, h0, w0 = projected[0]
    lv = projected[n_in - levels:]
    shapes = [(h, w) for _, h, w in lv]
    n = sum(h * w for h, w in shapes)

    # 4. tokens and constant query-side positions
    src = gb.op("Concat", [gb.reshape(v, (t, c, h * w), f"head.level{i}.flat") for i, (v, h, w) in enumerate(lv)],
                "head.src_cn", axis=2)
    src = gb.transpose(src, (0, 2, 1), "head.src")                                       # [T,N,C]
    pos = np.concatenate([sine_position(h, w, c) + level_embed[i].astype(np.float64)
                          for i, (h, w) in enumerate(shapes)], axis=0)
    pos = gb.const("const.head.pos_level_embed", pos.astype(np.float32))

    # 5. deformable encoder (post-norm; positions on the query side only)
    enc = "head.transformer.encoder.layers"
    n_enc = _count_layers(sd, enc, "norm1.weight")
    if n_enc == 0:
        raise KeyError(f"no {enc}.* found")
    for i in range(n_enc):
        p = f"{enc}.{i}"
        q = gb.add(src, pos, p + ".query")
        att = msdeform_attn(gb, sd, p + ".self_attn", q, src, t, shapes, heads, sampler=sampler)
        src = _layer_norm(gb, sd, p + ".norm1", gb.add(src, att, p + ".attn_res"), c)
        w1 = sd.get(p + ".linear1.weight")
        f = _gelu(gb, _lin(gb, src, w1, sd.get(p + ".linear1.bias", (w1.shape[0],)), p + ".linear1"), p + ".gelu")
        f = _lin(gb, f, sd.get(p + ".linear2.weight", (c, w1.shape[0])), sd.get(p + ".linear2.bias", (c,)),
                 p + ".linear2")
        src = _layer_norm(gb, sd, p + ".norm2", gb.add(src, f, p + ".ffn_res"), c)
    memory = src

    # 6. queries
    if generator == "AttentionGenerator":
        qg, nq_g, n_gen = attention_generator(gb, sd, "head.query_generator", a, t, c, heads)
        if nq_g != nq:
            raise ValueError(f"query_generator has {nq_g} queries, learnable_query {nq}")
    else:
        # RepeatGenerator: the audio token copied to every query.
        qg = gb.reshape(a, (t, 1, c), "head.query_generator.repeat")
        n_gen = 0
    queries = gb.add(qg, gb.const("head.learnable_query.weight", lq), "head.queries")    # [T,Q,C]

    # 7. decoder (post-norm, no positions, dense cross-attention)
    dec = "head.transformer.decoder.layers"
    n_dec = _count_layers(sd, dec, "norm1.weight")
    if n_dec == 0:
        raise KeyError(f"no {dec}.* found")
    qd = queries
    for i in range(n_dec):
        p = f"{dec}.{i}"
        qd = _layer_norm(gb, sd, p + ".norm1",
                         gb.add(qd, mha(gb, sd, p + ".self_attn", qd, qd, t, nq, nq, c, heads), p + ".self_res"), c)
        qd = _layer_norm(gb, sd, p + ".norm2",
                         gb.add(qd, mha(gb, sd, p + ".cross_attn", qd, memory, t, nq, n, c, heads),
                                p + ".cross_res"), c)
        w1 = sd.get(p + ".linear1.weight")
        f = _gelu(gb, _lin(gb, qd, w1, sd.get(p + ".linear1.bias", (w1.shape[0],)), p + ".linear1"), p + ".gelu")
        f = _lin(gb, f, sd.get(p + ".linear2.weight", (c, w1.shape[0])), sd.get(p + ".linear2.bias", (c,)),
                 p + ".linear2")
        qd = _layer_norm(gb, sd, p + ".norm3", gb.add(qd, f, p + ".ffn_res"), c)

    # 8. mask feature: first (largest) level of memory, up to 1/4, + lateral, out_conv
    h1, w1_ = shapes[0]
    if (h0, w0) != (2 * h1, 2 * w1_):
        raise ValueError(f"mask feature {h0}x{w0} is not twice the first transformer level {h1}x{w1_}")
    m1 = _slice(gb, memory, 1, 0, h1 * w1_, "head.mask_feature.level1_tokens")
    m1 = gb.reshape(gb.transpose(m1, (0, 2, 1), "head.mask_feature.level1_cn"), (t, c, h1, w1_),
                    "head.mask_feature.level1")
    m1 = _resize(gb, m1, 2, h1, w1_, "head.mask_feature.up")
    lat, _ = _conv_gn(gb, sd, "head.lateral_conv", feat14, t, h0, w0)
    mf, _ = _conv_gn(gb, sd, "head.out_conv", gb.add(m1, lat, "head.mask_feature.sum"), t, h0, w0, pad=1, relu=True)

    # 9. audio channel gate
    mf = cross_modal_mixer(gb, sd, "head.fusion_block", mf, a, t, c, h0, w0, heads)

    # 10-11. P = einsum(Q, MF); pred = MF + mlp(P), with layer 0 re-associated
    hw = h0 * w0
    mlp = "head.mlp.layers"
    n_mlp = _count_layers(sd, mlp, "weight")
    if n_mlp < 2:
        raise KeyError(f"{mlp} needs at least 2 layers")
    w0m = sd.get(f"{mlp}.0.weight")
    if w0m.shape[1:] != (nq, 1, 1):
        raise ValueError(f"{mlp}.0.weight has shape {w0m.shape}; expected [*, {nq}, 1, 1]")
    hid = w0m.shape[0]
    wq_ = gb.matmul(gb.const(f"{mlp}.0.weight_2d", w0m.reshape(hid, nq)), qd, f"{mlp}.0.W0Q")   # [T,hid,C]
    mf_flat = gb.reshape(mf, (t, c, hw), "head.mask_feature.flat")
    y = gb.matmul(wq_, mf_flat, f"{mlp}.0.mm")
    y = gb.add(y, gb.const(f"{mlp}.0.bias", sd.get(f"{mlp}.0.bias", (hid,)).reshape(hid, 1)), f"{mlp}.0")
    y = gb.reshape(gb.relu(y, f"{mlp}.0.relu"), (t, hid, h0, w0), f"{mlp}.0.nchw")
    for j in range(1, n_mlp):
        wj = sd.get(f"{mlp}.{j}.weight")
        y = gb.conv(y, wj, sd.get(f"{mlp}.{j}.bias", (wj.shape[0],)), f"{mlp}.{j}")
        if j < n_mlp - 1:
            y = gb.relu(y, f"{mlp}.{j}.relu")
    pred = gb.add(mf, y, "head.pred")

    # 12. fc
    fw0 = sd.get("head.fc.0.weight")
    y = gb.conv(pred, fw0, sd.get("head.fc.0.bias", (fw0.shape[0],)), "head.fc.0", pad=1)
    up = height // h0
    if up * h0 != height or width // w0 != up or up * w0 != width:
        raise ValueError(f"mask feature {h0}x{w0} does not scale to {height}x{width}")
    y = _resize(gb, y, up, h0, w0, "head.fc.1")
    fw2 = sd.get("head.fc.2.weight")
    y = gb.relu(gb.conv(y, fw2, sd.get("head.fc.2.bias", (fw2.shape[0],)), "head.fc.2", pad=1), "head.fc.3")
    fw4 = sd.get("head.fc.4.weight")
    if "head.fc.4.bias" in sd:
        raise ValueError("head.fc.4 has a bias; AVSegFormer's last conv is bias-free")
    logits = gb.conv(y, fw4, None, "head.fc.4", out="mask_logits")
    k = fw4.shape[0]
    gb.output(logits, [t, k, height, width])

    leftover = sd.unused()
    if leftover and strict:
        raise ValueError(f"AVSegFormer weights not consumed: {leftover[:8]} ({len(leftover)} total)")
    desc = (f"AVSegFormer-{'R50' if backbone == 'resnet50' else 'PVTv2'} segmenter ({generator}), "
            f"{height}x{width}, deformable sampling by {sampler}, BatchNorm folded")
    model = gb.build(desc, check=check)
    info = {
        "backbone": backbone,
        "query_generator": generator,
        "embed_dim": int(c),
        "levels": int(levels),
        "queries": int(nq),
        "encoder_layers": n_enc,
        "decoder_layers": n_dec,
        "generator_layers": n_gen,
        "audio_dim": int(audio_dim),
        "num_classes": int(k),
        "sampler": sampler,
        **({"pvt_heads": list(pvt_heads) if pvt_heads is not None else None, "pvt_head_dim": int(pvt_head_dim)}
           if backbone == "pvt_v2" else {}),
        "parameters": gb.parameter_count(),
        "checkpoint_elements_used": int(sum(sd.t[key].size for key in sd.used)),
    }
    return model, info


def build_avsegformer_audio(tensors, check=True):
    """The `vggish.`-prefixed audio encoder of an AVSegFormer checkpoint (same VGGish as TPAVI's,
    post-ReLU 128-d output, PCA post-processor off; docs/spec/vggish.md §3)."""
    t = tensors.t if isinstance(tensors, StateDict) else tensors
    return build_vggish(t, prefix="vggish.", check=check)
