"""`wgmtp serve`: an OpenAI-compatible HTTP server in llama-server's image (docs in README, "Serve").

One engine thread (wgmtp/batching.py) drives the GPU; the HTTP handlers (FastAPI on uvicorn) only
validate, enqueue and stream. Modules, each named for what it does:

  config.py     ServerConfig: the command line's settings
  backend.py    loads the engine in the background, bounds the queue, bridges tokens to the event loop
  schemas.py    the request bodies (pydantic, strict types; unknown fields allowed as OpenAI's are)
  errors.py     OpenAI-shaped errors: {"error": {"message", "type", "code"}}
  streaming.py  token ids -> text: UTF-8-safe, stop strings across token boundaries, logprobs
  reasoning.py  <think> ... </think> -> reasoning_content / content (--reasoning-format deepseek)
  metrics.py    llama-server's `timings` and Prometheus counters (llamacpp:*)
  generate.py   a generation request from submission to its last chunk
  app.py        the routes

Only the CLI imports this package (tests/test_layers.py).
"""
from __future__ import annotations

from .config import ServerConfig

__all__ = ["ServerConfig"]
