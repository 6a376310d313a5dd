"""`--view`'s window: a glfw canvas (rendercanvas) on the main thread, redrawn on demand, at most
MAX_FPS times a second (CPU_FPS on a CPU adapter, whose "GPU" is the cores the model runs on).
Whether a window can open here is checked before any model loads, so the failure is one line."""
from __future__ import annotations

import os
import re
import signal
import sys
import time
from typing import Any, Callable

from ..errors import WgmtpError
from .canvas import Painter, view_device
from .draw import Frame

MAX_FPS = 15        # frames per second at most, while tokens come
CPU_FPS = 4         # on a CPU adapter (lavapipe), where a 1280x800 frame costs ~13 ms of the cores the model runs on
INSTEAD = "use --view-png FILE to render the view offscreen instead"


def display_problem() -> str | None:
    """Why a window cannot open here, or None. Only Linux and the BSDs need a display server named
    in the environment (macOS and Windows always have a desktop)."""
    if sys.platform.startswith(("linux", "freebsd", "openbsd", "netbsd")):
        if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            return "no display: neither DISPLAY nor WAYLAND_DISPLAY is set"
    return None


def check_display() -> None:
    """One line when no window can open: no display named, or the one named is not there (glfw itself
    would only warn, then fail obscurely)."""
    why = display_problem()
    if why:
        raise WgmtpError(f"--view opens a window and there is {why}; {INSTEAD}")
    import glfw
    prev, glfw.ERROR_REPORTING = glfw.ERROR_REPORTING, "raise"
    try:
        glfw.init()
    except glfw.GLFWError as e:
        where = os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or "the desktop"
        m = re.search(r"b'(.*)'", str(e))
        raise WgmtpError(f"--view could not open a window on {where} ({m[1] if m else e}); {INSTEAD}") from None
    finally:
        glfw.ERROR_REPORTING = prev


class Window:
    """The view's window. `on_frame` runs at the start of every frame (the view folds its events in);
    `wake()` may be called from any thread to ask for a frame (it only sets a flag)."""

    def __init__(self, adapter: Any, frame: Frame, size: tuple[int, int], on_frame: Callable[[], None]) -> None:
        from rendercanvas.glfw import RenderCanvas
        cpu = str(adapter.info.get("adapter_type", "")).upper() == "CPU"
        self.fps = CPU_FPS if cpu else MAX_FPS
        self.frames = 0
        self.interrupted = False
        self._closing = False
        self._on_frame = on_frame
        try:
            self.canvas = c = RenderCanvas(size=size, title="wgmtp view", update_mode="ondemand",
                                           max_fps=self.fps, min_fps=1)
        except Exception as e:
            why = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise WgmtpError(f"--view could not open a window ({why}); {INSTEAD}") from None
        self.painter = Painter(c, view_device(adapter), frame)
        self.painter.before = self._frame
        c.add_event_handler(lambda e: c.request_draw(), "pointer_move", "pointer_down", "pointer_up", "wheel",
                            "key_down", "key_up")
        c.add_event_handler(self._on_key, "key_down")
        c.force_draw()      # the first frame builds ImGui's pipelines and fonts: before the generation, not during it

    def wake(self) -> None:
        self.canvas.request_draw()

    def close_soon(self) -> None:
        """Close after this frame (closing inside a frame destroys its surface texture)."""
        from rendercanvas.glfw import loop
        if not self._closing:
            self._closing = True
            loop.call_soon(self.canvas.close)

    def _frame(self) -> None:
        self.frames += 1
        self._on_frame()

    def _on_key(self, e: dict) -> None:
        if e.get("key") in ("Escape", "q"):
            self.close_soon()

    def run(self) -> None:
        """The window's loop, until it closes (the user, Esc or q, close_soon) or Ctrl-C (`interrupted`)."""
        from rendercanvas.glfw import loop, poll_glfw_briefly

        def interrupt(sig, frame) -> None:
            self.interrupted = True
            loop.stop()

        # the loop sets a SIGINT handler of its own while it runs; ours goes in once it runs
        loop.call_later(0.0, lambda: signal.signal(signal.SIGINT, interrupt))
        loop.run()
        poll_glfw_briefly()


class Linger:
    """When the window closes by itself after the generation: `linger` seconds after it ended (-1: never)."""

    def __init__(self, linger: float) -> None:
        self.linger = linger
        self._t: float | None = None

    def due(self, done: bool) -> bool:
        if not done or self.linger < 0:
            return False
        if self._t is None:
            self._t = time.perf_counter()
        return time.perf_counter() - self._t >= self.linger
