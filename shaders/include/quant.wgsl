// include/quant.wgsl -- INCLUDE (not a kernel): weight decoding for every supported ggml type, in
// the word-aligned GPU layout of wgmtp/quants.py (repack_for_gpu, GPU_BLOCK_WORDS).
// Included by: include/matvec_common.wgsl (so matvec.wgsl and moe.wgsl), matvec_rowwise.wgsl,
//   matmul.wgsl, embed.wgsl.
// Provides: struct D8 (8 f32 as two vec4: lo, hi), deq8(base, u) -> D8, deq1(base, c) -> f32 and
//   the block size QK (elements) of the selected type; with SCALED also struct DS and
//   deq8s(base, u) -> DS; the helpers f16lo, f16hi, byte4, nib4, hi4, nib8, sbytes4, kscale, kdm,
//   knib8, wbyte, ubytes4, sgn4, ksign, iqdb, iq1v, lvl16, lvl16x4, KV_IQ4NL, KV_MXFP4, and per type kv4, kvf4 and the
//   codebook binding CB (their names are taken in the including shader).
// Expects: no bindings of its own -- the including shader declares the weight words as
//     var<storage, read> W: array<u32>;
//   and exactly one define Q_<NAME> (Q_F32, Q_F16, Q_BF16, Q_Q8_0, Q_Q4_0, Q_Q4_1, Q_Q5_0, Q_Q5_1,
//   Q_Q2_K, Q_Q3_K, Q_Q4_K, Q_Q5_K, Q_Q6_K, Q_IQ4_NL, Q_IQ4_XS, Q_MXFP4, Q_IQ3_XXS, Q_IQ3_S, Q_IQ2_XXS,
//   Q_IQ2_XS, Q_IQ2_S, Q_IQ1_S, Q_IQ1_M), with FLOAT as well for F32/F16/BF16, SCALED for the
//   symmetric types (all block types but Q4_1, Q5_1, Q2_K, Q4_K, Q5_K), and for the lattice types
//   (IQ3_XXS, IQ3_S, IQ2_XXS, IQ2_XS, IQ2_S, IQ1_S, IQ1_M) CODEBOOK with CB_BINDING, the binding
//   number of their codebook (kernels/linear.qtype_defines and linear.with_codebook set them).
// Binding (lattice types only): CB_BINDING, the codebook words (storage read, array<u32>,
//   quants.gpu_codebook), one past the including kernel's own bindings. A storage buffer rather
//   than `const` arrays: naga turns each dynamic index of a const array into a private copy of the
//   whole table, which made lavapipe take ~100 s to compile matmul.wgsl for one type and ran the
//   mat-vec slower (README, "Weight types").
//
// The unit of decoding is 8 consecutive elements of a row ("unit" u = elements 8u .. 8u+7): in
// every block format those 8 share one scale (and min), and their quant bits come from 2
// consecutive words, so one call does 2 (4 for F16/BF16, 8 for F32) loads plus the scale words.
//   deq8(base, u) -> D8   unit u of the row whose first word is W[base]   (8u + 8 <= cols)
//   deq1(base, c) -> f32  element c of that row (row tails of the float types, cols % 8 != 0)
// Results equal quants.dequantize bit for bit: every scale x quant product is exact in f32 and
// the one offset (Q4_1/Q5_1 "+ m", K-quants "- dmin*min") is added to an exact product, so a
// fused multiply-add rounds it the same way (the lattice values, IQ1's grid + delta and MXFP4's
// power-of-two scale are exact too).

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

// ---- Q2_K, Q3_K, IQ4_NL, IQ4_XS, MXFP4 and the lattice types (IQ3_XXS .. IQ1_M) ----------------
// Byte i of the words from W[w]: (W[w + i/4] >> 8 (i%4)) & 255.
fn wbyte(w: u32, i: u32) -> u32 { return (W[w + (i >> 2u)] >> (8u * (i & 3u))) & 255u; }

// 4 bytes of w as floats.
fn ubytes4(w: u32) -> vec4<f32> { return vec4<f32>(byte4(w, 0u, 255u)); }

// +1 / -1 for sign bits b0 .. b0+3 of s (bit set: negative).
fn sgn4(s: u32, b0: u32) -> vec4<f32> {
    return vec4<f32>(1.0) - 2.0 * vec4<f32>((vec4<u32>(s) >> vec4<u32>(b0, b0 + 1u, b0 + 2u, b0 + 3u)) & vec4<u32>(1u));
}

// ksigns_iq2xs[i]: 7 stored sign bits and the 8th that makes their count even.
fn ksign(i: u32) -> u32 { return i | ((countOneBits(i) & 1u) << 7u); }

#if CODEBOOK
// The lattice codebook of the selected type (quants.gpu_codebook), bound after the kernel's own
// bindings (the including kernel's wrapper appends it and sets CB_BINDING, linear.with_codebook).
@group(0) @binding({{CB_BINDING}}) var<storage, read> CB: array<u32>;
#endif

// IQ2/IQ3_XXS sub-block scale d * (0.5 + s) * mul (exact in f32, as ggml computes it).
fn iqdb(d: f32, s: u32, mul: f32) -> f32 { return d * (0.5 + f32(s)) * mul; }

// The 16 integer levels of a non-linear 4-bit type (IQ4_NL/IQ4_XS's kvalues_iq4nl, MXFP4's doubled
// E2M1), as int8 packed 4 per word (level i in byte i & 3 of word i >> 2), looked up by two selects
// and a shift: a `const` array indexed by a nibble became a private copy of the table at each call
// (naga), which ran these types' mat-vec 3x slower per byte than Q3_K's on lavapipe.
fn lvl16(p: vec4<u32>, i: u32) -> f32 {
    let w = select(select(p.x, p.y, (i & 4u) != 0u), select(p.z, p.w, (i & 4u) != 0u), (i & 8u) != 0u);
    return f32(bitcast<i32>(w << (24u - 8u * (i & 3u))) >> 24u);
}
fn lvl16x4(p: vec4<u32>, v: vec4<u32>) -> vec4<f32> {
    return vec4<f32>(lvl16(p, v.x), lvl16(p, v.y), lvl16(p, v.z), lvl16(p, v.w));
}
const KV_IQ4NL = vec4<u32>(0xbfad9881u, 0xf6eaddcfu, 0x26190d01u, 0x71594535u);   // -127 .. 113
const KV_MXFP4 = vec4<u32>(0x03020100u, 0x0c080604u, 0xfdfeff00u, 0xf4f8fafcu);   // 0 .. 12, 0 .. -12

#if Q_Q2_K
// 21 words: [0..3] scales[16] (low nibble scale, high nibble min), [4..19] qs[64], [20] d | dmin << 16.
// Unit s (0..31) = elements 8s..: n = s/16, j = (s/4)%4, h = (s/2)%2: 2-bit fields 2j of qs bytes
// 32n + 16h + 8(s%2) ..+8; its sub-block (scale byte) is s/2. value d*sc*q - dmin*m (ggml order).
const QK: u32 = 256u;
fn deq8(base: u32, u: u32) -> D8 {
    let o = base + (u >> 5u) * 21u;
    let s = u & 31u;
    let w = o + 4u + 8u * (s >> 4u) + 4u * ((s >> 1u) & 1u) + 2u * (s & 1u);
    let sh = 2u * ((s >> 2u) & 3u);
    let sc = wbyte(o, s >> 1u);
    let dm = unpack2x16float(W[o + 20u]);
    let dl = dm.x * f32(sc & 15u);
    let ml = dm.y * f32(sc >> 4u);
    return D8(dl * vec4<f32>(byte4(W[w], sh, 3u)) - ml, dl * vec4<f32>(byte4(W[w + 1u], sh, 3u)) - ml);
}
#endif

#if Q_Q3_K
// 28 words: [0..7] hmask[32], [8..23] qs[64], [24..26] scales[12], [27] d (low half). Unit s as
// Q2_K: low 2 bits from qs, the third from bit 4n + j of hmask[16h + 8(s%2) ..] (clear: minus 4);
// sub-block k = s/2 with the 6-bit scale (scales[k%8] >> 4(k/8)) & 15 | ((scales[8 + k%4] >> 2(k/4)) & 3) << 4.
const QK: u32 = 256u;
fn deq8s(base: u32, u: u32) -> DS {
    let o = base + (u >> 5u) * 28u;
    let s = u & 31u;
    let n = s >> 4u;
    let j = (s >> 2u) & 3u;
    let hw = o + 4u * ((s >> 1u) & 1u) + 2u * (s & 1u);
    let w = hw + 8u + 8u * n;
    let hb = 4u * n + j;
    let q0 = vec4<f32>(byte4(W[w], 2u * j, 3u) + (byte4(W[hw], hb, 1u) << vec4<u32>(2u))) - 4.0;
    let q1 = vec4<f32>(byte4(W[w + 1u], 2u * j, 3u) + (byte4(W[hw + 1u], hb, 1u) << vec4<u32>(2u))) - 4.0;
    let k = s >> 1u;
    let ls = ((wbyte(o + 24u, k & 7u) >> (4u * (k >> 3u))) & 15u) | (((wbyte(o + 24u, 8u + (k & 3u)) >> (2u * (k >> 2u))) & 3u) << 4u);
    return DS(D8(q0, q1), f16lo(W[o + 27u]) * (f32(ls) - 32.0));
}
#endif

#if Q_IQ4_NL
// 5 words: [0] d, [1..4] qs[16] as Q4_0; each nibble indexes kvalues_iq4nl.
const QK: u32 = 32u;
fn kv4(v: vec4<u32>) -> vec4<f32> { return lvl16x4(KV_IQ4NL, v); }
fn deq8s(base: u32, u: u32) -> DS {
    let o = base + (u >> 2u) * 5u;
    let s = u & 3u;
    let w = o + 1u + 2u * (s & 1u);
    let sh = (s >> 1u) * 4u;
    return DS(D8(kv4(byte4(W[w], sh, 15u)), kv4(byte4(W[w + 1u], sh, 15u))), f16lo(W[o]));
}
#endif

#if Q_IQ4_XS
// 34 words: [0] d | scales_h << 16, [1] scales_l[4], [2..33] qs[128]; sub-block ib = s/4 is an IQ4_NL
// block (qs at word 2 + 4 ib) of scale d * (ls - 32), ls = (scales_l >> 4 ib) & 15 | ((scales_h >> 2 ib) & 3) << 4.
const QK: u32 = 256u;
fn kv4(v: vec4<u32>) -> vec4<f32> { return lvl16x4(KV_IQ4NL, v); }
fn deq8s(base: u32, u: u32) -> DS {
    let o = base + (u >> 5u) * 34u;
    let s = u & 31u;
    let ib = s >> 2u;
    let w = o + 2u + 4u * ib + 2u * (s & 1u);
    let sh = ((s >> 1u) & 1u) * 4u;
    let ls = ((W[o + 1u] >> (4u * ib)) & 15u) | (((W[o] >> (16u + 2u * ib)) & 3u) << 4u);
    return DS(D8(kv4(byte4(W[w], sh, 15u)), kv4(byte4(W[w + 1u], sh, 15u))), f16lo(W[o]) * (f32(ls) - 32.0));
}
#endif

#if Q_MXFP4
// 5 words: [0] e (byte 0, E8M0), [1..4] qs[16] as Q4_0; nibbles index kvalues_mxfp4 (E2M1 doubled),
// scale 2^(e - 128) (ggml_e8m0_to_fp32_half; e < 2 give f32 subnormals, which a GPU may flush).
const QK: u32 = 32u;
fn kvf4(v: vec4<u32>) -> vec4<f32> { return lvl16x4(KV_MXFP4, v); }
fn deq8s(base: u32, u: u32) -> DS {
    let o = base + (u >> 2u) * 5u;
    let s = u & 3u;
    let w = o + 1u + 2u * (s & 1u);
    let sh = (s >> 1u) * 4u;
    let e = W[o] & 255u;
    let d = bitcast<f32>(select((e - 1u) << 23u, 0x00200000u << e, e < 2u));
    return DS(D8(kvf4(byte4(W[w], sh, 15u)), kvf4(byte4(W[w + 1u], sh, 15u))), d);
}
#endif

#if Q_IQ2_XXS
// 17 words: [0] d, [1..16] per 32-element sub-block ib two words: 4 grid indices (bytes) and
// 4 x 7 sign bits | s << 28. Unit s = 4 ib + l: entry byte l of word 1 + 2 ib of the codebook (8 bytes).
const QK: u32 = 256u;
fn deq8s(base: u32, u: u32) -> DS {
    let o = base + (u >> 5u) * 17u;
    let s = u & 31u;
    let ib = s >> 2u;
    let l = s & 3u;
    let a1 = W[o + 2u + 2u * ib];
    let g = 2u * ((W[o + 1u + 2u * ib] >> (8u * l)) & 255u);
    let sg = ksign((a1 >> (7u * l)) & 127u);
    return DS(D8(ubytes4(CB[g]) * sgn4(sg, 0u), ubytes4(CB[g + 1u]) * sgn4(sg, 4u)),
              iqdb(f16lo(W[o]), a1 >> 28u, 0.25));
}
#endif

#if Q_IQ2_XS
// 19 words: [0] d, [1..16] qs u16[32] (9-bit grid index | 7 sign bits << 9), [17..18] scales[8]
// (nibble l/2 of byte ib: the scale of 16 elements). Unit s = 4 ib + l reads qs[s].
const QK: u32 = 256u;
fn deq8s(base: u32, u: u32) -> DS {
    let o = base + (u >> 5u) * 19u;
    let s = u & 31u;
    let q = (W[o + 1u + (s >> 1u)] >> (16u * (s & 1u))) & 0xffffu;
    let g = 2u * (q & 511u);
    let sg = ksign(q >> 9u);
    let sc = (wbyte(o + 17u, s >> 2u) >> (4u * ((s >> 1u) & 1u))) & 15u;
    return DS(D8(ubytes4(CB[g]) * sgn4(sg, 0u), ubytes4(CB[g + 1u]) * sgn4(sg, 4u)),
              iqdb(f16lo(W[o]), sc, 0.25));
}
#endif

#if Q_IQ2_S
// 21 words: [0] d, [1..8] qs[32] (low 8 index bits), [9..16] signs[32], [17..18] qh[8] (bits 2l..2l+1
// of qh[ib]: index bits 8..9), [19..20] scales[8] (nibble l/2 of byte ib). Unit s = 4 ib + l.
const QK: u32 = 256u;
fn deq8s(base: u32, u: u32) -> DS {
    let o = base + (u >> 5u) * 21u;
    let s = u & 31u;
    let ib = s >> 2u;
    let l = s & 3u;
    let g = 2u * (wbyte(o + 1u, s) | (((wbyte(o + 17u, ib) >> (2u * l)) & 3u) << 8u));
    let sg = wbyte(o + 9u, s);
    let sc = (wbyte(o + 19u, ib) >> (4u * (l >> 1u))) & 15u;
    return DS(D8(ubytes4(CB[g]) * sgn4(sg, 0u), ubytes4(CB[g + 1u]) * sgn4(sg, 4u)),
              iqdb(f16lo(W[o]), sc, 0.25));
}
#endif

#if Q_IQ3_XXS
// 25 words: [0] d, [1..16] qs[64] (indices of 4-value codebook entries, 2 per unit), [17..24] per
// sub-block 4 x 7 sign bits | s << 28. Unit s = 4 ib + l: qs[8 ib + 2l], qs[8 ib + 2l + 1].
const QK: u32 = 256u;
fn deq8s(base: u32, u: u32) -> DS {
    let o = base + (u >> 5u) * 25u;
    let s = u & 31u;
    let ib = s >> 2u;
    let l = s & 3u;
    let a = W[o + 17u + ib];
    let qw = W[o + 1u + 2u * ib + (l >> 1u)] >> (16u * (l & 1u));
    let sg = ksign((a >> (7u * l)) & 127u);
    return DS(D8(ubytes4(CB[qw & 255u]) * sgn4(sg, 0u), ubytes4(CB[(qw >> 8u) & 255u]) * sgn4(sg, 4u)),
              iqdb(f16lo(W[o]), a >> 28u, 0.5));
}
#endif

#if Q_IQ3_S
// 28 words: [0] d, [1..16] qs[64] (low 8 bits of 9-bit indices), [17..18] qh[8] (bit k of qh[ib]:
// bit 8 of index k of sub-block ib), [19..26] signs[32], [27] scales[4] (nibble ib: d * (1 + 2 sc)).
const QK: u32 = 256u;
fn deq8s(base: u32, u: u32) -> DS {
    let o = base + (u >> 5u) * 28u;
    let s = u & 31u;
    let ib = s >> 2u;
    let l = s & 3u;
    let qw = W[o + 1u + 2u * ib + (l >> 1u)] >> (16u * (l & 1u));
    let qh = wbyte(o + 17u, ib) >> (2u * l);
    let g1 = (qw & 255u) | ((qh & 1u) << 8u);
    let g2 = ((qw >> 8u) & 255u) | ((qh & 2u) << 7u);
    let sg = wbyte(o + 19u, s);
    let sc = (W[o + 27u] >> (4u * ib)) & 15u;
    return DS(D8(ubytes4(CB[g1]) * sgn4(sg, 0u), ubytes4(CB[g2]) * sgn4(sg, 4u)),
              f16lo(W[o]) * f32(1u + 2u * sc));
}
#endif

#if CODEBOOK
// IQ1_S / IQ1_M: the 8 values grid + delta of codebook entry g (2 bits per value, value + 1).
fn iq1v(g: u32, neg: bool) -> D8 {
    let e = CB[g >> 1u] >> (16u * (g & 1u));
    let dl = select(0.125, -0.125, neg);
    let lo = vec4<f32>((vec4<u32>(e) >> vec4<u32>(0u, 2u, 4u, 6u)) & vec4<u32>(3u)) - 1.0;
    let hi = vec4<f32>((vec4<u32>(e) >> vec4<u32>(8u, 10u, 12u, 14u)) & vec4<u32>(3u)) - 1.0;
    return D8(lo + dl, hi + dl);
}
#endif

#if Q_IQ1_S
// 13 words: [0] d, [1..8] qs[32] (low 8 bits of 11-bit indices), [9..12] qh u16[8]: per sub-block ib
// bits 3l..3l+2 the high index bits of unit l, s << 12 (scale d * (2s + 1)), delta sign << 15.
const QK: u32 = 256u;
fn deq8s(base: u32, u: u32) -> DS {
    let o = base + (u >> 5u) * 13u;
    let s = u & 31u;
    let ib = s >> 2u;
    let l = s & 3u;
    let qh = (W[o + 9u + (ib >> 1u)] >> (16u * (ib & 1u))) & 0xffffu;
    let g = wbyte(o + 1u, s) | (((qh >> (3u * l)) & 7u) << 8u);
    return DS(iq1v(g, (qh & 0x8000u) != 0u), f16lo(W[o]) * f32(2u * ((qh >> 12u) & 7u) + 1u));
}
#endif

#if Q_IQ1_M
// 14 words: [0..7] qs[32], [8..11] qh[16] (nibble l%2 of byte 2 ib + l/2: 3 high index bits, delta
// sign in bit 3), [12..13] scales u16[4]: 3 bits at 6(ib%2) + 3(l/2) of u16 ib/2 (d * (2s + 1)), and
// the f16 d in their top nibbles (u16 k holds bits 4k..4k+3).
const QK: u32 = 256u;
fn deq8s(base: u32, u: u32) -> DS {
    let o = base + (u >> 5u) * 14u;
    let s = u & 31u;
    let ib = s >> 2u;
    let l = s & 3u;
    let qn = (wbyte(o + 8u, s >> 1u) >> (4u * (l & 1u))) & 15u;
    let g = wbyte(o, s) | ((qn & 7u) << 8u);
    let s01 = W[o + 12u];
    let s23 = W[o + 13u];
    let dbits = ((s01 >> 12u) & 0xfu) | ((s01 >> 24u) & 0xf0u) | ((s23 >> 4u) & 0xf00u) | ((s23 >> 16u) & 0xf000u);
    let sc16 = (W[o + 12u + (ib >> 2u)] >> (16u * ((ib >> 1u) & 1u))) & 0xffffu;
    let sc = (sc16 >> (6u * (ib & 1u) + 3u * (l >> 1u))) & 7u;
    return DS(iq1v(g, (qn & 8u) != 0u), f16lo(dbits) * f32(2u * sc + 1u));
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
