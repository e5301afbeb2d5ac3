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
    /// The repeating 2× middle of the plan, if it has one: found once, when the plan is made
    /// (at the graph rewrite or the graph cache's load), not at every run.
    doubling: Option<Doubling>,
}

impl LinearAxis {
    /// The axis with these taps and weights (`taps[j]`, `weights[j]`: output index `j`).
    pub fn new(len_in: usize, taps: Vec<[u32; 2]>, weights: Vec<[f32; 2]>) -> Self {
        let doubling = Doubling::of(len_in, &taps, &weights);
        LinearAxis { len_in, taps, weights, doubling }
    }

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
        Ok(LinearAxis::new(
            len_in,
            indices.chunks_exact(2).map(|c| [c[0] as u32, c[1] as u32]).collect(),
            weights.chunks_exact(2).map(|c| [c[0], c[1]]).collect(),
        ))
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
        let doubling = self.cols.doubling;
        let planes = x.chunks_exact(self.in_plane()).zip(y.chunks_exact_mut(self.out_plane()));
        if threads > 1 {
            x.par_chunks_exact(self.in_plane())
                .zip(y.par_chunks_exact_mut(self.out_plane()))
                .for_each(|(xp, yp)| self.plane(xp, yp, doubling.as_ref()));
        } else {
            planes.for_each(|(xp, yp)| self.plane(xp, yp, doubling.as_ref()));
        }
    }

    fn plane(&self, x: &[f32], y: &mut [f32], doubling: Option<&Doubling>) {
        let (in_w, out_w) = (self.cols.len_in, self.cols.len_out());
        ROWS.with_borrow_mut(|tmp| {
            let len = self.rows.len_in * out_w;
            if tmp.len() < len {
                tmp.resize(len, 0.0);
            }
            // Horizontal pass: every input row at the output width.
            for (src, dst) in x.chunks_exact(in_w).zip(tmp.chunks_exact_mut(out_w)) {
                match doubling {
                    Some(p) => {
                        // The repeating middle as contiguous loads; the borders as planned.
                        double_row(src, dst, p);
                        for j in (0..2 * p.lo).chain(2 * p.hi..out_w) {
                            let (t, w) = (self.cols.taps[j], self.cols.weights[j]);
                            dst[j] = w[0] * src[t[0] as usize] + w[1] * src[t[1] as usize];
                        }
                    }
                    None => {
                        for ((d, t), w) in dst.iter_mut().zip(&self.cols.taps).zip(&self.cols.weights) {
                            *d = w[0] * src[t[0] as usize] + w[1] * src[t[1] as usize];
                        }
                    }
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

/// A column plan that doubles the width with the same two taps and weights for every input column
/// `i` in `lo..hi` (ONNX's half-pixel and asymmetric modes at scale 2; not align-corners, whose
/// weights vary along the row): output `2i + r` is `w[r][0]·x[i + shift[r]] + w[r][1]·x[i +
/// shift[r] + 1]`. Its middle then reads contiguous inputs and vectorises, where the general plan
/// gathers one column at a time (the 2× upsamplings of the decoders: 2.1 ms of the default
/// model's 60 before).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Doubling {
    lo: usize,
    hi: usize,
    shift: [isize; 2],
    w: [[f32; 2]; 2],
}

impl Doubling {
    fn of(len_in: usize, taps: &[[u32; 2]], weights: &[[f32; 2]]) -> Option<Doubling> {
        let n = len_in;
        if taps.len() != 2 * n || weights.len() != taps.len() || n < 8 {
            return None;
        }
        let at = |i: usize, r: usize| (taps[2 * i + r], weights[2 * i + r]);
        let mid = n / 2;
        let mut shift = [0isize; 2];
        let mut w = [[0.0; 2]; 2];
        for r in 0..2 {
            let (t, wr) = at(mid, r);
            if t[1] != t[0] + 1 {
                return None;
            }
            shift[r] = t[0] as isize - mid as isize;
            w[r] = wr;
        }
        let fits = |i: usize| {
            (0..2).all(|r| {
                let (t, wr) = at(i, r);
                let first = i as isize + shift[r];
                first >= 0 && t[0] as isize == first && t[1] == t[0] + 1 && (t[1] as usize) < n && wr == w[r]
            })
        };
        let mut lo = mid;
        while lo > 0 && fits(lo - 1) {
            lo -= 1;
        }
        let mut hi = mid + 1;
        while hi < n && fits(hi) {
            hi += 1;
        }
        // Only a mostly repeating row is worth the split (align-corners rows repeat nowhere).
        (hi - lo >= n / 2).then_some(Doubling { lo, hi, shift, w })
    }
}

per_isa!(fn double_row(src: &[f32], dst: &mut [f32], p: &Doubling) = double_row_kernel);

/// Output columns `2·lo..2·hi` of one row from `src` (see [`Doubling`]).
#[inline(always)]
fn double_row_kernel(src: &[f32], dst: &mut [f32], p: &Doubling) {
    let n = p.hi - p.lo;
    let a = &src[(p.lo as isize + p.shift[0]) as usize..][..n + 1];
    let b = &src[(p.lo as isize + p.shift[1]) as usize..][..n + 1];
    let [[a0, a1], [b0, b1]] = p.w;
    let out = &mut dst[2 * p.lo..][..2 * n];
    for ((((o, a), a_next), b), b_next) in out.chunks_exact_mut(2).zip(&a[..n]).zip(&a[1..]).zip(&b[..n]).zip(&b[1..]) {
        o[0] = a0 * a + a1 * a_next;
        o[1] = b0 * b + b1 * b_next;
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
        // The 2× widths of 8 input columns and more take the repeating path (`Doubling`).
        for (h, w, oh, ow) in [(5, 5, 10, 10), (4, 6, 16, 12), (7, 3, 7, 9), (8, 8, 3, 5), (1, 4, 2, 8), (9, 12, 18, 24), (3, 37, 6, 74), (4, 8, 7, 16)] {
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

    #[test]
    fn only_repeating_doublings_take_the_contiguous_path() {
        let plan = |coord: CoordTransformer, n: usize, out: usize| LinearAxis::plan(&coord, out as f32 / n as f32, n, out).unwrap().doubling;
        // Half-pixel 2×: every column but the clamped first and last repeats.
        let d = plan(CoordTransformer::HalfPixel, 40, 80).unwrap();
        assert!(d.lo <= 1 && d.hi >= 39, "{d:?}");
        assert_eq!(d.w, [[0.25, 0.75], [0.75, 0.25]]);
        // Align-corners weights change along the row; other scales are not doublings.
        let d = plan(CoordTransformer::Asymmetric, 40, 80).unwrap();
        assert_eq!(d.w, [[0.0, 1.0], [0.5, 0.5]]);
        assert_eq!(plan(CoordTransformer::AlignCorners, 40, 80), None);
        assert_eq!(plan(CoordTransformer::HalfPixel, 40, 60), None);
        assert_eq!(plan(CoordTransformer::HalfPixel, 4, 8), None);
        // A plan rebuilt from its taps and weights (as the graph cache does) finds the same.
        let axis = LinearAxis::plan(&CoordTransformer::HalfPixel, 2.0, 40, 80).unwrap();
        assert_eq!(LinearAxis::new(axis.len_in, axis.taps.clone(), axis.weights.clone()), axis);
    }

    #[test]
    fn the_contiguous_path_equals_the_gathers_bit_for_bit() {
        let coords = [CoordTransformer::HalfPixel, CoordTransformer::Asymmetric, CoordTransformer::PytorchHalfPixel];
        for (coord, w) in coords.into_iter().flat_map(|c| [(c.clone(), 8), (c.clone(), 13), (c, 40)]) {
            let (h, oh, ow) = (3, 6, 2 * w);
            let op = AvResize {
                n: 1,
                c: 1,
                rows: Arc::new(LinearAxis::plan(&coord, 2.0, h, oh).unwrap()),
                cols: Arc::new(LinearAxis::plan(&coord, 2.0, w, ow).unwrap()),
            };
            let doubling = op.cols.doubling;
            assert!(doubling.is_some(), "{coord:?} {w}");
            let x: Vec<f32> = (0..h * w).map(|i| ((i * 37) % 17) as f32 * 0.37 - 3.0).collect();
            let (mut fast, mut gathered) = (vec![f32::NAN; oh * ow], vec![f32::NAN; oh * ow]);
            op.plane(&x, &mut fast, doubling.as_ref());
            op.plane(&x, &mut gathered, None);
            assert_eq!(fast, gathered, "{coord:?} {w}");
        }
    }
}
