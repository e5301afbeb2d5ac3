"""Block fidelity for AVSegFormer: our ONNX sub-graphs vs the official-code reference tensors.

Same structure as test_blocks.py: load the BF16 reference weights by their
official keys, build the sub-graph with the builder functions the AVSegFormer
exporter uses, run it in ONNX Runtime, check the max abs diff against the
README tolerance.

    .venv/bin/python -m pytest tools/tests/test_blocks_avsegformer.py

The reference tensors are read from $AVSEG_REFERENCE_DIR, default
tests/data/reference (see its README); without them the tests are skipped,
under CI they fail.
"""

from __future__ import annotations

import numpy as np

from avseg_export.avsegformer import cross_modal_mixer, msdeform_attn, reference_points
from avseg_export.graph import GraphBuilder
from avseg_export.ort import session
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


def test_msdeform_attn(reference_dir):
    t, sd = load(reference_dir, "msdeform_attn")
    shapes = [tuple(int(v) for v in hw) for hw in t["input.spatial_shapes"]]
    starts = np.cumsum([0] + [h * w for h, w in shapes[:-1]])
    assert (starts == t["input.level_start_index"]).all(), "level start indices"
    # The exporter bakes the reference points in as constants; they must be the
    # very points the official encoder passes (same for every sampled level).
    ref = reference_points(shapes)
    check("msdeform_attn reference points", np.repeat(ref[None, :, None, :], len(shapes), axis=2),
          t["input.reference_points"], 1e-7)
    query, value = t["input.query"], t["input.value"]
    # Both formulations the exporter offers: explicit corners + Gather (default) and ONNX GridSample.
    for sampler in ("gather", "gridsample"):
        gb = GraphBuilder("msdeform_attn")
        q = gb.input("query", query.shape)
        v = gb.input("value", value.shape)
        y = msdeform_attn(gb, sd, "head.transformer.encoder.layers.0.self_attn", q, v, query.shape[0], shapes,
                          out="out", sampler=sampler)
        gb.output(y, t["expected.out"].shape)
        check(f"msdeform_attn out ({sampler})", run(gb, {"query": query, "value": value})["out"],
              t["expected.out"], 2e-5)
    assert not sd.unused(), sd.unused()


def test_cross_modal_mixer(reference_dir):
    t, sd = load(reference_dir, "cross_modal_mixer")
    feat = t["input.feature"]
    n, c, h, w = feat.shape
    audio = np.ascontiguousarray(t["input.audio"][:, 0])                # [B,1,C] -> [B,C]
    gb = GraphBuilder("cross_modal_mixer")
    f = gb.input("feature", feat.shape)
    a = gb.input("audio", audio.shape)
    y = cross_modal_mixer(gb, sd, "head.fusion_block", f, a, n, c, h, w, gate_out="gate", out="out")
    gb.output(y, feat.shape)
    gb.output("gate", [n, c])
    out = run(gb, {"feature": feat, "audio": audio})
    check("cross_modal_mixer out", out["out"], t["expected.out"], 1e-5)
    check("cross_modal_mixer gate", out["gate"], t["expected.gate"], 1e-5)
    # The intended per-frame gate also holds for a single frame (the official
    # .squeeze() breaks there): frame 1 alone must give frame 1's result.
    gb = GraphBuilder("cross_modal_mixer_bt1")
    f = gb.input("feature", [1, c, h, w])
    a = gb.input("audio", [1, c])
    gb.output(cross_modal_mixer(gb, sd, "head.fusion_block", f, a, 1, c, h, w, out="out"), [1, c, h, w])
    out1 = run(gb, {"feature": feat[1:2], "audio": audio[1:2]})
    check("cross_modal_mixer BT=1 frame", out1["out"], t["expected.out"][1:2], 1e-5)
    assert not sd.unused(), sd.unused()
