"""Tokenizer built from GGUF metadata, the stream decoder, and chat-template rendering."""
from __future__ import annotations

import re
import warnings

import gguf
import pytest
import regex
from make_model import CHAT_TEMPLATE

from wgmtp import errors
from wgmtp.chat import ChatDelta, ChatState, ChatTemplateError, format_single, render
from wgmtp.models.qwen35 import GGUFModel
from wgmtp.tokenizer import PRE_QWEN2, PRE_QWEN35, Tokenizer

# The qwen35 pre-tokenizer regex exactly as reference/qwen35-mtp.md section 1.3 gives it.
REF_QWEN35 = (r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}"
              r"| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

SAMPLES = [
    "Hello, world! The quick brown fox jumps over the lazy dog.",
    "Grüße aus Köln, naïve café, Straße, ÄÖÜäöüß",
    "東京と大阪、中文测试，한국어 텍스트",
    "emoji 🙂👍🏽 family 👨‍👩‍👧 flags 🇩🇪",
    "combining: e\u0301 a\u0308o\u0308 n\u0303 \u0915\u093f\u0928\u094d\u0926\u0940",
    "digits 1234567890 and 3.14159, tabs\tand\r\nnewlines\n\n  indented   spaces  ",
    "I'm sure they'll say we've done what you'd DON'T",
    "def main():\n    print(\"hello\")\n    return 0\n",
    "",
]

PARAGRAPH = (
    "<|im_start|>user\nThe gated delta rule keeps a state matrix per head; attention layers cache keys "
    "and values. Numbers like 42, 3.14159 and 2026-10-01 appear. Grüße aus Köln, naïve café, 東京, "
    "Привет мир, emoji 🙂 and symbols like <, >, & and #. I'm sure we'll see.\n\n"
    "def main():\n    print(\"hello\")\n    return 0\n<|im_end|>\n<|im_start|>assistant\n"
)


@pytest.fixture(scope="module")
def model_path(synth):
    return synth()


@pytest.fixture(scope="module")
def tok(model_path) -> Tokenizer:
    return Tokenizer.from_gguf(GGUFModel(model_path))


def _byte_ids(tok: Tokenizer) -> dict[int, int]:
    """byte value -> id of the single-byte token."""
    out = {}
    for i in range(tok.n_vocab):
        b = tok.token_bytes(i)
        if len(b) == 1 and tok.token_type(i) == 1:
            out.setdefault(b[0], i)
    return out


# ---------------------------------------------------------------------------------------------
# metadata

def test_metadata(tok, model_path):
    r = gguf.GGUFReader(str(model_path))
    f = r.fields["tokenizer.ggml.tokens"]
    assert tok.n_vocab == len(f.data) == len(tok.tokens)
    assert tok.pre == "qwen35" and PRE_QWEN35 == REF_QWEN35
    assert tok.token_text(tok.eos_id) == "<|im_end|>"
    ids = {tok.token_text(i): i for i in tok.eog_ids}
    assert set(ids) == {"<|im_end|>", "<|endoftext|>"} and tok.eos_id in tok.eog_ids
    assert tok.add_bos is False and tok.encode("hi")[0] != tok.bos_id
    assert tok.chat_template == CHAT_TEMPLATE
    assert tok.template_vars() == {"bos_token": "", "eos_token": "<|im_end|>"}


# ---------------------------------------------------------------------------------------------
# encode / decode

@pytest.mark.parametrize("text", SAMPLES)
def test_round_trip(tok, text):
    ids = tok.encode(text)
    assert all(isinstance(i, int) and 0 <= i < tok.n_vocab for i in ids)
    assert tok.decode(ids) == text
    assert (len(ids) == 0) == (text == "")


def test_special_tokens_are_single_ids(tok):
    im_start = tok.encode("<|im_start|>")
    assert len(im_start) == 1 and tok.token_text(im_start[0]) == "<|im_start|>"
    assert tok.decode(im_start) == "<|im_start|>"
    ids = tok.encode("<|im_start|>user\nhi<|im_end|>\n")
    assert ids[0] == im_start[0] and tok.eos_id in ids
    assert tok.decode(ids) == "<|im_start|>user\nhi<|im_end|>\n"
    assert tok.decode(ids, skip_special=True) == "user\nhi\n"
    # a control token glued to text on both sides
    ids = tok.encode("a<|im_end|>b")
    assert tok.eos_id in ids and tok.decode(ids) == "a<|im_end|>b"


def test_padding_tokens_never_produced(tok):
    pads = [i for i in range(tok.n_vocab) if tok.token_type(i) == 5]
    assert pads and tok.token_text(pads[0]).startswith("[PAD")
    text = " ".join(tok.token_text(i) for i in pads[:5]) + " " + " ".join(SAMPLES)
    ids = tok.encode(text)
    assert not set(ids) & set(pads)
    assert tok.decode(ids) == text
    assert tok.decode([pads[0]]) == ""          # an unused token renders as nothing (as llama.cpp)


def test_matches_independent_bpe(tok):
    """The qwen35 pipeline against a from-scratch byte-level BPE (regex split, rank merges)."""
    bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    cs = bs[:]
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + len(cs) - 188)
    b2u = {b: chr(c) for b, c in zip(bs, cs)}
    r = tok.tokens
    vocab = {t: i for i, t in enumerate(r) if tok.token_type(i) != 5}
    reader = gguf.GGUFReader(str(tok.path))
    mf = reader.fields["tokenizer.ggml.merges"]
    merges = [bytes(mf.parts[i]).decode() for i in mf.data]
    ranks = {tuple(m.split(" ", 1)): k for k, m in enumerate(merges)}
    specials = [t for i, t in enumerate(r) if tok.token_type(i) == 3]
    split = "(" + "|".join(map(re.escape, specials)) + ")"

    def bpe(text: str) -> list[int]:
        out = []
        for part in re.split(split, text):
            if part in specials:
                out.append(vocab[part])
                continue
            for piece in regex.findall(REF_QWEN35, part):
                word = [b2u[b] for b in piece.encode("utf-8")]
                while len(word) > 1:
                    k = min(range(len(word) - 1), key=lambda j: ranks.get((word[j], word[j + 1]), 1 << 30))
                    if (word[k], word[k + 1]) not in ranks:
                        break
                    word[k:k + 2] = [word[k] + word[k + 1]]
                out += [vocab[w] for w in word]
        return out

    for text in [PARAGRAPH] + SAMPLES:
        assert tok.encode(text) == bpe(text), text


def test_gpt2_pre_matches_hf_bytelevel(tok):
    """The same vocab/merges with the 'gpt2' pre-tokenizer equal a plain HF ByteLevel BPE."""
    from tokenizers import Tokenizer as HF
    from tokenizers import models, pre_tokenizers
    mine = Tokenizer(tok.tokens, tok.types, [" ".join(p) for p in _merges(tok)], pre="gpt2")
    vocab = {t: i for i, t in enumerate(tok.tokens) if tok.token_type(i) != 5}
    hf = HF(models.BPE(vocab=vocab, merges=_merges(tok)))
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    text = PARAGRAPH.replace("<|im_start|>", "").replace("<|im_end|>", "")
    assert mine.encode(text) == hf.encode(text).ids
    assert mine.decode(mine.encode(text)) == text


def _merges(tok: Tokenizer) -> list[tuple[str, str]]:
    reader = gguf.GGUFReader(str(tok.path))
    mf = reader.fields["tokenizer.ggml.merges"]
    return [tuple(bytes(mf.parts[i]).decode().split(" ", 1)) for i in mf.data]  # type: ignore[misc]


# ---------------------------------------------------------------------------------------------
# pre-tokenizer

def _pieces(t: Tokenizer, text: str) -> list[str]:
    from wgmtp.tokenizer import byte_level_decode
    return [byte_level_decode(p).decode("utf-8") for p, _ in t.hf.pre_tokenizer.pre_tokenize_str(text)]


@pytest.mark.parametrize("text", SAMPLES + [PARAGRAPH, "x\u0301\u0302y 12\u0663\u00b2 \u3000\u00a0a\u2028b '\u0301s"])
def test_qwen35_pre_tokenizer_matches_reference_regex(tok, text):
    assert _pieces(tok, text) == regex.findall(REF_QWEN35, text)


def test_qwen35_digits_and_combining_marks(tok):
    assert _pieces(tok, "abc 2026") == ["abc", " ", "2", "0", "2", "6"]
    assert _pieces(tok, "cafe\u0301 na\u0308ive") == ["cafe\u0301", " na\u0308ive"]
    qwen2 = Tokenizer(tok.tokens, tok.types, [" ".join(p) for p in _merges(tok)], pre="qwen2")
    assert qwen2.pre == "qwen2"
    assert _pieces(qwen2, "cafe\u0301 x") == regex.findall(PRE_QWEN2, "cafe\u0301 x") != ["cafe\u0301", " x"]


def test_unknown_pre_falls_back_quietly(tok):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t = Tokenizer(tok.tokens, tok.types, [" ".join(p) for p in _merges(tok)], pre="some-new-model")
    assert t.pre == "default"
    assert t.decode(t.encode(PARAGRAPH)) == PARAGRAPH


# ---------------------------------------------------------------------------------------------
# stream decoder

@pytest.mark.parametrize("text", SAMPLES + [PARAGRAPH])
def test_stream_decoder_pieces(tok, text):
    ids = tok.encode(text)
    dec = tok.stream_decoder()
    pieces = [dec.push(i) for i in ids] + [dec.flush()]
    assert "".join(pieces) == tok.decode(ids) == text
    for p in pieces:
        p.encode("utf-8")                       # a str of whole characters
        assert "\ufffd" not in p


def test_stream_decoder_holds_split_emoji(tok):
    byte_id = _byte_ids(tok)
    emoji = "🙂".encode("utf-8")
    ids = [byte_id[b] for b in b"ok " + emoji + b"!"]
    dec = tok.stream_decoder()
    out = [dec.push(i) for i in ids]
    assert out == ["o", "k", " ", "", "", "", "🙂", "!"]
    assert dec.flush() == ""
    # in the model's own encoding the emoji's bytes span several tokens too
    enc = tok.encode("🙂")
    assert len(enc) > 1 and tok.decode(enc) == "🙂"


def test_stream_decoder_invalid_bytes(tok):
    byte_id = _byte_ids(tok)
    seqs = [b"a\xf0\x9f", b"\xff\xfeb", b"\xe2\x82x\xe2\x82\xac", b"\xc3", b"\x80z", b"\xed\xa0\x80."]
    for raw in seqs:
        ids = [byte_id[b] for b in raw]
        dec = tok.stream_decoder()
        got = "".join(dec.push(i) for i in ids) + dec.flush()
        assert got == tok.decode(ids) == raw.decode("utf-8", "replace"), raw
    dec = tok.stream_decoder()
    assert dec.push(byte_id[0xFF]) == "\ufffd"  # cannot start a character: replaced at once
    assert dec.push(byte_id[0xF0]) == ""        # may start one: held
    assert dec.flush() == "\ufffd"


def test_stream_decoder_skip_special(tok):
    ids = tok.encode("hi<|im_end|>")
    dec = tok.stream_decoder(skip_special=True)
    assert "".join(dec.push(i) for i in ids) + dec.flush() == "hi" == tok.decode(ids, skip_special=True)


# ---------------------------------------------------------------------------------------------
# errors

def _write(path, **kv) -> str:
    w = gguf.GGUFWriter(str(path), "qwen35")
    for k, v in kv.items():
        getattr(w, k)(v)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return str(path)


def test_errors_are_one_line_naming_the_file(tmp_path, tok):
    cases = [
        (_write(tmp_path / "none.gguf"), "no tokenizer metadata"),
        (_write(tmp_path / "spm.gguf", add_tokenizer_model="llama", add_token_list=["<unk>", "a"]), "'llama'"),
        (_write(tmp_path / "nomerges.gguf", add_tokenizer_model="gpt2", add_token_list=tok.tokens), "merges"),
        (_write(tmp_path / "types.gguf", add_tokenizer_model="gpt2", add_token_list=tok.tokens,
                add_token_merges=[" ".join(m) for m in _merges(tok)], add_token_types=[1, 1]), "token_type"),
        (_write(tmp_path / "eos.gguf", add_tokenizer_model="gpt2", add_token_list=tok.tokens,
                add_token_merges=[" ".join(m) for m in _merges(tok)], add_eos_token_id=10**6), "eos_token_id"),
        (_write(tmp_path / "bytes.gguf", add_tokenizer_model="gpt2", add_token_list=["a", "b"],
                add_token_merges=["a b"]), "byte-level"),
    ]
    for path, needle in cases:
        with pytest.raises(errors.GGUFError) as ei:
            Tokenizer.from_gguf(path)
        msg = str(ei.value)
        assert isinstance(ei.value, errors.WgmtpError)
        assert "\n" not in msg and msg.startswith(path) and needle in msg, msg


# ---------------------------------------------------------------------------------------------
# chat templates

TWO_TURNS = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Hi!"},
    {"role": "assistant", "content": "Hello."},
    {"role": "user", "content": "Grüße 🙂?"},
]


def test_chatml_two_turns(tok):
    got = render(tok.chat_template, TWO_TURNS, add_generation_prompt=True, **tok.template_vars())
    assert got == ("<|im_start|>system\nYou are terse.<|im_end|>\n"
                   "<|im_start|>user\nHi!<|im_end|>\n"
                   "<|im_start|>assistant\nHello.<|im_end|>\n"
                   "<|im_start|>user\nGrüße 🙂?<|im_end|>\n"
                   "<|im_start|>assistant\n")
    assert render(tok.chat_template, TWO_TURNS[:3], add_generation_prompt=False).endswith("Hello.<|im_end|>\n")
    ids = tok.encode(got)
    assert ids.count(tok.encode("<|im_start|>")[0]) == 5 and ids.count(tok.eos_id) == 4
    assert tok.decode(ids) == got


def test_chat_state_delta(tok):
    chat = ChatState(tok.chat_template, system="You are terse.", **tok.template_vars())
    d1 = chat.user("Hi!")
    assert d1 == ChatDelta("<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n"
                           "<|im_start|>assistant\n", False)
    chat.assistant("Hello.<|im_end|>")                  # as generated: the EOG token's text included
    assert chat.messages[-1] == {"role": "assistant", "content": "Hello."}
    d2 = chat.user("Grüße 🙂?")
    assert d2 == ChatDelta("\n<|im_start|>user\nGrüße 🙂?<|im_end|>\n<|im_start|>assistant\n", False)
    assert chat.fed == render(tok.chat_template, TWO_TURNS)
    # llama.cpp's common_chat_format_single gives the same delta
    assert format_single(tok.chat_template, TWO_TURNS[:3], TWO_TURNS[3]) == d2
    # a reply cut off by the token limit: the delta closes it
    chat.assistant("Danke, gu")
    d3 = chat.user("and?")
    assert d3 == ChatDelta("<|im_end|>\n<|im_start|>user\nand?<|im_end|>\n<|im_start|>assistant\n", False)


def test_chat_state_reset_when_history_is_rewritten():
    # drops the thinking of past replies, as Qwen3 templates do
    tpl = ("{% for m in messages %}<|im_start|>{{ m.role }}\n"
           "{% if m.role == 'assistant' %}{{ m.content.split('</think>')[-1].lstrip('\\n') }}"
           "{% else %}{{ m.content }}{% endif %}<|im_end|>\n{% endfor %}"
           "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    chat = ChatState(tpl)
    chat.user("q")
    chat.assistant("<think>\nhmm\n</think>\n\nA<|im_end|>")
    d = chat.user("q2")
    assert d.reset and d.text == "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\nA<|im_end|>\n" \
                                 "<|im_start|>user\nq2<|im_end|>\n<|im_start|>assistant\n"
    assert chat.fed == d.text
    # format_single compares two renderings, which both drop the thinking: it cannot see this ...
    assert not format_single(tpl, chat.messages[:2], chat.messages[2]).reset
    # ... but does see a template that renders the last reply differently from earlier ones
    tpl_last = tpl.replace("{% if m.role == 'assistant' %}", "{% if m.role == 'assistant' and not loop.last %}")
    d = format_single(tpl_last, chat.messages[:2], chat.messages[2])
    assert d.reset and d.text == render(tpl_last, chat.messages[:3])


@pytest.mark.parametrize("code", [
    "{{ ''.__class__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ messages.__class__.__base__.__subclasses__() }}",
    "{{ raise_exception.__globals__ }}",
    "{{ cycler.__init__.__globals__['os'] }}",
    "{{ ''['__class__'] }}",
    "{{ dict.__class__ }}",
    "{% set ns = namespace() %}{% set ns.__class__ = 1 %}",
    "{{ messages.append(1) }}",
])
def test_sandbox_refuses_unsafe_code(code):
    with pytest.raises(ChatTemplateError) as ei:
        render(code, TWO_TURNS)
    msg = str(ei.value)
    assert "\n" not in msg and ("unsafe" in msg or "may not start" in msg), msg


def test_template_errors_are_one_line():
    for tpl, needle in [("{% for %}", "syntax error"), ("{{ raise_exception('no system role') }}", "no system role"),
                        ("{{ 1 + 'a' }}", "TypeError"), ("", "no chat template")]:
        with pytest.raises(ChatTemplateError) as ei:
            render(tpl, TWO_TURNS)
        assert isinstance(ei.value, errors.WgmtpError)
        assert "\n" not in str(ei.value) and needle in str(ei.value)


@pytest.mark.parametrize("tpl,needle", [
    ("{{ 'x' * 10**9 }}", "output budget"),                      # refused before it allocates
    ("{% set a = [0] * 100000000 %}{{ a|length }}", "output budget"),
    ("{% set e = messages|length * 10**6 %}{{ 7 ** e }}", "exponent"),
    ("{{ messages|tojson(indent=10**8) }}", "indent"),
    ("{% for i in range(20000) %}{{ 'y' * 1000 }}{% endfor %}", "exceeds"),   # 20 M characters, streamed
    ("{# nothing #}   ", "empty prompt"),
])
def test_template_budgets(tpl, needle):
    """A template renders within a size budget enforced as it streams (and before a single `*` or
    `**` runs), and an empty rendering is an error naming the template, not an empty prompt."""
    with pytest.raises(ChatTemplateError) as ei:
        render(tpl, TWO_TURNS)
    assert "\n" not in str(ei.value) and needle in str(ei.value), str(ei.value)


# A template exercising what HF-style Qwen templates use (namespace, reversed slicing, loop vars,
# tests, string methods, tojson, loopcontrols, generation blocks, extra variables).
RICH = """{%- if tools %}<tools>{% for t in tools %}{{ t | tojson }}{% endfor %}</tools>
{% endif %}
{%- set ns = namespace(last_user=-1) %}
{%- for m in messages[::-1] %}{% if m.role == 'user' and ns.last_user < 0 %}\
{% set ns.last_user = messages|length - 1 - loop.index0 %}{% endif %}{% endfor %}
{%- for m in messages %}
    {%- if m.role == 'assistant' and m.content is string and '</think>' in m.content %}
        {%- set c = m.content.split('</think>')[-1].strip() %}
    {%- else %}{% set c = m.content %}{% endif %}
    {%- if m.role == 'stop' %}{% break %}{% endif %}
<|im_start|>{{ m.role }}{{ ' (last query)' if loop.index0 == ns.last_user }}
{% generation %}{{ c }}{% endgeneration %}<|im_end|>
{% endfor %}
{%- if add_generation_prompt %}<|im_start|>assistant
{% if enable_thinking is defined and enable_thinking is false %}<think>

</think>

{% endif %}{% endif %}{{ bos_token }}{{ dict(a=1)|tojson }}"""


def test_rich_template_matches_transformers():
    msgs = [{"role": "user", "content": "Grüße"}, {"role": "assistant", "content": "<think>x</think> ok"},
            {"role": "user", "content": "again"}, {"role": "stop", "content": ""},
            {"role": "assistant", "content": "zz"}]
    tools = [{"name": "f", "description": "ä"}]
    ours = render(RICH, msgs, add_generation_prompt=True, tools=tools, enable_thinking=False, bos_token="<s>")
    assert '{"name": "f", "description": "ä"}' in ours and "user (last query)\nagain" in ours and "zz" not in ours
    assert ours.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n<s>{\"a\": 1}")
    cu = pytest.importorskip("transformers.utils.chat_template_utils")
    theirs, _ = cu.render_jinja_template([msgs], tools=tools, chat_template=RICH, add_generation_prompt=True,
                                         enable_thinking=False, bos_token="<s>")
    assert ours == theirs[0]


def test_merges_that_cannot_apply_are_dropped(tok):
    merges = [" ".join(m) for m in _merges(tok)]
    bad = ["Ġ zzzz", "notatoken x", merges[0] + "q"]
    t = Tokenizer(tok.tokens, tok.types, bad + merges)
    assert t.n_merges == len(merges)
    assert t.encode(PARAGRAPH) == tok.encode(PARAGRAPH)
    with pytest.raises(errors.BadMetadataError):
        Tokenizer(tok.tokens, tok.types, ["nospace"] + merges)


def test_chat_session_feeds_deltas(tok):
    """ChatSession over a stand-in model: what it feeds, with which `cont`, and what it shows."""
    from wgmtp.chat import ChatSession

    class FakeModel:
        tokenizer = tok

        def __init__(self, replies):
            self.replies, self.calls = list(replies), []

        def generate_ids(self, ids, cont=False, **kw):
            self.calls.append((tok.decode(ids), cont, kw))
            reply = self.replies.pop(0)
            if reply is None:
                raise errors.ContextOverflowError("prompt does not fit")
            yield from tok.encode(reply)

    m = FakeModel(["Hallo 🙂<|im_end|>", None, "cut off", "ok<|im_end|>"])
    s = ChatSession(m, system="Be brief.")
    assert "".join(s.reply("Hi", max_tokens=8)) == "Hallo 🙂"          # <|im_end|> not shown
    assert m.calls[0] == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
                          "<|im_start|>assistant\n", False, {"max_tokens": 8})
    with pytest.raises(errors.ContextOverflowError):
        list(s.reply("too long"))
    assert [x["content"] for x in s.state.messages] == ["Be brief.", "Hi", "Hallo 🙂"]   # turn undone
    assert "".join(s.reply("Q2")) == "cut off"
    assert m.calls[2][:2] == ("\n<|im_start|>user\nQ2<|im_end|>\n<|im_start|>assistant\n", True)
    assert "".join(s.reply("Q3")) == "ok"
    assert m.calls[3][:2] == ("<|im_end|>\n<|im_start|>user\nQ3<|im_end|>\n<|im_start|>assistant\n", True)
    assert s.state.fed == render(tok.chat_template, s.state.messages, add_generation_prompt=False)[:-1]
