//! `AvResize`: linear Resize over the last two axes of an NCHW tensor, separable and parallel.
//!
//! The taps and weights of each output row and column come from tract's own axis plan
//! (`tract_core::ops::nn::resize::Resize::plan_axis`), so coordinate modes, clamping at the
//! borders and the weights are exactly tract's. The kernel then interpolates every input row
//! horizontally once, and blends pairs of those rows vertically: 2 multiply-adds per output plus
//! 2 per (input row × output column), instead of 4 gathers per output.

use std::cell::RefCell;
use std::sync::Arc;

use rayon::prelude::*;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::nn::resize::{AxisPlan, CoordTransformer, Interpolator, Nearest, Resize};

use super::output;

/// Two-tap linear weights of one axis: output index → (first tap, second tap, their weights).
#[derive(Clone, Debug, PartialEq)]
pub struct LinearAxis {
    pub len_in: usize,
    pub taps: Vec<[u32; 2]>,
    pub weights: Vec<[f32; 2]>,
}

impl LinearAxis {
    /// The plan of one axis for tract's linear Resize with `coord` at `scale` (output / input).
    pub fn plan(coord: &CoordTransformer, scale: f32, len_in: usize, len_out: usize) -> TractResult<Self> {
        let op = Resize {
            coord_transformer: coord.clone(),
            interpolator: Interpolator::Linear,
            nearest: Nearest::Floor,
            optional_scales_input: None,
            optional_sizes_input: None,
        };
        let AxisPlan { window, indices, weights, extrapolated } = op.plan_axis(scale, len_in, len_out);
        ensure!(window == 2, "linear resize with a {window}-tap window");
        ensure!(!extrapolated.iter().any(|e| *e), "linear resize extrapolates");
        Ok(LinearAxis {
            len_in,
            taps: indices.chunks_exact(2).map(|c| [c[0] as u32, c[1] as u32]).collect(),
            weights: weights.chunks_exact(2).map(|c| [c[0], c[1]]).collect(),
        })
    }

    pub fn len_out(&self) -> usize {
        self.taps.len()
    }
}

/// The operator: `[N, C, H, W]` → `[N, C, OH, OW]`.
#[derive(Clone, Debug)]
pub struct AvResize {
    pub n: usize,
    pub c: usize,
    pub rows: Arc<LinearAxis>,
    pub cols: Arc<LinearAxis>,
}

impl PartialEq for AvResize {
    fn eq(&self, other: &Self) -> bool {
        (self.n, self.c) == (other.n, other.c) && Arc::ptr_eq(&self.rows, &other.rows) && Arc::ptr_eq(&self.cols, &other.cols)
    }
}

impl Eq for AvResize {}

thread_local! {
    /// The horizontally interpolated rows of one plane `[H, OW]`, reused across calls.
    static ROWS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

impl AvResize {
    fn in_plane(&self) -> usize {
        self.rows.len_in * self.cols.len_in
    }
    fn out_plane(&self) -> usize {
        self.rows.len_out() * self.cols.len_out()
    }

    /// Resizes every plane of `x` into `y`.
    pub fn run(&self, x: &[f32], y: &mut [f32], threads: usize) {
        let planes = x.chunks_exact(self.in_plane()).zip(y.chunks_exact_mut(self.out_plane()));
        if threads > 1 {
            x.par_chunks_exact(self.in_plane())
                .zip(y.par_chunks_exact_mut(self.out_plane()))
                .for_each(|(xp, yp)| self.plane(xp, yp));
        } else {
            planes.for_each(|(xp, yp)| self.plane(xp, yp));
        }
    }

    fn plane(&self, x: &[f32], y: &mut [f32]) {
        let (in_w, out_w) = (self.cols.len_in, self.cols.len_out());
        ROWS.with_borrow_mut(|tmp| {
            let len = self.rows.len_in * out_w;
            if tmp.len() < len {
                tmp.resize(len, 0.0);
            }
            // Horizontal pass: every input row at the output width.
            for (src, dst) in x.chunks_exact(in_w).zip(tmp.chunks_exact_mut(out_w)) {
                for ((d, t), w) in dst.iter_mut().zip(&self.cols.taps).zip(&self.cols.weights) {
                    *d = w[0] * src[t[0] as usize] + w[1] * src[t[1] as usize];
                }
            }
            // Vertical pass: blend two of those rows per output row.
            for ((dst, t), w) in y.chunks_exact_mut(out_w).zip(&self.rows.taps).zip(&self.rows.weights) {
                let a = &tmp[t[0] as usize * out_w..][..out_w];
                let b = &tmp[t[1] as usize * out_w..][..out_w];
                for ((d, a), b) in dst.iter_mut().zip(a).zip(b) {
                    *d = w[0] * a + w[1] * b;
                }
            }
        });
    }
}

impl Op for AvResize {
    fn name(&self) -> StaticName {
        "AvResize".into()
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    op_as_typed_op!();
}

impl EvalOp for AvResize {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let want = [self.n, self.c, self.rows.len_in, self.cols.len_in];
        ensure!(input.shape() == want, "AvResize: input shape {:?}, planned for {want:?}", input.shape());
        let x = input.try_as_plain_ram()?.as_slice::<f32>()?;
        let shape = [self.n, self.c, self.rows.len_out(), self.cols.len_out()];
        Ok(tvec!(output(&shape, |y, threads| self.run(x, y, threads))?.into_tvalue()))
    }
}

impl TypedOp for AvResize {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs.len() == 1 && inputs[0].datum_type == f32::datum_type());
        Ok(tvec!(f32::fact([self.n, self.c, self.rows.len_out(), self.cols.len_out()])))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_common::max_abs_diff;

    /// ONNX's linear resize of one value, written from the operator's definition: the source
    /// coordinate clamped to the input, then the two neighbours blended.
    fn naive(x: &[f32], h: usize, w: usize, oh: usize, ow: usize, align_corners: bool) -> Vec<f32> {
        let src = |o: usize, len_in: usize, len_out: usize| -> f32 {
            let c = if align_corners {
                if len_out == 1 { 0.0 } else { o as f32 * (len_in - 1) as f32 / (len_out - 1) as f32 }
            } else {
                (o as f32 + 0.5) * len_in as f32 / len_out as f32 - 0.5
            };
            c.clamp(0.0, (len_in - 1) as f32)
        };
        let mut y = vec![0.0; oh * ow];
        for oy in 0..oh {
            let sy = src(oy, h, oh);
            let (y0, fy) = (sy.floor() as usize, sy - sy.floor());
            let y1 = (y0 + 1).min(h - 1);
            for ox in 0..ow {
                let sx = src(ox, w, ow);
                let (x0, fx) = (sx.floor() as usize, sx - sx.floor());
                let x1 = (x0 + 1).min(w - 1);
                let top = x[y0 * w + x0] * (1.0 - fx) + x[y0 * w + x1] * fx;
                let bottom = x[y1 * w + x0] * (1.0 - fx) + x[y1 * w + x1] * fx;
                y[oy * ow + ox] = top * (1.0 - fy) + bottom * fy;
            }
        }
        y
    }

    #[test]
    fn matches_the_definition_in_both_coordinate_modes() {
        for (h, w, oh, ow) in [(5, 5, 10, 10), (4, 6, 16, 12), (7, 3, 7, 9), (8, 8, 3, 5), (1, 4, 2, 8)] {
            for align in [false, true] {
                let coord = if align { CoordTransformer::AlignCorners } else { CoordTransformer::HalfPixel };
                let x: Vec<f32> = (0..2 * h * w).map(|i| ((i * 37) % 17) as f32 - 8.0).collect();
                let op = AvResize {
                    n: 1,
                    c: 2,
                    rows: Arc::new(LinearAxis::plan(&coord, oh as f32 / h as f32, h, oh).unwrap()),
                    cols: Arc::new(LinearAxis::plan(&coord, ow as f32 / w as f32, w, ow).unwrap()),
                };
                for threads in [1, 2] {
                    let mut y = vec![f32::NAN; 2 * oh * ow];
                    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                    pool.install(|| op.run(&x, &mut y, threads));
                    for p in 0..2 {
                        let want = naive(&x[p * h * w..][..h * w], h, w, oh, ow, align);
                        let d = max_abs_diff(&y[p * oh * ow..][..oh * ow], &want);
                        assert!(d <= 1e-4, "{h}x{w}->{oh}x{ow} align {align}: {d}");
                    }
                }
            }
        }
    }
}
