"""The GGUF header parser: tiny files written by GGUFWriter, corrupt ones, the real Gemma."""

import io
import struct

import gguf
import pytest

from models_app.errors import FormatError
from models_app.gguf import (
    ARRAY_KEEP,
    GGML_TYPES,
    SkippedArray,
    ValueType,
    gguf_facts,
    gguf_header_of,
    gguf_header_read,
)
from tests.gemma import gemma_file  # noqa: F401  (a fixture)
from tests.gguf_files import LLAMA_TENSORS, Q, llama_metadata, write_gguf

GV = gguf.GGUFValueType


class ReadOnly:
    """A stream with `read` and nothing else (no seek, no tell): what a remote reader has."""

    def __init__(self, data: bytes):
        self._data = data
        self._pos = 0
        self.reads = 0

    def read(self, n: int) -> bytes:
        self.reads += 1
        chunk = self._data[self._pos : self._pos + n]
        self._pos += len(chunk)
        return chunk


def _expected_bytes(tensors) -> int:
    total = 0
    for shape, qtype in tensors.values():
        block, size = gguf.GGML_QUANT_SIZES[qtype]
        n = 1
        for d in shape:
            n *= d
        total += n // block * size
    return total


def _assert_data_ends_the_file(header, size: int) -> None:
    """The last tensor's data (by offset and exact size) ends the file, up to its padding."""
    last = max(header.tensors, key=lambda t: t.offset)
    end = header.data_offset + last.offset + last.n_bytes
    assert end <= size < end + header.alignment


def test_llama_with_gqa_and_defaults(tmp_path):
    path = write_gguf(tmp_path / "tiny.gguf", metadata=llama_metadata())
    header = gguf_header_of(path)
    facts = gguf_facts(header)
    assert facts == {
        "architecture": "llama",
        "name": "Tiny Llama",
        "block_count": 2,
        "embedding_length": 64,
        "head_count": 8,
        "head_count_kv": 2,
        # No key/value length in the file: embedding_length / head_count, as llama.cpp.
        "key_length": 8,
        "value_length": 8,
        "context_length": 2048,
        "file_type": 15,
        "quantization": "Q4_K_M",
        "parameter_count": 64 * 100 + 64 * 64 + 64 * 16 + 256 * 64 * 2 + 64,
        "tensor_bytes": _expected_bytes(LLAMA_TENSORS),
        "vocab_size": 100,
        "header_bytes": header.header_bytes,
        "version": 3,
    }
    # The tensor infos end where gguf's own reader says the padding before the data starts.
    reader = gguf.GGUFReader(path)
    assert header.data_offset == reader.data_offset
    assert header.header_bytes <= reader.data_offset < header.header_bytes + header.alignment
    assert [(t.name, t.n_bytes) for t in header.tensors] == [
        (t.name, int(t.n_bytes)) for t in reader.tensors
    ]
    _assert_data_ends_the_file(header, path.stat().st_size)


def test_reads_sequentially_and_no_further_than_the_header(tmp_path):
    path = write_gguf(tmp_path / "tiny.gguf", metadata=llama_metadata())
    data = path.read_bytes()
    size = gguf_header_of(path).header_bytes
    stream = ReadOnly(data[:size])  # the stream ends exactly where the header does
    header = gguf_header_read(stream)
    assert header.header_bytes == size
    assert len(header.tensors) == len(LLAMA_TENSORS)
    with pytest.raises(FormatError, match="ends inside its header"):
        gguf_header_read(ReadOnly(data[: size - 1]))


def test_a_stream_that_answers_a_few_bytes_at_a_time(tmp_path):
    path = write_gguf(tmp_path / "tiny.gguf", metadata=llama_metadata())

    class Trickle(ReadOnly):
        def read(self, n):
            return super().read(min(n, 7))

    stream = Trickle(path.read_bytes())
    header = gguf_header_read(stream)
    assert header == gguf_header_of(path)
    assert stream.reads > 100


@pytest.mark.parametrize(
    ("arch", "meta", "expected"),
    [
        (
            "qwen2",
            {
                "qwen2.block_count": 3,
                "qwen2.embedding_length": 128,
                "qwen2.attention.head_count": 4,
                "qwen2.attention.head_count_kv": 1,
                "qwen2.context_length": 32768,
                "general.file_type": 17,
            },
            {"head_count_kv": 1, "key_length": 32, "quantization": "Q5_K_M"},
        ),
        (
            # Gemma 3 states its head dim (256 with a 640 embedding and 4 heads).
            "gemma3",
            {
                "gemma3.block_count": 2,
                "gemma3.embedding_length": 640,
                "gemma3.attention.head_count": 4,
                "gemma3.attention.head_count_kv": 1,
                "gemma3.attention.key_length": 256,
                "gemma3.attention.value_length": 256,
                "gemma3.attention.sliding_window": 512,
                "gemma3.context_length": 32768,
                "general.file_type": 7,
            },
            {"key_length": 256, "sliding_window": 512, "quantization": "Q8_0"},
        ),
        (
            # An MLA-style model: keys longer than values.
            "deepseek2",
            {
                "deepseek2.block_count": 2,
                "deepseek2.embedding_length": 64,
                "deepseek2.attention.head_count": 4,
                "deepseek2.attention.head_count_kv": 4,
                "deepseek2.attention.key_length": 24,
                "deepseek2.attention.value_length": 16,
                "general.file_type": 1,
            },
            {"key_length": 24, "value_length": 16, "quantization": "F16"},
        ),
        (
            # No head_count_kv: every head has its keys (multi-head attention).
            "gpt2",
            {
                "gpt2.block_count": 2,
                "gpt2.embedding_length": 64,
                "gpt2.attention.head_count": 4,
                "general.file_type": 0,
            },
            {"head_count_kv": 4, "key_length": 16, "quantization": "F32"},
        ),
        (
            # OpenELM-style: head counts per layer.
            "openelm",
            {
                "openelm.block_count": 3,
                "openelm.embedding_length": 64,
                "openelm.attention.head_count": [4, 8, 8],
                "openelm.attention.head_count_kv": [1, 2, 2],
            },
            {"head_count": [4, 8, 8], "head_count_kv": [1, 2, 2], "key_length": 16},
        ),
        (
            "bert",
            {
                "bert.block_count": 2,
                "bert.embedding_length": 32,
                "bert.attention.head_count": 2,
                "bert.pooling_type": (2, GV.UINT32),
                "bert.context_length": 512,
            },
            {"pooling_type": "cls", "context_length": 512, "quantization": None},
        ),
        (
            "nomic-bert",
            {
                "nomic-bert.block_count": 2,
                "nomic-bert.embedding_length": 32,
                "nomic-bert.attention.head_count": 2,
                "nomic-bert.pooling_type": (1, GV.UINT32),
            },
            {"pooling_type": "mean", "key_length": 16},
        ),
    ],
)
def test_architectures(tmp_path, arch, meta, expected):
    path = write_gguf(tmp_path / f"{arch}.gguf", arch=arch, metadata=meta)
    facts = gguf_facts(gguf_header_of(path))
    assert facts["architecture"] == arch
    assert {k: facts.get(k) for k in expected} == expected


def test_every_value_type_and_nested_arrays(tmp_path):
    meta = {
        "t.u8": (200, GV.UINT8),
        "t.i8": (-5, GV.INT8),
        "t.u16": (60000, GV.UINT16),
        "t.i16": (-30000, GV.INT16),
        "t.u32": (4_000_000_000, GV.UINT32),
        "t.i32": (-2_000_000_000, GV.INT32),
        "t.f32": (0.5, GV.FLOAT32),
        "t.bool": (True, GV.BOOL),
        "t.str": ("héllo", GV.STRING),
        "t.u64": (2**63 + 1, GV.UINT64),
        "t.i64": (-(2**62), GV.INT64),
        "t.f64": (0.125, GV.FLOAT64),
        "t.ints": [1, 2, 3],
        "t.strs": ["a", "bc"],
        "t.nested": [[1, 2], [3, 4, 5]],
        "t.nested_strs": [["x"], ["y", "z"]],
    }
    header = gguf_header_of(write_gguf(tmp_path / "types.gguf", metadata=meta))
    got = {k: v for k, v in header.metadata.items() if k.startswith("t.")}
    assert got == {k: (v[0] if isinstance(v, tuple) else v) for k, v in meta.items()}


def test_large_arrays_are_skipped_and_keep_their_length(tmp_path):
    tokens = [f"token-{i}" for i in range(5000)]
    meta = llama_metadata(
        **{
            "tokenizer.ggml.tokens": tokens,
            "tokenizer.ggml.scores": [0.5] * 5000,
            "tokenizer.ggml.merges": [f"a{i} b{i}" for i in range(3000)],
            "t.long_nested": [[i] for i in range(ARRAY_KEEP + 1)],
        }
    )
    header = gguf_header_of(write_gguf(tmp_path / "vocab.gguf", metadata=meta))
    assert header.metadata["tokenizer.ggml.tokens"] == SkippedArray(ValueType.STRING, 5000)
    assert header.metadata["tokenizer.ggml.scores"] == SkippedArray(ValueType.FLOAT32, 5000)
    assert header.metadata["tokenizer.ggml.merges"] == SkippedArray(ValueType.STRING, 3000)
    assert header.metadata["t.long_nested"] == SkippedArray(ValueType.ARRAY, ARRAY_KEEP + 1)
    assert gguf_facts(header)["vocab_size"] == 5000
    # What follows the skipped arrays was read in place.
    assert len(header.tensors) == len(LLAMA_TENSORS)


def test_vocab_size_key_wins_over_the_token_list(tmp_path):
    meta = llama_metadata(**{"llama.vocab_size": 128})
    assert (
        gguf_facts(gguf_header_of(write_gguf(tmp_path / "v.gguf", metadata=meta)))["vocab_size"]
        == 128
    )


def test_split_files_say_which_part(tmp_path):
    meta = llama_metadata(**{"split.count": (3, GV.UINT16), "split.no": (1, GV.UINT16)})
    facts = gguf_facts(gguf_header_of(write_gguf(tmp_path / "s.gguf", metadata=meta)))
    assert (facts["split_count"], facts["split_no"]) == (3, 1)


def test_version_2_is_read(tmp_path):
    path = write_gguf(tmp_path / "v2.gguf", metadata=llama_metadata(), version=2)
    header = gguf_header_of(path)
    assert header.version == 2
    assert gguf_facts(header)["block_count"] == 2


def test_every_ggml_type_size_matches_the_gguf_package():
    theirs = {int(t): size for t, size in gguf.GGML_QUANT_SIZES.items()}
    for number, (name, block, size) in GGML_TYPES.items():
        if name == "Q8_1":
            continue  # gguf-py still has the old float layout (40); ggml's block is 36
        assert theirs[number] == (block, size), name
    in_files = {int(t) for t in gguf.GGML_QUANT_SIZES if t.name != "Q8_1"}
    assert in_files <= set(GGML_TYPES)


def test_quantized_tensor_bytes_are_exact(tmp_path):
    tensors = {
        "a": ((256, 3), Q.Q4_K),
        "b": ((512,), Q.Q5_K),
        "c": ((64, 2), Q.Q4_0),
        "d": ((32,), Q.BF16),
    }
    header = gguf_header_of(write_gguf(tmp_path / "q.gguf", metadata={}, tensors=tensors))
    assert [t.n_bytes for t in header.tensors] == [3 * 144, 2 * 176, 4 * 18, 64]
    assert header.tensor_bytes == 3 * 144 + 2 * 176 + 4 * 18 + 64


# --- refused ------------------------------------------------------------------------------


def _refused(data: bytes, match: str, **kwargs) -> FormatError:
    with pytest.raises(FormatError, match=match) as info:
        gguf_header_read(io.BytesIO(data), **kwargs)
    assert info.value.code == "ERR_FORMAT"
    return info.value


def _tiny(tmp_path, **meta) -> bytes:
    return write_gguf(tmp_path / "t.gguf", metadata=llama_metadata(**meta)).read_bytes()


def test_bad_magic_is_refused(tmp_path):
    error = _refused(b"PK\x03\x04" + b"\0" * 60, "Not a GGUF file")
    assert error.details == {"magic": "504b0304"}


def test_version_1_is_refused(tmp_path):
    data = bytearray(_tiny(tmp_path))
    data[4:8] = struct.pack("<I", 1)
    _refused(bytes(data), "GGUF version 1 is not supported")


def test_an_unknown_version_is_refused(tmp_path):
    data = bytearray(_tiny(tmp_path))
    data[4:8] = struct.pack("<I", 4)
    error = _refused(bytes(data), "Unknown GGUF version 4")
    assert error.details == {"version": 4}


def test_a_big_endian_file_is_refused(tmp_path):
    path = write_gguf(
        tmp_path / "be.gguf", metadata=llama_metadata(), endianess=gguf.GGUFEndian.BIG
    )
    _refused(path.read_bytes(), "big-endian")


def _first_value_type_offset(data: bytes) -> int:
    # magic, version, two counts, then the first key: general.architecture (a string).
    key_length = struct.unpack_from("<Q", data, 24)[0]
    return 24 + 8 + key_length


def test_an_unknown_value_type_is_refused(tmp_path):
    data = bytearray(_tiny(tmp_path))
    at = _first_value_type_offset(data)
    assert struct.unpack_from("<I", data, at)[0] == GV.STRING
    data[at : at + 4] = struct.pack("<I", 13)
    error = _refused(bytes(data), "unknown value type 13")
    assert error.details["where"] == "general.architecture"


def test_an_unknown_tensor_type_is_refused(tmp_path):
    path = write_gguf(tmp_path / "t.gguf", metadata={}, tensors={"w": ((32,), Q.F32)})
    data = bytearray(path.read_bytes())
    size = gguf_header_of(path).header_bytes
    # The last tensor info ends with its type (u32) and its offset (u64).
    data[size - 12 : size - 8] = struct.pack("<I", 99)
    _refused(bytes(data), "unknown ggml type 99")


def test_a_tensor_with_too_many_dimensions_is_refused(tmp_path):
    path = write_gguf(tmp_path / "t.gguf", metadata={}, tensors={"w": ((32,), Q.F32)})
    data = bytearray(path.read_bytes())
    size = gguf_header_of(path).header_bytes
    # name "w" (8 + 1 bytes), then n_dims, one dim, type, offset.
    at = size - 4 - 8 - 8 - 4
    assert struct.unpack_from("<I", data, at)[0] == 1
    data[at : at + 4] = struct.pack("<I", 5)
    _refused(bytes(data), "5 dimensions")


def test_a_file_cut_inside_the_metadata_is_refused(tmp_path):
    data = _tiny(tmp_path)
    error = _refused(data[:40], "ends inside its header")
    assert error.details == {"offset": 32, "size": 40}


def test_an_empty_file_is_refused(tmp_path):
    _refused(b"", "ends inside its header")


def test_a_string_length_past_the_limit_is_refused_without_reading_it(tmp_path):
    data = bytearray(_tiny(tmp_path))
    data[24:32] = struct.pack("<Q", 2**40)  # the first key's length
    stream = ReadOnly(bytes(data))
    with pytest.raises(FormatError, match="larger than"):
        gguf_header_read(stream, limit=1024 * 1024)
    assert stream.reads == 1


def test_a_header_over_the_limit_is_refused(tmp_path):
    data = _tiny(tmp_path, **{"tokenizer.ggml.tokens": [f"t{i}" for i in range(5000)]})
    error = _refused(data, "larger than 4,096 bytes", limit=4096)
    assert error.details["limit"] == 4096


def test_counts_that_cannot_fit_are_refused_at_once(tmp_path):
    data = bytearray(_tiny(tmp_path))
    data[16:24] = struct.pack("<Q", 2**50)  # the metadata count
    _refused(bytes(data), "the metadata and tensor counts")


def test_arrays_nested_too_deep_are_refused(tmp_path):
    deep = [1]
    for _ in range(9):
        deep = [deep]
    path = write_gguf(tmp_path / "deep.gguf", metadata={"t.deep": deep})
    with pytest.raises(FormatError, match="nests arrays deeper"):
        gguf_header_of(path)


def test_a_bad_alignment_is_refused(tmp_path):
    path = write_gguf(tmp_path / "a.gguf", metadata={"general.alignment": 48})
    with pytest.raises(FormatError, match="power of two"):
        gguf_header_of(path)


# --- the real file ------------------------------------------------------------------------


def test_gemma_facts_match_what_llama_cpp_reports(gemma_file):  # noqa: F811
    from llama_cpp import Llama

    header = gguf_header_of(gemma_file)
    facts = gguf_facts(header)
    vocab = Llama(str(gemma_file), vocab_only=True, verbose=False)
    meta = vocab.metadata
    arch = meta["general.architecture"]
    assert facts["architecture"] == arch == "gemma3"
    assert facts["name"] == meta["general.name"]
    for fact, key in [
        ("block_count", "block_count"),
        ("embedding_length", "embedding_length"),
        ("head_count", "attention.head_count"),
        ("head_count_kv", "attention.head_count_kv"),
        ("key_length", "attention.key_length"),
        ("value_length", "attention.value_length"),
        ("context_length", "context_length"),
        ("sliding_window", "attention.sliding_window"),
    ]:
        assert facts[fact] == int(meta[f"{arch}.{key}"]), fact
    assert facts["file_type"] == int(meta["general.file_type"])
    assert facts["quantization"] == "Q4_K_M"
    assert facts["vocab_size"] == vocab.n_vocab() == 262144
    vocab.close()

    model = Llama(str(gemma_file), n_ctx=256, n_threads=2, verbose=False)
    try:
        assert facts["parameter_count"] == model._model.n_params()
        assert facts["tensor_bytes"] == model._model.size()
        assert facts["embedding_length"] == model.n_embd()
    finally:
        model.close()
    assert facts["header_bytes"] < header.data_offset + header.alignment
    _assert_data_ends_the_file(header, gemma_file.stat().st_size)
