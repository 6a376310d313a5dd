// ssm_conv: causal depthwise conv1d (kernel {{KC}}, no bias) + SiLU over the batch's tokens, with
// the conv-state snapshot planes of reference 5.3 (twin: reference.ops.ssm_conv), per segment of a
// batch of several sequences (include/segments.wgsl; docs/ARCHITECTURE.md, "Slots").
// Bindings: 0 params (uniform P); 1 STEP (u32 segment records, segment s at seg_off + s*8: n_tok,
//   pos0, src (plane | store << 16: which planes it writes, segments.wgsl), max_emit, slot, row0);
//   2 X (f32 mixed inputs, batch row t channel c at x_off + t*x_stride + c);
//   3 ST (f32 conv state: plane q of slot s, channel c, tap m at
//     st_off + (s*n_planes + q)*n_ch*(KC-1) + c*(KC-1) + m, raw inputs oldest first);
//   4 O (f32 output, x_off-like: o_off + t*o_stride + c);
//   5 W (u32 words of an F32 weight part: channel c0 + i, tap j at i*KC + j).
// Dispatch: one per weight part (channels c0 .. c0+nc-1), (ceil(nc / 64) workgroups of 64 threads)
//   x n_seg: id = wid.x + wid.y * nwg.x (grid1d) over channels, wid.z = the segment. One thread per
//   (channel, segment) runs the segment's token loop over batch rows row0 .. row0+n_tok-1: it owns
//   that channel's state in every plane of the segment's slot, so reading plane src and writing
//   planes 0.. is race-free (segments are of different slots). An empty segment (n_tok = 0) does
//   nothing. Planes: store 0 writes plane T-1-t after token t and clamps planes >= T to the
//   pre-batch window; store 1 writes none; store 2 only the window after the last token, into
//   plane dst (segments.wgsl; it may be src: the window was read first). Every token runs the
//   same code whatever its segment, row or slot, so a T-token dispatch
//   equals T one-token dispatches bit for bit, and a segment equals itself run alone.
// Dispatched by wgmtp/kernels/gdn.py ssm_conv.
struct P {
    seg_off: u32, n_ch: u32, c0: u32, nc: u32,
    x_off: u32, x_stride: u32, st_off: u32, n_planes: u32,
    o_off: u32, o_stride: u32, n_seg: u32,
};
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> STEP: array<u32>;
@group(0) @binding(2) var<storage, read_write> X: array<f32>;
@group(0) @binding(3) var<storage, read_write> ST: array<f32>;
@group(0) @binding(4) var<storage, read_write> O: array<f32>;
@group(0) @binding(5) var<storage, read> W: array<u32>;

#include "include/segments.wgsl"

const KC: u32 = {{KC}}u;
const KM: u32 = {{KC}}u - 1u;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let li = (wid.x + wid.y * nwg.x) * 64u + lid;
    if (li >= p.nc || wid.z >= p.n_seg) { return; }
    let g = seg_at(wid.z);
    let T = g.n_tok;
    if (T == 0u) { return; }
    let c = p.c0 + li;
    let src = min(g.src, p.n_planes - 1u);
    let plane = p.n_ch * KM;
    let sbase = p.st_off + g.slot * p.n_planes * plane + c * KM;
    let xb = p.x_off + g.row0 * p.x_stride + c;
    let ob = p.o_off + g.row0 * p.o_stride + c;

    var w: array<f32, KC>;
    for (var j = 0u; j < KC; j = j + 1u) { w[j] = bitcast<f32>(W[li * KC + j]); }
    var old: array<f32, KM>;
    for (var m = 0u; m < KM; m = m + 1u) { old[m] = ST[sbase + src * plane + m]; }
    var win = old;

    for (var t = 0u; t < T; t = t + 1u) {
        let x = X[xb + t * p.x_stride];
        var acc = 0.0;
        for (var j = 0u; j < KM; j = j + 1u) { acc = acc + win[j] * w[j]; }
        acc = acc + x * w[KM];
        O[ob + t * p.o_stride] = acc / (1.0 + exp(-acc));
        for (var m = 0u; m + 1u < KM; m = m + 1u) { win[m] = win[m + 1u]; }
        win[KM - 1u] = x;
        let s = T - 1u - t;                       // plane s = window after token T-1-s
        let q = store_plane(g.store, s, p.n_planes);
        if (q < p.n_planes) {
            for (var m = 0u; m < KM; m = m + 1u) { ST[sbase + q * plane + m] = win[m]; }
        }
    }
    // planes the segment does not reach clamp to the pre-segment window (reference 5.3)
    for (var s = T; s < select(0u, p.n_planes, store_mode(g.store) == STORE_PLANES); s = s + 1u) {
        for (var m = 0u; m < KM; m = m + 1u) { ST[sbase + s * plane + m] = old[m]; }
    }
}
