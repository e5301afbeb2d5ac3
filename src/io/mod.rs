//! Decoding: files in, plain samples and pixels out. Nothing here knows about models.
//!
//! * [`audio`]: any supported container/codec → mono f32 PCM at the file's own rate.
//! * [`image`]: PNG / JPEG / WebP → RGB8.
//! * [`clip`]: finds the frames and the audio file of an AVSBench-style clip folder.
//! * [`video`]: video files through ffmpeg: probing, the audio track, AVSBench frame sampling.
//! * [`limits`]: how large an input may be before decoding refuses it.

pub mod audio;
pub mod clip;
#[cfg(feature = "image-files")]
pub mod image;
pub mod limits;
#[cfg(feature = "video")]
pub mod video;

use std::path::PathBuf;

/// A file could not be turned into samples or pixels. Every variant names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The file could not be opened or read.
    #[error("{}: cannot read file: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file has no bytes.
    #[error("{}: file is empty", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// The file's container format was not recognised as audio.
    #[error("{}: not a recognised audio file ({detail})", path.display())]
    UnknownAudioFormat {
        /// The file.
        path: PathBuf,
        /// The prober's message.
        detail: String,
    },
    /// The audio track uses a codec avseg cannot decode.
    #[error("{}: unsupported audio codec: {codec}", path.display())]
    UnsupportedCodec {
        /// The file.
        path: PathBuf,
        /// The codec's name.
        codec: String,
    },
    /// The container has no audio track.
    #[error("{}: no audio track in file", path.display())]
    NoAudioTrack {
        /// The file.
        path: PathBuf,
    },
    /// Decoding the audio track failed part-way.
    #[error("{}: corrupt or truncated audio: {detail}", path.display())]
    CorruptAudio {
        /// The file.
        path: PathBuf,
        /// The decoder's message.
        detail: String,
    },
    /// The decoded audio contains a NaN or infinity.
    #[error("{}: audio has a non-finite sample ({value}) at {seconds:.3} s", path.display())]
    NonFiniteSample {
        /// The file.
        path: PathBuf,
        /// The non-finite value.
        value: f32,
        /// Where it occurs, in seconds from the start.
        seconds: f64,
    },
    /// The image could not be decoded (unknown format, corrupt data).
    #[error("{}: cannot decode image: {detail}", path.display())]
    Image {
        /// The file.
        path: PathBuf,
        /// The decoder's message.
        detail: String,
    },
    /// A clip folder is missing its frames or audio, or is ambiguous.
    #[error("{}: {detail}", path.display())]
    Clip {
        /// The clip folder (or file in it).
        path: PathBuf,
        /// What is missing or wrong.
        detail: String,
    },
    /// The input exceeds one of the [`limits::InputLimits`]; the message names the limit.
    #[error("{}: {detail}", path.display())]
    Limit {
        /// The file.
        path: PathBuf,
        /// Which limit, the value found, and how to raise it.
        detail: String,
    },
    /// Probing or decoding a video file through ffmpeg failed.
    #[error("{}: video: {detail}", path.display())]
    Video {
        /// The video file.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
}
