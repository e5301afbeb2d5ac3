"""The graph checksums the exporters write agree with what the Rust runtime verifies.

The runtime's own test (src/model/integrity.rs) pins the same XXH3-128 value of the empty input,
and `ModelPackage::load` verifies the bundled packages' recorded checksums on every Rust test run.
"""

import json
from pathlib import Path

import onnx
from onnx import TensorProto, helper

from avseg_export.package import checksum, validate_manifest, write_package

REPO = Path(__file__).resolve().parents[2]


def test_known_value():
    assert checksum(b"") == "xxh3-128:99aa06d3014798d86001c324468d497f"


def test_bundled_manifests_record_their_files():
    for pkg in ("models/default", "models/tiny-tpavi", "models/tiny-bavs", "models/bavs-avsreg"):
        d = REPO / pkg
        m = json.loads((d / "avseg.json").read_text())
        validate_manifest(m)
        for role, spec in m["graphs"].items():
            data = (d / spec["file"]).read_bytes()
            assert spec["size"] == len(data), (pkg, role)
            assert spec["checksum"] == checksum(data), (pkg, role)


def test_write_package_records_size_and_checksum(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    model = helper.make_model(helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y]))
    meta = {"graphs": {"audio_encoder": {"file": "a.onnx"}, "segmenter": {"file": "s.onnx"}}}
    write_package(tmp_path, meta, model, model)
    written = json.loads((tmp_path / "avseg.json").read_text())
    for role, name in (("audio_encoder", "a.onnx"), ("segmenter", "s.onnx")):
        data = (tmp_path / name).read_bytes()
        assert written["graphs"][role] == {"file": name, "size": len(data), "checksum": checksum(data)}
    assert isinstance(onnx.load(tmp_path / "s.onnx"), onnx.ModelProto)


def test_tiny_bavs_regenerates_to_the_same_bytes(tmp_path, capsys):
    """`models/tiny-bavs` is exactly what its generator writes (weights set by hand, no randomness)."""
    import sys

    from avseg_tools import make_tiny_bavs

    argv = sys.argv
    sys.argv = ["avseg-make-tiny-bavs", "--out", str(tmp_path)]
    try:
        make_tiny_bavs.main()
    finally:
        sys.argv = argv
    for f in sorted((REPO / "models/tiny-bavs").iterdir()):
        assert (tmp_path / f.name).read_bytes() == f.read_bytes(), f.name
