// Row norms over f32 activations (wgmtp/kernels/norm.py, rope.py; twins in reference/ops.py and
// reference/norm.py): rmsnorm (whole rows or per head), add_rmsnorm (residual add fused in),
// gated_rmsnorm (GDN output: * w * silu(z)), l2norm (GDN q/k, then * scale), and rmsnorm + NeoX
// rope (attention q/k: ROPE).
//
// Row (t, h) of n elements: X[x_off + t*x_ts + h*x_hs + i], i < n (likewise Y, A, S with their own
// offsets and strides). One workgroup of WG threads per row; thread j handles i = j, j+WG, ...
// (coalesced). Pass 1 sums squares in that order per thread, then a fixed-order workgroup reduction
// (include/wg_reduce.wgsl: subgroupAdd per subgroup, partials added in subgroup order; or a binary tree
// in workgroup memory); pass 2 writes. The order depends on n and WG only, never on the token count or on which
// workgroup runs the row: batch-invariant (ARCHITECTURE.md, "Batch invariance").
//
// Bindings (binding 0 uniform P, the rest storage):
//   1 step record (u32, rw)   2 X (f32, rw)   3 Y (f32, rw)
//   not L2:  4 W (u32 words of the f32 norm weight, read; W[w_off + i], shared by all heads)
//   RESID:   5 A = r (f32, rw), 6 S (f32, rw): s = x + r is written there, y = rmsnorm(s) * w
//   GATED:   5 A = z (f32, rw): y = rmsnorm(x) * w * silu(z)
//   ROPE:    5 COS, 6 SIN (f32, read: [n_ctx, half] tables of rope.py), rotates pairs (i, i+half)
//            of the first 2*half dims at position pos0 + (t - row0) + pos_add (clamped to n_ctx - 1),
//            pos0, row0 those of the segment holding batch row t: STEP then holds n_seg segment
//            records from word seg_off (include/segments.wgsl; one segment = the step record)
// Dispatch: max_tok * heads workgroups over x/y (grid1d), g = wid.x + wid.y * nwg.x, t = g / heads,
//   h = g % heads; tokens t >= min(n_tok, max_tok) (step record) return at once; with ROPE, rows
//   t >= max_tok or in no segment (not written).
// Defines: WG (64/128/256), L2, RESID, GATED, ROPE (at most one of the last four).

struct P {
    n: u32, heads: u32, step_off: u32, max_tok: u32,
    eps: f32, scale: f32, w_off: u32, half: u32,
    x_off: u32, x_ts: u32, x_hs: u32,
    y_off: u32, y_ts: u32, y_hs: u32,
    a_off: u32, a_ts: u32, a_hs: u32,
    s_off: u32, s_ts: u32, s_hs: u32,
    pos_add: u32, n_ctx: u32, seg_off: u32, n_seg: u32,
};
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> STEP: array<u32>;
@group(0) @binding(2) var<storage, read_write> X: array<f32>;
@group(0) @binding(3) var<storage, read_write> Y: array<f32>;
#if !L2
@group(0) @binding(4) var<storage, read> W: array<u32>;
#endif
#if RESID
@group(0) @binding(5) var<storage, read_write> A: array<f32>;
@group(0) @binding(6) var<storage, read_write> S: array<f32>;
#endif
#if GATED
@group(0) @binding(5) var<storage, read_write> A: array<f32>;
#endif
#if ROPE
@group(0) @binding(5) var<storage, read> COS: array<f32>;
@group(0) @binding(6) var<storage, read> SIN: array<f32>;
#endif

const WG: u32 = {{WG}}u;
var<workgroup> wg_n: u32;
#include "include/wg_reduce.wgsl"
#if ROPE
#include "include/segments.wgsl"
#endif

#if !L2
fn w(i: u32) -> f32 { return bitcast<f32>(W[p.w_off + i]); }
#endif

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
#if SUBGROUPS
        @builtin(subgroup_size) sgs: u32, @builtin(subgroup_invocation_id) sgl: u32,
#endif
        @builtin(local_invocation_index) lid: u32) {
#if SUBGROUPS
    sg_lane_ = sgl;
    sg_size_ = sgs;
#endif
#if ROPE
    let g = wid.x + wid.y * nwg.x;
    let t = g / p.heads;
    let h = g % p.heads;
    if (lid == 0u) { wg_n = seg_of_row(t); }
    let si = workgroupUniformLoad(&wg_n);
    if (t >= p.max_tok || si >= p.n_seg) { return; }
#else
    if (lid == 0u) { wg_n = min(STEP[p.step_off], p.max_tok); }
    let n_tok = workgroupUniformLoad(&wg_n);
    let g = wid.x + wid.y * nwg.x;
    let t = g / p.heads;
    let h = g % p.heads;
    if (t >= n_tok) { return; }
#endif
    let n = p.n;
    let xb = p.x_off + t * p.x_ts + h * p.x_hs;
    let yb = p.y_off + t * p.y_ts + h * p.y_hs;
#if RESID
    let ab = p.a_off + t * p.a_ts + h * p.a_hs;
    let sb = p.s_off + t * p.s_ts + h * p.s_hs;
#endif
#if GATED
    let ab = p.a_off + t * p.a_ts + h * p.a_hs;
#endif

    // pass 1: sum of squares
    var acc = 0.0;
    for (var i = lid; i < n; i += WG) {
#if RESID
        let v = X[xb + i] + A[ab + i];
        S[sb + i] = v;          // read back by this same thread in pass 2
#else
        let v = X[xb + i];
#endif
        acc += v * v;
    }
    let ss = wg_sum(acc, lid);
#if L2
    let inv = inverseSqrt(ss + p.eps);
#else
    let inv = inverseSqrt(ss / f32(n) + p.eps);
#endif

    // pass 2: write
#if ROPE
    let hf = p.half;
    let sg = seg_at(si);
    let pos = min(sg.pos0 + (t - sg.row0) + p.pos_add, p.n_ctx - 1u);
    let tb = pos * hf;
    for (var q = lid; q < hf; q += WG) {
        let y0 = X[xb + q] * inv * w(q);
        let y1 = X[xb + q + hf] * inv * w(q + hf);
        let c = COS[tb + q];
        let s = SIN[tb + q];
        Y[yb + q] = y0 * c - y1 * s;
        Y[yb + q + hf] = y0 * s + y1 * c;
    }
    for (var i = 2u * hf + lid; i < n; i += WG) {
        Y[yb + i] = X[xb + i] * inv * w(i);
    }
#else
    for (var i = lid; i < n; i += WG) {
#if RESID
        let v = S[sb + i];
#else
        let v = X[xb + i];
#endif
#if L2
        var y = v * inv * p.scale;
#else
        var y = v * inv * w(i);
#endif
#if GATED
        let z = A[ab + i];
        y = y * (z / (1.0 + exp(-z)));
#endif
        Y[yb + i] = y;
    }
#endif
}
