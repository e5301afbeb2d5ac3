//! One module per subcommand: its arguments and its `run`.

pub(crate) mod bench;
pub(crate) mod convert;
pub(crate) mod eval;
pub(crate) mod features;
pub(crate) mod gt;
pub(crate) mod info;
pub(crate) mod kernels;
pub(crate) mod segment;
pub(crate) mod verify;

use clap::Args;

use avseg::{InputLimits, PackageOptions};

use crate::CliError;

/// How a model package is checked at load (every command that loads one).
#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "Package checks")]
pub(crate) struct PackageArgs {
    /// Do not hash the graph files against the checksums in avseg.json (sizes are still compared).
    #[arg(long)]
    pub no_verify: bool,
    /// Largest graph file accepted, in MB [default: 4295, i.e. 4 GiB].
    #[arg(long, value_name = "MB")]
    pub max_graph_mb: Option<u64>,
}

impl PackageArgs {
    pub(crate) fn options(&self) -> PackageOptions {
        let mut o = PackageOptions::default();
        o.verify_checksums = !self.no_verify;
        if let Some(mb) = self.max_graph_mb {
            o.max_graph_bytes = mb.saturating_mul(1_000_000);
        }
        o
    }
}

/// Limits on the inputs a command decodes; an input over one is an error naming the file.
#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "Input limits")]
pub(crate) struct InputArgs {
    /// Largest image width or height, in pixels [default: 16384].
    #[arg(long, value_name = "PIXELS")]
    pub max_image_side: Option<u32>,
    /// Largest image, in megapixels [default: 40].
    #[arg(long, value_name = "MPX")]
    pub max_image_mpx: Option<f64>,
    /// Longest audio decoded whole, in seconds [default: 3600]. A clip's audio is decoded only as
    /// far as its frames need, whatever its length.
    #[arg(long, value_name = "SECONDS")]
    pub max_audio_s: Option<f64>,
    /// Most frames in one clip [default: 512].
    #[arg(long, value_name = "N")]
    pub max_frames: Option<usize>,
}

impl InputArgs {
    pub(crate) fn limits(&self) -> Result<InputLimits, CliError> {
        let mut l = InputLimits::default();
        if let Some(side) = self.max_image_side {
            l.max_image_side = side;
        }
        if let Some(mpx) = self.max_image_mpx {
            if !(mpx.is_finite() && mpx > 0.0) {
                return Err(CliError::Usage(format!("--max-image-mpx {mpx} must be > 0")));
            }
            l.max_image_pixels = (mpx * 1e6) as u64;
        }
        if let Some(s) = self.max_audio_s {
            if !(s.is_finite() && s > 0.0) {
                return Err(CliError::Usage(format!("--max-audio-s {s} must be > 0")));
            }
            l.max_audio_seconds = s;
        }
        if let Some(n) = self.max_frames {
            l.max_clip_frames = n;
        }
        Ok(l)
    }
}
