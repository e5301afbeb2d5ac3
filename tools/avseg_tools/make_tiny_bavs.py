#!/usr/bin/env python3
"""Generate `models/tiny-bavs`: a two-stage (BAVS-style) package whose two graphs are set by hand,
so that tests can make inputs with a known answer.

    avseg-make-tiny-bavs --out models/tiny-bavs

* **Segmenter** (frames alone -> per-class logits, 64x64, frames in [0, 1]: mean 0, std 1). One
  1x1 convolution: a pure red pixel is a `dog`, blue a `cat`, green a `car`; grey, black and white
  are `background`. Class logit = 10 * (own channel - the other two); background = 3.
* **Tagger** (log-mel `[N, 1, 96, 64]` -> `[N, 4]` probabilities). The log-mel averaged over time,
  then per label a contrast of mel bands and a sigmoid: `bark` hears a tone near 500 Hz (bands
  6-13), `meow` near 1.5 kHz (bands 23-30), `engine` near 4 kHz (bands 45-52), and `wind` a loud
  broadband sound (every band raised). Silence scores below 0.02 everywhere.
* **Label tree**: animal {bark -> dog, meow -> cat}, vehicle {engine -> car}; `wind` supports
  nothing (a sound with no visible source).

The tags of the test signals are checked here against the reference log-mel
(`avseg_tools.logmel_ref`) before anything is written. Deterministic: the same bytes every run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from avseg_export.package import dumps_manifest, record_file
from avseg_tools.logmel_ref import RATE, examples

OPSET = 17
VISUAL = ["background", "dog", "cat", "car"]
PALETTE = [[0, 0, 0], [220, 60, 60], [60, 60, 220], [60, 200, 60]]
AUDIO = ["bark", "meow", "engine", "wind"]
BANDS = {"bark": range(6, 14), "meow": range(23, 31), "engine": range(45, 53)}
SIZE = 64

TREE = {
    "format": "avseg-label-tree",
    "version": 1,
    "default_threshold": 0.5,
    "parent_rule": "independent",
    "nodes": [
        {"name": "animal"},
        {"name": "bark", "parent": "animal", "visual": ["dog"]},
        {"name": "meow", "parent": "animal", "visual": ["cat"]},
        {"name": "vehicle"},
        {"name": "engine", "parent": "vehicle", "visual": ["car"]},
        {"name": "wind"},
    ],
}


def segmenter() -> onnx.ModelProto:
    w = np.zeros((len(VISUAL), 3, 1, 1), np.float32)
    b = np.zeros(len(VISUAL), np.float32)
    b[0] = 3.0
    for cls, ch in (("dog", 0), ("car", 1), ("cat", 2)):
        row = np.full(3, -10.0, np.float32)
        row[ch] = 10.0
        w[VISUAL.index(cls), :, 0, 0] = row
    graph = helper.make_graph(
        [helper.make_node("Conv", ["frames", "seg.w", "seg.b"], ["class_logits"], name="seg.conv")],
        "tiny_bavs_segmenter",
        [helper.make_tensor_value_info("frames", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("class_logits", TensorProto.FLOAT, ["N", len(VISUAL), SIZE, SIZE])],
        [numpy_helper.from_array(w, "seg.w"), numpy_helper.from_array(b, "seg.b")],
    )
    return _model(graph)


def tagger_weights():
    """`[64, A]` band weights and `[A]` biases on the time-averaged log-mel."""
    w = np.zeros((64, len(AUDIO)), np.float32)
    b = np.zeros(len(AUDIO), np.float32)
    for a, name in enumerate(AUDIO):
        if name in BANDS:
            inside = np.zeros(64, bool)
            inside[list(BANDS[name])] = True
            # 2 * (mean inside - mean outside - 2): a tone in the bands lifts them far above the rest.
            w[inside, a] = 2.0 / inside.sum()
            w[~inside, a] = -2.0 / (~inside).sum()
            b[a] = -4.0
        else:
            # Loudness over every band: silence and tones sit near log(0.01) = -4.6 in most bands.
            w[:, a] = 2.0 / 64
            b[a] = 2.0
    return w, b


def tagger() -> onnx.ModelProto:
    w, b = tagger_weights()
    nodes = [
        helper.make_node("ReduceMean", ["audio_logmel"], ["tag.mean"], axes=[1, 2], keepdims=1, name="tag.mean"),
        helper.make_node("Flatten", ["tag.mean"], ["tag.flat"], axis=1, name="tag.flat"),
        helper.make_node("Gemm", ["tag.flat", "tag.w", "tag.b"], ["tag.logits"], name="tag.gemm"),
        helper.make_node("Sigmoid", ["tag.logits"], ["tag_scores"], name="tag.sigmoid"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_bavs_tagger",
        [helper.make_tensor_value_info("audio_logmel", TensorProto.FLOAT, ["N", 1, 96, 64])],
        [helper.make_tensor_value_info("tag_scores", TensorProto.FLOAT, ["N", len(AUDIO)])],
        [numpy_helper.from_array(w, "tag.w"), numpy_helper.from_array(b, "tag.b")],
    )
    return _model(graph)


def _model(graph) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="avseg-make-tiny-bavs")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def tags_of(x16: np.ndarray) -> np.ndarray:
    """The tagger's scores for 16 kHz samples, one row per 0.96 s patch (numpy, as the graph)."""
    w, b = tagger_weights()
    mean = examples(x16.astype(np.float64)).mean(axis=(1, 2))
    return 1.0 / (1.0 + np.exp(-(mean @ w + b)))


def check_tags():
    """The signals the Rust tests make (tests/bavs.rs): each must light its own tags only."""
    t = np.arange(RATE * 2) / RATE
    rng = np.random.default_rng(0)
    tone = lambda hz: 0.3 * np.sin(2 * np.pi * hz * t)  # noqa: E731
    cases = {
        "silence": (np.zeros_like(t), set()),
        "500 Hz": (tone(500), {"bark"}),
        "1500 Hz": (tone(1500), {"meow"}),
        "4000 Hz": (tone(4000), {"engine"}),
        "500 + 1500 Hz": (tone(500) + tone(1500), {"bark", "meow"}),
        "noise": (0.5 * (rng.random(t.size) - 0.5), {"wind"}),
    }
    for name, (x, want) in cases.items():
        scores = tags_of(x)[0]
        heard = {AUDIO[i] for i, s in enumerate(scores) if s >= 0.5}
        if heard != want or not all((s > 0.9) if AUDIO[i] in want else (s < 0.1) for i, s in enumerate(scores)):
            raise SystemExit(f"tagger check failed on {name}: " + ", ".join(f"{a} {s:.3f}" for a, s in zip(AUDIO, scores)))
        print(f"  {name:14s} " + ", ".join(f"{a} {s:.3f}" for a, s in zip(AUDIO, scores)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[2] / "models" / "tiny-bavs")
    args = ap.parse_args()
    check_tags()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": "avseg-model",
        "schema_version": 1,
        "name": "tiny-bavs",
        "description": "Two-stage (BAVS-style) test package with hand-set weights: colour classes and tone tags; "
                       "for tests, not for real scenes",
        "family": "bavs",
        "frames_per_clip": 5,
        "vision": {"width": SIZE, "height": SIZE, "resize": "bilinear_opencv", "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]},
        "audio": {"frontend": "vggish_logmel", "patch_padding": "repeat_last", "embedding_dim": len(AUDIO)},
        "output": {"kind": "semantic", "labels": VISUAL, "palette": PALETTE},
        "graphs": {
            "audio_tagger": {"file": "tagger.onnx", "inputs": ["audio_logmel"], "outputs": ["tag_scores"]},
            "segmenter": {"file": "segmenter.onnx", "inputs": ["frames"], "outputs": ["class_logits"]},
        },
        "provenance": {
            "source": "weights set by hand in tools/avseg_tools/make_tiny_bavs.py",
            "licence": "MIT OR Apache-2.0",
            "created_by": "avseg-make-tiny-bavs",
            "trained": False,
            "parameters": 0,
            "metrics": {},
        },
        "label_tree": {"file": "tree.json", "audio_labels": "audio_labels.txt"},
    }
    params = 0
    for role, model in (("audio_tagger", tagger()), ("segmenter", segmenter())):
        data = model.SerializeToString()
        (out / meta["graphs"][role]["file"]).write_bytes(data)
        record_file(meta["graphs"][role], data)
        params += sum(int(np.prod(i.dims)) for i in model.graph.initializer)
    meta["provenance"]["parameters"] = params
    (out / "tree.json").write_text(json.dumps(TREE, indent=2) + "\n")
    (out / "audio_labels.txt").write_text("".join(f"{a}\n" for a in AUDIO))
    (out / "avseg.json").write_text(dumps_manifest(meta))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
