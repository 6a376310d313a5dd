"""The MoE FFN of qwen35moe (reference 3.7) on the GPU: routing with the batch's expert work list
(shaders/moe_route.wgsl), the routed experts' mat-vecs (shaders/moe.wgsl), their SwiGLU
(kernels/elementwise.py, the one SwiGLU kernel) and the weighted combine with the shared expert
(shaders/moe_combine.wgsl).

Data flow of one MoE FFN over n_tok token rows h [T, E] (every count read on the GPU from the
step record, every expert id from GPU buffers: no host round trip):
  router logits [T, NE] = linear(ffn_gate_inp, h)                     (kernels/linear.py)
  route     -> ids [T, k] (u32), weights [T, k] (f32), work list        (2 dispatches)
  expert_matvec(gate/up) -> gu [T, k, 2Fe] (gate rows then up rows of each pair)
  elementwise.swiglu -> act [T, k, Fe]
  expert_matvec(down, x_per_slot) -> down [T, k, E]
  shared expert: linear x 3 + elementwise.swiglu -> shared [T, E]
  combine   -> y [T, E] = sum_j w[t, j] down[t, j] + sigmoid(gate_inp_shexp . h[t]) shared[t]
`ffn` records all of it into one caller-provided scratch area (ffn_scratch_words).

The work list lets each selected expert's weights be read once for all the tokens that chose it
(in chunks of 4 pairs, like matvec's tokens): a fixed grid covers worklist_slots(...) experts,
and the workgroups of slots past the run's active count exit at once. A pair is "pair code"
q = t*k + j (token t's j-th choice), the row index of every [T, k, ...] buffer.

Buffers the caller allocates (u32 or f32 words; offsets are element offsets in any buffer, so all
of them may live in one arena; keep f32 inputs 16-byte aligned for vec4 loads):
  ids       max_tok * k u32          weights   max_tok * k f32
  worklist  worklist_words(n_expert, k, max_tok) u32
  gu        max_tok * k * rows_per_expert f32 per expert_matvec output (gate/up: 2*Fe)
  act       max_tok * k * Fe,  down  max_tok * k * E,  y  max_tok * E  f32
All programs sharing a work list must use the same (n_expert, k, max_tok): it fixes the layout.
Twins: reference.moe (route, worklist, expert_matvec, combine, ffn; built from
reference.ops.moe_route / moe_combine / ffn_moe).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..gpu.program import ProgramBuilder, pack, records
from ..gpu.weights import GPUTensor
from . import Act, elementwise, linear
from .norm import weight_binding

MAX_EXPERTS = 1024
"""Most experts route supports (its workgroup holds one probability per expert)."""
MAX_K = 16
"""Most experts per token."""
ROWS_PER_WG = 4
MAX_SLOT_GROUPS = 64
"""Default cap on the expert slots expert_matvec's grid covers side by side: beyond it, workgroups
loop over slots (i, i + groups, ...), so a large max_tok does not dispatch mostly-idle grids."""
WG = 256


# ---- sizes ---------------------------------------------------------------------------------------

def worklist_slots(n_expert: int, k: int, max_tok: int) -> int:
    """Most distinct experts a batch of max_tok tokens can select: min(NE, max_tok * k)."""
    return min(int(n_expert), int(max_tok) * int(k))


def worklist_words(n_expert: int, k: int, max_tok: int) -> int:
    """u32 words of a work list: a 4-word header (n_active, n_pairs), 4 words per slot
    (expert, pair_start, pair_count, 0), and max_tok * k pair codes."""
    return 4 + 4 * worklist_slots(n_expert, k, max_tok) + int(max_tok) * int(k)


def _check_route(n_expert: int, k: int) -> None:
    if not 1 <= n_expert <= MAX_EXPERTS:
        raise ValueError(f"MoE: {n_expert} experts (supported: 1..{MAX_EXPERTS})")
    if not 1 <= k <= min(MAX_K, n_expert):
        raise ValueError(f"MoE: {k} experts per token (supported: 1..{min(MAX_K, n_expert)})")


# ---- kernels -------------------------------------------------------------------------------------

@records("moe_route")
def route(pb: ProgramBuilder, step: Act, logits: Act, ids: Act, weights: Act, worklist: Act, *,
          n_expert: int, k: int, max_tok: int, logits_stride: int | None = None) -> None:
    """Per token: softmax of its router logits over ALL experts (f32), the top k by probability
    (ties to the lowest id: ranks are exact counts, so ids equal the twin's), weights renormalized
    with the sum clamped at 6.103515625e-5 -> ids[t*k + j] (u32), weights[t*k + j] (f32); then the
    batch's work list (worklist_words u32 at `worklist`), which expert_matvec reads on the GPU.

    Logits row t starts at logits.offset + t * logits_stride (default n_expert); `ids` and
    `worklist` are u32 word offsets. One workgroup per token (grid max_tok) + one for the list.
    Twins: reference.moe.route (= ops.moe_route) and reference.moe.worklist (exact)."""
    _check_route(n_expert, k)
    params = pack(n_expert, k, max_tok, step.offset, logits.offset, logits_stride or n_expert,
                  ids.offset, weights.offset, worklist.offset, worklist_slots(n_expert, k, max_tok))
    pb.add("moe_route", [logits.buffer, ids.buffer, weights.buffer, step.buffer], params, int(max_tok),
           label="moe_route")
    pb.add("moe_route", [ids.buffer, worklist.buffer, step.buffer], params, 1, defines={"WORKLIST": True},
           label="moe_worklist")


@records("expert_matvec")
def expert_matvec(pb: ProgramBuilder, W: GPUTensor, x: Act, y: Act, worklist: Act, *,
                  n_expert: int, k: int, max_tok: int, rows_per_expert: int, row_offset: int = 0,
                  expert_row_stride: int | None = None, x_per_slot: bool = False,
                  x_stride: int | None = None, y_stride: int | None = None, slot_groups: int | None = None,
                  label: str = "") -> None:
    """For each pair (t, j) of the batch, y[(t*k + j)*y_stride + r] = W_e[row_offset + r] . x_in,
    r < rows_per_expert, e = ids[t, j] taken from the work list on the GPU; x_in = x row t
    (x.offset + t*x_stride: gate/up) or, with x_per_slot, x row t*k + j (down: the pair's act).

    W is the 3-D expert tensor {in, out, NE} uploaded as one GPUTensor of NE * out rows (any
    weight type, any row parts: one dispatch per part, an expert split across parts is finished
    by the dispatches of both). expert_row_stride = rows per expert in W (default
    rows_per_expert); row_offset picks rows inside it: for the fused ffn_gate_up_exps
    (stride 2Fe) either one call with rows_per_expert = 2Fe, or gate (offset 0) and up (Fe)
    separately. x_stride defaults to W.cols, y_stride to rows_per_expert. No step record: the
    work list that route wrote for this step holds the pairs.
    Grid: slot_groups (default min(worklist_slots, MAX_SLOT_GROUPS)) x ceil(rows_per_expert / 4)
    workgroups of 64 threads; group i takes active slots i, i + slot_groups, ... (results do not
    depend on it). A decode program (max_tok 1) covers exactly its k experts.
    Bit-identical per pair for every n_tok and whatever other tokens share the expert.
    Twin: reference.moe.expert_matvec."""
    _check_route(n_expert, k)
    defs = linear._check(W)
    ers = rows_per_expert if expert_row_stride is None else int(expert_row_stride)
    if row_offset < 0 or rows_per_expert < 1 or row_offset + rows_per_expert > ers or W.rows != ers * n_expert:
        raise ValueError(f"{W.name}: rows {row_offset}..{row_offset + rows_per_expert} of {ers} per expert "
                         f"do not fit a tensor of {W.rows} rows = {n_expert} experts")
    xs = W.cols if x_stride is None else int(x_stride)
    ys = rows_per_expert if y_stride is None else int(y_stride)
    x_tok, x_slot = (k * xs, xs) if x_per_slot else (xs, 0)
    ns = worklist_slots(n_expert, k, max_tok)
    ng = min(ns, MAX_SLOT_GROUPS) if slot_groups is None else max(1, min(ns, int(slot_groups)))
    grid = ng * -(-rows_per_expert // ROWS_PER_WG)
    for part in W.parts:
        lo, hi = part.row0, part.row0 + part.rows
        # skip a part that holds none of the rows this call reads (e.g. only up rows of gate_up)
        if not any(e * ers + row_offset < hi and lo < e * ers + row_offset + rows_per_expert
                   for e in range(max(0, lo // ers - 1), min(n_expert, hi // ers + 1))):
            continue
        bufs, d = linear.with_codebook(pb.ctx, W.qtype, [part.buffer, x.buffer, y.buffer, worklist.buffer], defs)
        pb.add("moe", bufs,
               pack(W.cols, part.row0, part.rows, W.row_words, rows_per_expert, ers, row_offset, k,
                    x.offset, x_tok, x_slot, y.offset, k * ys, ys, worklist.offset, ns, ng),
               grid, defines=d, label=label or f"moe_matvec:{W.name}[{part.row0}]")


@records("moe_combine")
def combine(pb: ProgramBuilder, down: Act, weights: Act, y: Act, step: Act, *, n_embd: int, k: int,
            max_tok: int, down_stride: int | None = None, y_stride: int | None = None,
            shexp: tuple[Any, Act, Act] | None = None, h_stride: int | None = None,
            shared_stride: int | None = None) -> None:
    """y[t] = sum_j weights[t*k + j] * down[(t*k + j)*down_stride .. +n_embd], in top-k order,
    plus, with shexp = (gate_inp_shexp, h, shared), sigmoid(gate_inp_shexp . h[t]) * shared[t]
    (gate_inp_shexp: an F32 GPUTensor of n_embd values, stored {E} or {E, 1}, or an Act).
    y must not overlap down, h or shared. Strides default to n_embd.
    Twin: reference.moe.combine (= ops.moe_combine + the shared expert of ops.ffn_moe)."""
    ds = n_embd if down_stride is None else int(down_stride)
    ys = n_embd if y_stride is None else int(y_stride)
    ncb = -(-n_embd // WG)
    bufs = [down.buffer, weights.buffer, y.buffer, step.buffer]
    hs = n_embd if h_stride is None else int(h_stride)
    ss = n_embd if shared_stride is None else int(shared_stride)
    h_off = s_off = g_off = 0
    if shexp is not None:
        g, h, sh = shexp
        if isinstance(g, GPUTensor) and (g.cols != n_embd or g.rows != 1):
            raise ValueError(f"{g.name}: {g.rows}x{g.cols}, expected {n_embd} values")
        gbuf, g_off = weight_binding(g)
        bufs += [gbuf, h.buffer, sh.buffer]
        h_off, s_off = h.offset, sh.offset
    pb.add("moe_combine", bufs,
           pack(n_embd, k, max_tok, step.offset, down.offset, k * ds, ds, weights.offset,
                y.offset, ys, h_off, hs, s_off, ss, ncb, g_off),
           ncb * int(max_tok), defines={"SHEXP": shexp is not None}, label="moe_combine")


# ---- the whole FFN -------------------------------------------------------------------------------

@dataclass
class MoEWeights:
    """One layer's MoE tensors on the GPU (reference 2.5). Either gate_up (the fused
    ffn_gate_up_exps, 2*Fe rows per expert) or gate and up. The shared expert is optional."""
    router: GPUTensor                       # ffn_gate_inp, F32 [NE, E]
    down: GPUTensor                         # ffn_down_exps, NE * E rows of Fe
    gate: GPUTensor | None = None           # ffn_gate_exps, NE * Fe rows of E
    up: GPUTensor | None = None             # ffn_up_exps
    gate_up: GPUTensor | None = None        # ffn_gate_up_exps, NE * 2Fe rows of E
    shexp_gate_inp: GPUTensor | None = None # ffn_gate_inp_shexp, F32 {E} or {E, 1}
    shexp_gate: GPUTensor | None = None     # ffn_gate_shexp [Fs, E]
    shexp_up: GPUTensor | None = None
    shexp_down: GPUTensor | None = None     # [E, Fs]

    @property
    def n_expert(self) -> int:
        return self.router.rows

    @property
    def n_embd(self) -> int:
        return self.router.cols

    @property
    def n_ff_exp(self) -> int:
        return self.down.cols

    @property
    def n_ff_shexp(self) -> int:
        return self.shexp_gate.rows if self.shexp_gate is not None else 0


def _a4(n: int) -> int:
    return -(-int(n) // 4) * 4


def ffn_scratch_layout(E: int, NE: int, k: int, Fe: int, Fs: int, max_tok: int) -> dict[str, int]:
    """Word offsets of ffn's scratch regions (logits, ids, weights, worklist, gu, act, down, sh_gu,
    sh_act, shared) and the total: where to look when checking one stage."""
    T, P = int(max_tok), int(max_tok) * int(k)
    sizes = [("logits", T * NE), ("ids", P), ("weights", P), ("worklist", worklist_words(NE, k, T)),
             ("gu", P * 2 * Fe), ("act", P * Fe), ("down", P * E),
             ("sh_gu", T * 2 * Fs), ("sh_act", T * Fs), ("shared", T * E)]
    out, off = {}, 0
    for name, n in sizes:
        out[name] = off
        off += _a4(n)
    out["total"] = off
    return out


def ffn_scratch_words(n_embd: int, n_expert: int, k: int, n_ff_exp: int, n_ff_shexp: int, max_tok: int) -> int:
    """4-byte words of scratch `ffn` needs (logits, ids, weights, work list, gate/up, act, expert
    outputs, shared expert intermediates), each region 16-byte aligned."""
    return ffn_scratch_layout(n_embd, n_expert, k, n_ff_exp, n_ff_shexp, max_tok)["total"]


@records("moe_ffn")
def ffn(pb: ProgramBuilder, L: MoEWeights, h: Act, y: Act, step: Act, scratch: Act, *, k: int,
        max_tok: int) -> None:
    """y[t] = the MoE FFN of h[t] (rows of n_embd, t < n_tok), recorded as: router linear,
    route (+ work list), expert gate/up, swiglu, expert down, shared expert (3 linear + swiglu),
    combine. `scratch`: ffn_scratch_words(...) words (f32 and u32 regions); y must not overlap h.
    The router and shared-expert products use linear.linear (matvec for max_tok <= 16, so decode
    and verify stay bit-identical per token; matmul for prefill chunks).
    Twin: reference.moe.ffn (= ops.ffn_moe)."""
    E, NE, Fe, Fs = L.n_embd, L.n_expert, L.n_ff_exp, L.n_ff_shexp
    _check_route(NE, k)
    lay = ffn_scratch_layout(E, NE, k, Fe, Fs, max_tok)
    s = {name: scratch.at(off) for name, off in lay.items() if name != "total"}
    linear.linear(pb, L.router, h, s["logits"], step, max_tok=max_tok)
    route(pb, step, s["logits"], s["ids"], s["weights"], s["worklist"], n_expert=NE, k=k, max_tok=max_tok)
    kw = dict(n_expert=NE, k=k, max_tok=max_tok)
    if L.gate_up is not None:
        expert_matvec(pb, L.gate_up, h, s["gu"], s["worklist"], rows_per_expert=2 * Fe, **kw)
    else:
        expert_matvec(pb, L.gate, h, s["gu"], s["worklist"], rows_per_expert=Fe, y_stride=2 * Fe, **kw)
        expert_matvec(pb, L.up, h, s["gu"].at(Fe), s["worklist"], rows_per_expert=Fe, y_stride=2 * Fe, **kw)
    elementwise.swiglu(pb, s["gu"], s["gu"].at(Fe), s["act"], step, width=Fe, k=k, max_tok=max_tok,
                       g_stride=2 * Fe, u_stride=2 * Fe)
    expert_matvec(pb, L.down, s["act"], s["down"], s["worklist"], rows_per_expert=E, x_per_slot=True, **kw)
    shexp = None
    if L.shexp_gate is not None:
        if L.shexp_gate_inp is None:
            raise ValueError("MoE shared expert without ffn_gate_inp_shexp")
        linear.linear(pb, L.shexp_gate, h, s["sh_gu"], step, max_tok=max_tok, y_stride=2 * Fs)
        linear.linear(pb, L.shexp_up, h, s["sh_gu"].at(Fs), step, max_tok=max_tok, y_stride=2 * Fs)
        elementwise.swiglu(pb, s["sh_gu"], s["sh_gu"].at(Fs), s["sh_act"], step, width=Fs, max_tok=max_tok,
                           g_stride=2 * Fs, u_stride=2 * Fs)
        linear.linear(pb, L.shexp_down, s["sh_act"], s["shared"], step, max_tok=max_tok)
        shexp = (L.shexp_gate_inp, h, s["shared"])
    combine(pb, s["down"], s["weights"], y, step, n_embd=E, k=k, max_tok=max_tok, shexp=shexp)
