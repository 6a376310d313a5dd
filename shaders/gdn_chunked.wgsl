// gdn_chunked: the chunked (WY) form of the gated delta rule for long prompt chunks (reference 3.5),
// gates and q/k L2 norms fused; writes the outputs and only the final state (plane 0; STORE_FINAL: plane dst), per segment
// of a batch of several sequences (include/segments.wgsl; docs/ARCHITECTURE.md, "Slots")
// (twin: reference.gdn.gdn_chunked, built on reference.ops.gdn_chunked).
// Bindings: as gdn.wgsl -- 0 params (uniform P); 1 STEP (u32 segment records, segment s at
//   seg_off + s*8: n_tok, pos0, src (plane), max_emit, slot, row0); 2 C (f32 conv output, batch
//   row t at c_off + t*c_stride: q [HK*DK], k [HK*DK], v [HV*DV]);
//   3 AL, 4 BE (f32 raw alpha/beta at a_off + t*a_stride + h, b_off + t*b_stride + h);
//   5 ST (f32 ssm state, plane q of slot s at st_off + (s*n_planes + q)*HV*DV*DK, M[h, j, i] at
//   (h*DV + j)*DK + i); 6 O (f32 o[t, h, j] at o_off + t*o_stride + h*DV + j);
//   7 WA ssm_a, 8 WD ssm_dt.bias (u32 words, F32 [HV]).
// Dispatch: (HV * n_cb workgroups (grid1d: wid.x + wid.y * nwg.x)) x n_seg (wid.z = the segment),
//   n_cb = ceil(DV / COLS), workgroup = LANES * COLS threads (>= 2*CH). Workgroup (h, cb, seg) owns
//   value rows j = cb*COLS .. of head h in the segment's slot and runs its batch rows
//   row0 .. row0+n_tok-1 in chunks from token 0 of the segment (an empty segment returns, writing
//   nothing), so a segment equals itself run alone bit for bit; row j is sharded over L
//   lanes as in gdn.wgsl (lane l holds M[h, j, l + L*r]). Per chunk of CH tokens (the tail chunk is
//   zero-padded: q = k = v = 0, beta = 0, g = 0, which changes nothing):
//   A  stage normalized q, k [CH, DK] in workgroup memory; gates, cumulative log-decay G (f32),
//      exp(G_t) and exp(G_last - G_t);
//   B  A[t, s] = (q_t.k_s) exp(G_t - G_s) (s <= t) and L[t, s] = beta_t (k_t.k_s) exp(G_t - G_s)
//      (s < t): the mask is applied before the exponential, so no exp of a positive argument;
//   C  per value row j: p_t = k_t.S_j and r_t = q_t.S_j (lane partials summed by the same
//      butterfly tree as gdn.wgsl), the corrected values u = (I + L)^-1 beta (v - exp(G) p) by
//      forward substitution, o_t = exp(G_t) r_t + sum_{s<=t} A[t, s] u_s, and
//      S_j <- exp(G_last) S_j + sum_t exp(G_last - G_t) u_t k_t.
//   This is ops.gdn_chunked with (I + L)^-1 applied to beta (v - exp(G) K S) at once instead of to
//   beta V and beta K exp(G) separately (the same product, one triangular solve per row).
// Dispatched by wgmtp/kernels/gdn.py gdn_chunked.
#include "include/gdn_common.wgsl"

const CH: u32 = {{CH}}u;

var<workgroup> sQ: array<f32, {{CH}} * {{DK}}>;
var<workgroup> sK: array<f32, {{CH}} * {{DK}}>;
var<workgroup> sA: array<f32, {{CH}} * {{CH}}>;
var<workgroup> sL: array<f32, {{CH}} * {{CH}}>;
var<workgroup> sG: array<f32, {{CH}}>;
var<workgroup> sB: array<f32, {{CH}}>;
var<workgroup> sEG: array<f32, {{CH}}>;
var<workgroup> sEGL: array<f32, {{CH}}>;
var<workgroup> red: array<f32, {{LANES}} * {{COLS}} * 2 * {{CH}}>;

// element e of the lanes base .. base+L-1 partials in `red`, summed in bfly's tree order
fn tree(base: u32, e: u32) -> f32 {
    var v: array<f32, L>;
    for (var i = 0u; i < L; i = i + 1u) { v[i] = red[(base + i) * 2u * CH + e]; }
    return tree_sum(v);
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
    let a_h = bitcast<f32>(WA[c.h]);
    let dtb = bitcast<f32>(WD[c.h]);
    var m = load_state(c, sg.y & 0xffffu);
    let row0 = sg.w;

    for (var c0 = 0u; c0 < T; c0 = c0 + CH) {
        let n = min(CH, T - c0);
        // A: raw q/k rows of the chunk, gates and cumulative decays
        for (var e = lid; e < CH * DK; e = e + WG) {
            let t = e / DK;
            let i = e % DK;
            var qv = 0.0;
            var kv = 0.0;
            if (t < n) {
                let cb = p.c_off + (row0 + c0 + t) * p.c_stride + c.kh * DK + i;
                qv = C[cb];
                kv = C[cb + c.key_dim];
            }
            sQ[e] = qv;
            sK[e] = kv;
        }
        if (lid == 0u) {
            var G = 0.0;
            for (var t = 0u; t < CH; t = t + 1u) {
                var g = 0.0;
                var b = 0.0;
                if (t < n) {
                    g = gate_g(a_h, AL[p.a_off + (row0 + c0 + t) * p.a_stride + c.h], dtb);
                    b = gate_beta(BE[p.b_off + (row0 + c0 + t) * p.b_stride + c.h]);
                }
                G = G + g;
                sG[t] = G;
                sB[t] = b;
                sEG[t] = exp(G);
            }
            for (var t = 0u; t < CH; t = t + 1u) { sEGL[t] = exp(G - sG[t]); }
        }
        workgroupBarrier();
        // L2 norms of the staged rows (thread e < CH: q row e; CH <= e < 2 CH: k row e - CH)
        if (lid < CH) {
            var ss = 0.0;
            for (var i = 0u; i < DK; i = i + 1u) { ss = ss + sQ[lid * DK + i] * sQ[lid * DK + i]; }
            let d = sqrt(ss + p.eps);
            for (var i = 0u; i < DK; i = i + 1u) { sQ[lid * DK + i] = sQ[lid * DK + i] / d * p.q_scale; }
        } else if (lid < 2u * CH) {
            let t = lid - CH;
            var ss = 0.0;
            for (var i = 0u; i < DK; i = i + 1u) { ss = ss + sK[t * DK + i] * sK[t * DK + i]; }
            let d = sqrt(ss + p.eps);
            for (var i = 0u; i < DK; i = i + 1u) { sK[t * DK + i] = sK[t * DK + i] / d; }
        }
        workgroupBarrier();
        // B: masked decay products
        for (var e = lid; e < CH * CH; e = e + WG) {
            let t = e / CH;
            let s = e % CH;
            var a = 0.0;
            var l = 0.0;
            if (s <= t) {
                var qk = 0.0;
                var kk = 0.0;
                for (var i = 0u; i < DK; i = i + 1u) {
                    qk = qk + sQ[t * DK + i] * sK[s * DK + i];
                    kk = kk + sK[t * DK + i] * sK[s * DK + i];
                }
                let d = exp(sG[t] - sG[s]);
                a = qk * d;
                if (s < t) { l = sB[t] * kk * d; }
            }
            sA[e] = a;
            sL[e] = l;
        }
        workgroupBarrier();
        // C: per value row
        var pk: array<f32, CH>;
        var pq: array<f32, CH>;
        for (var t = 0u; t < CH; t = t + 1u) {
            var a = 0.0;
            var b = 0.0;
            for (var r = 0u; r < R; r = r + 1u) {
                let i = c.lane + L * r;
                if (i < DK) {
                    a = a + m[r] * sK[t * DK + i];
                    b = b + m[r] * sQ[t * DK + i];
                }
            }
            pk[t] = a;
            pq[t] = b;
        }
#if SUBGROUPS
        if (use_sg) {
            for (var t = 0u; t < CH; t = t + 1u) {
                pk[t] = bfly(pk[t]);
                pq[t] = bfly(pq[t]);
            }
        } else {
#endif
            for (var t = 0u; t < CH; t = t + 1u) {
                red[lid * 2u * CH + t] = pk[t];
                red[lid * 2u * CH + CH + t] = pq[t];
            }
            workgroupBarrier();
            let base = lid - c.lane;
            for (var t = 0u; t < CH; t = t + 1u) {
                pk[t] = tree(base, t);
                pq[t] = tree(base, CH + t);
            }
#if SUBGROUPS
        }
#endif
        var u: array<f32, CH>;
        for (var t = 0u; t < CH; t = t + 1u) {
            var v = 0.0;
            if (c.jv && t < n) { v = C[p.c_off + (row0 + c0 + t) * p.c_stride + 2u * c.key_dim + c.h * DV + c.j]; }
            var x = sB[t] * (v - sEG[t] * pk[t]);
            for (var s = 0u; s < t; s = s + 1u) { x = x - sL[t * CH + s] * u[s]; }
            u[t] = x;
        }
        for (var t = c.lane; t < n; t = t + L) {
            var o = sEG[t] * pq[t];
            for (var s = 0u; s <= t; s = s + 1u) { o = o + sA[t * CH + s] * u[s]; }
            if (c.jv) { O[p.o_off + (row0 + c0 + t) * p.o_stride + c.h * DV + c.j] = o; }
        }
        let el = sEG[CH - 1u];
        for (var r = 0u; r < R; r = r + 1u) {
            let i = c.lane + L * r;
            if (i < DK) {
                var acc = m[r] * el;
                for (var t = 0u; t < CH; t = t + 1u) { acc = acc + sK[t * DK + i] * (sEGL[t] * u[t]); }
                m[r] = acc;
            }
        }
        workgroupBarrier();
    }
    let q = select(store_plane(sg.y >> 16u, 0u, p.n_planes), 0u, store_mode(sg.y >> 16u) == STORE_PLANES);
    if (c.jv && q < p.n_planes) { store_state(c, q, m); }
}
