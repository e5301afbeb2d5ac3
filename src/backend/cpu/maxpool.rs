//! `AvMaxPool`: 2-D max pooling of an NCHW f32 tensor (VGGish's 2×2 pools, ResNet's 3×3 stem
//! pool).
//!
//! tract's own pooling walks a generic N-d geometry per output value; on VGGish's audio encoder
//! its four pools took 1.8 ms per clip against ONNX Runtime's 0.1 ms. Here each output row is the
//! running maximum of whole input rows: for every tap (ky, kx) inside the image, one pass over the
//! row's output columns whose tap falls inside it, compiled per instruction set by
//! [`per_isa!`](super::per_isa). Padding never wins (ONNX pads max pooling with −∞), and the
//! maximum is `f32::max`'s, so a NaN input is ignored unless every value of the window is NaN.

use rayon::prelude::*;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;

use super::conv::ConvGeometry;
use super::output;

/// The operator: `[N, C, H, W]` → `[N, C, OH, OW]`. The geometry is a convolution's with one
/// group per channel (`c_in == c_out == groups`); only its window, strides, dilations and padding
/// matter.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AvMaxPool {
    pub geo: ConvGeometry,
}

impl AvMaxPool {
    /// Every plane of `x` (`[N·C, H, W]`) into `y` (`[N·C, OH, OW]`).
    pub fn run(&self, x: &[f32], y: &mut [f32], threads: usize) {
        let g = &self.geo;
        let plane = |(xi, yi): (&[f32], &mut [f32])| pool_plane_simd(g, xi, yi);
        if threads > 1 && y.len() >= 1 << 14 {
            x.par_chunks_exact(g.in_plane()).zip(y.par_chunks_exact_mut(g.out_plane())).for_each(plane);
        } else {
            x.chunks_exact(g.in_plane()).zip(y.chunks_exact_mut(g.out_plane())).for_each(plane);
        }
    }
}

per_isa!(fn pool_plane_simd(g: &ConvGeometry, x: &[f32], y: &mut [f32]) = pool_plane);

/// The range of output indices `o` whose tap `o·stride + offset − pad` lies in `0..len`.
#[inline(always)]
fn inside(out_len: usize, len: usize, stride: usize, offset: usize, pad: usize) -> std::ops::Range<usize> {
    // o·stride + offset ≥ pad  ⇔  o ≥ ceil((pad − offset) / stride)
    let lo = pad.saturating_sub(offset).div_ceil(stride);
    // o·stride + offset − pad ≤ len − 1  ⇔  o ≤ (len − 1 + pad − offset) / stride
    let hi = if len + pad > offset { ((len - 1 + pad - offset) / stride + 1).min(out_len) } else { 0 };
    lo.min(hi)..hi
}

/// One plane: `x` `[H, W]` → `y` `[OH, OW]`.
#[inline(always)]
fn pool_plane(g: &ConvGeometry, x: &[f32], y: &mut [f32]) {
    let tiles = g.stride_h == g.kh && g.stride_w == g.kw && g.dil_h == 1 && g.dil_w == 1 && g.pad_top == 0 && g.pad_left == 0;
    if tiles && g.out_h * g.kh <= g.in_h && g.out_w * g.kw <= g.in_w {
        return pool_tiles(g, x, y);
    }
    y.fill(f32::NEG_INFINITY);
    for kx in 0..g.kw {
        let cols = inside(g.out_w, g.in_w, g.stride_w, kx * g.dil_w, g.pad_left);
        if cols.is_empty() {
            continue;
        }
        // Input column of output column cols.start for this tap.
        let first = cols.start * g.stride_w + kx * g.dil_w - g.pad_left;
        for ky in 0..g.kh {
            for oy in inside(g.out_h, g.in_h, g.stride_h, ky * g.dil_h, g.pad_top) {
                let iy = oy * g.stride_h + ky * g.dil_h - g.pad_top;
                let src = &x[iy * g.in_w..][..g.in_w];
                let dst = &mut y[oy * g.out_w..][cols.clone()];
                if g.stride_w == 1 {
                    for (d, &v) in dst.iter_mut().zip(&src[first..]) {
                        *d = d.max(v);
                    }
                } else {
                    for (d, &v) in dst.iter_mut().zip(src[first..].iter().step_by(g.stride_w)) {
                        *d = d.max(v);
                    }
                }
            }
        }
    }
}

/// Windows that tile the plane (stride = kernel, no padding or dilation: VGGish's 2×2 pools):
/// each output row is written once, from the maxima of consecutive runs of `kw` values.
#[inline(always)]
fn pool_tiles(g: &ConvGeometry, x: &[f32], y: &mut [f32]) {
    let (kw, row_len) = (g.kw, g.out_w * g.kw);
    for (oy, dst) in y.chunks_exact_mut(g.out_w).enumerate() {
        for ky in 0..g.kh {
            let src = &x[(oy * g.kh + ky) * g.in_w..][..row_len];
            let first = ky == 0;
            if kw == 2 {
                for (d, pair) in dst.iter_mut().zip(src.chunks_exact(2)) {
                    let m = pair[0].max(pair[1]);
                    *d = if first { m } else { d.max(m) };
                }
            } else {
                for (d, run) in dst.iter_mut().zip(src.chunks_exact(kw)) {
                    let m = run.iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v));
                    *d = if first { m } else { d.max(m) };
                }
            }
        }
    }
}

impl Op for AvMaxPool {
    fn name(&self) -> StaticName {
        "AvMaxPool".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("{:?}", self.geo)])
    }

    op_as_typed_op!();
}

impl EvalOp for AvMaxPool {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let g = &self.geo;
        let want = [g.n, g.c_in, g.in_h, g.in_w];
        ensure!(input.shape() == want, "AvMaxPool: input shape {:?}, planned for {want:?}", input.shape());
        let x = input.try_as_plain_ram()?.as_slice::<f32>()?;
        let shape = [g.n, g.c_out, g.out_h, g.out_w];
        Ok(tvec!(output(&shape, |y, threads| self.run(x, y, threads))?.into_tvalue()))
    }
}

impl TypedOp for AvMaxPool {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs.len() == 1 && inputs[0].datum_type == f32::datum_type());
        let g = &self.geo;
        Ok(tvec!(f32::fact([g.n, g.c_out, g.out_h, g.out_w])))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ONNX's MaxPool of one plane, output value by output value, padding as −∞.
    fn naive(g: &ConvGeometry, x: &[f32]) -> Vec<f32> {
        let mut y = Vec::with_capacity(g.out_plane());
        for oy in 0..g.out_h {
            for ox in 0..g.out_w {
                let mut m = f32::NEG_INFINITY;
                for ky in 0..g.kh {
                    for kx in 0..g.kw {
                        let iy = (oy * g.stride_h + ky * g.dil_h) as isize - g.pad_top as isize;
                        let ix = (ox * g.stride_w + kx * g.dil_w) as isize - g.pad_left as isize;
                        if (0..g.in_h as isize).contains(&iy) && (0..g.in_w as isize).contains(&ix) {
                            m = m.max(x[iy as usize * g.in_w + ix as usize]);
                        }
                    }
                }
                y.push(m);
            }
        }
        y
    }

    #[allow(clippy::too_many_arguments)]
    fn geometry(n: usize, c: usize, k: (usize, usize), stride: (usize, usize), dil: usize, pad: (usize, usize), input: (usize, usize), out: (usize, usize)) -> ConvGeometry {
        ConvGeometry {
            n,
            c_in: c,
            c_out: c,
            groups: c,
            kh: k.0,
            kw: k.1,
            stride_h: stride.0,
            stride_w: stride.1,
            dil_h: dil,
            dil_w: dil,
            pad_top: pad.0,
            pad_left: pad.1,
            in_h: input.0,
            in_w: input.1,
            out_h: out.0,
            out_w: out.1,
        }
    }

    #[test]
    fn matches_the_definition() {
        let cases = [
            // VGGish: 2×2, stride 2, even and odd sizes (the last row or column dropped); tiling
            // windows of other sizes
            geometry(2, 3, (2, 2), (2, 2), 1, (0, 0), (96, 64), (48, 32)),
            geometry(1, 2, (2, 2), (2, 2), 1, (0, 0), (7, 5), (3, 2)),
            geometry(1, 2, (3, 3), (3, 3), 1, (0, 0), (10, 11), (3, 3)),
            geometry(1, 2, (1, 2), (1, 2), 1, (0, 0), (4, 6), (4, 3)),
            // ResNet's stem pool: 3×3, stride 2, padding 1 (windows hanging over every border)
            geometry(1, 4, (3, 3), (2, 2), 1, (1, 1), (13, 10), (7, 5)),
            // stride 1 with padding, a non-square window, dilation, a window wider than the image
            geometry(1, 2, (3, 3), (1, 1), 1, (1, 1), (6, 9), (6, 9)),
            geometry(1, 2, (2, 3), (1, 2), 1, (0, 1), (5, 8), (4, 4)),
            geometry(1, 2, (3, 3), (1, 1), 2, (2, 2), (9, 7), (9, 7)),
            geometry(1, 1, (3, 3), (1, 1), 1, (2, 2), (1, 1), (3, 3)),
        ];
        for g in cases {
            let planes = g.n * g.c_in;
            // Negative values throughout, so a padded −∞ or a stray 0 would show.
            let x: Vec<f32> = (0..planes * g.in_plane()).map(|i| -1.0 - ((i * 7919) % 1009) as f32 / 97.0).collect();
            let op = AvMaxPool { geo: g.clone() };
            for threads in [1, 2] {
                let mut y = vec![f32::NAN; planes * g.out_plane()];
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                pool.install(|| op.run(&x, &mut y, threads));
                for p in 0..planes {
                    let want = naive(&g, &x[p * g.in_plane()..][..g.in_plane()]);
                    assert_eq!(&y[p * g.out_plane()..][..g.out_plane()], &want[..], "{g:?} plane {p} threads {threads}");
                }
            }
        }
    }
}
