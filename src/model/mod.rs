//! Model packages: a folder with an `avseg.json` manifest and the ONNX graph(s) it names.
//!
//! * [`manifest`]: the versioned, strict manifest schema.
//! * [`package`]: loading a folder and validating the manifest against the graphs.
//! * [`onnx_summary`]: the ONNX fields validation reads, decoded without the weights.
//! * [`label_tree`]: the audio-visual label tree of two-stage (BAVS-style) packages.
//! * [`integrity`]: the size and checksum of each graph file, recorded and verified.

pub mod integrity;
pub mod label_tree;
pub mod manifest;
pub mod onnx_summary;
pub mod package;

use std::path::PathBuf;

pub use manifest::{AudioFrontendKind, AudioSpec, Family, GraphSpec, Graphs, LabelTreeSpec, Manifest, OutputSpec, PixelRule, Provenance, SCHEMA_VERSION};
pub use integrity::FileCheck;
pub use package::{Dim, GraphInfo, ModelPackage, PackageOptions, TensorDecl, TwoStage};

/// A model package is unusable. Every variant names the file and, where it applies, the field.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PackageError {
    /// The path is not a folder holding an `avseg.json` manifest.
    #[error("{}: not a model package folder", path.display())]
    NotAPackage {
        /// The path given as the package.
        path: PathBuf,
    },
    /// The manifest file exists but could not be read.
    #[error("{}: cannot read manifest: {detail}", path.display())]
    Read {
        /// The manifest file.
        path: PathBuf,
        /// The I/O error message.
        detail: String,
    },
    /// A manifest field is missing, malformed or out of range.
    #[error("{}: field `{field}`: {detail}", path.display())]
    Field {
        /// The manifest file.
        path: PathBuf,
        /// The field's path in the manifest, e.g. `vision.height`.
        field: String,
        /// What is wrong with it.
        detail: String,
    },
    /// A graph file is missing, unreadable, or does not match what the manifest declares.
    #[error("{}: `{field}`: {detail}", path.display())]
    Graph {
        /// The ONNX graph file.
        path: PathBuf,
        /// The manifest field it relates to, e.g. `graphs.segmenter.inputs[0]`.
        field: String,
        /// What is wrong.
        detail: String,
    },
    /// A graph file differs from the size or checksum its manifest records: it was damaged or
    /// replaced after the package was written.
    #[error("{}: `{field}`: {detail}", path.display())]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// The manifest field that records it, e.g. `graphs.segmenter.checksum`.
        field: String,
        /// How it differs.
        detail: String,
    },
    /// A file of the package is larger than the configured limit.
    #[error("{}: {detail}", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size and the limit, and how to raise it.
        detail: String,
    },
}
