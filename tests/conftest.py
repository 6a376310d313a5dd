"""Shared fixtures: synthetic models written into a per-session temp dir (cached by spec)."""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.mkdtemp(prefix="xdg-"))

from make_model import ModelSpec, make_model, sidecar_path  # noqa: E402

_cache: dict[str, Path] = {}


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def synth(model_dir):
    """synth(**spec_fields) -> path of a synthetic GGUF, written once per distinct spec."""
    def make(**kw) -> Path:
        key = repr(sorted(kw.items()))
        if key not in _cache:
            name = f"m{len(_cache)}.gguf"
            _cache[key] = make_model(model_dir / name, ModelSpec(**kw))
        return _cache[key]
    return make


__all__ = ["ModelSpec", "make_model", "sidecar_path"]
