// SwiGLU, the one activation kernel: for rows q < n_tok * k (n_tok = step record word 0, clamped
// to max_tok) and columns c < width:
//     O[o_off + q*o_stride + c] = silu(G[g_off + q*g_stride + c]) * U[u_off + q*u_stride + c]
// The dense FFN (k = 1; gate and up rows of a stacked projection output, or two buffers) and the
// MoE experts (k pairs per token, gate then up in each pair's row) both use it.
// Bindings: 0 params (uniform P), 1 G gate (storage read_write f32), 2 U up (storage read_write
//   f32; may be G's buffer), 3 O out (storage read_write f32; may be G's buffer, written where it
//   was read), 4 S step records (storage read_write u32).
// Dispatch: ceil(max_tok * k * width / 256) workgroups of 256 threads, spread over x/y (grid1d),
//   one element each; elements past n_tok * k * width exit.
// Dispatched by wgmtp/kernels/elementwise.py swiglu; twin reference.ops.swiglu.
struct P {
    width: u32, k: u32, max_tok: u32, step_off: u32,
    g_off: u32, g_stride: u32, u_off: u32, u_stride: u32,
    o_off: u32, o_stride: u32,
};
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> G: array<f32>;
@group(0) @binding(2) var<storage, read_write> U: array<f32>;
@group(0) @binding(3) var<storage, read_write> O: array<f32>;
@group(0) @binding(4) var<storage, read_write> S: array<u32>;

const WG: u32 = 256u;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * WG + lid;
    let n = min(S[p.step_off], p.max_tok);
    if (i >= n * p.k * p.width) { return; }
    let q = i / p.width;
    let c = i % p.width;
    let g = G[p.g_off + q * p.g_stride + c];
    O[p.o_off + q * p.o_stride + c] = (g / (1.0 + exp(-g))) * U[p.u_off + q * p.u_stride + c];
}
