//! Decoding: files in, plain samples and pixels out. Nothing here knows about models.
//!
//! * [`audio`]: any supported container/codec → mono f32 PCM at the file's own rate.
//! * [`image`]: PNG / JPEG / WebP → RGB8.
//! * [`clip`]: finds the frames and the audio file of an AVSBench-style clip folder.
//! * [`video`]: video files through ffmpeg: probing, the audio track, AVSBench frame sampling.

pub mod audio;
pub mod clip;
#[cfg(feature = "image-files")]
pub mod image;
#[cfg(feature = "video")]
pub mod video;

use std::path::PathBuf;

#[cfg(feature = "audio-files")]
pub use self::audio::decode_audio;
pub use self::audio::Pcm;
#[cfg(feature = "image-files")]
pub use self::image::decode_image;



/// A file could not be turned into samples or pixels. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("{}: cannot read file: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{}: file is empty", path.display())]
    Empty { path: PathBuf },
    #[error("{}: not a recognised audio file ({detail})", path.display())]
    UnknownAudioFormat { path: PathBuf, detail: String },
    #[error("{}: unsupported audio codec: {codec}", path.display())]
    UnsupportedCodec { path: PathBuf, codec: String },
    #[error("{}: no audio track in file", path.display())]
    NoAudioTrack { path: PathBuf },
    #[error("{}: corrupt or truncated audio: {detail}", path.display())]
    CorruptAudio { path: PathBuf, detail: String },
    #[error("{}: audio has a non-finite sample ({value}) at {seconds:.3} s", path.display())]
    NonFiniteSample { path: PathBuf, value: f32, seconds: f64 },
    #[error("{}: cannot decode image: {detail}", path.display())]
    Image { path: PathBuf, detail: String },
    #[error("{}: {detail}", path.display())]
    Clip { path: PathBuf, detail: String },
    #[error("{}: video: {detail}", path.display())]
    Video { path: PathBuf, detail: String },
}
