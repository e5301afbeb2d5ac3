"""Whole-graph check: exported TPAVI/VGGish ONNX vs an independent numpy forward.

The numpy side is written directly from the spec in its literal form (BatchNorm
applied separately, not folded; TPAVI with the full N x N matrix theta.phi^T/N;
ASPP as four dilated convs; PyTorch bilinear coordinate rules), so it checks
the exporter's wiring (strides, residuals, dead-key skipping, resize modes,
stage order) rather than re-using any of its code. Runs the tiny model's
weights at 64x64 to stay light.

    .venv/bin/python -m pytest tools/tests/test_tiny_numpy.py

Its literal ops (conv2d, bn, relu, maxpool, up2) are reused by test_tpavi_families.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from avseg_export.ort import session
from avseg_export.semantic import build_semantic
from avseg_export.tpavi import build_tpavi
from avseg_export.tagger import build_vggish_tagger
from avseg_export.vggish import build_vggish
from avseg_tools import make_tiny_model as tiny

EPS = 1e-5


def conv2d(x, w, b=None, stride=1, pad=0, dil=1):
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    ho = (h + 2 * pad - dil * (kh - 1) - 1) // stride + 1
    wo = (wd + 2 * pad - dil * (kw - 1) - 1) // stride + 1
    out = np.zeros((n, o, ho, wo))
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, :, i * dil: i * dil + stride * (ho - 1) + 1: stride,
                       j * dil: j * dil + stride * (wo - 1) + 1: stride]
            out += np.einsum("nchw,oc->nohw", patch, w[:, :, i, j])
    if b is not None:
        out += b[None, :, None, None]
    return out


def bn(x, sd, p):
    s = sd[p + ".weight"] / np.sqrt(sd[p + ".running_var"].astype(np.float64) + EPS)
    return (x - sd[p + ".running_mean"][None, :, None, None]) * s[None, :, None, None] + sd[p + ".bias"][None, :, None, None]


def relu(x):
    return np.maximum(x, 0)


def maxpool(x, k, s, p):
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)), constant_values=-np.inf)
    ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    out = np.full((n, c, ho, wo), -np.inf)
    for i in range(k):
        for j in range(k):
            out = np.maximum(out, xp[:, :, i: i + s * (ho - 1) + 1: s, j: j + s * (wo - 1) + 1: s])
    return out


def up2(x, align_corners):
    """F.interpolate(scale_factor=2, mode='bilinear') per docs/spec/conventions.md §0.1."""
    n, c, h, w = x.shape

    def coords(size):
        o = np.arange(2 * size, dtype=np.float64)
        src = o * (size - 1) / (2 * size - 1) if align_corners else np.maximum((o + 0.5) / 2 - 0.5, 0)
        i0 = np.floor(src).astype(int)
        i1 = np.minimum(i0 + 1, size - 1)
        return i0, i1, src - i0

    y0, y1, fy = coords(h)
    x0, x1, fx = coords(w)
    top = x[:, :, y0, :] * (1 - fy)[None, None, :, None] + x[:, :, y1, :] * fy[None, None, :, None]
    return top[:, :, :, x0] * (1 - fx) + top[:, :, :, x1] * fx


def tpavi_literal(sd, p, v, audio):
    """v: [T,C,h,w]; audio [T,D]. The official N x N form, no softmax."""
    t, c, h, w = v.shape
    a = audio @ sd[p + ".align_channel.weight"].T + sd.get(p + ".align_channel.bias", 0)
    w2 = lambda k: sd[p + f".{k}.weight"].reshape(sd[p + f".{k}.weight"].shape[:2])
    pos = v.transpose(0, 2, 3, 1).reshape(-1, c)                    # (t,y,x) order
    theta = pos @ w2("theta").T + sd[p + ".theta.bias"]
    g = pos @ w2("g").T + sd[p + ".g.bias"]
    phi_t = a @ w2("phi").T + sd[p + ".phi.bias"]
    phi = np.repeat(phi_t, h * w, axis=0)
    f = theta @ phi.T / pos.shape[0]
    y = f @ g
    z = y @ w2("W_z.0").T + sd[p + ".W_z.0.bias"]
    s = sd[p + ".W_z.1.weight"] / np.sqrt(sd[p + ".W_z.1.running_var"].astype(np.float64) + EPS)
    z = (z - sd[p + ".W_z.1.running_mean"]) * s + sd[p + ".W_z.1.bias"] + pos
    mu, var = z.mean(-1, keepdims=True), z.var(-1, keepdims=True)
    z = (z - mu) / np.sqrt(var + EPS) * sd[p + ".norm_layer.weight"] + sd[p + ".norm_layer.bias"]
    return z.reshape(t, h, w, c).transpose(0, 3, 1, 2)


def rcu(sd, p, x):
    x = relu(x)   # the reference's in-place ReLU rewrites x itself
    y = conv2d(relu(conv2d(x, sd[p + ".conv1.weight"], sd[p + ".conv1.bias"], pad=1)),
               sd[p + ".conv2.weight"], sd[p + ".conv2.bias"], pad=1)
    return x + y


def resnet_feats(sd, frames):
    x = relu(bn(conv2d(frames, sd["resnet.conv1.weight"], stride=2, pad=3), sd, "resnet.bn1"))
    x = maxpool(x, 3, 2, 1)
    feats = []
    for name, n_blocks, stride in (("layer1", 3, 1), ("layer2", 4, 2), ("layer3_1", 6, 2), ("layer4_1", 3, 2)):
        for i in range(n_blocks):
            p, s = f"resnet.{name}.{i}", (stride if i == 0 else 1)
            y = relu(bn(conv2d(x, sd[p + ".conv1.weight"]), sd, p + ".bn1"))
            y = relu(bn(conv2d(y, sd[p + ".conv2.weight"], stride=s, pad=1), sd, p + ".bn2"))
            y = bn(conv2d(y, sd[p + ".conv3.weight"]), sd, p + ".bn3")
            skip = bn(conv2d(x, sd[p + ".downsample.0.weight"], stride=s), sd, p + ".downsample.1") if i == 0 else x
            x = relu(y + skip)
        feats.append(x)
    return feats


def decode(sd, fused):
    d = up2(rcu(sd, "path4.resConfUnit2", fused[3]), True)
    for k in (3, 2, 1):
        d = up2(rcu(sd, f"path{k}.resConfUnit2", d + rcu(sd, f"path{k}.resConfUnit1", fused[k - 1])), True)
    y = conv2d(d, sd["output_conv.0.weight"], sd["output_conv.0.bias"], pad=1)
    y = relu(conv2d(up2(y, False), sd["output_conv.2.weight"], sd["output_conv.2.bias"], pad=1))
    return conv2d(y, sd["output_conv.4.weight"], sd["output_conv.4.bias"])


def tpavi_forward(sd, frames, audio):
    """TPAVI's forward; with `audio` None, the audio-agnostic semantic segmenter's (no TPAVI), and
    with `cls.*` keys too, its factored head (train_default.model.SemanticHead)."""
    feats = resnet_feats(sd, frames)
    fused = []
    for k, f in enumerate(feats, start=1):
        y = sum(conv2d(f, sd[f"conv{k}.conv2d_list.{i}.weight"], sd[f"conv{k}.conv2d_list.{i}.bias"], pad=d, dil=d)
                for i, d in enumerate((3, 6, 12, 18)))
        fused.append(y if audio is None else tpavi_literal(sd, f"tpavi_b{k}", y, audio))
    y = decode(sd, fused)
    if "cls.0.weight" not in sd:
        return y
    c = np.concatenate([feats[2], up2(feats[3], False)], 1)
    c = conv2d(relu(conv2d(c, sd["cls.0.weight"], sd["cls.0.bias"], pad=1)), sd["cls.2.weight"], sd["cls.2.bias"])
    while c.shape[-1] < y.shape[-1]:
        c = up2(c, False)
    return np.concatenate([y[:, :1], y[:, 1:2] + c], 1)


def vggish_forward(sd, x):
    for idx, pool in ((0, True), (3, True), (6, False), (8, True), (11, False), (13, True)):
        x = relu(conv2d(x, sd[f"features.{idx}.weight"], sd[f"features.{idx}.bias"], pad=1))
        if pool:
            x = maxpool(x, 2, 2, 0)
    x = x.transpose(0, 2, 3, 1).reshape(x.shape[0], -1)
    for idx in (0, 2, 4):
        x = relu(x @ sd[f"embeddings.{idx}.weight"].T + sd[f"embeddings.{idx}.bias"])
    return x


@pytest.fixture(scope="module")
def tiny_weights():
    """The tiny model's calibrated weights at 64x64, and a batch of audio embeddings."""
    rng = np.random.default_rng(0)
    vgg = tiny.random_vggish(rng)
    seg = tiny.random_tpavi(rng)
    batches = tiny.calibration_inputs(vgg, np.random.default_rng([0, 1]), 64)
    tiny.calibrate_bn(seg, batches, np.random.default_rng([0, 2]))
    emb = batches[0][1]
    seg["output_conv.4.bias"] = np.array([0.25], np.float32)
    return vgg, seg, emb


def test_vggish_vs_numpy(tiny_weights):
    vgg, _, _ = tiny_weights
    vg64 = {k: v.astype(np.float64) for k, v in vgg.items()}
    logmel = np.random.default_rng(7).uniform(-4.6, 2.0, (5, 1, 96, 64)).astype(np.float32)
    model, _ = build_vggish(vgg)
    got = session(model).run(["audio_embedding"], {"audio_logmel": logmel})[0]
    want = vggish_forward(vg64, logmel.astype(np.float64))
    d = np.abs(got - want).max()
    print(f"vggish  ONNX vs numpy literal: max|diff| {d:.3e} (max|ref| {np.abs(want).max():.3g})")
    assert d < 1e-4 * max(1.0, np.abs(want).max())


def test_tagger_vs_numpy(tiny_weights):
    """The two-stage tagger graph: VGGish, one Linear, softmax over the labels."""
    vgg, _, _ = tiny_weights
    rng = np.random.default_rng(11)
    d = vgg["embeddings.4.weight"].shape[0]
    w = rng.normal(0, 0.5, (7, d)).astype(np.float32)
    b = rng.normal(0, 0.5, 7).astype(np.float32)
    logmel = rng.uniform(-4.6, 2.0, (5, 1, 96, 64)).astype(np.float32)
    model, info = build_vggish_tagger(vgg, w, b)
    assert info["labels"] == 7
    got = session(model).run(["tag_scores"], {"audio_logmel": logmel})[0]
    logits = vggish_forward({k: v.astype(np.float64) for k, v in vgg.items()}, logmel.astype(np.float64)) @ w.T + b
    e = np.exp(logits - logits.max(1, keepdims=True))
    want = e / e.sum(1, keepdims=True)
    diff = np.abs(got - want).max()
    print(f"tagger  ONNX vs numpy literal: max|diff| {diff:.3e}")
    assert got.shape == (5, 7)
    assert diff < 1e-5
    np.testing.assert_allclose(got.sum(1), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="tagger head weight"):
        build_vggish_tagger(vgg, w[:, :-1], b)


@pytest.mark.parametrize("size", [64, 96])
def test_tpavi_vs_numpy(tiny_weights, size):
    _, seg, emb = tiny_weights
    sd64 = {k: v.astype(np.float64) for k, v in seg.items()}
    fr = np.random.default_rng(size).standard_normal((5, 3, size, size)).astype(np.float32)
    model, _ = build_tpavi(seg, frames=5, height=size, width=size)
    got = session(model).run(["mask_logits"], {"frames": fr, "audio_embedding": emb})[0]
    want = tpavi_forward(sd64, fr.astype(np.float64), emb.astype(np.float64))
    d = np.abs(got - want).max()
    agree = ((got > 0) == (want > 0)).mean()
    print(f"tpavi {size}x{size} ONNX vs numpy literal: max|diff| {d:.3e} (max|ref| {np.abs(want).max():.3g}), "
          f"sign agreement {100 * agree:.3f} %")
    assert d < 1e-4


@pytest.mark.parametrize("factored", [False, True])
def test_semantic_vs_numpy(tiny_weights, factored):
    """A two-stage package's segmenter: TPAVI's layout without TPAVI, K class logits, any frame
    count; factored: background/objectness from the decoder plus a low-resolution class branch."""
    _, seg, _ = tiny_weights
    rng = np.random.default_rng(13)
    sd = {k: v for k, v in seg.items() if not k.startswith("tpavi_b")}
    c = sd["output_conv.4.weight"].shape[1]
    outs = 2 if factored else 6
    sd["output_conv.4.weight"] = rng.normal(0, 0.5, (outs, c, 1, 1)).astype(np.float32)
    sd["output_conv.4.bias"] = rng.normal(0, 0.5, outs).astype(np.float32)
    if factored:
        deep = sum(seg[f"conv{k}.conv2d_list.0.weight"].shape[1] for k in (3, 4))
        sd["cls.0.weight"] = rng.normal(0, 0.1, (8, deep, 3, 3)).astype(np.float32)
        sd["cls.0.bias"] = rng.normal(0, 0.1, 8).astype(np.float32)
        sd["cls.2.weight"] = rng.normal(0, 0.5, (5, 8, 1, 1)).astype(np.float32)
        sd["cls.2.bias"] = rng.normal(0, 0.5, 5).astype(np.float32)
    model, info = build_semantic(sd, 64, 64)
    assert info["num_classes"] == 6
    sess = session(model)
    sd64 = {k: v.astype(np.float64) for k, v in sd.items()}
    for n in (1, 3):
        fr = rng.standard_normal((n, 3, 64, 64)).astype(np.float32)
        got = sess.run(["class_logits"], {"frames": fr})[0]
        want = tpavi_forward(sd64, fr.astype(np.float64), None)
        d = np.abs(got - want).max()
        agree = (got.argmax(1) == want.argmax(1)).mean()
        print(f"semantic N={n} ONNX vs numpy literal: max|diff| {d:.3e} (max|ref| {np.abs(want).max():.3g}), "
              f"argmax agreement {100 * agree:.3f} %")
        assert got.shape == (n, 6, 64, 64)
        assert d < 1e-4
    with pytest.raises(ValueError, match="TPAVI blocks"):
        build_semantic(seg, 64, 64)
    with pytest.raises(ValueError, match="multiples of 32"):
        build_semantic(sd, 48, 64)
