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
use crate::backend::tpavi::{add_outer, apply_nchw, fold_into, frame_sums_into, g_sums_into, FoldScratch};

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

/// Per-thread buffers of the operators, grown once to the largest block seen.
#[derive(Default)]
struct Scratch {
    /// Per-position mean and inverse deviation of the LayerNorm.
    stats: Vec<f32>,
    /// Spatial sums `[T, C]` and `gs` `[T, C']`.
    sums: Vec<f32>,
    gs: Vec<f32>,
    /// One group's K `[C', C']`.
    k: Vec<f32>,
    fold: FoldScratch,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
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
        let per = self.t / self.groups;
        SCRATCH.with_borrow_mut(|s| {
            s.stats.resize(2 * hw, 0.0);
            frame_sums_into(&v[..self.t * c * hw], hw, &mut s.sums);
            s.gs.resize(self.t * cp, 0.0);
            for (sum, gs) in s.sums.chunks_exact(c).zip(s.gs.chunks_exact_mut(cp)) {
                g_sums_into(&self.g_w, &self.g_b, sum, gs);
            }
            for g in 0..self.groups {
                let frames = g * per..(g + 1) * per;
                s.k.clear();
                s.k.resize(cp * cp, 0.0);
                for f in frames.clone() {
                    add_outer(&mut s.k, &phi[f * cp..(f + 1) * cp], &s.gs[f * cp..(f + 1) * cp], self.inv_n);
                }
                self.fold_and_apply(&v[frames.start * c * hw..frames.end * c * hw], &mut y[frames.start * c * hw..frames.end * c * hw], s, threads);
            }
        });
    }

    /// The fold of `s.k`, then the channel mixing and LayerNorm of each frame of `v` into `y`.
    fn fold_and_apply(&self, v: &[f32], y: &mut [f32], s: &mut Scratch, threads: usize) {
        let (c, cp, hw) = (self.c, self.cp, self.h * self.w);
        fold_into(&self.theta_wt, &self.theta_b, &s.k, &self.wz_t, &self.wz_b, c, cp, threads, &mut s.fold);
        for (vf, yf) in v.chunks_exact(c * hw).zip(y.chunks_exact_mut(c * hw)) {
            apply_nchw(vf, &s.fold.a, &s.fold.cvec, &self.gamma, &self.beta, self.eps, c, hw, yf, &mut s.stats, threads);
        }
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

/// One TPAVI block of a sliding-window stream (spec §6.6, "streaming"): the newest frame of a
/// window of `G` frames (the attention group), given the other frames' share of K.
///
/// K over the window is a sum of one rank-1 term per frame, `inv_n · φ_tᵀ gs_t`, and everything
/// else in the block is per frame. So a stream keeps each frame's φ and gs (`2·C'` numbers per
/// block), sums the older frames' terms itself, and runs the graph on the newest frame alone:
///
/// * inputs: V `[1, C, h, w]`, φ `[1, C']`, `rest` = Σ over the window's other frames of
///   `φ_tᵀ gs_t` `[C', C']` (unscaled), and `weight` `[1]`, how many times the newest frame counts
///   (1; T when a stream pads its first window with copies of its first frame);
/// * outputs: the block's output for the newest frame `[1, C, h, w]`, and its `[φ; gs]` `[2, C']`
///   for the stream to keep.
///
/// With `K = inv_n · (rest + weight · φᵀ gs)` the output equals [`AvTpavi`] run on the whole
/// window (`tests/stream.rs` holds a stream to the T-frame graph).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AvTpaviWindow {
    /// The block as folded for one frame per call (`t` = `groups` = 1; `inv_n` is still the
    /// window's 1/N).
    pub block: AvTpavi,
}

impl AvTpaviWindow {
    #[allow(clippy::too_many_arguments)]
    pub fn run(&self, v: &[f32], phi: &[f32], rest: &[f32], weight: f32, y: &mut [f32], terms: &mut [f32], threads: usize) {
        let b = &self.block;
        let (c, cp, hw) = (b.c, b.cp, b.h * b.w);
        SCRATCH.with_borrow_mut(|s| {
            s.stats.resize(2 * hw, 0.0);
            frame_sums_into(&v[..c * hw], hw, &mut s.sums);
            let (phi_out, gs) = terms.split_at_mut(cp);
            phi_out.copy_from_slice(&phi[..cp]);
            g_sums_into(&b.g_w, &b.g_b, &s.sums, gs);
            s.k.clear();
            s.k.extend(rest.iter().map(|r| r * b.inv_n));
            add_outer(&mut s.k, phi_out, gs, weight * b.inv_n);
            b.fold_and_apply(&v[..c * hw], y, s, threads);
        });
    }
}

impl Op for AvTpaviWindow {
    fn name(&self) -> StaticName {
        "AvTpaviWindow".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("C {} C' {} {}×{}, newest frame of a sliding window", self.block.c, self.block.cp, self.block.h, self.block.w)])
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    op_as_typed_op!();
}

impl EvalOp for AvTpaviWindow {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (v, phi, rest, weight) = args_4!(inputs);
        let b = &self.block;
        let shape = [1, b.c, b.h, b.w];
        ensure!(
            v.shape() == shape && phi.shape() == [1, b.cp] && rest.shape() == [b.cp, b.cp] && weight.len() == 1,
            "AvTpaviWindow: shapes {:?} {:?} {:?} {:?}",
            v.shape(),
            phi.shape(),
            rest.shape(),
            weight.shape()
        );
        let xv = v.try_as_plain_ram()?.as_slice::<f32>()?;
        let xp = phi.try_as_plain_ram()?.as_slice::<f32>()?;
        let xr = rest.try_as_plain_ram()?.as_slice::<f32>()?;
        let w = weight.try_as_plain_ram()?.as_slice::<f32>()?[0];
        let mut terms = Tensor::zero::<f32>(&[2, b.cp])?;
        let mut tv = terms.try_as_plain_ram_mut()?;
        let ts = tv.as_slice_mut::<f32>()?;
        let y = output(&shape, |y, threads| self.run(xv, xp, xr, w, y, ts, threads))?;
        Ok(tvec!(y.into_tvalue(), terms.into_tvalue()))
    }
}

impl TypedOp for AvTpaviWindow {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs.len() == 4);
        let b = &self.block;
        Ok(tvec!(f32::fact([1, b.c, b.h, b.w]), f32::fact([2, b.cp])))
    }

    as_op!();
}

/// Names of the inputs and outputs [`open_windows`] adds.
pub const WINDOW_WEIGHT_INPUT: &str = "tpavi_window.weight";

/// One block's added input and output, in graph order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WindowBlock {
    /// The `rest` input `[C', C']`.
    pub rest_input: String,
    /// The `[φ; gs]` output `[2, C']`.
    pub terms_output: String,
    pub cp: usize,
}

/// Turns a graph prepared for one frame per call, whose TPAVI blocks avseg folded ([`AvTpavi`]
/// with one frame), into the newest-frame step of a sliding window: each block becomes an
/// [`AvTpaviWindow`] whose `rest` is a new graph input, a new input [`WINDOW_WEIGHT_INPUT`] `[1]`
/// is shared by all blocks, and each block's `[φ; gs]` becomes a graph output after the model's
/// own. Inputs are appended in the order: weight, then each block's `rest`. Fails, saying why, on
/// a graph without folded blocks (tract's own kernels, or a graph the fold did not recognise),
/// whose blocks see more than one frame, or whose K is not averaged over `group` frames (1/N of
/// the graph ≠ 1/(group·h·w): a package whose `tpavi_group` does not match its graph).
pub fn open_windows(model: &mut TypedModel, group: usize) -> TractResult<Vec<WindowBlock>> {
    let ids: Vec<usize> = model.nodes().iter().filter(|n| n.op_is::<AvTpavi>()).map(|n| n.id).collect();
    ensure!(!ids.is_empty(), "no folded TPAVI block in the graph (sliding windows need avseg's CPU kernels and a graph written by avseg's exporter)");
    let weight = model.add_source(WINDOW_WEIGHT_INPUT, f32::fact([1]))?;
    let mut blocks = Vec::with_capacity(ids.len());
    let mut terms = Vec::with_capacity(ids.len());
    for id in ids {
        let node = model.node(id);
        let block = node.op_as::<AvTpavi>().context("folded TPAVI block")?.clone();
        ensure!(block.t == 1 && block.groups == 1, "{}: the block sees {} frames per call; a sliding window needs 1", node.name, block.t);
        let frames = 1.0 / (block.inv_n * (block.h * block.w) as f32);
        ensure!(
            (frames - group as f32).abs() < 1e-3 * group as f32,
            "{}: K is averaged over {frames:.3} frames, not the window's {group}",
            node.name
        );
        let (name, inputs, cp) = (node.name.clone(), node.inputs.clone(), block.cp);
        let rest_name = format!("tpavi_window.{name}.rest");
        let rest = model.add_source(&rest_name, f32::fact([cp, cp]))?;
        let mut patch = TypedModelPatch::new(format!("avseg sliding TPAVI {name}"));
        let taps = [patch.tap_model(model, inputs[0])?, patch.tap_model(model, inputs[1])?, patch.tap_model(model, rest)?, patch.tap_model(model, weight)?];
        let window_name = format!("{name}.window");
        let outs = patch.wire_node(&window_name, AvTpaviWindow { block }, &taps)?;
        patch.shunt_outside(model, OutletId::new(id, 0), outs[0])?;
        patch.apply(model)?;
        let window = model.node_id_by_name(&window_name)?;
        let terms_name = format!("tpavi_window.{name}.terms");
        model.set_outlet_label(OutletId::new(window, 1), terms_name.clone())?;
        terms.push(OutletId::new(window, 1));
        blocks.push(WindowBlock { rest_input: rest_name, terms_output: terms_name, cp });
    }
    let mut outputs = model.output_outlets()?.to_vec();
    outputs.extend(terms);
    model.select_output_outlets(&outputs)?;
    Ok(blocks)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tiny TPAVI package's segmenter for one frame per call, as the CPU backend prepares it
    /// (optionally without avseg's rewrite).
    fn tiny_segmenter(rewritten: bool) -> TypedModel {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/tiny-tpavi/segmenter.onnx");
        let mut model = tract_onnx::onnx().model_for_path(&path).unwrap();
        model.set_input_fact(0, InferenceFact::dt_shape(f32::datum_type(), &[1usize, 3, 224, 224][..])).unwrap();
        model.set_input_fact(1, InferenceFact::dt_shape(f32::datum_type(), &[1usize, 128][..])).unwrap();
        let mut typed = model.into_typed().unwrap();
        if rewritten {
            typed.prop_consts().unwrap();
            super::super::rewrite::rewrite(&mut typed).unwrap();
        }
        typed.into_decluttered().unwrap()
    }

    /// The window step: one `rest` input per block after the shared weight, one terms output per
    /// block after the logits; refused when K is averaged over another count than the window's, and
    /// on a graph whose blocks were not folded.
    #[test]
    fn open_windows_adds_the_window_inputs_and_checks_the_group() {
        let model = tiny_segmenter(true);
        let e = open_windows(&mut model.clone(), 4).unwrap_err().to_string();
        assert!(e.contains("averaged over 5.000 frames, not the window's 4"), "{e}");

        let mut step = model.clone();
        let blocks = open_windows(&mut step, 5).unwrap();
        assert_eq!(blocks.len(), 4);
        assert_eq!(step.inputs.len(), 2 + 1 + 4);
        assert_eq!(step.outputs.len(), 1 + 4);
        for (i, b) in blocks.iter().enumerate() {
            assert_eq!(step.input_fact(3 + i).unwrap().shape.as_concrete().unwrap(), &[b.cp, b.cp]);
            assert_eq!(step.output_fact(1 + i).unwrap().shape.as_concrete().unwrap(), &[2, b.cp]);
        }
        assert_eq!(step.input_fact(2).unwrap().shape.as_concrete().unwrap(), &[1]);
        assert_eq!(step.output_fact(0).unwrap().shape.as_concrete().unwrap(), &[1, 1, 224, 224]);
        // It still optimises into a plan.
        step.into_optimized().unwrap();

        let e = open_windows(&mut tiny_segmenter(false), 5).unwrap_err().to_string();
        assert!(e.contains("no folded TPAVI block"), "{e}");
    }

    /// The window step of one block against the block run on the whole window: given the other
    /// frames' summed terms, the newest frame's output is the same.
    #[test]
    fn the_window_step_equals_the_block_on_the_whole_window() {
        use crate::backend::cuda::reference::{random_tpavi_weights, Lcg};
        let (t, c, cp, d, h, w) = (5, 24, 8, 16, 3, 4);
        let mut rng = Lcg::new(3);
        let wts = random_tpavi_weights(&mut rng, c, cp, d, true);
        let transpose = |m: &[f32], rows: usize, cols: usize| -> Vec<f32> { (0..cols).flat_map(|j| (0..rows).map(move |i| m[i * cols + j])).collect() };
        let (wz, bz) = wts.folded_wz();
        let hw = h * w;
        let block = |frames: usize| AvTpavi {
            t: frames,
            c,
            cp,
            h,
            w,
            groups: 1,
            theta_wt: Arc::new(transpose(&wts.theta_w, cp, c)),
            theta_b: Arc::new(wts.theta_b.clone()),
            g_w: Arc::new(wts.g_w.clone()),
            g_b: Arc::new(wts.g_b.iter().map(|b| b * hw as f32).collect()),
            inv_n: 1.0 / (t * hw) as f32,
            wz_t: Arc::new(transpose(&wz, c, cp)),
            wz_b: Arc::new(bz.clone()),
            gamma: Arc::new(wts.ln_gamma.clone()),
            beta: Arc::new(wts.ln_beta.clone()),
            eps: 1e-5,
        };
        let v = rng.normals(t * c * hw, 1.0);
        let phi = rng.normals(t * cp, 1.0);
        let mut whole = vec![0.0f32; v.len()];
        block(t).run(&v, &phi, &mut whole, 1);

        let step = AvTpaviWindow { block: block(1) };
        let mut rest = vec![0.0f32; cp * cp];
        let mut terms = vec![0.0f32; 2 * cp];
        let mut y = vec![0.0f32; c * hw];
        for f in 0..t {
            // Each older frame's terms, as the step returns them.
            let frame = f * c * hw..(f + 1) * c * hw;
            step.run(&v[frame], &phi[f * cp..(f + 1) * cp], &vec![0.0; cp * cp], 1.0, &mut y, &mut terms, 1);
            if f + 1 < t {
                add_outer(&mut rest, &terms[..cp], &terms[cp..], 1.0);
            }
        }
        let newest = &whole[(t - 1) * c * hw..];
        let alone = crate::test_common::max_abs_diff(&y, newest);
        assert!(alone > 1e-2, "without the older frames' terms the newest frame must differ ({alone})");
        // The last call above ran with an empty rest; run it again with the older frames' terms.
        step.run(&v[(t - 1) * c * hw..], &phi[(t - 1) * cp..], &rest, 1.0, &mut y, &mut terms, 1);
        let diff = crate::test_common::max_abs_diff(&y, newest);
        assert!(diff < 1e-5, "newest frame: window step vs whole window: max |diff| {diff}");
    }
}
