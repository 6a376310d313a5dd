// include/wg_reduce.wgsl -- INCLUDE (not a kernel): f32 sum and max over a workgroup, shared by
// norm.wgsl, moe_route.wgsl (route) and moe_combine.wgsl (SHEXP), in a fixed order: subgroup
// partials combined by thread 0 in slot order, or a binary tree in workgroup memory.
// Provides: wg_max(v, lid), wg_sum(v, lid) -> f32 (every thread gets the result; each call ends
//   with a barrier, so calls may follow each other); workgroup red[WG], red_out; the private
//   sg_lane_, sg_size_.
// Expects: the including shader defines the constant WG (threads, a power of two) and, when
//   SUBGROUPS, copies its subgroup builtins into sg_lane_ / sg_size_; define SUBGROUPS. No
//   bindings.

var<workgroup> red: array<f32, WG>;
var<workgroup> red_out: f32;
var<private> sg_lane_: u32;
var<private> sg_size_: u32;

// max over the workgroup (exact in any order)
fn wg_max(v: f32, lid: u32) -> f32 {
#if SUBGROUPS
    let sv = subgroupMax(v);
    if (sg_lane_ == 0u) { red[lid / sg_size_] = sv; }
    workgroupBarrier();
    if (lid == 0u) {
        var s = red[0];
        for (var i = 1u; i < (WG + sg_size_ - 1u) / sg_size_; i++) { s = max(s, red[i]); }
        red_out = s;
    }
#else
    red[lid] = v;
    for (var h = WG / 2u; h > 0u; h >>= 1u) {
        workgroupBarrier();
        if (lid < h) { red[lid] = max(red[lid], red[lid + h]); }
    }
    workgroupBarrier();
    if (lid == 0u) { red_out = red[0]; }
#endif
    let r = workgroupUniformLoad(&red_out);
    workgroupBarrier();
    return r;
}

// sum over the workgroup in a fixed order
fn wg_sum(v: f32, lid: u32) -> f32 {
#if SUBGROUPS
    let sv = subgroupAdd(v);
    if (sg_lane_ == 0u) { red[lid / sg_size_] = sv; }
    workgroupBarrier();
    if (lid == 0u) {
        var s = red[0];
        for (var i = 1u; i < (WG + sg_size_ - 1u) / sg_size_; i++) { s += red[i]; }
        red_out = s;
    }
#else
    red[lid] = v;
    for (var h = WG / 2u; h > 0u; h >>= 1u) {
        workgroupBarrier();
        if (lid < h) { red[lid] += red[lid + h]; }
    }
    workgroupBarrier();
    if (lid == 0u) { red_out = red[0]; }
#endif
    let r = workgroupUniformLoad(&red_out);
    workgroupBarrier();
    return r;
}
