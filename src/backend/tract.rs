//! CPU backend on tract.
//!
//! Each graph is loaded once, its inputs pinned to the package's fixed shapes (T, H, W), and
//! optimised into a plan; a call then only copies tensors in and out of a state that lives as long
//! as the runner. The runner works on tract-core's typed graph rather than the `tract` facade so that
//! avseg can rewrite graphs at load time and time each operator.

use std::time::{Duration, Instant};

use tract_linalg::multithread::Executor;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::plan::eval as eval_node;
use tract_onnx::tract_core::runtime::RunOptions;

use super::cpu::tpavi::{open_windows, WindowBlock, WINDOW_WEIGHT_INPUT};
use super::cpu::{rewrite::rewrite, CpuKernels};
use super::graph_cache::GraphCache;
use super::shared_plans::{self, PlanKey};
use super::{BackendError, BackendOptions, OpTime, Runner};
use crate::error::panic_message;
use crate::model::{integrity, FileCheck, GraphInfo, ModelPackage};
use crate::tensor::Tensor as AvTensor;

/// The name this backend reports ([`Runner::backend_name`]).
pub const BACKEND: &str = "tract";

/// One optimised graph with fixed input shapes, and the state it runs in.
struct Graph {
    role: &'static str,
    state: TypedSimpleState,
    input_names: Vec<String>,
    input_shapes: Vec<Vec<usize>>,
    /// One tract tensor per input, made at preparation and refilled by each call: the state takes
    /// a reference-counted handle and drops it when the call ends, so the buffer is ours again
    /// (`Arc::get_mut`) and a call allocates nothing for its inputs.
    input_values: Vec<Option<Arc<Tensor>>>,
    output_names: Vec<String>,
    /// A sliding window's step ([`open_windows`]): its TPAVI blocks, whose inputs and outputs
    /// follow the graph's own.
    window: Vec<WindowBlock>,
}

impl Graph {
    /// Prepares a graph; a panic inside tract (a tract bug, which a malformed file can trigger:
    /// `fuzz/` found one) is an error naming the file instead of a crash.
    /// With `window` (the window's frames), the graph becomes a sliding TPAVI window's step
    /// ([`open_windows`]).
    fn prepare(info: &GraphInfo, input_shapes: Vec<Vec<usize>>, options: &BackendOptions, window: Option<usize>) -> Result<Self, BackendError> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Self::prepare_inner(info, input_shapes, options, window)))
            .unwrap_or_else(|panic| {
                Err(BackendError::Prepare {
                    backend: BACKEND,
                    path: info.path.clone(),
                    detail: format!("tract failed on this graph (a tract bug the file triggers): {}", panic_message(&*panic)),
                })
            })
    }

    fn prepare_inner(info: &GraphInfo, input_shapes: Vec<Vec<usize>>, options: &BackendOptions, window: Option<usize>) -> Result<Self, BackendError> {
        let err = |e: anyhow::Error| BackendError::Prepare {
            backend: BACKEND,
            path: info.path.clone(),
            detail: format!("{e:#}"),
        };
        let t0 = Instant::now();
        // Checksums: a deferred one is checked here on the bytes loaded, the ONNX file's or the
        // cache entry's; a shared plan was checked by the engine that prepared it.
        let checked = matches!(info.check, FileCheck::Verified | FileCheck::Deferred);
        let shared_key = options
            .share_plans
            .then(|| PlanKey::new(&info.path, &input_shapes, options.threads, options.cpu_kernels, checked, window))
            .flatten();
        if let Some((plan, blocks)) = shared_key.as_ref().and_then(shared_plans::find) {
            let state = TypedSimpleState::new(&plan).map_err(err)?;
            let live = shared_plans::live();
            log::debug!("{}: took the plan of a live engine in {:?} ({live} shared)", info.path.display(), t0.elapsed());
            return Ok(Graph::new(info, state, input_shapes, blocks));
        }
        // The rewritten, decluttered graph: from the cache when an entry for this file, these
        // shapes and this build exists, else from the ONNX file (and then cached).
        let cache = match (&options.graph_cache, options.cpu_kernels) {
            (_, CpuKernels::Tract) => None,
            (Some(dir), _) => Some(GraphCache::new(dir)),
            (None, _) => GraphCache::from_env(),
        };
        let entry = cache.as_ref().and_then(|c| c.entry(&info.path, &input_shapes));
        let verify_entry = info.check != FileCheck::NotVerified;
        // The manifest's checksum of the ONNX file, when it is (or was) checked.
        let source = info.checksum.as_deref().filter(|_| checked);
        let cached = cache.as_ref().zip(entry.as_ref()).and_then(|(c, e)| c.load(e, verify_entry, source));
        let from_cache = cached.is_some();
        let decluttered = match cached {
            Some(model) => model,
            None => {
                if let (FileCheck::Deferred, Some(recorded)) = (&info.check, &info.checksum) {
                    verify_onnx(info, recorded)?;
                }
                let decluttered = decluttered_model(&info.path, &input_shapes, options.cpu_kernels).map_err(err)?;
                if let (Some(c), Some(e)) = (&cache, &entry) {
                    c.store(e, &decluttered, source);
                }
                decluttered
            }
        };
        let t_graph = t0.elapsed();
        // Already decluttered (freshly or before caching): tract's code generation only. A
        // window's step is made from the cached form, which it shares with other sessions.
        let mut optimized = decluttered;
        let blocks = match window {
            Some(group) => open_windows(&mut optimized, group).map_err(err)?,
            None => Vec::new(),
        };
        optimized.optimize().map_err(err)?;
        let t_opt = t0.elapsed();
        let run_options = RunOptions { executor: Some(executor(options.threads)), ..RunOptions::default() };
        let plan = TypedSimplePlan::new_with_options(optimized, &run_options).map_err(err)?;
        let state = TypedSimpleState::new(&plan).map_err(err)?;
        if let Some(key) = shared_key {
            shared_plans::share(key, &plan, &blocks);
        }
        log::debug!(
            "{}: loaded in {:?} ({} {:?}, optimise {:?}, plan {:?})",
            info.path.display(),
            t0.elapsed(),
            if from_cache { "graph cache" } else { "ONNX, rewrite and declutter" },
            t_graph,
            t_opt - t_graph,
            t0.elapsed() - t_opt
        );
        Ok(Graph::new(info, state, input_shapes, blocks))
    }

    fn new(info: &GraphInfo, state: TypedSimpleState, mut input_shapes: Vec<Vec<usize>>, window: Vec<WindowBlock>) -> Self {
        let mut input_names: Vec<String> = info.inputs.iter().map(|d| d.name.clone()).collect();
        let mut output_names = vec![info.outputs[0].name.clone()];
        if !window.is_empty() {
            input_names.push(WINDOW_WEIGHT_INPUT.into());
            input_shapes.push(vec![1]);
            for b in &window {
                input_names.push(b.rest_input.clone());
                input_shapes.push(vec![b.cp, b.cp]);
                output_names.push(b.terms_output.clone());
            }
        }
        let input_values = input_shapes.iter().map(|s| Tensor::zero::<f32>(s).ok().map(Arc::new)).collect();
        Graph { role: info.role, state, input_names, input_shapes, input_values, output_names, window }
    }

    /// Copies `src` into input `i`'s kept tensor, and returns a handle to it for the state.
    fn stage_input(&mut self, i: usize, src: &AvTensor) -> TractResult<TValue> {
        let slot = &mut self.input_values[i];
        let reusable = slot.as_mut().and_then(Arc::get_mut).is_some_and(|t| t.shape() == src.shape());
        if !reusable {
            // Never made, or still shared (a previous call failed before the state let go).
            *slot = Some(Arc::new(Tensor::zero::<f32>(src.shape())?));
        }
        let arc = slot.as_mut().ok_or_else(|| anyhow::anyhow!("input tensor"))?;
        let t = Arc::get_mut(arc).ok_or_else(|| anyhow::anyhow!("input tensor still shared"))?;
        t.try_as_plain_ram_mut()?.as_slice_mut::<f32>()?.copy_from_slice(src.data());
        Ok(TValue::from_const(arc.clone()))
    }

    /// [`Graph::run_into`] into a new tensor.
    #[cfg(test)]
    fn run(&mut self, inputs: &[&AvTensor], profile: Option<&mut Vec<OpTime>>) -> Result<AvTensor, BackendError> {
        let mut out = AvTensor::zeros(Vec::new());
        self.run_into(inputs, &mut out, profile)?;
        Ok(out)
    }

    /// Runs the graph on `inputs` and writes its output into `out`, reusing `out`'s buffers.
    fn run_into(&mut self, inputs: &[&AvTensor], out: &mut AvTensor, profile: Option<&mut Vec<OpTime>>) -> Result<(), BackendError> {
        self.run_outputs_into(inputs, &mut [out], profile)
    }

    /// Runs the graph on `inputs` and writes its outputs, in order, into `outs` (one per output).
    fn run_outputs_into(&mut self, inputs: &[&AvTensor], outs: &mut [&mut AvTensor], profile: Option<&mut Vec<OpTime>>) -> Result<(), BackendError> {
        if inputs.len() != self.input_shapes.len() {
            return Err(BackendError::Run {
                graph: self.role,
                detail: format!("{} inputs given, the graph takes {}", inputs.len(), self.input_shapes.len()),
            });
        }
        let mut values: TVec<TValue> = TVec::with_capacity(inputs.len());
        for (i, t) in inputs.iter().enumerate() {
            let (want, name) = (&self.input_shapes[i], &self.input_names[i]);
            if t.shape() != want.as_slice() {
                return Err(BackendError::InputShape {
                    graph: self.role,
                    input: name.clone(),
                    expected: want.clone(),
                    actual: t.shape().to_vec(),
                });
            }
            // tract would propagate NaN silently into every mask; refuse it at the boundary.
            if let Some((index, value)) = t.first_non_finite() {
                return Err(BackendError::NonFiniteInput { graph: self.role, input: name.clone(), index, value });
            }
            let v = self.stage_input(i, t).map_err(|e| BackendError::Run { graph: self.role, detail: format!("{e:#}") })?;
            values.push(v);
        }
        let role = self.role;
        let state = &mut self.state;
        // As in `prepare`: a panic inside tract is this graph's error, not the caller's crash.
        let outputs = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match profile {
            None => state.run(values),
            Some(times) => state.run_plan_with_eval(values, |ctx, op_state, node, inputs| {
                let start = Instant::now();
                let out = eval_node(ctx, op_state, node, inputs);
                record(times, role, node.op().name().as_ref(), &node.name, start.elapsed());
                out
            }),
        }))
        .unwrap_or_else(|panic| Err(anyhow::anyhow!("tract panicked: {}", panic_message(&*panic))))
        .map_err(|e| BackendError::Run { graph: role, detail: format!("{e:#}") })?;
        if outputs.len() != outs.len() {
            return Err(BackendError::Output {
                graph: role,
                output: self.output_names[0].clone(),
                detail: format!("and the graph's other outputs: {} made, {} expected", outputs.len(), outs.len()),
            });
        }
        for ((out, out_tensor), name) in outputs.into_iter().zip(outs.iter_mut()).zip(&self.output_names) {
            let view = out.to_plain_array_view::<f32>().map_err(|e| BackendError::Output {
                graph: role,
                output: name.clone(),
                detail: format!("is not f32 ({e:#})"),
            })?;
            let dst = out_tensor.reshape_for_write(view.shape());
            match view.as_slice() {
                Some(s) => dst.copy_from_slice(s),
                None => dst.iter_mut().zip(view.iter()).for_each(|(d, s)| *d = *s),
            }
        }
        Ok(())
    }
}

/// An ONNX graph as the CPU backend prepares it before tract's code generation: every input pinned
/// to its shape (only fixed shapes get tract's best kernels, and symbolic batch axes are resolved
/// once), avseg's rewrite applied with its kernels, then tract's declutter. What the graph cache
/// stores, and what the CUDA planner ([`super::cuda::plan`]) reads.
pub fn decluttered_model(path: &std::path::Path, input_shapes: &[Vec<usize>], kernels: CpuKernels) -> TractResult<TypedModel> {
    let mut model = tract_onnx::onnx().model_for_path(path)?;
    for (i, shape) in input_shapes.iter().enumerate() {
        model.set_input_fact(i, InferenceFact::dt_shape(f32::datum_type(), shape.as_slice()))?;
    }
    let mut typed = model.into_typed()?;
    if kernels == CpuKernels::Avseg {
        // Constants first, so that weights behind a Cast are visible to the rewrite.
        typed.prop_consts()?;
        let report = rewrite(&mut typed)?;
        log::debug!("{}: avseg CPU kernels: {report:?}", path.display());
    }
    typed.into_decluttered()
}

/// Compares the ONNX file about to be parsed with the checksum its manifest records.
fn verify_onnx(info: &GraphInfo, recorded: &str) -> Result<(), BackendError> {
    let corrupt = |detail: String| BackendError::Corrupt {
        path: info.path.clone(),
        field: format!("graphs.{}.checksum", info.role),
        detail,
    };
    let (_, actual) = integrity::checksum_file(&info.path).map_err(|e| corrupt(format!("cannot read: {e}")))?;
    if actual != recorded {
        return Err(corrupt(integrity::checksum_mismatch(&actual, recorded)));
    }
    Ok(())
}

/// Adds one operator call to the per-op totals (operator names repeat across nodes, so the profile
/// is kept per node and folded by the caller).
fn record(times: &mut Vec<OpTime>, graph: &'static str, op: &str, node: &str, d: Duration) {
    match times.iter_mut().find(|t| t.graph == graph && t.node == node) {
        Some(t) => {
            t.time += d;
            t.calls += 1;
        }
        None => times.push(OpTime { graph, op: op.to_string(), node: node.to_string(), time: d, calls: 1 }),
    }
}

fn executor(threads: usize) -> Executor {
    match threads {
        0 | 1 => Executor::SingleThread,
        n => Executor::multithread(n),
    }
}

/// A package's graphs prepared on tract.
pub struct TractRunner {
    audio_encoder: Option<Graph>,
    segmenter: Graph,
    profile: Option<Vec<OpTime>>,
}

/// TPAVI blocks a sliding window's step may have (TPAVI has one per encoder stage: 4).
const MAX_WINDOW_BLOCKS: usize = 8;

impl TractRunner {
    /// Prepares the package's graphs for `options.frames_per_call` frames per call (default T).
    pub fn prepare(package: &ModelPackage, options: &BackendOptions) -> Result<Self, BackendError> {
        let t = options.frames_per_call.unwrap_or(package.frames_per_clip());
        let patch_shape = vec![t, 1, crate::frontend::audio::PATCH_FRAMES, crate::frontend::audio::MEL_BANDS];
        let segmenter_inputs = package.segmenter_inputs(t);
        // The two graphs are independent: prepared side by side, a package loads in the time of
        // its larger graph (AVSegFormer-R50 from the graph cache: 0.49 s in sequence, 0.35 s).
        let (audio_encoder, segmenter) = std::thread::scope(|s| {
            let audio = s.spawn(|| package.audio_graph().map(|info| Graph::prepare(info, vec![patch_shape], options, None)).transpose());
            let segmenter = Graph::prepare(package.segmenter(), segmenter_inputs, options, options.tpavi_window);
            let audio = audio.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            (audio, segmenter)
        });
        let segmenter = segmenter?;
        if segmenter.window.len() > MAX_WINDOW_BLOCKS {
            return Err(BackendError::Prepare {
                backend: BACKEND,
                path: package.segmenter().path.clone(),
                detail: format!("{} TPAVI blocks; a sliding window takes at most {MAX_WINDOW_BLOCKS}", segmenter.window.len()),
            });
        }
        Ok(TractRunner { audio_encoder: audio_encoder?, segmenter, profile: None })
    }

    /// Logits with a NaN or infinity are the graph's failure, not masks.
    fn check_logits(&self, out: &AvTensor) -> Result<(), BackendError> {
        match out.first_non_finite() {
            Some((index, value)) => Err(BackendError::Output {
                graph: "segmenter",
                output: self.segmenter.output_names[0].clone(),
                detail: format!("has a non-finite value ({value}) at index {index}"),
            }),
            None => Ok(()),
        }
    }
}

impl Runner for TractRunner {
    fn backend_name(&self) -> &'static str {
        BACKEND
    }

    fn encode_audio_into(&mut self, logmel: &AvTensor, out: &mut AvTensor) -> Result<bool, BackendError> {
        match &mut self.audio_encoder {
            Some(g) => g.run_into(&[logmel], out, self.profile.as_mut()).map(|()| true),
            None => Ok(false),
        }
    }

    fn segment_into(&mut self, frames: &AvTensor, audio: &AvTensor, out: &mut AvTensor) -> Result<(), BackendError> {
        // A two-stage package's segmenter sees the frames alone.
        let inputs: &[&AvTensor] = if self.segmenter.input_shapes.len() == 1 { &[frames] } else { &[frames, audio] };
        self.segmenter.run_into(inputs, out, self.profile.as_mut())?;
        self.check_logits(out)
    }

    fn window_blocks(&self) -> Vec<usize> {
        self.segmenter.window.iter().map(|b| b.cp).collect()
    }

    fn segment_window_into(
        &mut self, frames: &AvTensor, audio: &AvTensor, weight: &AvTensor, rest: &[AvTensor], out: &mut AvTensor, terms: &mut [AvTensor],
    ) -> Result<(), BackendError> {
        let blocks = self.segmenter.window.len();
        if blocks == 0 || rest.len() != blocks || terms.len() != blocks {
            return Err(BackendError::Run {
                graph: "segmenter",
                detail: format!(
                    "sliding window: the graph has {blocks} TPAVI window blocks; {} rest and {} terms tensors were given",
                    rest.len(),
                    terms.len()
                ),
            });
        }
        // Fixed capacity: a TPAVI network has four blocks (one per encoder stage).
        let mut inputs: heapless::Vec<&AvTensor, { 3 + MAX_WINDOW_BLOCKS }> = heapless::Vec::new();
        let mut outs: heapless::Vec<&mut AvTensor, { 1 + MAX_WINDOW_BLOCKS }> = heapless::Vec::new();
        // Checked at preparation; kept as an error rather than a panic all the same.
        let too_many = || BackendError::Run { graph: "segmenter", detail: format!("more than {MAX_WINDOW_BLOCKS} TPAVI blocks") };
        inputs.extend_from_slice(&[frames, audio, weight]).map_err(|_| too_many())?;
        for r in rest {
            inputs.push(r).map_err(|_| too_many())?;
        }
        outs.push(out).map_err(|_| too_many())?;
        for t in terms.iter_mut() {
            outs.push(t).map_err(|_| too_many())?;
        }
        self.segmenter.run_outputs_into(&inputs, &mut outs, self.profile.as_mut())?;
        let out = outs.swap_remove(0);
        self.check_logits(out)
    }

    fn set_profiling(&mut self, on: bool) -> bool {
        self.profile = on.then(Vec::new);
        true
    }

    fn take_profile(&mut self) -> Vec<OpTime> {
        self.profile.as_mut().map(std::mem::take).unwrap_or_default()
    }
}


#[cfg(test)]
mod nnef_spike {
    use super::*;
    #[test]
    #[ignore]
    fn spike() {
        let path = std::env::var("SPIKE").unwrap();
        let model = tract_onnx::onnx().model_for_path(&path).unwrap();
        let typed = model.into_typed().unwrap().into_decluttered().unwrap();
        let mut reg = tract_nnef::internal::Registry::new("avseg");
        reg.register_unit_element_wise("avseg_gelu_exact", &tract_onnx::tract_core::ops::nn::gelu_exact::GeluExact {});
        let nnef = tract_nnef::nnef().with_onnx().with_registry(reg);
        let t = Instant::now();
        let f = std::fs::File::create("/tmp/spike.tar").unwrap();
        nnef.write_to_tar(&typed, f).unwrap();
        eprintln!("written in {:?}", t.elapsed());
        let t = Instant::now();
        let back = nnef.model_for_path("/tmp/spike.tar").unwrap();
        eprintln!("read in {:?}", t.elapsed());
        let t = Instant::now();
        let opt = back.into_optimized().unwrap();
        eprintln!("optimised in {:?} ({} nodes)", t.elapsed(), opt.nodes().len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TensorDecl;

    /// A panic inside tract while parsing (fuzz/package_onnx's input, which validation now stops
    /// earlier) is an error naming the file when the backend is handed the graph directly.
    #[test]
    fn a_tract_panic_is_an_error() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fuzz/package_onnx_orphan_output.onnx");
        let decl = |name: &str| TensorDecl { name: name.into(), dims: vec![] };
        let info = GraphInfo {
            role: "segmenter",
            path: path.clone(),
            inputs: vec![decl("frames"), decl("audio_embedding")],
            outputs: vec![decl("mask_logits")],
            parameters: 0,
            opset: 18,
            size: 0,
            check: FileCheck::NotRecorded,
            checksum: None,
        };
        let options = BackendOptions { threads: 1, cpu_kernels: CpuKernels::Avseg, ..BackendOptions::default() };
        let quiet = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let result = Graph::prepare(&info, vec![vec![5, 3, 224, 224], vec![5, 128]], &options, None);
        std::panic::set_hook(quiet);
        let e = result.err().expect("the malformed graph must not prepare").to_string();
        assert!(e.contains("package_onnx_orphan_output.onnx") && e.contains("tract"), "{e}");
    }
}

#[cfg(test)]
mod shared_plan_tests {
    use super::*;

    /// A private copy of the tiny package: its canonical paths belong to this test alone, so no
    /// other test's live engine shares (or keeps alive) its plans.
    fn private_package() -> (tempfile::TempDir, ModelPackage) {
        let dir = tempfile::tempdir().unwrap();
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/tiny-tpavi");
        for f in ["avseg.json", "audio_encoder.onnx", "segmenter.onnx"] {
            std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
        }
        let pkg = ModelPackage::load(dir.path()).unwrap();
        (dir, pkg)
    }

    fn logmel(t: usize, seed: usize) -> AvTensor {
        let value = |i: usize| ((i * 7919 + seed * 104729) % 1000) as f32 / 100.0 - 8.0;
        AvTensor::new(vec![t, 1, 96, 64], (0..t * 96 * 64).map(value).collect())
    }

    #[test]
    fn live_engines_share_a_plan_and_keep_their_own_state() {
        let (_dir, pkg) = private_package();
        let t = pkg.frames_per_clip();
        let info = pkg.audio_encoder().unwrap();
        let shapes = || vec![vec![t, 1, 96, 64]];
        let prepare = |threads, share_plans| {
            let options = BackendOptions { threads, cpu_kernels: CpuKernels::Avseg, graph_cache: None, share_plans, frames_per_call: None, tpavi_window: None, ..BackendOptions::default() };
            Graph::prepare(info, shapes(), &options, None).unwrap()
        };
        let mut first = prepare(1, true);
        let mut second = prepare(1, true);
        assert!(Arc::ptr_eq(first.state.plan(), second.state.plan()), "same file and settings: one plan");
        assert!(!Arc::ptr_eq(first.state.plan(), prepare(2, true).state.plan()), "other threads: another plan");
        assert!(!Arc::ptr_eq(first.state.plan(), prepare(1, false).state.plan()), "sharing off: another plan");

        // Interleaved calls: each engine's state is its own, so the results match a lone engine's.
        let (a, b) = (logmel(t, 1), logmel(t, 2));
        let mut alone = prepare(1, false);
        let want_a = alone.run(&[&a], None).unwrap();
        let want_b = alone.run(&[&b], None).unwrap();
        assert_eq!(first.run(&[&a], None).unwrap().data(), want_a.data());
        assert_eq!(second.run(&[&b], None).unwrap().data(), want_b.data());
        assert_eq!(first.run(&[&b], None).unwrap().data(), want_b.data());

        // Only weak references are kept: the plan goes with its last engine.
        let key = PlanKey::new(&info.path, &shapes(), 1, CpuKernels::Avseg, true, None).unwrap();
        drop(first);
        assert!(shared_plans::find(&key).is_some(), "the second engine still holds the plan");
        drop(second);
        assert!(shared_plans::find(&key).is_none(), "no engine holds the plan, and neither does the list");
    }

    /// A rewritten graph file (another size or modification time) is prepared again, not taken
    /// from the engine that loaded the old one.
    #[test]
    fn a_changed_file_is_not_shared() {
        let (dir, pkg) = private_package();
        let t = pkg.frames_per_clip();
        let info = pkg.audio_encoder().unwrap();
        let options = BackendOptions::default();
        let old = Graph::prepare(info, vec![vec![t, 1, 96, 64]], &options, None).unwrap();
        let file = std::fs::OpenOptions::new().write(true).open(dir.path().join("audio_encoder.onnx")).unwrap();
        file.set_modified(std::time::SystemTime::now() + Duration::from_secs(5)).unwrap();
        let new = Graph::prepare(info, vec![vec![t, 1, 96, 64]], &options, None).unwrap();
        assert!(!Arc::ptr_eq(old.state.plan(), new.state.plan()));
    }
}
