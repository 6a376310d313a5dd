// Records the subgroup size each invocation of a 256-thread workgroup runs with.
// Bindings: 0 out (storage read_write u32[256]). Dispatch: 1 workgroup. Only compiled with SUBGROUPS.
// Dispatched by wgmtp/gpu/adapters.py probe_subgroup_sizes (`wgmtp devices`); no twin.
@group(0) @binding(0) var<storage, read_write> out: array<u32>;

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(subgroup_size) sgs: u32) {
    out[lid] = sgs;
}
