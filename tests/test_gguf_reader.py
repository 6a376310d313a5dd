"""wgmtp.gguf_reader against gguf-py's GGUFReader: same fields, types, values, tensor infos and
tensor views on the demo model, synthetic models of every weight type, and a kitchen-sink file
(every value type, a 50k-token vocabulary with 50k merges, custom alignment, v2)."""
from __future__ import annotations

import struct
from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as QT
from gguf import GGUFValueType as VT
from make_model import sidecar_path

from wgmtp import errors
from wgmtp.api import eog_ids
from wgmtp.gguf_file import open_reader
from wgmtp.gguf_reader import GGUFReader
from wgmtp.models.qwen35 import GGUFModel
from wgmtp.tokenizer import Tokenizer

DEMO = Path(__file__).resolve().parent.parent / "wgmtp" / "data" / "wgmtp-demo.gguf"
# What gguf_file.open_reader turns into one-line errors.
READER_ERRORS = (ValueError, IndexError, OverflowError, MemoryError, UnicodeDecodeError, KeyError)


def _typed(v):
    """A value with the Python type of every element, so True != 1 and 1.0 != 1."""
    if isinstance(v, list):
        return [(type(x), x) for x in v]
    return type(v), v


def assert_same(path: Path) -> None:
    """Every field and tensor of `path` reads the same through both readers."""
    ref, got = gguf.GGUFReader(str(path)), GGUFReader(path)
    assert list(got.fields) == list(ref.fields)
    for key, rf in ref.fields.items():
        f = got.fields[key]
        assert f.types == rf.types, key
        assert len(f) == len(rf.data), key
        try:
            want = rf.contents()
        except UnicodeDecodeError:
            with pytest.raises(UnicodeDecodeError):
                f.contents()
        else:
            assert _typed(f.contents()) == _typed(want), key
            if rf.types[0] == VT.ARRAY and len(rf.data):
                assert f.contents(0) == rf.contents(0) and f.contents(-1) == rf.contents(-1), key
                assert f.contents(slice(1, 5)) == rf.contents(slice(1, 5)), key
        # the fast paths the tokenizer uses, against gguf-py's parts idioms
        if rf.types[0] == VT.ARRAY and rf.types[-1] == VT.STRING:
            assert f.strings("replace") == [bytes(rf.parts[i]).decode("utf-8", "replace") for i in rf.data], key
        elif rf.types[0] == VT.ARRAY and len(rf.data):
            assert f.ints() == [int(rf.parts[i][0]) for i in rf.data], key
    assert (got.alignment, got.data_offset) == (ref.alignment, ref.data_offset)
    assert len(got.tensors) == len(ref.tensors)
    for t, rt in zip(got.tensors, ref.tensors):
        assert (t.name, t.tensor_type, t.n_elements, t.n_bytes, t.data_offset) == \
            (rt.name, rt.tensor_type, rt.n_elements, rt.n_bytes, rt.data_offset), rt.name
        assert t.shape.dtype == rt.shape.dtype and t.shape.tolist() == rt.shape.tolist(), rt.name
        assert t.data.dtype == rt.data.dtype and t.data.shape == rt.data.shape, rt.name
        assert np.array_equal(t.data, rt.data, equal_nan=t.data.dtype.kind == "f"), rt.name
        assert t.data.tobytes() == rt.data.tobytes() and not t.data.flags.writeable, rt.name
    assert got.data.tobytes() == ref.data.tobytes()


# ---------------------------------------------------------------------------------------------
# models

def test_demo_model():
    assert_same(DEMO)


@pytest.mark.parametrize("kw", [
    dict(),                                              # F32, MTP in the file
    dict(wtype="F16", tied=True, mtp=False),
    dict(wtype="BF16"),
    dict(wtype="Q8_0", types={"attn_gate": "F16", "ffn_down": "Q5_1"}),
    dict(n_embd=256, n_ff=256, wtype="Q4_K_M"),
    dict(n_expert=4, n_expert_used=2, wtype="Q8_0", fused_gate_up=True, shexp_gate_2d=True),
], ids=["f32", "f16-tied", "bf16", "q8_0", "q4_k_m", "moe"])
def test_synthetic_models(synth, kw):
    assert_same(synth(**kw))


def test_sidecar(synth):
    p = synth(sidecar=True)
    assert_same(p)
    assert_same(sidecar_path(p))


def test_model_and_tokenizer_see_the_same_metadata(synth):
    """GGUFModel (fast reader) and a tokenizer built from gguf-py's reader agree."""
    p = synth()
    gm = GGUFModel(p)
    info = gm.tokenizer_info()
    ref = gguf.GGUFReader(str(p))
    assert info.n_tokens == len(ref.fields["tokenizer.ggml.tokens"].data)
    assert info.n_merges == len(ref.fields["tokenizer.ggml.merges"].data)
    fast, slow = Tokenizer.from_gguf(gm), Tokenizer.from_gguf(ref)
    assert fast.tokens == slow.tokens and fast.types == slow.types and fast.n_merges == slow.n_merges
    assert eog_ids(gm) == set(slow.eog_ids)
    for t in gm.reader.tensors:
        assert bytes(gm.raw_bytes(t.name)) == t.data.tobytes()


# ---------------------------------------------------------------------------------------------
# a kitchen-sink file: every value type, a big vocabulary, odd alignment, several tensor types

N_BIG = 50_000


def _vocab(n: int = N_BIG) -> tuple[list, list[str]]:
    rng = np.random.default_rng(0)
    alphabet = list("abcdefghijklmnopqrstuvwxyzĠĊ") + ["é", "東京", "🙂", " ", "<", "|"]
    toks: list = ["", "<|im_end|>", "<|endoftext|>", b"\xff\xfe bad utf-8"]
    while len(toks) < n:
        toks.append("".join(rng.choice(alphabet, rng.integers(1, 12))) + str(len(toks)))
    merges = [f"{toks[i + 4]} {toks[i + 5]}" for i in range(n - 5)]
    return toks, merges


def _write_sink(path: Path, alignment: int | None = 64, n_tokens: int = N_BIG) -> Path:
    w = gguf.GGUFWriter(str(path), arch="qwen35")
    if alignment is not None:
        w.add_custom_alignment(alignment)
    scalars = [(VT.UINT8, 200), (VT.INT8, -5), (VT.UINT16, 60000), (VT.INT16, -300), (VT.UINT32, 4_000_000_000),
               (VT.INT32, -7), (VT.FLOAT32, 1e-6), (VT.UINT64, 2**63 + 5), (VT.INT64, -(2**40)),
               (VT.FLOAT64, 3.141592653589793), (VT.BOOL, True), (VT.BOOL, False), (VT.STRING, "Grüße 🙂")]
    for i, (vt, v) in enumerate(scalars):
        w.add_key_value(f"test.scalar{i}.{vt.name.lower()}", v, vt)
    w.add_key_value("test.empty_string", "", VT.STRING)
    for vt, vals in [(VT.INT32, [1, -2, 3]), (VT.FLOAT32, [0.5, -1.25, 1e-3]), (VT.BOOL, [True, False, True]),
                     (VT.UINT64, [0, 2**64 - 1]), (VT.UINT8, list(range(256))), (VT.FLOAT64, [1e300, -0.0])]:
        w.add_key_value(f"test.array.{vt.name.lower()}", vals, VT.ARRAY, sub_type=vt)
    w.add_key_value("test.array.empty", "abcd", VT.STRING)   # patched below: GGUFWriter refuses []
    w.add_key_value("test.array.nested", [[1, 2], [3]], VT.ARRAY)
    w.add_key_value("test.array.nested_strings", [["a", "bc"], ["東"]], VT.ARRAY)
    toks, merges = _vocab(n_tokens)
    w.add_tokenizer_model("gpt2")
    w.add_token_list(toks)
    w.add_token_merges(merges)
    w.add_token_types([1 + i % 6 for i in range(n_tokens)])
    w.add_eos_token_id(1)
    rng = np.random.default_rng(1)
    w.add_tensor("f32.3d", rng.standard_normal((3, 4, 5)).astype(np.float32))
    w.add_tensor("f16", rng.standard_normal((7, 9)).astype(np.float16))
    w.add_tensor("f64.1d", rng.standard_normal(11))
    for dt in (np.int8, np.int16, np.int32, np.int64):
        w.add_tensor(f"int.{np.dtype(dt).name}", np.arange(-6, 6, dtype=dt).reshape(3, 4))
    for qt in (QT.BF16, QT.Q8_0, QT.Q4_K, QT.Q6_K, QT.Q5_0):
        blk, size = gguf.GGML_QUANT_SIZES[qt]
        rows = rng.integers(0, 256, (2, 3, 256 // blk * size), dtype=np.uint8)
        w.add_tensor(f"q.{qt.name}", rows, raw_dtype=qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    # a string of 4 bytes (type, length, "abcd") has the size of an empty array (type, elem type, 0)
    key = b"test.array.empty"
    at = path.read_bytes().index(key) + len(key)
    return _patched(path, path, at, struct.pack("<IIQ", VT.ARRAY, VT.INT32, 0))


@pytest.fixture(scope="module")
def sink(tmp_path_factory) -> Path:
    return _write_sink(tmp_path_factory.mktemp("sink") / "sink.gguf")


@pytest.fixture(scope="module")
def small_sink(tmp_path_factory) -> Path:
    """The same with 2000 tokens and the default alignment, for the error cases (gguf-py is slow)."""
    return _write_sink(tmp_path_factory.mktemp("sink") / "small.gguf", alignment=None, n_tokens=2000)


def _patched(src: Path, dst: Path, offset: int, data: bytes) -> Path:
    raw = bytearray(src.read_bytes())
    raw[offset:offset + len(data)] = data
    dst.write_bytes(bytes(raw))
    return dst


def test_kitchen_sink(sink):
    assert_same(sink)
    r = GGUFReader(sink)
    assert r.alignment == 64 and r.data_offset % 64 == 0
    toks = r.fields["tokenizer.ggml.tokens"]
    assert len(toks) == N_BIG and toks.types == [VT.ARRAY, VT.STRING]
    got = toks.strings("replace")
    assert got[:3] == ["", "<|im_end|>", "<|endoftext|>"] and "\ufffd" in got[3]
    with pytest.raises(UnicodeDecodeError):
        toks.contents()                        # strict, like gguf-py
    assert toks.contents(1) == "<|im_end|>"
    assert r.fields["tokenizer.ggml.merges"].strings() == _vocab()[1]
    assert r.fields["test.array.empty"].types == [VT.ARRAY] and r.fields["test.array.empty"].contents() == []
    assert r.fields["test.array.nested"].contents() == [1, 2, 3]
    with pytest.raises(TypeError):
        r.fields["test.array.int32"].strings()
    with pytest.raises(TypeError):
        toks.ints()


def test_default_alignment_and_version_2(tmp_path, small_sink):
    assert GGUFReader(small_sink).alignment == 32
    assert_same(small_sink)
    v2 = _patched(small_sink, tmp_path / "v2.gguf", 4, struct.pack("<I", 2))   # v2 has v3's layout
    assert GGUFReader(v2).version == 2
    assert_same(v2)


# ---------------------------------------------------------------------------------------------
# errors: the messages open_reader maps

def test_bad_version_and_big_endian(tmp_path, small_sink):
    p = _patched(small_sink, tmp_path / "v9.gguf", 4, struct.pack("<I", 9))
    with pytest.raises(ValueError, match="version"):
        GGUFReader(p)
    with pytest.raises(errors.NotGGUFError, match="version"):
        open_reader(p)
    p = _patched(small_sink, tmp_path / "be.gguf", 4, struct.pack(">I", 3))
    with pytest.raises(ValueError, match="big-endian"):
        GGUFReader(p)
    with pytest.raises(errors.NotGGUFError, match="big-endian"):
        open_reader(p)


def test_unknown_tensor_type(tmp_path, small_sink):
    raw = small_sink.read_bytes()
    name = b"f16"
    at = raw.index(struct.pack("<Q", len(name)) + name) + 8 + len(name) + 4 + 2 * 8   # n_dims, 2 dims
    assert struct.unpack_from("<I", raw, at)[0] == QT.F16
    p = _patched(small_sink, tmp_path / "tt.gguf", at, struct.pack("<I", 1234))
    with pytest.raises(ValueError, match="is not a valid GGMLQuantizationType"):
        gguf.GGUFReader(str(p))
    with pytest.raises(ValueError, match="is not a valid GGMLQuantizationType"):
        GGUFReader(p)
    with pytest.raises(errors.UnsupportedTensorTypeError):
        open_reader(p)


def test_truncation_is_an_error_everywhere(tmp_path, small_sink):
    """Cut in the header (keys, the big string arrays, tensor infos) or in the tensor data: the
    reader raises what open_reader catches, open_reader says 'truncated'."""
    raw = small_sink.read_bytes()
    whole = GGUFReader(small_sink)
    data_start = whole.data_offset
    last = max(whole.tensors, key=lambda t: t.data_offset + t.n_bytes)
    data_end = last.data_offset + last.n_bytes
    cuts = sorted({24, 30, 100, 333, 1000, raw.index(b"tokenizer.ggml.merges") + 40,
                   *np.linspace(24, data_start - 1, 25).astype(int).tolist(), data_start + 10, data_end - 1})
    for cut in cuts:
        p = tmp_path / "cut.gguf"
        p.write_bytes(raw[:cut])
        try:
            r = GGUFReader(p)
        except READER_ERRORS:
            assert cut < data_start
        else:   # the header is whole (the cut is in its padding or the data): the data view fails
            assert cut >= data_start - r.alignment
            with pytest.raises(ValueError, match="past the end"):
                next(t for t in r.tensors if t.name == last.name).data
        with pytest.raises(errors.TruncatedGGUFError, match="truncated"):
            open_reader(p)


def test_bogus_counts_fail_fast(tmp_path, small_sink):
    """A huge array length or dimension count is an error, not a giant allocation."""
    raw = small_sink.read_bytes()
    at = raw.index(b"tokenizer.ggml.tokens") + len(b"tokenizer.ggml.tokens") + 4 + 4   # type, elem type
    p = _patched(small_sink, tmp_path / "n.gguf", at, struct.pack("<Q", 2**62))
    with pytest.raises(ValueError, match="past the end"):
        GGUFReader(p)
    at = raw.index(b"test.array.int32") + len(b"test.array.int32") + 8
    p = _patched(small_sink, tmp_path / "m.gguf", at, struct.pack("<Q", 2**62))
    with pytest.raises(ValueError, match="past the end"):
        GGUFReader(p)
    name = b"f16"
    at = raw.index(struct.pack("<Q", len(name)) + name) + 8 + len(name)
    p = _patched(small_sink, tmp_path / "d.gguf", at, struct.pack("<I", 2**31))
    with pytest.raises(ValueError, match="past the end"):
        GGUFReader(p)
