"""Block fidelity: our ONNX sub-graphs vs the official-code reference tensors.

Each case loads the BF16 reference weights by their official keys, builds the
sub-graph with the same builder functions the full exporters use, runs it in
ONNX Runtime and checks the max abs diff against the README tolerance.

    .venv/bin/python -m pytest tools/tests/test_blocks.py

The reference tensors are read from $AVSEG_REFERENCE_DIR, default
tests/data/reference (see its README); without them the tests are skipped,
under CI they fail.
"""

from __future__ import annotations

import numpy as np

from avseg_export.graph import GraphBuilder
from avseg_export.ort import session
from avseg_export.tpavi import aspp, fusion_block, output_conv, tpavi_block
from avseg_export.vggish import vggish_features, vggish_flatten
from avseg_export.weights import StateDict, read_safetensors


def load(ref, name):
    t = read_safetensors(ref / f"{name}.safetensors")
    weights = StateDict({k: v for k, v in t.items() if not k.startswith(("input.", "expected."))})
    return t, weights


def run(gb, feeds):
    sess = session(gb.build())
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds)))


def check(case, got, want, tol):
    """max|got - want| <= tol, all finite, shapes equal (prints the measured gap)."""
    got = np.asarray(got)
    assert got.shape == want.shape, f"{case}: shape {got.shape} != {want.shape}"
    diff = float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64))))
    ok = diff <= tol and np.isfinite(got).all()
    print(f"{'PASS' if ok else 'FAIL'}  {case:<32} max|diff| = {diff:.3e}  (tol {tol:.0e}, max|ref| {np.abs(want).max():.3g})")
    assert ok, f"{case}: max|diff| {diff:.3e} > tol {tol:.0e} (or non-finite output)"


def test_tpavi_block(reference_dir):
    t, sd = load(reference_dir, "tpavi_block")
    audio = t["input.audio"][0]                                       # [T,128]
    for xkey, ykey, tol in (("input.x", "expected.y", 1e-4), ("input.x7", "expected.y7", 1e-4)):
        x = np.ascontiguousarray(t[xkey][0].transpose(1, 0, 2, 3))    # [B,C,T,H,W] -> [T,C,H,W]
        tt, c, h, w = x.shape
        gb = GraphBuilder("tpavi_block")
        xi = gb.input("x", x.shape)
        ai = gb.input("audio", audio.shape)
        y, al = tpavi_block(gb, sd, "tpavi_b3", xi, ai, tt, h, w, aligned_out="audio_aligned")
        gb.output(y, x.shape)
        gb.output(al, [tt, c])
        out = run(gb, {"x": x, "audio": audio})
        want = t[ykey][0].transpose(1, 0, 2, 3)
        check(f"tpavi_block {ykey.split('.')[1]} ({h}x{w})", out[y], want, tol)
        if ykey == "expected.y":
            check("tpavi_block audio_aligned", out["audio_aligned"], t["expected.audio_aligned"][0], 1e-5)
    assert not sd.unused(), sd.unused()


def test_fusion_block(reference_dir):
    t, sd = load(reference_dir, "fusion_block")
    gb = GraphBuilder("fusion")
    x = gb.input("x", t["input.x"].shape)
    s = gb.input("skip", t["input.skip"].shape)
    x4 = gb.input("x4", t["input.x4"].shape)
    o3 = fusion_block(gb, sd, "path3", x, s, out="out")
    o4 = fusion_block(gb, sd, "path4", x4, out="out4")
    gb.output(o3, t["expected.out"].shape)
    gb.output(o4, t["expected.out4"].shape)
    out = run(gb, {"x": t["input.x"], "skip": t["input.skip"], "x4": t["input.x4"]})
    check("fusion_block path3 out", out["out"], t["expected.out"], 1e-4)
    check("fusion_block path4 out4", out["out4"], t["expected.out4"], 1e-4)
    # path4.resConfUnit1 is dead in the official model too; only it may stay unused.
    assert all(k.startswith("path4.resConfUnit1.") for k in sd.t if k not in sd.used)


def test_aspp(reference_dir):
    t, sd = load(reference_dir, "aspp")
    x = t["input.x"]
    n, c, h, w = x.shape
    gb = GraphBuilder("aspp")
    xi = gb.input("x", x.shape)
    gb.output(aspp(gb, sd, "conv1", xi, h, w), t["expected.out"].shape)
    check("aspp out (28x28)", run(gb, {"x": x})[gb.outputs[0].name], t["expected.out"], 2e-5)
    # The reference map is 28x28, so the centre-tap shortcut (dilation >= map
    # size) is not exercised above; check it against the plain sum on a 7x7 and
    # a 14x14 crop of the same input with the same weights.
    for size in (7, 14):
        xs = np.ascontiguousarray(x[:, :, :size, :size])
        outs = []
        for shortcut in (False, True):
            gb = GraphBuilder("aspp_crop")
            xi = gb.input("x", xs.shape)
            gb.output(aspp(gb, sd, "conv1", xi, size, size, shortcut=shortcut), [n, 256, size, size])
            outs.append(run(gb, {"x": xs})[gb.outputs[0].name])
        check(f"aspp centre-tap shortcut {size}x{size}", outs[1], outs[0], 2e-6)
    assert not sd.unused(), sd.unused()


def test_output_conv(reference_dir):
    t, sd = load(reference_dir, "output_conv")
    gb = GraphBuilder("output_conv")
    xi = gb.input("x", t["input.x"].shape)
    y, _ = output_conv(gb, sd, "output_conv", xi, out="out")
    gb.output(y, t["expected.out"].shape)
    check("output_conv out", run(gb, {"x": t["input.x"]})["out"], t["expected.out"], 1e-5)
    assert not sd.unused(), sd.unused()


def test_vggish_features(reference_dir):
    t, sd = load(reference_dir, "vggish_features")
    gb = GraphBuilder("vggish_features")
    xi = gb.input("logmel", ["N", 1, 96, 64])
    f, c = vggish_features(gb, sd, xi)
    flat = vggish_flatten(gb, f, c)
    gb.output(f, ["N", c, 6, 4])
    gb.output(flat, ["N", 6 * 4 * c])
    out = run(gb, {"logmel": t["input.logmel"]})
    check("vggish features_nchw", out[f], t["expected.features_nchw"], 2e-4)
    check("vggish flattened (NHWC order)", out[flat], t["expected.flattened"], 2e-4)
    assert not sd.unused(), sd.unused()
