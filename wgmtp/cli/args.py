"""Typed command-line values: every flag is checked where argparse reads it, so a bad value is one
line naming the flag, what was given and what is expected (exit status 1), never a traceback from
deep inside a run.
"""
from __future__ import annotations

import argparse
import os
import stat
import sys
from pathlib import Path
from typing import Callable

MAX_PROMPT_FILE = 64 << 20     # bytes: far more text than any context holds


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors and exit status 1 (the CLI's contract: README, "Run")."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message.splitlines()[0] if message else 'bad arguments'}\n")
        raise SystemExit(1)


def integer(lo: int | None = None, hi: int | None = None, what: str = "") -> Callable[[str], int]:
    """A whole number in [lo, hi] (either bound optional)."""
    def parse(s: str) -> int:
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{s!r} is not a whole number") from None
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(f"{v} is out of range: {_range(lo, hi)}{what}")
        return v
    return parse


def real(lo: float | None = None, hi: float | None = None, *, above: bool = False) -> Callable[[str], float]:
    """A finite number in [lo, hi] (with `above`: strictly above lo)."""
    def parse(s: str) -> float:
        try:
            v = float(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{s!r} is not a number") from None
        if v != v or v in (float("inf"), float("-inf")):
            raise argparse.ArgumentTypeError(f"{s!r} is not a finite number")
        if (lo is not None and (v <= lo if above else v < lo)) or (hi is not None and v > hi):
            bound = f"above {lo:g}" if above and hi is None else _range(lo, hi)
            raise argparse.ArgumentTypeError(f"{v:g} is out of range: {bound}")
        return v
    return parse


def integers(lo: int, hi: int) -> Callable[[str], list[int]]:
    """A comma-separated list of whole numbers in [lo, hi] (e.g. --spec-draft-n-max 0,1,2,3)."""
    one = integer(lo, hi)

    def parse(s: str) -> list[int]:
        items = [x.strip() for x in s.split(",") if x.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"{s!r}: give one or more whole numbers, comma-separated")
        return [one(x) for x in items]
    return parse


def ints_of(v: str | list[int]) -> list[int]:
    """A list flag's value whether argparse parsed it already or a default string stands in."""
    return list(v) if isinstance(v, (list, tuple)) else integers(-(2**31), 2**31)(str(v))


def seed(s: str) -> int:
    """-s/--seed: a non-negative integer, or -1 for a random one (llama.cpp's meaning)."""
    v = integer(-1, 2**63 - 1)(s)
    return int.from_bytes(os.urandom(4), "little") if v == -1 else v


def writable_file(s: str) -> str:
    """A file the command will write at the end: its folder must exist now, so a long run does not
    fail only after it finished."""
    parent = Path(s).expanduser().resolve().parent
    if not parent.is_dir():
        raise argparse.ArgumentTypeError(f"{s}: the folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise argparse.ArgumentTypeError(f"{s}: the folder {parent} is not writable")
    return s


def read_prompt_file(path: str) -> str:
    """The text of -f FILE: a regular file (not a FIFO or a device), at most MAX_PROMPT_FILE bytes,
    valid UTF-8; anything else is a one-line error."""
    from ..errors import WgmtpError
    p = Path(path)
    try:
        st = p.stat()
    except OSError as e:
        raise WgmtpError(f"{path}: cannot read the prompt file ({e.strerror or e})") from None
    if not stat.S_ISREG(st.st_mode):
        raise WgmtpError(f"{path}: not a regular file (give a text file with -f)")
    if st.st_size > MAX_PROMPT_FILE:
        raise WgmtpError(f"{path}: {st.st_size:,} bytes is too large for a prompt (at most {MAX_PROMPT_FILE:,})")
    try:
        return p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise WgmtpError(f"{path}: the prompt file is not valid UTF-8 (byte {e.start})") from None
    except OSError as e:
        raise WgmtpError(f"{path}: cannot read the prompt file ({e.strerror or e})") from None


def _range(lo: float | None, hi: float | None) -> str:
    f = lambda x: str(x) if isinstance(x, int) else f"{x:g}"   # noqa: E731
    if lo is not None and hi is not None:
        return f"{f(lo)}..{f(hi)}"
    return f"at least {f(lo)}" if lo is not None else f"at most {f(hi)}"
