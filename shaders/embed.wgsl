// Embedding gather: for t < n_tok (step record) whose id = I[ids_off + t*ids_stride] lies in this part's
// rows [row0, row0 + rows):   O[out_off + t*out_stride + c] = W[id - row0, c]  (dequantized f32)
// Tokens whose id falls in another part are left untouched (one dispatch per part covers all).
// Bindings: 0 params (uniform P), 1 W weight words (storage read, array<u32>, one row part),
//   2 I token ids (storage read_write u32), 3 O (storage read_write f32), 4 S step records
//   (read_write u32). I, O and S may share one arena buffer.
// Dispatch: one workgroup of 64 threads per token slot (max_tok, grid1d); threads stride over
//   the row's 8-element units (coalesced loads and stores).
// Dispatched by wgmtp/kernels/linear.py embed; twin reference.linear.embed.
#include "include/quant.wgsl"

struct P {
    cols: u32, row0: u32, rows: u32, row_words: u32,
    ids_off: u32, out_off: u32, out_stride: u32, step_off: u32,
    ids_stride: u32,
};
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> W: array<u32>;
@group(0) @binding(2) var<storage, read_write> I: array<u32>;
@group(0) @binding(3) var<storage, read_write> O: array<f32>;
@group(0) @binding(4) var<storage, read_write> S: array<u32>;

const WG: u32 = 64u;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let t = wid.x + wid.y * nwg.x;
    if (t >= S[p.step_off]) { return; }
    let id = I[p.ids_off + t * p.ids_stride];
    if (id < p.row0 || id - p.row0 >= p.rows) { return; }
    let base = (id - p.row0) * p.row_words;
    let ob = p.out_off + t * p.out_stride;
    let nu = p.cols >> 3u;
    for (var u = lid; u < nu; u += WG) {
        let w = deq8(base, u);
        let o = ob + u * 8u;
        O[o] = w.lo.x; O[o + 1u] = w.lo.y; O[o + 2u] = w.lo.z; O[o + 3u] = w.lo.w;
        O[o + 4u] = w.hi.x; O[o + 5u] = w.hi.y; O[o + 6u] = w.hi.z; O[o + 7u] = w.hi.w;
    }
#if FLOAT
    let c = nu * 8u + lid;
    if (c < p.cols) { O[ob + c] = deq1(base, c); }
#endif
}
