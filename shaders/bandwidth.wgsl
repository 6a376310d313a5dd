// Streaming-read bandwidth probe: every workgroup sums a contiguous range of vec4<f32> words, so
// the whole buffer is read exactly once with coalesced loads (no twin function: the op suite
// compares with numpy sums per range).
// Bindings: 0 params P, 1 src (storage read, vec4<f32>), 2 out (storage read_write f32 [n_wg]).
// Dispatch: n_wg workgroups of 256 threads (grid1d); workgroup w reads vec4s [w*per, (w+1)*per).
// Dispatched by wgmtp/kernels/bandwidth.py stream_sum (measure: the `wgmtp bench` roofline).
struct P { n_vec4: u32, per: u32 };
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
var<workgroup> part: array<f32, 256>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let w = wid.x + wid.y * nwg.x;
    let start = w * p.per;
    let end = min(start + p.per, p.n_vec4);
    var acc = vec4<f32>(0.0);
    for (var i = start + lid; i < end; i += 256u) {
        acc += src[i];
    }
    part[lid] = acc.x + acc.y + acc.z + acc.w;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s >>= 1u) {
        if (lid < s) { part[lid] += part[lid + s]; }
        workgroupBarrier();
    }
    if (lid == 0u) { out[w] = part[0]; }
}
