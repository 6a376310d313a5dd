// Gated attention, split-K combine (wgmtp/kernels/attention.py attention; twin
// reference.attention.attention): folds the split states written by attention.wgsl into one
// running state per (token, head), ALWAYS sequentially in split order j = 0, 1, 2, ...:
//   M' = max(M, m_j);  a = exp(M - M'), b = exp(m_j - M');  L = L a + l_j b;  acc = acc a + acc_j b
// starting from split 0's state. A program with a small workspace runs the splits in windows of
// `win` splits (attention.wgsl for the window, then this kernel); the running state is kept in the
// workspace between windows (f32, exact), so the result is the same for every window size.
// The running state alternates between two planes by window parity (window w = j0 / win reads
// plane w % 2 and writes plane (w + 1) % 2), so no thread overwrites a header another still reads.
// When the window holds the token's last split, out = acc / L / (1 + exp(-gate)) is written
// (no gate when has_gate = 0).
// Batch row t belongs to the segment holding it (include/segments.wgsl; docs/ARCHITECTURE.md,
// "Slots"): it is at position pos = pos0 + pos_add + (t - row0) of that segment's slot and has
// ceil((pos + 1) / S) splits (of its slot). Rows in no segment are not written.
// Workspace: split records of (t, h, j) at vec4 index ws_off + ((t*H + h) * win + j - j0) * (D/4+1),
//   [0] = (m, l, 0, 0), then acc; running states at st_off + ((plane*max_tok + t)*H + h) * (D/4+1)
//   (two planes), same form.
// gate (t, h, d) = G[g_off + t*g_ts + h*g_hs + d]; out (t, h, d) = O[o_off + t*o_ts + h*o_hs + d].
// Bindings: 0 params P (uniform), 1 STEP (u32 segment records, segment s at seg_off + s*8: n_tok,
//   pos0, src, max_emit, slot, row0; rw), 2 WS (vec4<f32>, rw), 3 G (f32, rw),
//   4 O (f32, rw).
// Dispatch: max_tok * H workgroups of 64 threads over x/y (grid1d), one (t, h) each; thread i
//   handles the head dim's vec4 i. Rows in no segment and rows whose splits all lie before this
//   window return at once.
// Defines: D (head dim, multiple of 4, <= 256).

struct P {
    seg_off: u32, pos_add: u32, n_head: u32, max_tok: u32,
    split: u32, j0: u32, win: u32, ws_off: u32,
    st_off: u32, has_gate: u32, g_off: u32, g_ts: u32,
    g_hs: u32, o_off: u32, o_ts: u32, o_hs: u32,
    n_seg: u32,
};
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> STEP: array<u32>;
@group(0) @binding(2) var<storage, read_write> WS: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> G: array<f32>;
@group(0) @binding(4) var<storage, read_write> O: array<f32>;

#include "include/segments.wgsl"

const D4: u32 = {{D}}u / 4u;
const REC: u32 = D4 + 1u;
const UNR: u32 = 8u;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let g = wid.x + wid.y * nwg.x;
    let t = g / p.n_head;
    let h = g % p.n_head;
    if (t >= p.max_tok || lid >= D4) { return; }
    let s = seg_of_row(t);
    if (s >= p.n_seg) { return; }
    let sg = seg_at(s);
    let n_kv = sg.pos0 + p.pos_add + (t - sg.row0) + 1u;
    let ns = (n_kv + p.split - 1u) / p.split;
    if (p.j0 >= ns) { return; }
    let j_end = min(p.j0 + p.win, ns);
    let th = t * p.n_head + h;
    let wb = p.ws_off + th * p.win * REC;
    let plane = (p.j0 / p.win) % 2u;
    let sb = p.st_off + (plane * p.max_tok * p.n_head + th) * REC;
    let sb_out = p.st_off + ((1u - plane) * p.max_tok * p.n_head + th) * REC;
    var j = p.j0;
    var hd: vec4<f32>;
    var acc: vec4<f32>;
    if (j == 0u) {
        hd = WS[wb];
        acc = WS[wb + 1u + lid];
        j = 1u;
    } else {
        hd = WS[sb];
        acc = WS[sb + 1u + lid];
    }
    var m = hd.x;
    var l = hd.y;
    for (; j < j_end; j += UNR) {               // UNR records loaded at once, folded in order
        var hs: array<vec4<f32>, UNR>;
        var xs: array<vec4<f32>, UNR>;
        for (var u = 0u; u < UNR; u++) {
            let rb = wb + (min(j + u, j_end - 1u) - p.j0) * REC;
            hs[u] = WS[rb];
            xs[u] = WS[rb + 1u + lid];
        }
        for (var u = 0u; u < UNR; u++) {
            if (j + u < j_end) {
                let m2 = max(m, hs[u].x);
                let a = exp(m - m2);
                let b = exp(hs[u].x - m2);
                l = l * a + hs[u].y * b;
                acc = acc * a + xs[u] * b;
                m = m2;
            }
        }
    }
    if (j_end < ns) {
        WS[sb_out + 1u + lid] = acc;
        if (lid == 0u) { WS[sb_out] = vec4<f32>(m, l, 0.0, 0.0); }
        return;
    }
    var o = acc / l;
    if (p.has_gate != 0u) {
        let gb = p.g_off + t * p.g_ts + h * p.g_hs + lid * 4u;
        o = o / (vec4<f32>(1.0) + exp(-vec4<f32>(G[gb], G[gb + 1u], G[gb + 2u], G[gb + 3u])));
    }
    let ob = p.o_off + t * p.o_ts + h * p.o_hs + lid * 4u;
    O[ob] = o.x;
    O[ob + 1u] = o.y;
    O[ob + 2u] = o.z;
    O[ob + 3u] = o.w;
}
