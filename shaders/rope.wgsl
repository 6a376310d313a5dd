// Partial NeoX rope over strided heads (wgmtp/kernels/rope.py; twin reference.ops.rope_neox).
// Row (t, h) of n = head_dim elements: X[x_off + t*x_ts + h*x_hs + i]; pairs (i, i + half), i < half,
// are rotated by the angle of the row's position pos = pos0 + (t - row0) + pos_add, pos0 and row0 those
// of the segment holding batch row t (include/segments.wgsl: n_seg step records from word seg_off;
// one segment = the batch's own step record), clamped to n_ctx - 1:
// y_i = x_i c - x_{i+half} s,  y_{i+half} = x_i s + x_{i+half} c, with c, s read from
// host-made f32 tables (cos/sin computed in float64: WGSL sin/cos are only accurate near 0).
// Dims [2*half, n) are copied when COPY (out of place) and left alone in place.
// Bindings: 0 params P (uniform), 1 STEP segment records (u32, rw), 2 X (f32, rw), 3 Y (f32, rw; may
//   be X), 4 COS, 5 SIN (f32, read: [n_ctx, half], row = position).
// Dispatch: max_tok * heads workgroups of 64 threads over x/y (grid1d), one (t, h) row each; rows
//   t >= max_tok or in no segment return at once (not written). Elementwise, and a row's arithmetic
//   depends on its values and position only: batch-invariant by construction, whatever the segments.

struct P {
    n: u32, heads: u32, seg_off: u32, max_tok: u32,
    half: u32, pos_add: u32, n_ctx: u32,
    x_off: u32, x_ts: u32, x_hs: u32,
    y_off: u32, y_ts: u32, y_hs: u32,
    n_seg: u32,
};
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> STEP: array<u32>;
@group(0) @binding(2) var<storage, read_write> X: array<f32>;
@group(0) @binding(3) var<storage, read_write> Y: array<f32>;
@group(0) @binding(4) var<storage, read> COS: array<f32>;
@group(0) @binding(5) var<storage, read> SIN: array<f32>;

#include "include/segments.wgsl"

const WG: u32 = 64u;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let g = wid.x + wid.y * nwg.x;
    let t = g / p.heads;
    let h = g % p.heads;
    if (t >= p.max_tok) { return; }
    let si = seg_of_row(t);
    if (si >= p.n_seg) { return; }
    let sg = seg_at(si);
    let xb = p.x_off + t * p.x_ts + h * p.x_hs;
    let yb = p.y_off + t * p.y_ts + h * p.y_hs;
    let hf = p.half;
    let pos = min(sg.pos0 + (t - sg.row0) + p.pos_add, p.n_ctx - 1u);
    let tb = pos * hf;
    for (var q = lid; q < hf; q += WG) {
        let x0 = X[xb + q];
        let x1 = X[xb + q + hf];
        let c = COS[tb + q];
        let s = SIN[tb + q];
        Y[yb + q] = x0 * c - x1 * s;
        Y[yb + q + hf] = x0 * s + x1 * c;
    }
#if COPY
    for (var i = 2u * hf + lid; i < p.n; i += WG) {
        Y[yb + i] = X[xb + i];
    }
#endif
}
