//! Backends run a package's graphs. A backend never decodes files and never post-processes:
//! tensors in, logits out.
//!
//! * [`tract`]: the CPU backend (tract, ONNX), always available.
//! * [`cuda`]: avseg's own GPU kernels (cudarc + NVRTC, `kernels/`). It has no model runner yet;
//!   [`select`] probes it and falls back to tract.

pub mod cpu;
pub mod cuda;
pub mod graph_cache;
mod shared_plans;
pub mod tpavi;
pub mod tract;

#[cfg(test)]
mod tract_vs_ort_tests;

use crate::model::ModelPackage;
use crate::tensor::Tensor;

/// Options every backend understands.
#[derive(Clone, Debug)]
pub struct BackendOptions {
    /// Worker threads for matrix products (1 = single-threaded).
    pub threads: usize,
    /// Which kernels run the hot operators on the CPU.
    pub cpu_kernels: cpu::CpuKernels,
    /// Where rewritten CPU graphs are cached ([`graph_cache`]): `None` for the environment's
    /// choice (`AVSEG_GRAPH_CACHE`, else the user's cache directory).
    pub graph_cache: Option<std::path::PathBuf>,
    /// Whether a graph already prepared with the same file and settings by a live engine is shared
    /// rather than prepared again ([`shared_plans`]). Off only where preparation itself is tested.
    pub share_plans: bool,
    /// Frames per call the graphs are prepared for: `None` for the package's T; 1 for a stream of
    /// independent frames (only where [`ModelPackage::single_frame_graphs`] allows it).
    pub frames_per_call: Option<usize>,
    /// Prepare the segmenter as the newest-frame step of a sliding TPAVI window of this many
    /// frames ([`Runner::segment_window_into`]; with `frames_per_call` 1).
    pub tpavi_window: Option<usize>,
    /// Storage precision of the CUDA runner's weights and activations (`cuda`, `cuda-emulated`);
    /// arithmetic is fp32 either way, and tract ignores it.
    pub cuda_precision: cuda::plan::Precision,
    /// Whether the CUDA runner resizes and normalises frames and makes masks on the device
    /// ([`Runner::pre_post_on_device`]); tract ignores it.
    pub pre_post_on_device: bool,
}

impl Default for BackendOptions {
    fn default() -> Self {
        Self {
            threads: 1,
            cpu_kernels: cpu::CpuKernels::default(),
            graph_cache: None,
            share_plans: true,
            frames_per_call: None,
            tpavi_window: None,
            cuda_precision: cuda::plan::Precision::F32,
            pre_post_on_device: false,
        }
    }
}

/// A package prepared for repeated inference. Shapes are fixed at preparation, so each call runs
/// the optimised plan with no re-planning.
///
/// A backend that prepares a graph whose [`crate::model::FileCheck`] is `Deferred` checks the
/// recorded checksum on the bytes it loads, and fails with [`BackendError::Corrupt`] on a mismatch.
pub trait Runner: Send {
    /// Short backend name for logs and reports (`"tract"`, `"cuda"`).
    fn backend_name(&self) -> &'static str;

    /// Log-mel patches `[T, 1, 96, 64]` → embeddings `[T, D]`, written into `out` (its buffers
    /// reused, so a stream allocates nothing here after its first call). Returns false and leaves
    /// `out` alone for packages without an audio encoder: their segmenter takes the log-mel itself.
    fn encode_audio_into(&mut self, logmel: &Tensor, out: &mut Tensor) -> Result<bool, BackendError>;

    /// Frames `[T, 3, H, W]` and audio (embeddings or log-mel) → mask logits `[T, K, h, w]`,
    /// written into `out` (its buffers reused).
    fn segment_into(&mut self, frames: &Tensor, audio: &Tensor, out: &mut Tensor) -> Result<(), BackendError>;

    /// The TPAVI blocks' C' in graph order when the segmenter was prepared as a sliding window's
    /// step ([`BackendOptions::tpavi_window`]); empty otherwise.
    fn window_blocks(&self) -> Vec<usize> {
        Vec::new()
    }

    /// The newest frame of a sliding TPAVI window (spec §6.6): frames `[1, 3, H, W]`, audio
    /// `[1, D]`, `weight` `[1]` (how many times the newest frame counts in K), and per block the
    /// older frames' summed `φ_tᵀ gs_t` `[C', C']` in `rest` → the newest frame's logits into `out`
    /// and each block's `[φ; gs]` `[2, C']` into `terms` (buffers reused).
    fn segment_window_into(
        &mut self, frames: &Tensor, audio: &Tensor, weight: &Tensor, rest: &[Tensor], out: &mut Tensor, terms: &mut [Tensor],
    ) -> Result<(), BackendError> {
        let _ = (frames, audio, weight, rest, out, terms);
        Err(BackendError::Run { graph: "segmenter", detail: format!("the {} backend has no sliding TPAVI windows", self.backend_name()) })
    }

    /// [`Runner::encode_audio_into`] into a new tensor; without an audio encoder, the log-mel.
    #[cfg(test)]
    fn encode_audio(&mut self, logmel: &Tensor) -> Result<Tensor, BackendError> {
        let mut out = Tensor::zeros(Vec::new());
        Ok(if self.encode_audio_into(logmel, &mut out)? { out } else { logmel.clone() })
    }

    /// [`Runner::segment_into`] into a new tensor.
    #[cfg(test)]
    fn segment(&mut self, frames: &Tensor, audio: &Tensor) -> Result<Tensor, BackendError> {
        let mut out = Tensor::zeros(Vec::new());
        self.segment_into(frames, audio, &mut out)?;
        Ok(out)
    }

    /// Whether this runner resizes and normalises frames itself ([`Runner::segment_frames_into`])
    /// and makes masks from the logits it holds ([`Runner::frame_mask_into`]): the CUDA runner
    /// prepared with [`BackendOptions::pre_post_on_device`].
    fn pre_post_on_device(&self) -> bool {
        false
    }

    /// As [`Runner::segment_into`], from RGB8 frames at their own sizes (T of them), which the
    /// runner resizes and normalises as the package's manifest says.
    fn segment_frames_into(&mut self, frames: &[RawFrame<'_>], audio: &Tensor, out: &mut Tensor) -> Result<(), BackendError> {
        let _ = (frames, audio, out);
        Err(BackendError::Run { graph: "segmenter", detail: format!("the {} backend pre-processes frames on the host", self.backend_name()) })
    }

    /// Frame `index` of the last segmenter call → its mask at `width`×`height` by `rule`, into
    /// `labels` and `confidence` (`width·height` values each, row-major), as `src/post/mask.rs`
    /// makes it on the host.
    fn frame_mask_into(&mut self, index: usize, (width, height): (u32, u32), rule: MaskRule, labels: &mut [u8], confidence: &mut [f32]) -> Result<(), BackendError> {
        let _ = (index, width, height, rule, labels, confidence);
        Err(BackendError::Run { graph: "segmenter", detail: format!("the {} backend makes masks on the host", self.backend_name()) })
    }

    /// What a device runner does per call and holds: None for tract.
    fn device_report(&self) -> Option<DeviceReport> {
        None
    }

    /// Starts (or stops) timing every operator of the following calls. Returns false when the
    /// backend cannot profile.
    fn set_profiling(&mut self, on: bool) -> bool {
        let _ = on;
        false
    }

    /// The operator times gathered since profiling started or was last taken.
    fn take_profile(&mut self) -> Vec<OpTime> {
        Vec::new()
    }
}

/// The CUDA runner's work per call and its device memory ([`Runner::device_report`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceReport {
    /// Floating-point operations (a multiply-add is 2) of one audio encoder call, by the plan.
    pub audio_encoder_flops: u64,
    /// Of one segmenter call.
    pub segmenter_flops: u64,
    /// Device memory held now (weights, arenas, scratch, frame and mask buffers), in bytes.
    pub memory_bytes: u64,
    /// The most device memory held at once so far.
    pub peak_memory_bytes: u64,
}

/// The most frames one graph call takes: a manifest's `frames_per_clip` is at most 64.
pub const MAX_FRAMES_PER_CALL: usize = 64;

/// One RGB8 frame at its own size: `width·height` pixels, 3 bytes each, rows packed.
#[derive(Clone, Copy, Debug)]
pub struct RawFrame<'a> {
    pub pixels: &'a [u8],
    pub width: u32,
    pub height: u32,
}

/// How logits become a mask ([`Runner::frame_mask_into`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MaskRule {
    /// One logit map: bilinear upsampling, then foreground where sigmoid(logit) > `threshold`.
    Binary { threshold: f32 },
    /// K class maps: the arg-max class and its softmax probability, upsampled nearest-neighbour.
    Classes,
}

/// Time spent in one node of a graph, summed over the profiled calls.
#[derive(Clone, Debug)]
pub struct OpTime {
    /// The graph's role (`"audio_encoder"`, `"segmenter"`).
    pub graph: &'static str,
    /// The operator's kind as the backend names it (for example `"OptMatMul"`, `"DepthWise"`).
    pub op: String,
    /// The node's name in the optimised graph.
    pub node: String,
    /// Total time over the calls.
    pub time: std::time::Duration,
    /// How many calls ran the node.
    pub calls: u32,
}

/// Preparing or running a graph failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// A backend could not load or optimise a graph file.
    #[error("{}: {backend} could not prepare the graph: {detail}", path.display())]
    Prepare {
        /// The backend's name (`"tract"`, `"cuda"`).
        backend: &'static str,
        /// The ONNX graph file.
        path: std::path::PathBuf,
        /// Why preparation failed.
        detail: String,
    },
    /// A graph file (or the cached form made from it) differs from the checksum its manifest
    /// records. The engine reports it as [`crate::model::PackageError::Corrupt`].
    #[error("{}: `{field}`: {detail}", path.display())]
    Corrupt {
        /// The damaged file.
        path: std::path::PathBuf,
        /// The manifest field that records it, e.g. `graphs.segmenter.checksum`.
        field: String,
        /// How it differs.
        detail: String,
    },
    /// An input tensor's shape differs from the shape the graph was prepared for.
    #[error("{graph}: input `{input}` has shape {actual:?}; expected {expected:?}")]
    InputShape {
        /// The graph's role (`"audio_encoder"`, `"segmenter"`).
        graph: &'static str,
        /// The input's name in the graph.
        input: String,
        /// The shape the graph was prepared for.
        expected: Vec<usize>,
        /// The shape that was given.
        actual: Vec<usize>,
    },
    /// An input tensor contains a NaN or infinity.
    #[error("{graph}: input `{input}` has a non-finite value ({value}) at index {index}")]
    NonFiniteInput {
        /// The graph's role (`"audio_encoder"`, `"segmenter"`).
        graph: &'static str,
        /// The input's name in the graph.
        input: String,
        /// Flat (row-major) index of the first non-finite value.
        index: usize,
        /// The non-finite value.
        value: f32,
    },
    /// Running the graph failed.
    #[error("{graph}: inference failed: {detail}")]
    Run {
        /// The graph's role (`"audio_encoder"`, `"segmenter"`).
        graph: &'static str,
        /// The backend's error message.
        detail: String,
    },
    /// The graph ran, but an output is missing or has the wrong type or shape.
    #[error("{graph}: output `{output}` {detail}")]
    Output {
        /// The graph's role (`"audio_encoder"`, `"segmenter"`).
        graph: &'static str,
        /// The output's name in the graph.
        output: String,
        /// What is wrong with it.
        detail: String,
    },
    /// The CUDA backend failed (or is unavailable when explicitly requested).
    #[error("CUDA backend: {0}")]
    Cuda(#[from] cuda::CudaError),
}

/// Which backend to prepare.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BackendKind {
    /// CUDA when it can run the package, else tract, saying which and why.
    #[default]
    Auto,
    Cpu,
    /// CUDA or an error: an explicit request is never silently served by the CPU.
    Cuda,
    /// The CUDA runner on the emulated device: the same plan and kernels, run on the CPU (slow,
    /// for checking the runner without a GPU). Needs the `cuda-emulated` feature.
    CudaEmulated,
}

/// Prepares `package` on the backend `kind` selects. With `Auto`, any reason CUDA cannot run it
/// (no driver, no device, an unsupported family, a failed kernel compile, out of memory) falls
/// back to tract: logged at info level when there is simply no GPU, as a warning when a GPU
/// failed.
pub fn select(kind: BackendKind, package: &ModelPackage, options: &BackendOptions) -> Result<Box<dyn Runner>, BackendError> {
    match kind {
        BackendKind::Cpu => prepare_cpu(package, options),
        BackendKind::Cuda => cuda::prepare_explicit(package, options),
        BackendKind::CudaEmulated => cuda::prepare_emulated(package, options),
        BackendKind::Auto => match cuda::prepare(package, options) {
            Ok(runner) => {
                log::info!("backend auto: using CUDA");
                Ok(runner)
            }
            Err(e) => {
                if e.is_absent() || matches!(e, cuda::CudaError::Unsupported { .. }) {
                    log::info!("backend auto: using tract on the CPU ({e})");
                } else {
                    log::warn!("backend auto: CUDA failed, using tract on the CPU instead: {e}");
                }
                prepare_cpu(package, options)
            }
        },
    }
}

/// Prepares `package` on the CPU backend.
pub fn prepare_cpu(package: &ModelPackage, options: &BackendOptions) -> Result<Box<dyn Runner>, BackendError> {
    Ok(Box::new(tract::TractRunner::prepare(package, options)?))
}

/// 64-bit FNV-1a: stable across Rust releases and platforms, unlike `DefaultHasher`, which matters
/// for keys stored on disk (the CUBIN and graph caches).
pub(crate) struct Fnv1a(u64);

impl Fnv1a {
    pub(crate) fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
    pub(crate) fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= b as u64;
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    pub(crate) fn finish(&self) -> u64 {
        self.0
    }
}
