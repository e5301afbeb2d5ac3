//! `avseg`: audio-visual segmentation from the command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use avseg::api::{BackendChoice, ClipInput, Engine, EngineOptions};
use avseg::frontend::audio::{AudioFrontend, PatchPadding};
use avseg::io::clip::{find_clip, find_frames, ClipFiles};
use avseg::model::{ModelPackage, OutputSpec};
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
}

#[derive(Args)]
struct ClipArgs {
    /// Clip folder: numbered frames (directly or in frames/) and exactly one audio file.
    #[arg(long, conflicts_with_all = ["frames", "audio"], required_unless_present_all = ["frames", "audio"])]
    clip: Option<PathBuf>,
    /// Folder of numbered frames (use with --audio).
    #[arg(long, requires = "audio")]
    frames: Option<PathBuf>,
    /// Audio file for --frames.
    #[arg(long, requires = "frames")]
    audio: Option<PathBuf>,
}

impl ClipArgs {
    fn files(&self) -> Result<ClipFiles, Error> {
        match (&self.clip, &self.frames, &self.audio) {
            (Some(dir), _, _) => Ok(find_clip(dir)?),
            (None, Some(frames), Some(audio)) => Ok(ClipFiles { frames: find_frames(frames)?, audio: audio.clone() }),
            _ => Err(Error::Input("give --clip DIR, or --frames DIR with --audio FILE".into())),
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum BackendArg {
    /// Best available (logs which one and why).
    Auto,
    /// tract on the CPU.
    Cpu,
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
            avseg::eval::EvalError::Engine(e) => e,
            other => Error::Input(other.to_string()),
        }),
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
        },
        threads: a.threads,
        threshold: a.threshold,
        min_object_area: a.min_area,
    };
    // Validate the model before decoding media: a bad package is the cheaper error to report.
    let mut engine = Engine::load(&a.model, &options)?;
    let files = a.clip.files()?;
    let clip = ClipInput::load(&files)?;
    let out = engine.run_clip(&clip)?;

    let masks_dir = a.out.join("masks");
    let overlays_dir = a.out.join("overlays");
    create_dir(&masks_dir)?;
    if !a.no_overlay {
        create_dir(&overlays_dir)?;
    }
    let manifest = engine.package().manifest();
    let (palette, colours): (Option<Vec<[u8; 3]>>, Vec<[u8; 3]>) = match &manifest.output {
        OutputSpec::Binary { .. } => (None, avseg::post::write::binary_colours().to_vec()),
        OutputSpec::Semantic { palette, .. } => (Some(palette.clone()), palette.clone()),
    };
    let mut jsonl = JsonlWriter::create(&a.out.join("results.jsonl"))?;
    for (f, frame) in out.frames.iter().zip(&clip.frames) {
        let stem = frame.source.file_stem().and_then(|s| s.to_str()).unwrap_or("frame").to_string();
        write_mask_png(&masks_dir.join(format!("{stem}.png")), &f.mask, palette.as_deref())?;
        if !a.no_overlay {
            write_overlay_png(&overlays_dir.join(format!("{stem}.png")), &frame.image, &f.mask, &colours)?;
        }
        let pixels = (f.mask.width as f64) * (f.mask.height as f64);
        jsonl.write(&FrameRecord {
            frame: f.index,
            timestamp: f.timestamp,
            source: frame.source.display().to_string(),
            width: f.mask.width,
            height: f.mask.height,
            empty: f.mask.is_empty(),
            foreground_fraction: f.mask.foreground_pixels() as f64 / pixels.max(1.0),
            objects: f.objects.clone(),
        })?;
    }
    jsonl.finish()?;
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
    Ok(())
}

fn eval(a: EvalArgs) -> Result<(), avseg::eval::EvalError> {
    use avseg::eval::{report, Dataset, EvalOptions, Source, Split, Subset};
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
        (None, None) => return Err(avseg::eval::EvalError::Input("give --model DIR or --logits DIR".into())),
    };
    let dataset = Dataset::open(&a.dataset, subset, split)?;
    let opts = EvalOptions {
        batch_videos: a.batch_videos,
        limit: a.limit,
        save_logits: a.save_logits.then(|| a.out.join("logits")),
        threads: a.threads,
        progress: true,
    };
    let outcome = avseg::eval::evaluate(dataset, source, &opts)?;
    let written = report::write_all(&outcome, &a.out)?;
    print!("{}", report::table(&outcome));
    for p in written {
        eprintln!("wrote {}", p.display());
    }
    Ok(())
}
