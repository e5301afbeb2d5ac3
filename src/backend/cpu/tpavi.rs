//! `AvTpavi`: one TPAVI block (spec §6.5, mode "dot") as a single operator running the fold of
//! [`crate::backend::tpavi`]: per group of frames, the clip-dependent C×C matrix and vector, then
//! one product and the channel LayerNorm per frame, straight from and into NCHW.
//!
//! The exported graph states the block in its re-associated form (spatial sums, K, θ·K, W_z, the
//! residual, a LayerNorm spelt out in nine nodes and two layout moves); tract runs each of those as
//! a pass over the feature map. Here the map is read twice (sums, product) and written once.

use std::cell::RefCell;
use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;

use super::output;
use crate::backend::tpavi::{apply_nchw, fold, frame_sums, k_matrix};

/// The operator: inputs V `[T, C, h, w]` and φ `[T, C']`, output `[T, C, h, w]`.
#[derive(Clone, Debug, PartialEq)]
pub struct AvTpavi {
    pub t: usize,
    pub c: usize,
    pub cp: usize,
    pub h: usize,
    pub w: usize,
    /// Groups of `t / groups` consecutive frames, each with its own K.
    pub groups: usize,
    /// W_θᵀ `[C, C']` and b_θ `[C']`.
    pub theta_wt: Arc<Vec<f32>>,
    pub theta_b: Arc<Vec<f32>>,
    /// `gs_t = W_g·S_t + g_b`: W_g `[C', C]`, g_b `[C']` (h·w·b_g, as the graph carries it).
    pub g_w: Arc<Vec<f32>>,
    pub g_b: Arc<Vec<f32>>,
    /// 1/N, N the positions of one group.
    pub inv_n: f32,
    /// W_zᵀ `[C', C]` and b_z `[C]`, BatchNorm folded.
    pub wz_t: Arc<Vec<f32>>,
    pub wz_b: Arc<Vec<f32>>,
    pub gamma: Arc<Vec<f32>>,
    pub beta: Arc<Vec<f32>>,
    pub eps: f32,
}

impl Eq for AvTpavi {}

impl std::hash::Hash for AvTpavi {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (self.t, self.c, self.cp, self.h, self.w, self.groups).hash(state)
    }
}

thread_local! {
    /// Per-position mean and inverse deviation, grown once.
    static STATS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

impl AvTpavi {
    /// Checks that the weights have the sizes the shapes imply.
    pub fn check(&self) -> TractResult<()> {
        let (c, cp) = (self.c, self.cp);
        ensure!(self.groups > 0 && self.t % self.groups == 0 && c > 0 && cp > 0, "AvTpavi: shapes");
        ensure!(
            self.theta_wt.len() == c * cp
                && self.theta_b.len() == cp
                && self.g_w.len() == cp * c
                && self.g_b.len() == cp
                && self.wz_t.len() == cp * c
                && self.wz_b.len() == c
                && self.gamma.len() == c
                && self.beta.len() == c,
            "AvTpavi: weight sizes"
        );
        Ok(())
    }

    pub fn run(&self, v: &[f32], phi: &[f32], y: &mut [f32], threads: usize) {
        let (c, cp, hw) = (self.c, self.cp, self.h * self.w);
        let sums = frame_sums(v, self.t, c, hw);
        // gs_t = W_g·S_t + g_b
        let gs: Vec<f32> = sums
            .chunks_exact(c)
            .flat_map(|s| (0..cp).map(move |j| self.g_w[j * c..(j + 1) * c].iter().zip(s).map(|(w, x)| w * x).sum::<f32>() + self.g_b[j]))
            .collect();
        let per = self.t / self.groups;
        STATS.with_borrow_mut(|stats| {
            if stats.len() < 2 * hw {
                stats.resize(2 * hw, 0.0);
            }
            for g in 0..self.groups {
                let frames = g * per..(g + 1) * per;
                let k = k_matrix(&phi[frames.start * cp..frames.end * cp], &gs[frames.start * cp..frames.end * cp], cp, self.inv_n);
                let (a, cvec) = fold(&self.theta_wt, &self.theta_b, &k, &self.wz_t, &self.wz_b, c, cp, threads);
                for f in frames {
                    let range = f * c * hw..(f + 1) * c * hw;
                    apply_nchw(&v[range.clone()], &a, &cvec, &self.gamma, &self.beta, self.eps, c, hw, &mut y[range], stats, threads);
                }
            }
        });
    }
}

impl Op for AvTpavi {
    fn name(&self) -> StaticName {
        "AvTpavi".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("T {} C {} C' {} {}×{}, {} groups", self.t, self.c, self.cp, self.h, self.w, self.groups)])
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    op_as_typed_op!();
}

impl EvalOp for AvTpavi {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (v, phi) = args_2!(inputs);
        let shape = [self.t, self.c, self.h, self.w];
        ensure!(v.shape() == shape && phi.shape() == [self.t, self.cp], "AvTpavi: shapes {:?} {:?}", v.shape(), phi.shape());
        let xv = v.try_as_plain_ram()?.as_slice::<f32>()?;
        let xp = phi.try_as_plain_ram()?.as_slice::<f32>()?;
        Ok(tvec!(output(&shape, |y, threads| self.run(xv, xp, y, threads))?.into_tvalue()))
    }
}

impl TypedOp for AvTpavi {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs.len() == 2);
        Ok(tvec!(f32::fact([self.t, self.c, self.h, self.w])))
    }

    as_op!();
}
