"""avseg-train-veto (tools/train_default/veto.py): the in-graph veto against plain numpy.

numpy, onnx and ONNX Runtime only (the tagger fit, which needs PyTorch, is not run), so CI runs it.
"""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from scipy.ndimage import maximum_filter

from train_default import veto

N, K, D, COARSE, UP = 3, 6, 4, 5, 2  # frames, classes, embedding, coarse side, 2x upsamplings
SIDE = COARSE * 2 ** UP


def run(model: onnx.ModelProto, feeds: dict, outputs=None):
    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(outputs, feeds)


def tail_model(w, b, support, thresholds, ratio, radius, mode="kept", family=None):
    """Inputs (TPAVI logits, margin, coarse class map, embedding) -> (vetoed logits, the
    upsampled class map), through veto.veto_tail and a Resize chain like the two-stage head's."""
    inits, ups, at = [numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")], [], "coarse"
    for i in range(UP):
        ups.append(helper.make_node("Resize", [at, "", "scales"], [f"up{i}"], name=f"up{i}", mode="linear",
                                    coordinate_transformation_mode="half_pixel"))
        at = f"up{i}"
    tail, consts = veto.veto_tail("logits", "margin", at, ups, "embedding", w, b, support, thresholds, ratio, radius,
                                  (SIDE, SIDE), "out", mode, family)
    f = TensorProto.FLOAT
    g = helper.make_graph(ups + tail, "t",
                          [helper.make_tensor_value_info("logits", f, [N, 1, SIDE, SIDE]),
                           helper.make_tensor_value_info("margin", f, [N, 1, SIDE, SIDE]),
                           helper.make_tensor_value_info("coarse", f, [N, K, COARSE, COARSE]),
                           helper.make_tensor_value_info("embedding", f, [N, D])],
                          [helper.make_tensor_value_info("out", f, [N, 1, SIDE, SIDE]), helper.make_tensor_value_info(at, f, [N, K, SIDE, SIDE])],
                          inits + consts)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def margin(rng):
    """Background everywhere but a few objects (squares of 3-6 pixels), so that which pixels are
    near an object, and near which kind, differs across the frame."""
    m = np.full((N, 1, SIDE, SIDE), -8.0) + rng.standard_normal((N, 1, SIDE, SIDE))
    for i in range(N):
        for _ in range(3):
            y, x, s = rng.integers(0, SIDE - 6), rng.integers(0, SIDE - 6), rng.integers(3, 7)
            m[i, 0, y:y + s, x:x + s] = 4.0 + rng.standard_normal((s, s))
    return m.astype(np.float32)


def inputs(seed):
    rng = np.random.default_rng(seed)
    return {
        "logits": (rng.standard_normal((N, 1, SIDE, SIDE)) * 4).astype(np.float32),
        "margin": margin(rng),
        "coarse": (rng.standard_normal((N, K, COARSE, COARSE)) * 4).astype(np.float32),
        "embedding": rng.standard_normal((N, D)).astype(np.float32),
    }


def window(x, radius):
    return maximum_filter(x.astype(np.uint8), size=(1, 2 * radius + 1, 2 * radius + 1), mode="constant") > 0


def reference(feeds, cls, w, b, support, thresholds, ratio, radius, mode="kept", family=None):
    tags = veto.softmax(feeds["embedding"].astype(np.float64) @ w + b)
    heard = np.minimum((tags >= thresholds[None]).astype(np.float64) @ support, 1)
    kept = veto.kept_reference(feeds["margin"].astype(np.float64), cls.astype(np.float64), heard, ratio)
    near = window(kept, radius)
    if mode in ("silent", "family"):
        # The pixel's two-stage softmax, directly: a silent object's when the unheard classes
        # (under `family`, those of a heard sound's family) outweigh both the background and the
        # heard classes.
        logits = np.concatenate([np.zeros_like(feeds["margin"]), feeds["margin"] + cls], 1).astype(np.float64)
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        h = (p[:, 1:] * heard[:, :, None, None]).sum(1)
        candidates = np.ones_like(heard) if mode == "silent" else np.minimum((tags >= thresholds[None]) @ family, 1)
        u = (p[:, 1:] * np.clip(candidates - heard, 0, 1)[:, :, None, None]).sum(1)
        near = near | ~window((u > p[:, 0]) & (u > h), radius)
    lt = feeds["logits"]
    return np.where(near[:, None], lt, np.minimum(lt, -veto.VETO / 2)), kept, heard


def tagger(seed):
    rng = np.random.default_rng(seed)
    # Audio labels: the K classes' sounds, one sound with no node, and silence.
    w = (rng.standard_normal((D, K + 2)) * 2).astype(np.float32)
    b = rng.standard_normal(K + 2).astype(np.float32)
    support = np.zeros((K + 2, K), np.float32)
    support[np.arange(K), np.arange(K)] = 1
    thresholds = np.full(K + 2, 0.1, np.float32)
    thresholds[K:] = np.inf
    return w, b, support, thresholds


def families():
    """Classes 0-2 one family, 3-5 another; the no-node sound and silence have none."""
    f = np.zeros((K + 2, K), np.float32)
    f[:3, :3] = 1
    f[3:K, 3:K] = 1
    return f


@pytest.mark.parametrize("mode", ["kept", "silent", "family"])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_the_veto_graph_is_the_two_stage_rule_and_a_window(seed, mode):
    w, b, support, thresholds = tagger(seed)
    feeds = inputs(seed)
    fam = families() if mode == "family" else None
    out, cls = run(tail_model(w, b, support, thresholds, 0.05, 2, mode, fam), feeds)
    want, kept, heard = reference(feeds, cls, w, b, support, thresholds, 0.05, 2, mode, fam)
    # The inputs reach every case: heard and unheard classes, kept and dropped pixels, vetoed mask.
    assert 0 < heard.sum() < heard.size
    assert 0 < kept.mean() < 1
    assert ((feeds["logits"] > 0) & (want <= -veto.VETO / 2)).any()
    assert (want > 0).any()
    assert np.array_equal(out > 0, want > 0)
    np.testing.assert_allclose(out, want, rtol=0, atol=1e-4)


def test_under_the_silent_veto_a_pixel_near_no_silent_object_keeps_its_logit():
    w, b, support, thresholds = tagger(6)
    feeds = inputs(6)
    feeds["margin"][:] = -30.0  # the two-stage head sees only background: nothing is silent
    out, _ = run(tail_model(w, b, support, thresholds, 0.05, 2, "silent"), feeds)
    assert np.array_equal(out, feeds["logits"])


def test_a_silent_second_vetoes_every_pixel():
    w, b, support, thresholds = tagger(5)
    b[-1] = 50.0  # silence takes all the probability
    feeds = inputs(5)
    out, _ = run(tail_model(w, b, support, thresholds, 0.05, 2), feeds)
    assert (out <= -veto.VETO / 2 + 1e-3).all()


def test_support_flows_up_the_tree_and_only_independent_parents_are_written():
    tree = {"default_threshold": 0.2, "parent_rule": "independent", "nodes": [
        {"name": "animals"}, {"name": "dogs", "parent": "animals"},
        {"name": "bark", "parent": "dogs", "visual": ["dog"], "threshold": 0.3},
        {"name": "meow", "parent": "animals", "visual": ["cat"]}]}
    s, thr = veto.support_matrix(tree, ["bark", "meow", "dogs", "silence"], ["background", "cat", "dog"])
    assert s.tolist() == [[0, 1], [1, 0], [0, 1], [0, 0]]
    assert thr[0] == np.float32(0.3) and thr[1] == np.float32(0.2) and np.isinf(thr[3])
    with pytest.raises(SystemExit, match="needs_parent"):
        veto.support_matrix(dict(tree, parent_rule="needs_parent"), ["bark"], ["background", "dog"])
    with pytest.raises(SystemExit, match="horse"):
        veto.support_matrix({"nodes": [{"name": "neigh", "visual": ["horse"]}]}, ["neigh"], ["background", "dog"])


def test_a_sounds_family_is_its_ancestor_at_the_depth_or_its_parent():
    tree = {"nodes": [
        {"name": "animals"}, {"name": "animals/birds", "parent": "animals"},
        {"name": "animals/mammals", "parent": "animals"},
        {"name": "animals/mammals/dogs", "parent": "animals/mammals"},
        {"name": "lark", "parent": "animals/birds", "visual": ["lark"]},
        {"name": "crow", "parent": "animals/birds", "visual": ["crow"]},
        {"name": "bark", "parent": "animals/mammals/dogs", "visual": ["dog"]},
        {"name": "moo", "parent": "animals/mammals", "visual": ["cow"]},
        {"name": "bell", "visual": ["bell"]}]}
    visual = ["background", "lark", "crow", "dog", "cow", "bell"]
    audio = ["lark", "bark", "moo", "bell", "silence"]
    top = veto.family_matrix(tree, audio, visual, 0)
    assert top.tolist() == [[1, 1, 1, 1, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 0], [0, 0, 0, 0, 1], [0, 0, 0, 0, 0]]
    one = veto.family_matrix(tree, audio, visual, 1)
    assert one.tolist() == [[1, 1, 0, 0, 0], [0, 0, 1, 1, 0], [0, 0, 1, 1, 0], [0, 0, 0, 0, 1], [0, 0, 0, 0, 0]]
    parent = veto.family_matrix(tree, audio, visual, 9)
    assert parent.tolist()[1] == [0, 0, 1, 0, 0] and parent.tolist()[2] == [0, 0, 1, 1, 0]


def conv(name, x, weight, out):
    return helper.make_node("Conv", [x, weight], [out], name=name, kernel_shape=[1, 1])


def test_merge_shares_equal_tensors_and_nodes_only():
    rng = np.random.default_rng(0)
    wa, wb = rng.standard_normal((2, 2, 1, 1)).astype(np.float32), rng.standard_normal((2, 2, 1, 1)).astype(np.float32)
    d = helper.make_graph([conv("c1", "x", "w1", "y1"), helper.make_node("Relu", ["y1"], ["r1"], name="r1"),
                           conv("c2", "r1", "w2", "out")], "d", [], [],
                          [numpy_helper.from_array(wa, "w1"), numpy_helper.from_array(wb, "w2")])
    # B: the same first conv and relu (its weight under another name), then its own conv named as D's.
    b = helper.make_graph([conv("e1", "x", "v1", "z1"), helper.make_node("Relu", ["z1"], ["s1"], name="s1"),
                           conv("c2", "s1", "w2", "out")], "b", [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)], [],
                          [numpy_helper.from_array(wa, "v1"), numpy_helper.from_array(wb + 1, "w2")])
    nodes, inits, names, counts = veto.merge(d, b)
    assert counts == {"shared_tensors": 1, "shared_nodes": 2, "new_nodes": 1, "new_tensors": 1}
    assert names["s1"] == "r1" and names["out"] == "veto.out"
    assert [n.input[1] for n in nodes] == ["veto.w2"]
    assert np.array_equal(numpy_helper.to_array(inits[0]), wb + 1)


def test_strip_gives_back_the_bundled_defaults_tpavi_graph():
    """The bundled default (stage 11) carries the veto; without it, its graph computes the TPAVI
    logits that the veto caps (what avseg-from-package turns back into a checkpoint)."""
    import json
    from pathlib import Path
    pkg = Path(__file__).resolve().parents[2] / "models/default"
    if "veto" not in json.loads((pkg / "train_record.json").read_text()):
        pytest.skip("the bundled default has no veto")
    full = onnx.load(str(pkg / "segmenter.onnx"))
    bare = veto.strip(full)
    assert not any(n.name.startswith("veto.") for n in bare.graph.node)
    assert len(bare.graph.node) < len(full.graph.node)
    rng = np.random.default_rng(0)
    feed = {"frames": rng.standard_normal((2, 3, 160, 160)).astype(np.float32),
            "audio_embedding": np.abs(rng.standard_normal((2, 128))).astype(np.float32)}
    (capped,), (plain,) = run(full, feed), run(bare, feed)
    kept = capped > -veto.VETO / 2 + 1
    np.testing.assert_allclose(capped[kept], plain[kept], rtol=0, atol=1e-5)
    assert np.all(capped <= plain + 1e-5)
