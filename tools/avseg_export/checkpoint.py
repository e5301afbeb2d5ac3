"""Read PyTorch checkpoints (`torch.save` of a state dict) and safetensors without torch.

`.pth` files are pickles, and unpickling runs arbitrary code, so `load_pth` uses an
unpickler that resolves only the handful of globals a saved state dict needs
(`_rebuild_tensor_v2`, `OrderedDict`, the typed storage classes) and refuses
everything else by name. Tensor bytes never pass through pickle: they are read
from the storage records and turned into numpy arrays here.

Both container formats of docs/spec/checkpoints.md §12.2 are read: the zip format (torch >= 1.6)
and the legacy stream format, which the 2019 `vggish-10086976.pth` is expected
to use.
"""

from __future__ import annotations

import io
import json
import pickle
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np


class CheckpointError(ValueError):
    """A checkpoint that cannot be read; the message names the file."""


# Storage class name -> little-endian numpy dtype of its elements.
STORAGE_DTYPES = {
    "FloatStorage": "<f4",
    "HalfStorage": "<f2",
    "BFloat16Storage": "bf16",
    "DoubleStorage": "<f8",
    "LongStorage": "<i8",
    "IntStorage": "<i4",
    "ShortStorage": "<i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
}
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
ZIP_MAGIC = b"PK\x03\x04"


class _StorageType:
    """Stand-in for `torch.FloatStorage` and friends: only its element type matters."""

    def __init__(self, name: str):
        self.name = name
        self.dtype = STORAGE_DTYPES[name]

    @property
    def itemsize(self) -> int:
        return 2 if self.dtype == "bf16" else np.dtype(self.dtype).itemsize


class _Storage:
    """A flat storage: raw little-endian bytes plus the element type."""

    def __init__(self, stype: _StorageType, raw: bytes, numel: int, origin: str):
        self.stype = stype
        self.raw = raw
        self.numel = numel
        self.origin = origin

    def array(self) -> np.ndarray:
        if self.stype.dtype == "bf16":
            # bf16 is the top half of an f32, so widening by a shift is exact.
            u = np.frombuffer(self.raw, dtype="<u2", count=self.numel).astype(np.uint32)
            return (u << 16).view(np.float32)
        return np.frombuffer(self.raw, dtype=self.stype.dtype, count=self.numel)


# The most a tensor with zero strides (more elements than its storage) may expand to.
MAX_EXPANDED_BYTES = 64 << 20


class _Tensor:
    """A tensor awaiting its storage bytes (legacy files store them after the pickle)."""

    def __init__(self, storage, offset, size, stride):
        self.storage = storage
        self.offset = int(offset)
        self.size = tuple(int(s) for s in size)
        self.stride = tuple(int(s) for s in stride)

    def materialise(self, key: str, path) -> np.ndarray:
        st = self.storage
        if isinstance(st, _LazyStorage):
            st = st.resolve(path)
        flat = st.array()
        itemsize = flat.dtype.itemsize
        if any(s < 0 for s in self.stride):
            raise CheckpointError(f"{path}: tensor '{key}' has a negative stride {self.stride}")
        if any(d < 0 for d in self.size) or len(self.size) != len(self.stride):
            raise CheckpointError(f"{path}: tensor '{key}' has shape {list(self.size)} with strides "
                                  f"{list(self.stride)}; the file is corrupt")
        n = int(np.prod(self.size)) if self.size else 1
        if n:
            last = self.offset + sum((d - 1) * s for d, s in zip(self.size, self.stride))
            if self.offset < 0 or last >= flat.size:
                raise CheckpointError(
                    f"{path}: tensor '{key}' (shape {list(self.size)}, offset {self.offset}) reaches element "
                    f"{last} of storage {st.origin}, which holds {flat.size}; the file is truncated or corrupt")
        else:
            return np.zeros(self.size, dtype=flat.dtype)
        # Zero strides let a tensor claim more elements than its storage holds (an expanded view):
        # a few bytes of file could ask for gigabytes (Hypothesis found one that took 23 GB). No
        # weight of a real checkpoint is such a view, so a large one is corruption.
        if n > flat.size and n * itemsize > MAX_EXPANDED_BYTES:
            raise CheckpointError(
                f"{path}: tensor '{key}' (shape {list(self.size)}, strides {list(self.stride)}) would expand "
                f"{flat.size} stored elements to {n} ({n * itemsize / 2**20:.0f} MiB); the file is corrupt")
        view = np.lib.stride_tricks.as_strided(
            flat[self.offset:], shape=self.size, strides=tuple(s * itemsize for s in self.stride))
        try:
            return np.array(view, copy=True)
        except MemoryError:
            raise CheckpointError(f"{path}: tensor '{key}' (shape {list(self.size)}) does not fit in memory") from None


class _LazyStorage:
    """Legacy format: the pickle names storages whose bytes come later in the file."""

    def __init__(self, stype, key, numel):
        self.stype, self.key, self.numel = stype, key, numel
        self.storage = None

    def resolve(self, path) -> _Storage:
        if self.storage is None:
            raise CheckpointError(f"{path}: storage {self.key} is used by a tensor but not listed after the "
                                  "pickle; the file is corrupt")
        return self.storage


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
    return _Tensor(storage, storage_offset, size, stride)


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _Tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    return data


def _ordered_dict(*args):
    # Plain dicts keep insertion order; OrderedDict's extra behaviour is never needed here.
    return dict(*args)


_ALLOWED = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("collections", "OrderedDict"): _ordered_dict,
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, f, path, storages):
        super().__init__(f)
        self.path = path
        self.storages = storages  # callable(persistent id tuple) -> storage object

    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        raise CheckpointError(
            f"{self.path}: refusing to load global '{module}.{name}': only state dicts of tensors are "
            "read (unpickling arbitrary objects can run code); save the checkpoint with "
            "torch.save(model.state_dict(), path)")

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
            raise CheckpointError(f"{self.path}: unsupported persistent record {pid!r:.80}")
        return self.storages(pid)


def _check_storage_type(path, stype):
    if not isinstance(stype, _StorageType):
        raise CheckpointError(f"{path}: storage of unsupported type {stype!r:.60}")
    return stype


# What zipfile raises on a damaged archive besides BadZipFile: a negative seek from a corrupt offset
# (ValueError), a flipped "encrypted" flag (RuntimeError), an unknown compression method
# (NotImplementedError), a corrupt deflate stream (zlib.error), a short read (EOFError), and sizes
# that overflow (OverflowError, struct.error) or cannot be allocated (MemoryError). Found by
# tools/tests/test_checkpoint_fuzz.py.
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, RuntimeError, NotImplementedError,
               OverflowError, struct.error, MemoryError)


def _load_zip(path: Path, data: bytes):
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        names = zf.namelist()
    except _ZIP_ERRORS as e:
        raise CheckpointError(f"{path}: not a readable zip archive ({e}); the file is truncated or corrupt, "
                              "download it again") from None
    pkl = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
    if not pkl:
        hint = " (this looks like a TorchScript archive; save the state_dict instead)" \
            if any(n.endswith("constants.pkl") for n in names) else ""
        raise CheckpointError(f"{path}: zip archive without a data.pkl record; not a torch.save checkpoint{hint}")
    root = pkl[0][: -len("data.pkl")]
    byteorder = root + "byteorder"
    try:
        order = zf.read(byteorder).strip() if byteorder in names else b"little"
    except _ZIP_ERRORS as e:
        raise CheckpointError(f"{path}: '{byteorder}' cannot be read ({e}); the file is truncated or corrupt") from None
    if order != b"little":
        raise CheckpointError(f"{path}: big-endian checkpoint; re-save it on a little-endian machine")

    cache = {}

    def storage(pid):
        _, stype, key, _location, numel = pid[:5]
        stype = _check_storage_type(path, stype)
        if key not in cache:
            rec = f"{root}data/{key}"
            try:
                raw = zf.read(rec)
            except KeyError:
                raise CheckpointError(f"{path}: storage record '{rec}' is missing; the file is truncated or "
                                      "corrupt, download it again") from None
            except _ZIP_ERRORS as e:
                raise CheckpointError(f"{path}: storage record '{rec}' cannot be read ({e}); the file is "
                                      "truncated or corrupt") from None
            need = int(numel) * stype.itemsize
            if len(raw) < need:
                raise CheckpointError(f"{path}: storage record '{rec}' holds {len(raw)} bytes, expected {need}; "
                                      "the file is truncated or corrupt")
            cache[key] = _Storage(stype, raw, int(numel), rec)
        return cache[key]

    try:
        pickled = zf.read(pkl[0])
    except _ZIP_ERRORS as e:
        raise CheckpointError(f"{path}: '{pkl[0]}' cannot be read ({e}); the file is truncated or corrupt") from None
    return _unpickle(path, pickled, storage)


def _unpickle(path, pickled: bytes, storage):
    try:
        return _Unpickler(io.BytesIO(pickled), path, storage).load()
    except CheckpointError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            OverflowError, struct.error, MemoryError, RecursionError) as e:
        raise CheckpointError(f"{path}: the pickled state dict cannot be read ({type(e).__name__}: {e}); "
                              "the file is truncated or corrupt") from None


def _load_legacy(path: Path, data: bytes):
    """torch < 1.6 stream: magic, protocol, sys info, the object, storage keys, then each storage's bytes."""
    f = io.BytesIO(data)

    def header_pickle():
        return _Unpickler(f, path, lambda pid: None).load()

    try:
        magic = header_pickle()
        if magic != LEGACY_MAGIC:
            raise CheckpointError(f"{path}: a pickle, but not a torch.save checkpoint (no torch magic number)")
        header_pickle()  # protocol version
        info = header_pickle()
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 - any parse failure of the header means the same thing
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({type(e).__name__}: {e})") from None
    if isinstance(info, dict) and info.get("little_endian") is False:
        raise CheckpointError(f"{path}: big-endian checkpoint; re-save it on a little-endian machine")

    lazy = {}

    def storage(pid):
        _, stype, key, _location, numel = pid[:5]
        view = pid[5] if len(pid) > 5 else None
        stype = _check_storage_type(path, stype)
        if key not in lazy:
            lazy[key] = _LazyStorage(stype, key, int(numel))
        if view is not None:
            raise CheckpointError(f"{path}: storage views (saved by torch < 0.4) are not supported; "
                                  "re-save the checkpoint with a current torch")
        return lazy[key]

    try:
        obj = _Unpickler(f, path, storage).load()
        keys = _Unpickler(f, path, lambda pid: None).load()
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"{path}: the pickled state dict cannot be read ({type(e).__name__}: {e}); "
                              "the file is truncated or corrupt") from None
    for key in keys:
        if key not in lazy:
            raise CheckpointError(f"{path}: storage {key} is listed but never referenced")
        ls = lazy[key]
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path}: storage {key} is missing; the file is truncated")
        (numel,) = struct.unpack("<q", head)
        remaining = len(data) - f.tell()
        if numel < 0 or numel * ls.stype.itemsize > remaining:
            # Checked before reading: a corrupt count (up to 2^63) must not reach `read`.
            raise CheckpointError(f"{path}: storage {key} claims {numel} elements, but {remaining} bytes are left; "
                                  "the file is truncated or corrupt")
        raw = f.read(numel * ls.stype.itemsize)
        if numel < ls.numel or len(raw) < numel * ls.stype.itemsize:
            raise CheckpointError(f"{path}: storage {key} holds {len(raw)} bytes, expected "
                                  f"{ls.numel * ls.stype.itemsize}; the file is truncated")
        ls.storage = _Storage(ls.stype, raw, numel, f"storage {key}")
    return obj


# Wrappers seen around state dicts in training scripts, tried in this order.
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "module")


def _tensors_of(path, d: dict) -> dict:
    tensors = {k: v for k, v in d.items() if isinstance(v, _Tensor)}
    for k in tensors:
        if not isinstance(k, str):
            raise CheckpointError(f"{path}: a tensor is stored under the key {k!r}, not a parameter name; the file "
                                  "is corrupt")
    return tensors


def _state_dict_of(path, obj) -> dict:
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a state dict")
    tensors = _tensors_of(path, obj)
    if tensors:
        return tensors
    for w in WRAPPER_KEYS:
        inner = obj.get(w)
        if isinstance(inner, dict):
            t = _tensors_of(path, inner)
            if t:
                return t
    keys = ", ".join(repr(k) for k in list(obj)[:8])
    raise CheckpointError(f"{path}: no tensors found at the top level or under {', '.join(WRAPPER_KEYS)} "
                          f"(top-level keys: {keys or 'none'})")


def load_pth(path) -> dict[str, np.ndarray]:
    """State dict of a `torch.save` file as numpy arrays (bf16 widened to f32)."""
    path = Path(path)
    data = path.read_bytes()
    if data[:4] == ZIP_MAGIC:
        obj = _load_zip(path, data)
    elif data[:1] == b"\x80":
        obj = _load_legacy(path, data)
    elif not data:
        raise CheckpointError(f"{path}: the file is empty")
    else:
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (starts with {data[:8]!r}; expected a zip "
                              "archive 'PK\\x03\\x04' or a pickle '\\x80\\x02')")
    return {k: t.materialise(k, path) for k, t in _state_dict_of(path, obj).items()}


SAFETENSORS_DTYPES = {"F32": "<f4", "F16": "<f2", "F64": "<f8", "I64": "<i8", "I32": "<i4", "I16": "<i2",
                      "I8": "i1", "U8": "u1", "BOOL": "?"}


def load_safetensors(path) -> dict[str, np.ndarray]:
    """Like weights.read_safetensors, plus F16 and integer types, with errors that name the file."""
    path = Path(path)
    raw = path.read_bytes()
    if len(raw) < 8:
        raise CheckpointError(f"{path}: too short for a safetensors file")
    (hlen,) = struct.unpack("<Q", raw[:8])
    if hlen > len(raw) - 8:
        raise CheckpointError(f"{path}: header length {hlen} exceeds the file; truncated or not safetensors")
    try:
        header = json.loads(raw[8:8 + hlen])
    except ValueError as e:
        raise CheckpointError(f"{path}: unreadable safetensors header ({e})") from None
    base = 8 + hlen
    out = {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        dt, shape = info.get("dtype"), info.get("shape")
        lo, hi = info.get("data_offsets", (0, -1))
        if base + hi > len(raw):
            raise CheckpointError(f"{path}: tensor '{key}' ends at byte {base + hi}, past the end of the file "
                                  f"({len(raw)} bytes); the file is truncated")
        buf = raw[base + lo: base + hi]
        if dt == "BF16":
            arr = (np.frombuffer(buf, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        elif dt in SAFETENSORS_DTYPES:
            arr = np.frombuffer(buf, dtype=SAFETENSORS_DTYPES[dt])
        else:
            raise CheckpointError(f"{path}: tensor '{key}' has unsupported dtype {dt}")
        if arr.size != int(np.prod(shape)):
            raise CheckpointError(f"{path}: tensor '{key}' holds {arr.size} elements for shape {shape}")
        out[key] = arr.reshape(shape).copy()
    return out


def load_checkpoint(path) -> dict[str, np.ndarray]:
    """Any supported checkpoint file -> {key: array}, with a `module.` prefix (DataParallel) removed."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    with open(path, "rb") as f:
        head = f.read(8)
    is_st = path.suffix == ".safetensors" or (
        len(head) == 8 and head[:4] != ZIP_MAGIC and head[:1] != b"\x80"
        and struct.unpack("<Q", head)[0] < path.stat().st_size)
    tensors = load_safetensors(path) if is_st else load_pth(path)
    if tensors and all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return tensors


# ---------------------------------------------------------------------------
# Writing (test fixtures): the same layout torch.save produces, without torch
# ---------------------------------------------------------------------------

_NP_TO_STORAGE = {np.dtype("<f4"): "FloatStorage", np.dtype("<f2"): "HalfStorage",
                  np.dtype("<f8"): "DoubleStorage", np.dtype("<i8"): "LongStorage"}


class _Ops:
    """Hand-emitted pickle protocol 2: the writer must name torch globals without importing torch."""

    def __init__(self):
        self.b = bytearray(b"\x80\x02")

    def glob(self, module, name):
        self.b += b"c" + module.encode() + b"\n" + name.encode() + b"\n"

    def text(self, s):
        e = s.encode()
        self.b += b"X" + struct.pack("<I", len(e)) + e

    def int(self, v):
        if -(2 ** 31) <= v < 2 ** 31:
            self.b += b"J" + struct.pack("<i", v)
        else:
            self.b += b"\x8a\x08" + struct.pack("<q", v)

    def tuple(self, items):
        self.b += b"("
        for v in items:
            self.int(v)
        self.b += b"t"

    def ordered_dict(self):
        self.glob("collections", "OrderedDict")
        self.b += b")R"


def _pickle_state_dict(entries, wrapper, legacy):
    """entries: [(key, storage class, storage key, numel, shape)]."""
    p = _Ops()
    if wrapper:
        p.b += b"}("
        p.text(wrapper)
    p.ordered_dict()
    p.b += b"("
    for key, cls, skey, numel, shape in entries:
        p.text(key)
        p.glob("torch._utils", "_rebuild_tensor_v2")
        p.b += b"("                                   # args of _rebuild_tensor_v2
        p.b += b"("                                   # persistent id
        p.text("storage")
        p.glob("torch", cls)
        p.text(skey)
        p.text("cpu")
        p.int(numel)
        if legacy:
            p.b += b"N"                               # view metadata
        p.b += b"tQ"
        p.int(0)
        p.tuple(shape)
        p.tuple([int(np.prod(shape[i + 1:])) for i in range(len(shape))])
        p.b += b"\x89"                                # requires_grad False
        p.ordered_dict()                              # backward hooks
        p.b += b"tR"
    p.b += b"u"
    if wrapper:
        p.text("epoch")
        p.int(1)
        p.b += b"u"
    p.b += b"."
    return bytes(p.b)


def save_pth(path, tensors: dict, wrapper: str | None = None, bf16_keys=(), legacy=False, archive="archive"):
    """Write `tensors` ({key: numpy array}) the way `torch.save(state_dict)` lays them out.

    For test fixtures, so CI needs no torch. `bf16_keys` are stored as bf16 storages (values
    truncated), `wrapper` nests the dict under that key next to an `epoch` entry, and `legacy`
    writes the pre-1.6 stream format instead of the zip archive.
    """
    entries, blobs = [], []
    for i, (k, v) in enumerate(tensors.items()):
        a = np.ascontiguousarray(v)
        if k in bf16_keys:
            raw = (a.astype("<f4").view("<u4") >> 16).astype("<u2").tobytes()
            cls = "BFloat16Storage"
        else:
            a = a.astype(a.dtype.newbyteorder("<"))
            cls = _NP_TO_STORAGE[a.dtype]
            raw = a.tobytes()
        entries.append((k, cls, str(i), int(a.size), tuple(int(d) for d in a.shape)))
        blobs.append((str(i), int(a.size), raw))
    pickled = _pickle_state_dict(entries, wrapper, legacy)
    path = Path(path)
    if legacy:
        with open(path, "wb") as f:
            for head in (LEGACY_MAGIC, 1001, {"protocol_version": 1001, "little_endian": True,
                                              "type_sizes": {"short": 2, "int": 4, "long": 4}}):
                pickle.dump(head, f, protocol=2)
            f.write(pickled)
            pickle.dump([key for key, _, _ in blobs], f, protocol=2)
            for _, numel, raw in blobs:
                f.write(struct.pack("<q", numel))
                f.write(raw)
        return
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr(f"{archive}/data.pkl", pickled)
        zf.writestr(f"{archive}/byteorder", "little")
        for key, _, raw in blobs:
            zf.writestr(f"{archive}/data/{key}", raw)
        zf.writestr(f"{archive}/version", "3\n")
