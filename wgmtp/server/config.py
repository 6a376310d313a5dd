"""The server's settings, as `wgmtp serve`'s flags give them (llama-server's names)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class ServerConfig:
    model: str | None = None              # -m; None: the demo model
    mtp_file: str | None = None           # -md
    n_ctx: int = 4096                     # -c, per slot
    n_parallel: int = 4                   # -np
    host: str = "127.0.0.1"
    port: int = 8080
    api_key: str | None = None
    spec_type: str = "none"               # none | draft-mtp
    n_max: int = 3                        # --spec-draft-n-max: the default and the most a request may ask
    p_min: float = 0.0
    chat_template_kwargs: dict[str, Any] = field(default_factory=dict)
    chat_template: str | None = None      # overrides the file's template (--chat-template-file)
    reasoning_format: str = "auto"        # auto | none | deepseek
    metrics: bool = False
    alias: str | None = None
    device: str | None = None
    max_queue: int = 64                   # requests waiting beyond the slots; more get 503
    max_body_bytes: int = 8 << 20
    prefill_chunk: int = 64
    check_tensors: bool = False           # --check-tensors: refuse NaN/Inf weights at load
