//! Model packages: a folder with an `avseg.json` manifest and the ONNX graph(s) it names.
use std::path::PathBuf;

/// A model package is unusable. Every variant names the file and, where it applies, the field.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("{}: {detail}", path.display())]
    Invalid { path: PathBuf, detail: String },
}
