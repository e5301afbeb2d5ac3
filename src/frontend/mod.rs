//! Pre-processing that matches what the published models were trained on.
//!
//! * [`audio`]: mono PCM → 16 kHz (rubato) → VGGish log-mel → fixed number of 96×64 patches.
//! * [`vision`]: RGB8 frames of any size → resized (fast_image_resize) → ImageNet-normalised NCHW.

pub mod audio;
pub mod vision;

/// Pre-processing refused its input. The caller adds the file name (see [`crate::Error::Frontend`]).
#[derive(Debug, thiserror::Error)]
pub enum FrontendError {
    #[error(
        "audio is {seconds:.3} s long ({samples} samples at {rate} Hz); at least 0.975 s \
         (15600 samples at 16 kHz) is needed for one VGGish patch"
    )]
    AudioTooShort { seconds: f64, samples: usize, rate: u32 },
    #[error("audio sample rate {rate} Hz is not usable (must be between 1000 and 384000 Hz)")]
    BadSampleRate { rate: u32 },
    #[error("audio has a non-finite sample ({value}) at index {index}")]
    NonFiniteSample { index: usize, value: f32 },
    #[error("resampler failed: {0}")]
    Resample(String),
    #[error("image is {width}x{height}; it must be at least 1x1")]
    EmptyImage { width: u32, height: u32 },
    #[error("resize failed: {0}")]
    Resize(String),
}
