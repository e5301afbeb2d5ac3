//! Model packages: a folder with an `avseg.json` manifest and the ONNX graph(s) it names.
//!
//! * [`manifest`]: the versioned, strict manifest schema.
//! * [`package`]: loading a folder and validating the manifest against the graphs.

pub mod manifest;
pub mod package;

use std::path::PathBuf;

pub use manifest::{AudioFrontendKind, AudioSpec, Family, GraphSpec, Graphs, Manifest, OutputSpec, Provenance, SCHEMA_VERSION};
pub use package::{Dim, GraphInfo, ModelPackage, TensorDecl};

/// A model package is unusable. Every variant names the file and, where it applies, the field.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("{}: not a model package folder", path.display())]
    NotAPackage { path: PathBuf },
    #[error("{}: cannot read manifest: {detail}", path.display())]
    Read { path: PathBuf, detail: String },
    #[error("{}: field `{field}`: {detail}", path.display())]
    Field { path: PathBuf, field: String, detail: String },
    #[error("{}: `{field}`: {detail}", path.display())]
    Graph { path: PathBuf, field: String, detail: String },
}
