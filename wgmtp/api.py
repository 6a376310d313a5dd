"""The small, stable Python API (README, "Python API"); the CLI is built on it."""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import numpy as np

from .drafters import MODEL_DRAFTER, NgramParams, SpecSettings, parse_spec_types
from .engine import GenRequest, Session, StepEvent
from .errors import BadRequestError, WgmtpError
from .models.qwen35 import GGUFModel
from .sampling import SamplerParams

if TYPE_CHECKING:
    from .batching import BatchEngine, RequestHandle

DEMO_MODEL = Path(__file__).resolve().parent / "data" / "wgmtp-demo.gguf"


def resolve_model(path: str | None) -> str:
    """The model to open: `path`, or with none the demo model that ships in the package."""
    if path:
        return path
    if DEMO_MODEL.exists():
        return str(DEMO_MODEL)
    raise WgmtpError("no model given (-m model.gguf) and the demo model is not installed in wgmtp/data/")


def eog_ids(gm: GGUFModel) -> set[int]:
    """End-of-generation ids: EOS plus any token whose text is a known end marker (tokenizer.py);
    just EOS for a file without tokenizer metadata."""
    from .tokenizer import EOG_TEXTS
    ids: set[int] = set()
    info = gm.tokenizer_info()
    if info.eos_id is not None:
        ids.add(int(info.eos_id))
    toks = gm.reader.fields.get("tokenizer.ggml.tokens")
    if toks is not None:
        try:
            texts = toks.strings("replace")
        except TypeError:       # not a string array: the tokenizer reports that when it is built
            texts = []
        ids.update(i for i, t in enumerate(texts) if t in EOG_TEXTS)
    return ids


class _Generator:
    """What Model and EngineModel share: the tokenizer and the text of generate_ids's tokens."""
    gguf: GGUFModel
    _tokenizer = None

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from .tokenizer import Tokenizer
            self._tokenizer = Tokenizer.from_gguf(self.gguf)
        return self._tokenizer

    def generate_ids(self, prompt: str | list[int], max_tokens: int = 64, **kw) -> Iterator[int]:
        raise NotImplementedError

    def _prompt_ids(self, prompt: str | list[int]) -> list[int]:
        return self.tokenizer.encode(prompt) if isinstance(prompt, str) else [int(t) for t in prompt]

    def generate(self, prompt: str | list[int], max_tokens: int = 64, **kw) -> Iterator[str]:
        """Text pieces as they are produced (valid UTF-8 only; partial characters wait)."""
        yield from self.tokenizer.stream(self.generate_ids(prompt, max_tokens, **kw))


class Model(_Generator):
    """A loaded model on one device. `device="cpu"` is the numpy reference."""

    def __init__(self, gm: GGUFModel, backend, device_name: str, n_ctx: int) -> None:
        self.gguf = gm
        self.config = gm.config
        self.backend = backend
        self.device_name = device_name
        self.n_ctx = n_ctx
        self.session = Session(backend, n_ctx, eog_ids(gm))

    @property
    def stats(self) -> dict:
        return self.session.stats.as_dict()

    def logits(self, tokens: list[int]) -> np.ndarray:
        """float32 [T, n_vocab] for a fresh sequence."""
        from .errors import BadRequestError
        tokens = [int(t) for t in tokens]
        V = self.config.n_vocab
        if not tokens:
            raise BadRequestError("logits of an empty sequence: give at least one token")
        if len(tokens) > self.n_ctx:
            raise BadRequestError(f"{len(tokens)} tokens do not fit the context of {self.n_ctx}")
        bad = next((t for t in tokens if not 0 <= t < V), None)
        if bad is not None:
            raise BadRequestError(f"token id {bad} is out of range: ids must be in 0..{V - 1}")
        out = self.backend.logits(tokens)
        self.session.forget()      # the state now holds this sequence, not the chat
        return out

    def generate_ids(self, prompt: str | list[int], max_tokens: int = 64, temperature: float = 0.0,
                     seed: int = 0, spec: str | None = None, n_max: int = 3, p_min: float = 0.0, draft_vocab: int = 0,
                     top_k: int = 40, top_p: float = 0.95, min_p: float = 0.05,
                     cont: bool = False, observe: Callable[[StepEvent], None] | None = None) -> Iterator[int]:
        """Generated token ids (the model's own ids, before detokenization). The one-sequence path
        speculates with draft-mtp only; the n-gram drafters and adaptive n run on an engine
        (`open_engine`, or `EngineModel` for this same interface). `observe` is called with each
        step's engine.StepEvent (the live view, wgmtp/view)."""
        types = parse_spec_types(spec)
        if set(types) - {"draft-mtp"}:
            raise BadRequestError(f"--spec-type {','.join(types)}: wgmtp.load's model speculates with draft-mtp "
                                  "only; use wgmtp.open_engine (or EngineModel) for the n-gram drafters")
        req = GenRequest(max_tokens=max_tokens,
                         sampler=SamplerParams(temperature=temperature, top_k=top_k, top_p=top_p,
                                               min_p=min_p, seed=seed),
                         spec=bool(types), n_max=n_max, p_min=p_min, draft_vocab=draft_vocab, observe=observe)
        return self.session.generate(self._prompt_ids(prompt), req, cont=cont)


class EngineModel(_Generator):
    """Model's generation surface (generate, generate_ids, stats, tokenizer) over a one-slot
    BatchEngine, driven from the caller's thread: what `wgmtp run` uses for the n-gram drafters and
    adaptive n, which only the engine has. A continued generation (cont=True: a chat's next turn)
    submits the whole conversation, whose prefix the slot's state already holds: only the new
    tokens are fed (batching.py, prefix reuse)."""

    def __init__(self, engine: "BatchEngine") -> None:
        self.engine = engine
        self.gguf = engine.rn.gm
        self.config = self.gguf.config
        self.backend = engine.rn
        self.device_name = engine.rn.device_name
        self.n_ctx = engine.rn.n_ctx
        self._ids: list[int] = []                # the conversation so far: prompts and generated tokens
        self._h: RequestHandle | None = None

    @property
    def stats(self) -> dict:
        return self._h.stats.as_dict() if self._h is not None else {}

    def generate_ids(self, prompt: str | list[int], max_tokens: int = 64, temperature: float = 0.0,
                     seed: int = 0, spec: str | Sequence[str] | None = None, n_max: int = 3, p_min: float = 0.0,
                     draft_vocab: int = 0, top_k: int = 40, top_p: float = 0.95, min_p: float = 0.05,
                     cont: bool = False, n_min: int = 0, adaptive: bool = False,
                     ngram: NgramParams | None = None,
                     observe: Callable[[StepEvent], None] | None = None) -> Iterator[int]:
        """Model.generate_ids's arguments, `spec` a list of drafters, plus --spec-draft-n-min,
        --spec-adaptive and the n-gram sizes."""
        from .batching import Request
        s = SpecSettings(parse_spec_types(spec), n_max=n_max, n_min=n_min, p_min=p_min, ngram=ngram or NgramParams(),
                         adaptive=adaptive, draft_vocab=draft_vocab)
        s.check()
        ids = (self._ids if cont else []) + self._prompt_ids(prompt)
        req = Request(prompt=ids, max_tokens=max_tokens, **s.request_fields(), observe=observe,
                      sampler=SamplerParams(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p, seed=seed))
        return self._drive(req)

    def _drive(self, req) -> Iterator[int]:
        """Step the engine until the request ends, yielding its tokens as they come. Left early, the
        request is cancelled; a step that fails (or is interrupted) resets the slot, so the next
        generation never continues from a state its history does not describe."""
        eng = self.engine
        if self._h is not None and not self._h.done.is_set():      # an earlier generation left unread
            self._h.cancel()
        h = self._h = eng.submit(req)
        seen = 0
        try:
            while True:
                done = h.done.is_set()
                while seen < len(h.tokens):
                    seen += 1
                    yield h.tokens[seen - 1]
                if done:
                    break
                try:
                    eng.step()
                except BaseException as e:
                    eng.fail_all(e if isinstance(e, Exception) else WgmtpError("interrupted"))
                    raise
        finally:
            if not h.done.is_set():
                h.cancel()
                eng.step()
            self._ids = req.prompt + h.tokens
        if h.error is not None:
            raise h.error


def load(path: str | os.PathLike[str], device: str | int = "auto", mtp: str | os.PathLike[str] | None = None,
         n_ctx: int = 4096, check_tensors: bool = False, **gpu_options) -> Model:
    """Open a GGUF (and optional MTP sidecar) on a device: "auto", an adapter index or name
    substring, or "cpu" for the numpy reference. `check_tensors`: refuse weights holding NaN or
    infinity first (llama.cpp's --check-tensors; reads every block's scales)."""
    gm = GGUFModel(path, mtp)
    if check_tensors:
        gm.check_tensors()
    n_ctx = min(n_ctx, gm.config.n_ctx_train)
    if device == "cpu":
        from .reference.backend import RefBackend
        return Model(gm, RefBackend(gm), "cpu (numpy reference)", n_ctx)
    from .gpu.device import env_flag
    from .models.qwen35.runner import Qwen35Runner
    be = Qwen35Runner(gm, device=device, n_ctx=n_ctx, eog=eog_ids(gm), **gpu_options)
    if env_flag("WGMTP_CHECK"):
        # every op checked against its numpy twin as it runs; the first divergence stops the run
        # with a message naming layer, op, shape and error (check/trace.py)
        from .check.trace import attach
        attach(be)
    return Model(gm, be, be.device_name, n_ctx)


def open_engine(path: str | os.PathLike[str] | None = None, device: str | int = "auto",
                mtp: str | os.PathLike[str] | None = None, *, n_parallel: int = 4, n_ctx: int = 4096,
                spec: str | Sequence[str] | None = None, n_max: int = 3, prefill_chunk: int = 64,
                progress: bool = True, check_tensors: bool = False, draft: str | os.PathLike[str] | None = None,
                device_draft: str | int | None = None) -> "BatchEngine":
    """A BatchEngine (wgmtp/batching.py) serving `n_parallel` sequences at once on one adapter:
    `submit(Request(...))` from any thread, iterate the returned handle for its tokens, and drive
    the GPU with `start()` (a background thread) or `step()` / `run_until_idle()`. `spec` is
    --spec-type's list ("draft-mtp", "ngram-simple", "draft-mtp,ngram-mod", ...): with any drafter,
    requests may speculate (each with its own n_max <= this n_max); draft-mtp loads the MTP head;
    draft-simple drafts with the model `draft` (the same vocabulary), on `device_draft` (default:
    the target's adapter). `n_ctx` is per sequence."""
    from .batching import BatchEngine
    from .models.qwen35.slots import SlotRunner
    types = parse_spec_types(spec)
    gm = GGUFModel(resolve_model(None if path is None else str(path)), mtp)
    if check_tensors:
        gm.check_tensors()
    eog = eog_ids(gm)
    if MODEL_DRAFTER in types and draft is None:
        raise BadRequestError("draft-simple needs a draft model: give -md draft.gguf (a qwen35 model with the same "
                              "tokenizer)")
    if draft is not None and MODEL_DRAFTER not in types:
        raise BadRequestError("a draft model drafts only with --spec-type draft-simple")
    rn = SlotRunner(gm, device=device, n_ctx=min(n_ctx, gm.config.n_ctx_train), n_seq=n_parallel,
                    n_max=n_max if types else 0, mtp="draft-mtp" in types, prefill_chunk=prefill_chunk, eog=eog,
                    progress=progress)
    dm = None if draft is None else open_draft(draft, rn, n_max=n_max, device_draft=device_draft, progress=progress,
                                                check_tensors=check_tensors)
    return BatchEngine(rn, eog, draft=dm)


def open_draft(path: str | os.PathLike[str], rn, *, n_max: int, device_draft: str | int | None = None,
               progress: bool = False, check_tensors: bool = False):
    """draft-simple's DraftModel for the target runner `rn` (slots.SlotRunner): a sequence per
    target slot, on the target's adapter (its GPU context shared, the target's memory counted)
    unless `device_draft` selects another."""
    from .gpu.device import select_adapter
    from .models.qwen35.draft_model import DraftModel
    gm = GGUFModel(str(path))
    if check_tensors:
        gm.check_tensors()
    shared = device_draft is None or select_adapter(device_draft).index == rn.ctx.desc.index
    return DraftModel(gm, target=rn.gm, n_seq=rn.n_seq, n_ctx=rn.n_ctx, n_max=min(n_max, rn.n_chain),
                      prefill_chunk=rn.chunk,
                      ctx=rn.ctx if shared else None, device="auto" if device_draft is None else device_draft,
                      progress=progress, reserved=rn.memory_bytes() if shared else 0)
