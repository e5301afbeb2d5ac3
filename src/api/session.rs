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
//!   `push_audio` and `push_frame` allocate nothing (`tests/stream_alloc.rs` counts). `process()`
//!   allocates inside the backend (`tract` builds its outputs) and in object extraction.
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

use std::path::Path;
use std::time::{Duration, Instant};

use image::RgbImage;

use super::{Engine, EngineOptions, StageTimes, FRAME_TIME_OFFSET_S};
use crate::error::Error;
use crate::frontend::audio::logmel::LogMel;
use crate::frontend::audio::patches::PATCH_LEN;
use crate::frontend::audio::resample::{self, Resampler16k};
use crate::frontend::audio::{check_finite, PatchPadding, MEL_BANDS, MIN_SAMPLES_16K, PATCH_FRAMES, TARGET_RATE};
use crate::io::audio::mix_to_mono;
use crate::model::ModelPackage;
use crate::post::mask::{FrameMask, MaskBuilder};
use crate::post::objects::SoundingObject;
use crate::tensor::Tensor;

/// 16 kHz samples between the starts of consecutive patches (0.96 s).
const PATCH_HOP_16K: u64 = 15_360;
/// Input is mixed and resampled in pieces of at most this long, so the scratch buffers have a
/// fixed size whatever chunk the caller pushes.
const PIECE_SECONDS_DIV: u32 = 20;
/// Free space kept at the end of the 16 kHz ring before each piece: one piece (800 samples) plus
/// whatever the resampler releases at once (a few blocks, or its zero tail at `finish`).
const RING_HEADROOM: usize = 16_000;
/// Audio timestamps further than this from the sample clock are logged.
const DRIFT_LOG_S: f64 = 0.1;
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

#[derive(Clone, Copy, Debug)]
struct SlotInfo {
    timestamp: f64,
    /// The slot's pre-processed tensor is up to date (done at the first window that uses it).
    prepped: bool,
    width: u32,
    height: u32,
    pushed_at: Instant,
}

/// The newest pushed frame, kept raw until we know whether an instant wants it.
#[derive(Clone, Copy, Debug)]
struct Held {
    timestamp: f64,
    pushed_at: Instant,
    used: bool,
}

/// A live audio-visual stream against one loaded package. `Send`; not `Sync` (one owner).
pub struct Session {
    /// Prepared for T frames per call, or 1 in per-frame mode.
    engine: Engine,
    per_frame: bool,
    /// Frames per model call: the model's T, or 1 in per-frame mode.
    t: usize,
    hop: usize,
    queue_cap: usize,
    padding: PatchPadding,
    finished: bool,

    // Audio.
    rate: u32,
    channels: usize,
    resampler: Option<Resampler16k>,
    origin: Option<f64>,
    last_audio_ts: f64,
    input_frames: u64,
    mono: Vec<f32>,
    /// 16 kHz samples; `ring[0]` is absolute sample `ring_base` of the stream.
    ring: Vec<f32>,
    ring_base: u64,
    log_mel: LogMel,
    mel_scratch: Vec<f32>,
    last_patch: Vec<f32>,
    have_patch: bool,

    // Frames.
    frame_len: usize,
    /// Pre-processed frames `[frame_queue][3·H·W]`, filled when a window first needs them.
    slots: Vec<f32>,
    /// The kept camera frames, raw until a window needs them.
    raw_slots: Vec<RgbImage>,
    slot_info: Vec<Option<SlotInfo>>,
    current: RgbImage,
    held_image: RgbImage,
    held: Option<Held>,
    /// Bytes every raw frame buffer can hold without reallocating.
    raw_capacity: usize,
    last_frame_ts: Option<f64>,
    /// First instant without a frame yet.
    next_instant: u64,
    /// Next window to run.
    window: u64,
    /// First instant without a result (emitted or dropped).
    emitted_upto: u64,

    // Inference and results.
    frames_in: Tensor,
    patches_in: Tensor,
    last_logits: Option<Tensor>,
    last_logits_first: u64,
    builder: MaskBuilder,
    results: Vec<StreamResult>,
    res_head: usize,
    res_len: usize,
    latest: Option<usize>,
    stats: SessionStats,
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
    /// be loaded or `hop`/`frame_queue` are out of range for the model's T.
    pub fn new(model_dir: impl AsRef<Path>, options: &SessionOptions) -> Result<Session, Error> {
        let engine = Engine::load_for(model_dir, &options.engine, |package| {
            let single = package.single_frame_graphs();
            let per_frame = match options.mode {
                StreamMode::Windows => false,
                StreamMode::PerFrame if options.hop > 1 => {
                    return Err(Error::invalid_option("hop", format!("hop {} has no meaning per frame; leave it 0", options.hop)))
                }
                StreamMode::PerFrame => {
                    let why = |why| Error::invalid_option("mode", format!("cannot segment one frame at a time: {why}"));
                    single.map_err(why)?;
                    true
                }
                StreamMode::Auto if options.hop != 0 => false,
                StreamMode::Auto => match single {
                    Ok(()) => true,
                    Err(why) => {
                        log::debug!("stream in windows of {} frames: {why}", package.frames_per_clip());
                        false
                    }
                },
            };
            Ok(per_frame.then_some(1))
        })?;
        let model_t = engine.package.frames_per_clip();
        let t = engine.frames_per_call();
        let per_frame = t < model_t;
        let hop = if options.hop == 0 { t } else { options.hop };
        if hop > t {
            return Err(Error::invalid_option("hop", format!("session hop {hop} must be between 1 and the model's T = {t} frames")));
        }
        let queue_cap = if options.frame_queue == 0 { 2 * model_t } else { options.frame_queue };
        if queue_cap < t {
            return Err(Error::invalid_option(
                "frame_queue",
                format!("session frame_queue {queue_cap} must hold at least one window (T = {t} frames)"),
            ));
        }
        let manifest = engine.package.manifest();
        let (vw, vh) = (manifest.vision.width as usize, manifest.vision.height as usize);
        let padding = manifest.audio.patch_padding;
        let frame_len = RGB * vw * vh;
        let window_span = PATCH_HOP_16K as usize * (t - 1) + MIN_SAMPLES_16K;
        let ring_cap = window_span + (queue_cap + hop + 4) * TARGET_RATE as usize + RING_HEADROOM;
        let res_cap = queue_cap.max(t);
        let mel_frames = PATCH_FRAMES * MEL_BANDS;
        Ok(Session {
            per_frame,
            t,
            hop,
            queue_cap,
            padding,
            finished: false,
            rate: 0,
            channels: 0,
            resampler: None,
            origin: None,
            last_audio_ts: f64::NEG_INFINITY,
            input_frames: 0,
            mono: Vec::with_capacity((resample::MAX_RATE / PIECE_SECONDS_DIV) as usize + 1),
            ring: Vec::with_capacity(ring_cap),
            ring_base: 0,
            log_mel: LogMel::new(),
            mel_scratch: Vec::with_capacity(mel_frames),
            last_patch: vec![0.0; PATCH_LEN],
            have_patch: false,
            frame_len,
            slots: vec![0.0; queue_cap * frame_len],
            raw_slots: (0..queue_cap).map(|_| RgbImage::new(0, 0)).collect(),
            slot_info: vec![None; queue_cap],
            current: RgbImage::new(0, 0),
            held_image: RgbImage::new(0, 0),
            held: None,
            raw_capacity: 0,
            last_frame_ts: None,
            next_instant: 0,
            window: 0,
            emitted_upto: 0,
            frames_in: Tensor::zeros(vec![t, RGB, vh, vw]),
            patches_in: Tensor::zeros(vec![t, 1, PATCH_FRAMES, MEL_BANDS]),
            last_logits: None,
            last_logits_first: 0,
            builder: MaskBuilder::new(),
            results: (0..res_cap).map(|_| StreamResult::empty()).collect(),
            res_head: 0,
            res_len: 0,
            latest: None,
            stats: SessionStats::default(),
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

    /// True when each sampled frame is segmented alone ([`StreamMode::PerFrame`], or `Auto` on a
    /// package of independent frames).
    pub fn per_frame(&self) -> bool {
        self.per_frame
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
        self.results.len()
    }

    /// Time per stage, summed over the session (vision = pre-processing of the kept frames).
    pub fn stage_times(&self) -> &StageTimes {
        &self.times
    }

    /// Logits `[T, K, h, w]` of the most recent window and the sequence number of its first frame;
    /// for checks against batch mode.
    pub fn last_window_logits(&self) -> Option<(u64, &Tensor)> {
        self.last_logits.as_ref().map(|l| (self.last_logits_first, l))
    }

    /// A snapshot of the counters since the session started.
    pub fn stats(&self) -> SessionStats {
        self.stats.clone()
    }

    fn check_open(&self) -> Result<(), Error> {
        if self.finished {
            Err(Error::stream("session", "already finished; create a new one for a new stream"))
        } else {
            Ok(())
        }
    }

    fn instant_time(&self, k: u64) -> f64 {
        self.origin.unwrap_or(0.0) + k as f64 + FRAME_TIME_OFFSET_S
    }

    fn window_start_16k(&self, w: u64) -> u64 {
        w * self.hop as u64 * TARGET_RATE as u64
    }

    /// Interleaved PCM, any rate (1000..=384000) and channel count (1..=32); `timestamp` = capture
    /// time (s) of the first sample. A rate or channel change mid-stream is an error. NaN/inf is an
    /// error (nothing of the chunk is used). An empty slice is accepted and ignored.
    pub fn push_audio(&mut self, interleaved: &[f32], rate: u32, channels: usize, timestamp: f64) -> Result<(), Error> {
        self.check_open()?;
        if interleaved.is_empty() {
            return Ok(());
        }
        if !(1..=32).contains(&channels) {
            return Err(Error::stream("push_audio", format!("audio channel count {channels} must be between 1 and 32")));
        }
        resample::check_rate(rate).map_err(|e| Error::stream("push_audio", format!("{e}")))?;
        if !timestamp.is_finite() {
            return Err(Error::stream("push_audio", format!("timestamp {timestamp} is not finite")));
        }
        if interleaved.len() % channels != 0 {
            return Err(Error::stream("push_audio", format!(
                "{} samples are not a whole number of {channels}-channel frames",
                interleaved.len()
            )));
        }
        if let Err(e) = check_finite(interleaved) {
            return Err(Error::stream("push_audio", format!("{e}")));
        }
        match self.origin {
            None => {
                if rate != TARGET_RATE {
                    self.resampler = Some(Resampler16k::new(rate).map_err(|e| Error::stream("push_audio", format!("{e}")))?);
                }
                self.rate = rate;
                self.channels = channels;
                self.origin = Some(timestamp);
            }
            Some(origin) => {
                if rate != self.rate || channels != self.channels {
                    return Err(Error::stream("push_audio", format!(
                        "the stream is {} Hz, {} channel(s); got {rate} Hz, {channels} channel(s). \
                         A session keeps one format: finish it and start a new session",
                        self.rate, self.channels
                    )));
                }
                if timestamp < self.last_audio_ts {
                    return Err(Error::stream("push_audio", format!(
                        "timestamp {timestamp:.6} s goes backwards (previous chunk at {:.6} s)",
                        self.last_audio_ts
                    )));
                }
                let expected = origin + self.input_frames as f64 / self.rate as f64;
                if (timestamp - expected).abs() > DRIFT_LOG_S {
                    log::debug!(
                        "audio chunk at {timestamp:.3} s, sample clock says {expected:.3} s; using the sample clock"
                    );
                }
            }
        }
        self.last_audio_ts = timestamp;
        let frames = interleaved.len() / channels;
        self.input_frames += frames as u64;
        self.stats.audio_samples += frames as u64;

        let piece = (rate / PIECE_SECONDS_DIV).max(1) as usize * channels;
        for chunk in interleaved.chunks(piece) {
            self.make_room()?;
            self.mono.clear();
            mix_to_mono(chunk, channels, &mut self.mono);
            match &mut self.resampler {
                Some(r) => r.push(&self.mono, &mut self.ring).map_err(|e| Error::stream("push_audio", format!("{e}")))?,
                None => self.ring.extend_from_slice(&self.mono),
            }
        }
        Ok(())
    }

    /// Keeps `RING_HEADROOM` free at the end of the ring: first by forgetting audio older than the
    /// next window, then, if audio has run that far ahead of the frames, by abandoning windows.
    fn make_room(&mut self) -> Result<(), Error> {
        let cap = self.ring.capacity();
        if self.ring.len() + RING_HEADROOM <= cap {
            return Ok(());
        }
        self.drain_to(self.window_start_16k(self.window));
        if self.ring.len() + RING_HEADROOM > cap {
            let must_free_to = self.ring_base + (self.ring.len() + RING_HEADROOM - cap) as u64;
            let per_window = self.hop as u64 * TARGET_RATE as u64;
            let w = must_free_to.div_ceil(per_window);
            log::debug!("audio is {:.1} s ahead of the frames; abandoning windows {}..{w}", self.ring.len() as f64 / 16e3, self.window);
            self.advance_window_to(w);
            self.drain_to(self.window_start_16k(self.window));
        }
        Ok(())
    }

    fn drain_to(&mut self, abs: u64) {
        let n = (abs.saturating_sub(self.ring_base) as usize).min(self.ring.len());
        if n > 0 {
            self.ring.copy_within(n.., 0);
            self.ring.truncate(self.ring.len() - n);
            self.ring_base += n as u64;
        }
    }

    /// Abandons windows before `w`; their instants that never got a result are dropped.
    fn advance_window_to(&mut self, w: u64) {
        if w <= self.window {
            return;
        }
        let new_base = w * self.hop as u64;
        let from = self.emitted_upto.max(self.window * self.hop as u64);
        let to = new_base.min(self.next_instant);
        if to > from {
            let n = to - from;
            self.stats.frames_dropped += n;
            log::debug!("back-pressure: dropped {n} frame(s) (instants {from}..{to})");
        }
        for k in self.window * self.hop as u64..new_base.min(self.next_instant) {
            self.slot_info[(k % self.queue_cap as u64) as usize] = None;
        }
        self.window = w;
        self.emitted_upto = self.emitted_upto.max(new_base);
        self.next_instant = self.next_instant.max(new_base);
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
        if let Some(prev) = self.last_frame_ts {
            if timestamp < prev {
                return Err(Error::stream("push_frame", format!(
                    "timestamp {timestamp:.6} s goes backwards (previous frame at {prev:.6} s)"
                )));
            }
        }
        self.last_frame_ts = Some(timestamp);
        self.stats.frames_pushed += 1;
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
        let mut current_used = false;

        if self.origin.is_some() {
            // A camera that stalled for longer than the queue: instants it cannot fill would only be
            // dropped again, so jump to the ones that still fit.
            let last_k = (timestamp - self.instant_time(0)).floor();
            if last_k >= 0.0 {
                let last_k = last_k as u64;
                if last_k + 1 >= self.next_instant + self.queue_cap as u64 {
                    let first = last_k + 1 - self.queue_cap as u64;
                    let w = first.div_ceil(self.hop as u64);
                    self.advance_window_to(w);
                    self.next_instant = self.next_instant.max(first);
                }
            }
            while self.instant_time(self.next_instant) <= timestamp {
                let tau = self.instant_time(self.next_instant);
                let use_held = matches!(self.held, Some(h) if (h.timestamp - tau).abs() <= (timestamp - tau).abs());
                let k = self.next_instant;
                if use_held {
                    let h = self.held.as_mut().expect("checked");
                    if !h.used {
                        self.stats.frames_used += 1;
                    }
                    h.used = true;
                    let h = *h;
                    let info = SlotInfo { timestamp: h.timestamp, prepped: false, width: self.held_image.width(), height: self.held_image.height(), pushed_at: h.pushed_at };
                    self.assign(k, true, info)?;
                } else {
                    current_used = true;
                    self.assign(k, false, SlotInfo { timestamp, prepped: false, width, height, pushed_at })?;
                }
                self.next_instant = k + 1;
            }
        }
        self.retire_held();
        std::mem::swap(&mut self.current, &mut self.held_image);
        self.held = Some(Held { timestamp, pushed_at, used: current_used });
        if current_used {
            self.stats.frames_used += 1;
        }
        Ok(())
    }

    /// The held frame is being replaced: count it as skipped if no instant took it.
    fn retire_held(&mut self) {
        if let Some(h) = self.held.take() {
            if !h.used {
                self.stats.frames_skipped += 1;
            }
        }
    }

    /// Copies a frame into instant `k`'s slot, first making room by dropping the oldest window if
    /// the queue is full. Resizing waits for `process()`: fast_image_resize allocates its filter
    /// coefficients on every call, and frames dropped by back-pressure are never resized at all.
    fn assign(&mut self, k: u64, from_held: bool, info: SlotInfo) -> Result<(), Error> {
        while k + 1 > self.window * self.hop as u64 + self.queue_cap as u64 {
            self.advance_window_to(self.window + 1);
        }
        let slot = (k % self.queue_cap as u64) as usize;
        let img = if from_held { &self.held_image } else { &self.current };
        rgb_image(&mut self.raw_slots[slot], info.width, info.height, img.as_raw());
        self.slot_info[slot] = Some(info);
        Ok(())
    }

    fn window_frames_ready(&self) -> bool {
        self.next_instant >= self.window * self.hop as u64 + self.t as u64
    }

    fn window_audio_end(&self) -> u64 {
        self.window_start_16k(self.window) + PATCH_HOP_16K * (self.t as u64 - 1) + MIN_SAMPLES_16K as u64
    }

    /// Runs every window that is complete; returns how many new results were produced.
    pub fn process(&mut self) -> Result<usize, Error> {
        let mut produced = 0;
        while self.origin.is_some()
            && self.window_frames_ready()
            && self.ring_base + self.ring.len() as u64 >= self.window_audio_end()
        {
            let real_end = self.window * self.hop as u64 + self.t as u64;
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
        if self.origin.is_none() {
            if self.stats.frames_pushed > 0 {
                return Err(Error::stream("finish", "frames were pushed but no audio; nothing can be segmented"));
            }
            return Ok(0);
        }
        // The resampler's zero tail, exactly as a whole-clip resample ends.
        if let Some(mut r) = self.resampler.take() {
            self.make_room()?;
            let res = r.flush(&mut self.ring).map_err(|e| Error::stream("finish", format!("{e}")));
            self.resampler = Some(r);
            res?;
        }
        // A waiting frame takes every remaining instant it is nearest to (no later frame exists).
        if let Some(h) = self.held {
            let k_h = (h.timestamp - self.instant_time(0)).round();
            if k_h >= 0.0 && (k_h as u64) >= self.next_instant {
                let info = SlotInfo { timestamp: h.timestamp, prepped: false, width: self.held_image.width(), height: self.held_image.height(), pushed_at: h.pushed_at };
                for k in self.next_instant..=k_h as u64 {
                    self.assign(k, true, info)?;
                    self.next_instant = k + 1;
                }
                if !h.used {
                    self.stats.frames_used += 1;
                }
                self.held.as_mut().expect("held").used = true;
            }
        }
        let mut produced = self.process()?;
        while self.emitted_upto < self.next_instant {
            let real_end = self.next_instant.min(self.window * self.hop as u64 + self.t as u64);
            if real_end <= self.window * self.hop as u64 {
                break;
            }
            produced += self.run_window(real_end)?;
        }
        self.retire_held();
        Ok(produced)
    }

    /// Runs window `self.window`. Instants at or past `real_end` (only at `finish`) repeat the last
    /// real frame and get no result; patches past the end of the audio follow the package padding.
    fn run_window(&mut self, real_end: u64) -> Result<usize, Error> {
        let t = self.t;
        let base = self.window * self.hop as u64;
        let s0 = self.window_start_16k(self.window);
        let ring_end = self.ring_base + self.ring.len() as u64;
        if s0 < self.ring_base {
            // Cannot happen with the draining rules above; refuse rather than misalign.
            return Err(Error::internal(format!("audio for window {} was discarded", self.window)));
        }

        let start = Instant::now();
        let mut real_patches = 0usize;
        for p in 0..t {
            let a = s0 + PATCH_HOP_16K * p as u64;
            let b = a + MIN_SAMPLES_16K as u64;
            let dst = &mut self.patches_in.data_mut()[p * PATCH_LEN..(p + 1) * PATCH_LEN];
            if b <= ring_end {
                let lo = (a - self.ring_base) as usize;
                self.mel_scratch.clear();
                self.log_mel.compute_into(&self.ring[lo..lo + MIN_SAMPLES_16K], &mut self.mel_scratch);
                dst.copy_from_slice(&self.mel_scratch[..PATCH_LEN]);
                self.last_patch.copy_from_slice(dst);
                self.have_patch = true;
                real_patches += 1;
            } else {
                match self.padding {
                    PatchPadding::RepeatLast if self.have_patch => dst.copy_from_slice(&self.last_patch),
                    PatchPadding::RepeatLast => {
                        return Err(Error::stream("finish", format!(
                            "the stream has {:.3} s of audio; at least 0.975 s is needed for one VGGish patch",
                            ring_end as f64 / TARGET_RATE as f64
                        )))
                    }
                    PatchPadding::Zeros => dst.fill(0.0),
                }
            }
        }
        if real_patches == 0 && !self.have_patch {
            return Err(Error::stream("finish", "not enough audio for one VGGish patch (0.975 s)"));
        }
        self.times.audio_frontend += start.elapsed();

        let start = Instant::now();
        let last_real = real_end.min(self.next_instant).saturating_sub(1).max(base);
        for i in 0..t {
            let k = (base + i as u64).min(last_real);
            let slot = (k % self.queue_cap as u64) as usize;
            let range = slot * self.frame_len..(slot + 1) * self.frame_len;
            match &mut self.slot_info[slot] {
                Some(info) if !info.prepped => {
                    self.engine
                        .vision
                        .preprocess_into(&self.raw_slots[slot], &mut self.slots[range.clone()])
                        .map_err(|e| Error::stream("process", format!("frame at {:.3} s: {e}", info.timestamp)))?;
                    info.prepped = true;
                }
                Some(_) => {}
                None => return Err(Error::internal(format!("no frame for instant {k} of window {}", self.window))),
            }
            self.frames_in.data_mut()[i * self.frame_len..(i + 1) * self.frame_len].copy_from_slice(&self.slots[range]);
        }
        self.times.vision_frontend += start.elapsed();

        let logits = self.engine.infer_window(&self.frames_in, &self.patches_in, &mut self.times)?;
        let shape = logits.shape();
        let (k, h, w) = (shape[1], shape[2], shape[3]);

        let start = Instant::now();
        let mut produced = 0;
        for i in 0..t {
            let inst = base + i as u64;
            if inst < self.emitted_upto || inst >= real_end {
                continue;
            }
            let slot = (inst % self.queue_cap as u64) as usize;
            let Some(info) = self.slot_info[slot] else { continue };
            let idx = self.next_result_slot();
            let r = &mut self.results[idx];
            r.objects = self.engine.post_frame_into(
                &mut self.builder,
                logits.item(i),
                (k, h, w),
                (info.width, info.height),
                &mut r.mask,
            )?;
            r.sequence = inst;
            r.frame_timestamp = info.timestamp;
            r.latency = info.pushed_at.elapsed();
            r.patch_end = self.origin.unwrap_or(0.0)
                + (s0 + PATCH_HOP_16K * i as u64 + MIN_SAMPLES_16K as u64) as f64 / TARGET_RATE as f64;
            self.latest = Some(idx);
            produced += 1;
        }
        self.times.post += start.elapsed();

        for inst in base..(base + self.hop as u64).min(self.next_instant) {
            self.slot_info[(inst % self.queue_cap as u64) as usize] = None;
        }
        self.emitted_upto = self.emitted_upto.max(real_end.min(base + t as u64));
        self.window += 1;
        self.last_logits = Some(logits);
        self.last_logits_first = base;
        self.stats.windows += 1;
        self.stats.results += produced as u64;
        Ok(produced)
    }

    /// Index of the ring slot for a new result, overwriting the oldest untaken one when full.
    fn next_result_slot(&mut self) -> usize {
        let cap = self.results.len();
        if self.res_len == cap {
            self.res_head = (self.res_head + 1) % cap;
            self.res_len -= 1;
            self.stats.results_overwritten += 1;
        }
        let idx = (self.res_head + self.res_len) % cap;
        self.res_len += 1;
        idx
    }

    /// Newest result, if any (it stays readable after `pop_result` took it).
    pub fn latest(&self) -> Option<&StreamResult> {
        self.latest.map(|i| &self.results[i])
    }

    /// Results not yet taken, oldest first. The ring holds [`Session::result_capacity`] results
    /// (`max(T, frame_queue)`); when full, the oldest untaken one is overwritten and counted in
    /// [`SessionStats::results_overwritten`]. Moving the result out leaves an empty slot whose
    /// buffers are allocated again when it is next written; allocation-free callers use
    /// [`Session::latest`].
    pub fn pop_result(&mut self) -> Option<StreamResult> {
        if self.res_len == 0 {
            return None;
        }
        let idx = self.res_head;
        self.res_head = (self.res_head + 1) % self.results.len();
        self.res_len -= 1;
        let r = if self.latest == Some(idx) {
            self.results[idx].clone()
        } else {
            std::mem::replace(&mut self.results[idx], StreamResult::empty())
        };
        Some(r)
    }
}

#[allow(dead_code)]
fn assert_send() {
    fn is_send<T: Send>() {}
    is_send::<Session>();
}
