//! `AvMatMul`: batched matrix products of f32 tensors (ONNX MatMul and Gemm, which tract types
//! as two-operand einsums such as `amk,kn->amn` or `mk,abkn->abmn`), with a following bias add
//! and ReLU-style clamp fused.
//!
//! tract plans these as a packing step, its own kernels, and often an axis move to bring the
//! operands into its layout; on transformer heads that was measured at about 1.4× ONNX Runtime's
//! time at one thread and worse at two (the packing is single-threaded). Here the operands are
//! read in place through strides by the `gemm` crate (which packs internally, per instruction set
//! and in parallel), batch axes that are contiguous with the rows or columns are merged into one
//! larger product, and the bias and clamp are applied to each product's output while it is still
//! in cache.

use std::sync::Arc;

use rayon::prelude::*;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;

use super::conv::{add_clamp, add_clamp_rows, clamp_simd, gemm_into, Clamp, Matrix};
use super::{output, SendPtr};

/// A bias added to every product, broadcast along the other axis.
#[derive(Clone, Debug, PartialEq)]
pub enum Bias {
    None,
    /// One value per row (`m`).
    Rows(Arc<Vec<f32>>),
    /// One value per column (`n`).
    Cols(Arc<Vec<f32>>),
}

/// Strides of one batch axis in `a`, `b` and the output (0 where an operand is broadcast).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BatchAxis {
    pub len: usize,
    pub a: usize,
    pub b: usize,
    pub out: usize,
}

/// The operator, planned for fixed shapes: `out[β, i, j] = clamp(Σ_k a[β, i, k] · b[β, k, j] + bias)`.
#[derive(Clone, Debug, PartialEq)]
pub struct AvMatMul {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    /// `a`'s strides along m and k, `b`'s along k and n, the output's along m and n.
    pub a_strides: (usize, usize),
    pub b_strides: (usize, usize),
    pub out_strides: (usize, usize),
    pub batch: Vec<BatchAxis>,
    pub bias: Bias,
    pub clamp: Clamp,
    pub a_shape: Vec<usize>,
    pub b_shape: Vec<usize>,
    pub out_shape: Vec<usize>,
}

impl Eq for AvMatMul {}

impl std::hash::Hash for AvMatMul {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (self.m, self.n, self.k, &self.batch, &self.out_shape).hash(state)
    }
}

/// Row-major strides of `shape`.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut st = vec![0; shape.len()];
    let mut acc = 1;
    for i in (0..shape.len()).rev() {
        st[i] = acc;
        acc *= shape[i];
    }
    st
}

impl AvMatMul {
    /// Merges batch axes into m (when `b` does not vary along them and `a` and the output walk
    /// them as further rows) or into n (symmetrically), so that one larger product replaces a
    /// loop of small ones.
    pub fn merge_batches(&mut self) {
        loop {
            let before = self.batch.len();
            let mut i = 0;
            while i < self.batch.len() {
                let ax = self.batch[i];
                if ax.len == 1 {
                    self.batch.remove(i);
                    continue;
                }
                if ax.b == 0 && ax.a == self.m * self.a_strides.0 && ax.out == self.m * self.out_strides.0 {
                    self.m *= ax.len;
                    self.batch.remove(i);
                    continue;
                }
                if ax.a == 0 && ax.b == self.n * self.b_strides.1 && ax.out == self.n * self.out_strides.1 {
                    self.n *= ax.len;
                    self.batch.remove(i);
                    continue;
                }
                i += 1;
            }
            if self.batch.len() == before {
                return;
            }
        }
    }

    /// Checks that every element the plan reads or writes lies inside the shapes it names (the
    /// kernels index through raw strides): for plans that did not come from [`Self::merge_batches`]
    /// on a graph's own shapes, such as one read back from a cache.
    pub fn check_bounds(&self) -> TractResult<()> {
        let last = |len: usize, stride: usize| len.saturating_sub(1) * stride;
        let batch = |f: fn(&BatchAxis) -> usize| self.batch.iter().map(|ax| last(ax.len, f(ax))).sum::<usize>();
        let a_end = batch(|ax| ax.a) + last(self.m, self.a_strides.0) + last(self.k, self.a_strides.1);
        let b_end = batch(|ax| ax.b) + last(self.k, self.b_strides.0) + last(self.n, self.b_strides.1);
        let o_end = batch(|ax| ax.out) + last(self.m, self.out_strides.0) + last(self.n, self.out_strides.1);
        let len = |s: &[usize]| s.iter().product::<usize>();
        ensure!(self.m * self.n * self.k > 0, "AvMatMul: empty product");
        ensure!(
            a_end < len(&self.a_shape) && b_end < len(&self.b_shape) && o_end < len(&self.out_shape),
            "AvMatMul: strides reach outside the operands"
        );
        ensure!(self.batch_count() * self.m * self.n == len(&self.out_shape), "AvMatMul: the output is not covered");
        match &self.bias {
            Bias::Rows(v) => ensure!(v.len() == self.m, "AvMatMul: bias length"),
            Bias::Cols(v) => ensure!(v.len() == self.n, "AvMatMul: bias length"),
            Bias::None => {}
        }
        Ok(())
    }

    fn batch_count(&self) -> usize {
        self.batch.iter().map(|ax| ax.len).product()
    }

    /// Offsets of batch entry `i` in `a`, `b` and the output.
    fn offsets(&self, mut i: usize) -> (usize, usize, usize) {
        let (mut oa, mut ob, mut oo) = (0, 0, 0);
        for ax in self.batch.iter().rev() {
            let j = i % ax.len;
            i /= ax.len;
            oa += j * ax.a;
            ob += j * ax.b;
            oo += j * ax.out;
        }
        (oa, ob, oo)
    }

    /// The kernel for a product with a few rows (a fully connected layer on a handful of frames),
    /// when the layouts allow it: one pass over `b`, read in place, instead of the GEMM's packing.
    pub fn skinny(&self) -> Option<Skinny> {
        if !self.batch.is_empty() || self.m > MAX_SKINNY_ROWS || self.out_strides.1 != 1 {
            return None;
        }
        if self.b_strides.1 == 1 {
            Some(Skinny::Axpy)
        } else if self.b_strides.0 == 1 && self.a_strides.1 == 1 {
            Some(Skinny::Dot)
        } else {
            None
        }
    }

    /// Runs the product. `y` is written whole (every output element is one (β, i, j)).
    pub fn run(&self, a: &[f32], b: &[f32], y: &mut [f32], threads: usize) {
        if let Some(kind) = self.skinny() {
            // Columns per task: 256 output columns of every row stay in L1 while `b` streams by.
            let chunks = self.n.div_ceil(SKINNY_COLUMNS);
            let y_ptr = SendPtr(y.as_mut_ptr());
            let chunk = |c: usize| {
                let y_ptr = &y_ptr;
                let j0 = c * SKINNY_COLUMNS;
                let j1 = (j0 + SKINNY_COLUMNS).min(self.n);
                // SAFETY: tasks write disjoint column ranges of the m output rows.
                unsafe { skinny_columns(self, kind, a, b, y_ptr.0, j0, j1) };
            };
            if threads > 1 && self.m * self.n * self.k >= 1 << 18 {
                (0..chunks).into_par_iter().for_each(chunk);
            } else {
                (0..chunks).for_each(chunk);
            }
            unsafe { self.epilogue(y.as_mut_ptr(), threads) };
            return;
        }
        let count = self.batch_count();
        let macs = self.m * self.n * self.k;
        let y_ptr = SendPtr(y.as_mut_ptr());
        let one = |i: usize, threads: usize| {
            let (oa, ob, oo) = self.offsets(i);
            let lhs = Matrix { ptr: a[oa..].as_ptr(), rs: self.a_strides.0, cs: self.a_strides.1 };
            let rhs = Matrix { ptr: b[ob..].as_ptr(), rs: self.b_strides.0, cs: self.b_strides.1 };
            let y_ptr = &y_ptr;
            // SAFETY: batch entries write disjoint (β, i, j) elements of `y`, all inside it (the
            // strides come from the output's shape), and `a`, `b` are read within their lengths.
            unsafe {
                let dst = y_ptr.0.add(oo);
                gemm_into(self.m, self.n, self.k, lhs, rhs, dst, self.out_strides.0, self.out_strides.1, threads, false);
                self.epilogue(dst, threads);
            }
        };
        if threads > 1 && count >= 2 * threads && macs < 1 << 22 {
            // Many small products: one per task.
            (0..count).into_par_iter().for_each(|i| one(i, 1));
        } else {
            (0..count).for_each(|i| one(i, threads));
        }
    }

    /// Bias and clamp over one product's output at `dst`.
    unsafe fn epilogue(&self, dst: *mut f32, threads: usize) {
        if self.bias == Bias::None && self.clamp.is_none() {
            return;
        }
        let (rs, cs) = self.out_strides;
        let (clamp, n) = (self.clamp, self.n);
        let dst = SendPtr(dst);
        let row = |i: usize| {
            let dst = &dst;
            if cs == 1 {
                // SAFETY: row i of this product's output is n contiguous elements inside `y`
                // (see `run`), and no other task touches it.
                let r = unsafe { std::slice::from_raw_parts_mut(dst.0.add(i * rs), n) };
                match &self.bias {
                    Bias::Cols(v) => add_clamp_rows(r, v, clamp),
                    Bias::Rows(v) => add_clamp(r, v[i], clamp),
                    Bias::None => clamp_simd(r, clamp),
                }
            } else {
                for j in 0..n {
                    let b = match &self.bias {
                        Bias::None => 0.0,
                        Bias::Rows(v) => v[i],
                        Bias::Cols(v) => v[j],
                    };
                    // SAFETY: (i, j) is inside this product's output, see `run`.
                    unsafe {
                        let p = dst.0.add(i * rs + j * cs);
                        *p = (*p + b).max(clamp.lo).min(clamp.hi);
                    }
                }
            }
        };
        if threads > 1 && self.m * n >= 1 << 16 {
            (0..self.m).into_par_iter().for_each(row);
        } else {
            (0..self.m).for_each(row);
        }
    }
}

/// Rows up to which [`AvMatMul::skinny`] applies.
pub const MAX_SKINNY_ROWS: usize = 8;
const SKINNY_COLUMNS: usize = 256;

/// How a few-row product reads `b`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skinny {
    /// `b` is row-major along n: `y[i, :] += a[i, k] · b[k, :]`, vectorised along n.
    Axpy,
    /// `b` is stored `[n, k]` (a Gemm with `transB`) and `a` is contiguous along k: each output is
    /// a dot product, vectorised along k, all rows of `a` against one row of `b` at a time.
    Dot,
}

/// Columns `j0..j1` of every output row. Caller: `y` holds the product's output and no other task
/// writes these columns.
unsafe fn skinny_columns(op: &AvMatMul, kind: Skinny, a: &[f32], b: &[f32], y: *mut f32, j0: usize, j1: usize) {
    let rows: [&mut [f32]; MAX_SKINNY_ROWS] = std::array::from_fn(|i| {
        if i < op.m {
            // SAFETY: row i, columns j0..j1, of the output (out_strides.1 == 1), see the caller.
            unsafe { std::slice::from_raw_parts_mut(y.add(i * op.out_strides.0 + j0), j1 - j0) }
        } else {
            &mut []
        }
    });
    match kind {
        Skinny::Axpy => skinny_axpy_simd(op, a, b, j0, rows),
        Skinny::Dot => skinny_dot_simd(op, a, b, j0, rows),
    }
}

per_isa!(fn skinny_axpy_simd(op: &AvMatMul, a: &[f32], b: &[f32], j0: usize, rows: [&mut [f32]; MAX_SKINNY_ROWS]) = skinny_axpy);
per_isa!(fn skinny_dot_simd(op: &AvMatMul, a: &[f32], b: &[f32], j0: usize, rows: [&mut [f32]; MAX_SKINNY_ROWS]) = skinny_dot);

#[inline(always)]
fn skinny_axpy(op: &AvMatMul, a: &[f32], b: &[f32], j0: usize, mut rows: [&mut [f32]; MAX_SKINNY_ROWS]) {
    let (ars, acs) = op.a_strides;
    let w = rows[0].len();
    for r in rows.iter_mut().take(op.m) {
        r.fill(0.0);
    }
    for kk in 0..op.k {
        let bk = &b[kk * op.b_strides.0 + j0..][..w];
        for (i, r) in rows.iter_mut().take(op.m).enumerate() {
            let s = a[i * ars + kk * acs];
            for (o, v) in r.iter_mut().zip(bk) {
                *o += s * v;
            }
        }
    }
}

#[inline(always)]
fn skinny_dot(op: &AvMatMul, a: &[f32], b: &[f32], j0: usize, rows: [&mut [f32]; MAX_SKINNY_ROWS]) {
    match op.m {
        1 => skinny_dot_m::<1>(op, a, b, j0, rows),
        2 => skinny_dot_m::<2>(op, a, b, j0, rows),
        3 => skinny_dot_m::<3>(op, a, b, j0, rows),
        4 => skinny_dot_m::<4>(op, a, b, j0, rows),
        5 => skinny_dot_m::<5>(op, a, b, j0, rows),
        6 => skinny_dot_m::<6>(op, a, b, j0, rows),
        7 => skinny_dot_m::<7>(op, a, b, j0, rows),
        _ => skinny_dot_m::<8>(op, a, b, j0, rows),
    }
}

#[inline(always)]
fn skinny_dot_m<const M: usize>(op: &AvMatMul, a: &[f32], b: &[f32], j0: usize, rows: [&mut [f32]; MAX_SKINNY_ROWS]) {
    const L: usize = 16;
    // Depth per step: a slice of b's row stays in L1 while every row of a meets it.
    const KB: usize = 1024;
    let k = op.k;
    let full = k / L * L;
    let a_rows: [&[f32]; M] = std::array::from_fn(|i| &a[i * op.a_strides.0..][..k]);
    let w = rows[0].len();
    for j in 0..w {
        let bj = &b[(j0 + j) * op.b_strides.1..][..k];
        let mut acc = [[0f32; L]; M];
        for k0 in (0..full).step_by(KB) {
            let k1 = (k0 + KB).min(full);
            let bc = &bj[k0..k1];
            for (acc, ar) in acc.iter_mut().zip(&a_rows) {
                for (x, y) in ar[k0..k1].chunks_exact(L).zip(bc.chunks_exact(L)) {
                    for l in 0..L {
                        acc[l] += x[l] * y[l];
                    }
                }
            }
        }
        for (i, acc) in acc.iter().enumerate() {
            let tail: f32 = a_rows[i][full..].iter().zip(&bj[full..]).map(|(x, y)| x * y).sum();
            rows[i][j] = acc.iter().sum::<f32>() + tail;
        }
    }
}

impl Op for AvMatMul {
    fn name(&self) -> StaticName {
        "AvMatMul".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("m {} n {} k {}, {} batches, clamp {:?}", self.m, self.n, self.k, self.batch_count(), self.clamp)])
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    op_as_typed_op!();
}

impl EvalOp for AvMatMul {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (a, b) = args_2!(inputs);
        ensure!(a.shape() == self.a_shape && b.shape() == self.b_shape, "AvMatMul: shapes {:?} {:?}", a.shape(), b.shape());
        let xa = a.try_as_plain_ram()?.as_slice::<f32>()?;
        let xb = b.try_as_plain_ram()?.as_slice::<f32>()?;
        Ok(tvec!(output(&self.out_shape, |y, threads| self.run(xa, xb, y, threads))?.into_tvalue()))
    }
}

impl TypedOp for AvMatMul {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs.len() == 2);
        Ok(tvec!(f32::fact(&self.out_shape)))
    }

    fn cost(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        Ok(tvec!((Cost::FMA(f32::datum_type()), (self.batch_count() * self.m * self.n * self.k).into())))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `out[β, i, j]` summed one term at a time, through the same strides.
    fn naive(op: &AvMatMul, a: &[f32], b: &[f32]) -> Vec<f32> {
        let mut y = vec![f32::NAN; op.out_shape.iter().product()];
        for bi in 0..op.batch_count() {
            let (oa, ob, oo) = op.offsets(bi);
            for i in 0..op.m {
                for j in 0..op.n {
                    let mut acc = 0f64;
                    for k in 0..op.k {
                        acc += a[oa + i * op.a_strides.0 + k * op.a_strides.1] as f64 * b[ob + k * op.b_strides.0 + j * op.b_strides.1] as f64;
                    }
                    let bias = match &op.bias {
                        Bias::None => 0.0,
                        Bias::Rows(v) => v[i],
                        Bias::Cols(v) => v[j],
                    };
                    y[oo + i * op.out_strides.0 + j * op.out_strides.1] = (acc as f32 + bias).max(op.clamp.lo).min(op.clamp.hi);
                }
            }
        }
        y
    }

    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n).map(|i| ((i * 7919 + seed * 104729) % 1009) as f32 / 504.0 - 1.0).collect()
    }

    /// `amk,kn->amn` (a linear layer on tokens: the batch merges into m), `mk,abkn->abmn` (a
    /// constant on the left of a batch of images), `amk,akn->amn` (both batched), with each bias.
    #[test]
    fn matches_the_definition_with_bias_and_clamp() {
        let (a_, m, k, n, b_) = (3, 5, 7, 19, 2);
        let mut cases = vec![
            // amk,kn->amn
            AvMatMul {
                m, n, k,
                a_strides: (k, 1), b_strides: (n, 1), out_strides: (n, 1),
                batch: vec![BatchAxis { len: a_, a: m * k, b: 0, out: m * n }],
                bias: Bias::Cols(Arc::new(values(n, 1))), clamp: Clamp { lo: 0.0, hi: f32::INFINITY },
                a_shape: vec![a_, m, k], b_shape: vec![k, n], out_shape: vec![a_, m, n],
            },
            // mk,abkn->abmn
            AvMatMul {
                m, n, k,
                a_strides: (k, 1), b_strides: (n, 1), out_strides: (n, 1),
                batch: vec![
                    BatchAxis { len: a_, a: 0, b: b_ * k * n, out: b_ * m * n },
                    BatchAxis { len: b_, a: 0, b: k * n, out: m * n },
                ],
                bias: Bias::None, clamp: Clamp::NONE,
                a_shape: vec![m, k], b_shape: vec![a_, b_, k, n], out_shape: vec![a_, b_, m, n],
            },
            // amk,akn->amn, b transposed in memory (akn read from a [a, n, k] tensor)
            AvMatMul {
                m, n, k,
                a_strides: (k, 1), b_strides: (1, k), out_strides: (n, 1),
                batch: vec![BatchAxis { len: a_, a: m * k, b: n * k, out: m * n }],
                bias: Bias::Rows(Arc::new(values(m, 2))), clamp: Clamp { lo: -0.5, hi: 0.5 },
                a_shape: vec![a_, m, k], b_shape: vec![a_, n, k], out_shape: vec![a_, m, n],
            },
        ];
        for op in cases.iter_mut() {
            let a = values(op.a_shape.iter().product(), 3);
            let b = values(op.b_shape.iter().product(), 4);
            let want = naive(op, &a, &b);
            let mut merged = op.clone();
            merged.merge_batches();
            for threads in [1, 2] {
                for plan in [&*op, &merged] {
                    let mut y = vec![f32::NAN; want.len()];
                    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                    pool.install(|| plan.run(&a, &b, &mut y, threads));
                    let diff = crate::test_common::max_abs_diff(&y, &want);
                    assert!(diff <= 1e-5, "{:?} threads {threads}: max diff {diff}", op.out_shape);
                }
            }
        }
        // A few rows against weights: the skinny kernels, b stored [k, n] (axpy) and [n, k]
        // (dot, a Gemm with transB), depths that are not a multiple of the vector width, and
        // more columns than one task takes.
        for (m, k, n) in [(5, 37, 300), (1, 1100, 20), (8, 16, 257)] {
            for b_nk in [false, true] {
                let op = AvMatMul {
                    m, n, k,
                    a_strides: (k, 1), b_strides: if b_nk { (1, k) } else { (n, 1) }, out_strides: (n, 1),
                    batch: vec![],
                    bias: Bias::Cols(Arc::new(values(n, 5))), clamp: Clamp { lo: 0.0, hi: f32::INFINITY },
                    a_shape: vec![m, k], b_shape: if b_nk { vec![n, k] } else { vec![k, n] }, out_shape: vec![m, n],
                };
                assert_eq!(op.skinny(), Some(if b_nk { Skinny::Dot } else { Skinny::Axpy }));
                let a = values(m * k, 6);
                let b = values(n * k, 7);
                let want = naive(&op, &a, &b);
                for threads in [1, 2] {
                    let mut y = vec![f32::NAN; want.len()];
                    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                    pool.install(|| op.run(&a, &b, &mut y, threads));
                    let diff = crate::test_common::max_abs_diff(&y, &want);
                    assert!(diff <= 1e-5 * (k as f32).sqrt(), "skinny m {m} k {k} n {n} nk {b_nk}: max diff {diff}");
                }
            }
        }
        // The linear layer's batch merged into its rows; the images' batch cannot be.
        let mut first = cases[0].clone();
        first.merge_batches();
        assert_eq!((first.m, first.batch.len()), (a_ * m, 0));
        let mut second = cases[1].clone();
        second.merge_batches();
        assert_eq!(second.batch.len(), 2);
    }
}
