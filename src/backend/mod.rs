//! Backends (to be written).

/// Running a graph failed.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("{0}")]
    Run(String),
}
