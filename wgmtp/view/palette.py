"""How a token came, as a class name and a colour (the live view's legend, its colour map, and the
tests that count pixels all read this one table).

Every class has two exact colours: its text, and the bar drawn under each of its tokens. The bar is
a solid rectangle as wide as the token's text, so the pixels of a bar colour in a frame are
proportional to the characters of that class (the font is monospaced), whatever the glyphs are.
"""
from __future__ import annotations

import colorsys

RGB = tuple[int, int, int]

PLAIN = "plain"          # plain decoding (and the first token, sampled from the prompt's logits)
VERIFY = "verify"        # the verify's own token after a rejected draft
BONUS = "bonus"          # the verify's own token after every draft was kept
REJECTED = "rejected"    # a rejected draft: shown faintly, never part of the text
PROMPT = "prompt"        # the prompt, and the break between two generations
DRAFT_POSITIONS = 64     # more than any round drafts (MTP 15, a long round of n-gram drafts 48); later ones share


def draft(pos: int) -> str:
    """The class of an accepted draft at position `pos` (1-based) of its round."""
    return f"draft{min(pos, DRAFT_POSITIONS)}"


def _shade(pos: int) -> RGB:
    """Accepted drafts: green at position 1, then cyan, blue, violet and on through pink, one exact
    colour each (the first positions, the common ones, far apart)."""
    hue = (125, 178, 212, 255, 285)[pos - 1] if pos <= 5 else 290 + 70 * (pos - 6) / (DRAFT_POSITIONS - 6)
    r, g, b = colorsys.hls_to_rgb(hue / 360, 0.62 + (0.08 * (pos % 2) if pos > 5 else 0.0), 0.75)
    return round(r * 255), round(g * 255), round(b * 255)


TEXT: dict[str, RGB] = {
    PROMPT: (128, 128, 128),
    PLAIN: (236, 236, 236),
    VERIFY: (255, 150, 40),
    BONUS: (255, 226, 80),
    REJECTED: (150, 72, 80),
    **{draft(i): _shade(i) for i in range(1, DRAFT_POSITIONS + 1)},
}

# the generated classes, in legend order
GENERATED = (PLAIN, *(draft(i) for i in range(1, DRAFT_POSITIONS + 1)), VERIFY, BONUS)


def bar(cls: str) -> RGB:
    """The underline colour of a class: its text colour at 55%, so no glyph pixel takes it."""
    r, g, b = TEXT[cls]
    return round(r * 0.55), round(g * 0.55), round(b * 0.55)


def u32(rgb: RGB, alpha: int = 255) -> int:
    """ImGui's packed colour (IM_COL32: ABGR in a little-endian u32)."""
    r, g, b = rgb
    return (alpha << 24) | (b << 16) | (g << 8) | r


def legend(present: set[str]) -> list[str]:
    """The classes a legend names, in order: those present, with a long run of draft positions cut to
    its first four and its last."""
    drafts = [c for c in GENERATED if c.startswith("draft") and c in present]
    if len(drafts) > 6:
        drafts = drafts[:4] + drafts[-1:]
    return ([PLAIN] if PLAIN in present else []) + drafts + [c for c in (VERIFY, BONUS) if c in present]


def legend_label(cls: str) -> str:
    if cls.startswith("draft"):
        return f"draft {cls[5:]}"
    return {PLAIN: "plain", VERIFY: "verify (after a rejection)", BONUS: "bonus (all drafts kept)",
            REJECTED: "rejected draft", PROMPT: "prompt"}[cls]
