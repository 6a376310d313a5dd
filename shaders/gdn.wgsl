// gdn: the gated delta rule over the batch's tokens, token loop inside, with fused gates and q/k L2
// norms and the ssm snapshot planes of reference 5.3, per segment of a batch of several sequences
// (include/segments.wgsl; docs/ARCHITECTURE.md, "Slots") (twin: reference.gdn.gdn; the `gates`
// entry's twin is reference.gdn.gdn_gates).
// Bindings: 0 params (uniform P); 1 STEP (u32 segment records, segment s at seg_off + s*8: n_tok,
//   pos0, src (plane), max_emit, slot, row0; `gates` reads only n_tok at seg_off);
//   2 C (f32 conv output: batch row t at c_off + t*c_stride: q [HK*DK], k [HK*DK], v [HV*DV]);
//   3 AL (f32 raw alpha: a_off + t*a_stride + h); 4 BE (f32 raw beta: b_off + t*b_stride + h);
//   5 ST (f32 ssm state M[h, j, i] = S_h[i, j] of plane q of slot s at
//     st_off + (s*n_planes + q)*HV*DV*DK + (h*DV + j)*DK + i);
//   6 O (f32 output o[t, h, j] at o_off + t*o_stride + h*DV + j; the `gates` entry writes (g, beta)
//     of token t, head h at o_off + (t*HV + h)*2);
//   7 WA (u32 words of ssm_a, F32 [HV]); 8 WD (u32 words of ssm_dt.bias, F32 [HV]).
// Dispatch (main): (HV * n_cb workgroups (grid1d: wid.x + wid.y * nwg.x)) x n_seg (wid.z = the
//   segment), n_cb = ceil(DV / COLS); workgroup (h, cb, seg) owns value rows j = cb*COLS .. of head
//   h in the segment's slot and runs the segment's batch rows row0 .. row0+n_tok-1 (an empty
//   segment returns). Each row j is sharded over L lanes (L a power of two):
//   lane l holds M[h, j, l + L*r] for r < R in registers. Per token: the lanes load their q/k
//   elements of key head h % HK, and three lane sums (|q|^2 and |k|^2; M k; M q) combine the L
//   partials with a butterfly tree -- by subgroupShuffleXor when the subgroup size is a multiple of
//   L (aligned clusters, assuming the usual linear lane order), else through workgroup memory in
//   the same tree order, so both paths give the same bits. Every token runs the same code and the
//   reduction order depends on nothing but L (not the segment, row or slot), so a T-token dispatch
//   equals T one-token dispatches bit for bit and a segment equals itself run alone. Each thread
//   owns its state elements in every plane of its slot: it loads plane src into registers first,
//   then writes plane T-1-t after token t (planes >= T untouched), as the segment's `store` says
//   (segments.wgsl: every plane, none, or only the state after the last token, into plane dst --
//   which may be src: the state was loaded first).
// Dispatch (gates): ceil(HV / 64) workgroups of 64, one thread per head, token loop inside (rows
//   0 .. n_tok-1 of the record at seg_off).
// Dispatched by wgmtp/kernels/gdn.py gdn (main) and gdn_gates (entry gates).
#include "include/gdn_common.wgsl"

// lane-sum scratch: four areas of WG floats (|q|^2, |k|^2, M k, M q), so a token needs one barrier
// per sum and none to protect the next token's writes
var<workgroup> red: array<f32, 4u * {{LANES}}u * {{COLS}}u>;
const RQ: u32 = 0u;
const RK: u32 = {{LANES}}u * {{COLS}}u;
const RKV: u32 = 2u * {{LANES}}u * {{COLS}}u;
const RO: u32 = 3u * {{LANES}}u * {{COLS}}u;

// The L partials red[at .. at+L-1] of one value row, summed in bfly's tree order.
fn tree(at: u32) -> f32 {
    var v: array<f32, L>;
    for (var i = 0u; i < L; i = i + 1u) { v[i] = red[at + i]; }
    return tree_sum(v);
}

// Sum over the L lanes of this thread's value row (every lane gets the total); `area` is one of
// RKV, RO.
fn lane_sum(x: f32, area: u32, lid: u32, use_sg: bool) -> f32 {
#if SUBGROUPS
    if (use_sg) { return bfly(x); }
#endif
    red[area + lid] = x;
    workgroupBarrier();
    return tree(area + lid - lid % L);
}

fn lane_sum2(x: vec2<f32>, lid: u32, use_sg: bool) -> vec2<f32> {
#if SUBGROUPS
    if (use_sg) { return vec2<f32>(bfly(x.x), bfly(x.y)); }
#endif
    red[RQ + lid] = x.x;
    red[RK + lid] = x.y;
    workgroupBarrier();
    let base = lid - lid % L;
    return vec2<f32>(tree(RQ + base), tree(RK + base));
}

@compute @workgroup_size({{LANES}} * {{COLS}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
#if SUBGROUPS
        @builtin(subgroup_size) sg_size: u32,
#endif
        @builtin(local_invocation_index) lid: u32) {
#if SUBGROUPS
    let use_sg = sg_size % L == 0u;
#else
    let use_sg = false;
#endif
    let sg = seg_uniform(lid, wid.z);
    let T = sg.x;
    let gid = wid.x + wid.y * nwg.x;
    if (gid >= p.hv * p.n_cb || T == 0u) { return; }
    let c = cell(gid, lid, sg.z);
    var m = load_state(c, sg.y & 0xffffu);
    let store = sg.y >> 16u;
    let a_h = bitcast<f32>(WA[c.h]);
    let dtb = bitcast<f32>(WD[c.h]);
    let row0 = sg.w;

    for (var t = 0u; t < T; t = t + 1u) {
        let cbase = p.c_off + (row0 + t) * p.c_stride;
        var q: array<f32, R>;
        var k: array<f32, R>;
        var sq = vec2<f32>(0.0, 0.0);
        for (var r = 0u; r < R; r = r + 1u) {
            let i = c.lane + L * r;
            q[r] = 0.0;
            k[r] = 0.0;
            if (i < DK) {
                q[r] = C[cbase + c.kh * DK + i];
                k[r] = C[cbase + c.key_dim + c.kh * DK + i];
            }
            sq = sq + vec2<f32>(q[r] * q[r], k[r] * k[r]);
        }
        let ss = lane_sum2(sq, lid, use_sg);
        let qd = sqrt(ss.x + p.eps);
        let kd = sqrt(ss.y + p.eps);
        for (var r = 0u; r < R; r = r + 1u) {
            q[r] = q[r] / qd * p.q_scale;
            k[r] = k[r] / kd;
        }
        let decay = exp(gate_g(a_h, AL[p.a_off + (row0 + t) * p.a_stride + c.h], dtb));
        let beta = gate_beta(BE[p.b_off + (row0 + t) * p.b_stride + c.h]);
        var v = 0.0;
        if (c.jv) { v = C[cbase + 2u * c.key_dim + c.h * DV + c.j]; }

        var kp = 0.0;
        for (var r = 0u; r < R; r = r + 1u) {
            m[r] = m[r] * decay;
            kp = kp + m[r] * k[r];
        }
        let delta = (v - lane_sum(kp, RKV, lid, use_sg)) * beta;
        var op = 0.0;
        for (var r = 0u; r < R; r = r + 1u) {
            m[r] = m[r] + delta * k[r];
            op = op + m[r] * q[r];
        }
        let o = lane_sum(op, RO, lid, use_sg);
        if (c.jv && c.lane == 0u) { O[p.o_off + (row0 + t) * p.o_stride + c.h * DV + c.j] = o; }
        let s = T - 1u - t;
        let to = store_plane(store, s, p.n_planes);
        if (c.jv && to < p.n_planes) { store_state(c, to, m); }
    }
}

// (g, beta) per token and head: the same gate functions, written out for checking.
@compute @workgroup_size(64)
fn gates(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let h = wid.x * 64u + lid;
    let T = STEP[p.seg_off];
    _ = &C;                                   // same bindings as main (sequential layout)
    _ = &ST;
    if (h >= p.hv) { return; }
    let a_h = bitcast<f32>(WA[h]);
    let dtb = bitcast<f32>(WD[h]);
    for (var t = 0u; t < T; t = t + 1u) {
        let o = p.o_off + (t * p.hv + h) * 2u;
        O[o] = gate_g(a_h, AL[p.a_off + t * p.a_stride + h], dtb);
        O[o + 1u] = gate_beta(BE[p.b_off + t * p.b_stride + h]);
    }
}
