"""The errors a user can cause, each a distinct type with a one-line message.

The CLI catches `WgmtpError` and prints its message without a traceback (ARCHITECTURE.md, "Clear errors").
"""
from __future__ import annotations


class WgmtpError(Exception):
    """Base of every error the user can cause; `str(e)` is the whole one-line message."""


class GGUFError(WgmtpError, ValueError):
    """A problem with a GGUF file; the message starts with the file's path."""

    def __init__(self, path: object, cause: str) -> None:
        self.path = str(path)
        self.cause = cause
        super().__init__(f"{self.path}: {cause}")


class NotGGUFError(GGUFError):
    """The file is not a GGUF file at all (bad magic, unreadable header)."""


class TruncatedGGUFError(GGUFError):
    """The file ends before its header or a tensor's data does."""


class CorruptGGUFError(GGUFError):
    """The header parses but breaks GGUF's layout rules (misaligned, overlapping or out-of-file
    tensor data, impossible dimensions, a duplicate key or tensor)."""


class NonFiniteTensorError(GGUFError):
    """A weight holds NaN or infinity (--check-tensors)."""


class UnsupportedArchError(GGUFError):
    """`general.architecture` is not one wgmtp runs (or not yet)."""


class UnsupportedTensorTypeError(GGUFError):
    """A tensor's ggml type has no dequantizer/kernel in wgmtp."""


class MissingTensorError(GGUFError):
    """A tensor the architecture needs is not in the file."""


class ShapeMismatchError(GGUFError):
    """A tensor's shape disagrees with the dimensions the metadata gives."""


class BadMetadataError(GGUFError):
    """A metadata key is missing, of the wrong type, absurd or inconsistent."""


class MTPUnavailableError(WgmtpError):
    """draft-mtp was asked of a model with no MTP block and no sidecar."""


class DeviceError(WgmtpError):
    """No adapter, no adapter matching the selection, or the adapter lacks what is needed."""


class NonFiniteLogitsError(WgmtpError):
    """A step's logits hold no finite winner: generation stops rather than emit a meaningless token."""


class ContextOverflowError(WgmtpError):
    """The prompt (plus what must be generated) does not fit the context size."""


def raise_ctx_hint(n_ctx: int, n_ctx_train: int) -> str:
    """What to do about a full context: raise -c, unless -c is already the model's own limit."""
    if n_ctx >= n_ctx_train:
        return f"the model's context is {n_ctx_train} tokens (its context_length): shorten the prompt"
    return f"raise -c (up to the model's {n_ctx_train})"


class BadRequestError(WgmtpError, ValueError):
    """A generation option out of range for this model (e.g. a draft vocabulary past n_vocab)."""
