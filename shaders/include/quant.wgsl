// include/quant.wgsl -- INCLUDE (not a kernel): weight decoding for every supported ggml type, in
// the word-aligned GPU layout of wgmtp/quants.py (repack_for_gpu, GPU_BLOCK_WORDS).
// Included by: include/matvec_common.wgsl (so matvec.wgsl and moe.wgsl), matvec_rowwise.wgsl,
//   matmul.wgsl, embed.wgsl.
// Provides: struct D8 (8 f32 as two vec4: lo, hi), deq8(base, u) -> D8, deq1(base, c) -> f32 and
//   the block size QK (elements) of the selected type; with SCALED also struct DS and
//   deq8s(base, u) -> DS; the helpers f16lo, f16hi, byte4, nib4, hi4, nib8, sbytes4, kscale, kdm,
//   knib8 (their names are taken in the including shader).
// Expects: no bindings of its own -- the including shader declares the weight words as
//     var<storage, read> W: array<u32>;
//   and exactly one define Q_<NAME> (Q_F32, Q_F16, Q_BF16, Q_Q8_0, Q_Q4_0, Q_Q4_1, Q_Q5_0, Q_Q5_1,
//   Q_Q4_K, Q_Q5_K, Q_Q6_K), with FLOAT as well for F32/F16/BF16 and SCALED for Q8_0, Q4_0, Q5_0,
//   Q6_K (kernels/linear.qtype_defines sets them).
//
// The unit of decoding is 8 consecutive elements of a row ("unit" u = elements 8u .. 8u+7): in
// every block format those 8 share one scale (and min), and their quant bits come from 2
// consecutive words, so one call does 2 (4 for F16/BF16, 8 for F32) loads plus the scale words.
//   deq8(base, u) -> D8   unit u of the row whose first word is W[base]   (8u + 8 <= cols)
//   deq1(base, c) -> f32  element c of that row (row tails of the float types, cols % 8 != 0)
// Results equal quants.dequantize bit for bit: every scale x quant product is exact in f32 and
// the one offset (Q4_1/Q5_1 "+ m", K-quants "- dmin*min") is added to an exact product, so a
// fused multiply-add rounds it the same way.

struct D8 { lo: vec4<f32>, hi: vec4<f32> };

// Symmetric formats (Q8_0, Q4_0, Q5_0, Q6_K) also give a unit as (integer quants q, scale s) with
// w = s * q exactly (SCALED is defined for them): a mat-vec can then take s out of the dot
// product, one multiply per unit instead of eight. (kernels/linear.qtype_defines sets SCALED.)
struct DS { q: D8, s: f32 };

// f16 halves of a word (IEEE, subnormals included on conforming drivers).
fn f16lo(w: u32) -> f32 { return unpack2x16float(w).x; }
fn f16hi(w: u32) -> f32 { return unpack2x16float(w).y; }

// Bytes 0..3 of w, each shifted right by sh and masked.
fn byte4(w: u32, sh: u32, mask: u32) -> vec4<u32> {
    return (vec4<u32>(w) >> vec4<u32>(sh, sh + 8u, sh + 16u, sh + 24u)) & vec4<u32>(mask);
}

// 4 nibbles (bytes 0..3 of w, shifted right by sh = 0 or 4) as floats.
fn nib4(w: u32, sh: u32) -> vec4<f32> { return vec4<f32>(byte4(w, sh, 15u)); }

// Q5 5th bits of 4 elements as floats (0 or 16): bits b0, b0 + step, b0 + 2 step, b0 + 3 step.
fn hi4(bits: u32, b0: u32, step: u32) -> vec4<f32> {
    let b = (vec4<u32>(bits) >> vec4<u32>(b0, b0 + step, b0 + 2u * step, b0 + 3u * step)) & vec4<u32>(1u);
    return vec4<f32>(b << vec4<u32>(4u));
}

// Q4_0/Q4_1/Q5_0/Q5_1: the nibbles of unit s (0..3) of a 32-element block whose qs[16] start at
// word q (byte j: element j in the low nibble, j+16 in the high one): units 0, 1 are the low
// nibbles of words q, q+1 and q+2, q+3; units 2, 3 the high nibbles of the same words.
fn nib8(q: u32, s: u32) -> D8 {
    let w = q + 2u * (s & 1u);
    let sh = (s >> 1u) * 4u;
    return D8(nib4(W[w], sh), nib4(W[w + 1u], sh));
}

// 4 signed bytes of w as floats.
fn sbytes4(w: u32) -> vec4<f32> {
    return vec4<f32>(unpack4xI8(w));
}

#if Q_F32
const QK: u32 = 1u;
fn deq8(base: u32, u: u32) -> D8 {
    let o = base + u * 8u;
    return D8(bitcast<vec4<f32>>(vec4<u32>(W[o], W[o + 1u], W[o + 2u], W[o + 3u])),
              bitcast<vec4<f32>>(vec4<u32>(W[o + 4u], W[o + 5u], W[o + 6u], W[o + 7u])));
}
fn deq1(base: u32, c: u32) -> f32 { return bitcast<f32>(W[base + c]); }
#endif

#if Q_F16
const QK: u32 = 1u;
fn deq8(base: u32, u: u32) -> D8 {
    let o = base + u * 4u;
    return D8(vec4<f32>(unpack2x16float(W[o]), unpack2x16float(W[o + 1u])),
              vec4<f32>(unpack2x16float(W[o + 2u]), unpack2x16float(W[o + 3u])));
}
fn deq1(base: u32, c: u32) -> f32 {
    let v = unpack2x16float(W[base + (c >> 1u)]);
    return select(v.x, v.y, (c & 1u) == 1u);
}
#endif

#if Q_BF16
const QK: u32 = 1u;
fn bf2(w: u32) -> vec2<f32> { return bitcast<vec2<f32>>(vec2<u32>(w << 16u, w & 0xffff0000u)); }
fn deq8(base: u32, u: u32) -> D8 {
    let o = base + u * 4u;
    return D8(vec4<f32>(bf2(W[o]), bf2(W[o + 1u])), vec4<f32>(bf2(W[o + 2u]), bf2(W[o + 3u])));
}
fn deq1(base: u32, c: u32) -> f32 {
    let v = bf2(W[base + (c >> 1u)]);
    return select(v.x, v.y, (c & 1u) == 1u);
}
#endif

#if Q_Q8_0
// 9 words: [0] d (low half), [1..8] q int8[32]
const QK: u32 = 32u;
fn deq8s(base: u32, u: u32) -> DS {
    let o = base + (u >> 2u) * 9u;
    let s = u & 3u;
    return DS(D8(sbytes4(W[o + 1u + 2u * s]), sbytes4(W[o + 2u + 2u * s])), f16lo(W[o]));
}
#endif

#if Q_Q4_0
// 5 words: [0] d, [1..4] qs[16]; byte j: element j (low nibble), j+16 (high nibble)
const QK: u32 = 32u;
fn deq8s(base: u32, u: u32) -> DS {
    let o = base + (u >> 2u) * 5u;
    let q = nib8(o + 1u, u & 3u);
    return DS(D8(q.lo - 8.0, q.hi - 8.0), f16lo(W[o]));
}
#endif

#if Q_Q4_1
// 5 words: [0] d | m << 16, [1..4] qs[16]
const QK: u32 = 32u;
fn deq8(base: u32, u: u32) -> D8 {
    let o = base + (u >> 2u) * 5u;
    let q = nib8(o + 1u, u & 3u);
    let dm = unpack2x16float(W[o]);
    return D8(dm.x * q.lo + dm.y, dm.x * q.hi + dm.y);
}
#endif

#if Q_Q5_0
// 6 words: [0] d, [1] qh (bit j = 5th bit of element j), [2..5] qs[16]
const QK: u32 = 32u;
fn deq8s(base: u32, u: u32) -> DS {
    let o = base + (u >> 2u) * 6u;
    let s = u & 3u;
    let q = nib8(o + 2u, s);
    let qh = W[o + 1u];
    return DS(D8(q.lo + hi4(qh, 8u * s, 1u) - 16.0, q.hi + hi4(qh, 8u * s + 4u, 1u) - 16.0), f16lo(W[o]));
}
#endif

#if Q_Q5_1
// 6 words: [0] d | m << 16, [1] qh, [2..5] qs[16]
const QK: u32 = 32u;
fn deq8(base: u32, u: u32) -> D8 {
    let o = base + (u >> 2u) * 6u;
    let s = u & 3u;
    let q = nib8(o + 2u, s);
    let dm = unpack2x16float(W[o]);
    let qh = W[o + 1u];
    return D8(dm.x * (q.lo + hi4(qh, 8u * s, 1u)) + dm.y, dm.x * (q.hi + hi4(qh, 8u * s + 4u, 1u)) + dm.y);
}
#endif

// Q4_K/Q5_K 6-bit (scale, min) of sub-block j (0..7); the 12 scale bytes start at W[o + 1].
// j < 4: (b0[j] & 63, b1[j] & 63); j >= 4: ((b2[k] & 15) | (b0[k] >> 6) << 4,
// (b2[k] >> 4) | (b1[k] >> 6) << 4) with k = j - 4 and b0, b1, b2 the three scale words; so
// both cases read byte k = j & 3 of the same three words (branch-free).
fn kscale(o: u32, j: u32) -> vec2<f32> {
    let sh = (j & 3u) * 8u;
    let a = (W[o + 1u] >> sh) & 255u;
    let b = (W[o + 2u] >> sh) & 255u;
    let e = (W[o + 3u] >> sh) & 255u;
    let lo = j < 4u;
    let sc = select((e & 15u) | ((a >> 6u) << 4u), a & 63u, lo);
    let mn = select((e >> 4u) | ((b >> 6u) << 4u), b & 63u, lo);
    return vec2<f32>(f32(sc), f32(mn));
}

// Q4_K/Q5_K: (d * scale, dmin * min) of sub-block j of the block at word o.
fn kdm(o: u32, j: u32) -> vec2<f32> { return unpack2x16float(W[o]) * kscale(o, j); }

// Q4_K/Q5_K: the nibbles of unit s (0..31) of a block whose qs[128] start at word q: chunk
// c = s/8 (64 elements, qs[32c..32c+32)), p = s%8: p<4 low nibbles (sub-block 2c = s/4), p>=4
// high nibbles (sub-block 2c+1 = s/4), l = 8*(p%4) .. +8.
fn knib8(q: u32, s: u32) -> D8 {
    let w = q + 8u * (s >> 3u) + 2u * (s & 3u);
    let sh = 4u * ((s >> 2u) & 1u);
    return D8(nib4(W[w], sh), nib4(W[w + 1u], sh));
}

#if Q_Q4_K
// 36 words: [0] d | dmin << 16, [1..3] scales[12], [4..35] qs[128]; unit s of a block: knib8
const QK: u32 = 256u;
fn deq8(base: u32, u: u32) -> D8 {
    let o = base + (u >> 5u) * 36u;
    let s = u & 31u;
    let q = knib8(o + 4u, s);
    let dm = kdm(o, s >> 2u);
    return D8(dm.x * q.lo - dm.y, dm.x * q.hi - dm.y);
}
#endif

#if Q_Q5_K
// 44 words: [0] d | dmin << 16, [1..3] scales[12], [4..11] qh[32], [12..43] qs[128]
// as Q4_K; the 5th bit of element l of sub-block j is bit j of qh[l]
const QK: u32 = 256u;
fn deq8(base: u32, u: u32) -> D8 {
    let o = base + (u >> 5u) * 44u;
    let s = u & 31u;
    let sb = s >> 2u;
    let q = knib8(o + 12u, s);
    let qh = o + 4u + 2u * (s & 3u);          // qh[l0 .. l0+8], l0 = 8 * (s % 4)
    let dm = kdm(o, sb);
    return D8(dm.x * (q.lo + hi4(W[qh], sb, 8u)) - dm.y, dm.x * (q.hi + hi4(W[qh + 1u], sb, 8u)) - dm.y);
}
#endif

#if Q_Q6_K
// 53 words: [0..31] ql[128], [32..47] qh[64], [48..51] scales int8[16], [52] d (low half)
// element 128n + 32g + l (g 0..3, l 0..31): low 4 bits from ql[64n + 32(g&1) + l] (nibble g>>1),
// high 2 bits from qh[32n + l] >> 2g, scale scales[8n + l/16 + 2g]; value d*sc*(q - 32)
const QK: u32 = 256u;
fn deq8s(base: u32, u: u32) -> DS {
    let o = base + (u >> 5u) * 53u;
    let s = u & 31u;
    let n = s >> 4u;
    let g = (s >> 2u) & 3u;
    let l0 = 8u * (s & 3u);
    let wl = o + ((64u * n + 32u * (g & 1u) + l0) >> 2u);
    let wh = o + 32u + ((32u * n + l0) >> 2u);
    let sh = 4u * (g >> 1u);
    let hsh = 2u * g;
    let k = 8u * n + (l0 >> 4u) + 2u * g;
    let sc = f32((bitcast<i32>(W[o + 48u + (k >> 2u)] << (24u - 8u * (k & 3u)))) >> 24u);
    let q0 = byte4(W[wl], sh, 15u) | (byte4(W[wh], hsh, 3u) << vec4<u32>(4u));
    let q1 = byte4(W[wl + 1u], sh, 15u) | (byte4(W[wh + 1u], hsh, 3u) << vec4<u32>(4u));
    return DS(D8(vec4<f32>(q0) - 32.0, vec4<f32>(q1) - 32.0), f16lo(W[o + 52u]) * sc);
}
#endif

#if SCALED
fn deq8(base: u32, u: u32) -> D8 {
    let v = deq8s(base, u);
    return D8(v.s * v.q.lo, v.s * v.q.hi);
}
#endif

#if !FLOAT
// Block types have whole 8-element units in every row (cols % 32 == 0); deq1 exists so that
// shared kernel code compiles, and is never reached for them.
fn deq1(base: u32, c: u32) -> f32 {
    let v = deq8(base, c >> 3u);
    let i = c & 7u;
    return select(v.hi[i & 3u], v.lo[i & 3u], i < 4u);
}
#endif
