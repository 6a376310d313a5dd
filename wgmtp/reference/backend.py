"""The numpy reference as an engine backend (`device="cpu"`): the control a user compares the
GPU against, and the speculative loop of reference section 4.5 written out plainly."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..sampling import NONFINITE_ID, Sampler, softmax_top
from ..speculative import accept
from . import ops
from .model import RefModel, RefState

if TYPE_CHECKING:     # the file's type only: the reference never imports the GPU side
    from ..models.qwen35 import GGUFModel

f32 = np.float32


class RefBackend:
    """Runs the trunk and MTP head through `RefModel`, one sequence."""

    def __init__(self, gm: GGUFModel, *, kv_f16: bool = False) -> None:
        self.gm = gm
        self.model = RefModel(gm, kv_f16=kv_f16)
        self.cfg = gm.config
        self.has_mtp = gm.has_mtp
        self.st: RefState | None = None
        self.mtp = False
        self.pending_h = np.zeros(self.cfg.n_embd, f32)
        self.last_round: dict = {}
        self.pending_fed = False     # the reference never runs ahead
        self.timing: dict = {}       # no GPU parts to time

    @property
    def n_past(self) -> int:
        return 0 if self.st is None else self.st.n_past

    def reset(self, n_ctx: int, n_max: int, mtp: bool, eog: set[int] = frozenset()) -> None:
        self.st = self.model.new_state(n_ctx, n_slots=n_max + 1)
        self.mtp = mtp
        self.pending_h = np.zeros(self.cfg.n_embd, f32)

    @staticmethod
    def candidates(logits: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        return ops.topk(logits, n)

    def _feed(self, tokens: list[int]) -> np.ndarray:
        """Trunk over tokens; with MTP on, also fill the MTP KV for the same positions."""
        pos0 = self.st.n_past
        lg, H = self.model.forward(self.st, tokens)
        if self.mtp:
            h_in = np.concatenate([self.pending_h[None], H[:-1]], axis=0)
            self.model.mtp_forward(self.st, tokens, h_in, pos0, logits=False)
            self.pending_h = H[-1].copy()
        return lg

    def prefill(self, tokens: list[int], n_cand: int):
        return self.candidates(self._feed(tokens)[-1], n_cand)

    def decode(self, token: int, n_cand: int):
        return self.candidates(self._feed([token])[-1], n_cand)

    def draft(self, id_last: int, n_max: int, p_min: float, vocab: int = 0) -> list[int]:
        """Greedy MTP chain from (id_last, pending_h); writes draft-time MTP KV (overwritten later).
        `vocab` > 0: drafts (and the p-min gate's softmax) over token ids < vocab only. Tests
        replace the drafter by overriding this method (any drafts must stay lossless)."""
        st, drafts = self.st, []
        tok, h, p = id_last, self.pending_h, st.n_past
        for _ in range(n_max):
            lg, h_out = self.model.mtp_forward(st, [tok], h[None], p)
            row = lg[0][:vocab] if vocab else lg[0]
            d = ops.argmax(row)
            if d & NONFINITE_ID:        # no finite draft: the chain ends (the GPU's would draft junk)
                break
            if p_min > 0 and softmax_top(row, 10) < p_min:
                break
            drafts.append(d)
            tok, h, p = d, h_out[0], p + 1
        return drafts

    def spec_round(self, id_last: int, n_max: int, p_min: float, sampler: Sampler, is_eog, max_emit: int, *,
                   draft_vocab: int = 0):
        st = self.st
        pos0 = st.n_past
        drafts = list(self.draft(id_last, n_max, p_min, draft_vocab))[:n_max] if n_max > 0 else []
        batch = [id_last] + drafts
        n = len(drafts)
        lg, H = self.model.forward(st, batch)
        n_cand = 1 if sampler.params.greedy else sampler.params.n_candidates
        out = accept(drafts, lambda i: sampler.pick(*ops.topk(lg[i], n_cand)), is_eog, max_emit)
        k = len(out) - 1
        if n - k:
            st.rollback(n - k)
        h_in = np.concatenate([self.pending_h[None], H[:k]], axis=0)
        self.model.mtp_forward(st, batch[:k + 1], h_in, pos0, logits=False)
        self.pending_h = H[k].copy()
        self.last_round = {"drafts": drafts, "k": k, "pos0": pos0}
        return out, n

    def logits(self, tokens: list[int]) -> np.ndarray:
        st = self.model.new_state(len(tokens) + 1, 1)
        lg, _ = self.model.forward(st, tokens)
        return lg
