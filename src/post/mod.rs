//! Post-processing: logits → masks → objects → files.
//!
//! * [`mask`]: per-frame logits at model resolution → a label map at the source frame's size
//!   (binary: bilinear upsample then σ > threshold; semantic: argmax then nearest upsample).
//! * [`objects`]: 8-connected regions of a label map → [`objects::SoundingObject`]s.
//! * [`write`]: mask PNGs (0/255 or indexed), overlays, `.npy` logits and `results.jsonl`.

pub mod mask;
pub mod objects;
pub mod write;

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
    /// The data handed to a writer does not fit the request (mask vs frame size, a label with no
    /// palette entry, a shape that does not match the data). Nothing was written.
    #[error("{}: {detail}", path.display())]
    Invalid { path: PathBuf, detail: String },
}
