//! Backends run a package's graphs. A backend never decodes files and never post-processes:
//! tensors in, logits out.
//!
//! * [`tract`]: the CPU backend (tract, ONNX), always available.
//! * The CUDA backend (cudarc + NVRTC kernels in `kernels/`) plugs in behind the same trait.

pub mod tract;

use crate::model::ModelPackage;
use crate::tensor::Tensor;

/// Options every backend understands.
#[derive(Clone, Debug)]
pub struct BackendOptions {
    /// Worker threads for matrix products (1 = single-threaded).
    pub threads: usize,
}

impl Default for BackendOptions {
    fn default() -> Self {
        Self { threads: 1 }
    }
}

/// A package prepared for repeated inference. Shapes are fixed at preparation, so each call runs
/// the optimised plan with no re-planning.
pub trait Runner: Send {
    /// Short backend name for logs and reports (`"tract"`, `"cuda"`).
    fn backend_name(&self) -> &'static str;

    /// Log-mel patches `[T, 1, 96, 64]` → embeddings `[T, D]`. Packages without an audio encoder
    /// feed log-mel straight to the segmenter, and the runner returns its input unchanged.
    fn encode_audio(&mut self, logmel: &Tensor) -> Result<Tensor, BackendError>;

    /// Frames `[T, 3, H, W]` and audio (embeddings or log-mel) → mask logits `[T, K, h, w]`.
    fn segment(&mut self, frames: &Tensor, audio: &Tensor) -> Result<Tensor, BackendError>;
}

/// Preparing or running a graph failed.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("{}: {backend} could not prepare the graph: {detail}", path.display())]
    Prepare { backend: &'static str, path: std::path::PathBuf, detail: String },
    #[error("{graph}: input `{input}` has shape {actual:?}; expected {expected:?}")]
    InputShape { graph: &'static str, input: String, expected: Vec<usize>, actual: Vec<usize> },
    #[error("{graph}: input `{input}` has a non-finite value ({value}) at index {index}")]
    NonFiniteInput { graph: &'static str, input: String, index: usize, value: f32 },
    #[error("{graph}: inference failed: {detail}")]
    Run { graph: &'static str, detail: String },
    #[error("{graph}: output `{output}` {detail}")]
    Output { graph: &'static str, output: String, detail: String },
}

/// Prepares `package` on the CPU backend.
pub fn prepare_cpu(package: &ModelPackage, options: &BackendOptions) -> Result<Box<dyn Runner>, BackendError> {
    Ok(Box::new(tract::TractRunner::prepare(package, options)?))
}
