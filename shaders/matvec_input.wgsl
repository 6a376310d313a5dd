// matvec_input: include file (not a kernel) shared by matvec_common.wgsl (matvec.wgsl, moe.wgsl)
// and matvec_rowwise.wgsl: the loads of a mat-vec's input X (array<vec4<f32>>) and, with NORM,
// the fused RMSNorm prologue: the input is the un-normalized residual stream x, each load adds
// x^2 to the token's running sum of squares and returns x * w (the norm weight, f32 words of
// binding NW from p.nw_off); the kernel multiplies the reduced dot products by
// 1/sqrt(sum/cols + eps) once per output (rmsnorm(x)*w . W = inv * (x*w . W)), so the norm costs
// no dispatch and no pass over x of its own. Needs quant.wgsl's D8.

fn x1(e: u32) -> f32 { return X[e >> 2u][e & 3u]; }

// inputs e .. e+7 (two vec4 loads when e is a multiple of 4)
fn x8(e: u32, aligned: bool) -> D8 {
    if (aligned) {
        return D8(X[e >> 2u], X[(e >> 2u) + 1u]);
    }
    return D8(vec4<f32>(x1(e), x1(e + 1u), x1(e + 2u), x1(e + 3u)),
              vec4<f32>(x1(e + 4u), x1(e + 5u), x1(e + 6u), x1(e + 7u)));
}

fn dot8(w: D8, x: D8) -> f32 { return dot(w.lo, x.lo) + dot(w.hi, x.hi); }

#if NORM
fn nw1(c: u32) -> f32 { return bitcast<f32>(NW[p.nw_off + c]); }
#endif

// the norm weight of columns c .. c+7 (ones without NORM: unused, folded away)
fn nw8(c: u32) -> D8 {
#if NORM
    return D8(vec4<f32>(nw1(c), nw1(c + 1u), nw1(c + 2u), nw1(c + 3u)),
              vec4<f32>(nw1(c + 4u), nw1(c + 5u), nw1(c + 6u), nw1(c + 7u)));
#else
    return D8(vec4<f32>(1.0), vec4<f32>(1.0));
#endif
}

// the mat-vec's 8 inputs at element e (columns c .. c+7, norm weight nw = nw8(c)); with NORM
// *ss += their squares and the inputs come back times the norm weight
fn xin(e: u32, al: bool, nw: D8, ss: ptr<function, f32>) -> D8 {
    let x = x8(e, al);
#if NORM
    *ss += dot8(x, x);
    return D8(x.lo * nw.lo, x.hi * nw.hi);
#else
    return x;
#endif
}

// one input (element e, column c) of a float row's tail, likewise
fn xin1(e: u32, c: u32, ss: ptr<function, f32>) -> f32 {
    let x = x1(e);
#if NORM
    *ss += x * x;
    return x * nw1(c);
#else
    return x;
#endif
}

// the output epilogue: the reduced dot product s of a token whose sum of squares is ss, written
// to Y[i]: times the norm's 1/rms (NORM), plus the old Y[i] (ADD: y += W x, the residual add)
fn out1(i: u32, s: f32, ss: f32) {
    var v = s;
#if NORM
    v = v * inverseSqrt(ss / f32(p.cols) + p.eps);
#endif
#if ADD
    v = Y[i] + v;
#endif
    Y[i] = v;
}
