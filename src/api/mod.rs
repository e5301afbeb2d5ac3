//! The library entry point: load a package once, then run clips through every stage.
//!
//! ```no_run
//! use avseg::{ClipInput, Engine, EngineOptions};
//! let mut engine = Engine::load("models/tiny-tpavi", &EngineOptions::default())?;
//! let files = avseg::find_clip("models/sample".as_ref())?;
//! let clip = ClipInput::load(&files)?;
//! let out = engine.run_clip(&clip)?;
//! for f in &out.frames {
//!     println!("frame {} at {:.2} s: {} sounding object(s)", f.index, f.timestamp, f.objects.len());
//! }
//! # Ok::<(), avseg::Error>(())
//! ```

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use image::RgbImage;

use crate::backend::cpu::CpuKernels;
use crate::backend::{self, BackendError, BackendOptions, DeviceReport, MaskRule, OpTime, RawFrame, Runner, MAX_FRAMES_PER_CALL};
use crate::error::Error;
use crate::frontend::audio::AudioFrontend;
use crate::frontend::vision::VisionFrontend;
use crate::frontend::FrontendError;
#[cfg(feature = "audio-files")]
use crate::io::audio::decode_audio_with;
use crate::io::audio::Pcm;
#[cfg(all(feature = "audio-files", feature = "image-files"))]
use crate::io::clip::ClipFiles;
#[cfg(feature = "image-files")]
use crate::io::image::decode_image_with;
use crate::io::limits::InputLimits;
use crate::model::{ModelPackage, OutputSpec, PackageError, PackageOptions, PixelRule};
use crate::post::mask::{FrameMask, MaskBuilder};
use crate::post::objects::{ObjectFinder, ObjectSound, SoundingObject};
use crate::post::softmax::{heard_mass, heard_mass_keeps, softmax_argmax};
use crate::post::sound_match::{SoundMatcher, SoundSupport, Verdict};
use crate::tensor::Tensor;

pub mod session;
#[cfg(feature = "video")]
pub mod video;

/// AVSBench samples frame `l` of a clip at `l + 15/16` s (docs/spec/vision.md §4.1); results carry that time.
pub const FRAME_TIME_OFFSET_S: f64 = 0.9375;

/// Which backend runs the graphs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackendChoice {
    /// CUDA when it can run the package, else tract on the CPU; the choice and its reason are
    /// logged. The CUDA runner has not been verified on a GPU yet, so today this is always the CPU.
    #[default]
    Auto,
    /// tract on the CPU.
    Cpu,
    /// The CUDA backend, or an error saying why it cannot run the package (no fallback). Today:
    /// the CUDA runner on GPU 0 at fp32 storage, for TPAVI packages with CNN encoders, not yet
    /// verified on hardware (a warning says so).
    Cuda,
    /// The CUDA runner on the emulated device: its plan and kernels run on the CPU, much slower
    /// than tract, to check the runner without a GPU. Needs a build with the `cuda-emulated`
    /// feature (the CLI's default); otherwise loading fails saying so.
    CudaEmulated,
}

/// Storage precision of weights and activations on the CUDA runner ([`BackendChoice::Cuda`],
/// [`BackendChoice::CudaEmulated`]). Arithmetic accumulates in fp32 either way; the CPU backend
/// always runs fp32.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum DevicePrecision {
    /// 4 bytes per value.
    #[default]
    F32,
    /// 2 bytes per value: half the memory and bandwidth; logits within about 1e-2 of fp32
    /// (docs/cuda.md).
    F16,
}

/// How [`Engine::load`] prepares a package and post-processes its outputs.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// Which backend runs the graphs (default [`BackendChoice::Auto`]).
    pub backend: BackendChoice,
    /// Threads for matrix products.
    pub threads: usize,
    /// Which kernels run convolutions and resizes on the CPU: avseg's own (default) or tract's
    /// (the reference they are tested against).
    pub cpu_kernels: CpuKernels,
    /// Overrides the manifest's binary threshold.
    pub threshold: Option<f32>,
    /// Connected regions smaller than this (in source-frame pixels) are not reported as objects.
    pub min_object_area: u64,
    /// How the package is checked when it is loaded: graph checksums (on by default) and sizes.
    pub package: PackageOptions,
    /// Limits on the clips [`Engine::load_clip`] decodes.
    pub input_limits: InputLimits,
    /// Storage precision on the CUDA runner (default fp32). Asking for fp16 on a backend that
    /// does not run the CUDA runner is an error, not a silent fp32 run.
    pub device_precision: DevicePrecision,
    /// Resize and normalise frames, and make masks, on the CUDA runner's device (default false:
    /// on the host). Frames then go up and masks come down as bytes; the resize is PIL's or
    /// OpenCV's exact integer algorithm (as the manifest says), where the host's fast_image_resize
    /// is within one uint8 level of it (docs/cuda.md). An error on a backend without the CUDA
    /// runner.
    pub pre_post_on_device: bool,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            backend: BackendChoice::Auto,
            threads: 1,
            cpu_kernels: CpuKernels::default(),
            threshold: None,
            min_object_area: 16,
            package: PackageOptions::default(),
            input_limits: InputLimits::default(),
            device_precision: DevicePrecision::F32,
            pre_post_on_device: false,
        }
    }
}

/// One decoded frame and where it came from.
#[derive(Clone, Debug)]
pub struct Frame {
    /// The pixels, at the frame's own size.
    pub image: RgbImage,
    /// The file it was decoded from (used in messages and results).
    pub source: PathBuf,
}

impl Frame {
    /// Decodes a PNG, JPEG or WebP frame within the default [`InputLimits`].
    #[cfg(feature = "image-files")]
    pub fn load(path: &Path) -> Result<Self, Error> {
        Self::load_with(path, &InputLimits::default())
    }

    /// Decodes a PNG, JPEG or WebP frame within `limits`.
    #[cfg(feature = "image-files")]
    pub fn load_with(path: &Path, limits: &InputLimits) -> Result<Self, Error> {
        Ok(Frame { image: decode_image_with(path, limits)?, source: path.to_path_buf() })
    }
}

/// Normalised frames `[n, 3, H, W]`, one per frame, each resized on its own; an error names the
/// frame's file.
pub fn frame_tensor(vision: &mut VisionFrontend, frames: &[Frame]) -> Result<Tensor, Error> {
    let v = vision.config();
    let (h, w) = (v.height as usize, v.width as usize);
    let per = 3 * h * w;
    let mut out = Tensor::zeros(vec![frames.len(), 3, h, w]);
    for (f, chunk) in frames.iter().zip(out.data_mut().chunks_exact_mut(per)) {
        vision.preprocess_into(&f.image, chunk).map_err(|e| Error::frontend(&f.source, e))?;
    }
    Ok(out)
}

/// A window's frames as the segmenter gets them: normalised `[T, 3, H, W]`, or as decoded, for a
/// runner that pre-processes on its device.
enum WindowFrames<'a> {
    Normalised(&'a Tensor),
    Raw(&'a [RawFrame<'a>]),
}

/// A frame the device pre-processes must not be empty: the same error, naming the file, as the
/// host's front end gives.
fn check_frame(f: &Frame) -> Result<(), Error> {
    let (width, height) = f.image.dimensions();
    if width == 0 || height == 0 {
        return Err(Error::frontend(&f.source, FrontendError::EmptyImage { width, height }));
    }
    Ok(())
}

/// An image as the runner's raw frame.
pub(crate) fn raw_frame(image: &RgbImage) -> RawFrame<'_> {
    RawFrame { pixels: image.as_raw(), width: image.width(), height: image.height() }
}

/// A clip in memory: its frames in order and its mono PCM.
#[derive(Clone, Debug)]
pub struct ClipInput {
    /// The clip's frames, in time order.
    pub frames: Vec<Frame>,
    /// The clip's mono audio.
    pub audio: Pcm,
    /// The file the audio was decoded from (used in messages).
    pub audio_source: PathBuf,
}

impl ClipInput {
    /// Decodes the files of a clip within the default [`InputLimits`]. Frames may differ in size:
    /// each is resized to the model's input on its own, and its mask comes back at its own size.
    ///
    /// The audio is decoded as far as any package could use it for this many frames (windows of up
    /// to 64 frames, the largest T a manifest may declare); [`Engine::load_clip`] knows the
    /// package's T and decodes less.
    #[cfg(all(feature = "audio-files", feature = "image-files"))]
    pub fn load(files: &ClipFiles) -> Result<Self, Error> {
        let patches = files.frames.len().div_ceil(64) * 64;
        Self::load_with(files, &InputLimits::default(), Some(audio_seconds_for_patches(patches)))
    }

    /// Decodes the files of a clip within `limits`; with `audio_seconds`, the audio only as far as
    /// that (and a margin, see [`crate::io::audio::decode_audio_with`]), with a warning when the file
    /// holds more.
    #[cfg(all(feature = "audio-files", feature = "image-files"))]
    pub fn load_with(files: &ClipFiles, limits: &InputLimits, audio_seconds: Option<f64>) -> Result<Self, Error> {
        if files.frames.is_empty() {
            return Err(Error::Clip { detail: "clip has no frames".into() });
        }
        let folder = files.frames[0].parent().unwrap_or(Path::new("."));
        limits.check_clip_frames(folder, files.frames.len()).map_err(|detail| Error::Clip { detail })?;
        let audio = decode_audio_with(&files.audio, limits, audio_seconds)?;
        let frames = files.frames.iter().map(|p| Frame::load_with(p, limits)).collect::<Result<Vec<_>, Error>>()?;
        Ok(ClipInput { frames, audio, audio_source: files.audio.clone() })
    }
}

/// Seconds of audio that `patches` consecutive 0.96 s log-mel patches span (the last one takes
/// 0.975 s: 96 hops of 10 ms and a 25 ms window).
pub fn audio_seconds_for_patches(patches: usize) -> f64 {
    use crate::frontend::audio::{MIN_SAMPLES_16K, TARGET_RATE};
    (patches.saturating_sub(1) * crate::frontend::audio::PATCH_FRAMES * crate::frontend::audio::logmel::HOP_LEN + MIN_SAMPLES_16K) as f64 / TARGET_RATE as f64
}

/// Wall time spent per stage for one clip.
#[derive(Clone, Debug, Default)]
pub struct StageTimes {
    /// Resampling and log-mel patches.
    pub audio_frontend: Duration,
    /// Resizing and normalising the frames.
    pub vision_frontend: Duration,
    /// The audio encoder graph, summed over windows.
    pub audio_encoder: Duration,
    /// The segmenter graph, summed over windows.
    pub segmenter: Duration,
    /// Logits to masks and objects.
    pub post: Duration,
}

impl StageTimes {
    /// The sum of all stages.
    pub fn total(&self) -> Duration {
        self.audio_frontend + self.vision_frontend + self.audio_encoder + self.segmenter + self.post
    }
}

/// The result for one frame.
#[derive(Clone, Debug)]
pub struct FrameOutput {
    /// The frame's 0-based position in the clip.
    pub index: usize,
    /// Seconds from the start of the clip's audio.
    pub timestamp: f64,
    /// The file the frame was decoded from.
    pub source: PathBuf,
    /// At the source frame's size.
    pub mask: FrameMask,
    /// The sounding objects found in the mask (regions of at least `min_object_area` pixels).
    pub objects: Vec<SoundingObject>,
    /// Two-stage packages: the objects the segmenter found but no heard sound supports, dropped
    /// from `objects` and the mask (for debugging; empty for other packages).
    pub silent_objects: Vec<SoundingObject>,
}

/// The result of [`Engine::run_clip`]: one output per input frame, the raw logits and timings.
#[derive(Clone, Debug)]
pub struct ClipOutput {
    /// One result per input frame, in order.
    pub frames: Vec<FrameOutput>,
    /// Raw logits `[frames, K, h, w]` at model resolution.
    pub logits: Tensor,
    /// Two-stage packages: each frame's tag probabilities `[frames, A]` (the tagger's labels in
    /// [`crate::model::TwoStage::audio_labels`]); `None` for other packages.
    pub tags: Option<Tensor>,
    /// Wall time spent per stage.
    pub times: StageTimes,
}

/// The model inputs for a clip, exactly as the graphs receive them.
#[derive(Clone, Debug)]
pub struct ClipFeatures {
    /// `[windows·T, 1, 96, 64]`: the patches of each T-frame window, padded per the package policy.
    pub logmel: Tensor,
    /// `[frames, 3, H, W]`: one normalised tensor per real frame.
    pub frames: Tensor,
}

impl CallShape {
    /// One frame per call, for a package of independent frames; else an error on `option` saying
    /// why not.
    pub(crate) fn per_frame(package: &ModelPackage, option: &'static str) -> Result<Self, Error> {
        package
            .single_frame_graphs()
            .map_err(|why| Error::invalid_option(option, format!("cannot segment one frame at a time: {why}")))?;
        Ok(CallShape { frames_per_call: Some(1), tpavi_window: None })
    }

    /// The newest-frame step of a sliding window, for official TPAVI; else an error on `option`
    /// saying why not.
    pub(crate) fn sliding(package: &ModelPackage, option: &'static str) -> Result<Self, Error> {
        let group = package
            .sliding_windows()
            .map_err(|why| Error::invalid_option(option, format!("cannot stream in sliding windows: {why}")))?;
        Ok(CallShape { frames_per_call: Some(1), tpavi_window: Some(group) })
    }
}

/// One frame's graph output as the post stage reads it ([`Engine::post_frame_into`]).
#[derive(Clone, Copy)]
pub(crate) struct FrameLogits<'a> {
    /// The frame's `[k, h, w]` logits.
    pub logits: &'a [f32],
    /// `(k, h, w)`: classes (1 for binary packages) and the model's resolution.
    pub shape: (usize, usize, usize),
    /// The frame's own size, `(width, height)`, to which the mask is resized.
    pub size: (u32, u32),
    /// Two-stage packages: the frame's second of tag probabilities.
    pub tags: Option<&'a [f32]>,
}

/// Buffers of per-frame post-processing, kept between frames so that a stream reuses them.
#[derive(Default)]
pub(crate) struct FramePost {
    pub builder: MaskBuilder,
    pub finder: ObjectFinder,
    /// Two-stage packages: the sounds heard in the frame's second, and the verdict per class.
    matcher: Option<SoundMatcher>,
    verdicts: Vec<Verdict>,
    /// Whether a heard sound supports each class (the heard-mass pixel rule's input).
    heard: Vec<bool>,
    /// The heard-mass rule's arg-max mask, whose objects of silent classes are reported.
    arg_max: FrameMask,
}

impl FramePost {
    /// A two-stage package's frame: hears its second's tag probabilities and sets one verdict per
    /// class in `verdicts` (the verdict depends on the class alone, so the objects and the pixels
    /// share it).
    fn judge(&mut self, tree: &crate::LabelTree, tags: Option<&[f32]>, k: usize) -> Result<(), Error> {
        let tags = tags.ok_or_else(|| Error::internal("a two-stage package's frame was post-processed without its tags"))?;
        let matcher = self.matcher.get_or_insert_with(|| SoundMatcher::new(tree));
        matcher.hear(tree, tags)?;
        matcher.judge_classes(tree, k, &mut self.verdicts);
        Ok(())
    }
}

/// `o` is kept by the tree node `support` names: it carries that node's name and score (reusing
/// the object's string when it already has one).
fn attach_sound(o: &mut SoundingObject, tree: &crate::LabelTree, support: &SoundSupport) {
    let tag = &tree.nodes()[support.node].name;
    match &mut o.sound {
        Some(sound) => {
            sound.tag.clone_from(tag);
            sound.score = support.score;
        }
        none => *none = Some(ObjectSound { tag: tag.clone(), score: support.score }),
    }
}

/// How an engine prepares its graphs (sessions choose; clips take the defaults).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct CallShape {
    /// Frames per call; `None` for the package's T.
    pub frames_per_call: Option<usize>,
    /// The segmenter as the newest-frame step of a sliding TPAVI window of this many frames (with
    /// one frame per call).
    pub tpavi_window: Option<usize>,
}

/// A loaded package with its prepared backend and front ends. Not `Sync`: one engine per thread.
pub struct Engine {
    package: ModelPackage,
    runner: Box<dyn Runner>,
    audio: AudioFrontend,
    vision: VisionFrontend,
    options: EngineOptions,
    /// Frames per graph call: the package's T, or 1 for a session of independent frames.
    frames_per_call: usize,
    /// The audio encoder's output, kept between calls so that a stream reuses its buffer.
    audio_embedding: Tensor,
}

impl Engine {
    /// Loads and validates the package in folder `dir` and prepares its graphs on the chosen
    /// backend. Fails if the package is invalid, the backend cannot prepare it, or `threshold` is
    /// outside (0, 1).
    ///
    /// Graph checksums are checked on the bytes the backend loads: a graph whose rewritten form
    /// comes from the CPU graph cache is checked against the cache entry's own checksum (taken when
    /// it was made from a checked ONNX file) as the entry is read, instead of reading the ONNX file
    /// a second time; a graph another live engine prepared from the same file is not read at all.
    pub fn load(dir: impl AsRef<Path>, options: &EngineOptions) -> Result<Self, Error> {
        Self::load_for(dir, options, |_| Ok(CallShape::default()))
    }

    /// As [`Engine::load`], with the graphs prepared for one frame per call, for packages whose
    /// frames are independent and whose graphs leave the frame axis open
    /// ([`ModelPackage::single_frame_graphs`]; a package that fails it is an error saying why).
    /// [`Engine::run_graphs`] then takes `[1, 3, H, W]` and `[1, 1, 96, 64]`: what a per-frame
    /// [`crate::Session`] runs. Such an engine cannot run clips.
    pub fn load_per_frame(dir: impl AsRef<Path>, options: &EngineOptions) -> Result<Self, Error> {
        Self::load_for(dir, options, |package| {
            CallShape::per_frame(package, "per frame")
        })
    }

    /// As [`Engine::load`], with the segmenter prepared as the newest-frame step of a sliding window
    /// over the package's T frames ([`Engine::run_window_step_into`]), for official TPAVI packages
    /// ([`ModelPackage::sliding_windows`]; another package is an error saying why). Such an engine
    /// cannot run clips.
    pub fn load_sliding(dir: impl AsRef<Path>, options: &EngineOptions) -> Result<Self, Error> {
        Self::load_for(dir, options, |package| {
            CallShape::sliding(package, "sliding")
        })
    }

    /// As [`Engine::load`], with the graphs prepared as `shape` picks from the loaded package.
    /// For sessions: an engine prepared for another count than T cannot run clips.
    pub(crate) fn load_for(
        dir: impl AsRef<Path>,
        options: &EngineOptions,
        shape: impl FnOnce(&ModelPackage) -> Result<CallShape, Error>,
    ) -> Result<Self, Error> {
        if options.device_precision != DevicePrecision::F32 && !matches!(options.backend, BackendChoice::Cuda | BackendChoice::CudaEmulated) {
            let backend = if options.backend == BackendChoice::Cpu { "cpu" } else { "auto, which runs tract today" };
            return Err(Error::invalid_option("device_precision", format!("fp16 storage runs on the CUDA runner only (backend cuda or cuda-emulated), not on {backend}")));
        }
        if options.pre_post_on_device && !matches!(options.backend, BackendChoice::Cuda | BackendChoice::CudaEmulated) {
            let backend = if options.backend == BackendChoice::Cpu { "cpu" } else { "auto, which runs tract today" };
            return Err(Error::invalid_option("pre_post_on_device", format!("pre- and post-processing on the device need the CUDA runner (backend cuda or cuda-emulated), not {backend}")));
        }
        let defer_checksums = options.package.verify_checksums;
        let package_options = PackageOptions { defer_checksums, ..options.package.clone() };
        let mut package = ModelPackage::load_with(dir, &package_options)?;
        let CallShape { frames_per_call: frames, tpavi_window } = shape(&package)?;
        let backend_options = BackendOptions {
            threads: options.threads.max(1),
            cpu_kernels: options.cpu_kernels,
            graph_cache: None,
            share_plans: true,
            frames_per_call: frames,
            tpavi_window,
            cuda_precision: match options.device_precision {
                DevicePrecision::F32 => backend::cuda::plan::Precision::F32,
                DevicePrecision::F16 => backend::cuda::plan::Precision::F16,
            },
            pre_post_on_device: options.pre_post_on_device,
        };
        let kind = match options.backend {
            BackendChoice::Auto => backend::BackendKind::Auto,
            BackendChoice::Cpu => backend::BackendKind::Cpu,
            BackendChoice::Cuda => backend::BackendKind::Cuda,
            BackendChoice::CudaEmulated => backend::BackendKind::CudaEmulated,
        };
        let runner = backend::select(kind, &package, &backend_options).map_err(|e| match e {
            // Found by the backend, but a damaged package all the same.
            BackendError::Corrupt { path, field, detail } => Error::Package(PackageError::Corrupt { path, field, detail }),
            e => Error::Backend(e),
        })?;
        package.checks_passed();
        if let (Some(t), OutputSpec::Binary { .. }) = (options.threshold, &package.manifest().output) {
            if !(t.is_finite() && t > 0.0 && t < 1.0) {
                return Err(Error::invalid_option("threshold", format!("threshold {t} must be in (0, 1)")));
            }
        }
        let vision = VisionFrontend::new(package.manifest().vision.clone());
        let frames_per_call = frames.unwrap_or(package.frames_per_clip());
        Ok(Engine {
            package,
            runner,
            audio: AudioFrontend::new(),
            vision,
            options: options.clone(),
            frames_per_call,
            audio_embedding: Tensor::zeros(Vec::new()),
        })
    }

    /// The loaded model package.
    pub fn package(&self) -> &ModelPackage {
        &self.package
    }

    /// The backend that runs the graphs (`"tract"` or `"cuda"`).
    pub fn backend_name(&self) -> &'static str {
        self.runner.backend_name()
    }

    /// Windows of T frames a clip of `n` frames needs.
    fn windows(&self, n: usize) -> usize {
        n.div_ceil(self.package.frames_per_clip())
    }

    /// Decodes a clip's files within the engine's input limits, its audio only as far as the
    /// package's windows of T frames use it.
    #[cfg(all(feature = "audio-files", feature = "image-files"))]
    pub fn load_clip(&self, files: &ClipFiles) -> Result<ClipInput, Error> {
        let patches = self.windows(files.frames.len()) * self.package.frames_per_clip();
        ClipInput::load_with(files, &self.options.input_limits, Some(audio_seconds_for_patches(patches)))
    }

    /// Log-mel patches for `windows` windows of T frames.
    pub fn audio_features(&mut self, audio: &Pcm, source: &Path, windows: usize) -> Result<Tensor, Error> {
        let t = self.package.frames_per_clip() * windows;
        let padding = self.package.manifest().audio.patch_padding;
        self.audio.clip_patches(audio, t, padding).map_err(|e| Error::frontend(source, e))
    }

    /// Normalised frames `[n, 3, H, W]`.
    pub fn frame_features(&mut self, frames: &[Frame]) -> Result<Tensor, Error> {
        frame_tensor(&mut self.vision, frames)
    }

    /// The exact inputs the graphs receive for `clip`.
    pub fn features(&mut self, clip: &ClipInput) -> Result<ClipFeatures, Error> {
        let windows = self.windows(clip.frames.len());
        Ok(ClipFeatures {
            logmel: self.audio_features(&clip.audio, &clip.audio_source, windows)?,
            frames: self.frame_features(&clip.frames)?,
        })
    }

    /// Runs every stage on a clip. A clip longer than T frames runs as consecutive windows of T
    /// (as the official evaluation does); a short last window is completed by repeating its last
    /// frame, and the results for those repeats are dropped.
    pub fn run_clip(&mut self, clip: &ClipInput) -> Result<ClipOutput, Error> {
        let mut times = StageTimes::default();
        let n = clip.frames.len();
        let t = self.package.frames_per_clip();
        let windows = self.windows(n);

        let start = Instant::now();
        let logmel = self.audio_features(&clip.audio, &clip.audio_source, windows)?;
        times.audio_frontend = start.elapsed();

        // With pre- and post-processing on the device, frames go to the runner as they are and
        // each kept frame's mask is made there, window by window, while its logits are on the device.
        let on_device = self.runner.pre_post_on_device();
        let start = Instant::now();
        let frames = if on_device {
            for f in &clip.frames {
                check_frame(f)?;
            }
            None
        } else {
            Some(self.frame_features(&clip.frames)?)
        };
        times.vision_frontend = start.elapsed();

        let patch_len = logmel.item_len();
        let mut logits_data = Vec::new();
        let mut tags_data = Vec::new();
        let mut logit_dims: Option<[usize; 3]> = None;
        let mut masks = Vec::new();
        for w in 0..windows {
            let mut patch_shape = logmel.shape().to_vec();
            patch_shape[0] = t;
            let patches = Tensor::new(patch_shape, logmel.data()[w * t * patch_len..(w + 1) * t * patch_len].to_vec());
            // Past the clip's end, repeat its last frame: the padded outputs are discarded.
            let frame_at = |i: usize| (w * t + i).min(n - 1);
            let logits = match &frames {
                Some(frames) => {
                    let frame_len = frames.item_len();
                    let mut window_frames = Vec::with_capacity(t * frame_len);
                    for i in 0..t {
                        window_frames.extend_from_slice(frames.item(frame_at(i)));
                    }
                    let mut shape = frames.shape().to_vec();
                    shape[0] = t;
                    self.infer_window(&Tensor::new(shape, window_frames), &patches, &mut times)?
                }
                None => {
                    let mut raw: heapless::Vec<RawFrame<'_>, MAX_FRAMES_PER_CALL> = heapless::Vec::new();
                    for i in 0..t {
                        raw.push(raw_frame(&clip.frames[frame_at(i)].image)).map_err(|_| Error::internal(format!("{t} frames per call, over {MAX_FRAMES_PER_CALL}")))?;
                    }
                    let mut logits = Tensor::zeros(Vec::new());
                    self.infer_window_frames_into(&raw, &patches, &mut times, &mut logits)?;
                    logits
                }
            };
            let keep = t.min(n - w * t);
            if self.package.two_stage().is_some() {
                tags_data.extend_from_slice(&self.audio_embedding.data()[..keep * self.audio_embedding.item_len()]);
            }
            if on_device {
                let start = Instant::now();
                for i in 0..keep {
                    let mut mask = FrameMask::background(0, 0);
                    self.device_mask_into(i, clip.frames[w * t + i].image.dimensions(), &mut mask)?;
                    masks.push(mask);
                }
                times.post += start.elapsed();
            }

            let dims = [logits.shape()[1], logits.shape()[2], logits.shape()[3]];
            logit_dims.get_or_insert(dims);
            logits_data.extend_from_slice(&logits.data()[..keep * logits.item_len()]);
        }
        let [k, h, w] = logit_dims.expect("at least one window");
        let logits = Tensor::new(vec![n, k, h, w], logits_data);

        let tags = self.package.two_stage().map(|two| Tensor::new(vec![n, two.audio_labels.len()], tags_data));

        let start = Instant::now();
        let premade = if on_device { Some(masks) } else { None };
        let frames_out = self.post_process_with(clip, &logits, tags.as_ref(), premade)?;
        times.post += start.elapsed();
        Ok(ClipOutput { frames: frames_out, logits, tags, times })
    }

    /// The CUDA runner's FLOPs per call and its device memory (now and at its peak); None on
    /// tract.
    pub fn device_report(&self) -> Option<DeviceReport> {
        self.runner.device_report()
    }

    /// Whether frames are pre-processed and masks made on the runner's device.
    pub(crate) fn pre_post_on_device(&self) -> bool {
        self.runner.pre_post_on_device()
    }

    /// How this engine's package turns logits into a mask, on the device.
    fn mask_rule(&self) -> MaskRule {
        match &self.package.manifest().output {
            OutputSpec::Binary { threshold } => MaskRule::Binary { threshold: self.options.threshold.unwrap_or(*threshold) },
            OutputSpec::Semantic { .. } => MaskRule::Classes,
        }
    }

    /// Frame `index` of the last segmenter call's mask at `size`, made on the device, into `mask`
    /// (its buffers reused).
    pub(crate) fn device_mask_into(&mut self, index: usize, (fw, fh): (u32, u32), mask: &mut FrameMask) -> Result<(), Error> {
        let rule = self.mask_rule();
        mask.reset(fw, fh);
        self.runner.frame_mask_into(index, (fw, fh), rule, &mut mask.labels, &mut mask.confidence)?;
        Ok(())
    }

    /// Runs the package's graphs on model inputs prepared elsewhere (for example by your own
    /// training pipeline, or [`Engine::features`]): frames `[T, 3, H, W]` and log-mel patches
    /// `[T, 1, 96, 64]` → logits `[T, K, h, w]` at model resolution. No pre- or post-processing.
    pub fn run_graphs(&mut self, frames: &Tensor, logmel: &Tensor) -> Result<Tensor, Error> {
        self.infer_window(frames, logmel, &mut StageTimes::default())
    }

    /// [`Engine::run_graphs`] into `logits`, reusing its buffers (and the engine's own for the
    /// audio embedding): repeated calls of one shape allocate nothing in avseg, only inside the
    /// backend (tract builds each node's output).
    pub fn run_graphs_into(&mut self, frames: &Tensor, logmel: &Tensor, logits: &mut Tensor) -> Result<(), Error> {
        self.infer_window_into(frames, logmel, &mut StageTimes::default(), logits)
    }

    /// The newest-frame step of a sliding TPAVI window, on an engine from [`Engine::load_sliding`]
    /// (what a [`crate::StreamMode::Sliding`] session runs per result): one frame `[1, 3, H, W]`
    /// and its patch `[1, 1, 96, 64]`; `weight` `[1]`, how many times the frame counts in the
    /// window's K; `rest`, per TPAVI block ([`Engine::window_blocks`]), the window's other frames'
    /// summed `φ_tᵀ gs_t` `[C', C']`. Writes the frame's logits `[1, K, h, w]` to `logits` and each
    /// block's `[φ; gs]` `[2, C']` to `terms`, the frame's share of K in later windows (spec §6.6;
    /// docs/streaming.md, *Sliding windows*).
    pub fn run_window_step_into(
        &mut self, frames: &Tensor, logmel: &Tensor, weight: &Tensor, rest: &[Tensor], logits: &mut Tensor, terms: &mut [Tensor],
    ) -> Result<(), Error> {
        self.infer_window_step_into(frames, logmel, weight, rest, &mut StageTimes::default(), logits, terms)
    }

    /// Runs the graphs `runs` times on the given inputs (as [`Engine::run_graphs`]) and returns the
    /// time of every node, summed over the runs, slowest first. An error if the backend cannot
    /// profile. Profiling adds a clock read per node, so totals are slightly above unprofiled runs.
    pub fn profile_graphs(&mut self, frames: &Tensor, logmel: &Tensor, runs: usize) -> Result<Vec<OpTime>, Error> {
        if !self.runner.set_profiling(true) {
            return Err(Error::invalid_option("profile", format!("the {} backend cannot profile operators", self.backend_name())));
        }
        let mut result = Ok(());
        for _ in 0..runs {
            if let Err(e) = self.run_graphs(frames, logmel) {
                result = Err(e);
                break;
            }
        }
        let mut times = self.runner.take_profile();
        self.runner.set_profiling(false);
        result?;
        times.sort_by(|a, b| b.time.cmp(&a.time));
        Ok(times)
    }

    /// One window through the graphs: frames `[T, 3, H, W]` and log-mel `[T, 1, 96, 64]` → logits
    /// `[T, K, h, w]`, adding the encoder and segmenter time to `times`. Shared by clips and streams
    /// so both run exactly the same calls.
    pub(crate) fn infer_window(&mut self, frames: &Tensor, patches: &Tensor, times: &mut StageTimes) -> Result<Tensor, Error> {
        let mut logits = Tensor::zeros(Vec::new());
        self.infer_window_into(frames, patches, times, &mut logits)?;
        Ok(logits)
    }

    /// [`Engine::infer_window`] into `logits`, reusing its buffers and the engine's own for the
    /// audio embedding: after the first call of a shape, nothing here allocates (tract's run does).
    pub(crate) fn infer_window_into(&mut self, frames: &Tensor, patches: &Tensor, times: &mut StageTimes, logits: &mut Tensor) -> Result<(), Error> {
        self.infer_into(WindowFrames::Normalised(frames), patches, times, logits)
    }

    /// As [`Engine::infer_window_into`], with RGB frames at their own sizes that the runner
    /// pre-processes on its device ([`Runner::segment_frames_into`]).
    pub(crate) fn infer_window_frames_into(&mut self, frames: &[RawFrame<'_>], patches: &Tensor, times: &mut StageTimes, logits: &mut Tensor) -> Result<(), Error> {
        self.infer_into(WindowFrames::Raw(frames), patches, times, logits)
    }

    fn infer_into(&mut self, frames: WindowFrames<'_>, patches: &Tensor, times: &mut StageTimes, logits: &mut Tensor) -> Result<(), Error> {
        let start = Instant::now();
        let encoded = self.runner.encode_audio_into(patches, &mut self.audio_embedding)?;
        times.audio_encoder += start.elapsed();
        let audio = if encoded { &self.audio_embedding } else { patches };
        let start = Instant::now();
        match frames {
            WindowFrames::Normalised(frames) => self.runner.segment_into(frames, audio, logits)?,
            WindowFrames::Raw(frames) => self.runner.segment_frames_into(frames, audio, logits)?,
        }
        times.segmenter += start.elapsed();
        Ok(())
    }

    /// The newest frame of a sliding TPAVI window: as [`Engine::infer_window_into`] for one frame
    /// and its patch, with the window's other frames given as their summed K terms per block
    /// (`rest`) and the newest frame's count in K (`weight`); each block's `[φ; gs]` goes to
    /// `terms` ([`crate::backend::Runner::segment_window_into`]).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn infer_window_step_into(
        &mut self, frames: &Tensor, patch: &Tensor, weight: &Tensor, rest: &[Tensor], times: &mut StageTimes, logits: &mut Tensor,
        terms: &mut [Tensor],
    ) -> Result<(), Error> {
        let start = Instant::now();
        let encoded = self.runner.encode_audio_into(patch, &mut self.audio_embedding)?;
        times.audio_encoder += start.elapsed();
        let audio = if encoded { &self.audio_embedding } else { patch };
        let start = Instant::now();
        self.runner.segment_window_into(frames, audio, weight, rest, logits, terms)?;
        times.segmenter += start.elapsed();
        Ok(())
    }

    /// C' of each TPAVI block, in graph order, of an engine from [`Engine::load_sliding`]; empty
    /// for other engines.
    pub fn window_blocks(&self) -> Vec<usize> {
        self.runner.window_blocks()
    }

    /// Frames per graph call this engine was prepared for.
    pub(crate) fn frames_per_call(&self) -> usize {
        self.frames_per_call
    }


    /// One frame's logits `[K, h, w]` → its mask at `fw`×`fh`, written into `mask`, and its objects
    /// into `objects` (all reusing their buffers, as does `post`: a stream allocates nothing here
    /// once its frame size and object count were seen). Shared by clips and streams so the masks
    /// are identical.
    ///
    /// With `mask_ready`, `mask` already holds the frame's mask (made on the device) and the logits
    /// are not read for it.
    ///
    /// Two-stage packages also take the frame's second of tag probabilities (`tags`): each object
    /// is kept when a heard sound of the label tree supports its class, carrying that sound; the
    /// others go to `silent`, and their classes' pixels become background in the mask. Under the
    /// heard-mass pixel rule the mask itself depends on the heard sounds
    /// ([`Engine::post_heard_mass_into`]).
    pub(crate) fn post_frame_into(
        &self,
        post: &mut FramePost,
        frame: FrameLogits,
        mask_ready: bool,
        mask: &mut FrameMask,
        objects: &mut Vec<SoundingObject>,
        silent: &mut Vec<SoundingObject>,
    ) -> Result<(), Error> {
        if let Some(PixelRule::HeardMass { silent_ratio }) = self.package.two_stage().map(|two| two.pixel_rule) {
            // The mask comes from the logits (every path has them on the host, device masks
            // included), since it depends on the heard sounds.
            return self.post_heard_mass_into(post, frame, silent_ratio, mask, objects, silent);
        }
        let FrameLogits { logits: frame_logits, shape: (k, h, w), size: (fw, fh), tags } = frame;
        let manifest = self.package.manifest();
        let labels = match &manifest.output {
            OutputSpec::Binary { .. } if mask_ready => None,
            OutputSpec::Binary { threshold } => {
                let th = self.options.threshold.unwrap_or(*threshold);
                post.builder.binary_into(frame_logits, h, w, fw, fh, th, mask)?;
                None
            }
            OutputSpec::Semantic { labels, .. } => {
                if !mask_ready {
                    post.builder.semantic_into(frame_logits, k, h, w, fw, fh, mask)?;
                }
                Some(labels.as_slice())
            }
        };
        post.finder.find_into(mask, labels, self.options.min_object_area, objects);
        silent.clear();
        let Some(two) = self.package.two_stage() else { return Ok(()) };
        let tree = &two.tree;
        post.judge(tree, tags, k)?;
        let mut kept = 0;
        for j in 0..objects.len() {
            if let Some(Verdict::Sounding(support)) = post.verdicts.get(objects[j].class as usize) {
                attach_sound(&mut objects[j], tree, support);
                objects.swap(kept, j);
                kept += 1;
            }
        }
        silent.extend(objects.drain(kept..).map(|o| SoundingObject { sound: None, ..o }));
        for (i, o) in objects.iter_mut().enumerate() {
            o.id = i as u32 + 1;
        }
        for (i, o) in silent.iter_mut().enumerate() {
            o.id = i as u32 + 1;
        }
        // Silent classes' pixels are background now; their confidence becomes the probability
        // of not being the dropped class.
        for (label, conf) in mask.labels.iter_mut().zip(mask.confidence.iter_mut()) {
            if *label != 0 && !matches!(post.verdicts.get(*label as usize), Some(Verdict::Sounding(_))) {
                *label = 0;
                *conf = 1.0 - *conf;
            }
        }
        Ok(())
    }

    /// [`Engine::post_frame_into`] for a two-stage package under the heard-mass pixel rule: the
    /// heard sounds decide which classes are heard, one pass over the logits makes the heard-mass
    /// mask and the arg-max mask ([`MaskBuilder::heard_mass_into`]), the kept objects are the
    /// heard-mass mask's (each carrying the sound that supports its class) and the silent ones
    /// are the arg-max mask's objects of classes no heard sound supports.
    fn post_heard_mass_into(
        &self,
        post: &mut FramePost,
        frame: FrameLogits,
        silent_ratio: f32,
        mask: &mut FrameMask,
        objects: &mut Vec<SoundingObject>,
        silent: &mut Vec<SoundingObject>,
    ) -> Result<(), Error> {
        let FrameLogits { logits: frame_logits, shape: (k, h, w), size: (fw, fh), tags } = frame;
        let (Some(two), OutputSpec::Semantic { labels, .. }) = (self.package.two_stage(), &self.package.manifest().output) else {
            return Err(Error::internal("the heard-mass pixel rule outside a semantic two-stage package"));
        };
        let tree = &two.tree;
        post.judge(tree, tags, k)?;
        post.heard.clear();
        post.heard.extend(post.verdicts.iter().map(|v| matches!(v, Verdict::Sounding(_))));
        post.builder.heard_mass_into(frame_logits, (k, h, w), &post.heard, silent_ratio, fw, fh, mask, &mut post.arg_max)?;
        let min_area = self.options.min_object_area;
        post.finder.find_into(&post.arg_max, Some(labels), min_area, silent);
        let heard = &post.heard;
        silent.retain(|o| !heard.get(o.class as usize).copied().unwrap_or(false));
        for (i, o) in silent.iter_mut().enumerate() {
            o.id = i as u32 + 1;
            o.sound = None;
        }
        post.finder.find_into(mask, Some(labels), min_area, objects);
        for o in objects.iter_mut() {
            // Every kept pixel's class is heard, so every object has its sound.
            match post.verdicts.get(o.class as usize) {
                Some(Verdict::Sounding(support)) => attach_sound(o, tree, support),
                _ => return Err(Error::internal(format!("a heard-mass object of class {} that no heard sound supports", o.class))),
            }
        }
        Ok(())
    }

    /// A two-stage package's clip as one binary score per pixel, at model resolution: what
    /// `avseg eval` scores on the binary (S4/MS3-style) subsets. From the per-class `logits`
    /// `[n, K, h, w]` and `tags` `[n, A]` of [`Engine::run_clip`]: a pixel the package's pixel
    /// rule keeps scores `(1 + p) / 2`, where p is its arg-max class's softmax probability
    /// ([`PixelRule::ArgMax`]) or the heard classes' summed probability
    /// ([`PixelRule::HeardMass`]); every other pixel scores 0. The score is above 0.5 exactly on
    /// the mask the clip's output shows, so J is the mask's, and it ranks the kept pixels by the
    /// segmenter's probability for F. Returned as logits `[n, 1, h, w]` (`ln(s / (1 − s))`, s
    /// clamped below 1; −100 for a score of 0).
    pub fn two_stage_logits(&self, logits: &Tensor, tags: &Tensor) -> Result<Tensor, Error> {
        let two = self
            .package
            .two_stage()
            .ok_or_else(|| Error::invalid_option("two stage", "the package is not a two-stage (bavs) package"))?;
        let shape = logits.shape();
        if shape.len() != 4 || tags.shape().first() != Some(&shape[0]) {
            return Err(Error::invalid_option(
                "tags",
                format!("logits {shape:?} and tags {:?} must hold the same frames", tags.shape()),
            ));
        }
        let (n, k, h, w) = (shape[0], shape[1], shape[2], shape[3]);
        if !(1..=usize::from(u16::MAX) + 1).contains(&k) {
            return Err(Error::invalid_option("logits", format!("logits {shape:?}: 1 to 65536 classes expected")));
        }
        let hw = h * w;
        let mut matcher = SoundMatcher::new(&two.tree);
        let mut verdicts = Vec::with_capacity(k);
        let mut out = Tensor::zeros(vec![n, 1, h, w]);
        let mut heard = Vec::with_capacity(k);
        let score = |kept: bool, p: f32| {
            if kept {
                let s = ((1.0 + p) / 2.0).min(1.0 - 1e-7);
                (s / (1.0 - s)).ln()
            } else {
                -100.0
            }
        };
        for i in 0..n {
            matcher.hear(&two.tree, tags.item(i))?;
            matcher.judge_classes(&two.tree, k, &mut verdicts);
            let dst = &mut out.data_mut()[i * hw..(i + 1) * hw];
            match two.pixel_rule {
                PixelRule::ArgMax => softmax_argmax(logits.item(i), k, hw, |start, best, prob| {
                    for ((d, &b), &p) in dst[start..start + best.len()].iter_mut().zip(best).zip(prob) {
                        *d = score(matches!(verdicts[b as usize], Verdict::Sounding(_)), p);
                    }
                }),
                PixelRule::HeardMass { silent_ratio } => {
                    heard.clear();
                    heard.extend(verdicts.iter().map(|v| matches!(v, Verdict::Sounding(_))));
                    heard_mass(logits.item(i), k, hw, &heard, |start, b| {
                        for ((d, &p0), &m) in dst[start..start + b.heard.len()].iter_mut().zip(b.background).zip(b.heard) {
                            *d = score(heard_mass_keeps(p0, m, silent_ratio), m);
                        }
                    });
                }
            }
        }
        Ok(out)
    }

    /// Logits `[n, K, h, w]` → masks at each source frame's size, and their objects. A two-stage
    /// package also needs each frame's tag probabilities: use [`Engine::post_process_tagged`].
    pub fn post_process(&self, clip: &ClipInput, logits: &Tensor) -> Result<Vec<FrameOutput>, Error> {
        self.post_process_tagged(clip, logits, None)
    }

    /// [`Engine::post_process`] with `tags` `[n, A]`, each frame's tag probabilities, which a
    /// two-stage package needs ([`ClipOutput::tags`]) and other packages ignore.
    pub fn post_process_tagged(&self, clip: &ClipInput, logits: &Tensor, tags: Option<&Tensor>) -> Result<Vec<FrameOutput>, Error> {
        self.post_process_with(clip, logits, tags, None)
    }

    /// [`Engine::post_process_tagged`], with the frames' masks already made (on the device) when
    /// `premade` holds them, one per frame.
    fn post_process_with(&self, clip: &ClipInput, logits: &Tensor, tags: Option<&Tensor>, premade: Option<Vec<FrameMask>>) -> Result<Vec<FrameOutput>, Error> {
        let (k, h, w) = (logits.shape()[1], logits.shape()[2], logits.shape()[3]);
        let two_stage = self.package.two_stage().is_some();
        if two_stage && tags.is_none_or(|t| t.shape().first() != Some(&clip.frames.len())) {
            return Err(Error::invalid_option(
                "tags",
                format!("a two-stage package needs one row of tag probabilities per frame ({} frames)", clip.frames.len()),
            ));
        }
        if premade.as_ref().is_some_and(|m| m.len() != clip.frames.len()) {
            return Err(Error::internal("device masks and frames differ in number"));
        }
        let mask_ready = premade.is_some();
        let mut premade = premade.map(Vec::into_iter);
        let mut post = FramePost::default();
        let mut out = Vec::with_capacity(clip.frames.len());
        for (i, frame) in clip.frames.iter().enumerate() {
            let mut mask = premade.as_mut().and_then(Iterator::next).unwrap_or_else(|| FrameMask::background(0, 0));
            let (mut objects, mut silent_objects) = (Vec::new(), Vec::new());
            let frame_tags = tags.filter(|_| two_stage).map(|t| t.item(i));
            let frame_logits = FrameLogits { logits: logits.item(i), shape: (k, h, w), size: frame.image.dimensions(), tags: frame_tags };
            self.post_frame_into(&mut post, frame_logits, mask_ready, &mut mask, &mut objects, &mut silent_objects)?;
            out.push(FrameOutput {
                index: i,
                timestamp: i as f64 + FRAME_TIME_OFFSET_S,
                source: frame.source.clone(),
                mask,
                objects,
                silent_objects,
            });
        }
        Ok(out)
    }
}
