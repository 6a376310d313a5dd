"""The live view (wgmtp/view: `wgmtp run --view`, `--view-png`) on the demo model, with real engine
events: the offscreen frame and its colour map agree with the run's own stats line, pixel for
pixel; a window under Xvfb opens and closes; the generation is the same with and without the view
(one-sequence path and batching engine); without a display --view is a one-line error."""
from __future__ import annotations

import json
import os
import re
import select
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

import wgmtp
from wgmtp.api import DEMO_MODEL, EngineModel, open_engine
from wgmtp.view import palette
from wgmtp.view.png import read_png
from wgmtp.view.state import ViewState
from wgmtp.view.tap import Tap

pytestmark = pytest.mark.gpu

P = "The built-in function len() returns the number of items in a container. For a dictionary, it"
N = 32
MTP = ("--spec-type", "draft-mtp", "--spec-draft-n-max", "3")


def wgmtp_cli(*args: str, env: dict | None = None, timeout: int = 180) -> subprocess.CompletedProcess:
    e = dict(os.environ if env is None else env)
    e.setdefault("XDG_RUNTIME_DIR", "/tmp")
    return subprocess.run([sys.executable, "-m", "wgmtp.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=e)


def stats_of(stderr: str) -> dict:
    """The numbers of `wgmtp run`'s stats line."""
    gen = re.search(r"generated: (\d+) tokens", stderr)
    acc = re.search(r"draft acceptance: [\d.]+ \((\d+)/(\d+)\).*per position: \[([^\]]*)\] \| verify rounds: (\d+)",
                    stderr)
    assert gen and acc, stderr
    return {"generated": int(gen[1]), "accepted": int(acc[1]), "drafted": int(acc[2]),
            "per_pos": [float(x) for x in acc[3].split(",")], "rounds": int(acc[4])}


@pytest.fixture(scope="module")
def plain_text() -> str:
    """What `wgmtp run -p P -n N` with MTP prints without any view (greedy: the same as plain decoding)."""
    m = wgmtp.load(str(DEMO_MODEL))
    return P + "".join(m.generate(P, N, spec="draft-mtp", n_max=3)) + "\n"


def _pixels(img: np.ndarray, rgb: tuple[int, int, int]) -> int:
    return int(np.all(img == np.array(rgb, np.uint8), axis=-1).sum())


def test_offscreen_frame_and_colour_map_match_the_runs_stats(tmp_path, plain_text):
    png = tmp_path / "v.png"
    r = wgmtp_cli("run", "-p", P, "-n", str(N), *MTP, "--view-png", str(png), "--view-size", "960x600",
                  "--view-every", "16")
    assert r.returncode == 0, r.stderr
    assert r.stdout == plain_text                    # the view changes nothing in the output
    img = read_png(png)
    assert img.shape == (600, 960, 3)
    frames = sorted(tmp_path.glob("v-*.png"))
    assert frames and all(read_png(f).shape == (600, 960, 3) for f in frames)
    cmap = json.loads(png.with_suffix(".json").read_text())
    st = stats_of(r.stderr)

    # the colour map's token classes against the stats line: every accepted draft, one verify token per
    # round (after a rejection, or the bonus after a full acceptance), the rest plain
    gen = [it for it in cmap["items"] if it["class"] in palette.GENERATED]
    n_of = lambda *cls: sum(it["class"] in cls for it in gen)       # noqa: E731
    assert len(gen) == st["generated"] == N
    assert n_of(*(palette.draft(i) for i in range(1, 4))) == st["accepted"]
    assert n_of(palette.VERIFY, palette.BONUS) == st["rounds"]
    assert n_of(palette.PLAIN) == st["generated"] - st["accepted"] - st["rounds"]
    assert [round(x, 2) for x in cmap["stats"]["acceptance_per_pos"]] == st["per_pos"]
    by_pos = [n_of(palette.draft(i)) for i in (1, 2, 3)]     # a kept draft at i needs one at i - 1
    assert by_pos == sorted(by_pos, reverse=True)
    rejected = [it for it in cmap["items"] if it["class"] == palette.REJECTED]
    assert rejected and st["accepted"] < st["drafted"]

    # the frame: each generated token is underlined by a bar of its class's colour as wide as its text,
    # so in the text area the bar pixels of each class are in proportion to its characters, exactly
    x0, y0, x1, y1 = cmap["image"]["text_area"]
    area = img[y0:y1, x0:x1]
    chars = {c: sum(len(it["text"].replace("\n", "").replace("\t", "    ")) for it in gen if it["class"] == c)
             for c in palette.GENERATED}
    bars = {c: _pixels(area, palette.bar(c)) for c in palette.GENERATED}
    per_char = sum(bars.values()) / sum(chars.values())
    assert per_char >= 2 and per_char == int(per_char), (bars, chars)
    assert bars == {c: int(per_char) * n for c, n in chars.items()}, (bars, chars)
    for c in palette.GENERATED:
        assert (_pixels(area, palette.TEXT[c]) > 0) == (chars[c] > 0), c
    assert _pixels(area, palette.TEXT[palette.REJECTED]) > 0
    assert _pixels(img, palette.TEXT[palette.PROMPT]) > 0
    assert "view: final frame" in r.stderr


def test_bench_view_png_watches_the_tg_runs(tmp_path):
    """`wgmtp bench --view-png`: the frame and colour map of the tg runs (reps x draft lengths), their
    acceptance the MTP row's, and the rows still printed (marked as measured under the view)."""
    png = tmp_path / "b.png"
    r = wgmtp_cli("bench", "-p", "8", "-n", "8", "-r", "1", "--spec-draft-n-max", "0,2", "--json",
                  "--view-png", str(png), "--view-size", "640x400")
    assert r.returncode == 0, r.stderr
    rows = {row["test"]: row for row in json.loads(r.stdout)}
    assert set(rows) == {"pp8", "tg8", "tg8+mtp2"} and all(row["viewed"] for row in rows.values())
    assert read_png(png).shape == (400, 640, 3)
    st = json.loads(png.with_suffix(".json").read_text())["stats"]
    assert st["gen_tokens"] == 16                     # two tg runs of 8 tokens watched
    assert st["acceptance"] == pytest.approx(rows["tg8+mtp2"]["acceptance"])


@pytest.fixture
def xvfb():
    """A display of our own: Xvfb on a free display number (it picks one, -displayfd)."""
    exe = shutil.which("Xvfb")
    if exe is None:
        pytest.skip("Xvfb is not installed (apt install xvfb; tools/setup.sh installs it with the dev extras)")
    rd, wr = os.pipe()
    proc = subprocess.Popen([exe, "-displayfd", str(wr), "-screen", "0", "1400x900x24", "-nolisten", "tcp"],
                            pass_fds=(wr,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(wr)
    try:
        ready, _, _ = select.select([rd], [], [], 30)
        num = os.read(rd, 64).decode().strip() if ready else ""
        if not num.isdigit():
            raise RuntimeError(f"Xvfb did not report a display (exit status {proc.poll()})")
        yield f":{num}"
    finally:
        os.close(rd)
        proc.terminate()
        proc.wait(10)


def test_window_under_xvfb_opens_and_closes_with_the_same_output(xvfb, plain_text):
    env = {k: v for k, v in os.environ.items() if k != "WAYLAND_DISPLAY"}
    env["DISPLAY"] = xvfb
    t0 = time.monotonic()
    r = wgmtp_cli("run", "-p", P, "-n", str(N), *MTP, "--view", "--view-linger", "0", "-v", env=env, timeout=150)
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr and "panicked" not in r.stderr, r.stderr
    assert r.stdout == plain_text
    frames = re.search(r"view: (\d+) frames in a 1280x800 window", r.stderr)
    assert frames and int(frames[1]) >= 1, r.stderr
    assert took < 150


def test_view_without_a_display_is_one_line_error():
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    for args, words in ((("--view",), ("--view", "no display", "--view-png FILE")),
                        (("--view-every", "8"), ("--view-every", "--view-png"))):
        r = wgmtp_cli("run", "-p", "x", "-n", "4", *args, env=env, timeout=60)
        lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
        assert r.returncode == 1 and len(lines) == 1 and lines[0].startswith("wgmtp: error:"), r.stderr
        assert all(w in lines[0] for w in words), lines[0]


def test_batching_engine_events_match_its_stats():
    """`run` with an n-gram drafter goes through a one-slot engine: the same tokens observed or not,
    and the view's counters are the request's own; drafts are the host's (n-gram) or read back from
    the GPU (MTP), and every accepted one is the token that was emitted."""
    em = EngineModel(open_engine(str(DEMO_MODEL), n_parallel=1, spec=["draft-mtp", "ngram-simple"], n_max=3,
                                 progress=False))
    kw = dict(spec=["draft-mtp", "ngram-simple"], n_max=3)
    a = list(em.generate_ids(P, N, **kw))
    tap = Tap(em)
    b = list(em.generate_ids(P, N, **kw, observe=tap))
    assert a == b
    tok = em.tokenizer
    dec = tok.stream_decoder(skip_special=True)
    state = ViewState(decode=dec.push, token_text=lambda i: tok.decode([i]), flush=dec.flush)
    events = tap.drain()
    for ev in events:
        state.apply(ev)
    got, want = state.stats(), em.stats
    assert [it.id for it in state.items if it.cls in palette.GENERATED] == b
    assert {k: got[k] for k in ("drafted", "accepted", "verify_rounds")} == \
        {k: want[k] for k in ("drafted", "accepted", "verify_rounds")}
    assert got["acceptance_per_pos"] == want["acceptance_per_pos"]
    rounds = [ev for ev in events if ev.n_drafted]
    assert rounds and all(ev.drafts is not None and len(ev.drafts) == ev.n_drafted for ev in rounds)
    assert all(ev.tokens[:ev.k] == ev.drafts[:ev.k] for ev in rounds)
    assert any(ev.k for ev in rounds)


# ---- the server's view (wgmtp serve --view, --view-png) and the many-slot draft reader

SERVE_PROMPTS = ["The socket module", "Return a new list"]
SERVE_ARGS = ("-np", "2", "-c", "512", "--spec-type", "draft-mtp", "--spec-draft-n-max", "3")


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(base: str, proc: subprocess.Popen | None = None, timeout: float = 120) -> None:
    import httpx
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        assert proc is None or proc.poll() is None, proc.stderr.read() if proc.stderr else "the server exited"
        try:
            if httpx.get(base + "/health", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError("the server did not become healthy")


def _two_at_once(base: str) -> list[dict]:
    """The two prompts as concurrent /completion requests (greedy, with the tokens back)."""
    import concurrent.futures

    import httpx

    def one(p: str) -> dict:
        r = httpx.post(base + "/completion", json={"prompt": p, "n_predict": 24, "temperature": 0,
                                                   "return_tokens": True}, timeout=120)
        assert r.status_code == 200, r.text
        return r.json()
    with concurrent.futures.ThreadPoolExecutor(2) as ex:
        return list(ex.map(one, SERVE_PROMPTS))


@pytest.fixture(scope="module")
def served_plain() -> list[dict]:
    """The two requests against the same server without the view (in this process)."""
    import threading

    import uvicorn

    from wgmtp.server.app import create_app
    from wgmtp.server.config import ServerConfig
    cfg = ServerConfig(n_ctx=512, n_parallel=2, spec_type="draft-mtp", n_max=3)
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(cfg), host="127.0.0.1", port=port, log_level="warning"))
    th = threading.Thread(target=srv.run, daemon=True)
    th.start()
    try:
        _wait_healthy(f"http://127.0.0.1:{port}")
        return _two_at_once(f"http://127.0.0.1:{port}")
    finally:
        srv.should_exit = True
        th.join(30)


def test_serve_view_png_has_a_lane_per_request_matching_its_timings(tmp_path, served_plain):
    import signal
    png, port = tmp_path / "s.png", _free_port()
    env = dict(os.environ, XDG_RUNTIME_DIR="/tmp")
    proc = subprocess.Popen([sys.executable, "-m", "wgmtp.cli", "serve", *SERVE_ARGS, "--port", str(port),
                             "--view-png", str(png), "--view-size", "960x600"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        _wait_healthy(f"http://127.0.0.1:{port}", proc)
        got = _two_at_once(f"http://127.0.0.1:{port}")
    finally:
        proc.send_signal(signal.SIGINT)         # the frame and the lanes are written at shutdown
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "view: 2 requests; final frame" in err, err
    # the view changes nothing in the responses (which slot each gets depends on which comes first)
    same = lambda r: (r["content"], r["tokens"], *(r["timings"][k] for k in ("draft_n", "draft_n_accepted",   # noqa: E731
                                                                            "draft_rounds")))
    assert [same(r) for r in got] == [same(r) for r in served_plain]
    img = read_png(png)
    assert img.shape == (600, 960, 3)
    cmap = json.loads(png.with_suffix(".json").read_text())
    lanes = cmap["lanes"]
    assert len(lanes) == 2 and cmap["server"]["slots"] == 2 and cmap["server"]["counts"]["done"] == 2
    assert sorted(ln["slot"] for ln in lanes) == sorted(r["id_slot"] for r in got) == [0, 1]
    for r in got:       # each response's lane: its tokens, and the classes its timings count
        lane = next(ln for ln in lanes if ln["slot"] == r["id_slot"])
        gen = [it for it in lane["items"] if it["class"] in palette.GENERATED]
        assert [it["id"] for it in gen] == r["tokens"]
        t = r["timings"]
        n_of = lambda *cls: sum(it["class"] in cls for it in gen)      # noqa: E731
        assert n_of(*(palette.draft(i) for i in range(1, 4))) == t["draft_n_accepted"]
        assert n_of(palette.VERIFY, palette.BONUS) == t["draft_rounds"]
        assert n_of(palette.PLAIN) == t["predicted_n"] - t["draft_n_accepted"] - t["draft_rounds"]
        assert [n_of(palette.draft(i)) for i in (1, 2, 3)] == t["draft_accepted_per_pos"]
        st = lane["stats"]
        assert (st["drafted"], st["accepted"], st["verify_rounds"]) == \
            (t["draft_n"], t["draft_n_accepted"], t["draft_rounds"])
        # the rejected drafts were read back for both slots (one read of the slot step buffer each)
        assert any(it["class"] == palette.REJECTED for it in lane["items"]) == (t["draft_n"] > t["draft_n_accepted"])
        x0, y0, x1, y1 = lane["text_area"]      # its text panel shows its bars
        area = img[y0:y1, x0:x1]
        assert all(_pixels(area, palette.bar(c)) > 0 for c in {it["class"] for it in gen})


@pytest.fixture(scope="module")
def two_slots():
    return EngineModel(open_engine(str(DEMO_MODEL), n_parallel=2, spec=["draft-mtp", "ngram-simple"], n_max=3,
                                   progress=False))


def _run_two(em: EngineModel, observe=None, n: int = N) -> list[list[int]]:
    from wgmtp.batching import Request
    eng, tok = em.engine, em.tokenizer
    hs = [eng.submit(Request(prompt=tok.encode(p), max_tokens=n, spec=True, n_max=3, drafters=("ngram-simple",),
                             observe=observe(i) if observe else None)) for i, p in enumerate((P, SERVE_PROMPTS[1]))]
    eng.run_until_idle()
    return [h.result() for h in hs]


def test_many_slot_draft_reader_returns_the_drafts_each_round_verified(two_slots):
    """SlotRunner.round_drafts on a 2-slot engine, both sequences in the same steps: for a round of host
    drafts (an n-gram match) it reads exactly the drafts the engine gave; for an MTP round the accepted
    ones are the emitted tokens and the first rejected one is not the verify's token."""
    rn = two_slots.engine.rn
    want = _run_two(two_slots, n=64)        # 64 tokens: the first n-gram matches come after 32
    log: list = []
    got = _run_two(two_slots, lambda i: lambda ev: log.append((i, ev, rn.round_drafts(ev.slot))), n=64)
    assert got == want
    host = [(ev, d) for _, ev, d in log if ev.n_drafted and ev.drafts is not None]
    mtp = [(ev, d) for _, ev, d in log if ev.n_drafted and ev.drafts is None]
    assert host and mtp and {ev.slot for ev, _ in mtp} == {0, 1}
    assert all(d[:ev.n_drafted] == ev.drafts[:ev.n_drafted] for ev, d in host)
    assert all(d[:ev.k] == ev.tokens[:ev.k] for ev, d in mtp)
    cut = [(ev, d) for ev, d in mtp if ev.k < ev.n_drafted and len(ev.tokens) == ev.k + 1]
    assert cut and all(d[ev.k] != ev.tokens[ev.k] for ev, d in cut)
    assert all(d is None for _, ev, d in log if not ev.n_drafted)     # a feed, a plain step: no drafts


def test_profile_a_step_on_demand_changes_nothing(two_slots):
    """The view's 'profile a step' (key p): asked from the frame's side, served at the next step boundary
    on the engine thread, every dispatch timed; the tokens are the same."""
    want = _run_two(two_slots)
    tap = Tap(two_slots)
    prof = tap.profiler
    if not prof.can_time:
        pytest.skip("no timestamp queries on this adapter")
    prof.ask()
    got = _run_two(two_slots, tap.lane)
    assert got == want
    res = prof.result
    assert res is not None and not prof.armed and res.dispatches > 50 and res.total_s > 0
    kernels = {k for k, _, _ in res.kernels}
    assert {"matvec", "gdn", "embed"} <= kernels
    assert sum(n for _, _, n in res.kernels) == res.dispatches
    assert abs(sum(s for _, s, _ in res.kernels) - res.total_s) < 1e-9


def test_serve_view_without_a_display_is_one_line_error():
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    for args, words in ((("--view",), ("--view", "no display", "--view-png FILE")),
                        (("--view-every", "2"), ("--view-every", "--view-png"))):
        r = wgmtp_cli("serve", "--port", "0", *args, env=env, timeout=60)
        lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
        assert r.returncode == 1 and len(lines) == 1 and lines[0].startswith("wgmtp: error:"), r.stderr
        assert all(w in lines[0] for w in words), lines[0]
