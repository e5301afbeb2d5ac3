//! `avseg`: audio-visual segmentation from the command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use avseg::api::{BackendChoice, ClipInput, Engine, EngineOptions, Session, SessionOptions};
use avseg::frontend::audio::{AudioFrontend, PatchPadding};
use avseg::io::clip::{find_clip, find_frames, ClipFiles};
use avseg::model::{ModelPackage, OutputSpec};
use avseg::post::mask::FrameMask;
use avseg::post::objects::SoundingObject;
use avseg::post::write::{write_mask_png, write_npy, write_overlay_png, FrameRecord, JsonlWriter};
use avseg::Error;

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
    Segment(SegmentArgs),
    /// Dump the exact model inputs (log-mel patches, normalised frames) as .npy files.
    Features(FeaturesArgs),
    /// Print a model package's manifest, graph signatures and parameter count.
    Info(InfoArgs),
    /// Score a model or saved logits on AVSBench (S4, MS3, AVSS) with the official metrics.
    Eval(EvalArgs),
    /// Measure latency and memory: per-clip stages (and ONNX Runtime), or a streaming soak run.
    Bench(BenchArgs),
    /// Compile the CUDA kernels with NVRTC: check them (no GPU needed) or fill the kernel cache.
    Kernels(KernelsArgs),
    /// Convert an official TPAVI or AVSegFormer checkpoint (.pth or .safetensors) into a model
    /// package. Runs tools/avseg_export through a Python venv ($AVSEG_PYTHON or .venv); no torch.
    Convert(ConvertArgs),
}

/// The families `avseg convert` knows (tools/avseg_export/convert.py::FAMILIES).
#[derive(Clone, Copy, ValueEnum)]
enum FamilyArg {
    /// TPAVI with ResNet-50, S4/MS3 (binary). Needs --vggish.
    TpaviR50,
    /// TPAVI with PVT-v2-b5, S4/MS3 (binary). Needs --vggish.
    TpaviPvt,
    /// TPAVI with ResNet-50, AVSS (71 classes). Needs --vggish.
    TpaviR50Avss,
    /// TPAVI with PVT-v2-b5, AVSS (71 classes). Needs --vggish.
    TpaviPvtAvss,
    /// AVSegFormer with ResNet-50, S4/MS3 (VGGish inside the checkpoint).
    AvsegformerR50,
    /// AVSegFormer with PVT-v2-b5, S4/MS3.
    AvsegformerPvt,
    /// AVSegFormer with ResNet-50, AVSS.
    AvsegformerR50Avss,
    /// AVSegFormer with PVT-v2-b5, AVSS.
    AvsegformerPvtAvss,
}

#[derive(Clone, Copy, ValueEnum)]
enum PrecisionArg {
    /// Weights as in the checkpoint.
    F32,
    /// Weights stored as float16 (about half the package size); the graphs still compute in f32.
    F16,
}

#[derive(Args)]
struct ConvertArgs {
    #[arg(long, value_enum)]
    family: FamilyArg,
    /// The model's checkpoint: torch.save .pth/.pt (zip or legacy format, read without torch) or
    /// .safetensors with the same keys; a `module.` prefix is removed.
    #[arg(long)]
    checkpoint: PathBuf,
    /// TPAVI families: the separate VGGish weights, vggish-10086976.pth.
    #[arg(long)]
    vggish: Option<PathBuf>,
    /// Package folder to write.
    #[arg(long)]
    out: PathBuf,
    /// Input size, a multiple of 32 from 64 to 1024 (default: what the family was trained at,
    /// AVSegFormer S4/MS3 512, everything else 224).
    #[arg(long, value_parser = parse_size)]
    size: Option<u32>,
    /// PVT-v2 families: attention head width (official b5: 64). A checkpoint cannot carry it, so
    /// width-reduced models must give theirs.
    #[arg(long)]
    pvt_head_dim: Option<u32>,
    #[arg(long, value_enum, default_value_t = PrecisionArg::F32)]
    precision: PrecisionArg,
    /// Package name in the manifest (default: the family).
    #[arg(long)]
    name: Option<String>,
    /// Overwrite a non-empty --out folder.
    #[arg(long)]
    force: bool,
}

fn parse_size(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(n) if n % 32 == 0 && (64..=1024).contains(&n) => Ok(n),
        _ => Err(format!("`{s}` is not a supported input size (a multiple of 32 from 64 to 1024; official: 224 or 512)")),
    }
}

#[derive(Args)]
struct KernelsArgs {
    /// Compile every kernel for each --arch (only libnvrtc is needed, no GPU or driver) and report
    /// each; exits non-zero, with NVRTC's log, if any fails.
    #[arg(long, required_unless_present = "precompile")]
    check: bool,
    /// Compile into the kernel cache, e.g. while building a read-only field image; for --arch, or
    /// the present GPU's architecture.
    #[arg(long)]
    precompile: bool,
    /// Comma-separated GPU architectures, e.g. sm_87,sm_90 (default: the present GPU's).
    #[arg(long)]
    arch: Option<String>,
    /// Cache folder for --precompile (default: $AVSEG_KERNEL_CACHE, else
    /// $XDG_CACHE_HOME/avseg/kernels, else ~/.cache/avseg/kernels).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
}

#[derive(Args)]
struct BenchArgs {
    /// Model package folder.
    #[arg(long)]
    model: PathBuf,
    /// Clip whose frames and audio are used (the stream mode loops them). Default: models/sample.
    #[arg(long)]
    clip: Option<PathBuf>,
    /// Timed clip runs (after one untimed warm-up run).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Threads for matrix products (and ONNX Runtime's intra-op threads).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Also time the package's graphs in ONNX Runtime (tools/bench_ort.py, via $AVSEG_PYTHON or
    /// .venv/bin/python) on the same inputs.
    #[arg(long, conflicts_with = "stream")]
    vs_onnxruntime: bool,
    /// Soak a streaming session instead: a simulated live camera and microphone.
    #[arg(long)]
    stream: bool,
    /// Stream mode: camera frames to push.
    #[arg(long, default_value_t = 1000)]
    frames: u64,
    /// Stream mode: camera frame rate.
    #[arg(long, default_value_t = 10.0)]
    fps: f64,
    /// Stream mode: simulated extra inference time per window, in ms (added to the simulated clock,
    /// not slept), to show back-pressure.
    #[arg(long, default_value_t = 0.0)]
    slow_ms: f64,
    /// Stream mode: window hop in frames (0 = T).
    #[arg(long, default_value_t = 0)]
    hop: usize,
    /// Stream mode: pending-frame queue (0 = 2·T).
    #[arg(long, default_value_t = 0)]
    frame_queue: usize,
}

#[derive(Args)]
struct ClipArgs {
    /// Clip folder: numbered frames (directly or in frames/) and exactly one audio file.
    #[arg(long, conflicts_with_all = ["frames", "audio", "video"])]
    clip: Option<PathBuf>,
    /// Folder of numbered frames (use with --audio).
    #[arg(long, requires = "audio")]
    frames: Option<PathBuf>,
    /// Audio file for --frames.
    #[arg(long, requires = "frames")]
    audio: Option<PathBuf>,
    /// Video file (MP4, MKV, MOV, WebM, ...; needs ffmpeg): frames sampled once per second as
    /// AVSBench did, run through a streaming session with a sliding window.
    #[arg(long, conflicts_with_all = ["frames", "audio"])]
    video: Option<PathBuf>,
}

impl ClipArgs {
    fn files(&self) -> Result<ClipFiles, Error> {
        match (&self.clip, &self.frames, &self.audio) {
            (Some(dir), _, _) => Ok(find_clip(dir)?),
            (None, Some(frames), Some(audio)) => Ok(ClipFiles { frames: find_frames(frames)?, audio: audio.clone() }),
            _ => Err(Error::Input("give --clip DIR, --frames DIR with --audio FILE, or --video FILE".into())),
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum BackendArg {
    /// Best available (logs which one and why).
    Auto,
    /// tract on the CPU.
    Cpu,
    /// The CUDA backend; an error (not a fallback) when it cannot run the model.
    Cuda,
}

#[derive(Args)]
struct SegmentArgs {
    /// Model package folder (contains avseg.json).
    #[arg(long)]
    model: PathBuf,
    #[command(flatten)]
    clip: ClipArgs,
    /// Output folder (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Also write the raw logits [frames, K, h, w] as logits.npy.
    #[arg(long)]
    save_logits: bool,
    /// Skip the overlay images.
    #[arg(long)]
    no_overlay: bool,
    /// Foreground threshold on sigmoid(logit) for binary models (default: the manifest's).
    #[arg(long)]
    threshold: Option<f32>,
    /// Smallest region, in source-frame pixels, reported as an object.
    #[arg(long, default_value_t = 16)]
    min_area: u64,
    /// Threads for matrix products.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    #[arg(long, value_enum, default_value_t = BackendArg::Auto)]
    backend: BackendArg,
    /// With --video: window advance in sampled frames (1..=T; default T, non-overlapping windows).
    #[arg(long, default_value_t = 0)]
    hop: usize,
}

#[derive(Args)]
struct FeaturesArgs {
    /// Audio file: writes log-mel patches [N, 1, 96, 64] to --out.
    #[arg(long)]
    audio: Option<PathBuf>,
    /// Output .npy for the log-mel patches.
    #[arg(long, requires = "audio")]
    out: Option<PathBuf>,
    /// Folder of numbered frames: writes normalised frames [n, 3, H, W] to --frames-out.
    #[arg(long, requires = "frames_out")]
    frames: Option<PathBuf>,
    /// Output .npy for the frames.
    #[arg(long, requires = "frames")]
    frames_out: Option<PathBuf>,
    /// Take T, padding and input size from this package (default: AVSBench S4, T=5, 224x224,
    /// repeat-last padding, OpenCV-style bilinear resize).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Write every patch of the audio, unpadded, instead of exactly T.
    #[arg(long)]
    all_patches: bool,
}

#[derive(Args)]
struct InfoArgs {
    /// Model package folder.
    #[arg(long)]
    model: PathBuf,
    /// Print the manifest as JSON only.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum SubsetArg {
    S4,
    Ms3,
    Avss,
}

#[derive(Clone, Copy, ValueEnum)]
enum SplitArg {
    Train,
    Val,
    Test,
}

#[derive(Args)]
struct EvalArgs {
    /// Model package to run on every video.
    #[arg(long, conflicts_with = "logits", required_unless_present = "logits")]
    model: Option<PathBuf>,
    /// Score saved logits instead: one {video}.npy per video, f32 [T, K, H, W] (K = 1 for
    /// S4/MS3, 71 for AVSS), as written by --save-logits.
    #[arg(long)]
    logits: Option<PathBuf>,
    /// AVSBench folder: the one holding the subset's CSV (Single-source/, Multi-sources/, AVSS/)
    /// or its parent.
    #[arg(long)]
    dataset: PathBuf,
    #[arg(long, value_enum)]
    subset: SubsetArg,
    #[arg(long, value_enum, default_value_t = SplitArg::Test)]
    split: SplitArg,
    /// Videos per batch for the official (batch-dependent) F: frames per batch = videos x T.
    /// 4 matches TPAVI's test script (20 frames), 2 AVSegFormer's (10 frames).
    #[arg(long, default_value_t = 4)]
    batch_videos: usize,
    /// Output folder for eval.json, per_video.csv and worst_frames.png.
    #[arg(long, default_value = "eval-out")]
    out: PathBuf,
    /// With --model: also save each video's logits as OUT/logits/{video}.npy (the --logits layout).
    #[arg(long, requires = "model")]
    save_logits: bool,
    /// Evaluate only the first N videos of the split (CSV order).
    #[arg(long)]
    limit: Option<usize>,
    /// Threads for matrix products.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // symphonia logs its own probe failures at error level; avseg reports them once, with the
    // file name, so the decoder's log stays quiet unless debugging.
    let level = match cli.verbose {
        0 => "warn,symphonia=off",
        1 => "info,symphonia=off",
        _ => "debug",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level)).init();
    let result = match cli.command {
        Command::Segment(a) => segment(a),
        Command::Features(a) => features(a),
        Command::Info(a) => info(a),
        Command::Eval(a) => eval(a).map_err(|e| match e {
            avseg_eval::EvalError::Engine(e) => e,
            other => Error::Input(other.to_string()),
        }),
        Command::Bench(a) => bench::run(a),
        Command::Kernels(a) => kernels::run(a),
        Command::Convert(a) => convert(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn create_dir(path: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(path).map_err(|e| {
        Error::Post(avseg::post::PostError::Write { path: path.to_path_buf(), detail: e.to_string() })
    })
}

fn segment(a: SegmentArgs) -> Result<(), Error> {
    let options = EngineOptions {
        backend: match a.backend {
            BackendArg::Auto => BackendChoice::Auto,
            BackendArg::Cpu => BackendChoice::Cpu,
            BackendArg::Cuda => BackendChoice::Cuda,
        },
        threads: a.threads,
        threshold: a.threshold,
        min_object_area: a.min_area,
    };
    if let Some(video) = &a.clip.video {
        return segment_video(&a, video, options);
    }
    // Validate the model before decoding media: a bad package is the cheaper error to report.
    let mut engine = Engine::load(&a.model, &options)?;
    let files = a.clip.files()?;
    let clip = ClipInput::load(&files)?;
    let out = engine.run_clip(&clip)?;

    let mut writer = FrameWriter::create(&a, &engine.package().manifest().output)?;
    for (f, frame) in out.frames.iter().zip(&clip.frames) {
        let stem = frame.source.file_stem().and_then(|s| s.to_str()).unwrap_or("frame").to_string();
        let source = frame.source.display().to_string();
        writer.write(&stem, &frame.image, &f.mask, &f.objects, f.index, f.timestamp, source)?;
    }
    writer.finish()?;
    if a.save_logits {
        write_npy(&a.out.join("logits.npy"), out.logits.shape(), out.logits.data())?;
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

/// Writes the per-frame outputs of `segment`: mask and overlay PNGs and `results.jsonl`.
struct FrameWriter {
    masks_dir: PathBuf,
    overlays_dir: Option<PathBuf>,
    palette: Option<Vec<[u8; 3]>>,
    colours: Vec<[u8; 3]>,
    jsonl: JsonlWriter,
}

impl FrameWriter {
    fn create(a: &SegmentArgs, output: &OutputSpec) -> Result<Self, Error> {
        let masks_dir = a.out.join("masks");
        create_dir(&masks_dir)?;
        let overlays_dir = (!a.no_overlay).then(|| a.out.join("overlays"));
        if let Some(d) = &overlays_dir {
            create_dir(d)?;
        }
        let (palette, colours) = match output {
            OutputSpec::Binary { .. } => (None, avseg::post::write::binary_colours().to_vec()),
            OutputSpec::Semantic { palette, .. } => (Some(palette.clone()), palette.clone()),
        };
        let jsonl = JsonlWriter::create(&a.out.join("results.jsonl"))?;
        Ok(FrameWriter { masks_dir, overlays_dir, palette, colours, jsonl })
    }

    #[allow(clippy::too_many_arguments)]
    fn write(
        &mut self,
        stem: &str,
        image: &image::RgbImage,
        mask: &FrameMask,
        objects: &[SoundingObject],
        index: usize,
        timestamp: f64,
        source: String,
    ) -> Result<(), Error> {
        write_mask_png(&self.masks_dir.join(format!("{stem}.png")), mask, self.palette.as_deref())?;
        if let Some(d) = &self.overlays_dir {
            write_overlay_png(&d.join(format!("{stem}.png")), image, mask, &self.colours)?;
        }
        let pixels = (mask.width as f64) * (mask.height as f64);
        self.jsonl.write(&FrameRecord {
            frame: index,
            timestamp,
            source,
            width: mask.width,
            height: mask.height,
            empty: mask.is_empty(),
            foreground_fraction: mask.foreground_pixels() as f64 / pixels.max(1.0),
            objects: objects.to_vec(),
        })?;
        Ok(())
    }

    fn finish(self) -> Result<(), Error> {
        Ok(self.jsonl.finish()?)
    }
}

/// `segment --video`: demux with ffmpeg, then feed audio and the AVSBench-sampled frames to a
/// streaming session in capture order, as a live source would, and write each result.
fn segment_video(a: &SegmentArgs, video: &Path, engine: EngineOptions) -> Result<(), Error> {
    use avseg::io::video::{decode_audio_track, probe, SampledFrames};
    let options = SessionOptions { engine, hop: a.hop, frame_queue: 0 };
    let mut session = Session::new(&a.model, &options)?;
    let info = probe(video)?;
    let (audio, rate, channels) = decode_audio_track(&info)?;
    let mut frames = SampledFrames::open(&info)?;
    let mut writer = FrameWriter::create(a, &session.package().manifest().output)?;
    // Frames wait here, keyed by timestamp, until their result comes back (bounded by the window).
    let mut waiting: std::collections::VecDeque<(u64, f64, image::RgbImage)> = Default::default();
    let mut pushed = 0usize;
    let mut written = 0usize;
    let source = video.display().to_string();

    let mut drain = |session: &mut Session, waiting: &mut std::collections::VecDeque<(u64, f64, image::RgbImage)>| -> Result<(), Error> {
        while let Some(r) = session.pop_result() {
            while waiting.front().is_some_and(|(_, ts, _)| *ts < r.frame_timestamp) {
                waiting.pop_front();
            }
            let Some((index, ts, image)) = waiting.front() else { continue };
            let stem = format!("frame_{index:06}");
            writer.write(&stem, image, &r.mask, &r.objects, *index as usize, *ts, source.clone())?;
            written += 1;
        }
        Ok(())
    };

    let samples_until = |t: f64| -> usize { ((t.max(0.0) * rate as f64) as usize * channels).min(audio.len()) };
    while let Some(frame) = frames.next_frame()? {
        // Audio up to one second past the frame: what a live microphone would have delivered by
        // the time the camera's next sampled frame arrives.
        let end = samples_until(frame.timestamp + 1.0);
        if end > pushed {
            let ts = (pushed / channels) as f64 / rate as f64;
            session.push_audio(&audio[pushed..end], rate, channels, ts)?;
            pushed = end;
        }
        session.push_frame(frame.image.as_raw(), frame.image.width(), frame.image.height(), frame.timestamp)?;
        waiting.push_back((frame.index, frame.timestamp, frame.image));
        session.process()?;
        drain(&mut session, &mut waiting)?;
    }
    if audio.len() > pushed {
        let ts = (pushed / channels) as f64 / rate as f64;
        session.push_audio(&audio[pushed..], rate, channels, ts)?;
    }
    session.finish()?;
    drain(&mut session, &mut waiting)?;
    drop(drain);
    writer.finish()?;
    let stats = session.stats();
    eprintln!(
        "{}: {:.2} s at {:.3} fps, audio {} Hz x{}: {} frames sampled, {} results ({} dropped) -> {}",
        video.display(),
        info.duration,
        info.fps,
        rate,
        channels,
        stats.frames_pushed,
        written,
        stats.frames_dropped,
        a.out.display()
    );
    Ok(())
}

fn features(a: FeaturesArgs) -> Result<(), Error> {
    if a.audio.is_none() && a.frames.is_none() {
        return Err(Error::Input("give --audio FILE --out FILE.npy and/or --frames DIR --frames-out FILE.npy".into()));
    }
    let (t, padding, vision) = match &a.model {
        Some(dir) => {
            let p = ModelPackage::load(dir)?;
            let m = p.manifest();
            (m.frames_per_clip, m.audio.patch_padding, m.vision.clone())
        }
        None => (
            5,
            PatchPadding::RepeatLast,
            avseg::frontend::vision::VisionConfig::imagenet(224, 224, avseg::frontend::vision::ResizeFilter::BilinearOpencv),
        ),
    };
    if let (Some(audio_path), Some(out)) = (&a.audio, &a.out) {
        let pcm = avseg::io::audio::decode_audio(audio_path)?;
        let mut fe = AudioFrontend::new();
        let t = if a.all_patches {
            // Every complete patch the audio holds; asking for exactly that many means no padding.
            use avseg::frontend::audio::{logmel::frame_count, patches::patch_count, resample::{check_rate, output_len}};
            check_rate(pcm.rate).map_err(|e| Error::frontend(audio_path, e))?;
            patch_count(frame_count(output_len(pcm.samples.len(), pcm.rate))).max(1)
        } else {
            t
        };
        let patches = fe.clip_patches(&pcm, t, padding).map_err(|e| Error::frontend(audio_path, e))?;
        write_npy(out, patches.shape(), patches.data())?;
        eprintln!("log-mel {:?} -> {}", patches.shape(), out.display());
    }
    if let (Some(dir), Some(out)) = (&a.frames, &a.frames_out) {
        let paths = find_frames(dir)?;
        let mut fe = avseg::frontend::vision::VisionFrontend::new(vision);
        let images = paths
            .iter()
            .map(|p| avseg::io::image::decode_image(p).map_err(Error::from))
            .collect::<Result<Vec<_>, _>>()?;
        let v = fe.config().clone();
        let per = 3 * v.width as usize * v.height as usize;
        let mut data = vec![0f32; per * images.len()];
        for ((img, p), chunk) in images.iter().zip(&paths).zip(data.chunks_exact_mut(per)) {
            fe.preprocess_into(img, chunk).map_err(|e| Error::frontend(p, e))?;
        }
        let shape = [images.len(), 3, v.height as usize, v.width as usize];
        write_npy(out, &shape, &data)?;
        eprintln!("frames {shape:?} -> {}", out.display());
    }
    Ok(())
}

fn info(a: InfoArgs) -> Result<(), Error> {
    let p = ModelPackage::load(&a.model)?;
    let m = p.manifest();
    if a.json {
        println!("{}", serde_json::to_string_pretty(m).expect("manifest serialises"));
        return Ok(());
    }
    println!("package     {}", p.dir().display());
    println!("name        {}", m.name);
    if !m.description.is_empty() {
        println!("description {}", m.description);
    }
    println!("family      {} (T = {} frames per call)", m.family.as_str(), m.frames_per_clip);
    println!(
        "frames      {}x{} RGB, {:?} resize, mean {:?}, std {:?}",
        m.vision.width, m.vision.height, m.vision.resize, m.vision.mean, m.vision.std
    );
    println!(
        "audio       {:?}, 16 kHz, 96x64 patches, padding {:?}, embedding {}",
        m.audio.frontend, m.audio.patch_padding, m.audio.embedding_dim
    );
    match &m.output {
        OutputSpec::Binary { threshold } => println!("output      binary mask, sigmoid > {threshold}"),
        OutputSpec::Semantic { labels, .. } => println!("output      semantic, {} classes ({} ...)", labels.len(), labels.iter().take(4).cloned().collect::<Vec<_>>().join(", ")),
    }
    for g in p.graphs() {
        println!("graph       {} = {} (opset {}, {} parameters)", g.role, g.path.display(), g.opset, g.parameters);
        for i in &g.inputs {
            println!("  input     {} {}", i.name, i.shape_string());
        }
        for o in &g.outputs {
            println!("  output    {} {}", o.name, o.shape_string());
        }
    }
    println!("parameters  {}", p.parameters());
    let pv = &m.provenance;
    println!("provenance  {} ({}), trained: {}", pv.source, pv.licence, pv.trained);
    if !pv.created_by.is_empty() {
        println!("created by  {}", pv.created_by);
    }
    if !pv.metrics.is_empty() {
        println!("metrics     {}", serde_json::Value::Object(pv.metrics.clone()));
    }
    if let Some(serde_json::Value::Array(inputs)) = pv.conversion.get("inputs") {
        for i in inputs {
            let field = |k: &str| i.get(k).and_then(|v| v.as_str()).unwrap_or("?").to_string();
            println!("converted   from {} ({}), sha256 {}", field("file"), field("role"), field("sha256"));
        }
    }
    Ok(())
}

fn eval(a: EvalArgs) -> Result<(), avseg_eval::EvalError> {
    use avseg_eval::{report, Dataset, EvalOptions, Source, Split, Subset};
    let subset = match a.subset {
        SubsetArg::S4 => Subset::S4,
        SubsetArg::Ms3 => Subset::Ms3,
        SubsetArg::Avss => Subset::Avss,
    };
    let split = match a.split {
        SplitArg::Train => Split::Train,
        SplitArg::Val => Split::Val,
        SplitArg::Test => Split::Test,
    };
    let source = match (a.model, a.logits) {
        (Some(m), _) => Source::Model(m),
        (None, Some(l)) => Source::Logits(l),
        (None, None) => return Err(avseg_eval::EvalError::Input("give --model DIR or --logits DIR".into())),
    };
    let dataset = Dataset::open(&a.dataset, subset, split)?;
    let opts = EvalOptions {
        batch_videos: a.batch_videos,
        limit: a.limit,
        save_logits: a.save_logits.then(|| a.out.join("logits")),
        threads: a.threads,
        progress: true,
    };
    let outcome = avseg_eval::evaluate(dataset, source, &opts)?;
    let written = report::write_all(&outcome, &a.out)?;
    print!("{}", report::table(&outcome));
    for p in written {
        eprintln!("wrote {}", p.display());
    }
    Ok(())
}

mod bench {
    //! `avseg bench`: clip latency per stage (optionally against ONNX Runtime) and a streaming soak.

    use std::path::PathBuf;
    use std::time::{Duration, Instant};

    use avseg::api::{ClipInput, Engine, EngineOptions, Session, SessionOptions};
    use avseg::io::clip::find_clip;
    use avseg::post::write::write_npy;
    use avseg::Error;

    use super::{pytools, BenchArgs};

    /// A `/proc/self/status` field in kB (Linux); None elsewhere.
    fn proc_kb(key: &str) -> Option<u64> {
        let s = std::fs::read_to_string("/proc/self/status").ok()?;
        s.lines().find(|l| l.starts_with(key))?.split_whitespace().nth(1)?.parse().ok()
    }

    fn mb(kb: Option<u64>) -> String {
        kb.map_or("n/a".into(), |k| format!("{:.1} MB", k as f64 / 1024.0))
    }

    fn ms(d: Duration) -> f64 {
        d.as_secs_f64() * 1e3
    }

    /// Nearest-rank percentile of unsorted values.
    fn pct(v: &[f64], p: f64) -> f64 {
        if v.is_empty() {
            return f64::NAN;
        }
        let mut s = v.to_vec();
        s.sort_by(|a, b| a.total_cmp(b));
        let i = ((p / 100.0 * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1;
        s[i]
    }

    fn engine_options(threads: usize) -> EngineOptions {
        EngineOptions { threads, ..EngineOptions::default() }
    }

    fn clip_dir(a: &BenchArgs) -> Result<PathBuf, Error> {
        let dir = a.clip.clone().unwrap_or_else(|| PathBuf::from("models/sample"));
        if !dir.is_dir() {
            return Err(Error::Input(format!("{}: clip folder not found (give --clip DIR)", dir.display())));
        }
        Ok(dir)
    }

    pub fn run(a: BenchArgs) -> Result<(), Error> {
        if a.stream {
            stream(&a)
        } else {
            clip(&a)
        }
    }

    fn clip(a: &BenchArgs) -> Result<(), Error> {
        if a.runs == 0 {
            return Err(Error::Input("--runs must be at least 1".into()));
        }
        let t0 = Instant::now();
        let mut engine = Engine::load(&a.model, &engine_options(a.threads))?;
        let load = t0.elapsed();
        let clip = ClipInput::load(&find_clip(&clip_dir(a)?)?)?;
        engine.run_clip(&clip)?; // warm-up: first-touch of weights and scratch
        // total, front end, audio encoder, segmenter, post, audio front end, both graphs
        let mut stages: [Vec<f64>; 7] = Default::default();
        for _ in 0..a.runs {
            let t = engine.run_clip(&clip)?.times;
            let front = t.audio_frontend + t.vision_frontend;
            let graphs = t.audio_encoder + t.segmenter;
            for (v, d) in
                stages.iter_mut().zip([t.total(), front, t.audio_encoder, t.segmenter, t.post, t.audio_frontend, graphs])
            {
                v.push(ms(d));
            }
        }
        let median = pct(&stages[0], 50.0);
        println!(
            "model {} | clip {} ({} frames) | backend {} | threads {} | load {:.0} ms | {} runs",
            a.model.display(),
            clip_dir(a)?.display(),
            clip.frames.len(),
            engine.backend_name(),
            a.threads,
            ms(load),
            a.runs
        );
        println!("per clip      median {:>8.1} ms   min {:.1}   max {:.1}", median, pct(&stages[0], 0.0), pct(&stages[0], 100.0));
        println!("  front end   median {:>8.1} ms   (audio {:.1})", pct(&stages[1], 50.0), pct(&stages[5], 50.0));
        println!("  audio enc.  median {:>8.1} ms", pct(&stages[2], 50.0));
        println!("  segmenter   median {:>8.1} ms", pct(&stages[3], 50.0));
        println!("  post        median {:>8.1} ms", pct(&stages[4], 50.0));
        println!("peak RSS {} (VmHWM), RSS now {}", mb(proc_kb("VmHWM:")), mb(proc_kb("VmRSS:")));
        if a.vs_onnxruntime {
            let graphs = pct(&stages[6], 50.0);
            let ort = ort_times(a, &mut engine, &clip)?;
            println!(
                "onnxruntime   median {:>8.1} ms (graphs only, {} intra-op threads); avseg graphs {:.1} ms -> avseg/ORT = {:.2}",
                ort.clip,
                a.threads,
                graphs,
                graphs / ort.clip
            );
            if let (Some(enc), Some(seg)) = (ort.audio_encoder, ort.segmenter) {
                println!(
                    "  audio enc.  median {:>8.1} ms (avseg/ORT = {:.2})\n  segmenter   median {:>8.1} ms (avseg/ORT = {:.2})",
                    enc,
                    pct(&stages[2], 50.0) / enc,
                    seg,
                    pct(&stages[3], 50.0) / seg
                );
            }
        }
        Ok(())
    }

    /// ONNX Runtime's medians over the same inputs (tools/bench_ort.py).
    struct OrtTimes {
        clip: f64,
        audio_encoder: Option<f64>,
        segmenter: Option<f64>,
    }

    fn ort_times(a: &BenchArgs, engine: &mut Engine, clip: &ClipInput) -> Result<OrtTimes, Error> {
        // Look Python up first: without it there is no point in writing the inputs.
        let py = pytools::python()?;
        let tools = pytools::tools_dir()?;
        let script = tools.join("bench_ort.py");
        let f = engine.features(clip)?;
        let dir = std::env::temp_dir().join(format!("avseg-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| Error::Input(format!("{}: {e}", dir.display())))?;
        let (lm, fr) = (dir.join("logmel.npy"), dir.join("frames.npy"));
        write_npy(&lm, f.logmel.shape(), f.logmel.data())?;
        write_npy(&fr, f.frames.shape(), f.frames.data())?;
        let out = pytools::command(&py, &tools)
            .arg(&script)
            .arg("--model")
            .arg(&a.model)
            .arg("--logmel")
            .arg(&lm)
            .arg("--frames")
            .arg(&fr)
            .args(["--threads", &a.threads.to_string(), "--runs", &a.runs.to_string()])
            .output()
            .map_err(|e| Error::Input(format!("{}: cannot run ONNX Runtime benchmark: {e}", py.display())));
        let _ = std::fs::remove_dir_all(&dir);
        let out = out?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            return Err(pytools::failure(&script.display().to_string(), &py, &String::from_utf8_lossy(&out.stderr)));
        }
        let field = |name: &str| -> Option<f64> {
            stdout.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        };
        Ok(OrtTimes {
            clip: field("median_ms ")
                .ok_or_else(|| Error::Input(format!("{}: no `median_ms` line in its output", script.display())))?,
            audio_encoder: field("audio_encoder_median_ms "),
            segmenter: field("segmenter_median_ms "),
        })
    }

    /// A live source simulated on a virtual clock: idle time is skipped, but time spent in
    /// `process()` (plus `--slow-ms` per window) passes on the clock, so frames and audio arrive in
    /// the bursts a real camera and microphone would deliver.
    fn stream(a: &BenchArgs) -> Result<(), Error> {
        if !(a.fps.is_finite() && a.fps > 0.0) || !(a.slow_ms.is_finite() && a.slow_ms >= 0.0) {
            return Err(Error::Input("--fps must be > 0 and --slow-ms >= 0".into()));
        }
        let clip = ClipInput::load(&find_clip(&clip_dir(a)?)?)?;
        let rate = clip.audio.rate;
        // Stereo, to exercise the channel mix; 10 ms chunks.
        let stereo: Vec<f32> = clip.audio.samples.iter().flat_map(|&v| [v, v]).collect();
        let chunk = (rate as usize / 100).max(1);
        let options = SessionOptions { engine: engine_options(a.threads), hop: a.hop, frame_queue: a.frame_queue };
        let rss_begin = proc_kb("VmRSS:");
        let mut s = Session::new(&a.model, &options)?;
        let rss_start = proc_kb("VmRSS:");
        println!(
            "stream soak: model {} (T = {}, hop {}, frame queue {}), {} frames at {} fps ({:.0} s of stream), audio {} Hz stereo in 10 ms chunks, slow {} ms/window, threads {}",
            a.model.display(),
            s.window_frames(),
            s.hop(),
            s.frame_queue(),
            a.frames,
            a.fps,
            a.frames as f64 / a.fps,
            rate,
            a.slow_ms,
            a.threads
        );
        println!("RSS before session {}, after Session::new {}", mb(rss_begin), mb(rss_start));

        let mut buf = Vec::with_capacity(chunk * 2);
        let mut sim = 0.0f64;
        let (mut next_frame, mut audio_pos, mut audio_chunks) = (0u64, 0usize, 0u64);
        let mut proc_ms = Vec::new();
        let mut newest_ms = Vec::new();
        let mut capture_ms = Vec::new();
        let mut rss_warm = None;
        let warm_frames = (a.frames / 10).max(1);
        let wall = Instant::now();
        while next_frame < a.frames {
            sim = sim.max(next_frame as f64 / a.fps);
            while (audio_chunks + 1) as f64 * chunk as f64 / rate as f64 <= sim {
                // Loop the clip's audio: fill one chunk, wrapping to the start.
                buf.clear();
                while buf.len() < chunk * 2 {
                    let take = (chunk * 2 - buf.len()).min(stereo.len() - audio_pos);
                    buf.extend_from_slice(&stereo[audio_pos..audio_pos + take]);
                    audio_pos = (audio_pos + take) % stereo.len();
                }
                s.push_audio(&buf, rate, 2, audio_chunks as f64 * chunk as f64 / rate as f64)?;
                audio_chunks += 1;
            }
            while next_frame < a.frames && next_frame as f64 / a.fps <= sim {
                let img = &clip.frames[(next_frame as usize) % clip.frames.len()].image;
                s.push_frame(img.as_raw(), img.width(), img.height(), next_frame as f64 / a.fps)?;
                next_frame += 1;
            }
            let w0 = s.stats().windows;
            let t = Instant::now();
            let n = s.process()?;
            let took = t.elapsed();
            let windows = s.stats().windows - w0;
            sim += took.as_secs_f64() + windows as f64 * a.slow_ms / 1e3;
            if windows > 0 {
                proc_ms.push(ms(took) / windows as f64);
            }
            if n > 0 {
                let newest = s.latest().map(|r| r.sequence);
                while let Some(r) = s.pop_result() {
                    capture_ms.push((sim - r.frame_timestamp) * 1e3);
                    if Some(r.sequence) == newest {
                        newest_ms.push(ms(r.latency));
                    }
                }
            }
            if rss_warm.is_none() && next_frame >= warm_frames {
                rss_warm = proc_kb("VmRSS:");
            }
        }
        s.finish()?;
        while s.pop_result().is_some() {}
        let rss_end = proc_kb("VmRSS:");
        let st = s.stats();
        let t = s.stage_times();
        println!(
            "pushed {} frames and {} audio chunks in {:.1} s wall ({:.0} s simulated)",
            st.frames_pushed,
            audio_chunks,
            wall.elapsed().as_secs_f64(),
            sim
        );
        println!(
            "frames: used {}, skipped {} (not at a sampling instant), dropped {} (back-pressure); windows {}, results {}",
            st.frames_used, st.frames_skipped, st.frames_dropped, st.windows, st.results
        );
        println!(
            "process() per window: median {:.1} ms, p99 {:.1} ms (front end {:.1} ms, audio enc. {:.1}, segmenter {:.1}, post {:.1} per window on average)",
            pct(&proc_ms, 50.0),
            pct(&proc_ms, 99.0),
            ms(t.audio_frontend + t.vision_frontend) / st.windows.max(1) as f64,
            ms(t.audio_encoder) / st.windows.max(1) as f64,
            ms(t.segmenter) / st.windows.max(1) as f64,
            ms(t.post) / st.windows.max(1) as f64
        );
        println!(
            "latency, newest frame of each window, push_frame -> mask (wall): median {:.1} ms, p99 {:.1} ms ({} windows)",
            pct(&newest_ms, 50.0),
            pct(&newest_ms, 99.0),
            newest_ms.len()
        );
        println!(
            "latency, every result, capture -> mask (simulated clock, includes waiting for the window's later frames): median {:.0} ms, p99 {:.0} ms",
            pct(&capture_ms, 50.0),
            pct(&capture_ms, 99.0)
        );
        println!(
            "RSS start {} | after warm-up ({} frames) {} | end {} | peak (VmHWM) {}",
            mb(rss_start),
            warm_frames,
            mb(rss_warm),
            mb(rss_end),
            mb(proc_kb("VmHWM:"))
        );
        Ok(())
    }
}

/// Finding the Python export tools, which only `convert` and `bench --vs-onnxruntime` use: the
/// runtime itself never needs Python.
mod pytools {
    use std::path::{Path, PathBuf};

    use avseg::Error;

    const SETUP: &str = "python3 -m venv .venv && .venv/bin/pip install -r tools/requirements.txt";

    /// Folders that may hold the repository: the working directory, the source tree this binary
    /// was built from, and the ancestors of the binary (target/{debug,release}/avseg).
    fn roots() -> Vec<PathBuf> {
        let mut out = vec![];
        if let Ok(cwd) = std::env::current_dir() {
            out.push(cwd);
        }
        out.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")));
        if let Ok(exe) = std::env::current_exe() {
            out.extend(exe.ancestors().skip(1).take(4).map(Path::to_path_buf));
        }
        let mut seen = std::collections::HashSet::new();
        out.retain(|p| seen.insert(p.clone()));
        out
    }

    /// `$AVSEG_PYTHON`, else `.venv/bin/python` in one of the `roots()`.
    pub fn python() -> Result<PathBuf, Error> {
        if let Some(p) = std::env::var_os("AVSEG_PYTHON") {
            let p = PathBuf::from(p);
            // A bare name (`python3`) is looked up on PATH by the OS; a path must exist.
            if p.components().count() > 1 && !p.is_file() {
                return Err(Error::Input(format!("AVSEG_PYTHON={}: no such file", p.display())));
            }
            return Ok(p);
        }
        let venv = if cfg!(windows) { ".venv/Scripts/python.exe" } else { ".venv/bin/python" };
        roots().into_iter().map(|r| r.join(venv)).find(|p| p.is_file()).ok_or_else(|| {
            Error::Input(format!(
                "no Python for the export tools: set AVSEG_PYTHON to a python with tools/requirements.txt \
                 installed, or create the repository's venv: {SETUP}"
            ))
        })
    }

    /// The repository's `tools/` folder (holding `avseg_export/`), or `$AVSEG_TOOLS`.
    pub fn tools_dir() -> Result<PathBuf, Error> {
        if let Some(p) = std::env::var_os("AVSEG_TOOLS") {
            return Ok(PathBuf::from(p));
        }
        roots().into_iter().map(|r| r.join("tools")).find(|t| t.join("avseg_export/convert.py").is_file()).ok_or_else(
            || {
                Error::Input(
                    "tools/avseg_export not found: run avseg from the repository, or set AVSEG_TOOLS to its tools/ folder"
                        .into(),
                )
            },
        )
    }

    /// `python` with `tools/` on PYTHONPATH, so `-m avseg_export.…` resolves.
    pub fn command(python: &Path, tools: &Path) -> std::process::Command {
        let mut cmd = std::process::Command::new(python);
        let mut paths = vec![tools.to_path_buf()];
        if let Some(old) = std::env::var_os("PYTHONPATH") {
            paths.extend(std::env::split_paths(&old));
        }
        cmd.env("PYTHONPATH", std::env::join_paths(paths).unwrap_or_else(|_| tools.as_os_str().to_owned()));
        cmd
    }

    /// One-line error from a failed tool run: its `error: …` line, or the last line of a traceback.
    pub fn failure(what: &str, python: &Path, stderr: &str) -> Error {
        let lines: Vec<&str> = stderr.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
        if let Some(e) = lines.iter().rev().find_map(|l| l.strip_prefix("error: ")) {
            return Error::Input(e.to_string());
        }
        let last = lines.last().copied().unwrap_or("no output");
        if last.contains("No module named") {
            return Error::Input(format!(
                "{what}: {} lacks the export tools ({last}); install them: {} -m pip install -r tools/requirements.txt",
                python.display(),
                python.display()
            ));
        }
        Error::Input(format!("{what} failed ({}): {last}", python.display()))
    }
}

/// `avseg convert`: checks the arguments, then hands over to tools/avseg_export/convert.py, whose
/// progress and summary go straight to stdout.
fn convert(a: ConvertArgs) -> Result<(), Error> {
    for (flag, p) in [("--checkpoint", Some(&a.checkpoint)), ("--vggish", a.vggish.as_ref())] {
        if let Some(p) = p {
            if !p.is_file() {
                return Err(Error::Input(format!("{}: no such file ({flag})", p.display())));
            }
        }
    }
    let family = a.family.to_possible_value().expect("no skipped variants").get_name().to_string();
    let precision = a.precision.to_possible_value().expect("no skipped variants").get_name().to_string();
    let python = pytools::python()?;
    let tools = pytools::tools_dir()?;
    let mut cmd = pytools::command(&python, &tools);
    cmd.args(["-m", "avseg_export.convert", "--family", &family, "--precision", &precision])
        .arg("--checkpoint")
        .arg(&a.checkpoint)
        .arg("--out")
        .arg(&a.out);
    if let Some(v) = &a.vggish {
        cmd.arg("--vggish").arg(v);
    }
    if let Some(d) = a.pvt_head_dim {
        cmd.args(["--pvt-head-dim", &d.to_string()]);
    }
    if let Some(s) = a.size {
        cmd.args(["--size", &s.to_string()]);
    }
    if let Some(n) = &a.name {
        cmd.args(["--name", n]);
    }
    if a.force {
        cmd.arg("--force");
    }
    let out = cmd
        .stdout(std::process::Stdio::inherit())
        .stderr(std::process::Stdio::piped())
        .output()
        .map_err(|e| Error::Input(format!("{}: cannot start Python: {e}", python.display())))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(pytools::failure("convert", &python, &stderr));
    }
    // Warnings from a successful run still matter (e.g. numpy about a strange value).
    eprint!("{stderr}");
    Ok(())
}

/// `avseg kernels`: NVRTC compile check and cache fill.
mod kernels {
    use super::KernelsArgs;
    use avseg::backend::cuda::{Arch, CudaError};
    use avseg::Error;

    fn cuda(e: CudaError) -> Error {
        Error::Input(e.to_string())
    }

    #[cfg(not(feature = "cuda"))]
    pub fn run(_a: KernelsArgs) -> Result<(), Error> {
        Err(cuda(CudaError::NotCompiled))
    }

    #[cfg(feature = "cuda")]
    pub fn run(a: KernelsArgs) -> Result<(), Error> {
        use avseg::backend::cuda::cache::KernelCache;
        use avseg::backend::cuda::kernels::ALL;
        use avseg::backend::cuda::{device, nvrtc::Nvrtc};
        use std::time::Instant;

        let archs = match &a.arch {
            Some(list) => Arch::parse_list(list)
                .map_err(|bad| Error::Input(format!("--arch: `{bad}` is not an architecture like sm_87")))?,
            None => match device::probe(0) {
                Ok(info) => vec![info.arch],
                Err(e) => {
                    return Err(Error::Input(format!(
                        "no GPU to take the architecture from ({e}); pass --arch, e.g. --arch sm_87,sm_90"
                    )))
                }
            },
        };
        let nvrtc = Nvrtc::load().map_err(cuda)?;
        let cache = if a.precompile {
            Some(a.cache_dir.clone().map(KernelCache::new).or_else(KernelCache::from_env).ok_or_else(|| {
                Error::Input("no kernel cache folder: set AVSEG_KERNEL_CACHE or HOME, or pass --cache-dir".into())
            })?)
        } else {
            None
        };
        let supported = nvrtc.supported_archs();
        println!(
            "NVRTC {}.{}; {} kernel families ({} entry points) for {}",
            nvrtc.version.0,
            nvrtc.version.1,
            ALL.len(),
            ALL.iter().map(|k| k.entry_points.len()).sum::<usize>(),
            archs.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", ")
        );
        let mut failures = 0;
        for &arch in &archs {
            if !supported.is_empty() && !supported.contains(&arch) {
                println!("FAIL  {arch}  this NVRTC does not support {arch}");
                failures += ALL.len();
                continue;
            }
            for k in ALL {
                let start = Instant::now();
                match nvrtc.compile_cubin(k, arch) {
                    Ok(cubin) => {
                        let missing = k.missing_entry_points(&cubin);
                        if !missing.is_empty() {
                            failures += 1;
                            println!("FAIL  {arch}  {:<12} entry points missing from the CUBIN: {}", k.name, missing.join(", "));
                            continue;
                        }
                        let stored = match &cache {
                            Some(c) => match c.store(k, arch, nvrtc.version, &cubin) {
                                Ok(p) => format!("  -> {}", p.display()),
                                Err(e) => {
                                    failures += 1;
                                    println!("FAIL  {arch}  {:<12} {e}", k.name);
                                    continue;
                                }
                            },
                            None => String::new(),
                        };
                        println!(
                            "ok    {arch}  {:<12} {:>2} kernels {:>7.1} KiB {:>6.2} s{stored}",
                            k.name,
                            k.entry_points.len(),
                            cubin.len() as f64 / 1024.0,
                            start.elapsed().as_secs_f64()
                        );
                    }
                    Err(e) => {
                        failures += 1;
                        println!("FAIL  {arch}  {:<12} {e}", k.name);
                    }
                }
            }
        }
        if failures > 0 {
            return Err(Error::Input(format!("{failures} of {} kernel builds failed", archs.len() * ALL.len())));
        }
        println!("all {} kernel builds ok", archs.len() * ALL.len());
        Ok(())
    }
}
