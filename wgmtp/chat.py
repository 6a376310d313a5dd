"""Chat-template rendering (HF conventions, sandboxed) and incremental prompts for chat.

Templates come from untrusted GGUF files, so they run in jinja2's `ImmutableSandboxedEnvironment`
and, stricter than HF, any access to an unsafe attribute (`__class__`, `__subclasses__`,
`mro`, function internals, ...) raises at once instead of rendering as an empty undefined.
Otherwise the environment is the one `transformers` builds in `apply_chat_template`:
`trim_blocks` and `lstrip_blocks` on, the `loopcontrols` extension, a no-op `{% generation %}`
block, the `raise_exception(msg)` and `strftime_now(fmt)` globals, HF's restricted `dict` and
`namespace` (no underscore-prefixed names) and a `tojson` filter that does not escape non-ASCII. \
`render` passes `messages`, `add_generation_prompt`, `tools=None`,
`documents=None`, `bos_token`/`eos_token` ("" unless given) and any extra variables (e.g.
`enable_thinking=False`).

Every failure (syntax error, unsafe code, `raise_exception`, a type error inside the template) is
a `ChatTemplateError`, a `WgmtpError` with a one-line message. A render has a time limit
(`RENDER_TIME_LIMIT_S`), checked at every call, attribute or item access and `range` step the
template makes, so a runaway loop in a file's template cannot hold a server's worker forever.

For interactive chat, `ChatState` keeps the conversation and returns each new turn's text delta
(`format_single` is llama.cpp's `common_chat_format_single` for comparison), and `ChatSession`
drives a loaded `Model` with it.
"""
from __future__ import annotations

import json
import threading
import time
from datetime import datetime
from functools import lru_cache
from typing import Any, Iterator, NamedTuple

import jinja2
import jinja2.utils
from jinja2 import nodes
from jinja2.ext import Extension
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError, safe_range

from .errors import WgmtpError


class ChatTemplateError(WgmtpError):
    """A chat template failed to compile or render (or tried something the sandbox forbids)."""


def _one_line(s: object) -> str:
    return " ".join(str(s).split())


def _raise_exception(message: str) -> None:
    raise jinja2.TemplateError(message)


def _tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None,
            separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
    if isinstance(indent, int) and not 0 <= indent <= 64:
        raise SecurityError(f"tojson indent {indent} refused (0..64)")
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


class _GenerationBlock(Extension):
    """`{% generation %}...{% endgeneration %}` (HF's assistant-mask marker): renders its body."""
    tags = {"generation"}

    def parse(self, parser):  # type: ignore[no-untyped-def]
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

    def _render(self, caller):  # type: ignore[no-untyped-def]
        return caller()


class _TemplateDict:
    """`dict(...)` for templates without handing them the `dict` type itself (as HF does)."""

    def __call__(self, *args: Any, **kwargs: Any) -> dict:
        return dict(*args, **kwargs)

    def fromkeys(self, *args: Any, **kwargs: Any) -> dict:
        return dict.fromkeys(*args, **kwargs)


class _TemplateNamespace(jinja2.utils.Namespace):
    """`namespace(...)` that refuses underscore-prefixed attribute names (as HF does)."""

    def __init__(*args: Any, **kwargs: Any) -> None:  # noqa: N805 -- Namespace's signature trick
        self, args = args[0], args[1:]
        attrs = dict(*args, **kwargs)
        for name in attrs:
            _TemplateNamespace._check(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name: str, value: Any) -> None:
        _TemplateNamespace._check(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check(name: object) -> None:
        if isinstance(name, str) and name.startswith("_"):
            raise SecurityError(f"a namespace attribute may not start with '_' (got {name!r})")


RENDER_TIME_LIMIT_S = 5.0
RENDER_MAX_CHARS = 16 << 20     # a rendering longer than this is refused (no context holds it)
_deadline = threading.local()     # the running render's time.monotonic() deadline (this thread's)


class _RenderTimeout(Exception):
    pass


def _check_time() -> None:
    d = getattr(_deadline, "t", None)
    if d is not None and time.monotonic() > d:
        raise _RenderTimeout


class _TimedRange:
    """The sandbox's `range` (bounded length) that checks the render's deadline at each step of a loop;
    otherwise a range (len, indexing, reversed)."""

    def __init__(self, *args: int) -> None:
        self._r = safe_range(*args)

    def __iter__(self):
        for i in self._r:
            _check_time()
            yield i

    def __reversed__(self):
        return iter(_TimedRange.__new__(_TimedRange)._set(self._r[::-1]))

    def _set(self, r: range) -> "_TimedRange":
        self._r = r
        return self

    def __len__(self) -> int:
        return len(self._r)

    def __getitem__(self, i):  # type: ignore[no-untyped-def]
        v = self._r[i]
        return _TimedRange.__new__(_TimedRange)._set(v) if isinstance(v, range) else v


class _Sandbox(ImmutableSandboxedEnvironment):
    """HF's sandbox, except that touching an unsafe attribute is an error right away; every call and
    attribute or item access also checks the render's deadline; `*` and `**` are checked before
    they run, so one C-level operation cannot build a gigabyte string or a huge number."""

    intercepted_binops = frozenset(["*", "**"])

    def call_binop(self, context, operator: str, left: Any, right: Any) -> Any:  # type: ignore[override]
        _check_time()
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and len(seq) * n > RENDER_MAX_CHARS:
                    raise SecurityError(f"a repetition of {len(seq)} x {n} items exceeds the template output budget")
        if operator == "**" and isinstance(left, int) and isinstance(right, int) and abs(right) > 1024:
            raise SecurityError(f"power with exponent {right} refused")
        return super().call_binop(context, operator, left, right)

    def unsafe_undefined(self, obj: Any, attribute: str):  # type: ignore[override]
        raise SecurityError(f"access to attribute {attribute!r} of a {type(obj).__name__!r} object is unsafe")

    def call(__self, __context, __obj, *args, **kwargs):  # type: ignore[override]  # noqa: N805
        _check_time()
        return ImmutableSandboxedEnvironment.call(__self, __context, __obj, *args, **kwargs)

    def getattr(self, obj: Any, attribute: str) -> Any:
        _check_time()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        _check_time()
        return super().getitem(obj, argument)


def _make_env() -> _Sandbox:
    env = _Sandbox(trim_blocks=True, lstrip_blocks=True,
                   extensions=[_GenerationBlock, "jinja2.ext.loopcontrols"])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["dict"] = _TemplateDict()
    env.globals["namespace"] = _TemplateNamespace
    env.globals["range"] = _TimedRange
    return env


_ENV = _make_env()


@lru_cache(maxsize=16)
def _compile(template: str) -> jinja2.Template:
    return _ENV.from_string(template)


def render(template: str, messages: list[dict], add_generation_prompt: bool = True, *,
           time_limit: float = RENDER_TIME_LIMIT_S, **extra: Any) -> str:
    """Render a chat template as HF's `apply_chat_template(..., tokenize=False)` does.

    `messages` is a list of `{"role": ..., "content": ...}` dicts. `extra` supplies more template
    variables (`bos_token`, `eos_token`, `enable_thinking`, `tools`, ...). Raises
    ChatTemplateError on any failure, and when rendering takes longer than `time_limit` seconds.
    """
    if not isinstance(template, str) or not template:
        raise ChatTemplateError("chat template error: the model has no chat template")
    ctx: dict[str, Any] = {"tools": None, "documents": None, "bos_token": "", "eos_token": ""}
    ctx.update(extra)
    ctx["messages"] = messages
    ctx["add_generation_prompt"] = add_generation_prompt
    saved = getattr(_deadline, "t", None)
    _deadline.t = time.monotonic() + time_limit
    try:
        out, n = [], 0
        for piece in _compile(template).generate(**ctx):     # streamed, so the size budget holds
            n += len(piece)
            if n > RENDER_MAX_CHARS:
                raise ChatTemplateError(f"chat template error: the rendering exceeds {RENDER_MAX_CHARS:,} characters")
            out.append(piece)
        text = "".join(out)
        if add_generation_prompt and not text.strip():      # (a rendering of past turns may be empty)
            raise ChatTemplateError("chat template error: the template rendered an empty prompt")
        return text
    except ChatTemplateError:
        raise
    except _RenderTimeout:
        raise ChatTemplateError(f"chat template error: rendering took over {time_limit:g} s (a runaway loop in "
                                "the template?)") from None
    except SecurityError as e:
        raise ChatTemplateError(f"chat template error: unsafe template code refused ({_one_line(e)})") from None
    except jinja2.TemplateSyntaxError as e:
        raise ChatTemplateError(
            f"chat template error: syntax error at line {e.lineno}: {_one_line(e.message)}") from None
    except jinja2.TemplateError as e:
        raise ChatTemplateError(f"chat template error: {_one_line(e)}") from None
    except RecursionError:
        raise ChatTemplateError("chat template error: recursion too deep") from None
    except Exception as e:  # TypeError, KeyError, ... raised by template code
        raise ChatTemplateError(f"chat template error: {type(e).__name__}: {_one_line(e)}") from None
    finally:
        _deadline.t = saved


class ChatDelta(NamedTuple):
    """The text to feed the model for a new turn.

    `reset` False: `text` continues what the model already holds (feed it with `cont=True`).
    `reset` True: the new rendering does not extend what was fed before (e.g. the template drops
    the previous reply's thinking), so the context must be cleared and `text`, the whole prompt,
    fed from scratch.
    """
    text: str
    reset: bool


def format_single(template: str, past: list[dict], new_message: dict, add_generation_prompt: bool = True,
                  **extra: Any) -> ChatDelta:
    """llama.cpp's `common_chat_format_single`: the text a new message adds to a conversation.

    Renders `past` (without generation prompt) and `past + [new_message]` (with one when
    `add_generation_prompt`) and returns the new rendering's suffix. As in llama.cpp, when the
    past rendering ends with a newline (ChatML puts one after each `<|im_end|>`, which the model
    never generated), that newline is kept at the start of the delta. Unlike llama.cpp, the new
    rendering is checked to start with the past one; when it does not, the result is the whole new
    prompt with `reset=True`.
    """
    old = render(template, past, add_generation_prompt=False, **extra) if past else ""
    new = render(template, list(past) + [new_message], add_generation_prompt=add_generation_prompt, **extra)
    if not new.startswith(old):
        return ChatDelta(new, True)
    lead = "\n" if add_generation_prompt and old.endswith("\n") else ""
    return ChatDelta(lead + new[len(old):], False)


class ChatState:
    """The conversation of an interactive chat and the text the model has been fed so far.

    Typical loop (the model keeps its context between turns)::

        chat = ChatState(template, system="You are terse.", **tok.template_vars())
        while True:
            d = chat.user(input("> "))                  # ChatDelta
            reply_ids = list(model.generate_ids(d.text, cont=not d.reset))
            chat.assistant(tok.decode(reply_ids))       # as generated, end token included

    `user` renders the whole conversation plus the generation prompt and compares it with
    `fed`, the exact text the model's context holds (every delta fed plus each reply exactly as
    generated, including the end-of-turn token text such as `<|im_end|>` when it was generated).
    If the rendering starts with `fed`, the delta is the rest: for ChatML after a reply that ended
    with `<|im_end|>` this is `"\\n<|im_start|>user\\n...<|im_end|>\\n<|im_start|>assistant\\n"`,
    the same text as llama.cpp's `common_chat_format_single`; after a reply cut off by a token
    limit the delta also closes the reply (`"<|im_end|>\\n<|im_start|>user..."`). If it does not
    (the template rewrote history, e.g. dropped thinking), `reset` is True and the text is the
    whole prompt, which becomes the new `fed`.
    """

    def __init__(self, template: str, system: str | None = None, *, end_texts: tuple[str, ...] = (
                 "<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end|>"), **extra: Any) -> None:
        """`extra` are template variables for every rendering (bos_token, enable_thinking, ...);
        `end_texts` are stripped from the end of a reply to get the message content."""
        self.template = template
        self.extra = extra
        self.end_texts = end_texts
        self.messages: list[dict] = []
        if system:
            self.messages.append({"role": "system", "content": system})
        self.fed = ""

    def render(self, add_generation_prompt: bool = True) -> str:
        return render(self.template, self.messages, add_generation_prompt=add_generation_prompt, **self.extra)

    def user(self, content: str) -> ChatDelta:
        """Add a user turn; return what to feed (see the class docstring). On a render error the
        message is not added."""
        self.messages.append({"role": "user", "content": content})
        try:
            full = self.render(add_generation_prompt=True)
        except Exception:
            self.messages.pop()
            raise
        if full.startswith(self.fed):
            delta = ChatDelta(full[len(self.fed):], False)
        else:
            delta = ChatDelta(full, True)
        self.fed = full
        return delta

    def assistant(self, generated: str) -> None:
        """Record the reply exactly as the model generated it (special tokens included): it is now
        part of the context. The message content is the reply without its end-of-turn text."""
        self.fed += generated
        content = generated
        for e in self.end_texts:
            if e and content.endswith(e):
                content = content[: -len(e)]
                break
        self.messages.append({"role": "assistant", "content": content})

    def reset(self) -> None:
        """Forget what was fed (the model's context was cleared); the conversation is kept, so the
        next `user` call returns the whole prompt (with reset=False when nothing was fed)."""
        self.fed = ""


# ChatML, what llama.cpp falls back to when a model has no template.
CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


class ChatSession:
    """A `ChatState` bound to a loaded `wgmtp.api.Model`: each `reply` feeds only the turn's delta
    (the model keeps its KV/recurrent state between turns) and streams the answer.

    The model's chat template is used (ChatML when the file has none). The reply is recorded exactly
    as generated (its end-of-turn token included) so the next delta continues from what the model's
    context really holds; when the template rewrites history, the context is cleared and the whole
    prompt is fed again.
    """

    def __init__(self, model: Any, system: str | None = None, template: str | None = None, **extra: Any) -> None:
        self.model = model
        tok = model.tokenizer
        self.state = ChatState(template or tok.chat_template or CHATML_TEMPLATE, system=system,
                               **{**tok.template_vars(), **extra})
        self.turns = 0

    def reply(self, user: str, **gen: Any) -> Iterator[str]:
        """Add the user's message and yield the answer's text pieces (control tokens such as
        `<|im_end|>` are not shown). `gen` goes to `Model.generate_ids` (max_tokens,
        temperature, spec, ...). If generation fails before the first token, the turn is undone."""
        tok = self.model.tokenizer
        st = self.state
        saved = (len(st.messages), st.fed)
        delta = st.user(user)
        # a reply cut short in the middle of a speculative round leaves the model's state ahead of
        # the text: then feed the whole conversation again
        in_sync = getattr(getattr(self.model, "session", None), "in_sync", True)
        cont = self.turns > 0 and not delta.reset and in_sync
        text = delta.text if cont or delta.reset or self.turns == 0 else st.fed
        ids: list[int] = []

        def kept(it: Iterator[int]) -> Iterator[int]:
            for t in it:
                ids.append(t)
                yield t
        try:
            yield from tok.stream(kept(self.model.generate_ids(tok.encode(text), cont=cont, **gen)))
        finally:
            if ids:
                st.assistant(tok.decode(ids))
                self.turns += 1
            else:  # nothing was generated (an error, or closed at once): as if the turn never happened
                del st.messages[saved[0]:]
                st.fed = saved[1]
