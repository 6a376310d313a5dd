"""Speculative-decoding glue on the GPU: greedy acceptance and index-selected row copies
(shaders/spec.wgsl, shaders/copy_row.wgsl), so a whole round needs no host round trip."""
from __future__ import annotations

from ..gpu.program import ProgramBuilder, pack, records
from . import Act


@records("accept")
def accept(pb: ProgramBuilder, ids, *, n: int, tgt_off: int, draft_off: int, nvalid_off: int,
           eog_off: int, n_eog: int, res_off: int, next_off: int, step_off: int) -> None:
    """Greedy sample-and-match over one verify round of n drafts; all offsets are u32 words in
    `ids`. Result at res_off: [k, n_out, out...]; next id_last at next_off (twin:
    reference.spec.accept_greedy)."""
    pb.add("spec", [ids], pack(n, tgt_off, draft_off, nvalid_off, eog_off, n_eog, res_off, next_off, step_off),
           (1, 1, 1), entry="accept", label="accept")


@records("copy_row")
def copy_row(pb: ProgramBuilder, ids, idx_off: int, add: int, src: Act, stride: int, dst: Act, n: int, *,
             dst_idx_off: int | None = None) -> None:
    """dst[:n] = src row (ids[idx_off] + add); with dst_idx_off, into dst row ids[dst_idx_off]
    (rows of `stride` floats), so both ends can be chosen on the GPU (twin: reference.spec.copy_row)."""
    has = dst_idx_off is not None
    pb.add("copy_row", [ids, src.buffer, dst.buffer],
           pack(n, src.offset, stride, dst.offset, idx_off, int(add), dst_idx_off if has else 0, int(has)),
           -(-n // 256), label="copy_row")


@records("draft_gate")
def draft_gate(pb: ProgramBuilder, ids, p_top: Act, n: int, out_off: int, p_min: float, *, p_stride: int = 1) -> None:
    """ids[out_off] = count of leading drafts with top probability >= p_min, draft i's at
    p_top[i * p_stride] (twin: reference.spec.draft_gate)."""
    pb.add("spec", [ids, p_top.buffer], pack(n, out_off, p_top.offset, float(p_min), int(p_stride)), (1, 1, 1),
           entry="draft_gate", label="draft_gate")


@records("rerun_record")
def rerun_record(pb: ProgramBuilder, ids, *, res_off: int, tmpl_off: int, table_off: int, rec_off: int,
                 sub: int) -> None:
    """The segment record of a long round's rerun, from the accepted count at res_off: the kept
    rows of the sub-batch (of `sub` rows) holding the last kept row, from the plane that sub-batch
    started from (table_off + c), the rest as the template (twin: reference.spec.rerun_record)."""
    pb.add("spec", [ids], pack(res_off, tmpl_off, table_off, rec_off, sub), (1, 1, 1), entry="rerun_record",
           label="rerun_record")
