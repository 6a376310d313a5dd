"""Bad command lines and environment variables, table-driven, for every command: each is one line
on stderr naming the flag (or file, or variable) with exit status 1, never a traceback; and the
API raises a WgmtpError subclass for the same mistakes."""
from __future__ import annotations

import os

import pytest

from wgmtp.cli import main
from wgmtp.errors import WgmtpError

BAD_FLAGS = [  # (argv, words the one line must hold)
    (["run", "--seed", "-2", "-p", "hi"], ["--seed", "-2"]),
    (["run", "-c", "0", "-p", "hi"], ["--ctx-size", "at least 1"]),
    (["run", "-c", "-5", "-p", "hi"], ["--ctx-size"]),
    (["run", "-n", "-3", "-p", "hi"], ["--n-predict", "at least -1"]),
    (["run", "--temp", "-1", "-p", "hi"], ["--temp"]),
    (["run", "--temp", "nan", "-p", "hi"], ["--temp", "finite"]),
    (["run", "--top-p", "2", "-p", "hi"], ["--top-p", "0..1"]),
    (["run", "--min-p", "x", "-p", "hi"], ["--min-p", "not a number"]),
    (["run", "--top-k", "-4", "-p", "hi"], ["--top-k"]),
    (["run", "--spec-type", "eagle", "-p", "hi"], ["--spec-type"]),
    (["run", "--spec-type", "draft-mtp,eagle", "-p", "hi"], ["--spec-type", "'eagle'", "ngram-simple"]),
    (["run", "--spec-type", "draft-simple", "-p", "hi"], ["draft-simple needs a draft model", "-md draft.gguf"]),
    (["run", "--spec-type", "draft-mtp,", "-p", "hi"], ["--spec-type", "''"]),
    (["run", "--spec-draft-n-min", "-1", "-p", "hi"], ["--spec-draft-n-min", "0..48"]),
    (["run", "--spec-draft-n-min", "5", "-p", "hi"], ["--spec-draft-n-min 5", "--spec-draft-n-max 3"]),
    (["run", "--spec-ngram-size-n", "0", "-p", "hi"], ["--spec-ngram-size-n", "at least 1"]),
    (["run", "--spec-ngram-size-m", "x", "-p", "hi"], ["--spec-ngram-size-m", "'x'"]),
    (["run", "--spec-ngram-min-hits", "0", "-p", "hi"], ["--spec-ngram-min-hits"]),
    (["run", "--spec-adaptive=yes", "-p", "hi"], ["--spec-adaptive"]),
    (["run", "--device", "cpu", "--spec-type", "ngram-simple", "-p", "hi"], ["--device cpu", "ngram-simple"]),
    (["run", "--spec-type", "draft-mtp", "--spec-draft-n-max", "100", "-p", "hi"], ["--spec-draft-n-max", "1..48"]),
    (["run", "--spec-type", "draft-simple", "-md", "/nonexistent.gguf", "--spec-draft-n-max", "20", "-p", "hi"],
     ["--spec-draft-n-max 20", "at most 15", "ngram-simple"]),
    (["run", "--spec-draft-p-min", "1.5", "-p", "hi"], ["--spec-draft-p-min"]),
    (["run", "--spec-draft-vocab", "-1", "-p", "hi"], ["--spec-draft-vocab"]),
    (["run", "-f", "/dev/zero"], ["/dev/zero", "not a regular file"]),
    (["run", "-f", "/nonexistent/prompt.txt"], ["/nonexistent/prompt.txt", "cannot read"]),
    (["run", "-m", "/nonexistent/m.gguf", "-p", "hi"], ["/nonexistent/m.gguf", "no such file"]),
    (["bench", "-p", "0"], ["--n-prompt"]),
    (["bench", "-n", "0"], ["--n-gen"]),
    (["bench", "-p", "-5"], ["--n-prompt"]),
    (["bench", "-r", "0"], ["--reps"]),
    (["bench", "--spec-draft-n-max", "a,b"], ["--spec-draft-n-max", "'a'"]),
    (["bench", "--spec-draft-n-max", "99"], ["--spec-draft-n-max", "0..48"]),
    (["bench", "--parallel", "0,2"], ["--parallel"]),
    (["bench", "--synthetic-acceptance", "2"], ["--synthetic-acceptance"]),
    (["bench", "--spec-type", "ngram-mod", "--synthetic-acceptance", "0.5"], ["--synthetic-acceptance", "n-gram"]),
    (["bench", "--spec-type", "ngram"], ["--spec-type", "'ngram'"]),
    (["bench", "--spec-draft-n-max", "1,2", "--spec-draft-n-min", "3"], ["--spec-draft-n-min 3"]),
    (["check", "--json", "/nonexistent/dir/r.json"], ["--json", "does not exist"]),
    (["check", "--timeout", "-1"], ["--timeout", "above 0"]),
    (["check", "--timeout", "0"], ["--timeout"]),
    (["serve", "--port", "70000"], ["--port"]),
    (["serve", "-np", "0"], ["--parallel"]),
    (["serve", "--spec-draft-n-max", "40"], ["--spec-draft-n-max"]),
    (["serve", "--spec-type", "mtp,ngram-cache"], ["--spec-type", "'ngram-cache'"]),
    (["serve", "--spec-draft-n-min", "16"], ["--spec-draft-n-min"]),
    (["serve", "--spec-ngram-size-n", "-2"], ["--spec-ngram-size-n"]),
    (["inspect", "/nonexistent/m.gguf"], None),          # inspect reports on stdout: "supported: no"
    (["inspect", "wgmtp/data/wgmtp-demo.gguf", "-np", "99"], ["--parallel"]),
    (["inspect", "wgmtp/data/wgmtp-demo.gguf", "-c", "0"], ["--ctx-size"]),
    (["frobnicate"], ["invalid choice"]),
]


def _run(argv, capsys) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("argv,words", BAD_FLAGS, ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_bad_flags_are_one_line(argv, words, capsys):
    code, out, err = _run(argv, capsys)
    assert code == 1, (code, out, err)
    if words is None:
        assert "supported: no" in out
        return
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    for w in words:
        assert w in lines[0], lines[0]


def test_bad_prompt_bytes_are_one_line(tmp_path, capsys):
    f = tmp_path / "p.txt"
    f.write_bytes(b"\xff\xfe not utf-8")
    code, _, err = _run(["run", "-f", str(f), "-n", "1"], capsys)
    assert code == 1 and err.count("\n") == 1 and "not valid UTF-8" in err
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    code, _, err = _run(["run", "-m", str(fifo), "-p", "hi"], capsys)       # must not block on the FIFO
    assert code == 1 and "not a regular file" in err


@pytest.mark.parametrize("value", ["0", "-1", "lots"])
def test_bad_environment_is_one_line(value, monkeypatch, capsys):
    monkeypatch.setenv("WGMTP_MAX_BINDING_BYTES", value)
    code, _, err = _run(["run", "-p", "hi", "-n", "1"], capsys)
    assert code == 1 and err.count("\n") == 1 and "WGMTP_MAX_BINDING_BYTES" in err, err


def test_api_mistakes_raise_wgmtp_errors():
    import wgmtp
    m = wgmtp.load("wgmtp/data/wgmtp-demo.gguf", device="cpu", n_ctx=64)
    for call in (lambda: m.logits([]), lambda: m.logits([10**9]),
                 lambda: list(m.generate_ids([1, 2], spec="draft-mtp", n_max=100)),
                 lambda: list(m.generate_ids([1, 2], max_tokens=0)), lambda: list(m.generate_ids([])),
                 lambda: list(m.generate_ids([-1])), lambda: list(m.generate_ids([1, 2], spec="ngram-simple")),
                 lambda: list(m.generate_ids([1, 2], spec="eagle"))):
        with pytest.raises(WgmtpError):
            call()
