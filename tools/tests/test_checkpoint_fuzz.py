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
import resource
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from avseg_export import checkpoint
from avseg_export.checkpoint import CheckpointError, load_checkpoint, save_pth

EXAMPLES = int(os.environ.get("AVSEG_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow],
                database=None)


@pytest.fixture(autouse=True, scope="module")
def bounded_memory():
    """An address-space limit for the fuzzed reader: an input that makes it allocate without bound
    fails as a MemoryError (a bug by the oracle) instead of getting the machine's OOM killer to end
    the run, which is how a 30,000-example run found the expanded-tensor case."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = 8 << 30
    resource.setrlimit(resource.RLIMIT_AS, (cap if hard == resource.RLIM_INFINITY else min(cap, hard), hard))
    yield
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


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


def test_an_expanded_tensor_cannot_claim_gigabytes(tmp_path):
    """Found by a long run (30,000 examples per case; the process reached 23 GB and was killed):
    zero strides let a one-element storage claim 3·10⁹ elements. Refused before any allocation; a
    small expanded view is still read."""
    path = tmp_path / "expanded.pth"
    storage = checkpoint._Storage(checkpoint._StorageType("FloatStorage"), np.ones(1, "<f4").tobytes(), 1, "rec")
    with pytest.raises(CheckpointError, match="would expand 1 stored elements"):
        checkpoint._Tensor(storage, 0, (50000, 60000), (0, 0)).materialise("w", path)
    small = checkpoint._Tensor(storage, 0, (2, 3), (0, 0)).materialise("w", path)
    assert small.shape == (2, 3) and (small == 1).all()


def test_a_legacy_storage_count_past_the_file_is_refused(tmp_path):
    """Found by the same long run: one flipped bit made a legacy storage's element count 2^61, and
    reading that many bytes raised OverflowError instead of a CheckpointError."""
    path = tmp_path / "legacy.pth"
    save_pth(path, {"w": np.zeros(3, "<f4")}, legacy=True)
    data = bytearray(path.read_bytes())
    count = data.rindex((3).to_bytes(8, "little"))
    for numel in (1 << 61, -5):
        data[count:count + 8] = numel.to_bytes(8, "little", signed=True)
        path.write_bytes(bytes(data))
        with pytest.raises(CheckpointError, match="claims"):
            load_checkpoint(path)


def test_errors_of_the_last_long_run_name_the_file(tmp_path):
    """Two more from a 60,000-examples-per-case run: a legacy storage used by a tensor but never
    listed raised an error without the file's name, and a tensor under an integer key came back as
    {116: array} instead of an error."""
    path = tmp_path / "broken.pth"
    stype = checkpoint._StorageType("FloatStorage")
    unread = checkpoint._Tensor(checkpoint._LazyStorage(stype, "1", 1), 0, (1,), (1,))
    with pytest.raises(CheckpointError, match="not listed") as e:
        unread.materialise("w", path)
    assert str(path) in str(e.value)
    storage = checkpoint._Storage(stype, np.ones(1, "<f4").tobytes(), 1, "rec")
    with pytest.raises(CheckpointError, match="under the key 116") as e:
        checkpoint._state_dict_of(path, {116: checkpoint._Tensor(storage, 0, (1,), (1,))})
    assert str(path) in str(e.value)
