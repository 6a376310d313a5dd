"""A fast, read-only GGUF reader: header, key/value metadata and tensor infos over one memory map.

Why this exists: gguf-py's `GGUFReader` builds one numpy view per array element (two per string),
so opening a Qwen3.5 file -- 248,320 tokens plus ~247k merges -- takes 6-10 s before anything
runs. Here the header is walked with `struct` on a single memoryview of the map: a string array
becomes a table of offsets (one tight loop over the length prefixes) decoded only when asked for,
a numeric array one `np.frombuffer` view, and tensor data views of the map (never copied).

It mirrors gguf-py's layout rules (GGUF v2/v3, little-endian; `general.alignment`, default 32, a
uint32 power of two; the data section starts at the end of the tensor infos rounded up to it;
tensor offsets are relative to that; the dtypes and shapes of gguf-py's `_build_tensors`) and
offers the part of its interface wgmtp uses, with the same values: `fields[key].contents()` and
`.types`, `tensors[i].name/.tensor_type/.shape/.n_elements/.n_bytes/.data_offset/.data`, and
`data` (the uint8 map). Failures are ValueError/KeyError/... as in gguf-py, so
`gguf_file.open_reader` turns them into the same one-line errors. gguf-py stays the source of
the enums and block sizes.
"""
from __future__ import annotations

import math
import os
import struct
from array import array
from typing import Any, Union

import numpy as np
from gguf import GGML_QUANT_SIZES, GGUF_DEFAULT_ALIGNMENT
from gguf import GGMLQuantizationType as QT
from gguf import GGUFValueType as VT
from gguf.quants import quant_shape_to_byte_shape

SUPPORTED_VERSIONS = (2, 3)

# struct format of every scalar value type (all little-endian).
_SCALAR_FMT = {VT.UINT8: "B", VT.INT8: "b", VT.UINT16: "H", VT.INT16: "h", VT.UINT32: "I",
               VT.INT32: "i", VT.FLOAT32: "f", VT.UINT64: "Q", VT.INT64: "q", VT.FLOAT64: "d",
               VT.BOOL: "?"}
_SCALAR = {vt: struct.Struct("<" + f) for vt, f in _SCALAR_FMT.items()}
_NP_DTYPE = {vt: np.dtype("<" + f) for vt, f in _SCALAR_FMT.items()}

# Tensor types gguf-py maps as typed arrays; every other type is uint8 [..., bytes per row].
_TENSOR_DTYPE = {QT.F32: np.float32, QT.F16: np.float16, QT.F64: np.float64, QT.I8: np.int8,
                 QT.I16: np.int16, QT.I32: np.int32, QT.I64: np.int64}

_U32 = struct.Struct("<I").unpack_from
_U64 = struct.Struct("<Q").unpack_from


class _BadType(Exception):
    """A value type id that GGUF does not define (turned into a message naming the key)."""


def _value_type(n: int, key: str | None = None) -> VT:
    try:
        return VT(n)
    except ValueError:
        if key is None:
            raise _BadType(n) from None
        raise ValueError(f"metadata key '{_clip(key)}' has an unknown value type {n}") from None


def _clip(text: str, n: int = 80) -> str:
    """A name from the file fit for a one-line message: control characters escaped, cut to n."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[: n + 1])
    return text if len(text) <= n else text[:n] + "..."


class _Strings:
    """A string array as the offsets of its length prefixes: string i is the bytes
    `[pos[i] + 8, pos[i + 1])` of the map. Decoding waits until someone asks."""

    __slots__ = ("buf", "pos")

    def __init__(self, buf: memoryview, pos: array) -> None:
        self.buf = buf
        self.pos = pos

    def __len__(self) -> int:
        return len(self.pos) - 1

    def decode(self, errors: str = "strict") -> list[str]:
        # one copy of the whole region, then slice-and-decode: ~60 ms for 500k strings
        pos = self.pos
        base = pos[0]
        blob = self.buf[base:pos[-1]].tobytes()
        return [blob[a + 8 - base:b - base].decode("utf-8", errors) for a, b in zip(pos, pos[1:])]

    def item(self, i: int) -> str:
        i = range(len(self))[i]              # negative indices and IndexError as a list
        a, b = self.pos[i], self.pos[i + 1]
        return str(self.buf[a + 8:b], "utf-8")


# An array's elements: one numeric view, a string table, or (nested arrays) a list of those.
_ArrayValue = Union[np.ndarray, _Strings, list]


def _flat(v: _ArrayValue, errors: str = "strict") -> list[Any]:
    """Python values of an array, nested arrays flattened as gguf-py flattens them."""
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, _Strings):
        return v.decode(errors)
    return [x for sub in v for x in _flat(sub, errors)]


def _count(v: _ArrayValue) -> int:
    return len(v) if not isinstance(v, list) else sum(_count(sub) for sub in v)


class Field:
    """One key/value pair. `contents()` and `types` equal gguf-py's `ReaderField`'s;
    `strings()` / `ints()` / `len()` are the fast paths for big arrays."""

    __slots__ = ("name", "offset", "types", "_value")

    def __init__(self, name: str, offset: int, types: list[VT], value: Any) -> None:
        self.name = name
        self.offset = offset          # of the key, like gguf-py
        self.types = types            # [ARRAY, elem types...] or [scalar type]; [ARRAY] if empty
        self._value = value           # scalar (bytes for a string) or an _ArrayValue

    @property
    def is_array(self) -> bool:
        return self.types[0] == VT.ARRAY

    def __len__(self) -> int:
        """Number of (flattened) array elements; 1 for a scalar (gguf-py's `len(field.data)`)."""
        return _count(self._value) if self.is_array else 1

    def contents(self, index_or_slice: int | slice = slice(None)) -> Any:
        """str / int / float / bool for a scalar, a list for an array (as gguf-py)."""
        v = self._value
        if not self.is_array:
            return v.decode("utf-8") if isinstance(v, bytes) else v
        if isinstance(index_or_slice, int):
            if isinstance(v, _Strings):
                return v.item(index_or_slice)
            if isinstance(v, np.ndarray):
                return v[index_or_slice].item()
        return _flat(v)[index_or_slice]

    def strings(self, errors: str = "strict") -> list[str]:
        """The decoded elements of a string array (`errors` as in `bytes.decode`)."""
        if not (self.is_array and (self.types[-1] == VT.STRING or len(self) == 0)):
            raise TypeError(f"field '{self.name}' is not a string array ({self._type_name()})")
        return _flat(self._value, errors)

    def ints(self) -> list[int]:
        """The elements of a numeric array as Python ints (floats truncated, bools 0/1)."""
        v = self._value
        if not self.is_array or self.types[-1] == VT.STRING:
            raise TypeError(f"field '{self.name}' is not a numeric array ({self._type_name()})")
        if isinstance(v, np.ndarray) and v.dtype.kind in "iu":
            return v.tolist()
        return [int(x) for x in _flat(v)]

    def _type_name(self) -> str:
        return "[" + ", ".join(t.name for t in self.types) + "]"

    def __repr__(self) -> str:
        return f"Field({self.name!r}, {self._type_name()}, n={len(self)})"


class Tensor:
    """One tensor info. `data` is a view of the map with gguf-py's dtype and shape, made on
    first use so a tensor that runs past the end of the file can be reported by name."""

    __slots__ = ("name", "tensor_type", "shape", "n_elements", "n_bytes", "data_offset",
                 "_map", "_dtype", "_np_shape", "_data")

    def __init__(self, name: str, tensor_type: QT, shape: np.ndarray, data_offset: int,
                 mm: np.ndarray) -> None:
        self.name = name
        self.tensor_type = tensor_type
        self.shape = shape                      # uint64, GGUF order (ne0 first), like gguf-py
        self.n_elements = math.prod(int(d) for d in shape)
        block, type_size = GGML_QUANT_SIZES[tensor_type]
        self.n_bytes = self.n_elements * type_size // block
        self.data_offset = data_offset          # absolute
        np_shape = tuple(int(d) for d in reversed(shape))
        dtype = _TENSOR_DTYPE.get(tensor_type)
        if dtype is None:                       # block types (and BF16): uint8 rows of bytes
            dtype, np_shape = np.uint8, quant_shape_to_byte_shape(np_shape, tensor_type)
        self._map, self._dtype, self._np_shape = mm, np.dtype(dtype), np_shape
        self._data: np.ndarray | None = None

    @property
    def data(self) -> np.ndarray:
        if self._data is None:
            end = self.data_offset + self.n_bytes
            if end > len(self._map):
                raise ValueError(f"tensor '{self.name}' data ends at byte {end}, "
                                 f"past the end of the file ({len(self._map)} bytes)")
            count = self.n_bytes // self._dtype.itemsize
            self._data = np.frombuffer(self._map, self._dtype, count, self.data_offset).reshape(self._np_shape)
        return self._data

    def __repr__(self) -> str:
        return f"Tensor({self.name!r}, {self.tensor_type.name}, {[int(d) for d in self.shape]})"


class GGUFReader:
    """Parse a GGUF file's header; tensor data stays in the read-only memory map `data`."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = str(path)
        self.data: np.ndarray = np.memmap(path, mode="r")   # uint8, the whole file
        self._buf = memoryview(self.data)
        self._size = len(self.data)
        self.fields: dict[str, Field] = {}
        self.tensors: list[Tensor] = []
        self.alignment = GGUF_DEFAULT_ALIGNMENT
        self.version = 0
        self.data_offset = 0                                 # start of the tensor data section
        try:
            self._parse()
        except struct.error as e:  # a read ran off the end of the file
            raise ValueError(f"file is truncated inside the header ({e})") from None

    def get_field(self, key: str) -> Field | None:
        return self.fields.get(key)

    # ---- parsing

    def _parse(self) -> None:
        buf = self._buf
        if buf[:4].tobytes() != b"GGUF":
            raise ValueError("GGUF magic invalid")
        version = _U32(buf, 4)[0]
        if version & 0xFFFF == 0 and version != 0:
            raise ValueError(f"big-endian GGUF files are not supported (version field {version:#x})")
        if version not in SUPPORTED_VERSIONS:
            raise ValueError(f"file appears to be version {version}; "
                             f"only versions {' and '.join(map(str, SUPPORTED_VERSIONS))} are supported")
        self.version = version
        n_tensors, n_kv = struct.unpack_from("<QQ", buf, 8)
        self._push(Field("GGUF.version", 4, [VT.UINT32], version))
        self._push(Field("GGUF.tensor_count", 8, [VT.UINT64], n_tensors))
        self._push(Field("GGUF.kv_count", 16, [VT.UINT64], n_kv))
        off = 24
        for _ in range(n_kv):
            key_off = off
            key, off = self._str(off)
            name = key.decode("utf-8")
            vt = _value_type(_U32(buf, off)[0], name)
            try:
                types, value, off = self._value(off + 4, vt)
            except _BadType as e:
                raise ValueError(f"metadata key '{_clip(name)}' has an unknown value type {e.args[0]}") from None
            self._push(Field(name, key_off, types, value))
        infos = []
        for _ in range(n_tensors):
            name, off = self._str(off)
            n_dims = _U32(buf, off)[0]
            dims = self._numbers(off + 4, VT.UINT64, n_dims).astype(np.uint64)
            off += 4 + 8 * n_dims
            ttype, rel = struct.unpack_from("<IQ", buf, off)
            off += 12
            tname = name.decode("utf-8")
            try:
                qt = QT(ttype)
            except ValueError:
                raise ValueError(f"{ttype} is not a valid GGMLQuantizationType (tensor '{_clip(tname)}')") from None
            infos.append((tname, dims, qt, rel))
        self._set_alignment()
        self.data_offset = -(-off // self.alignment) * self.alignment
        names: set[str] = set()
        for name, dims, ttype, rel in infos:
            if name in names:
                raise ValueError(f"Found duplicated tensor with name {name}")
            names.add(name)
            self.tensors.append(Tensor(name, ttype, dims, self.data_offset + rel, self.data))

    def _push(self, f: Field) -> None:
        if f.name in self.fields:
            raise KeyError(f"Duplicate {f.name} already in list at offset {f.offset}")
        self.fields[f.name] = f

    def _set_alignment(self) -> None:
        f = self.fields.get("general.alignment")
        if f is None:
            return
        if f.types != [VT.UINT32]:
            raise ValueError("Bad type for general.alignment field")
        a = f.contents()
        if a == 0 or a & (a - 1):
            raise ValueError("Invalid alignment: must be a non-zero power of two")
        self.alignment = a

    def _str(self, off: int) -> tuple[bytes, int]:
        """(raw bytes, next offset) of the length-prefixed string at `off`."""
        n = _U64(self._buf, off)[0]
        end = off + 8 + n
        if end > self._size:
            raise ValueError(f"a string at offset {off} ({n} bytes) runs past the end of the file")
        return self._buf[off + 8:end].tobytes(), end

    def _numbers(self, off: int, vt: VT, n: int) -> np.ndarray:
        """`n` values of scalar type `vt` as one view of the map."""
        dt = _NP_DTYPE[vt]
        if off + n * dt.itemsize > self._size:
            raise ValueError(f"an array of {n} {vt.name} at offset {off} runs past the end of the file")
        return np.frombuffer(self.data, dt, n, off)

    def _value(self, off: int, vt: VT) -> tuple[list[VT], Any, int]:
        """(types, value, next offset) of one value of type `vt` at `off`."""
        if vt == VT.STRING:
            s, off = self._str(off)
            return [vt], s, off
        st = _SCALAR.get(vt)
        if st is not None:
            return [vt], st.unpack_from(self._buf, off)[0], off + st.size
        if vt != VT.ARRAY:
            raise ValueError(f"Unknown/unhandled field type {vt}")
        raw_it, n = struct.unpack_from("<IQ", self._buf, off)
        off += 12
        if n == 0:  # gguf-py reads no element, so it records (and checks) no element type
            return [VT.ARRAY], np.empty(0, np.uint8), off
        it = _value_type(raw_it)
        if it == VT.STRING:
            strs = self._strings(off, n)
            return [VT.ARRAY, it], strs, strs.pos[-1]
        if it in _SCALAR:
            arr = self._numbers(off, it, n)
            return [VT.ARRAY, it], arr, off + arr.nbytes
        if it != VT.ARRAY:
            raise ValueError(f"Unknown/unhandled field type {it}")
        subs, types = [], []
        for i in range(n):  # arrays of arrays: rare and small, flattened like gguf-py
            t, sub, off = self._value(off, it)
            if i == 0:      # gguf-py takes the element types from the first element
                types = t
            subs.append(sub)
        return [VT.ARRAY] + types, subs, off

    def _strings(self, off: int, n: int) -> _Strings:
        """Walk `n` length-prefixed strings: the one loop that has to touch every element."""
        if n > (self._size - off) // 8:
            raise ValueError(f"a string array of {n} items at offset {off} runs past the end of the file")
        buf, u64 = self._buf, _U64
        pos = array("Q")
        push = pos.append
        for _ in range(n):
            push(off)
            off += 8 + u64(buf, off)[0]
        push(off)
        if off > self._size:
            raise ValueError(f"a string array at offset {pos[0]} runs past the end of the file")
        return _Strings(buf, pos)
