// Multi-token matrix-vector product (decode and MTP verify): for t < n_tok (step record, <= 16),
//     Y[y_off + t*y_stride + row0 + r] = sum_c W[r, c] * X[x_off + t*x_stride + c]
// over the rows r < rows of one weight part (quantized, decoded with include/quant.wgsl; the accumulate
// and reduce code is include/matvec_common.wgsl, shared with moe.wgsl).
// Bindings: 0 params (uniform P), 1 W weight words (storage read, array<u32>, one row part),
//   2 X (storage read_write, read as vec4<f32>), 3 Y (storage read_write f32), 4 S step records
//   (read_write u32), NORM: 5 NW norm weight (storage read, vec4<f32>, from element p.nw_off,
//   a multiple of 4). X, Y and S may be the same arena buffer; offsets are in elements / words.
// Defines: the weight type's (include/quant.wgsl), SUBGROUPS, and the fusions of include/matvec_input.wgsl:
//   NORM  X[t] is the residual stream; the product is W . rmsnorm(X[t]) * NW (eps p.eps), the
//         sum of squares reduced with the dot products (no norm dispatch of its own);
//   ADD   Y[t] += W . X[t] (the block's output projection adds into the residual stream);
//   GLU   W is a stacked [gate; up] of 2 * p.half rows (one part); Y[t][r] = silu(gate_r . x) *
//         (up_r . x) for r < p.half: a workgroup takes 2 outputs, its 4 rows being their gate
//         and up rows (dispatch: ceil(half / 2) workgroups).
// Dispatch: one workgroup of WG = 64 threads per 4 consecutive rows of the part, spread over x/y
//   (grid1d). Tokens go in chunks of 4 (a uniform loop over ceil(n_tok / 4) chunks). Per chunk,
//   thread i takes units (8 consecutive columns) i, i+WG, i+2WG, ...: it decodes the unit of the
//   4 rows once, loads each token's 8 inputs once (two vec4 loads when x_off and x_stride are
//   multiples of 4) and accumulates 4 rows x 4 tokens in 4 vec4 registers (a_j = token j's 4
//   rows). A verify batch of up to 4 tokens (n_draft <= 3) streams the weights exactly once,
//   like a decode step; longer batches re-read the 4 rows per chunk, from cache. Few registers
//   (16 accumulators) keep occupancy high for decode.
// Batch invariance: token t is always computed in chunk t/4 by statement a_(t%4), whose
//   arithmetic is the same for every statement and chunk, and reduced by the same code; so its
//   value does not depend on n_tok (tested: n_tok = 2..16 vs n_tok = 1 on that token).
// Reduction per chunk: subgroupAdd per token (vec4 = 4 rows), subgroup partials summed in
//   workgroup memory in a fixed order (#if SUBGROUPS); else a workgroup-memory tree. 4 KiB.
// Dispatched by wgmtp/kernels/linear.py matvec (linear() when max_tok <= 16) with the tiled
//   layout (GPUs: linear.row_per_thread false); twin reference.linear.matvec.
#include "include/matvec_common.wgsl"

#include "include/matvec_bindings.wgsl"

const MAXT: u32 = 16u;

var<workgroup> wg_n: u32;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32
#if SUBGROUPS
        , @builtin(subgroup_invocation_id) sg_lane: u32, @builtin(subgroup_size) sg_size: u32
#endif
        ) {
#if SUBGROUPS
    sg_lane_ = sg_lane;
    sg_size_ = sg_size;
#endif
    if (lid == 0u) { wg_n = min(S[p.step_off], MAXT); }
    let n = workgroupUniformLoad(&wg_n);
#if GLU
    let rb = (wid.x + wid.y * nwg.x) * 2u;
    if (rb >= p.half) { return; }
    let g1 = min(rb + 1u, p.half - 1u);
    let b = vec4<u32>(rb, g1, rb + p.half, g1 + p.half) * p.row_words;
    let ok = vec4<bool>(true, rb + 1u < p.half, false, false);
#else
    let rb = (wid.x + wid.y * nwg.x) * 4u;
    if (rb >= p.rows) { return; }
    // rows past the part's end are computed from a duplicate of its last row, never written
    let last = p.rows - 1u;
    let b = vec4<u32>(min(rb, last), min(rb + 1u, last), min(rb + 2u, last), min(rb + 3u, last)) * p.row_words;
    let ok = vec4<bool>(rb < p.rows, rb + 1u < p.rows, rb + 2u < p.rows, rb + 3u < p.rows);
#endif
    let al = ((p.x_off | p.x_stride) & 3u) == 0u;
    let xs = p.x_stride;
    let ys = p.y_stride;

    for (var c0 = 0u; c0 < n; c0 += 4u) {
        let m = n - c0;                       // tokens in this chunk (>= 1)
        let xc = p.x_off + c0 * xs;
        let yc = p.y_off + c0 * ys + p.row0 + rb;
        let a = accum4(b, vec4<u32>(xc, xc + xs, xc + 2u * xs, xc + 3u * xs), m, al, lid);
        reduce4(a, m, lid, vec4<u32>(yc, yc + ys, yc + 2u * ys, yc + 3u * ys), ok);
    }
}
