#!/usr/bin/env python3
"""Writes the committed seed corpora in fuzz/corpus/ (small, valid or nearly valid inputs, so that
the fuzzers start past the first parser checks). Deterministic: rerunning it rewrites the same
files. Run from the repository root with the tools venv:

    .venv/bin/python fuzz/seeds.py

Sources: tests/data/audio (tones generated for avseg, see its README), images drawn here, the
bundled packages' manifests, a one-convolution segmenter graph built here with onnx.helper, and
AVSBench-layout CSV rows written here (no AVSBench data).
"""

from __future__ import annotations

import io
import random
import shutil
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "fuzz" / "corpus"


def put(target: str, name: str, data: bytes):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


def audio():
    a = REPO / "tests" / "data" / "audio"
    # The first byte picks the name the prober is hinted with (fuzz_targets/audio_decode.rs), its top
    # bit a decode of only the first 2 s.
    for hint, f in [(0, "tone_s16_stereo_44k.wav"), (1, "tone_440_16k.flac"), (2, "tone_440_16k.ogg"),
                    (3, "tone_440_16k.mp3"), (0x85, "tone_s16_stereo_44k.wav")]:
        put("audio_decode", f"{hint:02x}_{f}", bytes([hint]) + (a / f).read_bytes())


def images():
    rng = np.random.default_rng(0)
    for mode, size in [("RGB", (7, 5)), ("RGBA", (4, 9)), ("L", (6, 6)), ("P", (5, 3))]:
        img = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).convert(mode)
        for fmt in ["PNG", "JPEG", "WEBP"]:
            if fmt == "JPEG" and mode in ("RGBA", "P"):
                continue
            buf = io.BytesIO()
            img.save(buf, fmt)
            put("image_decode", f"{mode.lower()}_{size[0]}x{size[1]}.{fmt.lower()}", buf.getvalue())
    # 16-bit grey PNG.
    buf = io.BytesIO()
    Image.fromarray((np.arange(24, dtype=np.uint16) * 2000).reshape(4, 6)).save(buf, "PNG")
    put("image_decode", "grey16_6x4.png", buf.getvalue())


def clip_folders():
    # First byte: bit 0 puts frames in frames/. Then one file name per line.
    put("clip_folder", "avsbench", b"\x00\n" + b"\n".join(f"video_{i}.png".encode() for i in range(1, 6)) + b"\naudio.wav")
    put("clip_folder", "zero_based_sub", b"\x01\n" + b"\n".join(f"{i}.jpg".encode() for i in range(5)) + b"\nclip.mp3")
    put("clip_folder", "gap_and_two_audio", b"\x00\nf1.png\nf2.png\nf4.png\na.wav\nb.flac")


def manifests():
    for pkg in ["default", "tiny-tpavi"]:
        put("manifest", f"{pkg}.json", (REPO / "models" / pkg / "avseg.json").read_bytes())


def segmenter():
    """The smallest graph tiny-tpavi's manifest accepts: frames [5,3,224,224] and embeddings [5,128]
    in, mask logits [5,1,224,224] out (a 1x1 convolution plus the embeddings' mean)."""
    frames = helper.make_tensor_value_info("frames", TensorProto.FLOAT, [5, 3, 224, 224])
    emb = helper.make_tensor_value_info("audio_embedding", TensorProto.FLOAT, [5, 128])
    out = helper.make_tensor_value_info("mask_logits", TensorProto.FLOAT, [5, 1, 224, 224])
    w = numpy_helper.from_array(np.full((1, 3, 1, 1), 0.1, np.float32), "w")
    axes = numpy_helper.from_array(np.array([1], np.int64), "axes")
    shape = numpy_helper.from_array(np.array([5, 1, 1, 1], np.int64), "shape")
    nodes = [
        helper.make_node("Conv", ["frames", "w"], ["c"]),
        helper.make_node("ReduceMean", ["audio_embedding", "axes"], ["m"], keepdims=1),
        helper.make_node("Reshape", ["m", "shape"], ["m4"]),
        helper.make_node("Add", ["c", "m4"], ["mask_logits"]),
    ]
    graph = helper.make_graph(nodes, "seg", [frames, emb], [out], [w, axes, shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)
    onnx.checker.check_model(model)
    put("package_onnx", "conv_segmenter.onnx", model.SerializeToString())


def csvs():
    # First byte: subset (0 S4, 1 MS3, 2 AVSS) and, with the top bit, the CSV in the subset's folder.
    s4 = "vid,uid,category,split\n" + "".join(f"v{i},u{i},dog,{s}\n" for i, s in enumerate(["train", "val", "test"]))
    ms3 = "video_id,a_obj,split\n" + "".join(f"m{i},x,{s}\n" for i, s in enumerate(["train", "val", "test"]))
    avss = "vid,uid,s_min,s_sec,a_obj,split,label\n" + "".join(
        f"v{i},u{i},0,0,x,{s},{l}\n" for i, (s, l) in enumerate([("train", "v1s"), ("val", "v1m"), ("test", "v2")]))
    put("avsbench_csv", "s4.csv", b"\x00" + s4.encode())
    put("avsbench_csv", "ms3_in_folder.csv", b"\x81" + ms3.encode())
    put("avsbench_csv", "avss.csv", b"\x02" + avss.encode())


def c_abi():
    # The target reads its calls with `arbitrary`; random bytes of a few lengths start it off.
    rng = random.Random(0)
    for n in [16, 64, 256, 1024]:
        put("c_abi", f"random_{n}", bytes(rng.randrange(256) for _ in range(n)))


if __name__ == "__main__":
    shutil.rmtree(CORPUS, ignore_errors=True)
    audio()
    images()
    clip_folders()
    manifests()
    segmenter()
    csvs()
    c_abi()
    for d in sorted(CORPUS.iterdir()):
        print(f"{d.name}: {len(list(d.iterdir()))} seeds, {sum(f.stat().st_size for f in d.iterdir())} bytes")
