//! `AvGatherSum`: a weighted sum of gathered table rows, the sampling core of multi-scale
//! deformable attention (spec §7.6) as avseg's exporter writes it in plain ONNX:
//!
//! ```text
//! Gather(table [R, E], idx [B…, P]) → [B…, P, E] → Reshape [B…, P·s, D] (E = s·D)
//!   · weights [B…, P·s, 1] → ReduceSum over the P·s axis → [B…, 1, D]
//! ```
//!
//! Each index picks a row of `s` corner vectors of length `D`; each corner has its own weight
//! (bilinear weight × attention). Run as written, the gathered tensor is materialised (253 MB per
//! AVSegFormer-R50 layer at 224²), multiplied, and reduced along a strided axis: about 200 ms per
//! layer in tract. Fused, every output vector is accumulated in registers straight from the table
//! rows, and the batch rows are split over the runner's threads.

use rayon::prelude::*;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;

use super::output;

/// The operator, planned for fixed shapes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AvGatherSum {
    /// Table rows (R) and row length (E).
    pub rows: usize,
    pub row_len: usize,
    /// Indices per output vector (P), and corner vectors per table row (s = E / D).
    pub points: usize,
    pub corners: usize,
    /// Output vectors (the product of the batch axes, B) and their length (D).
    pub batch: usize,
    pub depth: usize,
    /// The output shape: the reduction's, `[B…, 1, D]`.
    pub out_shape: Vec<usize>,
}

impl AvGatherSum {
    /// `y[b, d] = Σ_j w[b, j] · table[idx[b, j / s], (j mod s)·D + d]`, for `j < P·s`.
    ///
    /// Indices follow ONNX Gather: negative ones count from the end. An index outside
    /// `-R..R` is an error, as it is in tract's Gather.
    pub fn run(&self, table: &[f32], idx: &[i64], w: &[f32], y: &mut [f32], threads: usize) -> TractResult<()> {
        let (d, rows) = (self.depth, self.rows as i64);
        if let Some(bad) = idx.iter().find(|&&i| i < -rows || i >= rows) {
            bail!("AvGatherSum: index {bad} is outside a table of {rows} rows");
        }
        let one = |b: usize, out: &mut [f32]| gather_one_simd(self, table, idx, w, b, out);
        if threads > 1 && self.batch >= 64 {
            y.par_chunks_mut(d * 64).enumerate().for_each(|(c, chunk)| {
                for (k, out) in chunk.chunks_mut(d).enumerate() {
                    one(c * 64 + k, out);
                }
            });
        } else {
            for (b, out) in y.chunks_mut(d).enumerate() {
                one(b, out);
            }
        }
        Ok(())
    }
}

per_isa!(fn gather_one_simd(op: &AvGatherSum, table: &[f32], idx: &[i64], w: &[f32], b: usize, out: &mut [f32]) = gather_one);

/// Output vector `b` (indices already checked).
#[inline(always)]
fn gather_one(op: &AvGatherSum, table: &[f32], idx: &[i64], w: &[f32], b: usize, out: &mut [f32]) {
    let (p, s, d, e) = (op.points, op.corners, op.depth, op.row_len);
    out.fill(0.0);
    let wb = &w[b * p * s..][..p * s];
    for (pi, &i) in idx[b * p..][..p].iter().enumerate() {
        let r = if i < 0 { i + op.rows as i64 } else { i } as usize;
        let row = &table[r * e..][..e];
        for (k, corner) in row.chunks_exact(d).enumerate() {
            let wk = wb[pi * s + k];
            for (o, v) in out.iter_mut().zip(corner) {
                *o += wk * v;
            }
        }
    }
}

impl Op for AvGatherSum {
    fn name(&self) -> StaticName {
        "AvGatherSum".into()
    }

    op_as_typed_op!();
}

impl EvalOp for AvGatherSum {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (table, idx, w) = args_3!(inputs);
        ensure!(table.shape() == [self.rows, self.row_len], "AvGatherSum: table shape {:?}", table.shape());
        ensure!(idx.len() == self.batch * self.points, "AvGatherSum: {} indices", idx.len());
        ensure!(w.len() == self.batch * self.points * self.corners, "AvGatherSum: {} weights", w.len());
        let idx = idx.cast_to::<i64>()?;
        let xi = idx.try_as_plain_ram()?;
        let xi = xi.as_slice::<i64>()?;
        let xt = table.try_as_plain_ram()?.as_slice::<f32>()?;
        let xw = w.try_as_plain_ram()?.as_slice::<f32>()?;
        let mut result = Ok(());
        let y = output(&self.out_shape, |y, threads| result = self.run(xt, xi, xw, y, threads))?;
        result?;
        Ok(tvec!(y.into_tvalue()))
    }
}

impl TypedOp for AvGatherSum {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs.len() == 3);
        Ok(tvec!(f32::fact(&self.out_shape)))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Gather, reshape, multiply and sum written out as the ONNX graph does them.
    fn naive(op: &AvGatherSum, table: &[f32], idx: &[i64], w: &[f32]) -> Vec<f32> {
        let (p, s, d, e) = (op.points, op.corners, op.depth, op.row_len);
        let mut gathered = Vec::new();
        for &i in idx {
            let r = if i < 0 { i + op.rows as i64 } else { i } as usize;
            gathered.extend_from_slice(&table[r * e..(r + 1) * e]);
        }
        // gathered is [B, P, E] = [B, P·s, D] in memory.
        let mut y = vec![0.0; op.batch * d];
        for b in 0..op.batch {
            for j in 0..p * s {
                for k in 0..d {
                    y[b * d + k] += gathered[(b * p * s + j) * d + k] * w[b * p * s + j];
                }
            }
        }
        y
    }

    #[test]
    fn matches_gather_multiply_and_sum() {
        let op = AvGatherSum { rows: 37, row_len: 4 * 8, points: 3, corners: 4, batch: 70, depth: 8, out_shape: vec![70, 1, 8] };
        let table: Vec<f32> = (0..37 * 32).map(|i| ((i * 7919) % 101) as f32 / 50.0 - 1.0).collect();
        let idx: Vec<i64> = (0..70 * 3).map(|i| ((i * 13) % 74) as i64 - 37).collect();
        let w: Vec<f32> = (0..70 * 12).map(|i| ((i * 31) % 17) as f32 / 16.0).collect();
        let want = naive(&op, &table, &idx, &w);
        for threads in [1, 2] {
            let mut y = vec![f32::NAN; want.len()];
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| op.run(&table, &idx, &w, &mut y, threads)).unwrap();
            let diff = crate::test_common::max_abs_diff(&y, &want);
            assert!(diff <= 1e-5, "threads {threads}: max diff {diff}");
        }
        let mut y = vec![0.0; want.len()];
        let mut bad = idx.clone();
        bad[5] = 37;
        let err = op.run(&table, &bad, &w, &mut y, 1).unwrap_err();
        assert!(err.to_string().contains("index 37 is outside a table of 37 rows"), "{err}");
    }
}
