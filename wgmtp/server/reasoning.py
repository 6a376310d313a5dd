"""The reasoning split (llama-server's `--reasoning-format deepseek`): a reply's `<think> ...
</think>` block goes to `reasoning_content`, the rest to `content`, streaming included.

Qwen3-family templates either let the model open the block itself (Qwen3: the reply starts with
`<think>`) or open it in the prompt (the generation prompt ends with `<think>\\n`, and the reply
holds only the thought's end `</think>`); with thinking off they close an empty block in the
prompt. `ReasoningSplit(in_thought=prompt_opens_thought(prompt))` handles all three. The thought is
stripped of surrounding whitespace and the content of leading whitespace, the same way whether
streamed or not (text that may be the start of `</think>`, or whitespace before it, is held back).
"""
from __future__ import annotations

OPEN, CLOSE = "<think>", "</think>"


def prompt_opens_thought(prompt: str) -> bool:
    """The rendered prompt ends inside an open <think> block (the model continues the thought)."""
    return prompt.rstrip().endswith(OPEN)


def _partial_suffix(text: str, word: str) -> int:
    """Length of the longest end of `text` that is a proper beginning of `word`."""
    for k in range(min(len(word) - 1, len(text)), 0, -1):
        if text.endswith(word[:k]):
            return k
    return 0


class ReasoningSplit:
    """push(text) -> (reasoning delta, content delta); flush() at the end."""

    def __init__(self, in_thought: bool) -> None:
        self.state = "think" if in_thought else "start"
        self.buf = ""
        self.fresh = True        # at the start of the current section: leading whitespace is dropped

    def push(self, text: str) -> tuple[str, str]:
        self.buf += text
        r, c = [], []
        while True:
            if self.state == "start":
                s = self.buf.lstrip()
                if s.startswith(OPEN):
                    self.buf, self.state, self.fresh = s[len(OPEN):], "think", True
                    continue
                if OPEN.startswith(s):         # still may open a thought (or nothing yet)
                    break
                self.state = "content"
                continue
            if self.state == "think":
                if self.fresh:
                    self.buf = self.buf.lstrip()
                    self.fresh = not self.buf
                i = self.buf.find(CLOSE)
                if i >= 0:
                    r.append(self.buf[:i].rstrip())
                    self.buf, self.state, self.fresh = self.buf[i + len(CLOSE):], "content", True
                    continue
                keep = len(self.buf) - _partial_suffix(self.buf, CLOSE)
                e = len(self.buf[:keep].rstrip())
                r.append(self.buf[:e])
                self.buf = self.buf[e:]
                break
            # content
            if self.fresh:
                self.buf = self.buf.lstrip()
                self.fresh = not self.buf
            c.append(self.buf)
            self.buf = ""
            break
        return "".join(r), "".join(c)

    def flush(self) -> tuple[str, str]:
        b, self.buf = self.buf, ""
        if self.state == "think":
            return b.strip(), ""
        return "", b.lstrip() if self.fresh else b
