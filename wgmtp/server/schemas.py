"""Request bodies: pydantic models with strict types (a string where a number belongs is a 400,
not a guess), unknown fields allowed (clients send OpenAI fields wgmtp has no use for), and the
llama-server spellings of its own fields ("speculative.n_max", "speculative.n_min",
"speculative.p_min", n_predict)."""
from __future__ import annotations

import json
from typing import Any, Literal

from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import ApiError


class _Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow", populate_by_name=True)


class StreamOptions(_Body):
    include_usage: bool = False


class ContentPart(_Body):
    type: str
    text: str | None = None


class Message(_Body):
    role: str
    content: str | list[ContentPart] | None = None


class _Sampling(_Body):
    """The sampling and speculative fields every generation endpoint takes."""
    model: str | None = None
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    n_max: int | None = Field(None, alias="speculative.n_max")
    n_min: int | None = Field(None, alias="speculative.n_min")
    p_min: float | None = Field(None, alias="speculative.p_min")


class ChatRequest(_Sampling):
    messages: list[Message]
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    n: int = 1
    stream_options: StreamOptions | None = None
    logprobs: bool = False
    top_logprobs: int | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    reasoning_format: Literal["none", "deepseek", "auto"] | None = None


class CompletionRequest(_Sampling):
    prompt: str | list[int] | list[str]
    max_tokens: int | None = None
    n: int = 1
    stream_options: StreamOptions | None = None
    logprobs: int | None = None
    echo: bool = False


class NativeCompletionRequest(_Sampling):
    """llama.cpp's POST /completion."""
    prompt: str | list[int]
    n_predict: int = -1
    cache_prompt: bool = True       # prefixes are always reused: reuse never changes a token (batch invariance)
    return_tokens: bool = False
    n_probs: int = 0


class TokenizeRequest(_Body):
    content: str
    add_special: bool = False
    with_pieces: bool = False


class DetokenizeRequest(_Body):
    tokens: list[int]


class ApplyTemplateRequest(_Body):
    messages: list[Message]
    chat_template_kwargs: dict[str, Any] | None = None


def _where(err: dict) -> str:
    # pydantic also names the union member it tried ("str", "list[int]"); a client wants the field
    keep = [str(x) for x in err.get("loc", ()) if isinstance(x, int) or ("[" not in str(x) and str(x) not in
                                                                           ("str", "int", "float", "bool", "none"))]
    return ".".join(keep) or "body"


async def parse(request: Request, model: type[_Body], limit: int) -> Any:
    """The request's JSON body as `model`; 413 past `limit` bytes, 400 for anything malformed."""
    n = request.headers.get("content-length")
    if n is not None and n.isdigit() and int(n) > limit:
        raise ApiError(413, f"request body of {n} bytes exceeds the limit of {limit} bytes")
    chunks, size = [], 0
    async for c in request.stream():
        size += len(c)
        if size > limit:
            raise ApiError(413, f"request body exceeds the limit of {limit} bytes")
        chunks.append(c)
    raw = b"".join(chunks)
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ApiError(400, f"request body is not valid UTF-8 (byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise ApiError(400, f"malformed JSON body: {e.msg} at line {e.lineno} column {e.colno}") from None
    if not isinstance(data, dict):
        raise ApiError(400, f"the request body must be a JSON object, not {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        raise ApiError(400, f"field '{_where(err)}': {err['msg']}") from None
