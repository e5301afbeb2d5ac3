"""avseg model package writer: ONNX graphs plus the `avseg.json` manifest.

The manifest schema is fixed (the Rust runtime parses exactly these fields);
`manifest()` fills it and `validate_manifest()` re-checks a written one.
"""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import xxhash

FORMAT = "avseg-model"
SCHEMA_VERSION = 1
RESIZE_MODES = ("bilinear_opencv", "bilinear_pil")
PATCH_PADDING = ("repeat_last", "zeros")
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def manifest(*, name, description, family, frames_per_clip, width, height, embedding_dim,
             output, provenance, resize="bilinear_opencv", patch_padding="repeat_last",
             mean=IMAGENET_MEAN, std=IMAGENET_STD,
             audio_file="audio_encoder.onnx", segmenter_file="segmenter.onnx", tpavi_group=None) -> dict:
    m = {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "name": name,
        "description": description,
        "family": family,
        "frames_per_clip": int(frames_per_clip),
        "vision": {"width": int(width), "height": int(height), "resize": resize,
                   "mean": list(mean), "std": list(std)},
        "audio": {"frontend": "vggish_logmel", "patch_padding": patch_padding,
                  "embedding_dim": int(embedding_dim)},
        "output": output,
        "graphs": {
            "audio_encoder": {"file": audio_file, "inputs": ["audio_logmel"], "outputs": ["audio_embedding"]},
            "segmenter": {"file": segmenter_file, "inputs": ["frames", "audio_embedding"],
                          "outputs": ["mask_logits"]},
        },
        "provenance": provenance,
    }
    if tpavi_group is not None:
        # Optional since it was added: absent means the official group, all T frames.
        m = {k: v for k, v in m.items() if k != "vision"} | {"tpavi_group": int(tpavi_group), "vision": m["vision"]}
        m = {k: m[k] for k in ("format", "schema_version", "name", "description", "family", "frames_per_clip",
                               "tpavi_group", "vision", "audio", "output", "graphs", "provenance")}
    validate_manifest(m)
    return m


def validate_manifest(m: dict):
    def need(cond, msg):
        if not cond:
            raise ValueError(f"avseg.json: {msg}")

    need(m.get("format") == FORMAT, "format must be 'avseg-model'")
    need(m.get("schema_version") == SCHEMA_VERSION, "schema_version must be 1")
    for k in ("name", "description", "family"):
        need(isinstance(m.get(k), str) and m[k], f"'{k}' must be a non-empty string")
    need(isinstance(m.get("frames_per_clip"), int) and m["frames_per_clip"] > 0, "frames_per_clip")
    if "tpavi_group" in m:
        g = m["tpavi_group"]
        need(m["family"] == "tpavi", "tpavi_group is for the tpavi family only")
        need(isinstance(g, int) and g > 0 and m["frames_per_clip"] % g == 0,
             "tpavi_group must be a positive divisor of frames_per_clip")
    v = m.get("vision", {})
    need(v.get("resize") in RESIZE_MODES, f"vision.resize must be one of {RESIZE_MODES}")
    need(len(v.get("mean", [])) == 3 and len(v.get("std", [])) == 3, "vision.mean/std need 3 values")
    need(all(isinstance(v.get(k), int) and v[k] > 0 for k in ("width", "height")), "vision.width/height")
    a = m.get("audio", {})
    need(a.get("frontend") == "vggish_logmel", "audio.frontend must be 'vggish_logmel'")
    need(a.get("patch_padding") in PATCH_PADDING, f"audio.patch_padding must be one of {PATCH_PADDING}")
    need(isinstance(a.get("embedding_dim"), int), "audio.embedding_dim")
    o = m.get("output", {})
    if o.get("kind") == "binary":
        need(isinstance(o.get("threshold"), (int, float)), "output.threshold")
    elif o.get("kind") == "semantic":
        need(len(o.get("labels", [])) == len(o.get("palette", [])) > 0, "output.labels/palette")
    else:
        raise ValueError("avseg.json: output.kind must be 'binary' or 'semantic'")
    g = m.get("graphs", {})
    if m["family"] == "bavs":
        need(set(g) == {"audio_tagger", "segmenter"}, "graphs of a bavs package must be audio_tagger and segmenter")
        need(o.get("kind") == "semantic", "a bavs package's output.kind must be 'semantic'")
        lt = m.get("label_tree", {})
        need(isinstance(lt.get("file"), str) and isinstance(lt.get("audio_labels"), str),
             "a bavs package needs label_tree.file and label_tree.audio_labels")
    else:
        need(set(g) == {"audio_encoder", "segmenter"}, "graphs must be audio_encoder and segmenter")
    p = m.get("provenance", {})
    for k in ("source", "licence", "created_by", "trained", "parameters", "metrics"):
        need(k in p, f"provenance.{k} missing")


def dumps_manifest(m: dict) -> str:
    """Indented JSON, but lists of scalars (mean, std, palette rows) on one line."""

    def fmt(v, ind):
        pad = "  " * (ind + 1)
        if isinstance(v, dict):
            if not v:
                return "{}"
            items = [f"{pad}{json.dumps(k)}: {fmt(x, ind + 1)}" for k, x in v.items()]
            return "{\n" + ",\n".join(items) + "\n" + "  " * ind + "}"
        if isinstance(v, list):
            if all(not isinstance(x, (dict, list)) for x in v):
                return "[" + ", ".join(json.dumps(x) for x in v) + "]"
            return "[\n" + ",\n".join(pad + fmt(x, ind + 1) for x in v) + "\n" + "  " * ind + "]"
        return json.dumps(v)

    text = fmt(m, 0) + "\n"
    assert json.loads(text) == m
    return text


def checksum(data: bytes) -> str:
    """A graph file's checksum as avseg.json records it (src/model/integrity.rs): XXH3-128, for
    corruption rather than tampering, hex in canonical (big-endian) order."""
    return "xxh3-128:" + xxhash.xxh3_128_hexdigest(data)


def record_file(spec: dict, data: bytes):
    """Adds the size and checksum of a graph file's bytes to its manifest entry."""
    spec["size"] = len(data)
    spec["checksum"] = checksum(data)


def write_package(out_dir, meta: dict, audio_model: onnx.ModelProto, seg_model: onnx.ModelProto) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # SerializeToString is deterministic for a deterministically built proto.
    for role, model in (("audio_encoder", audio_model), ("segmenter", seg_model)):
        data = model.SerializeToString()
        (out / meta["graphs"][role]["file"]).write_bytes(data)
        record_file(meta["graphs"][role], data)
    (out / "avseg.json").write_text(dumps_manifest(meta))
    return out


def read_package(model_dir):
    """(manifest, audio graph path, segmenter path) of a package folder. The audio graph is the
    audio encoder, or a two-stage (`bavs`) package's tagger."""
    d = Path(model_dir)
    m = json.loads((d / "avseg.json").read_text())
    validate_manifest(m)
    audio = "audio_tagger" if m["family"] == "bavs" else "audio_encoder"
    return m, d / m["graphs"][audio]["file"], d / m["graphs"]["segmenter"]["file"]
