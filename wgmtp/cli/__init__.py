"""`wgmtp` command line: run, serve, inspect, devices, check, bench. Flags follow llama.cpp's names.

One module per command (`inspect.py`, `run.py`, `serve.py`, `devices.py`, `check.py`, `bench.py`), each with
`add_parser(sub)`; `COMMANDS` below is the table of them, in `wgmtp --help` order. A command
module that fails to import is an error, never a subcommand that silently goes missing.

Every failure a user can cause ends in one line on stderr naming the cause, and exit status 1.
"""
from __future__ import annotations

import argparse
import os
import sys

from ..errors import WgmtpError
from . import bench, check, devices, inspect, run, serve
from .args import Parser

# (subcommand, module whose add_parser(sub) registers it), in help order
COMMANDS = (
    ("inspect", inspect),
    ("run", run),
    ("serve", serve),
    ("devices", devices),
    ("check", check),
    ("bench", bench),
)


def build_parser() -> argparse.ArgumentParser:
    ap = Parser(prog="wgmtp", description="Qwen3.5/3.6 with MTP speculative decoding on WebGPU")
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name, mod in COMMANDS:
        mod.add_parser(sub)
        if name not in sub.choices:
            raise RuntimeError(f"{mod.__name__}.add_parser registered no '{name}' subcommand")
    return ap


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")
    ap = build_parser()
    a = ap.parse_args(argv)
    try:
        return int(a.fn(a) or 0)
    except WgmtpError as e:
        print(f"wgmtp: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
