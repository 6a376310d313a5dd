"""Token ids -> the text a response shows, as it streams.

Text is decoded incrementally and only as whole UTF-8 characters (tokenizer.StreamDecoder, control
tokens such as <|im_end|> left out, as `wgmtp run` prints them). Stop strings are found across token
boundaries: text that could still become the start of a stop string is held back until the next
token decides it, and on a match the text ends where the stop string begins.

Logprobs: the GPU reads back the top TOPK_MAX (64) candidates of each row, so a token's logprob is
a log-softmax over those 64 logits only, not over the whole vocabulary. For a peaked distribution
the difference is tiny; for a flat one the values are too high (the tail's mass is missing).
"""
from __future__ import annotations

import numpy as np

from ..tokenizer import Tokenizer


class TextStream:
    """One response's text: `push(ids)` returns the newly releasable text; `finish()` the rest."""

    def __init__(self, tok: Tokenizer, stops: list[str]) -> None:
        self.tok = tok
        self.stops = [s for s in stops if s]
        self.dec = tok.stream_decoder(skip_special=True)
        self.text = ""
        self.sent = 0                    # characters of `text` released
        self.offsets: list[int] = []     # where each pushed token's text starts in `text`
        self.stop_word: str | None = None

    @property
    def stopped(self) -> bool:
        return self.stop_word is not None

    def _find_stop(self, start: int) -> None:
        best = None
        for s in self.stops:
            i = self.text.find(s, start)
            if i >= 0 and (best is None or i < best[0]):
                best = (i, s)
        if best is not None:
            self.text = self.text[: best[0]]
            self.stop_word = best[1]

    def _held(self) -> int:
        """Characters at the end of the text that may begin a stop string."""
        h = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(self.text)), h, -1):
                if self.text.endswith(s[:k]):
                    h = k
                    break
        return h

    def push(self, ids: list[int]) -> str:
        """Feed tokens; tokens after a stop string are ignored."""
        longest = max((len(s) for s in self.stops), default=0)
        for t in ids:
            if self.stopped:
                break
            before = len(self.text)
            self.offsets.append(before)
            self.text += self.dec.push(t)
            if self.stops:
                self._find_stop(max(0, before - longest + 1))
        return self._release(final=False)

    def finish(self) -> str:
        if not self.stopped:
            before = len(self.text)
            self.text += self.dec.flush()
            if self.stops:
                self._find_stop(max(0, before - max(len(s) for s in self.stops) + 1))
        return self._release(final=True)

    def _release(self, final: bool) -> str:
        end = len(self.text) if final or self.stopped else len(self.text) - self._held()
        out = self.text[self.sent: end]
        self.sent = max(self.sent, end)
        return out

    def n_shown(self, final: bool = False) -> int:
        """Tokens whose text has started in what was released (all of them at the end without a stop)."""
        if final and not self.stopped:
            return len(self.offsets)
        return sum(1 for o in self.offsets if o < self.sent)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    x = np.asarray(logits, np.float64)
    x = x - x.max()
    return x - np.log(np.exp(x).sum())


class Logprobs:
    """OpenAI logprobs of emitted tokens from their candidates (a softmax over the top 64 only)."""

    def __init__(self, tok: Tokenizer, top: int) -> None:
        self.tok, self.top = tok, top

    def _piece(self, t: int) -> tuple[str, list[int]]:
        b = self.tok.token_bytes(int(t))
        return b.decode("utf-8", "replace"), list(b)

    def _entry(self, t: int, cand: tuple[np.ndarray, np.ndarray]) -> tuple[float, list[tuple[int, float]]]:
        ids, lg = cand
        lp = log_softmax(lg)
        hit = np.nonzero(np.asarray(ids) == t)[0]
        own = float(lp[hit[0]]) if len(hit) else float("-inf")     # never: the pick is a candidate
        return own, [(int(ids[i]), float(lp[i])) for i in range(min(self.top, len(ids)))]

    def chat(self, ids: list[int], cands: list) -> list[dict]:
        out = []
        for t, c in zip(ids, cands):
            own, top = self._entry(t, c)
            s, b = self._piece(t)
            out.append({"token": s, "logprob": own, "bytes": b,
                        "top_logprobs": [dict(zip(("token", "bytes"), self._piece(i)), logprob=v) for i, v in top]})
        return out

    def completion(self, ids: list[int], cands: list, offsets: list[int]) -> dict:
        toks, lps, tops = [], [], []
        for t, c in zip(ids, cands):
            own, top = self._entry(t, c)
            toks.append(self._piece(t)[0])
            lps.append(own)
            tops.append({self._piece(i)[0]: v for i, v in top})
        return {"tokens": toks, "token_logprobs": lps, "top_logprobs": tops, "text_offset": list(offsets)}
