// Elementwise ops on f32 activations: add, swiglu (silu(a) * b), sigmoid_mul (a * sigmoid(b)).
// Bindings: 0 params (uniform P), 1 a, 2 b, 3 out -- all storage read_write f32 (activations may
//   share one arena buffer; offsets are in elements), 4 step (u32 step records).
// n = n_tok (step record word 0) * row_len elements, so one recorded program serves any batch.
// Dispatch: ceil(max_tokens * row_len / 256) workgroups of 256 threads, spread over x/y (grid1d);
//   entry points add, swiglu, sigmoid_mul.
struct P { row_len: u32, a_off: u32, b_off: u32, o_off: u32, step_off: u32 };
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> A: array<f32>;
@group(0) @binding(2) var<storage, read_write> B: array<f32>;
@group(0) @binding(3) var<storage, read_write> O: array<f32>;
@group(0) @binding(4) var<storage, read_write> step: array<u32>;

fn idx(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.x + wid.y * nwg.x) * 256u + lid;
}

@compute @workgroup_size(256)
fn add(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_index) lid: u32) {
    let i = idx(wid, nwg, lid);
    if (i >= step[p.step_off] * p.row_len) { return; }
    O[p.o_off + i] = A[p.a_off + i] + B[p.b_off + i];
}

@compute @workgroup_size(256)
fn swiglu(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let i = idx(wid, nwg, lid);
    if (i >= step[p.step_off] * p.row_len) { return; }
    let g = A[p.a_off + i];
    O[p.o_off + i] = (g / (1.0 + exp(-g))) * B[p.b_off + i];
}

@compute @workgroup_size(256)
fn sigmoid_mul(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let i = idx(wid, nwg, lid);
    if (i >= step[p.step_off] * p.row_len) { return; }
    O[p.o_off + i] = A[p.a_off + i] / (1.0 + exp(-B[p.b_off + i]));
}
