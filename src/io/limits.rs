//! Limits on what outside input may make avseg allocate, so that an oversized or hostile file is a
//! clear error naming the file instead of an out-of-memory kill on an 8 GB device.
//!
//! The defaults fit every AVS data set with room to spare and keep one clip's decoded input under
//! about 2 GB; a user with larger inputs raises them (the CLI's `--max-*` options). The limits of
//! model packages (graph file sizes) are in [`crate::model::PackageOptions`].

/// Input limits. Build with `InputLimits::default()` and change the fields you need.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct InputLimits {
    /// Largest image width or height, in pixels (default 16384).
    pub max_image_side: u32,
    /// Largest decoded image, in pixels (default 40 M: 8K UHD is 33 M; 120 MB as RGB8).
    pub max_image_pixels: u64,
    /// Longest audio decoded whole, in seconds (default 3600). A clip's audio is decoded only as far
    /// as its frames need, whatever its length; this bounds the decodes that take everything
    /// (`avseg features --audio` alone, [`crate::decode_audio`]).
    pub max_audio_seconds: f64,
    /// Lowest and highest sample rate accepted, in Hz (default 1 kHz to 384 kHz: what the resampler
    /// takes).
    pub sample_rates: (u32, u32),
    /// Most frames in one clip (default 512). A clip is decoded into memory whole: 512 frames of
    /// 1080p are 3.2 GB. Longer recordings go through a video file or a streaming session.
    pub max_clip_frames: usize,
}

impl Default for InputLimits {
    fn default() -> Self {
        Self {
            max_image_side: 16_384,
            max_image_pixels: 40_000_000,
            max_audio_seconds: 3600.0,
            sample_rates: (1_000, 384_000),
            max_clip_frames: 512,
        }
    }
}

impl InputLimits {
    /// The largest image file read into memory: a file larger than its own decoded size limit plus
    /// generous headers cannot be a valid image within the limits (an uncompressed PNG is its pixels
    /// plus a little).
    pub fn max_image_file_bytes(&self) -> u64 {
        self.max_image_pixels.saturating_mul(4).saturating_add(16 << 20)
    }

    /// Checks the number of frames of a clip in `folder` against [`InputLimits::max_clip_frames`];
    /// the error says what to do instead.
    pub fn check_clip_frames(&self, folder: &std::path::Path, frames: usize) -> Result<(), String> {
        if frames <= self.max_clip_frames {
            return Ok(());
        }
        Err(format!(
            "{}: the clip has {frames} frames, over the limit of {} (InputLimits::max_clip_frames, `--max-frames` \
             in the CLI); a clip is decoded into memory whole, so split it, or run a video file or a streaming session",
            folder.display(),
            self.max_clip_frames
        ))
    }
}
