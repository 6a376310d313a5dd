// Gated causal attention over a KV cache, split-K part (wgmtp/kernels/attention.py attention;
// twin reference.attention.attention). Flash-decoding: a slot's cache rows are cut into splits of
// S (= p.split) rows at FIXED positions [j*S, (j+1)*S) relative to the slot's first row; each
// workgroup computes, for its query rows, the softmax state of one split -- running max m, sum
// l = sum_k exp(s_k - m), acc = sum_k exp(s_k - m) v_k -- and writes it to the workspace;
// attention_merge.wgsl combines the splits in index order. Inside a split, keys go in chunks of
// C = 64 at fixed positions, folded with the online-softmax rescale. Every operation on a query row
// depends only on that row's q, its position and its slot's cache rows, never on the other rows of
// the tile, on n_tok or on the other segments: row t of a verify batch is bit-identical to decoding
// it alone, and a segment's rows to that segment run alone (ARCHITECTURE.md, "Batch invariance").
//
// Segments (include/segments.wgsl; docs/ARCHITECTURE.md, "Slots"): the batch rows are cut into
// n_seg segments, segment s = rows row0 .. row0 + n_tok - 1 (clamped to max_tok) at positions
// pos0 + pos_add + (t - row0) of slot `slot`; position pos of a slot is cache row
// slot * slot_rows + pos. Tiles are cut per segment: tile i of segment s holds its rows
// row0 + i*BQ .. (at most BQ, never two segments); the tiles of segment 0 come first, then those of
// segment 1, ... (n_tile = ceil(max_tok / BQ) + n_seg - 1 covers any segmentation).
// Query rows: a workgroup takes one tile of BQ rows x HB heads of one kv head's group
// (GQA: q head h reads kv head h / (H/Hkv)); row r = batch row t0 + r / HB, head kh*G + hb*HB + r % HB.
// A row at position pos sees its slot's positions [0, pos] (n_kv = pos + 1).
// q element (t, h, d) = Q[q_off + t*q_ts + h*q_hs + d]. Scores s = (q . k) * scale.
// Cache (this part, rows [row0, row0 + rows)): element (row, kh, d) at vec4 index
//   kc_off + ((row - row0) * Hkv + kh) * D/4 + d/4 (f16 when F16, else f32). A split lies in one
//   part; a workgroup whose split (of its slot) is not in this part returns.
// Workspace record of (batch row t, h, split j) at vec4 index
//   ws_off + ((t*H + h) * win + j - j0) * (D/4 + 1): [0] = (m, l, 0, 0), [1 ..] = acc
//   (unnormalised). Written only for splits j with j*S < n_kv.
// Bindings: 0 params P (uniform), 1 STEP (u32 segment records, segment s at seg_off + s*8: n_tok,
//   pos0, src, max_emit, slot, row0; rw), 2 Q (f32, rw), 3 KC, 4 VC (vec4 of f16 or f32, rw),
//   5 WS (vec4<f32>, rw).
// Dispatch: n_j * Hkv * n_hb * n_tile workgroups of 128 threads over x/y (grid1d); linear id =
//   ((jj * Hkv + kh) * n_hb + hb) * n_tile + tile (tiles of one split side by side, sharing the
//   split's K/V in cache), split j = j_begin + jj (of the slot). Workgroups past the segments'
//   tiles, past the tile's last position or outside this part return at once.
// Phases per chunk (4 barriers): scores (the 2 threads of a key each dot half of the head dim
// for every row; loads issued UNR at a time so many are in flight), row maxima (8 segments of 8
// keys per row, then max of the segments: exact in any order), probabilities, then P.V (thread =
// a vec4 of the head dim x some rows; keys in order, V loads UNR at a time).
// Defines: D (head dim, multiple of 8, <= 256), HB, BQ, R = HB*BQ query rows (<= 16; chosen by
//   attention.tile_shape from the adapter's workgroup memory), QS = R*D/4, PS = R*C*2, MP = 8*R,
//   MS = 2*R, UNR (load batch, divides D/8). Workgroup memory: R*(4D + 552) + 16 bytes.
#if F16
alias KT = f16;
#else
alias KT = f32;
#endif

struct P {
    seg_off: u32, pos_add: u32, n_head: u32, n_kv_head: u32,
    scale: f32, q_off: u32, q_ts: u32, q_hs: u32,
    kc_off: u32, vc_off: u32, row0: u32, split: u32,
    j_begin: u32, n_j: u32, j0: u32, win: u32,
    n_tile: u32, n_hb: u32, ws_off: u32, max_tok: u32,
    n_seg: u32, slot_rows: u32, rows: u32,
};
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> STEP: array<u32>;
@group(0) @binding(2) var<storage, read_write> Q: array<f32>;
@group(0) @binding(3) var<storage, read_write> KC: array<vec4<KT>>;
@group(0) @binding(4) var<storage, read_write> VC: array<vec4<KT>>;
@group(0) @binding(5) var<storage, read_write> WS: array<vec4<f32>>;

#include "include/segments.wgsl"

const D4: u32 = {{D}}u / 4u;
const HB: u32 = {{HB}}u;
const BQ: u32 = {{BQ}}u;
const R: u32 = {{R}}u;                     // query rows per workgroup (HB * BQ)
const NT: u32 = 128u;                      // threads
const C: u32 = 64u;                        // keys per chunk
const KP: u32 = 2u;                        // threads per key in the score phase (NT / C)
const DH: u32 = D4 / KP;                   // vec4s of the head dim per score thread
const UNR: u32 = {{UNR}}u;                 // loads in flight per thread
const NSEG: u32 = 8u;                      // segments of a row's chunk in the max phase
const SEG: u32 = C / NSEG;
const RG: u32 = NT / D4;                   // row groups of the P.V phase (D4 lanes each)
const RPV: u32 = (R + RG - 1u) / RG;       // rows per thread, P.V phase
const NEG: f32 = -3.0e38;                  // below any score (no infinities in WGSL)

var<workgroup> qs: array<vec4<f32>, {{QS}}>;   // R x D4: the tile's q rows
var<workgroup> ps: array<f32, {{PS}}>;         // R x C x KP: half-dots, then [.., 0] = probabilities
var<workgroup> mp: array<f32, {{MP}}>;         // R x NSEG: segment maxima of the chunk
var<workgroup> ms: array<f32, {{MS}}>;         // 2 x R: running row max, by chunk parity
var<workgroup> wtile: vec4<u32>;                // the tile: (t0, rows, pos of row 0, slot row)

// score of row r, key k of the chunk: the two half-dots summed in a fixed order, then scaled
fn score(r: u32, k: u32) -> f32 {
    let i = (r * C + k) * KP;
    return (ps[i] + ps[i + 1u]) * p.scale;
}

// max of row r's scores over the chunk (and the split so far unless first): exact in any order
fn row_max(r: u32, first: bool, par: u32) -> f32 {
    var m = mp[r * NSEG];
    for (var s = 1u; s < NSEG; s++) { m = max(m, mp[r * NSEG + s]); }
    if (!first) { m = max(m, ms[par * R + r]); }
    return m;
}

@compute @workgroup_size(128)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    var g = wid.x + wid.y * nwg.x;
    let tile = g % p.n_tile;
    g = g / p.n_tile;
    let hb = g % p.n_hb;
    g = g / p.n_hb;
    let kh = g % p.n_kv_head;
    g = g / p.n_kv_head;
    // tile -> (segment, its tile i): the segments' tiles side by side, in segment order
    if (lid == 0u) {
        var info = vec4<u32>(0u);                 // rows = 0: past every segment's tiles
        var tl = tile;
        for (var s = 0u; s < p.n_seg; s++) {
            let sg = seg_at(s);
            var n = 0u;
            if (sg.row0 < p.max_tok) { n = min(sg.n_tok, p.max_tok - sg.row0); }
            let nt = (n + BQ - 1u) / BQ;
            if (tl < nt) {
                let l0 = tl * BQ;
                info = vec4<u32>(sg.row0 + l0, min(n - l0, BQ), sg.pos0 + p.pos_add + l0, sg.slot * p.slot_rows);
                break;
            }
            tl -= nt;
        }
        wtile = info;
    }
    let st = workgroupUniformLoad(&wtile);
    if (g >= p.n_j) { return; }
    let j = p.j_begin + g;                       // split of the slot
    let t0 = st.x;                               // batch row of the tile's first row
    let nt_tile = st.y;                          // valid rows in this tile
    if (nt_tile == 0u) { return; }
    let rv = nt_tile * HB;                       // valid rows: a prefix of the tile
    let s0 = j * p.split;                        // positions of the slot
    let kv_hi = st.z + nt_tile;                  // n_kv of the tile's last row
    if (s0 >= kv_hi) { return; }
    let sbase = st.w;                            // cache row of the slot's position 0
    if (sbase + s0 < p.row0 || sbase + s0 - p.row0 >= p.rows) { return; }   // split in another part
    let s_end = min(s0 + p.split, kv_hi);
    let grp = p.n_head / p.n_kv_head;
    let h0 = kh * grp + hb * HB;
    let nkv0 = st.z + 1u;                        // n_kv of row r: nkv0 + r / HB

    // q rows of the tile into workgroup memory (rows past n_tok are zero and never used)
    for (var i = lid; i < R * D4; i += NT) {
        let r = i / D4;
        var qv = vec4<f32>(0.0);
        if (r < rv) {
            let b = p.q_off + (t0 + r / HB) * p.q_ts + (h0 + r % HB) * p.q_hs + (i % D4) * 4u;
            qv = vec4<f32>(Q[b], Q[b + 1u], Q[b + 2u], Q[b + 3u]);
        }
        qs[i] = qv;
    }
    workgroupBarrier();

    let kk = lid % C;            // score phase: this thread's key in the chunk
    let kp = lid / C;            //   and its half of the head dim
    let d4 = lid % D4;           // P.V phase: this thread's vec4 of the head dim
    let rg = lid / D4;           //   and its rows rg, rg + RG, ...
    let row_stride = p.n_kv_head * D4;
    var acc: array<vec4<f32>, RPV>;
    var lsum: array<f32, RPV>;
    var mrow: array<f32, RPV>;
    var nvr: array<u32, RPV>;
    for (var ii = 0u; ii < RPV; ii++) {
        acc[ii] = vec4<f32>(0.0);
        lsum[ii] = 0.0;
        mrow[ii] = 0.0;
    }

    var par = 0u;
    for (var cs = s0; cs < s_end; cs += C) {
        let nvmax = min(C, s_end - cs);          // keys of this chunk some row sees
        let first = cs == s0;
        // half-dots of key cs + kk with every row
        var sc: array<f32, R>;
        for (var r = 0u; r < R; r++) { sc[r] = 0.0; }
        if (kk < nvmax) {
            let kb = p.kc_off + (sbase + cs + kk - p.row0) * row_stride + kh * D4 + kp * DH;
            let qb = kp * DH;
            for (var e0 = 0u; e0 < DH; e0 += UNR) {
                var kv: array<vec4<f32>, UNR>;
                for (var u = 0u; u < UNR; u++) { kv[u] = vec4<f32>(KC[kb + e0 + u]); }
                for (var u = 0u; u < UNR; u++) {
                    for (var r = 0u; r < R; r++) {
                        if (r < rv) { sc[r] += dot(qs[r * D4 + qb + e0 + u], kv[u]); }
                    }
                }
            }
        }
        for (var r = 0u; r < R; r++) { ps[(r * C + kk) * KP + kp] = sc[r]; }
        workgroupBarrier();
        // segment maxima: thread = (row, segment of SEG keys)
        {
            let r = lid / NSEG;
            let sg = lid % NSEG;
            if (r < rv) {
                let n_kv = nkv0 + r / HB;
                var m = NEG;
                if (n_kv > cs) {
                    let nv = min(n_kv - cs, C);
                    for (var k = sg * SEG; k < min(sg * SEG + SEG, nv); k++) { m = max(m, score(r, k)); }
                }
                mp[r * NSEG + sg] = m;
            }
        }
        workgroupBarrier();
        // probabilities exp(s - m) of the keys each row sees (the others are never read)
        for (var i = lid; i < R * C; i += NT) {
            let r = i / C;
            let k = i % C;
            if (r < rv && cs + k < nkv0 + r / HB) {
                ps[i * KP] = exp(score(r, k) - row_max(r, first, par));
            }
        }
        workgroupBarrier();
        // acc = acc * exp(m_old - m_new) + sum_k p_k v_k in key order; a row skips the keys it
        // does not see, so the tile's other tokens change nothing
        if (rg < RG) {
            for (var ii = 0u; ii < RPV; ii++) {
                let r = rg + ii * RG;
                var nv = 0u;
                if (r < rv) {
                    let n_kv = nkv0 + r / HB;
                    if (n_kv > cs) { nv = min(n_kv - cs, C); }
                }
                nvr[ii] = nv;
                if (nv > 0u) {
                    let mn = row_max(r, first, par);
                    if (!first) {
                        let a = exp(mrow[ii] - mn);
                        acc[ii] = acc[ii] * a;
                        lsum[ii] = lsum[ii] * a;
                    }
                    mrow[ii] = mn;
                    if (d4 == 0u) { ms[(1u - par) * R + r] = mn; }
                }
            }
            let vb = p.vc_off + (sbase + cs - p.row0) * row_stride + kh * D4 + d4;
            for (var k0 = 0u; k0 < nvmax; k0 += UNR) {
                var v: array<vec4<f32>, UNR>;
                for (var u = 0u; u < UNR; u++) { v[u] = vec4<f32>(VC[vb + min(k0 + u, nvmax - 1u) * row_stride]); }
                for (var u = 0u; u < UNR; u++) {
                    let k = k0 + u;
                    for (var ii = 0u; ii < RPV; ii++) {
                        if (k < nvr[ii]) {
                            let pk = ps[((rg + ii * RG) * C + k) * KP];
                            acc[ii] += pk * v[u];
                            lsum[ii] += pk;
                        }
                    }
                }
            }
        }
        par = 1u - par;
        workgroupBarrier();
    }

    // this split's state of every row that sees it
    if (rg < RG) {
        let rec = D4 + 1u;
        for (var ii = 0u; ii < RPV; ii++) {
            let r = rg + ii * RG;
            if (r < rv && nkv0 + r / HB > s0) {
                let b = p.ws_off + (((t0 + r / HB) * p.n_head + h0 + r % HB) * p.win + j - p.j0) * rec;
                WS[b + 1u + d4] = acc[ii];
                if (d4 == 0u) { WS[b] = vec4<f32>(mrow[ii], lsum[ii], 0.0, 0.0); }
            }
        }
    }
}
