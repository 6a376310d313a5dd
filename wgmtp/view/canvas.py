"""The view's GPU side: a rendercanvas canvas (a glfw window, or offscreen), a wgpu device of its own
on the model's adapter, and wgpu-py's Dear ImGui renderer drawing a Frame each time the canvas asks.

A device of its own: the model's device is polled by the engine's thread (gpu/device.py,
`_CallerPolls`) and must not be shared with the thread that makes frames.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..errors import WgmtpError
from .draw import Frame


def view_device(adapter: Any) -> Any:
    """A second device on the adapter that runs the model."""
    try:
        return adapter.request_device_sync(label="wgmtp-view")
    except Exception as e:
        raise WgmtpError(f"the view could not open a device on the model's adapter: {e}") from None


class Painter:
    """ImGui (and ImPlot) on one canvas, drawing `frame`."""

    def __init__(self, canvas: Any, device: Any, frame: Frame, fmt: str | None = None) -> None:
        from imgui_bundle import imgui, implot
        from wgpu.utils.imgui import ImguiRenderer
        self.canvas, self.frame = canvas, frame
        self.before: Callable[[], None] | None = None     # called at the start of every frame
        if fmt is None:     # the window's own format, without the sRGB encoding ImGui's colours do not expect
            fmt = canvas.get_wgpu_context().get_preferred_format(device.adapter).replace("-srgb", "")
        self.imgui = ImguiRenderer(device, canvas, render_target_format=fmt)
        imgui.get_io().set_ini_filename(None)       # no imgui.ini in the user's folder
        self.implot = implot.create_context()
        implot.set_current_context(self.implot)
        style = implot.get_style()
        for c in (implot.Col_.frame_bg, implot.Col_.plot_bg):      # no fills under the plots: fewer pixels to shade
            style.set_color_(c, imgui.ImVec4(0, 0, 0, 0))
        style.fit_padding = imgui.ImVec2(0.02, 0.08)               # auto-fitted plots keep their tallest bar in view
        self.imgui.set_gui(self._gui)
        self.device = device
        bg = imgui.get_style().color_(imgui.Col_.window_bg)
        self._bg = (bg.x, bg.y, bg.z, 1.0)
        canvas.request_draw(self._draw)

    def _draw(self) -> None:
        """Clear to the window colour, then ImGui on top: the frame's root window draws no background
        of its own (on a CPU adapter a full-window fill is half a frame's cost)."""
        ctx = self.canvas.get_wgpu_context()
        enc = self.device.create_command_encoder()
        rp = enc.begin_render_pass(color_attachments=[{
            "view": ctx.get_current_texture().create_view(), "resolve_target": None,
            "clear_value": self._bg, "load_op": "clear", "store_op": "store"}])
        rp.end()
        self.device.queue.submit([enc.finish()])
        self.imgui.render()

    def _gui(self) -> None:
        from imgui_bundle import implot
        implot.set_current_context(self.implot)
        if self.before is not None:
            self.before()
        self.frame.draw()


def offscreen(adapter: Any, frame: Frame, size: tuple[int, int]) -> "Offscreen":
    return Offscreen(adapter, frame, size)


class Offscreen:
    """The view without a display: each `snapshot()` draws one frame and returns its pixels."""

    def __init__(self, adapter: Any, frame: Frame, size: tuple[int, int]) -> None:
        from rendercanvas.offscreen import RenderCanvas
        self.canvas = RenderCanvas(size=size, pixel_ratio=1)
        self.painter = Painter(self.canvas, view_device(adapter), frame, fmt="rgba8unorm")
        self.canvas.draw()      # ImGui lays a window out over its first frame: draw one to settle

    def snapshot(self) -> np.ndarray:
        """H x W x 4 uint8."""
        return np.asarray(self.canvas.draw())
