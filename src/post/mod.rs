//! Post-processing: logits → masks → objects → files (to be written).
use std::path::PathBuf;

/// Post-processing or writing results failed.
#[derive(Debug, thiserror::Error)]
pub enum PostError {
    #[error("{}: cannot write: {detail}", path.display())]
    Write { path: PathBuf, detail: String },
    #[error("logits have shape {shape:?}; expected [{expected}]")]
    LogitShape { shape: Vec<usize>, expected: String },
    #[error("logits contain a non-finite value ({value}) at index {index}")]
    NonFiniteLogit { index: usize, value: f32 },
}
