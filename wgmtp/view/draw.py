"""One frame of the live view in Dear ImGui (imgui-bundle) and ImPlot: the header, the text panel
with every token coloured by how it came, the legend, and the statistics panel. The same function
draws the window and the offscreen PNG; it reads ViewState and never touches the engine.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from imgui_bundle import imgui, implot

from . import palette
from .info import RunInfo
from .layout import Layout
from .state import ROLL, ViewState
from .tap import Profiler

BAR_GAP, BAR_H = 1.0, 2.0       # the underline: this far below the glyphs, this tall
LINE_GAP = 5.0                  # extra height of a text line (room for the underline)
RECENT = 48                     # rounds in the time-split plot
GREY = (0.62, 0.62, 0.62, 1.0)
ROOT_FLAGS = (imgui.WindowFlags_.no_decoration | imgui.WindowFlags_.no_move | imgui.WindowFlags_.no_background
              | imgui.WindowFlags_.no_saved_settings | imgui.WindowFlags_.no_bring_to_front_on_focus)
SPLIT = {"draft": (0.27, 0.75, 0.85, 1.0), "verify": (0.95, 0.55, 0.2, 1.0), "other": (0.5, 0.5, 0.5, 1.0)}


def _vec(rgb: palette.RGB, a: float = 1.0) -> imgui.ImVec4:
    return imgui.ImVec4(rgb[0] / 255, rgb[1] / 255, rgb[2] / 255, a)


@dataclass
class TextPanel:
    """One scrolling panel of coloured text (a ViewState's items), laid out incrementally."""
    follow: bool = True                 # keep the newest text in sight
    layout: Layout | None = None
    area: tuple[int, int, int, int] = (0, 0, 0, 0)     # its pixels (x0, y0, x1, y1) in the last frame
    _seen: int = 0

    def draw(self, st: ViewState, width: float, height: float, show_rejected: bool, name: str = "text") -> None:
        imgui.begin_child(name, imgui.ImVec2(width, height), imgui.ChildFlags_.borders)
        wp, ws = imgui.get_window_pos(), imgui.get_window_size()
        self.area = (int(wp.x), int(wp.y), int(wp.x + ws.x), int(wp.y + ws.y))
        font_h = imgui.get_font_size()
        if self.layout is None:
            self.layout = Layout(lambda s: imgui.calc_text_size(s).x, font_h + LINE_GAP)
        lay = self.layout
        at_bottom = imgui.get_scroll_y() >= imgui.get_scroll_max_y() - 1
        lay.update(st.items, max(50.0, imgui.get_content_region_avail().x))
        origin = imgui.get_cursor_screen_pos()
        top = imgui.get_scroll_y()
        dl = imgui.get_window_draw_list()
        for r in lay.visible(top - lay.line_h, top + ws.y + lay.line_h):
            it = st.items[r.item]
            x, y = origin.x + r.x, origin.y + r.y
            if it.cls == palette.REJECTED:
                if not show_rejected:
                    continue
                col = palette.u32(palette.TEXT[it.cls])
                dl.add_text(imgui.ImVec2(x, y), col, r.text)
                dl.add_line(imgui.ImVec2(x, y + font_h * 0.55), imgui.ImVec2(x + r.w, y + font_h * 0.55), col)
                continue
            dl.add_text(imgui.ImVec2(x, y), palette.u32(palette.TEXT[it.cls]), r.text)
            if it.cls != palette.PROMPT:
                y0 = y + font_h + BAR_GAP
                dl.add_rect_filled(imgui.ImVec2(x, y0), imgui.ImVec2(x + r.w, y0 + BAR_H),
                                   palette.u32(palette.bar(it.cls)))
        imgui.dummy(imgui.ImVec2(lay.width, lay.height))
        if self.follow and at_bottom and len(st.items) != self._seen:
            imgui.set_scroll_here_y(1.0)
        self._seen = len(st.items)
        imgui.end_child()


def header(info: RunInfo, title: str = "wgmtp live view") -> None:
    imgui.text_colored(_vec(palette.TEXT[palette.PLAIN]), title)
    imgui.same_line()
    imgui.text_colored(imgui.ImVec4(*GREY), f"  model {info.model}")
    imgui.text_colored(imgui.ImVec4(*GREY), f"adapter {info.adapter}   |   {info.settings}   |   "
                                             f"kill switches: {info.kill_switches}")
    imgui.separator()


def legend_row(classes: set[str], drafted: bool, width: float) -> None:
    """The classes present, wrapped at `width`."""
    present = palette.legend(classes) or [palette.PLAIN]
    if drafted:
        present.append(palette.REJECTED)
    x0 = imgui.get_cursor_pos_x()
    for i, c in enumerate(present):
        label = palette.legend_label(c)
        if i and imgui.get_cursor_pos_x() + imgui.calc_text_size(label).x > x0 + width:
            imgui.new_line()
        imgui.text_colored(_vec(palette.TEXT[c]), label)
        imgui.same_line(0, 14)
    imgui.new_line()


def per_position_plot(per: list[float], width: float, h: float) -> None:
    """Acceptance per draft position, one bar each in its position's colour."""
    if implot.begin_plot("acceptance per draft position", imgui.ImVec2(width, h),
                         implot.Flags_.no_legend | implot.Flags_.no_menus | implot.Flags_.no_inputs):
        n = max(1, len(per))
        implot.setup_axes("position", "", 0, 0)
        implot.setup_axis_limits(implot.ImAxis_.x1, 0.4, n + 0.6, imgui.Cond_.always)
        implot.setup_axis_limits(implot.ImAxis_.y1, 0.0, 1.0, imgui.Cond_.always)
        for i, v in enumerate(per):
            s = implot.Spec()
            s.fill_color = _vec(palette.TEXT[palette.draft(i + 1)])
            s.line_color = s.fill_color
            implot.plot_bars(f"pos {i + 1}", np.array([i + 1.0]), np.array([v]), 0.6, s)
        implot.end_plot()


def profile_button(prof: Profiler | None) -> None:
    """'profile a step (p)': ask for the next step's per-kernel times (the key p does the same)."""
    if prof is None:
        return
    if imgui.button("profile a step (p)") or (imgui.is_key_pressed(imgui.Key.p) and not imgui.get_io().want_text_input):
        prof.ask()
    imgui.same_line()
    imgui.text_colored(imgui.ImVec4(*GREY), prof.status())


def profile_window(prof: Profiler | None) -> None:
    """The last profiled step's GPU time by kernel (tools/profile_step.py's table), in a window of its own."""
    if prof is None or prof.result is None or not prof.shown:
        return
    res = prof.result
    imgui.set_next_window_size(imgui.ImVec2(480, 0), imgui.Cond_.first_use_ever)
    imgui.set_next_window_pos(imgui.ImVec2(20, imgui.get_io().display_size.y * 0.4), imgui.Cond_.first_use_ever)
    opened, prof.shown = imgui.begin("per-kernel GPU time of one step", prof.shown)
    if opened:
        imgui.text(f"{res.dispatches} dispatches, {res.total_s * 1e3:.2f} ms GPU, one pass each (shares, not sums)")
        imgui.text_colored(imgui.ImVec4(*GREY), "programs: " + ", ".join(res.programs))
        flags = imgui.TableFlags_.borders_inner_h | imgui.TableFlags_.row_bg
        if imgui.begin_table("kernels", 4, flags):
            for name in ("kernel", "ms", "share", "dispatches"):
                imgui.table_setup_column(name)
            imgui.table_headers_row()
            for kernel, sec, n in res.kernels:
                imgui.table_next_row()
                for col, txt in enumerate((kernel, f"{sec * 1e3:.3f}", f"{100 * sec / res.total_s:.1f}%"
                                           if res.total_s else "-", str(n))):
                    imgui.table_set_column_index(col)
                    imgui.text(txt)
            imgui.end_table()
    imgui.end()


@dataclass
class Frame:
    """The drawing state kept between frames, and what the last frame measured."""
    state: ViewState
    info: RunInfo
    show_rejected: bool = True
    panel: TextPanel = field(default_factory=TextPanel)
    profiler: Profiler | None = None

    @property
    def text_area(self) -> tuple[int, int, int, int]:
        """The text panel's pixels (x0, y0, x1, y1)."""
        return self.panel.area

    def draw(self) -> None:
        """Build the whole frame (called between imgui.new_frame and imgui.render)."""
        io = imgui.get_io()
        W, H = io.display_size.x, io.display_size.y
        imgui.set_next_window_pos(imgui.ImVec2(0, 0))
        imgui.set_next_window_size(imgui.ImVec2(W, H))
        imgui.begin("wgmtp view", None, ROOT_FLAGS)
        header(self.info)
        avail = imgui.get_content_region_avail()
        left = max(200.0, avail.x * 0.6)
        imgui.begin_group()
        self.panel.draw(self.state, left, avail.y - 3 * imgui.get_frame_height_with_spacing(), self.show_rejected)
        self._legend_row(left)
        imgui.end_group()
        style = imgui.get_style()
        imgui.same_line(style.window_padding.x + left + style.item_spacing.x)     # the panel's column, fixed
        imgui.begin_group()
        self._stats_panel(avail.x - left - style.item_spacing.x, avail.y)
        imgui.end_group()
        imgui.end()
        profile_window(self.profiler)

    def _legend_row(self, width: float) -> None:
        legend_row(self.state.classes, bool(self.state.spec.drafted), width)
        _, self.show_rejected = imgui.checkbox("rejected drafts", self.show_rejected)
        imgui.same_line()
        _, self.panel.follow = imgui.checkbox("follow", self.panel.follow)
        imgui.same_line()
        profile_button(self.profiler)

    # ---- the numbers

    def _stats_panel(self, width: float, height: float) -> None:
        st = self.state
        imgui.text(f"tokens {st.gen_tokens}   {st.tok_s:.1f} tok/s   steps {st.steps}")
        sp = st.spec
        if sp.verify_rounds:
            imgui.text(f"acceptance {sp.acceptance:.3f} ({sp.accepted}/{sp.drafted})   "
                       f"mean accepted length {sp.mean_accepted_len:.2f}")
            imgui.text(f"verify rounds {sp.verify_rounds}   drafts per round {sp.drafted / sp.verify_rounds:.2f}")
        else:
            imgui.text("no drafts (plain decoding)")
        h = (height - 4 * imgui.get_text_line_height_with_spacing()) / 3 - imgui.get_style().item_spacing.y
        self._per_position(width, h)
        self._rolling(width, h)
        self._times(width, h)

    def _per_position(self, width: float, h: float) -> None:
        per_position_plot(self.state.spec.acceptance_per_pos, width, h)

    def _rolling(self, width: float, h: float) -> None:
        st = self.state
        xs, ys = st.rolling_tok_s()
        ax, ay = st.rolling_acceptance()
        if implot.begin_plot(f"tok/s and acceptance, rolling over {ROLL} steps", imgui.ImVec2(width, h),
                             implot.Flags_.no_menus | implot.Flags_.no_inputs):
            implot.setup_axes("tokens", "tok/s", implot.AxisFlags_.auto_fit, implot.AxisFlags_.auto_fit)
            implot.setup_axis(implot.ImAxis_.y2, "acceptance", implot.AxisFlags_.opposite)
            implot.setup_axis_limits(implot.ImAxis_.y2, 0.0, 1.0, imgui.Cond_.always)
            implot.setup_legend(implot.Location_.south, implot.LegendFlags_.outside | implot.LegendFlags_.horizontal)
            if xs:
                implot.plot_line("tok/s", np.array(xs), np.array(ys))
            if ax:
                implot.set_axes(implot.ImAxis_.x1, implot.ImAxis_.y2)
                implot.plot_line("acceptance", np.array(ax), np.array(ay))
            implot.end_plot()

    def _times(self, width: float, h: float) -> None:
        st = self.state
        rec = st.times[-RECENT:]
        split = st.gpu_measured
        title = "GPU time per step: draft / verify / other (ms)" if split else "wall time per step (ms)"
        if implot.begin_plot(title, imgui.ImVec2(width, h - imgui.get_text_line_height_with_spacing()),
                             implot.Flags_.no_menus | implot.Flags_.no_inputs):
            implot.setup_axes("step", "ms", implot.AxisFlags_.auto_fit, implot.AxisFlags_.auto_fit)
            implot.setup_legend(implot.Location_.south, implot.LegendFlags_.outside | implot.LegendFlags_.horizontal)
            if rec:
                x = np.array([float(t.step) for t in rec])
                wall = np.array([t.wall_s * 1e3 for t in rec])
                if split:
                    d = np.array([(t.draft_s or 0.0) * 1e3 for t in rec])
                    v = np.array([(t.verify_s or 0.0) * 1e3 for t in rec])
                    stacks = [("other", np.maximum(wall, d + v)), ("verify", d + v), ("draft", d)]
                else:
                    stacks = [("other", wall)]
                for name, ys in stacks:     # tallest first: each bar covers the part below it
                    s = implot.Spec()
                    s.fill_color = imgui.ImVec4(*SPLIT[name])
                    s.line_color = s.fill_color
                    implot.plot_bars(name if split else "wall", x, ys, 0.7, s)
            implot.end_plot()
        tot = st.totals()
        if "draft_s" in tot:
            imgui.text(f"total: draft {tot['draft_s'] * 1e3:.0f} ms, verify {tot['verify_s'] * 1e3:.0f} ms, "
                       f"other {tot['other_s'] * 1e3:.0f} ms")
        else:
            imgui.push_style_color(imgui.Col_.text, imgui.ImVec4(*GREY))
            imgui.text_wrapped(f"no GPU split: {self.info.gpu_timing}")
            imgui.pop_style_color()
