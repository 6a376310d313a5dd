"""One frame of the server's live view (`wgmtp serve --view`): a lane per slot (the request in it, or
the last it ran: its text coloured by how each token came, its tokens, tok/s and acceptance), and the
server-wide panels: requests running and queued, tok/s over all slots, acceptance per draft position
over all requests. Reads ServeState only; the same function draws the window and the PNG.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from imgui_bundle import imgui, implot

from . import palette
from .draw import (
    GREY,
    ROOT_FLAGS,
    TextPanel,
    _vec,
    header,
    legend_row,
    per_position_plot,
    profile_button,
    profile_window,
)
from .info import RunInfo
from .lanes import WINDOW_S, Lane, ServeState
from .tap import Profiler

STATUS = {"queued": GREY, "prefill": (0.95, 0.55, 0.2, 1.0), "running": (0.45, 0.85, 0.45, 1.0), "done": GREY}
PLOT_FLAGS = implot.Flags_.no_menus | implot.Flags_.no_inputs


def lane_title(slot: int, lane: Lane | None) -> tuple[str, tuple]:
    if lane is None:
        return f"slot {slot}: idle", GREY
    st, sp = lane.state, lane.state.spec
    s = (f"slot {slot}: request #{lane.key} {lane.status} | prompt {lane.prompt_n} | {st.gen_tokens}/"
         f"{lane.max_tokens} tokens, {st.tok_s:.1f} tok/s")
    if sp.drafted:
        s += f" | acceptance {sp.acceptance:.2f} ({sp.accepted}/{sp.drafted}), {sp.mean_accepted_len:.2f} per round"
    return s, STATUS[lane.status]


@dataclass
class ServeFrame:
    state: ServeState
    info: RunInfo
    profiler: Profiler | None = None
    show_rejected: bool = True
    panels: dict[int, TextPanel] = field(default_factory=dict)     # by request: its lane's text panel

    def draw(self) -> None:
        io = imgui.get_io()
        imgui.set_next_window_pos(imgui.ImVec2(0, 0))
        imgui.set_next_window_size(imgui.ImVec2(io.display_size.x, io.display_size.y))
        imgui.begin("wgmtp serve view", None, ROOT_FLAGS)
        header(self.info, "wgmtp serve: live view")
        avail = imgui.get_content_region_avail()
        left = max(200.0, avail.x * 0.62)
        imgui.begin_group()
        self._lanes(left, avail.y - 2 * imgui.get_frame_height_with_spacing())
        imgui.end_group()
        style = imgui.get_style()
        imgui.same_line(style.window_padding.x + left + style.item_spacing.x)
        imgui.begin_group()
        self._server(avail.x - left - style.item_spacing.x, avail.y)
        imgui.end_group()
        imgui.end()
        profile_window(self.profiler)

    def _lanes(self, width: float, height: float) -> None:
        st = self.state
        shown = st.by_slot()
        line = imgui.get_text_line_height_with_spacing()
        each = max(3 * line, height / max(1, len(shown)) - line - imgui.get_style().item_spacing.y)
        classes: set[str] = set()
        for slot, lane in enumerate(shown):
            title, col = lane_title(slot, lane)
            imgui.text_colored(imgui.ImVec4(*col), title)
            if lane is None:
                imgui.begin_child(f"idle{slot}", imgui.ImVec2(width, each), imgui.ChildFlags_.borders)
                imgui.end_child()
                continue
            classes |= lane.state.classes
            self.panel(lane.key).draw(lane.state, width, each, self.show_rejected, name=f"lane{slot}")
        legend_row(classes, bool(st.spec.drafted), width)
        _, self.show_rejected = imgui.checkbox("rejected drafts", self.show_rejected)
        imgui.same_line()
        profile_button(self.profiler)

    def panel(self, key: int) -> TextPanel:
        p = self.panels.get(key)
        if p is None:
            p = self.panels[key] = TextPanel()
        return p

    def _server(self, width: float, height: float) -> None:
        st = self.state
        c = st.counts()
        run = st.load[-1] if st.load else (0.0, 0, 0)
        imgui.text(f"requests: {run[1]} in {st.n_slots} slots ({c['prefill']} prefilling), {run[2]} queued, "
                   f"{c['done']} done")
        imgui.text(f"tokens {st.tokens}   {st.tok_s:.1f} tok/s over all slots (last {WINDOW_S:g} s)")
        sp = st.spec
        if sp.verify_rounds:
            imgui.text(f"acceptance {sp.acceptance:.3f} ({sp.accepted}/{sp.drafted})   "
                       f"mean accepted length {sp.mean_accepted_len:.2f}   rounds {sp.verify_rounds}")
        else:
            imgui.text("no drafts (plain decoding)")
        h = (height - 4 * imgui.get_text_line_height_with_spacing()) / 3 - imgui.get_style().item_spacing.y
        self._tok_s(width, h)
        self._load(width, h)
        per_position_plot(sp.acceptance_per_pos, width, h)

    def _tok_s(self, width: float, h: float) -> None:
        xs, ys = self.state.rolling_tok_s()
        if implot.begin_plot(f"tok/s over all slots, rolling {WINDOW_S:g} s", imgui.ImVec2(width, h),
                             PLOT_FLAGS | implot.Flags_.no_legend):
            implot.setup_axes("s", "tok/s", implot.AxisFlags_.auto_fit, implot.AxisFlags_.auto_fit)
            if xs:
                implot.plot_line("tok/s", np.array(xs), np.array(ys))
            implot.end_plot()

    def _load(self, width: float, h: float) -> None:
        st = self.state
        if implot.begin_plot("requests running / queued", imgui.ImVec2(width, h), PLOT_FLAGS):
            implot.setup_axes("s", "requests", implot.AxisFlags_.auto_fit, implot.AxisFlags_.auto_fit)
            implot.setup_legend(implot.Location_.south, implot.LegendFlags_.outside | implot.LegendFlags_.horizontal)
            if st.load:
                t = np.array([x[0] - (st.t0 or 0.0) for x in st.load])
                for i, name in ((1, "running"), (2, "queued")):
                    s = implot.Spec()
                    s.line_color = _vec(palette.TEXT[palette.draft(1)] if i == 1 else palette.TEXT[palette.VERIFY])
                    implot.plot_stairs(name, t, np.array([float(x[i]) for x in st.load]), s)
            implot.end_plot()
