"""make_model -> gguf_file round trips for every generator option, and every loader error."""
from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as QT
from make_model import ModelSpec, build_tokenizer, build_weights, make_model, sidecar_path

from wgmtp import errors, quants
from wgmtp.models.qwen35 import GGUFModel


def _dequant(gm: GGUFModel, name: str) -> np.ndarray:
    info = gm.tensors[name]
    return quants.dequantize(gm.raw(name), info.qtype, info.np_shape)


@pytest.mark.parametrize("kw", [
    dict(),
    dict(mtp=False),
    dict(tied=True),
    dict(layer_pattern="GA", n_layer=4),
    dict(n_layer=5, recurrent_layers_key=False),
    dict(ssm_n_group=4, ssm_dt_rank=4, n_head=2, n_head_kv=1, head_dim=32, n_rot=8),
    dict(n_embd=256, n_ff=256, wtype="Q4_K_M"),
    dict(wtype="Q8_0", types={"attn_gate": "F16", "ffn_down": "Q5_1"}),
    dict(n_expert=8, n_expert_used=2, wtype="Q8_0"),
    dict(n_expert=4, n_expert_used=3, fused_gate_up=True, shexp_gate_2d=True),
    dict(n_expert=4, n_ff_shexp=0, n_embd=256, n_ff_exp=256, wtype="Q4_K_M", mtp=False),
])
def test_roundtrip_config_and_tensors(tmp_path, kw):
    spec = ModelSpec(**kw)
    p = make_model(tmp_path / "m.gguf", spec)
    gm = GGUFModel(p)
    c = gm.config
    assert (c.n_embd, c.n_layer, c.n_head, c.n_head_kv, c.head_dim, c.n_rot) == \
        (spec.n_embd, spec.n_layer, spec.n_head, spec.n_head_kv, spec.head_dim, spec.rot)
    assert c.n_ff == (0 if spec.n_expert else spec.n_ff)        # MoE files carry no dense FFN width
    assert (c.ssm_n_group, c.ssm_dt_rank, c.head_k_dim, c.head_v_dim, c.conv_kernel) == \
        (spec.ssm_n_group, spec.ssm_dt_rank, spec.ssm_d_state, spec.ssm_d_state, spec.conv_kernel)
    assert list(c.is_gdn[: c.n_layer]) == spec.is_gdn()
    assert gm.has_mtp == spec.mtp and c.n_mtp == (1 if spec.mtp else 0)
    assert c.tied_embeddings == spec.tied and ("output.weight" in gm.tensors) != spec.tied
    assert abs(c.eps - 1e-6) < 1e-12 and c.rope_base == pytest.approx(1e7)
    assert c.arch == spec.arch and c.is_moe == (spec.n_expert > 0)
    if c.is_moe:
        assert (c.n_expert, c.n_expert_used, c.n_ff_exp, c.n_ff_shexp) == \
            (spec.n_expert, spec.n_expert_used, spec.n_ff_exp, spec.n_ff_shexp)
    # every weight reads back as written (within its type's quantization)
    tok = build_tokenizer(spec.tokenizer_vocab, n_vocab=spec.n_vocab)
    W = build_weights(spec, len(tok.tokens))
    assert set(W) == set(gm.tensors)
    for name, w in W.items():
        got = _dequant(gm, name).reshape(w.shape)
        tol = 0.0 if gm.tensors[name].qtype == QT.F32 else 0.15 * float(np.abs(w).max()) + 1e-6
        assert np.max(np.abs(got - w)) <= tol, name


def test_converter_conventions(tmp_path):
    p = make_model(tmp_path / "m.gguf", ModelSpec(wtype="F16", head_dim=32))
    gm = GGUFModel(p)
    t = gm.tensors
    # F32-forced tensors and 1-D tensors stay F32 in a F16 file
    assert t["blk.0.ssm_conv1d.weight"].qtype == QT.F32 and t["blk.0.ssm_a"].qtype == QT.F32
    assert t["blk.0.attn_qkv.weight"].qtype == QT.F16
    # ssm_a negative (= -exp(A_log)); norms carry the +1; GGUF shapes as llama.cpp writes them
    assert np.all(_dequant(gm, "blk.0.ssm_a") < 0)
    assert abs(float(np.mean(_dequant(gm, "blk.0.attn_norm.weight"))) - 1.0) < 0.1
    c = gm.config
    assert t["blk.0.ssm_conv1d.weight"].shape == (4, c.conv_dim)
    assert t["blk.3.attn_q.weight"].shape == (c.n_embd, 2 * c.n_head * c.head_dim)
    assert t[f"blk.{c.n_layer}.nextn.eh_proj.weight"].shape == (2 * c.n_embd, c.n_embd)
    assert gm.meta("qwen35.rope.dimension_sections") == [2, 1, 1, 0]   # as the converter dump (R=4 pairs)
    assert gm.meta("tokenizer.ggml.pre") == "qwen35"


def test_presets_are_the_reference_configurations():
    """tools/make_model.py --preset: the widths of the reference's table and the real vocabulary;
    flags override a preset (fewer layers, the width kept)."""
    from make_model import REAL_VOCAB, spec_of
    s = spec_of("0.8B")
    assert (s.n_embd, s.n_layer, s.n_head, s.n_head_kv, s.head_dim, s.n_rot, s.n_ff) == (1024, 24, 8, 2, 256, 64, 3584)
    assert (s.ssm_n_group, s.ssm_dt_rank, s.ssm_d_state, s.n_vocab, s.tied) == (16, 16, 128, REAL_VOCAB, True)
    big = spec_of("27B", n_layer=4, wtype="Q4_K_M")
    assert (big.n_embd, big.n_layer, big.ssm_dt_rank, big.n_ff, big.wtype) == (5120, 4, 48, 17408, "Q4_K_M")
    moe = spec_of("35B-A3B")
    assert (moe.arch, moe.n_expert, moe.n_expert_used, moe.n_ff_exp, moe.ssm_dt_rank) == ("qwen35moe", 256, 8, 512, 32)
    # the reported 2B/4B/9B configs agree with llama.cpp's size detection in the reference (0.3):
    # 24 layers -> 0.8B (E 1024) or 2B, 32 layers -> 4B (E 2560) or 9B
    dims = {k: (spec_of(k).n_embd, spec_of(k).n_layer, spec_of(k).tied) for k in ("2B", "4B", "9B")}
    assert dims == {"2B": (2048, 24, True), "4B": (2560, 32, True), "9B": (4096, 32, False)}
    assert all(spec_of(k).n_vocab == REAL_VOCAB for k in dims)
    assert spec_of(None, seed=5) == ModelSpec(seed=5)


def test_q4_k_m_mix_follows_llama_quantize(tmp_path):
    """The dump of a real Q4_K_M tiny file: rows of 128 fall back to Q5_0/Q8_0; ffn_down of 256 stays K."""
    spec = ModelSpec(n_embd=128, n_ff=256, head_dim=32, n_head=4, n_head_kv=2, ssm_d_state=32,
                     wtype="Q4_K_M", n_vocab=1024)
    gm = GGUFModel(make_model(tmp_path / "m.gguf", spec))
    ty = {n: i.qtype for n, i in gm.tensors.items()}
    assert ty["token_embd.weight"] == QT.Q5_0 and ty["output.weight"] == QT.Q8_0
    assert ty["blk.0.attn_qkv.weight"] == QT.Q5_0 and ty["blk.2.attn_qkv.weight"] == QT.Q8_0
    assert ty["blk.3.attn_v.weight"] == QT.Q5_0 and ty["blk.4.attn_v.weight"] == QT.Q8_0
    assert ty["blk.0.ffn_down.weight"] == QT.Q4_K and ty["blk.2.ffn_down.weight"] == QT.Q6_K
    assert ty["blk.4.ffn_down.weight"] == QT.Q6_K and ty["blk.4.nextn.eh_proj.weight"] == QT.Q4_K


def test_sidecar_layout_and_attach(tmp_path):
    p = make_model(tmp_path / "m.gguf", ModelSpec(sidecar=True))
    side = sidecar_path(p)
    assert side.name == "mtp-m.gguf" and side.exists()
    trunk = GGUFModel(p)
    assert not trunk.has_mtp and trunk.config.n_mtp == 0 and trunk.config.block_count == 4
    r = gguf.GGUFReader(str(side))
    names = {t.name for t in r.tensors}
    assert {"token_embd.weight", "output_norm.weight", "output.weight"} <= names
    assert all(n.startswith("blk.4.") or n in ("token_embd.weight", "output_norm.weight", "output.weight")
               for n in names)
    both = GGUFModel(p, side)
    assert both.has_mtp and both.config.n_mtp == 1 and both.config.is_gdn[4] is False
    assert both.tensors["blk.4.nextn.eh_proj.weight"].path == str(side)
    assert both.weight_bytes(mtp=True) > both.weight_bytes(mtp=False)


# ---------------------------------------------------------------------------------------------
# errors

def _rewrite(src: Path, dst: Path, *, drop: set[str] = frozenset(), kv: dict | None = None,
             reshape: dict | None = None) -> Path:
    """Copy a GGUF with some keys changed or tensors removed/reshaped (to provoke errors)."""
    r = gguf.GGUFReader(str(src))
    arch = r.fields["general.architecture"].contents()
    w = gguf.GGUFWriter(str(dst), arch=(kv or {}).get("general.architecture", (arch,))[0])
    for key, f in r.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        if kv and key in kv:
            continue
        vt = f.types[0]
        if vt == gguf.GGUFValueType.ARRAY:
            w.add_key_value(key, f.contents(), vt, sub_type=f.types[-1])
        else:
            w.add_key_value(key, f.contents(), vt)
    for key, (val, vt, *sub) in (kv or {}).items():
        if key == "general.architecture":
            continue
        if vt == gguf.GGUFValueType.ARRAY:
            w.add_key_value(key, val, vt, sub_type=sub[0] if sub else gguf.GGUFValueType.UINT32)
        else:
            w.add_key_value(key, val, vt)
    for t in r.tensors:
        if t.name in drop:
            continue
        data = np.array(t.data)
        if reshape and t.name in reshape:
            data = np.zeros(reshape[t.name], np.float32)
        w.add_tensor(t.name, data, raw_dtype=t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return dst


@pytest.fixture(scope="module")
def base_model(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("err") / "base.gguf", ModelSpec())


U32 = gguf.GGUFValueType.UINT32


def _err(path, exc, *words):
    with pytest.raises(exc) as ei:
        GGUFModel(path)
    msg = str(ei.value)
    assert "\n" not in msg and msg.startswith(str(path)), msg
    for wd in words:
        assert wd in msg, msg
    return msg


def test_error_not_gguf(tmp_path):
    p = tmp_path / "x.gguf"
    p.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    _err(p, errors.NotGGUFError, "not a GGUF")


def test_error_missing_and_directory(tmp_path):
    _err(tmp_path / "nope.gguf", errors.GGUFError, "no such file")
    _err(tmp_path, errors.GGUFError, "directory")


def test_error_truncated(tmp_path, base_model):
    data = base_model.read_bytes()
    for cut in (12, 200, len(data) - 100):
        p = tmp_path / f"t{cut}.gguf"
        p.write_bytes(data[:cut])
        _err(p, errors.TruncatedGGUFError, "truncated")


def test_error_unsupported_arch(tmp_path, base_model):
    p = _rewrite(base_model, tmp_path / "next.gguf", kv={"general.architecture": ("qwen3next", None)})
    _err(p, errors.UnsupportedArchError, "qwen3next", "not supported")
    p = _rewrite(base_model, tmp_path / "llama.gguf", kv={"general.architecture": ("llama", None)})
    _err(p, errors.UnsupportedArchError, "llama")


def test_error_moe_without_expert_keys(tmp_path, base_model):
    # a dense file relabelled qwen35moe: its keys are read under the new arch name, so the first
    # missing one is named (the MoE keys come after the dense ones)
    p = _rewrite(base_model, tmp_path / "moe.gguf", kv={"general.architecture": ("qwen35moe", None)})
    _err(p, errors.BadMetadataError, "qwen35moe.", "missing")


def test_error_missing_tensor(tmp_path, base_model):
    p = _rewrite(base_model, tmp_path / "miss.gguf", drop={"blk.1.ssm_out.weight"})
    _err(p, errors.MissingTensorError, "blk.1.ssm_out.weight")


def test_error_shape_mismatch(tmp_path, base_model):
    p = _rewrite(base_model, tmp_path / "shape.gguf", reshape={"blk.3.attn_k.weight": (16, 64)})
    _err(p, errors.ShapeMismatchError, "blk.3.attn_k.weight", "[64, 16]", "[64, 32]")


def test_error_unsupported_tensor_type(tmp_path):
    """A tensor in a ggml type wgmtp has no kernel for (TQ1_0 here) is named with its type."""
    src = make_model(tmp_path / "src.gguf", ModelSpec(n_embd=256, n_ff=256))
    r = gguf.GGUFReader(str(src))
    dst = tmp_path / "iq.gguf"
    w = gguf.GGUFWriter(str(dst), arch="qwen35")
    for key, f in r.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        vt = f.types[0]
        w.add_key_value(key, f.contents(), vt, sub_type=f.types[-1] if vt == gguf.GGUFValueType.ARRAY else None)
    blk, nb = gguf.GGML_QUANT_SIZES[QT.TQ1_0]
    for t in r.tensors:
        if t.name == "blk.0.attn_gate.weight":
            cols = int(t.shape[0])
            rows = int(t.shape[1])
            w.add_tensor(t.name, np.zeros((rows, cols // blk * nb), np.uint8), raw_dtype=QT.TQ1_0)
        else:
            w.add_tensor(t.name, np.array(t.data), raw_dtype=t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    _err(dst, errors.UnsupportedTensorTypeError, "blk.0.attn_gate.weight", "TQ1_0")


@pytest.mark.parametrize("key,val,words", [
    ("qwen35.attention.head_count", 0, ["head_count", "at least one"]),
    ("qwen35.attention.head_count_kv", 3, ["not a multiple"]),
    ("qwen35.block_count", 3_000_000, ["block_count", "absurd"]),
    ("qwen35.embedding_length", 0, ["embedding_length"]),
    ("qwen35.ssm.time_step_rank", 3, ["not a multiple"]),
    ("qwen35.nextn_predict_layers", 2, ["nextn_predict_layers"]),
])
def test_error_bad_metadata(tmp_path, base_model, key, val, words):
    p = _rewrite(base_model, tmp_path / "bad.gguf", kv={key: (val, U32)})
    _err(p, errors.BadMetadataError, *words)


def test_error_missing_required_key(tmp_path, base_model):
    r = gguf.GGUFReader(str(base_model))
    dst = tmp_path / "nokey.gguf"
    w = gguf.GGUFWriter(str(dst), arch="qwen35")
    for key, f in r.fields.items():
        if key.startswith("GGUF.") or key in ("general.architecture", "qwen35.embedding_length"):
            continue
        vt = f.types[0]
        w.add_key_value(key, f.contents(), vt, sub_type=f.types[-1] if vt == gguf.GGUFValueType.ARRAY else None)
    for t in r.tensors:
        w.add_tensor(t.name, np.array(t.data), raw_dtype=t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    _err(dst, errors.BadMetadataError, "qwen35.embedding_length", "missing")


def test_sidecar_mismatch(tmp_path):
    a = make_model(tmp_path / "a.gguf", ModelSpec(sidecar=True))
    b = make_model(tmp_path / "b.gguf", ModelSpec(sidecar=True, n_embd=32))
    with pytest.raises(errors.BadMetadataError) as ei:
        GGUFModel(a, sidecar_path(b))
    assert "n_embd" in str(ei.value) and str(sidecar_path(b)) in str(ei.value)


# ---- layout rules (llama.cpp's loader): alignment, bounds, overlap, dimensions, unique names

def _tiny(path: Path, tensors: dict[str, np.ndarray], keys: tuple[str, ...] = ()) -> Path:
    w = gguf.GGUFWriter(str(path), arch="qwen35")
    for k in keys:
        w.add_uint32(k, 1)
    for name, a in tensors.items():
        w.add_tensor(name, a)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _info_at(data: bytes, name: str) -> int:
    """Byte offset just past tensor `name`'s name in the tensor-info section."""
    tag = len(name).to_bytes(8, "little") + name.encode()
    i = data.rindex(tag)
    return i + len(tag)


def _patch_offset(path: Path, name: str, new_rel) -> None:
    data = bytearray(path.read_bytes())
    at = _info_at(bytes(data), name)
    n_dims = int.from_bytes(data[at: at + 4], "little")
    off_at = at + 4 + 8 * n_dims + 4
    rel = int.from_bytes(data[off_at: off_at + 8], "little")
    data[off_at: off_at + 8] = int(new_rel(rel)).to_bytes(8, "little")
    path.write_bytes(bytes(data))


TWO = {"a.weight": np.ones((4, 64), np.float32), "b.weight": np.ones((4, 64), np.float32)}


@pytest.mark.parametrize("shift", [1, 3, 31])
def test_error_misaligned_tensor_data(tmp_path, shift):
    p = _tiny(tmp_path / "m.gguf", TWO)
    _patch_offset(p, "b.weight", lambda r: r + shift)
    _err(p, errors.CorruptGGUFError, "b.weight", "not a multiple of the file's alignment 32")


def test_error_overlapping_tensors(tmp_path):
    p = _tiny(tmp_path / "o.gguf", TWO)
    _patch_offset(p, "b.weight", lambda r: 0)
    _err(p, errors.CorruptGGUFError, "a.weight", "b.weight", "overlap")


def test_error_tensor_data_outside_the_file(tmp_path):
    p = _tiny(tmp_path / "t.gguf", TWO)
    _patch_offset(p, "b.weight", lambda r: r + 1 << 20)
    _err(p, errors.TruncatedGGUFError, "b.weight", "needs bytes up to")


def test_error_too_many_dimensions(tmp_path):
    p = _tiny(tmp_path / "d.gguf", {"x.weight": np.ones((1, 1, 1, 2, 32), np.float32)})
    _err(p, errors.CorruptGGUFError, "x.weight", "5 dimensions", "1 to 4")


def test_error_duplicate_key_and_tensor(tmp_path):
    p = _tiny(tmp_path / "k.gguf", TWO, keys=("test.aaa", "test.bbb"))
    p.write_bytes(p.read_bytes().replace(b"test.bbb", b"test.aaa"))
    _err(p, errors.CorruptGGUFError, "'test.aaa' appears twice")
    q = _tiny(tmp_path / "n.gguf", TWO)
    q.write_bytes(q.read_bytes().replace(b"b.weight", b"a.weight"))
    _err(q, errors.CorruptGGUFError, "'a.weight' appears twice")


def test_long_values_are_clipped_in_messages(tmp_path):
    name = "z" * 5000 + ".weight"
    p = _tiny(tmp_path / "l.gguf", {name: np.ones((1, 1, 1, 2, 32), np.float32)})
    with pytest.raises(errors.CorruptGGUFError) as e:
        GGUFModel(p)
    assert len(str(e.value)) < 400 and "5007 characters" in str(e.value)


def test_error_vocabulary_past_the_embedding(tmp_path, base_model):
    """A tokenizer with a token at id >= n_vocab (rows of token_embd), or a special id outside the
    vocabulary, is refused at load: inspect and run see the same error."""
    r = gguf.GGUFReader(str(base_model))
    f = r.fields["tokenizer.ggml.tokens"]
    toks = [bytes(f.parts[i]).decode() for i in f.data]
    n_vocab = GGUFModel(base_model).config.n_vocab
    extra = [f"<extra{i}>" for i in range(n_vocab - len(toks) + 1)]
    VT = gguf.GGUFValueType
    p = _rewrite(base_model, tmp_path / "v.gguf", kv={"tokenizer.ggml.tokens": (toks + extra, VT.ARRAY, VT.STRING)})
    _err(p, errors.BadMetadataError, f"{n_vocab + 1} tokens", f"{n_vocab} rows")
    q = _rewrite(base_model, tmp_path / "e.gguf", kv={"tokenizer.ggml.eos_token_id": (len(toks) + 3, U32)})
    _err(q, errors.BadMetadataError, "eos_token_id", "outside the vocabulary")


def test_inspect_and_run_refuse_the_same_tokenizer(tmp_path, base_model):
    """inspect builds the tokenizer and renders the chat template, as run does: a tokenizer run
    cannot build makes inspect say 'supported: no' with the same cause; a template that cannot
    render is reported by inspect (run -p still works)."""
    import subprocess
    import sys
    VT = gguf.GGUFValueType
    bad = _rewrite(base_model, tmp_path / "tok.gguf", kv={"tokenizer.ggml.model": ("nonsense", VT.STRING)})
    cmd = [sys.executable, "-m", "wgmtp.cli"]
    ins = subprocess.run(cmd + ["inspect", str(bad)], capture_output=True, text=True, env={"COLUMNS": "400"})
    run = subprocess.run(cmd + ["run", "-m", str(bad), "-p", "hi", "-n", "1"], capture_output=True, text=True)
    assert ins.returncode == 1 and run.returncode == 1
    assert "supported: no" in ins.stdout and "tokenizer model 'nonsense' is not supported" in ins.stdout
    assert "tokenizer model 'nonsense' is not supported" in run.stderr
    tpl = _rewrite(base_model, tmp_path / "tpl.gguf",
                   kv={"tokenizer.chat_template": ("{{ raise_exception('nope') }}", VT.STRING)})
    ins = subprocess.run(cmd + ["inspect", str(tpl)], capture_output=True, text=True, env={"COLUMNS": "400"})
    assert ins.returncode == 0 and "the chat template cannot be rendered" in ins.stdout and "nope" in ins.stdout


def test_check_tensors_names_the_first_nonfinite_block(tmp_path, base_model):
    """One NaN block scale in a weight: check_tensors (and so inspect) names the tensor and block."""
    import shutil
    import subprocess
    import sys

    from wgmtp.gguf_file import open_reader
    from wgmtp.models.qwen35 import GGUFModel as M
    p = tmp_path / "nan.gguf"
    shutil.copy(base_model, p)
    gm = M(p)
    gm.check_tensors()                                   # a clean file passes
    name = "blk.1.ffn_down.weight"
    info = gm.tensors[name]
    data = bytearray(p.read_bytes())
    if info.qtype == QT.F32:
        data[info.offset + 4 * 77: info.offset + 4 * 78] = np.float32(np.nan).tobytes()
        where = "element 77"
    else:
        bs = quants.block_info(info.qtype)[1]
        data[info.offset + 3 * bs: info.offset + 3 * bs + 2] = np.float16(np.nan).tobytes()
        where = f"{info.qtype.name} block 3"
    p.write_bytes(bytes(data))
    assert open_reader(p) is not None
    with pytest.raises(errors.NonFiniteTensorError, match=f"'{name}' holds NaN or infinity at {where}"):
        M(p).check_tensors()
    r = subprocess.run([sys.executable, "-m", "wgmtp.cli", "inspect", str(p)], capture_output=True, text=True,
                       env={"COLUMNS": "400"})
    assert r.returncode == 1 and "supported: no" in r.stdout and name in r.stdout
    run = [sys.executable, "-m", "wgmtp.cli", "run", "-m", str(p), "-p", "hi", "-n", "1", "--device", "cpu"]
    checked = subprocess.run(run + ["--check-tensors"], capture_output=True, text=True)
    assert checked.returncode == 1 and name in checked.stderr and checked.stderr.count("\n") == 1


def test_unknown_value_and_tensor_types_are_named(tmp_path):
    p = _tiny(tmp_path / "vt.gguf", TWO, keys=("test.aaa",))
    data = bytearray(p.read_bytes())
    at = data.index(b"test.aaa") + len(b"test.aaa")
    data[at: at + 4] = (12036).to_bytes(4, "little")
    p.write_bytes(bytes(data))
    msg = _err(p, errors.GGUFError, "metadata key 'test.aaa' has an unknown value type 12036")
    assert "GGUFValueType" not in msg
    q = _tiny(tmp_path / "tt.gguf", TWO)
    data = bytearray(q.read_bytes())
    at = _info_at(bytes(data), "b.weight")
    n_dims = int.from_bytes(data[at: at + 4], "little")
    data[at + 4 + 8 * n_dims: at + 8 + 8 * n_dims] = (99).to_bytes(4, "little")
    q.write_bytes(bytes(data))
    _err(q, errors.UnsupportedTensorTypeError, "99", "tensor 'b.weight'")


def test_control_characters_from_the_file_stay_on_one_line(tmp_path):
    p = _tiny(tmp_path / "c.gguf", TWO, keys=("test.a\nb\x1b[2J",))
    data = bytearray(p.read_bytes())
    at = data.index(b"test.a\nb\x1b[2J") + len(b"test.a\nb\x1b[2J")
    data[at: at + 4] = (777).to_bytes(4, "little")
    p.write_bytes(bytes(data))
    msg = _err(p, errors.GGUFError, "unknown value type 777")       # _err: one line, starts with the path
    assert "\x1b" not in msg and "\\n" in msg
