"""Open a TPAVI segmenter's frame axis, so one graph file serves a window of T frames and a single frame.

    python -m avseg_export.batch PACKAGE_DIR [--check]

`build_tpavi` writes every dimension static (tract plans better when it knows them), the frame
count T included: the inputs are `[T, 3, H, W]` and `[T, D]`, and the TPAVI reshapes carry T (or
T / group) as their leading size. When the attention group is 1 the frames never meet inside the
graph, so the same weights can segment one frame at a time; the streaming session does that for
per-frame packages, so a result costs one frame of compute instead of a window's.

This rewrite makes the frame axis symbolic (`N`) in the graph's inputs and outputs and replaces the
leading size of each TPAVI reshape by -1, which ONNX and tract resolve from the input. Nothing else
changes: with `N = T` the graph computes exactly what it did. It refuses graphs whose group is not
1, because a window of fewer than `group` frames is not what such a model was trained on.

The manifest's `tpavi_group` (1) is written, and the file's size and checksum recorded again.
`--check` runs the old and the new graph under ONNX Runtime on random inputs: a window, and each
frame alone against its row of the old window, must agree to 1e-5 of the largest logit.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from avseg_export.package import dumps_manifest, record_file

RESHAPE_SUFFIXES = (".phi_g", ".g_g", ".theta_g", ".y")


def open_frame_axis(model: onnx.ModelProto, frames: int) -> onnx.ModelProto:
    """The rewritten copy of a group-1 TPAVI segmenter whose window is `frames` frames."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    inits = {t.name: t for t in g.initializer}
    changed = 0
    for node in g.node:
        if node.op_type != "Reshape":
            continue
        if not node.output[0].endswith(RESHAPE_SUFFIXES):
            raise ValueError(f"unexpected Reshape {node.name or node.output[0]}: not a TPAVI block reshape")
        shape_t = inits.get(node.input[1])
        if shape_t is None:
            raise ValueError(f"Reshape {node.output[0]}: its shape is not an initializer")
        shape = numpy_helper.to_array(shape_t).copy()
        if shape[0] == -1:
            continue  # shared with a reshape already rewritten
        if shape[0] != frames:
            raise ValueError(f"Reshape {node.output[0]} leads with {shape[0]}, not T = {frames}: "
                             "only graphs with an attention group of 1 can be opened")
        shape[0] = -1
        shape_t.CopyFrom(numpy_helper.from_array(shape.astype(np.int64), shape_t.name))
        changed += 1
    if changed == 0:
        # A group of all T frames needs no reshape (and may not be opened); not TPAVI, neither.
        raise ValueError("no per-group TPAVI reshape found: only graphs with an attention group of 1 can be opened")
    for v in list(g.input) + list(g.output):
        d0 = v.type.tensor_type.shape.dim[0]
        if d0.dim_value != frames:
            raise ValueError(f"{v.name} leads with {d0.dim_value or d0.dim_param}, not T = {frames}")
        d0.Clear()
        d0.dim_param = "N"
    del g.value_info[:]  # shapes inside were inferred for N = T
    onnx.checker.check_model(m)
    return m


def check(old: onnx.ModelProto, new: onnx.ModelProto, frames: int, height: int, width: int, dim: int) -> float:
    import onnxruntime as ort

    def run(model, x, a):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 2
        s = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        return s.run(None, {"frames": x, "audio_embedding": a})[0]

    rng = np.random.default_rng(0)
    x = rng.standard_normal((frames, 3, height, width)).astype(np.float32)
    a = rng.standard_normal((frames, dim)).astype(np.float32)
    window_old, window_new = run(old, x, a), run(new, x, a)
    scale = float(np.abs(window_old).max())
    # Not bit-identical under ONNX Runtime: with a symbolic axis it fuses and orders some sums
    # differently. tract resolves the axis before planning (avseg's tests compare its windows).
    d_window = float(np.abs(window_old - window_new).max())
    if d_window > 1e-5 * scale:
        raise SystemExit(f"a window differs after the rewrite: max |diff| {d_window} (largest logit {scale})")
    worst = d_window
    for i in range(frames):
        one = run(new, x[i:i + 1], a[i:i + 1])
        worst = max(worst, float(np.abs(one[0] - window_old[i]).max()))
    if worst > 1e-5 * scale:
        raise SystemExit(f"a frame alone differs from its row of the window: {worst} (largest logit {scale})")
    return worst


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("package", type=Path)
    ap.add_argument("--check", action="store_true", help="compare old and new under ONNX Runtime")
    args = ap.parse_args()
    meta = json.loads((args.package / "avseg.json").read_text())
    if meta["family"] != "tpavi":
        raise SystemExit(f"{args.package}: family {meta['family']!r}; only TPAVI segmenters are rewritten")
    if meta.get("tpavi_group", 1) != 1:
        raise SystemExit(f"{args.package}: tpavi_group {meta['tpavi_group']}; only group 1 is per frame")
    seg = meta["graphs"]["segmenter"]
    path = args.package / seg["file"]
    old = onnx.load(path)
    t = int(meta["frames_per_clip"])
    new = open_frame_axis(old, t)
    if args.check:
        v = meta["vision"]
        worst = check(old, new, t, v["height"], v["width"], meta["audio"]["embedding_dim"])
        print(f"new vs old graph, windows and single frames: max |diff| {worst:.3g}")
    data = new.SerializeToString()
    path.write_bytes(data)
    record_file(seg, data)
    # The group goes right after frames_per_clip, where a reader looks for it.
    out = {}
    for k, v in meta.items():
        if k != "tpavi_group":
            out[k] = v
        if k == "frames_per_clip":
            out["tpavi_group"] = 1
    (args.package / "avseg.json").write_text(dumps_manifest(out))
    print(f"{path}: frame axis open ({len(data)} bytes, {seg['checksum']})")


if __name__ == "__main__":
    main()
