// MoE FFN combine, per token t < n_tok and column c < n_embd, in top-k order (the experts'
// SwiGLU before it is swiglu.wgsl):
//
//       y = 0; y = y + Wt[w_off + t*k + j] * D[d_off + t*d_tok + j*d_slot + c]   (j = 0..k-1)
//   and with SHEXP the shared expert, gated by a sigmoid of a dot product over the FFN input h:
//       y = y + sigmoid(sum_i G[i] * H[h_off + t*h_stride + i]) * SH[s_off + t*s_stride + c]
//       Y[y_off + t*y_stride + c] = y
//   Bindings: 0 params, 1 D expert outputs (read_write f32), 2 Wt route weights (read_write f32),
//   3 Y (read_write f32), 4 S step records (read_write u32); with SHEXP also 5 G the
//   ffn_gate_inp_shexp vector (storage read, F32 weight words), 6 H (read_write f32), 7 SH shared
//   expert output (read_write f32); G is read from word g_off. Y must not overlap D, H or SH (other workgroups still read them).
//   Dispatch: ncb * max_tok workgroups of 256 threads (grid1d; linear id g: token g / ncb,
//   columns 256*(g % ncb) ..), ncb = ceil(n_embd / 256). The gate dot is recomputed by each
//   column block with the same code and order (thread partials over i = lid, lid+256, ..., then a
//   fixed-order workgroup sum, wg_sum of include/wg_reduce.wgsl), so every block and every batch size gets
//   the same value.
// Dispatched by wgmtp/kernels/moe.py combine; twin reference.moe.combine.

const WG: u32 = 256u;
var<workgroup> wg_n: u32;

struct P {
    n_embd: u32, k: u32, max_tok: u32, step_off: u32,
    d_off: u32, d_tok: u32, d_slot: u32, w_off: u32,
    y_off: u32, y_stride: u32, h_off: u32, h_stride: u32,
    s_off: u32, s_stride: u32, ncb: u32, g_off: u32,
};
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> D: array<f32>;
@group(0) @binding(2) var<storage, read_write> Wt: array<f32>;
@group(0) @binding(3) var<storage, read_write> Y: array<f32>;
@group(0) @binding(4) var<storage, read_write> S: array<u32>;
#if SHEXP
@group(0) @binding(5) var<storage, read> G: array<u32>;
@group(0) @binding(6) var<storage, read_write> H: array<f32>;
@group(0) @binding(7) var<storage, read_write> SH: array<f32>;

#include "include/wg_reduce.wgsl"
#endif

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32
#if SHEXP
#if SUBGROUPS
        , @builtin(subgroup_invocation_id) sg_lane: u32, @builtin(subgroup_size) sg_size: u32
#endif
#endif
        ) {
#if SHEXP
#if SUBGROUPS
    sg_lane_ = sg_lane;
    sg_size_ = sg_size;
#endif
#endif
    if (lid == 0u) { wg_n = min(S[p.step_off], p.max_tok); }
    let n = workgroupUniformLoad(&wg_n);
    let g = wid.x + wid.y * nwg.x;
    let t = g / p.ncb;
    if (t >= n) { return; }
    let c = (g % p.ncb) * WG + lid;
    let k = p.k;
#if SHEXP
    let hb = p.h_off + t * p.h_stride;
    var d = 0.0;
    for (var i = lid; i < p.n_embd; i += WG) { d += bitcast<f32>(G[p.g_off + i]) * H[hb + i]; }
    let gate = 1.0 / (1.0 + exp(-wg_sum(d, lid)));
#endif
    if (c >= p.n_embd) { return; }
    var y = 0.0;
    let db = p.d_off + t * p.d_tok + c;
    for (var j = 0u; j < k; j++) {
        y = y + Wt[p.w_off + t * k + j] * D[db + j * p.d_slot];
    }
#if SHEXP
    y = y + gate * SH[p.s_off + t * p.s_stride + c];
#endif
    Y[p.y_off + t * p.y_stride + c] = y;
}
