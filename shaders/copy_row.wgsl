// copy_row: dst[dst_off + drow * stride + 0..n) = src[src_off + (idx + add) * stride + 0..n),
// idx = ids[idx_off]; drow = ids[dst_idx_off] when has_dst (a row chosen on the GPU side too: a
// sequence's slot from its step record), else 0.
// Moves the row selected by a GPU-side index (accepted count k, or n_tok - 1 from a step record)
// without a host round trip (twin: reference.spec.copy_row).
// Bindings: 0 params Q, 1 ids (u32 read_write), 2 src (f32 read_write), 3 dst (f32 read_write).
// Dispatch: ceil(n / 256) workgroups of 256 (grid1d).
// Dispatched by wgmtp/kernels/spec.py copy_row.
struct Q { n: u32, src_off: u32, stride: u32, dst_off: u32, idx_off: u32, add: i32, dst_idx_off: u32,
           has_dst: u32 };
@group(0) @binding(0) var<uniform> q: Q;
@group(0) @binding(1) var<storage, read_write> ids: array<u32>;
@group(0) @binding(2) var<storage, read_write> src: array<f32>;
@group(0) @binding(3) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * 256u + lid;
    if (i >= q.n) { return; }
    let row = u32(i32(ids[q.idx_off]) + q.add);
    var d = q.dst_off + i;
    if (q.has_dst != 0u) { d = d + ids[q.dst_idx_off] * q.stride; }
    dst[d] = src[q.src_off + row * q.stride + i];
}
