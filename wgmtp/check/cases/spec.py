"""The spec cases (kernels/spec.py): greedy acceptance of verify rounds, copy_row, draft_gate."""
from __future__ import annotations

import numpy as np

from ...gpu.program import Readback
from ...kernels import Act
from ...kernels import spec as spec_kernels
from ...reference import spec as spec_twins
from ...sampling import NONFINITE_ID
from .common import (
    Case,
    Check,
    read_f32,
    require,  # noqa: F401  (tests/test_kernel_spec.py runs the cases with it)
    run,
)

f32 = np.float32


def accept_round(case: int) -> tuple[np.ndarray, tuple]:
    """Verify round `case` (drafts matching 70 %, EOG ids, token budgets, flagged targets): the 64 words of its id
    buffer ([step 4] [targets n+1] ... [id_last + drafts] ... [n_valid] [eog] ... [result]) and its
    layout (n, targets, drafts, n_valid, eog, max_emit)."""
    rng = np.random.default_rng(case)
    n = int(rng.integers(0, 8))
    tgt = rng.integers(0, 5, n + 1).astype(np.uint32)
    drafts = np.where(rng.random(n) < 0.7, tgt[:n], rng.integers(0, 5, n)).astype(np.uint32)
    if case % 5 == 2:           # a target with no finite logit (flagged), even matched by its draft: ends the round
        i = int(rng.integers(0, n + 1))
        tgt[i] |= np.uint32(NONFINITE_ID)
        if i < n:
            drafts[i] = tgt[i]
    n_valid = int(rng.integers(0, n + 1))
    eog = {4} if case % 3 == 0 else set()
    max_emit = int(rng.integers(0, 4)) if case % 4 == 0 else 0
    words = np.zeros(64, np.uint32)
    words[3] = max_emit
    words[4:4 + n + 1] = tgt
    words[20] = 99
    words[21:21 + n] = drafts
    words[30] = n_valid
    words[31] = 4
    return words, (n, tgt, drafts, n_valid, eog, max_emit)


def accept_dispatch(pb, buf, layout: tuple) -> None:
    """spec_kernels.accept on an id buffer laid out by accept_round."""
    n, eog = layout[0], layout[4]
    spec_kernels.accept(pb, buf, n=n, tgt_off=4, draft_off=21, nvalid_off=30, eog_off=31, n_eog=len(eog), res_off=40,
               next_off=20, step_off=0)


def accept_result(out: np.ndarray, layout: tuple) -> tuple[list[int], list[int]]:
    """(got, want): [accepted drafts, emitted count, emitted ids..., next id] from the buffer after
    accept_dispatch and from reference.spec.accept_greedy."""
    _, tgt, drafts, n_valid, eog, max_emit = layout
    expect = spec_twins.accept_greedy(tgt, drafts, n_valid, eog, max_emit)
    got = [int(out[40]), int(out[41])] + [int(x) for x in out[42:42 + len(expect)]] + [int(out[20])]
    return got, [len(expect) - 1, len(expect)] + expect + [expect[-1]]


def accept_case(ctx, chk: Check) -> None:
    """40 random verify rounds (accept_round) in one program, each on its own id buffer, against
    reference.spec.accept_greedy."""
    rounds = [accept_round(case) for case in range(40)]
    bufs = [ctx.upload(words) for words, _ in rounds]
    blobs = run(ctx, lambda pb: [accept_dispatch(pb, b, lay) for b, (_, lay) in zip(bufs, rounds)],
                reads=[Readback(b, 0, 256) for b in bufs])
    for i, (blob, (_, lay)) in enumerate(zip(blobs, rounds)):
        got, want = accept_result(np.frombuffer(blob, np.uint32), lay)
        chk.equal(f"round {i} (n={lay[0]}, n_valid={lay[3]})", np.array(got), np.array(want))


def copy_row_case(ctx, chk: Check) -> None:
    src = np.random.default_rng(0).standard_normal((5, 300)).astype(f32)
    ids = ctx.upload(np.array([0, 3, 0, 0], np.uint32))
    S = ctx.upload(src)
    D = ctx.buffer(301 * 4)
    run(ctx, lambda pb: spec_kernels.copy_row(pb, ids, 1, -1, Act(S), 300, Act(D, 1), 300))
    chk.equal("copy_row", read_f32(ctx, D, 300, 1), spec_twins.copy_row(src, 2), bits=True)
    # both ends chosen on the GPU: source row ids[1] + 1, destination row ids[2] of 4; other rows untouched
    ids2 = ctx.upload(np.array([0, 1, 3, 0], np.uint32))
    D2 = ctx.upload(np.full((4, 300), -7.0, f32))
    run(ctx, lambda pb: spec_kernels.copy_row(pb, ids2, 1, 1, Act(S), 300, Act(D2), 300, dst_idx_off=2))
    want = np.full((4, 300), -7.0, f32)
    want[3] = spec_twins.copy_row(src, 2)
    chk.equal("copy_row into a GPU-chosen row", read_f32(ctx, D2, 1200).reshape(4, 300), want, bits=True)


def draft_gate_case(ctx, chk: Check, mins: tuple[float, ...] = (0.0, 0.3, 0.9)) -> None:
    p = np.array([0.95, 0.5, 0.31, 0.2, 0.99], f32)
    ids = [ctx.upload(np.zeros(8, np.uint32)) for _ in mins]
    P = ctx.upload(np.concatenate([[7.0], p]).astype(f32))
    blobs = run(ctx, lambda pb: [spec_kernels.draft_gate(pb, b, Act(P, 1), 5, 3, m) for b, m in zip(ids, mins)],
                reads=[Readback(b, 0, 32) for b in ids])
    got = np.array([int(np.frombuffer(b, np.uint32)[3]) for b in blobs])
    chk.equal(f"drafts passing p_min {', '.join(f'{m:g}' for m in mins)}", got,
              np.array([spec_twins.draft_gate(p, m) for m in mins]))
    # strided: the drafts of one sequence among 3 in a batched round (p_top[i * 3 + 1])
    grid = np.random.default_rng(1).uniform(0, 1, (5, 3)).astype(f32)
    grid[:, 1] = p
    P3 = ctx.upload(grid.reshape(-1))
    blobs = run(ctx, lambda pb: [spec_kernels.draft_gate(pb, b, Act(P3, 1), 5, 3, m, p_stride=3)
                                 for b, m in zip(ids, mins)], reads=[Readback(b, 0, 32) for b in ids])
    got = np.array([int(np.frombuffer(b, np.uint32)[3]) for b in blobs])
    chk.equal("strided p_top", got, np.array([spec_twins.draft_gate(p, m) for m in mins]))


def rerun_record_case(ctx, chk: Check, sub: int = 16) -> None:
    """Every accepted count k of a 48-draft round (4 sub-batches of 16 rows): the rerun record
    against reference.spec.rerun_record, each on its own id buffer."""
    tmpl = np.array([99, 1234, 7, 5, 3, 88, 11, 12], np.uint32)
    table = np.array([2 | 2 << 16, 3 | 2 << 16 | 1 << 20, 4 | 2 << 16 | 2 << 20, 1 | 2 << 16], np.uint32)
    bufs = []
    for k in range(49):
        w = np.zeros(32, np.uint32)
        w[0], w[4:12], w[12:16] = k, tmpl, table
        bufs.append(ctx.upload(w))
    blobs = run(ctx, lambda pb: [spec_kernels.rerun_record(pb, b, res_off=0, tmpl_off=4, table_off=12, rec_off=20,
                                                           sub=sub) for b in bufs],
                reads=[Readback(b, 0, 128) for b in bufs])
    got = np.stack([np.frombuffer(b, np.uint32)[20:28] for b in blobs])
    want = np.stack([spec_twins.rerun_record(k, tmpl, table, sub) for k in range(49)])
    chk.equal("rerun records k = 0..48", got, want)


def cases() -> list[Case]:
    """The spec cases, in the order they run."""
    out: list[Case] = []
    out.append(Case("spec", "accept 40 rounds", accept_case, op="accept"))
    out.append(Case("spec", "copy_row", copy_row_case, op="copy_row"))
    out.append(Case("spec", "draft_gate p_min 0/0.3/0.9", draft_gate_case, op="draft_gate"))
    out.append(Case("spec", "rerun_record k = 0..48", rerun_record_case, op="rerun_record"))
    return out
