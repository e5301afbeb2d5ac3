//! Streaming sessions: live PCM and camera frames in, one mask per sampled frame out.
//!
//! ```no_run
//! use avseg::{Session, SessionOptions};
//! let mut s = Session::new("models/tiny-tpavi", &SessionOptions::default())?;
//! # let (pcm, rgb) = (vec![0.0f32; 882], vec![0u8; 640 * 480 * 3]);
//! s.push_audio(&pcm, 44_100, 2, 0.0)?;          // interleaved stereo, capture time of sample 0
//! s.push_frame(&rgb, 640, 480, 0.9375)?;        // RGB8, capture time
//! s.process()?;                                 // runs every complete window
//! if let Some(r) = s.latest() {
//!     println!("frame at {:.2} s: {} object(s), {:?}", r.frame_timestamp, r.objects.len(), r.latency);
//! }
//! # Ok::<(), avseg::Error>(())
//! ```
//!
//! # Parts
//!
//! The session glues three parts that are tested without a model: the streaming audio front end
//! (`src/frontend/audio/stream.rs`: PCM → bounded 16 kHz ring → log-mel patches), the sampling
//! scheduler (`schedule.rs`: instants, windows, back-pressure; fixed-capacity `heapless` lists) and
//! the result ring (`results.rs`). It owns the frame buffers they index and runs the engine.
//!
//! # Design checklist
//!
//! * **Clock.** Stream time 0 (the *origin*) is the timestamp of the first audio sample. After that
//!   the audio clock is the sample count: later chunk timestamps are only checked (never earlier
//!   than the previous chunk; a drift of more than 0.1 s is logged at debug). A gap in the
//!   microphone's samples therefore shifts audio against frames: push silence to fill one.
//! * **Sampling instants.** As in training (docs/spec/audio.md §2.7, docs/spec/vision.md §4.1) the models see one frame per
//!   second: instant k is at `origin + k + 0.9375` s. Each instant takes the pushed frame nearest to
//!   it (ties go to the earlier frame). The choice is final once a frame at or after the instant
//!   arrives, so a 30 fps camera delays it by one frame period at most. Frames that no instant
//!   takes are counted in [`SessionStats::frames_skipped`] and never copied or pre-processed. Frames pushed
//!   before the first audio wait as a candidate for instant 0.
//! * **Windows.** Window w covers instants `w·hop .. w·hop + T` and starts at audio time
//!   `s_w = w·hop` s. Its patch t is the 16 kHz samples `[s_w·16000 + 15360t, … + 15600)`, turned
//!   into log-mel directly from the 16 kHz ring into the fixed `[T, 1, 96, 64]` input. Window 0
//!   emits all T results; later windows emit only their instants not emitted before (the newest
//!   `hop`). With `hop = T` (default) this is the official non-overlapping evaluation, and the
//!   first window is exactly batch mode (`Engine::run_clip`). Later windows differ from batch on
//!   purpose: batch keeps cutting 0.96 s patches from the start of the clip (window 1's patches
//!   start at 4.8 s), while the stream starts every window's audio at its own first second, the
//!   alignment the model saw for window 0.
//! * **Per-frame streams** ([`StreamMode`]): when no frame's result depends on another
//!   ([`crate::Manifest::frames_independent`]: AVSegFormer, TPAVI with `tpavi_group` 1) and the
//!   graphs leave their frame axis open ([`ModelPackage::single_frame_graphs`]), the engine is
//!   prepared for one frame per call and the session runs the window grid with T = 1 and hop = 1:
//!   instant k is segmented alone with the patch `[k, k + 0.975)` s as soon as that audio is in. A
//!   batch clip spaces its patches 0.96 s apart instead (0.16 s earlier at t = 4);
//!   `tests/stream.rs` checks each streamed frame against the T-frame graph given the same patches.
//! * **Sliding windows** ([`StreamMode::Sliding`], official TPAVI only, never chosen by `Auto`):
//!   the same grid of one frame per call and own-second patches, with the segmenter prepared as a
//!   window step (`crate::backend::cpu::tpavi::AvTpaviWindow`) and `sliding.rs` keeping each of
//!   the last T − 1 frames' share of the attention. Instant k's result is the T-frame graph's on
//!   instants k−T+1..k with their own patches; the first T − 1 instants of a run get none unless
//!   padded ([`StreamMode::SlidingPadded`]).
//! * **Back-pressure.** The instants waiting for a window (from the oldest one the next window needs
//!   up to the newest assigned) live in `frame_queue` pre-processed slots. When a new instant does
//!   not fit, the oldest window is abandoned: its instants that never got a result are counted in
//!   [`SessionStats::frames_dropped`] (and logged at debug), and the session moves on towards the
//!   newest frames. Audio is bounded the same way: if it runs more than the ring's span ahead of the
//!   next window (no frames arriving), the oldest windows are abandoned. Nothing queues without bound.
//! * **Memory.** `new()` sizes everything it can: the pre-processed frame slots
//!   `[frame_queue][3·H·W]`, the window tensors, the 16 kHz ring (window span + queue + hop + 4 s), the log-mel scratch, the mono
//!   scratch (50 ms at the highest rate), and the result ring. The first `push_audio` builds the
//!   resampler for its rate (a later different rate is an error). Kept frames wait raw
//!   (`frame_queue + 2` buffers of `w·h·3` bytes: 9 MB at 640×480 with the default queue of 10, so
//!   use a smaller queue for 1080p on small boards) and are resized in `process()`; they and the
//!   result masks grow only when a larger camera frame than any before arrives. After that,
//!   `push_audio` and `push_frame` allocate nothing (`tests/stream_alloc.rs` counts), and neither
//!   does avseg's own part of `process()`: it allocates only inside tract (each node's output) and
//!   fast_image_resize (filter coefficients per resize), which that test measures alone and holds
//!   the total to.
//! * **Results.** A ring of `max(T, frame_queue)` results. [`Session::latest`] borrows the newest;
//!   [`Session::pop_result`] moves out the oldest not yet taken. When the ring is full the oldest
//!   untaken result is overwritten (counted in [`SessionStats::results_overwritten`]), so a caller
//!   that only reads `latest()` never needs to pop.
//! * **Latency.** [`StreamResult::latency`] runs from the `push_frame` call of the chosen frame to
//!   the result. For window-based models the older frames of a window include the wait for the
//!   window's newest frame (up to T−1 s at hop = T).
//! * **End of stream.** [`Session::finish`] flushes the resampler (zero tail, as batch), gives a
//!   still-waiting frame the instants it is nearest to, and completes the last window the way batch
//!   mode does: missing frames repeat the last real one, missing patches follow the package's
//!   padding policy (repeat the last patch, or zeros); results are emitted for real frames only.


mod results;
mod schedule;
mod sliding;

use std::path::Path;
use std::time::{Duration, Instant};

use image::RgbImage;

use self::results::ResultRing;
use self::schedule::{Assignments, Scheduler, MAX_FRAME_QUEUE};
use self::sliding::SlidingWindow;
use super::{raw_frame, CallShape, Engine, EngineOptions, FrameLogits, FramePost, StageTimes, FRAME_TIME_OFFSET_S};
use crate::backend::{RawFrame, MAX_FRAMES_PER_CALL};
use crate::error::Error;
use crate::frontend::audio::patches::PATCH_LEN;
use crate::frontend::audio::stream::{AudioStream, PatchSource, RING_HEADROOM};
use crate::frontend::audio::{PatchPadding, MIN_SAMPLES_16K, PATCH_FRAMES, MEL_BANDS, TARGET_RATE};
use crate::model::ModelPackage;
use crate::post::mask::FrameMask;
use crate::post::objects::SoundingObject;
use crate::tensor::Tensor;

/// 16 kHz samples between the starts of consecutive patches (0.96 s).
const PATCH_HOP_16K: u64 = 15_360;
/// 16 kHz samples per second: windows start on whole seconds.
const SECOND_16K: u64 = TARGET_RATE as u64;
/// Camera channels, tightly packed RGB8.
const RGB: usize = 3;

/// How a session turns sampled frames into model calls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StreamMode {
    /// One frame per call when the package allows it ([`ModelPackage::single_frame_graphs`]) and
    /// `hop` is left at 0; otherwise windows.
    #[default]
    Auto,
    /// Windows of the model's T frames, advanced by `hop` (the official grouping).
    Windows,
    /// Each sampled frame is segmented alone, as soon as its own audio patch is in: one frame of
    /// compute per result. An error for a package whose frames are coupled (official TPAVI).
    PerFrame,
    /// Official TPAVI (frames coupled in groups of T): each sampled frame's result comes from the
    /// window of the T instants ending at it, as soon as its own audio patch is in, for one frame
    /// of compute (each frame's part of the attention is kept; spec §6.6). Instant k pairs with the
    /// patch `[k, k + 0.975)` s, as per frame. The first T − 1 instants of a run (the stream's
    /// start, or after a dropped instant) get no result: TPAVI was never trained on fewer frames.
    /// An error for other packages. `Auto` never picks it: it changes which frames share
    /// attention from the official grouping.
    Sliding,
    /// As [`StreamMode::Sliding`], with results from the first instant on: a window not yet full
    /// repeats the run's first frame in the missing places (as batch mode repeats a short clip's
    /// last frame).
    SlidingPadded,
}

/// How a session runs. `0` in `hop` or `frame_queue` means the model's default.
#[derive(Clone, Debug)]
pub struct SessionOptions {
    /// Backend, threads, threshold override and minimum object area, as for [`Engine`].
    pub engine: EngineOptions,
    /// Window advance in frames (sampling instants), `1..=T`; 0 means T.
    pub hop: usize,
    /// Pre-processed frames that may wait for a window; full means the oldest are dropped. At least
    /// T (1 per frame); 0 means 2·T of the model's T.
    pub frame_queue: usize,
    /// Windows or one frame per call; see [`StreamMode`].
    pub mode: StreamMode,
}

impl Default for SessionOptions {
    fn default() -> Self {
        Self { engine: EngineOptions::default(), hop: 0, frame_queue: 0, mode: StreamMode::Auto }
    }
}

/// The result for one sampled frame.
#[derive(Clone, Debug)]
pub struct StreamResult {
    /// The sampling instant's number: 0 at `origin + 0.9375` s, then one per second. A gap means
    /// frames were dropped (or never arrived).
    pub sequence: u64,
    /// Capture timestamp of the frame used (as pushed).
    pub frame_timestamp: f64,
    /// At the pushed frame's size.
    pub mask: FrameMask,
    /// The sounding objects found in the mask.
    pub objects: Vec<SoundingObject>,
    /// Two-stage packages: objects found but supported by no heard sound, dropped from `objects`
    /// and the mask (for debugging; empty for other packages).
    pub silent_objects: Vec<SoundingObject>,
    /// From the `push_frame` call of this frame to the result.
    pub latency: Duration,
    /// Capture time (s, the audio clock) at which this frame's own audio patch ends: the earliest
    /// moment any result for it could exist. Stream lag = when the result is ready − this.
    pub patch_end: f64,
}

impl StreamResult {
    fn empty() -> Self {
        Self {
            sequence: 0,
            frame_timestamp: 0.0,
            mask: FrameMask::background(0, 0),
            objects: Vec::new(),
            silent_objects: Vec::new(),
            latency: Duration::ZERO,
            patch_end: 0.0,
        }
    }
}

/// Counters since the session started.
#[derive(Clone, Debug, Default)]
pub struct SessionStats {
    /// Frames accepted by `push_frame`.
    pub frames_pushed: u64,
    /// Frames taken for at least one sampling instant (pre-processed into the queue).
    pub frames_used: u64,
    /// Frames no sampling instant took (e.g. 29 of every 30 at 30 fps).
    pub frames_skipped: u64,
    /// Frames taken for an instant but discarded by back-pressure before they got a result.
    pub frames_dropped: u64,
    /// Input sample frames (one per channel group) pushed.
    pub audio_samples: u64,
    /// Windows of T frames run through the graphs.
    pub windows: u64,
    /// Results produced (one per sampled frame that got a mask).
    pub results: u64,
    /// Results overwritten in the ring before anyone popped them.
    pub results_overwritten: u64,
}

/// A live audio-visual stream against one loaded package. `Send`; not `Sync` (one owner).
///
/// The glue of three parts, each with its own tests: the streaming audio front end
/// (`src/frontend/audio/stream.rs`), the sampling scheduler (`schedule.rs`: which frame each
/// instant takes, which window runs next, back-pressure) and the result ring (`results.rs`). This
/// type owns the buffers they index (raw and pre-processed frames, the window tensors) and runs the
/// engine.
pub struct Session {
    /// Prepared for T frames per call, or 1 in per-frame mode.
    engine: Engine,
    /// The mode in use (never `Auto`).
    mode: StreamMode,
    /// Sliding TPAVI windows: the older frames' share of the attention.
    window: Option<SlidingWindow>,
    /// Frames per model call: the model's T, or 1 in per-frame mode.
    t: usize,
    hop: usize,
    queue_cap: usize,
    padding: PatchPadding,
    finished: bool,

    audio: AudioStream,
    schedule: Scheduler,
    assignments: Assignments,

    frame_len: usize,
    /// Pre-processed frames `[frame_queue][3·H·W]`, filled when a window first needs them.
    slots: Vec<f32>,
    /// The kept camera frames, raw until a window needs them.
    raw_slots: Vec<RgbImage>,
    current: RgbImage,
    held_image: RgbImage,
    /// Bytes every raw frame buffer can hold without reallocating.
    raw_capacity: usize,

    frames_in: Tensor,
    patches_in: Tensor,
    /// The newest window's logits, kept so each window reuses their buffer, and the sequence of
    /// its first frame (None while no window has completed, or after a failed one).
    logits: Tensor,
    last_logits_first: Option<u64>,
    post: FramePost,
    results: ResultRing,
    windows: u64,
    results_made: u64,
    frames_pushed: u64,
    times: StageTimes,
}

fn rgb_image(buf: &mut RgbImage, width: u32, height: u32, data: &[u8]) {
    // Rebuilding the image around its own Vec keeps the allocation; it only grows for a larger frame.
    let mut raw = std::mem::take(buf).into_raw();
    raw.clear();
    raw.extend_from_slice(data);
    *buf = RgbImage::from_raw(width, height, raw).expect("length checked by the caller");
}

impl Session {
    /// Loads the package in `model_dir` and prepares an empty stream. Fails if the package cannot
    /// be loaded, `hop`/`frame_queue` are out of range for the model's T, or per-frame mode is
    /// asked of a package whose frames are coupled.
    pub fn new(model_dir: impl AsRef<Path>, options: &SessionOptions) -> Result<Session, Error> {
        let sliding = matches!(options.mode, StreamMode::Sliding | StreamMode::SlidingPadded);
        let engine = Engine::load_for(model_dir, &options.engine, |package| {
            let no_hop = |mode: &str| Err(Error::invalid_option("hop", format!("hop {} has no meaning {mode}; leave it 0", options.hop)));
            let per_frame = match options.mode {
                StreamMode::Sliding | StreamMode::SlidingPadded if options.hop > 1 => return no_hop("in sliding windows"),
                StreamMode::Sliding | StreamMode::SlidingPadded => return CallShape::sliding(package, "mode"),
                StreamMode::PerFrame if options.hop > 1 => return no_hop("per frame"),
                StreamMode::PerFrame => return CallShape::per_frame(package, "mode"),
                StreamMode::Windows => false,
                StreamMode::Auto if options.hop != 0 => false,
                StreamMode::Auto => match package.single_frame_graphs() {
                    Ok(()) => true,
                    Err(why) => {
                        log::debug!("stream in windows of {} frames: {why}", package.frames_per_clip());
                        false
                    }
                },
            };
            Ok(CallShape { frames_per_call: per_frame.then_some(1), tpavi_window: None })
        })?;
        let model_t = engine.package.frames_per_clip();
        let t = engine.frames_per_call();
        let window = match sliding {
            true => Some(SlidingWindow::new(model_t, &engine.window_blocks(), options.mode == StreamMode::SlidingPadded)),
            false => None,
        };
        let mode = match (sliding, t < model_t) {
            (true, _) => options.mode,
            (false, true) => StreamMode::PerFrame,
            (false, false) => StreamMode::Windows,
        };
        let hop = if options.hop == 0 { t } else { options.hop };
        if hop > t {
            return Err(Error::invalid_option("hop", format!("session hop {hop} must be between 1 and the model's T = {t} frames")));
        }
        let queue_cap = if options.frame_queue == 0 { 2 * model_t } else { options.frame_queue };
        if queue_cap < t || queue_cap > MAX_FRAME_QUEUE {
            return Err(Error::invalid_option(
                "frame_queue",
                format!("session frame_queue {queue_cap} must hold at least one window (T = {t} frames) and at most {MAX_FRAME_QUEUE}"),
            ));
        }
        let manifest = engine.package.manifest();
        let (vw, vh) = (manifest.vision.width as usize, manifest.vision.height as usize);
        let padding = manifest.audio.patch_padding;
        let frame_len = RGB * vw * vh;
        let window_span = PATCH_HOP_16K as usize * (t - 1) + MIN_SAMPLES_16K;
        let ring_cap = window_span + (queue_cap + hop + 4) * SECOND_16K as usize + RING_HEADROOM;
        Ok(Session {
            mode,
            window,
            t,
            hop,
            queue_cap,
            padding,
            finished: false,
            audio: AudioStream::new(ring_cap),
            schedule: Scheduler::new(t, hop, queue_cap),
            assignments: Assignments::new(),
            frame_len,
            slots: vec![0.0; queue_cap * frame_len],
            raw_slots: (0..queue_cap).map(|_| RgbImage::new(0, 0)).collect(),
            current: RgbImage::new(0, 0),
            held_image: RgbImage::new(0, 0),
            raw_capacity: 0,
            frames_in: Tensor::zeros(vec![t, RGB, vh, vw]),
            patches_in: Tensor::zeros(vec![t, 1, PATCH_FRAMES, MEL_BANDS]),
            logits: Tensor::zeros(Vec::new()),
            last_logits_first: None,
            post: FramePost::default(),
            results: ResultRing::new(queue_cap.max(t)),
            windows: 0,
            results_made: 0,
            frames_pushed: 0,
            times: StageTimes::default(),
            engine,
        })
    }

    /// The loaded model package.
    pub fn package(&self) -> &ModelPackage {
        &self.engine.package
    }

    /// Frames per model call: the model's T, or 1 when each frame is segmented alone.
    pub fn window_frames(&self) -> usize {
        self.t
    }

    /// True when each model call segments one sampled frame ([`StreamMode::PerFrame`], `Auto` on
    /// a package of independent frames, or sliding windows).
    pub fn per_frame(&self) -> bool {
        self.mode != StreamMode::Windows
    }

    /// The mode the session runs in: what was asked, or what `Auto` chose (never `Auto`).
    pub fn mode(&self) -> StreamMode {
        self.mode
    }

    /// Window advance in frames.
    pub fn hop(&self) -> usize {
        self.hop
    }

    /// Capacity of the pending-frame queue.
    pub fn frame_queue(&self) -> usize {
        self.queue_cap
    }

    /// Capacity of the result ring.
    pub fn result_capacity(&self) -> usize {
        self.results.capacity()
    }

    /// Time per stage, summed over the session (vision = pre-processing of the kept frames).
    pub fn stage_times(&self) -> &StageTimes {
        &self.times
    }

    /// Logits `[T, K, h, w]` of the most recent window and the sequence number of its first frame;
    /// for checks against batch mode.
    pub fn last_window_logits(&self) -> Option<(u64, &Tensor)> {
        self.last_logits_first.map(|first| (first, &self.logits))
    }

    /// A snapshot of the counters since the session started.
    pub fn stats(&self) -> SessionStats {
        let frames = self.schedule.counts();
        SessionStats {
            frames_pushed: self.frames_pushed,
            frames_used: frames.used,
            frames_skipped: frames.skipped,
            frames_dropped: frames.dropped,
            audio_samples: self.audio.input_frames(),
            windows: self.windows,
            results: self.results_made,
            results_overwritten: self.results.overwritten(),
        }
    }

    fn check_open(&self) -> Result<(), Error> {
        if self.finished {
            Err(Error::stream("session", "already finished; create a new one for a new stream"))
        } else {
            Ok(())
        }
    }

    /// Interleaved PCM, any rate (1000..=384000) and channel count (1..=32); `timestamp` = capture
    /// time (s) of the first sample. A rate or channel change mid-stream is an error. NaN/inf is an
    /// error (nothing of the chunk is used). An empty slice is accepted and ignored.
    pub fn push_audio(&mut self, interleaved: &[f32], rate: u32, channels: usize, timestamp: f64) -> Result<(), Error> {
        self.check_open()?;
        // Only audio the next window still needs is kept.
        self.audio.keep_from(self.schedule.window_start_seconds() * SECOND_16K);
        let lost = self.audio.push(interleaved, rate, channels, timestamp).map_err(|e| Error::stream("push_audio", format!("{e}")))?;
        if let Some(origin) = self.audio.origin() {
            self.schedule.set_origin(origin);
        }
        self.after_audio_loss(lost);
        Ok(())
    }

    /// Audio ran further ahead of the frames than the ring holds: windows whose audio is gone are
    /// abandoned.
    fn after_audio_loss(&mut self, lost_before: Option<u64>) {
        if let Some(sample) = lost_before {
            log::debug!("audio is {:.1} s ahead of the frames; abandoning the windows it no longer covers", (self.audio.end() - sample) as f64 / 16e3);
            self.schedule.audio_lost_before(sample, SECOND_16K);
        }
    }

    /// RGB8, tightly packed (`len == width·height·3`), capture timestamp in seconds (must not go
    /// backwards). Only frames nearest to a sampling instant are pre-processed; others are counted
    /// as skipped.
    pub fn push_frame(&mut self, rgb: &[u8], width: u32, height: u32, timestamp: f64) -> Result<(), Error> {
        self.check_open()?;
        let pushed_at = Instant::now();
        if width == 0 || height == 0 {
            return Err(Error::stream("push_frame", format!("frame is {width}x{height}; it must be at least 1x1")));
        }
        let want = (width as usize).checked_mul(height as usize).and_then(|n| n.checked_mul(RGB));
        if want != Some(rgb.len()) {
            return Err(Error::stream("push_frame", format!(
                "{} bytes for a {width}x{height} RGB8 frame; expected {}",
                rgb.len(),
                want.map_or("more than fits in memory".to_string(), |n| n.to_string())
            )));
        }
        if !timestamp.is_finite() {
            return Err(Error::stream("push_frame", format!("timestamp {timestamp} is not finite")));
        }
        self.schedule
            .frame(timestamp, (width, height), pushed_at, &mut self.assignments)
            .map_err(|e| Error::stream("push_frame", e))?;
        self.frames_pushed += 1;
        if rgb.len() > self.raw_capacity {
            // A larger camera frame than before: grow every raw buffer now, once, rather than
            // one slot at a time over the next seconds.
            self.raw_capacity = rgb.len();
            for img in self.raw_slots.iter_mut().chain([&mut self.current, &mut self.held_image]) {
                let (w, h) = img.dimensions();
                let mut raw = std::mem::take(img).into_raw();
                raw.reserve_exact(rgb.len().saturating_sub(raw.len()));
                *img = RgbImage::from_raw(w, h, raw).expect("contents unchanged");
            }
        }
        rgb_image(&mut self.current, width, height, rgb);
        // Resizing waits for `process()`: fast_image_resize allocates its filter coefficients on
        // every call, and frames dropped by back-pressure are never resized at all.
        self.copy_assigned();
        std::mem::swap(&mut self.current, &mut self.held_image);
        Ok(())
    }

    /// Copies the frames the scheduler just assigned into their queue slots.
    fn copy_assigned(&mut self) {
        for a in &self.assignments {
            let img = if a.from_held { &self.held_image } else { &self.current };
            rgb_image(&mut self.raw_slots[a.slot], img.width(), img.height(), img.as_raw());
        }
    }

    fn window_audio_end(&self) -> u64 {
        self.schedule.window_start_seconds() * SECOND_16K + PATCH_HOP_16K * (self.t as u64 - 1) + MIN_SAMPLES_16K as u64
    }

    /// Runs every window that is complete; returns how many new results were produced.
    pub fn process(&mut self) -> Result<usize, Error> {
        let mut produced = 0;
        while self.audio.origin().is_some()
            && self.schedule.window_frames_ready()
            && self.audio.end() >= self.window_audio_end()
        {
            let real_end = self.schedule.window_base() + self.t as u64;
            produced += self.run_window(real_end)?;
        }
        Ok(produced)
    }

    /// End of stream: completes the last window the way batch mode does and processes it.
    pub fn finish(&mut self) -> Result<usize, Error> {
        if self.finished {
            return Ok(0);
        }
        // Whatever happens below, the stream has ended.
        self.finished = true;
        if self.audio.origin().is_none() {
            if self.frames_pushed > 0 {
                return Err(Error::stream("finish", "frames were pushed but no audio; nothing can be segmented"));
            }
            return Ok(0);
        }
        self.audio.keep_from(self.schedule.window_start_seconds() * SECOND_16K);
        let lost = self.audio.flush().map_err(|e| Error::stream("finish", format!("{e}")))?;
        self.after_audio_loss(lost);
        // A waiting frame takes every remaining instant it is nearest to (no later frame exists).
        self.schedule.finish(&mut self.assignments);
        self.copy_assigned();
        let mut produced = self.process()?;
        while self.schedule.emitted_upto() < self.schedule.next_instant() {
            let base = self.schedule.window_base();
            let real_end = self.schedule.next_instant().min(base + self.t as u64);
            if real_end <= base {
                break;
            }
            produced += self.run_window(real_end)?;
        }
        self.schedule.retire_held();
        Ok(produced)
    }

    /// Runs the next window. Instants at or past `real_end` (only at `finish`) repeat the last
    /// real frame and get no result; patches past the end of the audio follow the package padding.
    fn run_window(&mut self, real_end: u64) -> Result<usize, Error> {
        let t = self.t;
        let base = self.schedule.window_base();
        let s0 = self.schedule.window_start_seconds() * SECOND_16K;

        let start = Instant::now();
        let mut real_patches = 0usize;
        for p in 0..t {
            let dst = &mut self.patches_in.data_mut()[p * PATCH_LEN..(p + 1) * PATCH_LEN];
            match self.audio.patch_into(s0 + PATCH_HOP_16K * p as u64, dst, self.padding) {
                Some(PatchSource::Audio) => real_patches += 1,
                Some(PatchSource::Padded) => {}
                // Cannot happen with the keep-from rule above; refuse rather than misalign.
                None if s0 < self.audio.start() => {
                    return Err(Error::internal(format!("audio for window {} was discarded", self.schedule.window())))
                }
                None => {
                    return Err(Error::stream("finish", format!(
                        "the stream has {:.3} s of audio; at least 0.975 s is needed for one VGGish patch",
                        self.audio.end() as f64 / TARGET_RATE as f64
                    )))
                }
            }
        }
        if real_patches == 0 && !self.audio.has_patch() {
            return Err(Error::stream("finish", "not enough audio for one VGGish patch (0.975 s)"));
        }
        self.times.audio_frontend += start.elapsed();

        let start = Instant::now();
        let last_real = real_end.min(self.schedule.next_instant()).saturating_sub(1).max(base);
        // With pre-processing on the device, the window's frames go to the runner as they are
        // (sliding windows run on tract only, so they never are).
        let on_device = self.engine.pre_post_on_device() && self.window.is_none();
        let mut raw: heapless::Vec<RawFrame<'_>, MAX_FRAMES_PER_CALL> = heapless::Vec::new();
        for i in 0..t {
            let k = (base + i as u64).min(last_real);
            let slot = self.schedule.slot_of(k);
            let range = slot * self.frame_len..(slot + 1) * self.frame_len;
            match self.schedule.slot_mut(slot) {
                Some(info) if on_device => {
                    let image = &self.raw_slots[slot];
                    if image.width() == 0 || image.height() == 0 {
                        return Err(Error::stream("process", format!("frame at {:.3} s is {}x{}, empty", info.timestamp, image.width(), image.height())));
                    }
                    raw.push(raw_frame(image)).map_err(|_| Error::internal(format!("{t} frames per call, over {MAX_FRAMES_PER_CALL}")))?;
                    continue;
                }
                Some(info) if !info.prepped => {
                    self.engine
                        .vision
                        .preprocess_into(&self.raw_slots[slot], &mut self.slots[range.clone()])
                        .map_err(|e| Error::stream("process", format!("frame at {:.3} s: {e}", info.timestamp)))?;
                    info.prepped = true;
                }
                Some(_) => {}
                None => return Err(Error::internal(format!("no frame for instant {k} of window {}", self.schedule.window()))),
            }
            self.frames_in.data_mut()[i * self.frame_len..(i + 1) * self.frame_len].copy_from_slice(&self.slots[range]);
        }
        self.times.vision_frontend += start.elapsed();

        self.last_logits_first = None;
        let emit = match &mut self.window {
            None if on_device => {
                self.engine.infer_window_frames_into(&raw, &self.patches_in, &mut self.times, &mut self.logits)?;
                true
            }
            None => {
                self.engine.infer_window_into(&self.frames_in, &self.patches_in, &mut self.times, &mut self.logits)?;
                true
            }
            Some(window) => {
                let emit = window.prepare(base);
                let (weight, rest, newest) = window.io();
                let run =
                    self.engine.infer_window_step_into(&self.frames_in, &self.patches_in, weight, rest, &mut self.times, &mut self.logits, newest);
                if let Err(e) = run {
                    window.reset();
                    return Err(e);
                }
                window.commit(base);
                emit
            }
        };
        drop(raw);
        let logits = &self.logits;
        let shape = logits.shape();
        let (k, h, w) = (shape[1], shape[2], shape[3]);

        let start = Instant::now();
        let mut produced = 0;
        let origin = self.audio.origin().unwrap_or(0.0);
        for i in 0..t {
            let inst = base + i as u64;
            if !emit || inst < self.schedule.emitted_upto() || inst >= real_end {
                continue;
            }
            let Some(info) = self.schedule.slot(self.schedule.slot_of(inst)).copied() else { continue };
            let r = self.results.push_slot();
            if on_device {
                self.engine.device_mask_into(i, (info.width, info.height), &mut r.mask)?;
            }
            // A two-stage package's tags for this frame: the audio graph's row i.
            let tags = self.engine.package.two_stage().map(|_| self.engine.audio_embedding.item(i));
            let frame = FrameLogits { logits: logits.item(i), shape: (k, h, w), size: (info.width, info.height), tags };
            self.engine.post_frame_into(&mut self.post, frame, on_device, &mut r.mask, &mut r.objects, &mut r.silent_objects)?;
            r.sequence = inst;
            r.frame_timestamp = info.timestamp;
            r.latency = info.pushed_at.elapsed();
            r.patch_end = origin + (s0 + PATCH_HOP_16K * i as u64 + MIN_SAMPLES_16K as u64) as f64 / TARGET_RATE as f64;
            produced += 1;
        }
        self.times.post += start.elapsed();

        self.schedule.complete_window(real_end);
        self.last_logits_first = Some(base);
        self.windows += 1;
        self.results_made += produced as u64;
        Ok(produced)
    }

    /// Newest result, if any (it stays readable after `pop_result` took it).
    pub fn latest(&self) -> Option<&StreamResult> {
        self.results.latest()
    }

    /// Results not yet taken, oldest first. The ring holds [`Session::result_capacity`] results
    /// (`max(T, frame_queue)`); when full, the oldest untaken one is overwritten and counted in
    /// [`SessionStats::results_overwritten`]. Moving the result out leaves an empty slot whose
    /// buffers are allocated again when it is next written; allocation-free callers use
    /// [`Session::latest`].
    pub fn pop_result(&mut self) -> Option<StreamResult> {
        self.results.pop()
    }
}

#[allow(dead_code)]
fn assert_send() {
    fn is_send<T: Send>() {}
    is_send::<Session>();
}
