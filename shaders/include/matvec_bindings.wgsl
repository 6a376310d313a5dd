// include/matvec_bindings.wgsl -- INCLUDE (not a kernel): the parameters and bindings that
// matvec.wgsl and matvec_rowwise.wgsl share, so kernels/linear.py packs one parameter layout for
// both layouts.
// Provides: struct P (cols, row0, rows, row_words, x_off, x_stride, y_off, y_stride, step_off, eps,
//   nw_off, half) and the bindings: 0 params p (uniform P), 1 W weight words (storage read u32,
//   one row part), 2 X (read_write vec4<f32>), 3 Y (read_write f32), 4 S step records
//   (read_write u32), NORM: 5 NW norm weight (storage read vec4<f32>, from element p.nw_off, a
//   multiple of 4).
// Expects: nothing but the define NORM; the including shader declares no other bindings.

struct P {
    cols: u32, row0: u32, rows: u32, row_words: u32,
    x_off: u32, x_stride: u32, y_off: u32, y_stride: u32,
    step_off: u32, eps: f32, nw_off: u32, half: u32,
};
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> W: array<u32>;
@group(0) @binding(2) var<storage, read_write> X: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> Y: array<f32>;
@group(0) @binding(4) var<storage, read_write> S: array<u32>;
#if NORM
@group(0) @binding(5) var<storage, read> NW: array<vec4<f32>>;
#endif
