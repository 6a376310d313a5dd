"""The GGUF's own byte-level BPE tokenizer, built on the HF `tokenizers` library.

Everything comes from the file's metadata (reference section 1.3), nothing from the network:

- `tokenizer.ggml.tokens`: token strings in GPT-2 byte-to-unicode form (a space is `Ġ`);
- `tokenizer.ggml.merges`: `"left right"`, rank = index;
- `tokenizer.ggml.token_type`: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused
  (the converter's `[PAD<i>]` fillers), 6 byte;
- `tokenizer.ggml.pre`: the pre-tokenizer regex (`qwen35`, `qwen2`, anything else: GPT-2's);
- `tokenizer.ggml.{bos,eos}_token_id`, `tokenizer.ggml.add_{bos,eos}_token`.

Like llama.cpp (and unlike HF's Qwen `tokenizer.json`, which adds an NFC normalizer) the text is
not normalized: a decomposed "e" + U+0301 stays two code points, which the `qwen35` regex keeps in
one piece with its letter. Control (type 3) and user-defined (type 4) tokens are matched in the
text before pre-tokenization, so `"<|im_start|>"` encodes as one id; unused (type 5) tokens are
left out of the BPE vocabulary, so `encode` never produces them.

Decoding does not go through `tokenizers`: every id has its own byte string, computed once on first
use (normal tokens through the inverse byte-to-unicode map, control/user-defined tokens as their
UTF-8 text, unused tokens as nothing), so `decode` is a join and the stream decoder is O(1) per
token.
"""
from __future__ import annotations

import codecs
import os
import re
from typing import Any, Iterable, Iterator

from .errors import BadMetadataError, BadRequestError, GGUFError

MAX_ENCODE_CHARS = 16 << 20   # 16 Mi characters: a 262k-token context is ~1 MiB of text

# Pre-tokenizer regexes, exactly as llama.cpp's llama-vocab.cpp gives them.
PRE_QWEN35 = (r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+"
              r"|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
PRE_QWEN2 = (r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+"
             r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
PRE_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
PRE_REGEXES = {"qwen35": PRE_QWEN35, "qwen2": PRE_QWEN2, "gpt2": PRE_GPT2, "default": PRE_GPT2}

# Token texts that end generation besides EOS (llama.cpp scans the vocab for these).
EOG_TEXTS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end|>")

TT_NORMAL, TT_UNKNOWN, TT_CONTROL, TT_USER_DEFINED, TT_UNUSED, TT_BYTE = 1, 2, 3, 4, 5, 6

_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 byte values to printable unicode characters."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


BYTE_TO_UNICODE = bytes_to_unicode()
UNICODE_TO_BYTE = {c: b for b, c in BYTE_TO_UNICODE.items()}
# str.translate table: byte-level char -> the latin-1 char of its byte (then .encode("latin-1")).
_TO_LATIN1 = {ord(c): chr(b) for c, b in UNICODE_TO_BYTE.items()}


def byte_level_decode(text: str) -> bytes:
    """The bytes a byte-level token string stands for (`"Ġthe"` -> `b" the"`). A character
    outside the map (not produced by a byte-level vocab) stands for its own UTF-8."""
    try:
        return text.translate(_TO_LATIN1).encode("latin-1")
    except UnicodeEncodeError:
        return b"".join(bytes([UNICODE_TO_BYTE[ch]]) if ch in UNICODE_TO_BYTE else ch.encode("utf-8")
                        for ch in text)


def _one_line(s: object) -> str:
    return " ".join(str(s).split())


# --------------------------------------------------------------------------------------------
# reading the metadata

def _open(src: Any) -> tuple[Any, str]:
    """(reader, path) from a GGUFModel, a reader (wgmtp's or gguf-py's) or a path."""
    if isinstance(src, (str, os.PathLike)):
        from .gguf_file import open_reader
        return open_reader(src), str(src)
    reader = getattr(src, "reader", None)
    if reader is not None:
        return reader, str(getattr(src, "path", getattr(reader, "path", "<gguf>")))
    if hasattr(src, "fields"):
        return src, str(getattr(src, "path", "<gguf>"))
    raise TypeError(f"Tokenizer.from_gguf needs a GGUFModel, a GGUF reader or a path, not {type(src).__name__}")


def _strings(reader: Any, key: str, path: str) -> list[str] | None:
    f = reader.fields.get(key)
    if f is None:
        return None
    try:
        if hasattr(f, "strings"):   # wgmtp.gguf_reader.Field: decoded in one pass
            return f.strings("replace")
        return [bytes(f.parts[i]).decode("utf-8", "replace") for i in f.data]   # gguf-py ReaderField
    except Exception as e:
        raise BadMetadataError(path, f"metadata key '{key}' is not a string array ({_one_line(e)})") from None


def _ints(reader: Any, key: str, path: str) -> list[int] | None:
    f = reader.fields.get(key)
    if f is None:
        return None
    try:
        if hasattr(f, "ints"):      # wgmtp.gguf_reader.Field: one numpy view
            return f.ints()
        return [int(f.parts[i][0]) for i in f.data]   # gguf-py ReaderField
    except Exception as e:
        raise BadMetadataError(path, f"metadata key '{key}' is not an integer array ({_one_line(e)})") from None


def _scalar(reader: Any, key: str, path: str, kind: type) -> Any:
    f = reader.fields.get(key)
    if f is None:
        return None
    try:
        v = f.contents()
    except Exception as e:
        raise BadMetadataError(path, f"metadata key '{key}' cannot be read ({_one_line(e)})") from None
    if kind is str:
        if not isinstance(v, str):
            raise BadMetadataError(path, f"metadata key '{key}' is not a string")
        return v
    if isinstance(v, (list, str, bytes)):
        raise BadMetadataError(path, f"metadata key '{key}' = {_one_line(repr(v))[:60]} is not a {kind.__name__}")
    return kind(v)


# --------------------------------------------------------------------------------------------

class Tokenizer:
    """A GGUF's byte-level BPE tokenizer. Build with `Tokenizer.from_gguf(gm)`.

    Attributes: `tokens` (the GGUF token strings), `types` (token types), `n_vocab`,
    `bos_id`/`eos_id`/`pad_id` (or None), `add_bos`/`add_eos`, `eog_ids` (frozenset), `pre` (the
    pre-tokenizer name used), `chat_template` (str or None), `hf` (the `tokenizers.Tokenizer`).
    """

    def __init__(self, tokens: list[str], types: list[int], merges: list[str], *, pre: str | None = "qwen35",
                 bos_id: int | None = None, eos_id: int | None = None, pad_id: int | None = None,
                 add_bos: bool = False, add_eos: bool = False, chat_template: str | None = None,
                 path: str = "<tokenizer>") -> None:
        from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers
        from tokenizers import Tokenizer as HFTokenizer

        if len(types) != len(tokens):
            raise BadMetadataError(path, f"'tokenizer.ggml.token_type' has {len(types)} entries but "
                                         f"'tokenizer.ggml.tokens' has {len(tokens)}")
        n = len(tokens)
        for name, v in (("bos_token_id", bos_id), ("eos_token_id", eos_id), ("padding_token_id", pad_id)):
            if v is not None and not 0 <= v < n:
                raise BadMetadataError(path, f"'tokenizer.ggml.{name}' = {v} is outside the vocabulary (0..{n - 1})")
        if add_bos and bos_id is None:
            raise BadMetadataError(path, "'tokenizer.ggml.add_bos_token' is true but there is no "
                                         "'tokenizer.ggml.bos_token_id'")
        if add_eos and eos_id is None:
            raise BadMetadataError(path, "'tokenizer.ggml.add_eos_token' is true but there is no "
                                         "'tokenizer.ggml.eos_token_id'")
        self.path = path
        self.tokens = tokens
        self.types = types
        self.n_vocab = n
        self.bos_id, self.eos_id, self.pad_id = bos_id, eos_id, pad_id
        self.add_bos, self.add_eos = bool(add_bos), bool(add_eos)
        self.chat_template = chat_template
        self.pre = pre if pre in PRE_REGEXES else "default"

        # BPE vocabulary: every token except the unused fillers (first occurrence of a text wins).
        vocab: dict[str, int] = {}
        for i, (t, ty) in enumerate(zip(tokens, types)):
            if ty != TT_UNUSED and t and t not in vocab:
                vocab[t] = i
        missing = [b for b, c in BYTE_TO_UNICODE.items() if c not in vocab]
        if missing:
            raise BadMetadataError(path, f"the vocabulary lacks the byte-level tokens of {len(missing)} of the "
                                         f"256 bytes (e.g. 0x{missing[0]:02x}); not a byte-level BPE vocabulary")
        # A merge whose parts or result are not tokens can never apply: drop it (rank order kept).
        # It must not reach `tokenizers`, whose BPE builder panics on a merge result it lacks.
        pairs: list[tuple[str, str]] = []
        for m in merges:
            k = m.find(" ", 1)
            if k < 0:
                raise BadMetadataError(path, f"'tokenizer.ggml.merges' entry {_one_line(repr(m))[:40]} "
                                             f"is not 'left right'")
            a, b = m[:k], m[k + 1:]
            if a in vocab and b in vocab and a + b in vocab:
                pairs.append((a, b))
        self.n_merges = len(pairs)
        model = models.BPE(vocab=vocab, merges=pairs, byte_fallback=False, fuse_unk=False, ignore_merges=False)

        hf = HFTokenizer(model)
        hf.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(PRE_REGEXES[self.pre]), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ])
        hf.decoder = decoders.ByteLevel()
        control = [t for t, ty in zip(tokens, types) if ty == TT_CONTROL and t and vocab.get(t) is not None]
        user = [t for t, ty in zip(tokens, types) if ty == TT_USER_DEFINED and t and vocab.get(t) is not None]
        if control:
            hf.add_special_tokens([AddedToken(t, special=True, normalized=False, lstrip=False, rstrip=False,
                                              single_word=False) for t in control])
        if user:
            hf.add_tokens([AddedToken(t, special=False, normalized=False, lstrip=False, rstrip=False,
                                      single_word=False) for t in user])
        self.hf = hf

        # Per-id bytes for decoding, computed on first use (a real vocabulary has ~250k tokens).
        self._bytes: list[bytes | None] = [None] * n
        self._control = frozenset(i for i, ty in enumerate(types) if ty == TT_CONTROL)

        eog = {i for i, t in enumerate(tokens) if t in EOG_TEXTS}
        if eos_id is not None:
            eog.add(eos_id)
        self.eog_ids: frozenset[int] = frozenset(eog)

    # ---- construction

    @classmethod
    def from_gguf(cls, src: Any) -> "Tokenizer":
        """Build from a `GGUFModel` (uses its `.reader`/`.path`), a reader (`wgmtp.gguf_reader` or
        gguf-py's `GGUFReader`), or a path.

        Raises GGUFError (one line, starting with the file's path) when the file has no tokenizer
        metadata or its tokenizer model is not `gpt2` (byte-level BPE), and BadMetadataError when
        the metadata is inconsistent.
        """
        reader, path = _open(src)
        model = _scalar(reader, "tokenizer.ggml.model", path, str)
        tokens = _strings(reader, "tokenizer.ggml.tokens", path)
        if model is None and tokens is None:
            raise GGUFError(path, "has no tokenizer metadata ('tokenizer.ggml.model' and "
                                  "'tokenizer.ggml.tokens' are missing)")
        if model is None:
            raise GGUFError(path, "has no tokenizer model ('tokenizer.ggml.model' is missing)")
        if model != "gpt2":
            raise GGUFError(path, f"tokenizer model '{_one_line(model)[:40]}' is not supported "
                                  f"(wgmtp reads byte-level BPE, 'gpt2', only)")
        if not tokens:
            raise GGUFError(path, "has no tokenizer vocabulary ('tokenizer.ggml.tokens' is missing or empty)")
        merges = _strings(reader, "tokenizer.ggml.merges", path)
        if merges is None:
            raise GGUFError(path, "has no BPE merges ('tokenizer.ggml.merges' is missing)")
        types = _ints(reader, "tokenizer.ggml.token_type", path)
        if types is None:
            types = [TT_NORMAL] * len(tokens)
        return cls(
            tokens, types, merges,
            pre=_scalar(reader, "tokenizer.ggml.pre", path, str),
            bos_id=_scalar(reader, "tokenizer.ggml.bos_token_id", path, int),
            eos_id=_scalar(reader, "tokenizer.ggml.eos_token_id", path, int),
            pad_id=_scalar(reader, "tokenizer.ggml.padding_token_id", path, int),
            add_bos=bool(_scalar(reader, "tokenizer.ggml.add_bos_token", path, bool) or False),
            add_eos=bool(_scalar(reader, "tokenizer.ggml.add_eos_token", path, bool) or False),
            chat_template=_scalar(reader, "tokenizer.chat_template", path, str),
            path=path,
        )

    # ---- encoding / decoding

    def encode(self, text: str, add_special: bool = True) -> list[int]:
        """Token ids of `text`. Control and user-defined token texts in `text` (e.g.
        `<|im_start|>`) become their single ids. `add_special` adds BOS/EOS where the file asks
        for them (`tokenizer.ggml.add_bos_token` / `add_eos_token`; both false for Qwen).

        Text past MAX_ENCODE_CHARS is refused before it reaches the Rust tokenizer (which can abort
        the process on a huge input), and anything it raises, including pyo3's PanicException (a
        BaseException), becomes one line."""
        if len(text) > MAX_ENCODE_CHARS:
            raise BadRequestError(f"text of {len(text):,} characters is too long to tokenize (at most "
                                  f"{MAX_ENCODE_CHARS:,}: more than any context holds)")
        try:
            ids = self.hf.encode(text, add_special_tokens=False).ids
        except (KeyboardInterrupt, SystemExit, GeneratorExit):
            raise
        except BaseException as e:      # pyo3_runtime.PanicException derives from BaseException
            raise BadRequestError(f"the tokenizer failed on this text ({type(e).__name__}: {str(e)[:120]})") from None
        if add_special:
            if self.add_bos:
                ids = [self.bos_id] + ids  # type: ignore[list-item]
            if self.add_eos:
                ids = ids + [self.eos_id]  # type: ignore[list-item]
        return ids

    def token_bytes(self, id: int) -> bytes:
        """The bytes token `id` stands for (b"" for unused/padding tokens)."""
        if not 0 <= id < self.n_vocab:
            raise ValueError(f"token id {id} is outside the vocabulary (0..{self.n_vocab - 1})")
        b = self._bytes[id]
        if b is None:
            b = self._bytes[id] = self._compute_bytes(self.tokens[id], self.types[id])
        return b

    @staticmethod
    def _compute_bytes(t: str, ty: int) -> bytes:
        if ty in (TT_CONTROL, TT_USER_DEFINED, TT_UNKNOWN):
            return t.encode("utf-8")
        if ty == TT_UNUSED:          # padding: renders as nothing (llama.cpp suppresses it)
            return b""
        if ty == TT_BYTE:
            mb = _BYTE_TOKEN.fullmatch(t)
            if mb:
                return bytes([int(mb.group(1), 16)])
        return byte_level_decode(t)  # normal (and any undefined type value): byte-level text

    def token_text(self, id: int) -> str:
        """The token's string as the GGUF stores it (byte-level form, e.g. 'Ġthe')."""
        if not 0 <= id < self.n_vocab:
            raise ValueError(f"token id {id} is outside the vocabulary (0..{self.n_vocab - 1})")
        return self.tokens[id]

    def token_type(self, id: int) -> int:
        return self.types[id]

    def is_control(self, id: int) -> bool:
        return id in self._control

    def decode_bytes(self, ids: Iterable[int], skip_special: bool = False) -> bytes:
        out = []
        for i in ids:
            i = int(i)
            if skip_special and i in self._control:
                continue
            out.append(self.token_bytes(i))
        return b"".join(out)

    def decode(self, ids: Iterable[int], skip_special: bool = False) -> str:
        """Text of `ids`; bytes that are not valid UTF-8 become U+FFFD. With `skip_special`,
        control tokens (type 3, e.g. `<|im_end|>`) are left out."""
        return self.decode_bytes(ids, skip_special).decode("utf-8", "replace")

    def stream_decoder(self, skip_special: bool = False) -> "StreamDecoder":
        """An incremental decoder: `push(id)` returns the newly completed text, `flush()` the rest."""
        return StreamDecoder(self, skip_special)

    def stream(self, ids: Iterable[int]) -> Iterator[str]:
        """Text pieces of generated `ids` as they come (valid UTF-8 only: a partial character
        waits for its next bytes), specials skipped."""
        dec = self.stream_decoder(skip_special=True)
        for t in ids:
            piece = dec.push(t)
            if piece:
                yield piece
        tail = dec.flush()
        if tail:
            yield tail

    # ---- specials

    @property
    def bos_text(self) -> str:
        return self.tokens[self.bos_id] if self.bos_id is not None else ""

    @property
    def eos_text(self) -> str:
        return self.tokens[self.eos_id] if self.eos_id is not None else ""

    def template_vars(self) -> dict[str, str]:
        """`bos_token` / `eos_token` for chat-template rendering (empty strings when absent)."""
        return {"bos_token": self.bos_text, "eos_token": self.eos_text}

    def __len__(self) -> int:
        return self.n_vocab

    def __repr__(self) -> str:
        return (f"Tokenizer({self.path!r}, n_vocab={self.n_vocab}, merges={self.n_merges}, pre={self.pre!r}, "
                f"eos={self.eos_id}, eog={sorted(self.eog_ids)})")


class StreamDecoder:
    """Turns a stream of token ids into text pieces that are always complete UTF-8.

    A character whose bytes are split across tokens is held back until its last byte arrives;
    bytes that can never form valid UTF-8 become U+FFFD as soon as that is certain, and an
    incomplete sequence left at `flush()` becomes U+FFFD. The concatenation of every `push` and
    the final `flush` equals `tokenizer.decode(ids)` (same `skip_special`). O(1) per token.
    """

    def __init__(self, tok: Tokenizer, skip_special: bool = False) -> None:
        self._tok = tok
        self._skip = skip_special
        self._dec = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, id: int) -> str:
        id = int(id)
        if self._skip and self._tok.is_control(id):
            return ""
        return self._dec.decode(self._tok.token_bytes(id), final=False)

    def flush(self) -> str:
        """Return what is left (incomplete bytes as U+FFFD) and reset for reuse."""
        out = self._dec.decode(b"", final=True)
        self._dec.reset()
        return out
