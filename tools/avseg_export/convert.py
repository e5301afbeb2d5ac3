"""Convert an official AVS checkpoint into an avseg model package.

    python -m avseg_export.convert --family tpavi-r50 --checkpoint tpavi.pth \\
        --vggish vggish-10086976.pth --out models/tpavi-r50 [--precision f16]

(`avseg convert` runs exactly this with the repository's venv.) Checkpoints are
read without torch (`checkpoint.py`). Every family is one `FamilySpec` row in
`FAMILIES`: the keys it must contain, what it writes into the manifest, and the
builder that turns its state dict into the segmenter graph. Builders are imported
only when their family is converted, so a missing builder is an error for that
family alone.

Builder contract (what a new family's builder must satisfy):
    builder(state_dict: weights.StateDict, frames: int, height: int, width: int)
        -> (onnx.ModelProto, info: dict with at least "parameters")
    The graph takes `frames` [T,3,H,W] f32 and `audio_embedding` [T,128] f32 (the
    post-ReLU VGGish embedding) and returns `mask_logits` [T,K,H,W], K = 1 (binary)
    or 71 (AVSS). All shapes static. It receives the checkpoint's keys exactly as
    saved (no `module.`; for AVSegFormer without the `vggish.*` keys, which become the
    audio encoder), raises KeyError/ValueError naming the key on a missing or
    mis-shaped weight, and should refuse unconsumed keys (StateDict.unused()).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .checkpoint import CheckpointError, load_checkpoint
from .labels import AVSS_LABELS, avss_output
from .package import manifest, write_package
from .weights import StateDict

CONVERTER_VERSION = "1"
AUDIO_DIM = 128
F16_MAX = 65504.0
# Below this many elements an initializer stays f32: it saves nothing worth the precision.
F16_MIN_ELEMENTS = 256


class ConvertError(Exception):
    """A conversion problem; the message names the file and key and is shown as-is."""


# ---------------------------------------------------------------------------
# Family table
# ---------------------------------------------------------------------------

def _lazy(module: str, name: str) -> Callable[[], Callable]:
    def load():
        mod = importlib.import_module(f"{__package__}.{module}")
        return getattr(mod, name)
    return load


def _tpavi_builder(sd, frames, height, width, **options):
    return _lazy("tpavi", "build_tpavi")()(sd, frames=frames, height=height, width=width, **options)


def _avsegformer_builder(sd, frames, height, width, **options):
    return _lazy("avsegformer", "build_avsegformer")()(sd, frames, height, width, **options)


R50_LAYERS = (("layer1", 3), ("layer2", 4), ("layer3_1", 6), ("layer4_1", 3))
BN = ("weight", "bias", "running_mean", "running_var")


def resnet50_keys(prefix: str) -> list[str]:
    """Live ResNet-50 keys of branch 1 (docs/spec/tpavi.md §6.10 grammar), without num_batches_tracked."""
    keys = [f"{prefix}conv1.weight"] + [f"{prefix}bn1.{b}" for b in BN]
    for layer, n in R50_LAYERS:
        for i in range(n):
            p = f"{prefix}{layer}.{i}."
            for j in (1, 2, 3):
                keys.append(f"{p}conv{j}.weight")
                keys += [f"{p}bn{j}.{b}" for b in BN]
            if i == 0:
                keys.append(f"{p}downsample.0.weight")
                keys += [f"{p}downsample.1.{b}" for b in BN]
    return keys


def tpavi_decoder_keys(avss: bool) -> list[str]:
    """ASPP, TPAVI blocks, decoder paths and head (docs/spec/tpavi.md §6.10), dead path4.resConfUnit1 excluded."""
    keys = []
    for k in range(1, 5):
        keys += [f"conv{k}.conv2d_list.{i}.{w}" for i in range(4) for w in ("weight", "bias")]
    for k in range(1, 5):
        p = f"tpavi_b{k}."
        keys.append(p + "align_channel.weight")
        if not avss:  # the AVSS variant's align_channel has no bias (6.9)
            keys.append(p + "align_channel.bias")
        keys += [f"{p}{m}.{w}" for m in ("theta", "phi", "g", "W_z.0") for w in ("weight", "bias")]
        keys += [f"{p}W_z.1.{b}" for b in BN]
        keys += [p + "norm_layer.weight", p + "norm_layer.bias"]
    for k in (4, 3, 2, 1):
        for u in ((2,) if k == 4 else (1, 2)):
            keys += [f"path{k}.resConfUnit{u}.conv{j}.{w}" for j in (1, 2) for w in ("weight", "bias")]
    keys += [f"output_conv.{i}.{w}" for i in (0, 2, 4) for w in ("weight", "bias")]
    return keys


def vggish_keys(prefix: str = "") -> list[str]:
    return ([f"{prefix}features.{i}.{w}" for i in (0, 3, 6, 8, 11, 13) for w in ("weight", "bias")]
            + [f"{prefix}embeddings.{i}.{w}" for i in (0, 2, 4) for w in ("weight", "bias")])


PVT_REQUIRED = tuple(f"encoder_backbone.{p}{s}." for s in range(1, 5) for p in ("patch_embed", "block", "norm"))
TPAVI_HEAD_REQUIRED = tuple(f"conv{k}.conv2d_list." for k in range(1, 5)) + tuple(
    f"tpavi_b{k}." for k in range(1, 5)) + tuple(f"path{k}.resConfUnit2." for k in range(1, 5)) + ("output_conv.",)
ASF_HEAD_REQUIRED = ("head.transformer.encoder.", "head.transformer.decoder.", "head.in_proj.", "head.mlp.",
                     "head.fusion_block.", "head.lateral_conv.", "head.out_conv.", "head.fc.",
                     "head.learnable_query.weight", "head.level_embed", "audio_proj.", "vggish.features.",
                     "vggish.embeddings.")


@dataclass(frozen=True)
class FamilySpec:
    name: str
    title: str
    manifest_family: str          # the manifest's `family`: tpavi | avsegformer
    backbone: str                 # r50 | pvt
    avss: bool                    # 71-class semantic output (AVSBench-semantic)
    frames: int                   # T of the package
    default_size: int
    sizes: tuple[int, ...]
    vggish: str                   # "separate" (--vggish file) | "embedded" (under `vggish.`)
    required: tuple[str, ...]     # keys, or prefixes ending in "." that must have keys under them
    build: Callable               # builder(StateDict, frames, height, width) -> (ModelProto, info)
    expected_keys: Callable[[], list[str]] | None = None   # exact live key list, when known
    source: str = ""

    @property
    def output(self) -> dict:
        if self.avss:
            return avss_output()
        return {"kind": "binary", "threshold": 0.5}

    @property
    def classes(self) -> int:
        return len(AVSS_LABELS) if self.avss else 1

    @property
    def resize(self) -> str:
        # S4/MS3 frames were stored at 224 by OpenCV-style squashing; AVSS and AVSegFormer's
        # loaders resize with PIL bilinear (docs/spec/vision.md §4.3–4.5).
        return "bilinear_pil" if self.avss or self.manifest_family == "avsegformer" else "bilinear_opencv"

    @property
    def patch_padding(self) -> str:
        return "zeros" if self.avss else "repeat_last"   # docs/spec/audio.md §2.6


AVSBENCH = "OpenNLPLab/AVSBench (TPAVI)"
AVSEGFORMER = "vvvb-github/AVSegFormer"


def _families() -> dict[str, FamilySpec]:
    rows = []
    for avss in (False, True):
        suffix = "-avss" if avss else ""
        task = "AVSS, 71 classes" if avss else "S4/MS3, binary"
        # TPAVI AVSS runs T = 10 as two independent 5-frame groups whose padding never reaches the
        # real frames (docs/spec/tpavi.md §6.9), so a 5-frame package is exact and half the work on v1 clips.
        rows.append(FamilySpec(
            f"tpavi-r50{suffix}", f"TPAVI, ResNet-50 ({task})", "tpavi", "r50", avss, 5, 224, (224,), "separate",
            tuple(["resnet.conv1.weight", "resnet.layer4_1."]) + TPAVI_HEAD_REQUIRED, _tpavi_builder,
            expected_keys=(lambda avss=avss: resnet50_keys("resnet.") + tpavi_decoder_keys(avss)), source=AVSBENCH))
        rows.append(FamilySpec(
            f"tpavi-pvt{suffix}", f"TPAVI, PVT-v2-b5 ({task})", "tpavi", "pvt", avss, 5, 224, (224,), "separate",
            PVT_REQUIRED + TPAVI_HEAD_REQUIRED, _tpavi_builder, source=AVSBENCH))
        # AVSegFormer is per frame (7.1), so T only sets the batch; 5 matches the S4/MS3 clips.
        # S4/MS3 default to 512 (the released checkpoints); 224 serves the April 2023 ones.
        rows.append(FamilySpec(
            f"avsegformer-r50{suffix}", f"AVSegFormer, ResNet-50 ({task})", "avsegformer", "r50", avss, 5,
            224 if avss else 512, (224, 512), "embedded",
            ("backbone.conv1.weight", "backbone.layer4_1.") + ASF_HEAD_REQUIRED, _avsegformer_builder,
            source=AVSEGFORMER))
        rows.append(FamilySpec(
            f"avsegformer-pvt{suffix}", f"AVSegFormer, PVT-v2-b5 ({task})", "avsegformer", "pvt", avss, 5,
            224 if avss else 512, (224, 512), "embedded",
            tuple(p.replace("encoder_backbone.", "backbone.") for p in PVT_REQUIRED) + ASF_HEAD_REQUIRED,
            _avsegformer_builder, source=AVSEGFORMER))
    order = ["tpavi-r50", "tpavi-pvt", "tpavi-r50-avss", "tpavi-pvt-avss", "avsegformer-r50", "avsegformer-pvt",
             "avsegformer-r50-avss", "avsegformer-pvt-avss"]
    by_name = {r.name: r for r in rows}
    return {n: by_name[n] for n in order}


FAMILIES = _families()

# Never executed by the official models (docs/spec/checkpoints.md §12.2): not required, not checked for NaN.
DEAD_PREFIXES = ("resnet.layer3_2.", "resnet.layer4_2.", "backbone.layer3_2.", "backbone.layer4_2.",
                 "path4.resConfUnit1.", "head.fpn.", "head.attn_fc.")


# ---------------------------------------------------------------------------
# Recognising what a state dict is
# ---------------------------------------------------------------------------

def _has(keys, p: str) -> bool:
    return any(k.startswith(p) for k in keys) if p.endswith(".") else p in keys


def _classes(tensors, key):
    w = tensors.get(key)
    return int(w.shape[0]) if w is not None and w.ndim >= 1 else None


def identify(tensors: dict) -> tuple[str | None, str]:
    """(family name or None, description of what the keys look like)."""
    keys = set(tensors)
    if any(k.startswith("tpavi_b") for k in keys):
        avss = _classes(tensors, "output_conv.4.weight") == 71
        suffix = "-avss" if avss else ""
        if "resnet.conv1.weight" in keys:
            return f"tpavi-r50{suffix}", "a TPAVI-R50 checkpoint (resnet.*, tpavi_b*.*)"
        if _has(keys, "encoder_backbone."):
            return f"tpavi-pvt{suffix}", "a TPAVI-PVT checkpoint (encoder_backbone.*, tpavi_b*.*)"
        if _has(keys, "encoder."):
            return None, "avseg's own EfficientNet-Lite0 TPAVI weights (tools/train_default), not an official checkpoint"
    if _has(keys, "head.") and _has(keys, "backbone."):
        avss = _classes(tensors, "head.fc.4.weight") == 71
        suffix = "-avss" if avss else ""
        if "backbone.conv1.weight" in keys:
            return f"avsegformer-r50{suffix}", "an AVSegFormer-R50 checkpoint (backbone.*, head.*, vggish.*)"
        if _has(keys, "backbone.patch_embed1."):
            return f"avsegformer-pvt{suffix}", "an AVSegFormer-PVT checkpoint (backbone.patch_embed*, head.*, vggish.*)"
    if "features.0.weight" in keys and _has(keys, "embeddings."):
        return None, "a VGGish file (features.*, embeddings.*)"
    if _has(keys, "pca_"):
        return None, "the VGGish PCA postprocessor file, which no model uses (docs/spec/vggish.md §3)"
    if "conv1.weight" in keys and "fc.weight" in keys and "layer4.0.conv1.weight" in keys:
        return None, "a plain torchvision ResNet-50 (ImageNet backbone), not a trained AVS model"
    sample = ", ".join(sorted(keys)[:5])
    return None, f"no known family (first keys: {sample})"


# ---------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------

def _list(items, limit=10) -> str:
    shown = ", ".join(f"'{k}'" for k in items[:limit])
    more = f", ... ({len(items)} in all)" if len(items) > limit else f" ({len(items)} in all)"
    return shown + more


def check_keys(path, tensors: dict, required, expected, what: str):
    keys = set(tensors)
    missing = [k for k in (expected or []) if k not in keys]
    missing += [p + "*" if p.endswith(".") else p for p in required
                if not _has(keys, p) and (not expected or p.endswith("."))
                and not any(m.startswith(p) for m in missing)]
    if missing:
        raise ConvertError(f"{path}: {what} is missing {len(missing)} weight(s): {_list(missing)}")


def check_finite(path, tensors: dict, prefix: str = ""):
    bad = []
    for k, v in tensors.items():
        if k.startswith(DEAD_PREFIXES) or not np.issubdtype(v.dtype, np.floating):
            continue
        ok = np.isfinite(v)
        if not ok.all():
            n_nan, n_inf = int(np.isnan(v).sum()), int(np.isinf(v).sum())
            first = np.unravel_index(int(np.argmin(ok)), v.shape) if v.ndim else ()
            bad.append(f"'{prefix}{k}' ({n_nan} NaN, {n_inf} Inf; first at index {list(map(int, first))})")
    if bad:
        raise ConvertError(f"{path}: non-finite weights in {len(bad)} tensor(s): {', '.join(bad[:10])}"
                           f"{' ...' if len(bad) > 10 else ''}; the checkpoint is corrupt or diverged in training")


def _graph_io(model: onnx.ModelProto):
    def dims(vi):
        return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in vi.type.tensor_type.shape.dim]
    return ({i.name: dims(i) for i in model.graph.input}, {o.name: dims(o) for o in model.graph.output})


def check_segmenter_io(fam: FamilySpec, model, frames, size, audio_dim):
    ins, outs = _graph_io(model)
    want_in = {"frames": [frames, 3, size, size], "audio_embedding": [frames, audio_dim]}
    want_out = {"mask_logits": [frames, fam.classes, size, size]}
    for got, want, what in ((ins, want_in, "inputs"), (outs, want_out, "outputs")):
        if got != want:
            raise ConvertError(f"the {fam.name} builder produced a segmenter with {what} {got}; expected {want} "
                               f"(a {fam.classes}-class {fam.name} model)")


def check_weight_shapes(model: onnx.ModelProto):
    """Raise ValueError naming the weight whose shape does not fit the value flowing into it.

    ONNX shape inference checks MatMul/Gemm/broadcast shapes but not a Conv's input channels
    or a normalisation's scale length, and a builder that reads widths from the tensors
    would otherwise produce a graph that only fails when run.
    """
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    shapes = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        dims = vi.type.tensor_type.shape.dim
        shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    inits = {t.name: list(t.dims) for t in model.graph.initializer}

    def fail(node, w, detail):
        raise ValueError(f"weight '{w}' has shape {inits[w]}, but {detail} (node {node.name or node.op_type})")

    for node in model.graph.node:
        x = shapes.get(node.input[0]) if node.input else None
        if node.op_type == "Conv" and len(node.input) > 1 and node.input[1] in inits and x and len(x) > 1:
            w = inits[node.input[1]]
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            if x[1] is not None and x[1] != w[1] * group:
                fail(node, node.input[1], f"its input has {x[1]} channels, not {w[1] * group}")
            if len(node.input) > 2 and node.input[2] in inits and inits[node.input[2]] != [w[0]]:
                fail(node, node.input[2], f"the conv has {w[0]} output channels")
        elif node.op_type == "LayerNormalization" and x:
            axis = next((a.i for a in node.attribute if a.name == "axis"), -1)
            want = x[axis:]
            for name in node.input[1:]:
                if name in inits and None not in want and inits[name] != want:
                    fail(node, name, f"it normalises over {want}")
        elif node.op_type == "InstanceNormalization" and x and len(x) > 1 and x[1] is not None:
            for name in node.input[1:]:
                if name in inits and inits[name] != [x[1]]:
                    fail(node, name, f"its input has {x[1]} channels")


# ---------------------------------------------------------------------------
# Half precision
# ---------------------------------------------------------------------------

def to_half(model: onnx.ModelProto) -> tuple[int, int]:
    """Store large f32 initializers as float16, each followed by a Cast back to float.

    The graph computes in f32 exactly as before (tract folds the Casts at load time), so
    only the weights' rounding changes and the file is about half the size. Tensors with a
    value beyond the f16 range stay f32. Returns (converted, kept) initializer counts.
    """
    g = model.graph
    inits, casts, converted, kept = [], [], 0, 0
    for t in g.initializer:
        n = int(np.prod(t.dims)) if t.dims else 1
        if t.data_type != TensorProto.FLOAT or n < F16_MIN_ELEMENTS or t.name.startswith("const."):
            inits.append(t)
            continue
        a = numpy_helper.to_array(t)
        if float(np.abs(a).max(initial=0.0)) > F16_MAX:
            inits.append(t)
            kept += 1
            continue
        half_name = t.name + ".f16"
        inits.append(numpy_helper.from_array(a.astype(np.float16), half_name))
        casts.append(helper.make_node("Cast", [half_name], [t.name], name=t.name + ".to_f32", to=TensorProto.FLOAT))
        converted += 1
    nodes = casts + list(g.node)
    del g.initializer[:]
    g.initializer.extend(inits)
    del g.node[:]
    g.node.extend(nodes)
    onnx.checker.check_model(model, full_check=True)
    return converted, kept


# ---------------------------------------------------------------------------
# Conversion
# ---------------------------------------------------------------------------

@dataclass
class Input:
    role: str
    path: Path
    sha256: str = ""
    size: int = 0
    tensors: dict = field(default_factory=dict)

    def record(self) -> dict:
        return {"role": self.role, "file": self.path.name, "bytes": self.size, "sha256": self.sha256}


def _read(role: str, path) -> Input:
    path = Path(path)
    try:
        tensors = load_checkpoint(path)
    except CheckpointError as e:
        raise ConvertError(str(e)) from None
    except OSError as e:
        raise ConvertError(f"{path}: {e.strerror or e}") from None
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return Input(role, path, h.hexdigest(), path.stat().st_size, tensors)


def _build(what: str, path, fn, *args, key_prefix: str = "", **options):
    """Run a graph builder; its KeyError/ValueError names a key, this adds the file."""
    note = f" (keys under '{key_prefix}')" if key_prefix else ""
    try:
        return fn(*args, **options)
    except KeyError as e:
        msg = e.args[0] if e.args else str(e)
        raise ConvertError(f"{path}: {what}{note}: {msg}") from None
    except (ValueError, onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        msg = str(e).strip().splitlines()
        raise ConvertError(f"{path}: {what}{note}: weight shapes do not fit together: "
                           f"{' '.join(msg[:3])}") from None


def convert(args) -> dict:
    fam = FAMILIES[args.family]
    size = args.size or fam.default_size
    if size % 32 or not 64 <= size <= 1024:
        raise ConvertError(f"--size {size}: must be a multiple of 32 between 64 and 1024 (the decoders double "
                           f"the 1/32 map back up); {fam.name} checkpoints were trained at "
                           f"{' or '.join(map(str, fam.sizes))}")
    if size not in fam.sizes:
        print(f"note: {fam.name} checkpoints were trained at {' or '.join(map(str, fam.sizes))}; "
              f"converting for {size}x{size} as asked", file=sys.stderr)
    options = {"pvt_head_dim": args.pvt_head_dim} if fam.backbone == "pvt" else {}
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConvertError(f"{out}: exists and is not a folder (--out)")
    if out.exists() and any(out.iterdir()) and not args.force:
        raise ConvertError(f"{out}: folder exists and is not empty (pass --force to overwrite)")
    started = time.perf_counter()

    ckpt = _read("checkpoint", args.checkpoint)
    guess, looks_like = identify(ckpt.tensors)
    if guess != fam.name:
        hint = f"; use --family {guess}" if guess else ""
        raise ConvertError(f"{ckpt.path}: wrong family: the keys look like {looks_like}, not {fam.name}{hint}")

    if fam.vggish == "separate":
        if not args.vggish:
            raise ConvertError(f"{fam.name}: the VGGish audio encoder is not part of TPAVI checkpoints "
                               "(docs/spec/vggish.md §3): pass --vggish vggish-10086976.pth")
        vgg = _read("vggish", args.vggish)
        _, vgg_looks = identify(vgg.tensors)
        if not ("features.0.weight" in vgg.tensors and any(k.startswith("embeddings.") for k in vgg.tensors)):
            raise ConvertError(f"{vgg.path}: not a VGGish file: the keys look like {vgg_looks}; "
                               "expected features.* and embeddings.* (vggish-10086976.pth)")
        vgg_tensors, vgg_prefix, vgg_path = vgg.tensors, "", vgg.path
        seg_tensors = ckpt.tensors
        inputs = [ckpt, vgg]
    else:
        if args.vggish:
            raise ConvertError(f"--vggish is for TPAVI families only: {fam.name} checkpoints carry VGGish "
                               "under 'vggish.'")
        vgg_prefix, vgg_path = "vggish.", ckpt.path
        vgg_tensors = {k[len(vgg_prefix):]: v for k, v in ckpt.tensors.items() if k.startswith(vgg_prefix)}
        seg_tensors = {k: v for k, v in ckpt.tensors.items() if not k.startswith(vgg_prefix)}
        inputs = [ckpt]

    expected = fam.expected_keys() if fam.expected_keys else None
    check_keys(ckpt.path, ckpt.tensors, fam.required, expected, f"this {fam.name} checkpoint")
    check_keys(vgg_path, {vgg_prefix + k: v for k, v in vgg_tensors.items()}, (),
               vggish_keys(vgg_prefix), "the VGGish encoder")
    check_finite(ckpt.path, ckpt.tensors)
    if fam.vggish == "separate":
        check_finite(vgg_path, vgg_tensors)

    from .vggish import build_vggish
    audio_model, ainfo = _build("VGGish audio encoder", vgg_path, build_vggish, vgg_tensors,
                                key_prefix=vgg_prefix)
    _build("VGGish audio encoder", vgg_path, check_weight_shapes, audio_model, key_prefix=vgg_prefix)
    if ainfo["embedding_dim"] != AUDIO_DIM:
        raise ConvertError(f"{vgg_path}: VGGish embedding width is {ainfo['embedding_dim']}; the models take "
                           f"{AUDIO_DIM} ('{vgg_prefix}embeddings.4.weight' should have shape [128, 4096])")

    try:
        seg_model, sinfo = _build(f"{fam.name} segmenter", ckpt.path, fam.build, StateDict(seg_tensors),
                                  fam.frames, size, size, **options)
    except ImportError as e:
        raise ConvertError(f"--family {fam.name} is not available in this build: its graph builder cannot be "
                           f"imported ({e})") from None
    except ConvertError as e:
        if "no visual encoder found" in str(e) and fam.backbone == "pvt":
            raise ConvertError(f"--family {fam.name} is not available in this build: build_tpavi does not "
                               "know the PVT-v2-b5 encoder yet") from None
        raise
    _build(f"{fam.name} segmenter", ckpt.path, check_weight_shapes, seg_model)
    check_segmenter_io(fam, seg_model, fam.frames, size, AUDIO_DIM)

    params = int(ainfo["parameters"]) + int(sinfo["parameters"])
    half = None
    if args.precision == "f16":
        half = [to_half(audio_model), to_half(seg_model)]

    names = " + ".join(f"{i.path.name} (sha256 {i.sha256[:12]}…)" for i in inputs)
    meta = manifest(
        name=args.name or fam.name,
        description=f"{fam.title}, converted from the official checkpoint {ckpt.path.name}"
                    + (", weights stored as float16" if half else ""),
        family=fam.manifest_family,
        frames_per_clip=fam.frames, width=size, height=size,
        embedding_dim=ainfo["embedding_dim"],
        output=fam.output,
        resize=fam.resize,
        patch_padding=fam.patch_padding,
        provenance={
            "source": f"{fam.source}: {names}",
            "licence": f"not stated by the checkpoint; see {fam.source} before redistributing",
            "created_by": f"avseg convert {CONVERTER_VERSION} (avseg_export.convert)",
            "trained": True,
            "parameters": params,
            "metrics": {},
        },
    )
    meta["provenance"]["conversion"] = {
        "converter": "avseg_export.convert",
        "converter_version": CONVERTER_VERSION,
        "family": fam.name,
        "input_size": size,
        **({"pvt_head_dim": args.pvt_head_dim} if fam.backbone == "pvt" else {}),
        "precision": args.precision,
        "inputs": [i.record() for i in inputs],
    }
    if out.exists():
        for f in ("avseg.json", meta["graphs"]["audio_encoder"]["file"], meta["graphs"]["segmenter"]["file"]):
            (out / f).unlink(missing_ok=True)
    write_package(out, meta, audio_model, seg_model)
    return {
        "family": fam, "size": size, "inputs": inputs, "params": params, "ainfo": ainfo, "sinfo": sinfo,
        "half": half, "out": out, "meta": meta, "seconds": time.perf_counter() - started,
    }


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def print_summary(r: dict):
    fam, meta = r["family"], r["meta"]
    print(f"family      {fam.name}: {fam.title}; manifest family '{fam.manifest_family}', T = {fam.frames}, "
          f"{r['size']}x{r['size']}, {meta['output']['kind']} output ({fam.classes} channel(s))")
    for i in r["inputs"]:
        print(f"{i.role:<11} {i.path} ({_mb(i.size)}, {len(i.tensors)} tensors, sha256 {i.sha256})")
    print(f"parameters  {r['params']:,} (audio encoder {r['ainfo']['parameters']:,}, "
          f"segmenter {r['sinfo']['parameters']:,})")
    if r["half"]:
        conv = sum(c for c, _ in r["half"])
        kept = sum(k for _, k in r["half"])
        extra = f", {kept} kept f32 (values beyond ±65504)" if kept else ""
        print(f"precision   f16: {conv} weight tensors stored as float16 (cast to f32 in the graph){extra}")
    else:
        print("precision   f32")
    total = 0
    for f in sorted(r["out"].iterdir()):
        total += f.stat().st_size
        print(f"wrote       {f} ({_mb(f.stat().st_size)})")
    print(f"package     {r['out']} ({_mb(total)}) in {r['seconds']:.1f} s; check it with: avseg info --model {r['out']}")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(
        prog="avseg convert",
        description="Convert an official TPAVI or AVSegFormer checkpoint (.pth or .safetensors) into an "
                    "avseg model package. No torch needed.")
    ap.add_argument("--family", required=True, choices=list(FAMILIES))
    ap.add_argument("--checkpoint", required=True, help="the model's .pth (torch.save) or .safetensors file")
    ap.add_argument("--vggish", help="TPAVI only: vggish-10086976.pth (features.*, embeddings.*)")
    ap.add_argument("--out", required=True, help="package folder to write")
    ap.add_argument("--size", type=int,
                    help="input size, a multiple of 32 (default: what the family was trained at; AVSegFormer: "
                         "512 for the released S4/MS3 checkpoints, 224 for AVSS and the April 2023 ones; "
                         "TPAVI: 224)")
    ap.add_argument("--pvt-head-dim", type=int, default=64,
                    help="PVT-v2 families: attention head width (official b5: 64, i.e. 1/2/5/8 heads); a "
                         "checkpoint cannot carry it, so width-reduced models must say theirs")
    ap.add_argument("--precision", choices=("f32", "f16"), default="f32",
                    help="f16 stores the weights as float16 (half the size); the graph still computes in f32")
    ap.add_argument("--name", help="package name in the manifest (default: the family)")
    ap.add_argument("--force", action="store_true", help="overwrite a non-empty --out folder")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        result = convert(args)
    except ConvertError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"error: {args.checkpoint}: out of memory while converting", file=sys.stderr)
        return 2
    print_summary(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
