"""The server's settings, as `wgmtp serve`'s flags give them (llama-server's names)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from ..drafters import ADAPTIVE_DEFAULT, NgramParams, SpecSettings, parse_spec_types
from ..engine import StepEvent


@dataclass
class ServerConfig:
    model: str | None = None              # -m; None: the demo model
    mtp_file: str | None = None           # -md
    n_ctx: int = 4096                     # -c, per slot
    n_parallel: int = 4                   # -np
    host: str = "127.0.0.1"
    port: int = 8080
    api_key: str | None = None
    spec_type: str = "none"               # --spec-type list: none | draft-mtp,ngram-simple,ngram-mod (any of them)
    n_max: int = 3                        # --spec-draft-n-max: the default and the most a request may ask
    p_min: float = 0.0
    n_min: int = 0                        # --spec-draft-n-min: the default of speculative.n_min
    draft_vocab: int = 0                  # --spec-draft-vocab
    ngram: NgramParams = field(default_factory=NgramParams)     # --spec-ngram-size-n/-m/-min-hits
    adaptive: bool = ADAPTIVE_DEFAULT     # --spec-adaptive
    chat_template_kwargs: dict[str, Any] = field(default_factory=dict)
    chat_template: str | None = None      # overrides the file's template (--chat-template-file)
    reasoning_format: str = "auto"        # auto | none | deepseek
    metrics: bool = False
    alias: str | None = None
    device: str | None = None
    device_draft: str | None = None       # --device-draft: draft-simple's model's adapter (default: --device)
    max_queue: int = 64                   # requests waiting beyond the slots; more get 503
    max_body_bytes: int = 8 << 20
    prefill_chunk: int = 64
    check_tensors: bool = False           # --check-tensors: refuse NaN/Inf weights at load
    # called with each Request the server submits (before the engine sees it), returning its observer
    # (Request.observe: called on the engine thread after each step) or None; None: no observer, no cost.
    # The CLI gives the live view's (serve --view); the server knows nothing of what watches.
    observer: Callable[[Any], Callable[[StepEvent], None] | None] | None = None

    def spec(self) -> SpecSettings:
        """The server's speculative defaults; a request may change n_max, n_min and p_min."""
        return SpecSettings(parse_spec_types(self.spec_type), n_max=self.n_max, n_min=self.n_min, p_min=self.p_min,
                            ngram=self.ngram, adaptive=self.adaptive, draft_vocab=self.draft_vocab)
