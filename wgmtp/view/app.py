"""`--view` and `--view-png`: run a command's generation with the live view watching it.

The generation runs on a worker thread exactly as it would without the view (same code, same
output); the tap only queues its step events. Frames are made on the main thread (glfw wants it):
in a window (window.py) only when something changed, or offscreen every `every` tokens and once at
the end. Either way the engine never waits for a frame.
"""
from __future__ import annotations

import importlib.util
import json
import threading
from pathlib import Path
from typing import Any, Callable

from ..errors import WgmtpError
from . import palette
from .info import run_info
from .png import write_png
from .state import ViewState
from .tap import Tap

SIZE = (1280, 800)


def check_view(window: bool) -> None:
    """Fail early, in one line, when the view cannot work here (before any model loads)."""
    missing = [m for m in (("imgui_bundle", "rendercanvas") + (("glfw",) if window else ()))
               if importlib.util.find_spec(m) is None]
    if missing:
        raise WgmtpError(f"the view needs {', '.join(missing)}: pip install 'wgmtp[view]'")
    if window:
        from .window import check_display
        check_display()


def model_adapter(model: Any) -> Any:
    """The wgpu adapter the model runs on (the best adapter for the numpy reference)."""
    eng = getattr(model, "engine", None)
    ctx = eng.rn.ctx if eng is not None else getattr(model.backend, "ctx", None)
    if ctx is not None:
        return ctx.desc.adapter
    from ..gpu.device import select_adapter
    return select_adapter(None).adapter


def png_path(base: str, tokens: int) -> str:
    """The file of the frame taken after `tokens` tokens (--view-every): FILE-00032.png."""
    p = Path(base)
    return str(p.with_name(f"{p.stem}-{tokens:05d}{p.suffix or '.png'}"))


def write_final(off: Any, path: str, colour_map: Callable[[tuple[int, ...]], dict]) -> None:
    """A final frame as PNG and, next to it (FILE.json), what it shows token by token."""
    off.snapshot()
    img = off.snapshot()        # the layout of a frame's new text settles in one more frame
    write_png(path, img)
    Path(path).with_suffix(".json").write_text(json.dumps(colour_map(img.shape)))


def drawn(win: Any, size: tuple[int, int], png: str | None, json_what: str, frames: list[str], every: str) -> list[str]:
    """What a view drew and wrote, for the line at the end of its command."""
    parts = []
    if win is not None:
        parts.append(f"{win.frames} frames in a {size[0]}x{size[1]} window (at most {win.fps:g} per second)")
    if png:
        parts.append(f"final frame {png} ({size[0]}x{size[1]}), {json_what} {Path(png).with_suffix('.json')}"
                     + (f", {len(frames)} frames every {every}" if every else ""))
    return parts


def palette_map() -> dict:
    """Every class's text and bar colours (the colour maps' "palette")."""
    return {c: {"text": list(palette.TEXT[c]), "bar": list(palette.bar(c))} for c in palette.TEXT}


class View:
    """The live view of one command's generations: `observe` goes to generate(), `run(job)` runs them."""

    def __init__(self, model: Any, settings: str, *, window: bool = False, png: str | None = None,
                 every: int = 0, size: tuple[int, int] = SIZE, linger: float = -1.0) -> None:
        self.model, self.window, self.png, self.every = model, window, png, every
        self.size, self.linger = size, linger
        self.tap = Tap(model)
        tok = model.tokenizer
        dec = tok.stream_decoder(skip_special=True)
        self.state = ViewState(decode=dec.push, token_text=lambda i: tok.decode([i], skip_special=True),
                               flush=dec.flush)
        # imgui-bundle is imported only once a view is wanted (check_view says so when it is missing)
        from .draw import Frame
        self.frame = Frame(self.state, run_info(model, settings), profiler=self.tap.profiler)
        self.adapter = model_adapter(model)
        self.frames_written: list[str] = []
        self._win = None
        self._off = None
        self._done = threading.Event()
        self._error: BaseException | None = None
        self._result = 0

    @property
    def observe(self) -> Tap:
        return self.tap

    def stopping(self) -> bool:
        """True once the user asked the view to stop the generation (Ctrl-C in the window's loop)."""
        return self.tap.stop

    def add_prompt(self, text: str) -> None:
        self.state.add_prompt(text)

    def feed(self) -> int:
        """Fold the queued events into the state (the frame's side); how many there were."""
        evs = self.tap.drain()
        for ev in evs:
            self.state.apply(ev)
        return len(evs)

    # ---- running

    def run(self, job: Callable[[], int]) -> int:
        """Run `job` (the command's generation) with the view; its exit status."""
        worker = threading.Thread(target=self._work, args=(job,), name="wgmtp-generate", daemon=True)
        if self.window:
            self._open_window()         # a window that cannot open fails before the generation starts
        worker.start()
        if self.window:
            self._window_loop()
        elif self.png and self.every:
            self._offscreen_loop()
        self._join(worker)
        self.feed()
        self.state.end_generation()
        if self.png:
            self.write_final(self.png)
        if self._error is not None:
            raise self._error
        return self._result

    def _work(self, job: Callable[[], int]) -> None:
        try:
            self._result = job()
        except BaseException as e:      # re-raised on the main thread, where the CLI reports it
            self._error = e
        finally:
            self._done.set()
            wake = self.tap.wake
            if wake is not None:
                wake()

    def _join(self, worker: threading.Thread) -> None:
        """Wait for the generation; Ctrl-C here stops it (at its next token)."""
        while worker.is_alive():
            try:
                worker.join(0.1)
            except KeyboardInterrupt:
                self.tap.stop = True

    # ---- offscreen

    def _offscreen(self):
        if self._off is None:
            from .canvas import Offscreen
            self._off = Offscreen(self.adapter, self.frame, self.size)
        return self._off

    def _offscreen_loop(self) -> None:
        """--view-every N: a frame each time N more tokens have come, while the generation runs."""
        next_at = self.every
        while not self._done.is_set():
            self._done.wait(0.05)
            self.feed()
            if self.state.gen_tokens >= next_at:
                path = png_path(self.png, self.state.gen_tokens)
                write_png(path, self._offscreen().snapshot())
                self.frames_written.append(path)
                next_at = (self.state.gen_tokens // self.every + 1) * self.every

    def summary(self) -> str:
        """One line for the end of the run: what the view drew and wrote."""
        every = f"{self.every} tokens" if self.every else ""
        return "view: " + "; ".join(drawn(self._win, self.size, self.png, "token colours", self.frames_written, every))

    def write_final(self, path: str) -> None:
        """The final frame as PNG, and next to it (FILE.json) the colour of every token."""
        write_final(self._offscreen(), path, self.colour_map)

    def colour_map(self, shape: tuple[int, ...]) -> dict:
        """What the final frame shows, token by token: for tests and tools that check the picture."""
        st = self.state
        return {
            "image": {"width": int(shape[1]), "height": int(shape[0]), "text_area": list(self.frame.text_area)},
            "palette": palette_map(),
            "items": st.items_map(),
            "counts": st.counts(),
            "stats": st.stats(),
            "info": self.frame.info.lines(),
        }

    # ---- the window

    def _open_window(self) -> None:
        from .window import Linger, Window
        self._linger = Linger(self.linger)
        self._win = Window(self.adapter, self.frame, self.size, self._on_frame)
        self.tap.wake = self._win.wake

    def _on_frame(self) -> None:
        self.feed()
        if self._linger.due(self._done.is_set()):
            self._win.close_soon()

    def _window_loop(self) -> None:
        self._win.run()
        self.tap.wake = None
        if self._win.interrupted:
            self.tap.stop = True
