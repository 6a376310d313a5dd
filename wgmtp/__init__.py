"""wgmtp: Qwen3.5/3.6 (Gated DeltaNet + gated attention) with MTP speculative decoding on any
GPU that WebGPU reaches. Every kernel is a WGSL compute shader with a numpy twin."""
from .api import Model, load, open_engine  # noqa: F401
from .batching import BatchEngine, Request  # noqa: F401
from .errors import WgmtpError  # noqa: F401

__version__ = "0.1.0"
