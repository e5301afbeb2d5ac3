//! `avseg segment`: masks, overlays and results.jsonl for a clip, a pair of frames folder and audio
//! file, or a video file.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use avseg::{
    find_clip, find_frames, write_npy, BackendChoice, ClipFiles, CpuKernels, DevicePrecision, Engine, EngineOptions, FrameInfo, FrameWriter,
    Session, SessionOptions, StreamMode,
};

use super::gt::GtCheck;
use crate::CliError;

#[derive(Args)]
pub(crate) struct ClipArgs {
    /// Clip folder: numbered frames (directly or in frames/) and exactly one audio file.
    #[arg(long, conflicts_with_all = ["frames", "audio", "video"])]
    pub clip: Option<PathBuf>,
    /// Folder of numbered frames (use with --audio).
    #[arg(long, requires = "audio")]
    pub frames: Option<PathBuf>,
    /// Audio file for --frames.
    #[arg(long, requires = "frames")]
    pub audio: Option<PathBuf>,
    /// Video file (MP4, MKV, MOV, WebM, ...; needs ffmpeg): frames sampled once per second as
    /// AVSBench did, run through a streaming session with a sliding window.
    #[arg(long, conflicts_with_all = ["frames", "audio"])]
    pub video: Option<PathBuf>,
}

impl ClipArgs {
    pub(crate) fn files(&self) -> Result<ClipFiles, CliError> {
        match (&self.clip, &self.frames, &self.audio) {
            (Some(dir), _, _) => Ok(find_clip(dir)?),
            (None, Some(frames), Some(audio)) => Ok(ClipFiles { frames: find_frames(frames)?, audio: audio.clone() }),
            _ => Err(CliError::Usage("give --clip DIR, --frames DIR with --audio FILE, or --video FILE".into())),
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum BackendArg {
    /// Best available (logs which one and why).
    Auto,
    /// tract on the CPU.
    Cpu,
    /// The CUDA backend; an error (not a fallback) when it cannot run the model.
    Cuda,
    /// The CUDA runner on the emulated device (its kernels compiled for the CPU): slow, for
    /// checking the runner without a GPU; fp32, TPAVI-family packages with CNN encoders.
    CudaEmulated,
}

/// `--stream-mode`: how a stream turns sampled frames into model calls.
#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum StreamModeArg {
    /// One frame per call when the package's frames are independent, else windows.
    Auto,
    /// Windows of the model's T frames (the official grouping).
    Windows,
    /// Each sampled frame alone, as soon as its audio patch is in (independent frames only).
    PerFrame,
    /// Official TPAVI: each sampled frame's result from the window of the T instants ending at it,
    /// for one frame of work; no result for the first T-1 instants of a run.
    Sliding,
    /// As sliding, with results from the first instant: a short window repeats its first frame.
    SlidingPadded,
}

impl From<StreamModeArg> for StreamMode {
    fn from(a: StreamModeArg) -> Self {
        match a {
            StreamModeArg::Auto => StreamMode::Auto,
            StreamModeArg::Windows => StreamMode::Windows,
            StreamModeArg::PerFrame => StreamMode::PerFrame,
            StreamModeArg::Sliding => StreamMode::Sliding,
            StreamModeArg::SlidingPadded => StreamMode::SlidingPadded,
        }
    }
}

/// `--precision`: storage precision on the CUDA runner.
#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum PrecisionArg {
    /// 4-byte weights and activations.
    Fp32,
    /// 2-byte weights and activations, fp32 accumulation (logits within about 1e-2 of fp32).
    Fp16,
}

/// `--pre-post`: where frames are resized and normalised and masks are made.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum PrePostArg {
    /// On the CPU (fast_image_resize, src/post/mask.rs); the default.
    Host,
    /// On the CUDA runner's device (kernels/preprocess.cu, kernels/postprocess.cu); needs
    /// --backend cuda or cuda-emulated.
    Device,
}

impl From<BackendArg> for BackendChoice {
    fn from(a: BackendArg) -> Self {
        match a {
            BackendArg::Auto => BackendChoice::Auto,
            BackendArg::Cpu => BackendChoice::Cpu,
            BackendArg::Cuda => BackendChoice::Cuda,
            BackendArg::CudaEmulated => BackendChoice::CudaEmulated,
        }
    }
}

impl From<PrecisionArg> for DevicePrecision {
    fn from(a: PrecisionArg) -> Self {
        match a {
            PrecisionArg::Fp32 => DevicePrecision::F32,
            PrecisionArg::Fp16 => DevicePrecision::F16,
        }
    }
}

/// `--cpu-kernels`: which kernels run convolutions and resizes on the CPU.
#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum CpuKernelsArg {
    /// avseg's own (fused, parallel); the default.
    Avseg,
    /// tract's only: the reference avseg's kernels are tested against.
    Tract,
}

impl From<CpuKernelsArg> for CpuKernels {
    fn from(a: CpuKernelsArg) -> Self {
        match a {
            CpuKernelsArg::Avseg => CpuKernels::Avseg,
            CpuKernelsArg::Tract => CpuKernels::Tract,
        }
    }
}

#[derive(Args)]
pub(crate) struct SegmentArgs {
    /// Model package folder (contains avseg.json).
    #[arg(long)]
    pub model: PathBuf,
    #[command(flatten)]
    pub clip: ClipArgs,
    /// Output folder (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// Also write the raw logits [frames, K, h, w] as logits.npy (and, for a two-stage package, the
    /// tagger's probabilities [frames, labels] as tags.npy).
    #[arg(long)]
    pub save_logits: bool,
    /// Skip the overlay images.
    #[arg(long)]
    pub no_overlay: bool,
    /// Score the masks against ground truth: a folder of 0/255 masks named like the frames. Prints
    /// each frame's J (IoU) and writes scores.json (try it on models/sample/gt_masks).
    #[arg(long, value_name = "DIR", conflicts_with = "video")]
    pub gt: Option<PathBuf>,
    /// Masks of objects that are visible but silent, named like the frames: prints the share of
    /// their area the masks cover (try models/sample/distractor_masks).
    #[arg(long, value_name = "DIR", conflicts_with = "video")]
    pub gt_silent: Option<PathBuf>,
    /// Foreground threshold on sigmoid(logit) for binary models (default: the manifest's).
    #[arg(long)]
    pub threshold: Option<f32>,
    /// Smallest region, in source-frame pixels, reported as an object.
    #[arg(long, default_value_t = 16)]
    pub min_area: u64,
    /// Threads for matrix products.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    #[arg(long, value_enum, default_value_t = BackendArg::Auto)]
    pub backend: BackendArg,
    /// Kernels for convolutions and resizes on the CPU.
    #[arg(long, value_enum, default_value_t = CpuKernelsArg::Avseg)]
    pub cpu_kernels: CpuKernelsArg,
    /// Storage precision on the CUDA runner (--backend cuda or cuda-emulated); the CPU backend
    /// runs fp32 only, and refuses fp16.
    #[arg(long, value_enum, default_value_t = PrecisionArg::Fp32)]
    pub precision: PrecisionArg,
    /// Where frames are resized and normalised and masks are made: host, or device (the CUDA
    /// runner, --backend cuda or cuda-emulated; frames go up and masks come down as bytes).
    #[arg(long, value_enum, default_value_t = PrePostArg::Host)]
    pub pre_post: PrePostArg,
    /// With --video: window advance in sampled frames (1..=T; default T, non-overlapping windows).
    #[arg(long, default_value_t = 0)]
    pub hop: usize,
    /// With --video: windows of T frames, each sampled frame alone, or (official TPAVI) sliding
    /// windows at one frame of work per result (auto: alone when the package's frames are
    /// independent and --hop is not given, else windows).
    #[arg(long, value_enum, default_value_t = StreamModeArg::Auto)]
    pub stream_mode: StreamModeArg,
    #[command(flatten)]
    pub package: super::PackageArgs,
    #[command(flatten)]
    pub inputs: super::InputArgs,
}

/// Runs `avseg segment`.
pub(crate) fn run(a: SegmentArgs) -> Result<(), CliError> {
    let options = EngineOptions {
        backend: a.backend.into(),
        threads: a.threads,
        cpu_kernels: a.cpu_kernels.into(),
        threshold: a.threshold,
        min_object_area: a.min_area,
        package: a.package.options(),
        input_limits: a.inputs.limits()?,
        device_precision: a.precision.into(),
        pre_post_on_device: a.pre_post == PrePostArg::Device,
    };
    if let Some(video) = &a.clip.video {
        return video_run(&a, video, options);
    }
    // Validate the model before decoding media: a bad package is the cheaper error to report.
    let mut engine = Engine::load(&a.model, &options)?;
    let files = a.clip.files()?;
    let stem = |p: &std::path::Path| p.file_stem().and_then(|s| s.to_str()).unwrap_or("frame").to_string();
    let clip = engine.load_clip(&files)?;
    // Ground truth is checked before the model runs.
    let sizes: Vec<(String, u32, u32)> =
        clip.frames.iter().map(|f| (stem(&f.source), f.image.width(), f.image.height())).collect();
    let mut check = GtCheck::load(a.gt.as_deref(), a.gt_silent.as_deref(), &sizes)?;
    let out = engine.run_clip(&clip)?;

    let mut writer = FrameWriter::create(&a.out, &engine.package().manifest().output, !a.no_overlay)?;
    for (f, frame) in out.frames.iter().zip(&clip.frames) {
        let stem = stem(&frame.source);
        let source = frame.source.display().to_string();
        let info = FrameInfo { index: f.index, timestamp: f.timestamp, source: &source };
        writer.write_with_silent(&stem, &frame.image, &f.mask, &f.objects, &f.silent_objects, info)?;
        if let Some(check) = &mut check {
            check.score(f.index, &f.mask);
        }
    }
    writer.finish()?;
    if let Some(check) = &check {
        check.report(&a.out)?;
    }
    if a.save_logits {
        write_npy(&a.out.join("logits.npy"), out.logits.shape(), out.logits.data())?;
        if let Some(tags) = &out.tags {
            write_npy(&a.out.join("tags.npy"), tags.shape(), tags.data())?;
        }
    }
    let t = &out.times;
    eprintln!(
        "{} frames, backend {}, {:.0} ms (audio front end {:.0}, frames {:.0}, audio encoder {:.0}, segmenter {:.0}, post {:.0}) -> {}",
        out.frames.len(),
        engine.backend_name(),
        t.total().as_secs_f64() * 1e3,
        t.audio_frontend.as_secs_f64() * 1e3,
        t.vision_frontend.as_secs_f64() * 1e3,
        t.audio_encoder.as_secs_f64() * 1e3,
        t.segmenter.as_secs_f64() * 1e3,
        t.post.as_secs_f64() * 1e3,
        a.out.display()
    );
    Ok(())
}

/// A progress bar on a terminal (hidden otherwise): sampled frames done of the video's one per
/// second, rate and ETA.
fn video_progress(video: &std::path::Path) -> Result<indicatif::ProgressBar, CliError> {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return Ok(indicatif::ProgressBar::hidden());
    }
    let info = avseg::probe_video(video)?;
    // One sampled frame per whole second, at l + 15/16 s.
    let total = (info.duration - 15.0 / 16.0).max(0.0).floor() as u64 + 1;
    let bar = indicatif::ProgressBar::new(total);
    let style = indicatif::ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} frames, {per_sec}, ETA {eta}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    Ok(bar)
}

/// `segment --video`: the runtime's video driver, each result written as `frame_{index}`.
fn video_run(a: &SegmentArgs, video: &std::path::Path, engine: EngineOptions) -> Result<(), CliError> {
    let options = SessionOptions { engine, hop: a.hop, frame_queue: 0, mode: a.stream_mode.into() };
    let mut session = Session::new(&a.model, &options)?;
    let mut writer = FrameWriter::create(&a.out, &session.package().manifest().output, !a.no_overlay)?;
    let source = video.display().to_string();
    let bar = video_progress(video)?;
    let summary = avseg::segment_video(&mut session, video, |r| {
        let stem = format!("frame_{:06}", r.frame_index);
        let info = FrameInfo { index: r.frame_index as usize, timestamp: r.timestamp, source: &source };
        writer.write_with_silent(&stem, r.image, &r.result.mask, &r.result.objects, &r.result.silent_objects, info)?;
        bar.inc(1);
        Ok(())
    })?;
    bar.finish_and_clear();
    writer.finish()?;
    eprintln!(
        "{}: {:.2} s at {:.3} fps, audio {} Hz x{}: {} frames sampled, {} results ({} dropped) -> {}",
        video.display(),
        summary.info.duration,
        summary.info.fps,
        summary.audio_rate,
        summary.audio_channels,
        summary.stats.frames_pushed,
        summary.results,
        summary.stats.frames_dropped,
        a.out.display()
    );
    Ok(())
}
