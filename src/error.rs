//! The crate-level error. Each layer has its own enum; this one wraps them at the API boundary and
//! adds the file a frontend problem came from. Every message is one line and names the file or
//! manifest field it is about.

use std::path::PathBuf;

use crate::{backend::BackendError, frontend::FrontendError, io::DecodeError, model::PackageError, post::PostError};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("{}: {source}", path.display())]
    Frontend { path: PathBuf, source: FrontendError },
    #[error(transparent)]
    Package(#[from] PackageError),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Post(#[from] PostError),
    /// Inputs that are individually valid but do not fit together (e.g. a clip with no frames).
    #[error("{0}")]
    Input(String),
}

impl Error {
    pub fn frontend(path: impl Into<PathBuf>, source: FrontendError) -> Self {
        Error::Frontend { path: path.into(), source }
    }
}
