"""Read a GGUF file's header: its metadata and tensor infos, never its weights.

Our own parser rather than the `gguf` package's GGUFReader, which maps the whole file:
`gguf_header_read` reads a stream front to back with `read(n)` only (no seek, no size),
so the same code reads a local file or, later, HTTP Range reads of a remote one, and it
stops after the tensor infos. What it refuses (bad magic, a version or type it does not
know, a stream that ends inside the header, a header larger than `limit`) raises
FormatError with a message naming the problem and where.

The layout (little-endian, GGUF v2 and v3; v1 had 32-bit counts and is not read):

    "GGUF" · version u32 · tensor count u64 · metadata count u64
    metadata: key (string) · value type u32 · value
    tensor infos: name (string) · n_dims u32 · dims u64 x n_dims · ggml type u32 · offset u64
    padding to general.alignment (default 32), then the tensor data

A string is a u64 length and UTF-8 bytes; an array is an item type u32, a count u64 and
the items (arrays nest). Arrays longer than ARRAY_KEEP (the tokenizer's tokens, merges,
scores) are read past without being stored: a SkippedArray keeps their item type and
length, which is all a fit needs (the vocabulary size).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any, BinaryIO

from .errors import FormatError

MAGIC = b"GGUF"
VERSIONS = (2, 3)
DEFAULT_LIMIT = 64 * 1024**2  # the largest vocabularies (256K tokens) take about 6 MB
DEFAULT_ALIGNMENT = 32
ARRAY_KEEP = 1024  # longer arrays are skipped: per-layer arrays stay, vocabularies do not
MAX_ARRAY_DEPTH = 8  # nested arrays deeper than this are refused, not recursed into
MAX_DIMS = 4  # GGML_MAX_DIMS
CHUNK = 256 * 1024  # bytes asked of the stream at a time (a remote reader wants few reads)


class ValueType(IntEnum):
    UINT8 = 0
    INT8 = 1
    UINT16 = 2
    INT16 = 3
    UINT32 = 4
    INT32 = 5
    FLOAT32 = 6
    BOOL = 7
    STRING = 8
    ARRAY = 9
    UINT64 = 10
    INT64 = 11
    FLOAT64 = 12


_SCALAR_FORMATS = {
    ValueType.UINT8: "<B", ValueType.INT8: "<b", ValueType.UINT16: "<H",
    ValueType.INT16: "<h", ValueType.UINT32: "<I", ValueType.INT32: "<i",
    ValueType.FLOAT32: "<f", ValueType.BOOL: "<?", ValueType.UINT64: "<Q",
    ValueType.INT64: "<q", ValueType.FLOAT64: "<d",
}  # fmt: skip
_SCALARS = {t: struct.Struct(f) for t, f in _SCALAR_FORMATS.items()}
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")

# ggml tensor types: name, elements per block, bytes per block (ggml's type traits).
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22), 7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34),
    9: ("Q8_1", 32, 36),  # two f16 and 32 int8 (gguf-py's table still says 40)
    10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110), 12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176), 14: ("Q6_K", 256, 210), 15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66), 17: ("IQ2_XS", 256, 74), 18: ("IQ3_XXS", 256, 98),
    19: ("IQ1_S", 256, 50), 20: ("IQ4_NL", 32, 18), 21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82), 23: ("IQ4_XS", 256, 136), 24: ("I8", 1, 1), 25: ("I16", 1, 2),
    26: ("I32", 1, 4), 27: ("I64", 1, 8), 28: ("F64", 1, 8), 29: ("IQ1_M", 256, 56),
    30: ("BF16", 1, 2), 34: ("TQ1_0", 256, 54), 35: ("TQ2_0", 256, 66),
    39: ("MXFP4", 32, 17), 40: ("NVFP4", 64, 36), 41: ("Q1_0", 128, 18),
}  # fmt: skip

# general.file_type (llama.cpp's llama_ftype) -> the quantization name people use.
FILE_TYPES: dict[int, str] = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 4: "Q4_1_SOME_F16", 7: "Q8_0", 8: "Q5_0",
    9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S",
    15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS",
    21: "Q2_K_S", 22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S",
    27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16",
    36: "TQ1_0", 37: "TQ2_0", 38: "MXFP4_MOE", 39: "NVFP4", 40: "Q1_0",
}  # fmt: skip

# <arch>.pooling_type (llama.cpp's llama_pooling_type).
POOLING_TYPES = {0: "none", 1: "mean", 2: "cls", 3: "last", 4: "rank"}


@dataclass(frozen=True)
class SkippedArray:
    """An array read past without storing its items: only its item type and length."""

    item_type: ValueType
    length: int


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int  # from the start of the tensor data

    @property
    def type_name(self) -> str:
        return GGML_TYPES[self.ggml_type][0]

    @property
    def n_elements(self) -> int:
        n = 1
        for dim in self.shape:
            n *= dim
        return n

    @property
    def n_bytes(self) -> int:
        """Return the tensor's exact size in the file: whole blocks of its ggml type."""
        _, block, size = GGML_TYPES[self.ggml_type]
        return self.n_elements // block * size


@dataclass(frozen=True)
class GGUFHeader:
    version: int
    metadata: dict[str, Any]
    tensors: tuple[TensorInfo, ...]
    header_bytes: int  # bytes read: the magic up to the end of the last tensor info

    @property
    def alignment(self) -> int:
        return self.metadata.get("general.alignment", DEFAULT_ALIGNMENT)

    @property
    def data_offset(self) -> int:
        """Return where the tensor data starts: the header padded to the alignment."""
        return -(-self.header_bytes // self.alignment) * self.alignment

    @property
    def tensor_bytes(self) -> int:
        return sum(t.n_bytes for t in self.tensors)


class _Reader:
    """Sequential reads of a stream, buffered, counting what was consumed, within a limit."""

    def __init__(self, stream: BinaryIO, limit: int):
        self._stream = stream
        self._limit = limit
        self._buf = b""
        self._pos = 0
        self._fetched = 0  # bytes taken from the stream (consumed plus what is buffered)

    @property
    def consumed(self) -> int:
        return self._fetched - (len(self._buf) - self._pos)

    def _too_large(self, what: str) -> FormatError:
        return FormatError(
            f"The GGUF header is larger than {self._limit:,} bytes (at {what}, "
            f"{self.consumed:,} bytes in); it is refused rather than read.",
            details={"limit": self._limit, "offset": self.consumed},
        )

    def expect(self, n: int, what: str) -> None:
        """Refuse at once what cannot fit in the limit (a corrupt count or length)."""
        if self.consumed + n > self._limit:
            raise self._too_large(what)

    def _ensure(self, n: int, what: str) -> None:
        """Make n bytes available at the buffer position, reading more of the stream."""
        missing = n - (len(self._buf) - self._pos)
        if missing <= 0:
            return
        self.expect(n, what)
        start = self.consumed
        parts = [self._buf[self._pos :]]
        while missing > 0:
            want = min(max(CHUNK, missing), self._limit - self._fetched)
            data = self._stream.read(want)
            if not data:
                raise FormatError(
                    f"The GGUF file ends inside its header: {what} needs {n:,} bytes at "
                    f"offset {start:,}, and the file has {self._fetched:,} bytes.",
                    details={"offset": start, "size": self._fetched},
                )
            parts.append(data)
            self._fetched += len(data)
            missing -= len(data)
        self._buf = b"".join(parts)
        self._pos = 0

    def take(self, n: int, what: str) -> bytes:
        self._ensure(n, what)
        data = self._buf[self._pos : self._pos + n]
        self._pos += n
        return data

    def unpack(self, fmt: struct.Struct, what: str):
        self._ensure(fmt.size, what)
        (value,) = fmt.unpack_from(self._buf, self._pos)
        self._pos += fmt.size
        return value

    def skip(self, n: int, what: str) -> None:
        """Read past n bytes, a buffer at a time, without keeping them."""
        self.expect(n, what)
        while n > 0:
            available = len(self._buf) - self._pos
            if available == 0:
                self._ensure(min(n, CHUNK), what)
                continue
            step = min(n, available)
            self._pos += step
            n -= step

    def u32(self, what: str) -> int:
        return self.unpack(_U32, what)

    def u64(self, what: str) -> int:
        return self.unpack(_U64, what)

    def string(self, what: str) -> str:
        length = self.u64(what)
        data = self.take(length, what)
        return data.decode("utf-8", errors="replace")

    def skip_strings(self, count: int, what: str) -> None:
        self.expect(count * _U64.size, what)
        for _ in range(count):
            self.skip(self.u64(what), what)


def _value_type(raw: int, where: str) -> ValueType:
    try:
        return ValueType(raw)
    except ValueError:
        raise FormatError(
            f"The GGUF header has an unknown value type {raw} ({where}).",
            details={"value_type": raw, "where": where},
        ) from None


def _read_value(reader: _Reader, vtype: ValueType, where: str, depth: int = 0) -> Any:
    if vtype == ValueType.STRING:
        return reader.string(where)
    if vtype != ValueType.ARRAY:
        return reader.unpack(_SCALARS[vtype], where)
    if depth >= MAX_ARRAY_DEPTH:
        raise FormatError(
            f"The GGUF header nests arrays deeper than {MAX_ARRAY_DEPTH} ({where}).",
            details={"where": where},
        )
    item_type = _value_type(reader.u32(where), where)
    length = reader.u64(where)
    if length <= ARRAY_KEEP:
        return [_read_value(reader, item_type, where, depth + 1) for _ in range(length)]
    if item_type == ValueType.STRING:
        reader.skip_strings(length, where)
    elif item_type == ValueType.ARRAY:
        reader.expect(length * (_U32.size + _U64.size), where)
        for _ in range(length):
            _read_value(reader, item_type, where, depth + 1)
    else:
        reader.skip(length * _SCALARS[item_type].size, where)
    return SkippedArray(item_type=item_type, length=length)


def gguf_header_read(stream: BinaryIO, *, limit: int = DEFAULT_LIMIT) -> GGUFHeader:
    """Read a GGUF header from a stream at its start, with `read(n)` only; stop after it.

    Raise FormatError for anything that is not a GGUF v2/v3 header within `limit` bytes.
    """
    reader = _Reader(stream, limit)
    magic = reader.take(4, "the magic")
    if magic != MAGIC:
        raise FormatError(
            f"Not a GGUF file: it starts with {magic!r}, not {MAGIC!r}.",
            details={"magic": magic.hex()},
        )
    version = reader.u32("the version")
    if version not in VERSIONS:
        if version & 0xFFFF == 0 and version >> 24 in VERSIONS:
            message = "The GGUF file is big-endian; only little-endian files are read."
        elif version == 1:
            message = "GGUF version 1 is not supported (only versions 2 and 3)."
        else:
            message = f"Unknown GGUF version {version} (versions 2 and 3 are read)."
        raise FormatError(message, details={"version": version})
    tensor_count = reader.u64("the tensor count")
    kv_count = reader.u64("the metadata count")
    # The smallest entry of each (an empty name, one byte of value, no dimensions).
    reader.expect(kv_count * 13 + tensor_count * 24, "the metadata and tensor counts")

    metadata: dict[str, Any] = {}
    for index in range(kv_count):
        key = reader.string(f"metadata key #{index + 1}")
        vtype = _value_type(reader.u32(f"the type of {key}"), key)
        metadata[key] = _read_value(reader, vtype, key)

    tensors = []
    for index in range(tensor_count):
        name = reader.string(f"tensor name #{index + 1}")
        n_dims = reader.u32(f"the dimensions of tensor {name}")
        if n_dims > MAX_DIMS:
            raise FormatError(
                f"Tensor {name} has {n_dims} dimensions (at most {MAX_DIMS}).",
                details={"tensor": name},
            )
        shape = tuple(reader.u64(f"the shape of tensor {name}") for _ in range(n_dims))
        ggml_type = reader.u32(f"the type of tensor {name}")
        if ggml_type not in GGML_TYPES:
            raise FormatError(
                f"Tensor {name} has an unknown ggml type {ggml_type}.",
                details={"tensor": name, "ggml_type": ggml_type},
            )
        block = GGML_TYPES[ggml_type][1]
        if shape and shape[0] % block:
            raise FormatError(
                f"Tensor {name}'s first dimension {shape[0]} is not a multiple of the "
                f"{GGML_TYPES[ggml_type][0]} block size {block}.",
                details={"tensor": name},
            )
        offset = reader.u64(f"the offset of tensor {name}")
        tensors.append(TensorInfo(name=name, shape=shape, ggml_type=ggml_type, offset=offset))

    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
        raise FormatError(
            f"general.alignment must be a power of two (got {alignment!r}).",
            details={"alignment": repr(alignment)},
        )
    return GGUFHeader(
        version=version,
        metadata=metadata,
        tensors=tuple(tensors),
        header_bytes=reader.consumed,
    )


def gguf_header_of(path: str | Path, *, limit: int = DEFAULT_LIMIT) -> GGUFHeader:
    """Read the header of a GGUF file on disk."""
    with open(path, "rb", buffering=0) as stream:
        return gguf_header_read(stream, limit=limit)


def _length(value: Any) -> int | None:
    if isinstance(value, SkippedArray):
        return value.length
    if isinstance(value, list):
        return len(value)
    return None


def _first(value: Any) -> Any:
    """Return a per-layer array's first layer (as llama.cpp does for derived figures)."""
    if isinstance(value, list):
        return value[0] if value else None
    return value


def gguf_facts(header: GGUFHeader) -> dict[str, Any]:
    """Return what the runtime needs of a GGUF as JSON (Model.gguf_facts).

    Head counts may be per-layer lists (some architectures vary them). key_length and
    value_length default to embedding_length / head_count, as llama.cpp's do.
    """
    meta = header.metadata
    arch = meta.get("general.architecture")
    arch = arch if isinstance(arch, str) else None

    def of_arch(name: str) -> Any:
        return meta.get(f"{arch}.{name}") if arch else None

    embedding_length = of_arch("embedding_length")
    head_count = of_arch("attention.head_count")
    head_count_kv = of_arch("attention.head_count_kv")
    if head_count_kv is None:
        head_count_kv = head_count
    first_heads = _first(head_count)
    default_head_dim = embedding_length // first_heads if embedding_length and first_heads else None
    key_length = of_arch("attention.key_length") or default_head_dim
    value_length = of_arch("attention.value_length") or default_head_dim
    file_type = meta.get("general.file_type")
    vocab_size = of_arch("vocab_size") or _length(meta.get("tokenizer.ggml.tokens"))
    facts: dict[str, Any] = {
        "architecture": arch,
        "name": meta.get("general.name"),
        "block_count": of_arch("block_count"),
        "embedding_length": embedding_length,
        "head_count": head_count,
        "head_count_kv": head_count_kv,
        "key_length": key_length,
        "value_length": value_length,
        "context_length": of_arch("context_length"),
        "file_type": file_type,
        "quantization": (
            FILE_TYPES.get(file_type, f"file type {file_type}")
            if isinstance(file_type, int)
            else None
        ),
        "parameter_count": sum(t.n_elements for t in header.tensors),
        "tensor_bytes": header.tensor_bytes,
        "vocab_size": vocab_size,
        "header_bytes": header.header_bytes,
        "version": header.version,
    }
    sliding_window = of_arch("attention.sliding_window")
    if sliding_window is not None:
        facts["sliding_window"] = sliding_window
    pooling = of_arch("pooling_type")
    if pooling is not None:
        facts["pooling_type"] = POOLING_TYPES.get(pooling, str(pooling))
    if "split.count" in meta:
        facts["split_count"] = meta["split.count"]
        facts["split_no"] = meta.get("split.no", 0)
    return facts
