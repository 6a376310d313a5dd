"""Sampling helpers on the GPU: argmax (greedy token ids, shaders/argmax.wgsl) and top-k candidates
with the MTP draft p-min gate (shaders/topk.wgsl), per token row of a logits batch.

Both are two dispatches: many workgroups each reduce a chunk of the row into a small scratch
area, then one workgroup per token combines the chunks, so a 248320-wide row keeps the whole GPU
busy. Logits are ranked by (value desc, id asc), a total order: the result is exact (equal to the
numpy twin, not within a tolerance) and batch-invariant whatever order the reduction runs in. Only
ids (and the few candidate logits) are written; the host reads back token ids, never logits
(ARCHITECTURE.md, "GPU-resident hot loop").
"""
from __future__ import annotations

from ..gpu.program import ProgramBuilder, pack, records
from . import Act

WG = 256
ARGMAX_E = 8      # logits per thread in an argmax chunk (chunk 2048: 122 workgroups per row of 248320)
TOPK_E = 16       # logits per thread in a top-k chunk (chunk 4096: 61 workgroups per row of 248320)
TOPK_MAX = 64


def argmax_chunks(n_vocab: int) -> int:
    return -(-n_vocab // (WG * ARGMAX_E))


def topk_chunks(n_vocab: int) -> int:
    return -(-n_vocab // (WG * TOPK_E))


def argmax_scratch_words(n_vocab: int, max_tok: int) -> int:
    """u32 words of scratch argmax needs: a (key, id) pair per chunk per token."""
    return 2 * argmax_chunks(n_vocab) * max_tok


def topk_scratch_words(n_vocab: int, max_tok: int, k: int) -> int:
    """u32 words of scratch topk needs: k (key, id) pairs per chunk per token."""
    return 2 * topk_chunks(n_vocab) * k * max_tok


def _scratch(pb: ProgramBuilder, scratch: Act | None, words: int, label: str) -> Act:
    if scratch is not None:
        return scratch
    return Act(pb.ctx.buffer(4 * words, label=f"{label}_scratch"), 0)


@records("argmax")
def argmax(pb: ProgramBuilder, step: Act, logits: Act, ids: Act, n_vocab: int, max_tok: int, *,
           row_stride: int | None = None, scratch: Act | None = None, ids_stride: int = 1) -> None:
    """ids[t * ids_stride] = argmax of logits row t (u32; ties to the lowest id, NaN last, as
    topk; | sampling.NONFINITE_ID when the winner is not finite; twin: reference.ops.argmax): the
    greedy token, written where the next step's embedding
    reads it (strided: the draft row of each sequence of a batched round).
    `scratch`: argmax_scratch_words(n_vocab, max_tok) u32 words (allocated here when None)."""
    if n_vocab < 1:
        raise ValueError("argmax: empty rows")
    nc = argmax_chunks(n_vocab)
    scr = _scratch(pb, scratch, argmax_scratch_words(n_vocab, max_tok), "argmax")
    params = pack(n_vocab, logits.offset, row_stride or n_vocab, nc, step.offset, max_tok, scr.offset, ids.offset,
                  int(ids_stride))
    pb.add("argmax", [step.buffer, logits.buffer, scr.buffer], params, nc * max_tok,
           defines={"E": ARGMAX_E, "FINAL": False}, label="argmax_partial")
    pb.add("argmax", [step.buffer, scr.buffer, ids.buffer], params, max_tok,
           defines={"E": ARGMAX_E, "FINAL": True}, label="argmax_final")


@records("topk")
def topk(pb: ProgramBuilder, step: Act, logits: Act, ids: Act, vals: Act, k: int, n_vocab: int, max_tok: int, *,
         row_stride: int | None = None, scratch: Act | None = None, p_top: Act | None = None,
         n_soft: int = 10) -> None:
    """The k largest logits of each row, sorted descending, ties by lowest id (twin:
    reference.ops.topk): ids[t*k + j] (u32) and vals[t*k + j] (f32, the logits' exact bits), the
    candidates the host sampler finishes from. With `p_top`, also p_top[t] = probability of the
    first candidate under a softmax over the first n_soft (twin: sampling.softmax_top), the MTP
    draft p-min gate. `scratch`: topk_scratch_words(n_vocab, max_tok, k) u32 words (allocated
    here when None)."""
    if not 1 <= k <= min(TOPK_MAX, n_vocab):
        raise ValueError(f"topk: k={k} must be in 1..{min(TOPK_MAX, n_vocab)} (n_vocab {n_vocab})")
    if p_top is not None and not 1 <= n_soft <= k:
        raise ValueError(f"topk: n_soft={n_soft} must be in 1..k={k}")
    nc = topk_chunks(n_vocab)
    e2 = -(-nc * k // WG)
    scr = _scratch(pb, scratch, topk_scratch_words(n_vocab, max_tok, k), "topk")
    params = pack(n_vocab, logits.offset, row_stride or n_vocab, nc, step.offset, max_tok, scr.offset, k,
                  ids.offset, vals.offset, p_top.offset if p_top is not None else 0, n_soft)
    pb.add("topk", [step.buffer, logits.buffer, scr.buffer], params, nc * max_tok,
           defines={"E": TOPK_E, "FINAL": False}, label="topk_partial")
    bufs = [step.buffer, logits.buffer, scr.buffer, ids.buffer, vals.buffer]
    if p_top is not None:
        bufs.append(p_top.buffer)
    pb.add("topk", bufs, params, max_tok, defines={"E2": e2, "FINAL": True, "PTOP": p_top is not None},
           label="topk_final")
