"""`wgmtp serve --view` and `--view-png FILE`: the server runs on a worker thread exactly as it would
without the view, its engine thread drives the GPU, and the tap only queues each request's step
events (the server gives every request it submits the observer `observer(req)` returns). Frames are
made on the main thread (glfw wants it) once the model has loaded: in a window when something changed
(and once a second), or offscreen every `every_s` seconds (FILE-00001.png, ...) and once at shutdown
(Ctrl-C, SIGTERM, or the window closing, which stops the server).
"""
from __future__ import annotations

import itertools
import signal
import threading
import time
from typing import Any, Callable

from ..engine import StepEvent
from .app import SIZE, drawn, model_adapter, palette_map, png_path, write_final
from .info import run_info
from .lanes import Opened, ServeState
from .png import write_png
from .state import ViewState
from .tap import Tap


class ServeView:
    """The live view of a server's requests. `observer` goes to the server's config; `run` serves."""

    def __init__(self, settings: str, *, window: bool = False, png: str | None = None, every_s: float = 0.0,
                 size: tuple[int, int] = SIZE) -> None:
        self.settings, self.window, self.png, self.every_s, self.size = settings, window, png, every_s, size
        self.tap = Tap()
        self.model: Any = None           # api.EngineModel over the server's engine, once loaded
        self.state: ServeState | None = None
        self.frame = None
        self.frames_written: list[str] = []
        self._keys = itertools.count()
        self._bound = threading.Lock()
        self._loaded: Callable[[], Any] = lambda: None
        self._quit = threading.Event()
        self._win = None
        self._off = None

    # ---- the server's side (handler threads, then the engine thread)

    def observer(self, req: Any) -> Callable[[StepEvent], None]:
        """The observer of one request the server submits (before the engine sees it)."""
        self._bind()
        key = next(self._keys)
        prompt = self.model.tokenizer.decode(list(req.prompt[-64:]), skip_special=True) if self.model else ""
        self.tap.note(Opened(key, req, prompt, time.perf_counter()))
        return self.tap.lane(key)

    def _bind(self) -> None:
        """The tap learns the engine once (a request arrives only after the model has loaded)."""
        with self._bound:
            if self.model is None:
                self.model = self._loaded()
                if self.model is not None:
                    self.tap.bind(self.model)

    # ---- running

    def run(self, serve: Callable[[], None], stop: Callable[[], None], loaded: Callable[[], Any],
            failed: Callable[[], BaseException | None]) -> int:
        """Run `serve` (the HTTP server, until `stop` is called) on a worker thread, and the view here.
        `loaded()`: the api.EngineModel once the model has loaded (None before); `failed()`: the load's
        error, if it failed."""
        self._loaded = loaded
        err: list[BaseException] = []

        def work() -> None:
            try:
                serve()
            except BaseException as e:     # re-raised here, where the CLI reports it
                err.append(e)
            finally:
                self._quit.set()

        worker = threading.Thread(target=work, name="wgmtp-serve", daemon=True)
        old = {s: signal.signal(s, lambda *_: self._quit.set()) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            worker.start()
            if self._wait_loaded(failed):
                self._open()
                if self.window:
                    self._window_loop()
                else:
                    self._offscreen_loop()
        finally:
            stop()
            self._quit.set()
            worker.join()
            for s, h in old.items():
                signal.signal(s, h)
        if self.state is not None:
            self.feed()
            if self.png:
                write_final(self._offscreen(), self.png, self.colour_map)
        if err:
            raise err[0]
        e = failed()
        if e is not None:
            raise e
        return 0

    def _wait_loaded(self, failed: Callable[[], BaseException | None]) -> bool:
        while not self._quit.is_set():
            if failed() is not None:
                return False
            self._bind()
            if self.model is not None:
                return True
            self._quit.wait(0.05)
        return False

    def _open(self) -> None:
        from .serve_draw import ServeFrame
        m = self.model
        tok = m.tokenizer

        def lane_state() -> ViewState:
            dec = tok.stream_decoder(skip_special=True)
            return ViewState(decode=dec.push, token_text=lambda i: tok.decode([i], skip_special=True), flush=dec.flush)
        self.state = ServeState(lane_state, n_slots=m.engine.n_parallel)
        self.frame = ServeFrame(self.state, run_info(m, self.settings), profiler=self.tap.profiler)
        self.adapter = model_adapter(m)
        if self.window:
            from .window import Window
            self._win = Window(self.adapter, self.frame, self.size, self._on_frame)
            self.tap.wake = self._win.wake

    def feed(self) -> int:
        """Fold the queued events into the state and sample the engine (the frame's side)."""
        n = self.state.fold(self.tap.drain())
        self.state.sample(self.model.engine, time.perf_counter())
        return n

    def _offscreen(self):
        if self._off is None:
            from .canvas import Offscreen
            self._off = Offscreen(self.adapter, self.frame, self.size)
        return self._off

    def _offscreen_loop(self) -> None:
        """--view-png: sample the engine and fold events as they come; with every_s, a frame each time."""
        next_at = time.perf_counter() + self.every_s
        while not self._quit.wait(0.1):
            self.feed()
            if self.png and self.every_s and time.perf_counter() >= next_at:
                path = png_path(self.png, len(self.frames_written) + 1)
                write_png(path, self._offscreen().snapshot())
                self.frames_written.append(path)
                next_at += self.every_s

    def _on_frame(self) -> None:
        self.feed()
        if self._quit.is_set():         # the server ended, or Ctrl-C / SIGTERM: at least one frame a second sees it
            self._win.close_soon()

    def _window_loop(self) -> None:
        """The window's loop until it closes (then the server stops) or the server ends."""
        self._win.run()
        self.tap.wake = None
        self._quit.set()

    # ---- what it wrote

    def summary(self) -> str:
        """One line for the end of the server: how many requests the view saw, what it drew and wrote."""
        n = len(self.state.lanes) if self.state is not None else 0
        every = f"{self.every_s:g} s" if self.every_s else ""
        return f"view: {n} requests; " + "; ".join(drawn(self._win, self.size, self.png, "lanes", self.frames_written,
                                                          every))

    def colour_map(self, shape: tuple[int, ...]) -> dict:
        """What the final frame shows, request by request (the lanes), and the server's numbers."""
        st = self.state
        areas = {k: list(p.area) for k, p in self.frame.panels.items()}
        lanes = []
        for lane in st.lanes.values():
            d = st.lane_map(lane)
            d["text_area"] = areas.get(lane.key)
            lanes.append(d)
        return {"image": {"width": int(shape[1]), "height": int(shape[0])}, "palette": palette_map(),
                "lanes": lanes, "server": {"slots": st.n_slots, "tokens": st.tokens, "counts": st.counts(),
                                           "acceptance_per_pos": st.spec.acceptance_per_pos,
                                           "drafted": st.spec.drafted, "accepted": st.spec.accepted},
                "info": self.frame.info.lines()}
