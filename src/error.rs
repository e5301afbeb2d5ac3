//! The crate-level error. Each layer has its own enum; this one wraps them at the API boundary and
//! adds the file a frontend problem came from. Every message is one line and names the file,
//! manifest field, option or call it is about.
//!
//! [`Error::kind`] sorts every error into an [`ErrorKind`]; the C ABI maps each kind to exactly one
//! status, so a caller's mistake and a bug in avseg never share a status.

use std::path::PathBuf;

use crate::{backend::BackendError, frontend::FrontendError, io::DecodeError, model::PackageError, post::PostError};

/// Everything that can go wrong in avseg.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be decoded into samples or pixels (the error names the file).
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// Pre-processing refused the audio or a frame from `path`.
    #[error("{}: {source}", path.display())]
    Frontend {
        /// The file (or stream) the input came from.
        path: PathBuf,
        /// What was wrong with it.
        source: FrontendError,
    },
    /// The model package is missing, unreadable or invalid.
    #[error(transparent)]
    Package(#[from] PackageError),
    /// Preparing or running a graph failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// Turning logits into masks, or writing results, failed.
    #[error(transparent)]
    Post(#[from] PostError),
    /// An option or argument is out of its range.
    #[error("{detail}")]
    InvalidOption {
        /// The option's name, e.g. `threshold` or `hop`.
        option: &'static str,
        /// The message, naming the value and the allowed range.
        detail: String,
    },
    /// A clip's inputs are each valid but do not make a clip (e.g. no frames).
    #[error("{detail}")]
    Clip {
        /// What is wrong with the clip.
        detail: String,
    },
    /// Data pushed into a streaming session was refused, or the call does not fit the session's
    /// state (e.g. a push after `finish`).
    #[error("{call}: {detail}")]
    Stream {
        /// The session call, e.g. `push_audio`.
        call: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// A broken internal invariant: a bug in avseg, not a problem with the input.
    #[error("internal error (a bug in avseg): {detail}")]
    Internal {
        /// What went wrong.
        detail: String,
    },
}

/// The kind of an [`Error`]. Each kind has exactly one C status (`avseg_status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// An option or argument is out of its range (`AVSEG_ERR_INVALID_ARGUMENT`).
    InvalidArgument,
    /// The model package is missing, unreadable or invalid (`AVSEG_ERR_MODEL`).
    Model,
    /// A file could not be read or written (`AVSEG_ERR_IO`).
    Io,
    /// The audio, frames or clip given were rejected (`AVSEG_ERR_INPUT`).
    Input,
    /// The inference backend failed to prepare or run a graph (`AVSEG_ERR_BACKEND`).
    Backend,
    /// A bug in avseg: a broken internal invariant (`AVSEG_ERR_PANIC`, the status for bugs).
    Internal,
}

impl Error {
    /// A frontend error about the input from `path`.
    pub fn frontend(path: impl Into<PathBuf>, source: FrontendError) -> Self {
        Error::Frontend { path: path.into(), source }
    }

    /// An option out of range.
    pub fn invalid_option(option: &'static str, detail: impl Into<String>) -> Self {
        Error::InvalidOption { option, detail: detail.into() }
    }

    /// Refused stream data, or a call that does not fit the session's state.
    pub fn stream(call: &'static str, detail: impl Into<String>) -> Self {
        Error::Stream { call, detail: detail.into() }
    }

    /// A broken internal invariant.
    pub fn internal(detail: impl Into<String>) -> Self {
        Error::Internal { detail: detail.into() }
    }

    /// The kind of this error: files that cannot be read or written are I/O; anything wrong with
    /// the audio, frames or clip given is input; graph preparation and execution are the backend.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Decode(DecodeError::Read { .. }) => ErrorKind::Io,
            Error::Decode(_) | Error::Frontend { .. } | Error::Clip { .. } | Error::Stream { .. } => ErrorKind::Input,
            Error::Package(_) => ErrorKind::Model,
            Error::Backend(BackendError::InputShape { .. } | BackendError::NonFiniteInput { .. }) => ErrorKind::Input,
            Error::Backend(_) => ErrorKind::Backend,
            Error::Post(PostError::Write { .. }) => ErrorKind::Io,
            Error::Post(PostError::Invalid { .. }) => ErrorKind::Input,
            Error::Post(PostError::LogitShape { .. } | PostError::NonFiniteLogit { .. } | PostError::TagScores { .. }) => {
                ErrorKind::Backend
            }
            Error::InvalidOption { .. } => ErrorKind::InvalidArgument,
            Error::Internal { .. } => ErrorKind::Internal,
        }
    }
}

/// The message of a caught panic (`catch_unwind`'s payload), for the error that replaces it.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown reason".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_separate_caller_mistakes_from_bugs() {
        assert_eq!(Error::internal("x").kind(), ErrorKind::Internal);
        assert_eq!(Error::stream("push_audio", "x").kind(), ErrorKind::Input);
        assert_eq!(Error::invalid_option("hop", "x").kind(), ErrorKind::InvalidArgument);
        let read = DecodeError::Read { path: "a.wav".into(), source: std::io::Error::other("gone") };
        assert_eq!(Error::from(read).kind(), ErrorKind::Io);
        assert_eq!(Error::stream("push_audio", "bad").to_string(), "push_audio: bad");
    }
}
