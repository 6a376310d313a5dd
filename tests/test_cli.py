"""The command line end to end, in subprocesses: run (completion, chat, sampling), inspect,
devices, and the one-line errors."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import sidecar_path  # noqa: F401


def wgmtp(*args: str, stdin: str | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.setdefault("XDG_RUNTIME_DIR", "/tmp")
    return subprocess.run([sys.executable, "-m", "wgmtp.cli", *args], input=stdin, capture_output=True,
                          text=True, timeout=timeout, env=env)


def one_line_error(r: subprocess.CompletedProcess, *words: str) -> None:
    assert r.returncode != 0
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("wgmtp: error:"), r.stderr
    assert "Traceback" not in r.stderr
    for w in words:
        assert w in lines[0], lines[0]


@pytest.fixture(scope="module")
def model(synth):
    return str(synth())


def test_run_completion_streams_and_prints_stats(model):
    r = wgmtp("run", "-m", model, "-p", "Hello world", "-n", "12")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Hello world") and len(r.stdout) > len("Hello world")
    assert "prompt:" in r.stderr and "generated: 12 tokens" in r.stderr and "tok/s" in r.stderr


def test_run_gpu_equals_cpu_greedy(model):
    a = wgmtp("run", "-m", model, "-p", "The quick brown fox", "-n", "16")
    b = wgmtp("run", "-m", model, "-p", "The quick brown fox", "-n", "16", "--device", "cpu")
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    assert a.stdout == b.stdout


def test_seeded_sampling_is_reproducible(model):
    args = ("run", "-m", model, "-p", "Once upon a time", "-n", "24", "--temp", "0.9", "--seed", "7")
    a, b = wgmtp(*args), wgmtp(*args)
    c = wgmtp(*args[:-1], "8")
    assert a.returncode == 0, a.stderr
    assert a.stdout == b.stdout
    assert a.stdout != c.stdout


def test_two_turn_chat_on_stdin(model):
    r = wgmtp("run", "-m", model, "-cnv", "-n", "10", stdin="Hi there\nAnd again?\n")
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("generated:") == 2
    assert "<|im_end|>" not in r.stdout


def test_verbose_names_the_adapter(model):
    r = wgmtp("run", "-m", model, "-p", "x", "-n", "2", "-v")
    assert r.returncode == 0, r.stderr
    assert "adapter:" in r.stderr and "load:" in r.stderr and "GPU memory" in r.stderr


def test_error_missing_model(tmp_path):
    one_line_error(wgmtp("run", "-m", str(tmp_path / "nope.gguf"), "-p", "x"), "nope.gguf", "no such file")


def test_error_unreadable_model(tmp_path):
    one_line_error(wgmtp("run", "-m", str(tmp_path), "-p", "x"), "directory")


def test_error_unsupported_file(tmp_path):
    p = tmp_path / "x.gguf"
    p.write_bytes(b"not a model at all" * 10)
    one_line_error(wgmtp("run", "-m", str(p), "-p", "x"), "not a GGUF")


def test_error_prompt_longer_than_context(model):
    one_line_error(wgmtp("run", "-m", model, "-p", "word " * 200, "-c", "64"), "context")


def test_error_device_matches_nothing(model):
    one_line_error(wgmtp("run", "-m", model, "-p", "x", "--device", "no-such-gpu-xyz"), "no-such-gpu-xyz")


def test_error_draft_vocab_out_of_range(model):
    one_line_error(wgmtp("run", "-m", model, "-p", "x", "--spec-type", "draft-mtp", "--spec-draft-vocab", "10000000"),
                   "draft vocabulary", "10000000")


def test_inspect(model):
    r = wgmtp("inspect", model)
    assert r.returncode == 0, r.stderr
    for w in ("qwen35", "GGGA", "MTP", "present", "tokenizer", "supported: yes", "with MTP"):
        assert w in r.stdout, w


def test_inspect_unsupported(tmp_path):
    p = tmp_path / "x.gguf"
    p.write_bytes(b"GGUF" + b"\x03\0\0\0" + b"\0" * 4)
    r = wgmtp("inspect", str(p))
    assert r.returncode == 1 and "supported: no" in r.stdout


def test_devices_lists_adapters():
    r = wgmtp("devices")
    assert r.returncode == 0, r.stderr
    assert "backend" in r.stdout and "kill switches" in r.stdout


def test_bench_json(synth):
    import json
    path = str(synth(block_out_scale=0.2, mtp_copy=True, seed=3))
    r = wgmtp("bench", "-m", path, "-p", "16", "-n", "8", "-r", "1", "--spec-draft-n-max", "0,2", "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    tests = [x["test"] for x in rows]
    assert tests == ["pp16", "tg8", "tg8+mtp2"]
    for x in rows:
        assert x["engine"] == "wgmtp" and x["tok_s"] > 0 and x["peak_gb_s"] > 0
    tg, spec = rows[1], rows[2]
    for k in ("bytes_per_token", "eff_gb_s", "frac_peak", "dispatches_per_token", "submissions_per_token",
              "host_ms_per_token"):
        assert k in tg, k
    assert 0 <= spec["acceptance"] <= 1 and spec["mean_accepted_len"] >= 1 and spec["verify_decode_ratio"] > 0


def test_bench_synthetic_acceptance(synth):
    import json
    path = str(synth())
    r = wgmtp("bench", "-m", path, "-p", "8", "-n", "24", "-r", "1", "--spec-draft-n-max", "3",
              "--synthetic-acceptance", "1.0", "--json")
    assert r.returncode == 0, r.stderr
    row = json.loads(r.stdout)[-1]
    assert row["acceptance"] == 1.0 and row["mean_accepted_len"] > 3.0


COMMANDS = ("run", "serve", "inspect", "devices", "check", "bench")


def test_help_lists_every_subcommand():
    r = wgmtp("--help", timeout=120)
    assert r.returncode == 0, r.stderr
    for c in COMMANDS:
        assert c in r.stdout, c
    from wgmtp.cli import build_parser
    sub = next(x for x in build_parser()._actions if x.dest == "cmd")
    assert set(sub.choices) == set(COMMANDS)


@pytest.mark.parametrize("cmd", COMMANDS)
def test_command_module_that_fails_to_import_is_an_error(cmd):
    """A command module whose import fails makes the CLI fail loudly: no subcommand vanishes."""
    code = ("import sys\n"
            f"sys.modules['wgmtp.cli.{cmd}'] = None   # its import now raises ImportError\n"
            "try:\n"
            "    from wgmtp.cli import build_parser\n"
            "    build_parser()\n"
            "except ImportError as e:\n"
            "    print('ImportError:', e); sys.exit(3)\n"
            "print('no error'); sys.exit(0)\n")
    env = dict(os.environ)
    env.setdefault("XDG_RUNTIME_DIR", "/tmp")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 3, r.stdout + r.stderr
    assert f"wgmtp.cli.{cmd}" in r.stdout


def test_add_parser_import_error_propagates(monkeypatch):
    """An ImportError raised while a command registers itself is not swallowed by build_parser."""
    import wgmtp.cli as cli
    from wgmtp.cli import bench

    def broken(sub):
        raise ImportError("simulated: a dependency of bench is missing")

    monkeypatch.setattr(bench, "add_parser", broken)
    with pytest.raises(ImportError, match="simulated"):
        cli.build_parser()
