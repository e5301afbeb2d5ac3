//! `avseg`: audio-visual segmentation from the command line. One file per subcommand under
//! `cmd/`; each uses only the runtime's public API (and `avseg-eval` for `eval`).

mod cmd;
mod heap;
mod python;

use std::fmt;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "avseg",
    version,
    about = "Audio-visual segmentation: masks of the objects making the sound in video frames",
    long_about = "Audio-visual segmentation: given a clip's frames and its sound, avseg writes the \
                  pixel mask of the object(s) making the sound.\n\nA model package is a folder with \
                  an avseg.json manifest and ONNX graphs. A clip is a folder of numbered frames \
                  (AVSBench names such as video_1.png … video_5.png, or 0.jpg, 1.jpg …) plus one \
                  audio file (WAV, FLAC, Ogg/Vorbis or MP3, any rate and channel count)."
)]
struct Cli {
    /// More log output (-v info, -vv debug). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Segment the sounding objects of a clip: mask and overlay PNGs plus results.jsonl.
    Segment(cmd::segment::SegmentArgs),
    /// Dump the exact model inputs (log-mel patches, normalised frames) as .npy files.
    Features(cmd::features::FeaturesArgs),
    /// Print a model package's manifest, graph signatures and parameter count.
    Info(cmd::info::InfoArgs),
    /// Check a package's graph files against the sizes and checksums in its avseg.json, then load it.
    Verify(cmd::verify::VerifyArgs),
    /// Score a model or saved logits on AVSBench (S4, MS3, AVSS) with the official metrics.
    Eval(cmd::eval::EvalArgs),
    /// Measure latency and memory: per-clip stages (and ONNX Runtime), or a streaming soak run.
    Bench(cmd::bench::BenchArgs),
    /// Compile the CUDA kernels with NVRTC: check them (no GPU needed) or fill the kernel cache.
    Kernels(cmd::kernels::KernelsArgs),
    /// Convert an official TPAVI or AVSegFormer checkpoint (.pth or .safetensors) into a model
    /// package. Runs tools/avseg_export through a Python venv ($AVSEG_PYTHON or .venv); no torch.
    Convert(cmd::convert::ConvertArgs),
}

/// Why a command failed: the runtime's or evaluation's own error, or a CLI-level problem.
#[derive(Debug)]
pub(crate) enum CliError {
    /// From the runtime (names the file, field or option).
    Runtime(avseg::Error),
    /// From evaluation.
    Eval(avseg_eval::EvalError),
    /// Arguments that do not fit together or are out of range.
    Usage(String),
    /// An external tool (Python, the export tools, NVRTC) is missing or failed.
    Tool(String),
    /// A file or folder could not be written.
    Io { path: PathBuf, source: std::io::Error },
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Runtime(e) => write!(f, "{e}"),
            CliError::Eval(e) => write!(f, "{e}"),
            CliError::Usage(m) | CliError::Tool(m) => f.write_str(m),
            CliError::Io { path, source } => write!(f, "{}: {source}", path.display()),
        }
    }
}

/// `?` on any runtime error type gives a [`CliError::Runtime`].
macro_rules! from_runtime {
    ($($t:ty),*) => {$(
        impl From<$t> for CliError {
            fn from(e: $t) -> Self {
                CliError::Runtime(e.into())
            }
        }
    )*};
}
from_runtime!(avseg::Error, avseg::DecodeError, avseg::PackageError, avseg::PostError, avseg::BackendError);

fn main() -> ExitCode {
    // First, before any thread exists: see heap.rs for why.
    let heap_tuned = heap::keep_freed_memory();
    let cli = Cli::parse();
    // symphonia logs its own probe failures at error level; avseg reports them once, with the
    // file name, so the decoder's log stays quiet unless debugging.
    let level = match cli.verbose {
        0 => "warn,symphonia=off",
        1 => "info,symphonia=off",
        _ => "debug",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level)).init();
    log::debug!("heap: freed memory kept for reuse (mmap and trim thresholds 1 GiB): {heap_tuned}");
    let result = match cli.command {
        Command::Segment(a) => cmd::segment::run(a),
        Command::Features(a) => cmd::features::run(a),
        Command::Info(a) => cmd::info::run(a),
        Command::Verify(a) => cmd::verify::run(a),
        Command::Eval(a) => cmd::eval::run(a).map_err(CliError::Eval),
        Command::Bench(a) => cmd::bench::run(a),
        Command::Kernels(a) => cmd::kernels::run(a),
        Command::Convert(a) => cmd::convert::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
