#!/usr/bin/env python3
"""avseg default-model or two-stage package -> training checkpoint, so a shipped model can be
fine-tuned.

    avseg-from-package --package models/default --out RUN/checkpoint.safetensors
    avseg-from-package --package models/bavs-avsreg --out RUN/checkpoint.safetensors

`train.py --init-from` reads train.py checkpoints, and `semantic.py --init-from` the segmenter
checkpoints of a two-stage (`bavs`) package (the same key layout without TPAVI, plus the factored
class head `cls.*`, which the exporter stores unchanged). The package holds ONNX graphs in which the
exporter has folded or merged some weights. Each such rewrite is inverted into weights that
compute the same function in `model.TPAVIHead` / `model.VGGishLite`:

- ASPP: every branch bias was summed into branch 0's bias, and branches whose dilation reaches
  past the whole map were merged into one 1x1 centre tap. The total bias goes back on branch 0,
  the merged centre tap on the first merged branch (its off-centre taps and the other merged
  branches are zero: they only ever multiplied zero padding).
- TPAVI: theta is stored transposed; g's bias was multiplied by h*w; W_z's BatchNorm was folded
  into the 1x1 conv, so the conv gets the folded weights and the BatchNorm (fixed statistics in
  training, see model.TPAVI) becomes the identity.

The result is checked before it is written: the segmenter and audio encoder graphs are rebuilt
from it by the same exporter and must reproduce the package's ONNX outputs on random inputs.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from train_default.model import ASPP_DILATIONS

BN_EPS = 1e-5  # nn.BatchNorm3d's default, the W_z BatchNorm of model.TPAVI
TOLERANCE = 1e-4


def onnx_initializers(path: Path) -> dict[str, np.ndarray]:
    import onnx
    from onnx import numpy_helper
    try:
        model = onnx.load(str(path))
    except Exception as e:  # noqa: BLE001 - any parse failure is a corrupt package
        raise SystemExit(f"{path}: not a readable ONNX model ({e})")
    return {i.name: numpy_helper.to_array(i).astype(np.float32) for i in model.graph.initializer}


def stage_sizes(size: int) -> list[int]:
    """Feature-map side of each TPAVI stage (strides 4, 8, 16, 32) for a square input."""
    return [size // s for s in (4, 8, 16, 32)]


def invert_segmenter(init: dict[str, np.ndarray], size: int, path: Path, tpavi: bool = True) -> dict[str, np.ndarray]:
    """The segmenter's training weights from its ONNX initializers. `tpavi`: a default model's
    segmenter (TPAVI blocks required); False for a two-stage package's, which has none."""
    out: dict[str, np.ndarray] = {}

    def take(name):
        if name not in init:
            raise SystemExit(f"{path}: initializer {name!r} missing: not an avseg default-model segmenter")
        return init[name]

    for stage, side in enumerate(stage_sizes(size), start=1):
        # ASPP branches as the exporter saw them at this map size.
        full = [i for i, d in enumerate(ASPP_DILATIONS) if d < side]
        centre = [i for i, d in enumerate(ASPP_DILATIONS) if d >= side]
        p = f"conv{stage}.conv2d_list"
        merged = f"{p}.{'+'.join(map(str, centre))}.centre"
        # The exporter put the summed bias on its first term: the first full branch, else the merge.
        bias = take(f"{p}.{full[0]}.bias" if full else f"{merged}.bias")
        for i in full:
            out[f"{p}.{i}.weight"] = take(f"{p}.{i}.weight")
        if centre:
            wc = take(f"{merged}.weight")                     # [C_out, C_in, 1, 1]
            for j, i in enumerate(centre):
                w = np.zeros((*wc.shape[:2], 3, 3), np.float32)
                if j == 0:
                    w[:, :, 1, 1] = wc[:, :, 0, 0]
                out[f"{p}.{i}.weight"] = w
        c_out = bias.shape[0]
        for i in range(len(ASPP_DILATIONS)):
            out[f"{p}.{i}.bias"] = bias if i == 0 else np.zeros(c_out, np.float32)

        if not tpavi:
            continue
        b = f"tpavi_b{stage}"
        th_w = take(f"{b}.theta.weight_t").T                 # [C', C]
        cp, c = th_w.shape
        out[f"{b}.align_channel.weight"] = take(f"{b}.align_channel.weight")
        if f"{b}.align_channel.bias" in init:
            out[f"{b}.align_channel.bias"] = init[f"{b}.align_channel.bias"]
        out[f"{b}.theta.weight"] = th_w.reshape(cp, c, 1, 1, 1)
        out[f"{b}.theta.bias"] = take(f"{b}.theta.bias")
        out[f"{b}.phi.weight"] = take(f"{b}.phi.weight").reshape(cp, c, 1, 1, 1)
        out[f"{b}.phi.bias"] = take(f"{b}.phi.bias")
        out[f"{b}.g.weight"] = take(f"{b}.g.weight").reshape(cp, c, 1, 1, 1)
        out[f"{b}.g.bias"] = (take(f"{b}.g.bias").astype(np.float64) / (side * side)).astype(np.float32)
        out[f"{b}.W_z.0.weight"] = take(f"{b}.W_z.weight_t_bnfolded").T.reshape(c, cp, 1, 1, 1)
        out[f"{b}.W_z.0.bias"] = take(f"{b}.W_z.bias_bnfolded")
        out[f"{b}.W_z.1.weight"] = np.full(c, np.sqrt(1.0 + BN_EPS), np.float32)
        out[f"{b}.W_z.1.bias"] = np.zeros(c, np.float32)
        out[f"{b}.W_z.1.running_mean"] = np.zeros(c, np.float32)
        out[f"{b}.W_z.1.running_var"] = np.ones(c, np.float32)
        out[f"{b}.norm_layer.weight"] = take(f"{b}.norm_layer.weight")
        out[f"{b}.norm_layer.bias"] = take(f"{b}.norm_layer.bias")
    prefixes = ("path1.", "path2.", "path3.", "path4.", "output_conv.", "cls.")
    for k, v in init.items():
        if k.startswith(prefixes):
            out[k] = v
    if "presence.threshold" in init:
        # A presence gate (avseg-train-gate): the visual classifier is stored as a 1x1 convolution.
        w = take("presence.visual.weight")
        out["presence.visual.weight"] = w.reshape(w.shape[0], w.shape[1])
        for key in ("presence.visual.bias", "presence.audio.weight", "presence.audio.bias", "presence.threshold"):
            out[key] = take(key)
    return out


def invert_audio(init: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"vggish." + k: v for k, v in init.items() if k.startswith(("features.", "embeddings."))}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--package", type=Path, required=True, help="an avseg-trained package: a default model (TPAVI) or a two-stage (bavs) package")
    ap.add_argument("--out", type=Path, required=True, help="checkpoint.safetensors to write")
    args = ap.parse_args()

    manifest_path, record_path = args.package / "avseg.json", args.package / "train_record.json"
    try:
        family = json.loads(manifest_path.read_text())["family"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SystemExit(f"{manifest_path}: not a readable avseg manifest with a family ({e})")
    if family not in ("tpavi", "bavs"):
        raise SystemExit(f"{manifest_path}: family {family!r}: only avseg's own TPAVI default models and two-stage "
                         "(bavs) packages can be turned back into a training checkpoint")
    if not record_path.is_file():
        raise SystemExit(f"{record_path}: missing: only avseg's own trained packages (with their training "
                         "record) can be turned back into a training checkpoint")
    try:
        record = json.loads(record_path.read_text())
        # A two-stage package's record holds the segmenter's training record under "segmenter".
        targs = record["segmenter"]["args"] if family == "bavs" else record["args"]
        size, group = int(targs["size"]), int(targs.get("tpavi_group", 5))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise SystemExit(f"{record_path}: not a training record of an avseg package ({e})")

    from avseg_export.ort import session
    from avseg_export.weights import write_safetensors
    from train_default.train import lite0_state

    seg_path = args.package / "segmenter.onnx"
    if "veto" in record:
        # avseg-train-veto's graph (stage 11) is the TPAVI graph it was built from plus a veto that
        # trains nothing: the checkpoint is that TPAVI model's, checked against the graph without
        # the veto. Fine-tune it, export it and build the veto again (docs/training.md).
        import onnx

        from train_default.veto import strip
        try:
            stripped = strip(onnx.load(str(seg_path)))
        except Exception as e:  # noqa: BLE001 - onnx raises its own types
            raise SystemExit(f"{seg_path}: its record says it holds a sound-source veto, but the veto cannot be taken out ({e})")
        tmp = tempfile.TemporaryDirectory()
        seg_path = Path(tmp.name) / "segmenter-without-veto.onnx"
        onnx.save(stripped, str(seg_path))
        print(f"{args.package}: the sound-source veto is left out; the checkpoint is the model it was built on "
              "(avseg-train-veto builds it again)")
    tensors = invert_segmenter(onnx_initializers(seg_path), size, seg_path, tpavi=family == "tpavi")
    _, lite0 = lite0_state()
    for k, v in lite0.items():
        tensors["encoder." + k] = v.float().numpy()

    # Round trip: the exporter must rebuild graphs that compute what the package computes.
    rng = np.random.default_rng(0)
    frames = rng.standard_normal((5, 3, size, size)).astype(np.float32)
    if family == "bavs":
        from avseg_export.semantic import build_semantic
        try:
            seg_model, _ = build_semantic(tensors, size, size)
        except (KeyError, ValueError) as e:
            raise SystemExit(f"{args.package}: its weights do not rebuild a two-stage segmenter graph ({e})")
        checks = (("segmenter", seg_model, seg_path, {"frames": frames}),)
    else:
        from avseg_export.tpavi import build_tpavi
        from avseg_export.vggish import build_vggish
        aud_path = args.package / "audio_encoder.onnx"
        tensors.update(invert_audio(onnx_initializers(aud_path)))
        audio_dim = tensors["tpavi_b1.align_channel.weight"].shape[1]
        emb = np.abs(rng.standard_normal((5, audio_dim))).astype(np.float32)
        logmel = rng.standard_normal((5, 1, 96, 64)).astype(np.float32)
        try:
            seg_model, _ = build_tpavi({k: v for k, v in tensors.items() if not k.startswith("vggish.")},
                                       frames=5, height=size, width=size, tpavi_group=group)
            aud_model, _ = build_vggish({k[len("vggish."):]: v for k, v in tensors.items() if k.startswith("vggish.")})
        except (KeyError, ValueError) as e:
            raise SystemExit(f"{args.package}: its weights do not rebuild a default-model graph ({e})")
        checks = (("segmenter", seg_model, seg_path, {"frames": frames, "audio_embedding": emb}),
                  ("audio", aud_model, aud_path, {"audio_logmel": logmel}))
    worst = 0.0
    for name, rebuilt, path, feed in checks:
        try:
            ya, yb = session(rebuilt).run(None, feed)[0], session(path).run(None, feed)[0]
        except Exception as e:  # noqa: BLE001 - ONNX Runtime raises its own types
            raise SystemExit(f"{path}: does not run as a {name} graph ({e})")
        diff = float(np.max(np.abs(ya - yb)))
        print(f"{name}: rebuilt vs package max abs diff {diff:.2e}")
        worst = max(worst, diff)
    if not worst <= TOLERANCE:
        raise SystemExit(f"round trip differs by {worst:.2e} (> {TOLERANCE}): checkpoint not written")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_safetensors(args.out, tensors, {"format": f"avseg {family} checkpoint (from package "
                                                   f"{args.package.name})"})
    print(f"wrote {args.out} ({len(tensors)} tensors)")


if __name__ == "__main__":
    main()
