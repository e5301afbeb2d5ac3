//! Evaluation on AVSBench, reproducing the official numbers (docs/spec/metrics.md §9, docs/spec/datasets.md §10–§11).
//!
//! * [`metrics`]: the official Jaccard and F-measure (per-batch quirk included) and the AVSS
//!   71-class accumulators, as pure functions; plus the batch-independent F, labelled.
//! * [`dataset`]: S4, MS3 and AVSS readers for the official layouts and their CSVs.
//! * [`report`]: `eval.json`, the per-video CSV and the contact sheet of the worst frames.
//!
//! [`evaluate`] scores either a model (run through [`avseg::Engine`]) or saved logits, one
//! `{video}.npy` of shape `[T, K, H, W]` per video. Metrics run at the logits' resolution: the
//! ground truth is resized to it with nearest neighbour when the sizes differ, as the official
//! AVSegFormer 512 pipeline does (TPAVI: both are 224, so nothing is resized).
//!
//! Only the CLI imports this module; it sits on top of `api`.

pub mod dataset;
pub mod metrics;
pub mod report;

use std::path::{Path, PathBuf};

use avseg::{Engine, EngineOptions};
use avseg::ClipFiles;
use avseg::{Family, OutputSpec};
use avseg::write_npy;
use avseg::Tensor;

pub use dataset::{Dataset, Split, Subset, Video};
use dataset::{load_avss_gt, load_binary_gt, AVSS_CLASSES};
use metrics::{f_thresholds, is_foreground, score_batches, video_batches, AvssAccumulator, AvssScores, FrameScore, FscoreDataset};

/// Evaluation failed. One line, naming the file or folder at fault.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("{}: {detail}", path.display())]
    Csv { path: PathBuf, detail: String },
    #[error("{}: {detail}", path.display())]
    Dataset { path: PathBuf, detail: String },
    #[error("{}: AVSBench {subset} {split} split is incomplete: {count} missing file(s): {listed}", root.display())]
    Missing { root: PathBuf, subset: String, split: String, count: usize, listed: String },
    #[error("{}: ground truth: {detail}", path.display())]
    GroundTruth { path: PathBuf, detail: String },
    #[error("{}: logits: {detail}", path.display())]
    Logits { path: PathBuf, detail: String },
    #[error("{}: cannot write: {detail}", path.display())]
    Write { path: PathBuf, detail: String },
    #[error(transparent)]
    Engine(#[from] avseg::Error),
    /// Options that do not fit the data (a binary model on AVSS, a zero batch size).
    #[error("{0}")]
    Input(String),
}

/// Where predictions come from.
#[derive(Clone, Debug)]
pub enum Source {
    /// Run this model package.
    Model(PathBuf),
    /// Read `{dir}/{video}.npy`, f32 `[T, K, H, W]`.
    Logits(PathBuf),
}

#[derive(Clone, Debug)]
pub struct EvalOptions {
    /// Videos per official batch (frames per batch = videos × T). TPAVI's test script uses 4,
    /// AVSegFormer 2. Only the official F depends on it.
    pub batch_videos: usize,
    /// Evaluate only the first N videos of the split.
    pub limit: Option<usize>,
    /// Model runs: also write each video's logits to this folder, in the `--logits` layout.
    pub save_logits: Option<PathBuf>,
    pub threads: usize,
    /// Show a progress bar with ETA on stderr (hidden automatically when stderr is not a terminal).
    pub progress: bool,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self { batch_videos: 4, limit: None, save_logits: None, threads: 1, progress: false }
    }
}

/// One frame's place in the ranking of worst frames, with what the contact sheet draws.
#[derive(Clone, Debug)]
pub struct FrameSample {
    pub video: usize,
    pub frame: usize,
    /// IoU (S4/MS3) or the official per-frame AVSS mIoU.
    pub score: f64,
    pub width: usize,
    pub height: usize,
    pub gt: Vec<u8>,
    pub pred: Vec<u8>,
}

/// Per-video results.
#[derive(Clone, Debug)]
pub struct VideoResult {
    pub name: String,
    pub group: String,
    pub frames: usize,
    pub scored_frames: usize,
    pub empty_gt_frames: usize,
    pub padded_frames: usize,
    /// S4/MS3: mean frame IoU. AVSS: this video's mIoU over the classes it contains.
    pub miou: f64,
    /// S4/MS3: the official F of this video's frames as one batch. AVSS: like `miou`.
    pub fscore: f64,
}

/// S4/MS3 summary.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BinarySummary {
    /// Official J: the mean of per-batch mean IoUs.
    pub miou: f64,
    /// Mean IoU over all scored frames (equals `miou` whenever the batches are full).
    pub miou_frame_mean: f64,
    /// Official F: per-batch threshold maximum, averaged over batches.
    pub fscore: f64,
    /// Batch-independent F (avseg's variant, not the official number).
    pub fscore_batch_independent: f64,
    pub batches: usize,
    pub empty_gt_frames: usize,
    /// Mean IoU over the frames whose GT has foreground (avseg's addition: the official J also
    /// averages empty-GT frames, which score their background ratio).
    pub miou_nonempty_gt: Option<f64>,
    /// Of the empty-GT frames (silent or off-screen sources), the fraction predicted empty:
    /// under 1 % of pixels foreground.
    pub empty_gt_predicted_empty: Option<f64>,
}

/// An empty-GT frame counts as predicted empty below this foreground fraction.
pub const EMPTY_PREDICTION_MAX_FOREGROUND: f64 = 0.01;

/// Everything an evaluation produced.
#[derive(Clone, Debug)]
pub struct EvalOutcome {
    pub subset: Subset,
    pub split: Split,
    pub dataset_root: PathBuf,
    pub source: Source,
    pub batch_videos: usize,
    /// T: frames per video in a batch (the last batch may be short).
    pub frames_per_video: usize,
    pub videos: Vec<VideoResult>,
    /// Scored frames (frames with ground truth), padded frames excluded.
    pub frames: usize,
    pub logits_size: (usize, usize),
    pub binary: Option<BinarySummary>,
    /// AVSS, official: background and padded frames included.
    pub avss: Option<AvssScores>,
    /// AVSS without the padded frames (labelled extra).
    pub avss_no_padding: Option<AvssScores>,
    pub padded_frames: usize,
    /// Up to 16 worst frames, worst first.
    pub worst: Vec<FrameSample>,
    pub videos_list: Vec<Video>,
}

/// Number of frames the contact sheet shows.
pub const WORST_FRAMES: usize = 16;

fn logits_err(path: &Path, detail: impl Into<String>) -> EvalError {
    EvalError::Logits { path: path.to_path_buf(), detail: detail.into() }
}

/// Reads `[T, K, H, W]` f32 logits from a `.npy` file.
pub fn read_logits(path: &Path) -> Result<Tensor, EvalError> {
    let file = std::fs::File::open(path).map_err(|e| logits_err(path, format!("cannot read: {e}")))?;
    let npy = npyz::NpyFile::new(std::io::BufReader::new(file)).map_err(|e| logits_err(path, e.to_string()))?;
    if npy.order() != npyz::Order::C {
        return Err(logits_err(path, "array is in Fortran order; save it in C order"));
    }
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    if shape.len() != 4 || shape.contains(&0) {
        return Err(logits_err(path, format!("shape {shape:?}; expected [T, K, H, W]")));
    }
    let descr = match npy.dtype() {
        npyz::DType::Plain(ty) => ty.to_string(),
        other => other.descr(),
    };
    let data: Vec<f32> = match descr.as_str() {
        "<f4" => npy.into_vec::<f32>().map_err(|e| logits_err(path, e.to_string()))?,
        "<f8" => npy.into_vec::<f64>().map_err(|e| logits_err(path, e.to_string()))?.into_iter().map(|v| v as f32).collect(),
        other => return Err(logits_err(path, format!("dtype {other}; expected float32 (<f4) or float64 (<f8)"))),
    };
    if data.len() != shape.iter().product::<usize>() {
        return Err(logits_err(path, "file is truncated"));
    }
    if let Some(i) = data.iter().position(|v| !v.is_finite()) {
        return Err(logits_err(path, format!("non-finite value {} at index {i}", data[i])));
    }
    Ok(Tensor::new(shape, data))
}

/// Keeps the `n` lowest-scoring frames, ties broken by dataset order.
struct Worst {
    n: usize,
    items: Vec<FrameSample>,
}

impl Worst {
    fn would_keep(&self, score: f64) -> bool {
        self.items.len() < self.n || self.items.last().is_some_and(|w| score < w.score)
    }

    fn push(&mut self, s: FrameSample) {
        let pos = self.items.partition_point(|w| w.score <= s.score);
        self.items.insert(pos, s);
        self.items.truncate(self.n);
    }
}

/// Runs an evaluation: predictions from `source` against `dataset`'s ground truth.
pub fn evaluate(mut dataset: Dataset, source: Source, opts: &EvalOptions) -> Result<EvalOutcome, EvalError> {
    if opts.batch_videos == 0 {
        return Err(EvalError::Input("--batch-videos must be at least 1".into()));
    }
    if let Some(n) = opts.limit {
        if n == 0 {
            return Err(EvalError::Input("--limit must be at least 1".into()));
        }
        dataset.truncate(n);
    }
    let subset = dataset.subset;
    let mut engine = match &source {
        Source::Model(dir) => {
            let eo = EngineOptions { threads: opts.threads.max(1), ..EngineOptions::default() };
            let engine = Engine::load(dir, &eo)?;
            let m = engine.package().manifest();
            match (&m.output, subset.is_binary()) {
                (OutputSpec::Binary { .. }, true) => {}
                // A two-stage package's kept objects make the binary prediction (two_stage_logits).
                (OutputSpec::Semantic { .. }, true) if m.family == Family::Bavs => {}
                (OutputSpec::Semantic { .. }, false) if m.output.channels() == AVSS_CLASSES => {}
                _ => {
                    return Err(EvalError::Input(format!(
                        "{}: model output has {} channel(s) ({}); subset {subset} needs {}",
                        dir.display(),
                        m.output.channels(),
                        if m.output.channels() == 1 { "binary" } else { "semantic" },
                        if subset.is_binary() { "a binary model" } else { "a 71-class semantic model" }
                    )))
                }
            }
            Some(engine)
        }
        Source::Logits(dir) => {
            if !dir.is_dir() {
                return Err(logits_err(dir, "logits folder not found"));
            }
            // Check every file up front: a missing video should not surface after an hour.
            let missing: Vec<String> = dataset
                .videos
                .iter()
                .map(|v| format!("{}.npy", v.name))
                .filter(|f| !dir.join(f).is_file())
                .collect();
            if !missing.is_empty() {
                return Err(logits_err(
                    dir,
                    format!("{} of {} videos have no logits file: {}", missing.len(), dataset.videos.len(), dataset::list_some(&missing)),
                ));
            }
            None
        }
    };
    if let Some(dir) = &opts.save_logits {
        std::fs::create_dir_all(dir).map_err(|e| EvalError::Write { path: dir.clone(), detail: e.to_string() })?;
    }

    let thresholds = f_thresholds();
    let bar = progress_bar(opts.progress, dataset.videos.len());
    let mut frames_scored: Vec<FrameScore> = Vec::new();
    let mut f_dataset = FscoreDataset::new();
    let mut avss = AvssAccumulator::new(AVSS_CLASSES);
    let mut avss_np = AvssAccumulator::new(AVSS_CLASSES);
    let mut worst = Worst { n: WORST_FRAMES, items: Vec::new() };
    let mut results = Vec::with_capacity(dataset.videos.len());
    let mut logits_size: Option<(usize, usize)> = None;
    let mut padded_total = 0usize;

    for (vi, video) in dataset.videos.iter().enumerate() {
        bar.set_message(video.name.clone());
        let (logits, origin) = match (&mut engine, &source) {
            (Some(engine), _) => {
                let files = ClipFiles { frames: video.frames.clone(), audio: video.audio.clone() };
                let clip = engine.load_clip(&files)?;
                let out = engine.run_clip(&clip)?;
                let logits = match &out.tags {
                    Some(tags) => engine.two_stage_logits(&out.logits, tags)?,
                    None => out.logits,
                };
                (logits, video.audio.clone())
            }
            (None, Source::Logits(dir)) => {
                let p = dir.join(format!("{}.npy", video.name));
                (read_logits(&p)?, p)
            }
            (None, Source::Model(_)) => unreachable!("a model source always has an engine"),
        };
        let shape = logits.shape().to_vec();
        let (t, k, h, w) = (shape[0], shape[1], shape[2], shape[3]);
        if t != video.frames.len() {
            return Err(logits_err(&origin, format!("{t} frames of logits for {} frames of video {}", video.frames.len(), video.name)));
        }
        let want_k = if subset.is_binary() { 1 } else { AVSS_CLASSES };
        if k != want_k {
            return Err(logits_err(&origin, format!("{k} channels; subset {subset} needs {want_k}")));
        }
        // One resolution per run: the official metrics average pixel ratios, and the sheet tiles.
        if let Some((lh, lw)) = logits_size {
            if (lh, lw) != (h, w) {
                return Err(logits_err(&origin, format!("logits are {h}x{w} but earlier videos were {lh}x{lw}")));
            }
        }
        logits_size = Some((h, w));
        if let Some(dir) = &opts.save_logits {
            let p = dir.join(format!("{}.npy", video.name));
            write_npy(&p, logits.shape(), logits.data()).map_err(|e| EvalError::Write { path: p.clone(), detail: e.to_string() })?;
        }

        let mut vr = VideoResult {
            name: video.name.clone(),
            group: video.group.clone(),
            frames: t,
            scored_frames: 0,
            empty_gt_frames: 0,
            padded_frames: video.padded_frames,
            miou: 0.0,
            fscore: 0.0,
        };
        let first = frames_scored.len();
        let mut video_avss = AvssAccumulator::new(AVSS_CLASSES);
        for (fi, gt_path) in video.gt.iter().enumerate() {
            let Some(gt_path) = gt_path else { continue };
            let fl = logits.item(fi);
            vr.scored_frames += 1;
            let (score, gt, pred) = if subset.is_binary() {
                let gt = load_binary_gt(gt_path, w, h)?;
                let fs = FrameScore::new(fl, &gt, &thresholds);
                f_dataset.add(fs.curve.as_deref());
                vr.empty_gt_frames += fs.empty_gt() as usize;
                let score = fs.iou;
                frames_scored.push(fs);
                (score, gt, None)
            } else {
                let gt = load_avss_gt(gt_path, w, h)?;
                let pred = metrics::argmax_labels(fl, k);
                let score = avss.add_labels(&pred, &gt);
                avss_np.add_labels(&pred, &gt);
                video_avss.add_labels(&pred, &gt);
                (score, gt, Some(pred))
            };
            if worst.would_keep(score) {
                let pred = pred.unwrap_or_else(|| fl.iter().map(|&x| is_foreground(x) as u8).collect());
                worst.push(FrameSample { video: vi, frame: fi, score, width: w, height: h, gt, pred });
            }
        }
        if subset.is_binary() {
            let fs = &frames_scored[first..];
            if !fs.is_empty() {
                vr.miou = fs.iter().map(|f| f.iou).sum::<f64>() / fs.len() as f64;
                vr.fscore = metrics::fscore_batch(fs.iter().map(|f| f.curve.as_deref()));
            }
        } else {
            for _ in 0..video.padded_frames {
                avss.add_padded_frame();
            }
            padded_total += video.padded_frames;
            let s = video_avss.scores();
            vr.miou = s.miou_present;
            vr.fscore = s.fscore_present;
        }
        results.push(vr);
        bar.inc(1);
    }
    bar.finish_and_clear();

    let frames = results.iter().map(|r| r.scored_frames).sum::<usize>();
    let frames_per_video = dataset.videos.first().map(|v| v.frames.len()).unwrap_or(0);
    let (binary, avss_scores, avss_np_scores) = if subset.is_binary() {
        let fpv: Vec<usize> = results.iter().map(|r| r.scored_frames).collect();
        let batches = video_batches(&fpv, opts.batch_videos);
        let s = score_batches(&frames_scored, &batches);
        let n = frames_scored.len().max(1);
        (
            Some(BinarySummary {
                miou: s.miou,
                miou_frame_mean: frames_scored.iter().map(|f| f.iou).sum::<f64>() / n as f64,
                fscore: s.fscore,
                fscore_batch_independent: f_dataset.value(),
                batches: batches.len(),
                empty_gt_frames: frames_scored.iter().filter(|f| f.empty_gt()).count(),
                miou_nonempty_gt: mean_of(frames_scored.iter().filter(|f| !f.empty_gt()).map(|f| f.iou)),
                // For an empty GT the frame IoU is the predicted-background fraction (metrics.rs).
                empty_gt_predicted_empty: mean_of(
                    frames_scored
                        .iter()
                        .filter(|f| f.empty_gt())
                        .map(|f| f64::from(u8::from(1.0 - f.iou < EMPTY_PREDICTION_MAX_FOREGROUND))),
                ),
            }),
            None,
            None,
        )
    } else {
        (None, Some(avss.scores()), Some(avss_np.scores()))
    };
    Ok(EvalOutcome {
        subset,
        split: dataset.split,
        dataset_root: dataset.root.clone(),
        source,
        batch_videos: opts.batch_videos,
        frames_per_video,
        videos: results,
        frames,
        logits_size: logits_size.unwrap_or((0, 0)),
        binary,
        avss: avss_scores,
        avss_no_padding: avss_np_scores,
        padded_frames: padded_total,
        worst: worst.items,
        videos_list: dataset.videos,
    })
}

fn progress_bar(show: bool, len: usize) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len as u64);
    let style = indicatif::ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} videos, ETA {eta} {msg}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}

fn mean_of(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / n as f64)
}
