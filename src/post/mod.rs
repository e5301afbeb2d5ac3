//! Post-processing: logits → masks → objects → files.
//!
//! * [`mask`]: per-frame logits at model resolution → a label map at the source frame's size
//!   (binary: bilinear upsample then σ > threshold; semantic: argmax then nearest upsample).
//! * [`softmax`]: the per-pixel softmax arg-max of class logits (semantic masks, two-stage scores).
//! * [`objects`]: 8-connected regions of a label map → [`objects::SoundingObject`]s.
//! * [`sound_match`]: two-stage (BAVS-style) packages: which candidate objects a second's audio
//!   tags keep, through the package's label tree ([`crate::model::label_tree`]).
//! * [`write`]: mask PNGs (0/255 or indexed), overlays, `.npy` logits and `results.jsonl`.

pub mod mask;
pub mod objects;
pub mod softmax;
pub mod sound_match;
pub mod write;

use std::path::PathBuf;

/// Post-processing or writing results failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PostError {
    /// An output file could not be created or written.
    #[error("{}: cannot write: {detail}", path.display())]
    Write {
        /// The output file.
        path: PathBuf,
        /// The I/O or encoder error message.
        detail: String,
    },
    /// The logits do not have the shape post-processing expects.
    #[error("logits have shape {shape:?}; expected [{expected}]")]
    LogitShape {
        /// The shape that was given.
        shape: Vec<usize>,
        /// The expected shape or constraint, in words.
        expected: String,
    },
    /// The logits contain a NaN or infinity.
    #[error("logits contain a non-finite value ({value}) at index {index}")]
    NonFiniteLogit {
        /// Flat (row-major) index of the first non-finite value.
        index: usize,
        /// The non-finite value.
        value: f32,
    },
    /// The audio tagger's scores for a second do not fit the label tree (count) or are not
    /// probabilities (NaN, infinite, outside [0, 1]).
    #[error("audio tag scores: {detail}")]
    TagScores {
        /// What is wrong, with the tagger output's index where one is at fault.
        detail: String,
    },
    /// The data handed to a writer does not fit the request (mask vs frame size, a label with no
    /// palette entry, a shape that does not match the data). Nothing was written.
    #[error("{}: {detail}", path.display())]
    Invalid {
        /// The file that was to be written.
        path: PathBuf,
        /// What does not fit.
        detail: String,
    },
}
