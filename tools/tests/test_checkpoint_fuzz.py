"""Fuzzing the restricted `.pth` reader (avseg_export.checkpoint) with Hypothesis.

The oracle: for any bytes, `load_checkpoint` returns {name: numpy array} or raises CheckpointError
naming the file; any other exception (IndexError, struct.error, MemoryError, RecursionError...) or
a global outside the allow-list being resolved is a bug. Inputs start from real checkpoints written
by `save_pth` (zip and legacy layouts, with and without a wrapper) and are then mutated three ways:
bytes of the whole file, bytes of the pickle inside the zip (so the unpickler, not the zip reader,
sees the damage), and hand-made pickle opcode streams.

`tools/fuzz.sh` covers the Rust targets; this runs with the Python tests. AVSEG_FUZZ_EXAMPLES sets
the examples per test (default 300: a few seconds; a long run takes e.g. 200000).
"""

from __future__ import annotations

import io
import os
import zipfile

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from avseg_export import checkpoint
from avseg_export.checkpoint import CheckpointError, load_checkpoint, save_pth

EXAMPLES = int(os.environ.get("AVSEG_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow],
                database=None)


def check(path):
    """Runs the reader; only a dict of arrays or a CheckpointError naming the file is allowed."""
    try:
        out = load_checkpoint(path)
    except CheckpointError as e:
        assert str(path) in str(e), f"error does not name the file: {e}"
        return None
    assert isinstance(out, dict)
    for k, v in out.items():
        assert isinstance(k, str) and isinstance(v, np.ndarray), (k, type(v))
    return out


@st.composite
def checkpoints(draw):
    """The bytes of a small valid checkpoint in one of the layouts torch.save writes."""
    n = draw(st.integers(1, 3))
    tensors = {}
    for i in range(n):
        shape = tuple(draw(st.lists(st.integers(1, 3), min_size=0, max_size=3)))
        dtype = draw(st.sampled_from(["<f4", "<f2", "<f8", "<i8"]))
        tensors[f"layer{i}.weight"] = np.arange(int(np.prod(shape)), dtype=dtype).reshape(shape)
    wrapper = draw(st.sampled_from([None, "state_dict", "model"]))
    legacy = draw(st.booleans())
    return tensors, wrapper, legacy


def write(tmp_path, tensors, wrapper, legacy) -> bytes:
    p = tmp_path / "seed.pth"
    save_pth(p, tensors, wrapper=wrapper, legacy=legacy)
    return p.read_bytes()


mutations = st.lists(
    st.tuples(st.sampled_from(["flip", "set", "cut", "insert", "delete"]), st.integers(0, 1 << 20),
              st.integers(0, 255)),
    min_size=1, max_size=6)


def mutate(data: bytes, ops) -> bytes:
    b = bytearray(data)
    for op, pos, val in ops:
        if not b:
            b.append(val)
            continue
        i = pos % len(b)
        if op == "flip":
            b[i] ^= 1 << (val % 8)
        elif op == "set":
            b[i] = val
        elif op == "cut":
            del b[i:]
        elif op == "insert":
            b[i:i] = bytes([val]) * (1 + val % 8)
        else:
            del b[i:i + 1 + val % 16]
    return bytes(b)


@FUZZ
@given(seed=checkpoints(), ops=mutations)
def test_mutated_files(tmp_path_factory, seed, ops):
    tmp = tmp_path_factory.mktemp("pth")
    data = write(tmp, *seed)
    p = tmp / "fuzzed.pth"
    p.write_bytes(mutate(data, ops))
    check(p)


@FUZZ
@given(seed=checkpoints(), ops=mutations)
def test_mutated_pickles_inside_a_valid_zip(tmp_path_factory, seed, ops):
    tensors, wrapper, _ = seed
    tmp = tmp_path_factory.mktemp("pth")
    data = write(tmp, tensors, wrapper, False)
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            body = src.read(info.filename)
            if info.filename.endswith("data.pkl"):
                body = mutate(body, ops)
            dst.writestr(info.filename, body)
    p = tmp / "fuzzed.pth"
    p.write_bytes(out.getvalue())
    check(p)


# Protocol-2 opcodes, including the dangerous ones (GLOBAL, REDUCE, BUILD, INST, OBJ, NEWOBJ,
# STACK_GLOBAL, EXT*) and arbitrary module/name text for GLOBAL.
OPCODES = [b"(", b")", b"]", b"}", b"N", b"\x88", b"\x89", b"t", b"l", b"d", b"u", b"a", b"e", b"s",
           b"R", b"b", b"o", b"\x81", b"\x93", b"0", b"1", b"2", b"Q", b"\x85", b"\x86", b"\x87",
           b"\x82\x01", b"\x83\x01\x00", b"q\x00", b"h\x00", b"J\x01\x00\x00\x00", b"K\x05",
           b"X\x03\x00\x00\x00abc", b"U\x03abc", b"c__builtin__\neval\n", b"cos\nsystem\n",
           b"ctorch._utils\n_rebuild_tensor_v2\n", b"ccollections\nOrderedDict\n", b"ctorch\nFloatStorage\n"]


@FUZZ
@given(ops=st.lists(st.sampled_from(OPCODES), max_size=40), tail=st.binary(max_size=16))
def test_opcode_streams_never_escape(tmp_path_factory, ops, tail):
    tmp = tmp_path_factory.mktemp("pkl")
    stream = b"\x80\x02" + b"".join(ops) + tail + b"."
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("archive/data.pkl", stream)
        z.writestr("archive/version", "3\n")
    p = tmp / "opcodes.pth"
    p.write_bytes(out.getvalue())
    check(p)
    # The legacy layout reads a pickle stream directly.
    p.write_bytes(stream)
    check(p)


def test_the_allow_list_is_what_is_resolved():
    """No global outside the allow-list can be produced, whatever the stream asks for."""
    u = checkpoint._Unpickler(io.BytesIO(b""), "x.pth", {})
    for module, name in [("os", "system"), ("builtins", "eval"), ("__builtin__", "exec"), ("subprocess", "Popen")]:
        try:
            u.find_class(module, name)
        except CheckpointError:
            continue
        raise AssertionError(f"{module}.{name} resolved")
