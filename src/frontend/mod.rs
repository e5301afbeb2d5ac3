//! Pre-processing that matches what the published models were trained on.
//!
//! * [`audio`]: mono PCM → 16 kHz (rubato) → VGGish log-mel → fixed number of 96×64 patches.
//! * [`vision`]: RGB8 frames of any size → resized (fast_image_resize) → ImageNet-normalised NCHW.

pub mod audio;
pub mod vision;

/// Pre-processing refused its input. The caller adds the file name (see [`crate::Error::Frontend`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrontendError {
    /// The audio is shorter than one VGGish patch (0.975 s).
    #[error(
        "audio is {seconds:.3} s long ({samples} samples at {rate} Hz); at least 0.975 s \
         (15600 samples at 16 kHz) is needed for one VGGish patch"
    )]
    AudioTooShort {
        /// The audio's duration in seconds.
        seconds: f64,
        /// Number of samples given.
        samples: usize,
        /// Their sample rate in Hz.
        rate: u32,
    },
    /// The audio's sample rate is outside 1000–384000 Hz.
    #[error("audio sample rate {rate} Hz is not usable (must be between 1000 and 384000 Hz)")]
    BadSampleRate {
        /// The rejected sample rate in Hz.
        rate: u32,
    },
    /// The audio contains a NaN or infinity.
    #[error("audio has a non-finite sample ({value}) at index {index}")]
    NonFiniteSample {
        /// Index of the first non-finite sample.
        index: usize,
        /// The non-finite value.
        value: f32,
    },
    /// Resampling to 16 kHz failed (the resampler's message).
    #[error("resampler failed: {0}")]
    Resample(String),
    /// A frame has zero width or height.
    #[error("image is {width}x{height}; it must be at least 1x1")]
    EmptyImage {
        /// The frame's width in pixels.
        width: u32,
        /// The frame's height in pixels.
        height: u32,
    },
    /// Resizing a frame failed (the resizer's message).
    #[error("resize failed: {0}")]
    Resize(String),
    /// A streamed audio chunk's channel count is outside 1–32.
    #[error("audio channel count {channels} must be between 1 and 32")]
    BadChannelCount {
        /// The rejected channel count.
        channels: usize,
    },
    /// A streamed chunk's timestamp is NaN or infinite.
    #[error("timestamp {timestamp} is not finite")]
    NonFiniteTimestamp {
        /// The rejected timestamp.
        timestamp: f64,
    },
    /// A streamed chunk ends inside a channel group.
    #[error("{samples} samples are not a whole number of {channels}-channel frames")]
    PartialChannelGroup {
        /// Interleaved samples in the chunk.
        samples: usize,
        /// The chunk's channel count.
        channels: usize,
    },
    /// A streamed chunk's rate or channel count differs from the stream's.
    #[error(
        "the stream is {rate} Hz, {channels} channel(s); got {new_rate} Hz, {new_channels} channel(s). \
         A session keeps one format: finish it and start a new session"
    )]
    FormatChanged {
        /// The stream's rate.
        rate: u32,
        /// The stream's channel count.
        channels: usize,
        /// The chunk's rate.
        new_rate: u32,
        /// The chunk's channel count.
        new_channels: usize,
    },
    /// A streamed chunk's timestamp is before the previous chunk's.
    #[error("timestamp {timestamp:.6} s goes backwards (previous chunk at {previous:.6} s)")]
    TimestampBackwards {
        /// The chunk's timestamp.
        timestamp: f64,
        /// The previous chunk's.
        previous: f64,
    },
}
