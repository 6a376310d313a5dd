// include/sortkey.wgsl -- INCLUDE (not a kernel), shared by argmax.wgsl and topk.wgsl: logits
// compared as (order-preserving u32 key, id) pairs, a total order, so selections are exact
// whatever the reduction order.
// Provides: NONE, okey (the key of a float), better (the pair order) and wg_best (the best pair
//   of the workgroup, in workgroup memory rk/ri of KEY_SLOTS entries).
// Expects: the including shader defines the constants WG (threads, a power of two) and
//   KEY_SLOTS (>= WG); define SUBGROUPS. No bindings.

const NONE: u32 = 0xffffffffu;
var<workgroup> rk: array<u32, KEY_SLOTS>;
var<workgroup> ri: array<u32, KEY_SLOTS>;

// Order-preserving key of a float: larger float -> larger key; -0 and +0 equal; NaN -> nan_key
// (NONE: above everything; 0: below everything). Real keys are >= key(-inf) = 0x007fffff.
fn okey(v: f32, nan_key: u32) -> u32 {
    var b = bitcast<u32>(v);
    if ((b & 0x7fffffffu) > 0x7f800000u) { return nan_key; }
    if (b == 0x80000000u) { b = 0u; }
    return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}

// (k1, i1) comes before (k2, i2): larger key, then lower id.
fn better(k1: u32, i1: u32, k2: u32, i2: u32) -> bool {
    return k1 > k2 || (k1 == k2 && i1 < i2);
}

// The best (key, id) of the workgroup, the same in every thread, using rk/ri[o .. o + WG).
fn wg_best(k: u32, i: u32, o: u32, lid: u32, sgs: u32, sgl: u32) -> vec2<u32> {
#if SUBGROUPS
    let mk = subgroupMax(k);
    let mi = subgroupMin(select(NONE, i, k == mk));
    if (sgl == 0u) { rk[o + lid / sgs] = mk; ri[o + lid / sgs] = mi; }
    workgroupBarrier();
    let n_sg = (WG + sgs - 1u) / sgs;
    var bk = rk[o];
    var bi = ri[o];
    for (var s = 1u; s < n_sg; s++) {
        if (better(rk[o + s], ri[o + s], bk, bi)) { bk = rk[o + s]; bi = ri[o + s]; }
    }
    return vec2<u32>(bk, bi);
#else
    rk[o + lid] = k;
    ri[o + lid] = i;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s && better(rk[o + lid + s], ri[o + lid + s], rk[o + lid], ri[o + lid])) {
            rk[o + lid] = rk[o + lid + s];
            ri[o + lid] = ri[o + lid + s];
        }
        workgroupBarrier();
    }
    return vec2<u32>(rk[o], ri[o]);
#endif
}
