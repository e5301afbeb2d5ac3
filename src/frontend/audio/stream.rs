//! The streaming audio front end: live PCM chunks of any rate and channel count → a bounded 16 kHz
//! ring → VGGish log-mel patches at any offset, computed the way batch mode computes them.
//!
//! * **Clock.** Stream time 0 (the *origin*) is the timestamp of the first chunk. After that the
//!   sample count is the clock: later timestamps are only checked (never earlier than the previous
//!   chunk; a drift of more than 0.1 s is logged at debug).
//! * **Same samples as batch.** Chunks are mixed to mono and resampled in pieces of at most 50 ms
//!   by one [`Resampler16k`], which releases the same blocks whatever the piece sizes, and
//!   [`AudioStream::flush`] appends the same zero tail as a whole-clip resample. Patch p of a batch
//!   clip and the patch read here at sample `15360·p` are therefore identical.
//! * **Bounded.** The ring's capacity is fixed at construction. The owner says which samples it
//!   still needs ([`AudioStream::keep_from`]); older ones are forgotten to make room. If the
//!   newest audio still does not fit (nobody consumed it), the oldest needed samples are discarded
//!   too, and [`AudioStream::push`] reports how far, so the owner can give up what needed them.
//! * **Allocation.** The first chunk builds the resampler for its rate; after that a push
//!   allocates nothing (mono scratch, ring and log-mel buffers are sized at construction).

use super::patches::{fill_missing_patch, PATCH_LEN};
use super::resample::{self, Resampler16k};
use super::{check_finite, LogMel, PatchPadding, MEL_BANDS, MIN_SAMPLES_16K, PATCH_FRAMES, TARGET_RATE};
use crate::frontend::FrontendError;
use crate::io::audio::mix_to_mono;

/// Input is mixed and resampled in pieces of at most 1/20 s, so the scratch buffers have a fixed
/// size whatever chunk the caller pushes.
const PIECE_SECONDS_DIV: u32 = 20;
/// Free space kept at the end of the ring before each piece: one piece (800 samples at 16 kHz)
/// plus whatever the resampler releases at once (a few blocks, or its zero tail at `flush`).
pub const RING_HEADROOM: usize = 16_000;
/// Timestamps further than this from the sample clock are logged.
const DRIFT_LOG_S: f64 = 0.1;
/// Most channels a chunk may interleave.
pub const MAX_CHANNELS: usize = 32;

/// Where a patch's values came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchSource {
    /// Computed from the ring.
    Audio,
    /// Past the end of the audio: filled by the padding policy.
    Padded,
}

/// A live audio stream turned into 16 kHz samples and log-mel patches. See the module docs.
pub struct AudioStream {
    rate: u32,
    channels: usize,
    resampler: Option<Resampler16k>,
    origin: Option<f64>,
    last_timestamp: f64,
    input_frames: u64,
    mono: Vec<f32>,
    /// 16 kHz samples; `ring[0]` is sample `ring_base` of the stream.
    ring: Vec<f32>,
    ring_base: u64,
    /// The oldest sample the owner still needs.
    keep_from: u64,
    log_mel: LogMel,
    mel_scratch: Vec<f32>,
    last_patch: Vec<f32>,
    have_patch: bool,
}

impl AudioStream {
    /// A stream whose ring holds `ring_capacity` 16 kHz samples (at least one patch plus
    /// [`RING_HEADROOM`]); nothing is pushed yet.
    pub fn new(ring_capacity: usize) -> Self {
        let ring_capacity = ring_capacity.max(MIN_SAMPLES_16K + RING_HEADROOM);
        Self {
            rate: 0,
            channels: 0,
            resampler: None,
            origin: None,
            last_timestamp: f64::NEG_INFINITY,
            input_frames: 0,
            mono: Vec::with_capacity((resample::MAX_RATE / PIECE_SECONDS_DIV) as usize + 1),
            ring: Vec::with_capacity(ring_capacity),
            ring_base: 0,
            keep_from: 0,
            log_mel: LogMel::new(),
            mel_scratch: Vec::with_capacity(PATCH_FRAMES * MEL_BANDS),
            last_patch: vec![0.0; PATCH_LEN],
            have_patch: false,
        }
    }

    /// Timestamp of the first sample, once audio has arrived.
    pub fn origin(&self) -> Option<f64> {
        self.origin
    }

    /// Input sample frames (one per channel group) pushed so far.
    pub fn input_frames(&self) -> u64 {
        self.input_frames
    }

    /// 16 kHz samples produced so far: the stream position just past the newest one.
    pub fn end(&self) -> u64 {
        self.ring_base + self.ring.len() as u64
    }

    /// The oldest 16 kHz sample still held.
    pub fn start(&self) -> u64 {
        self.ring_base
    }

    /// Samples before `sample` are no longer needed and may be forgotten to make room.
    pub fn keep_from(&mut self, sample: u64) {
        self.keep_from = self.keep_from.max(sample);
    }

    /// Appends interleaved PCM (any rate in 1000..=384000 and 1..=32 channels; `timestamp` = capture
    /// time of its first sample). The first chunk fixes the format; a later change is an error, as
    /// is a timestamp before the previous chunk's, a partial channel group or a NaN/inf (nothing of
    /// a refused chunk is used). Returns the stream position up to which audio the owner still
    /// needed had to be discarded to fit the newest, if any.
    pub fn push(&mut self, interleaved: &[f32], rate: u32, channels: usize, timestamp: f64) -> Result<Option<u64>, FrontendError> {
        if interleaved.is_empty() {
            return Ok(None);
        }
        if !(1..=MAX_CHANNELS).contains(&channels) {
            return Err(FrontendError::BadChannelCount { channels });
        }
        resample::check_rate(rate)?;
        if !timestamp.is_finite() {
            return Err(FrontendError::NonFiniteTimestamp { timestamp });
        }
        if !interleaved.len().is_multiple_of(channels) {
            return Err(FrontendError::PartialChannelGroup { samples: interleaved.len(), channels });
        }
        check_finite(interleaved)?;
        match self.origin {
            None => {
                if rate != TARGET_RATE {
                    self.resampler = Some(Resampler16k::new(rate)?);
                }
                self.rate = rate;
                self.channels = channels;
                self.origin = Some(timestamp);
            }
            Some(origin) => {
                if rate != self.rate || channels != self.channels {
                    return Err(FrontendError::FormatChanged {
                        rate: self.rate,
                        channels: self.channels,
                        new_rate: rate,
                        new_channels: channels,
                    });
                }
                if timestamp < self.last_timestamp {
                    return Err(FrontendError::TimestampBackwards { timestamp, previous: self.last_timestamp });
                }
                let expected = origin + self.input_frames as f64 / self.rate as f64;
                if (timestamp - expected).abs() > DRIFT_LOG_S {
                    log::debug!("audio chunk at {timestamp:.3} s, sample clock says {expected:.3} s; using the sample clock");
                }
            }
        }
        self.last_timestamp = timestamp;
        self.input_frames += (interleaved.len() / channels) as u64;

        let mut discarded = None;
        let piece = (rate / PIECE_SECONDS_DIV).max(1) as usize * channels;
        for chunk in interleaved.chunks(piece) {
            if let Some(to) = self.make_room() {
                discarded = Some(to);
            }
            self.mono.clear();
            mix_to_mono(chunk, channels, &mut self.mono);
            match &mut self.resampler {
                Some(r) => r.push(&self.mono, &mut self.ring)?,
                None => self.ring.extend_from_slice(&self.mono),
            }
        }
        Ok(discarded)
    }

    /// End of stream: the resampler's zero tail, exactly as a whole-clip resample ends. Returns
    /// what [`AudioStream::push`] returns.
    pub fn flush(&mut self) -> Result<Option<u64>, FrontendError> {
        let discarded = self.make_room();
        if let Some(r) = &mut self.resampler {
            r.flush(&mut self.ring)?;
        }
        Ok(discarded)
    }

    /// Keeps [`RING_HEADROOM`] free: first by forgetting samples before `keep_from`, then, if the
    /// audio has run that far ahead of its consumer, by discarding needed ones (returned).
    fn make_room(&mut self) -> Option<u64> {
        let cap = self.ring.capacity();
        if self.ring.len() + RING_HEADROOM <= cap {
            return None;
        }
        self.drain_to(self.keep_from);
        if self.ring.len() + RING_HEADROOM <= cap {
            return None;
        }
        let to = self.ring_base + (self.ring.len() + RING_HEADROOM - cap) as u64;
        log::debug!("audio is {:.1} s ahead of its consumer; discarding up to sample {to}", self.ring.len() as f64 / 16e3);
        self.drain_to(to);
        self.keep_from = to;
        Some(to)
    }

    fn drain_to(&mut self, sample: u64) {
        let n = (sample.saturating_sub(self.ring_base) as usize).min(self.ring.len());
        if n > 0 {
            self.ring.copy_within(n.., 0);
            self.ring.truncate(self.ring.len() - n);
            self.ring_base += n as u64;
        }
    }

    /// The log-mel patch `[96, 64]` of the 0.975 s starting at 16 kHz sample `start`, written into
    /// `dst`. Audio not yet pushed is filled by `padding` (the last patch computed, or zeros), as
    /// batch mode completes a short clip ([`super::patches::fixed_patches`]). `None` if `start`
    /// was already forgotten (a bug in the owner's `keep_from`), or if repeat-last padding has no
    /// patch to repeat.
    pub fn patch_into(&mut self, start: u64, dst: &mut [f32], padding: PatchPadding) -> Option<PatchSource> {
        if start < self.ring_base {
            return None;
        }
        if start + MIN_SAMPLES_16K as u64 <= self.end() {
            let lo = (start - self.ring_base) as usize;
            self.mel_scratch.clear();
            self.log_mel.compute_into(&self.ring[lo..lo + MIN_SAMPLES_16K], &mut self.mel_scratch);
            dst.copy_from_slice(&self.mel_scratch[..PATCH_LEN]);
            self.last_patch.copy_from_slice(dst);
            self.have_patch = true;
            return Some(PatchSource::Audio);
        }
        let last = self.have_patch.then_some(self.last_patch.as_slice());
        if padding == PatchPadding::RepeatLast && last.is_none() {
            return None;
        }
        fill_missing_patch(dst, last, padding);
        Some(PatchSource::Padded)
    }

    /// Whether any patch has been computed from audio (what repeat-last padding repeats).
    pub fn has_patch(&self) -> bool {
        self.have_patch
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frontend::audio::AudioFrontend;
    use crate::io::audio::Pcm;

    fn tone(seconds: f64, rate: u32, channels: usize) -> Vec<f32> {
        let n = (seconds * rate as f64) as usize;
        (0..n)
            .flat_map(|i| {
                let t = i as f64 / rate as f64;
                let v = (0.3 * (2.0 * std::f64::consts::PI * 440.0 * t).sin() + 0.1 * (t * 7.0).cos()) as f32;
                (0..channels).map(move |c| v * (1.0 - 0.2 * c as f32))
            })
            .collect()
    }

    /// Patches read at 0.96 s steps equal batch mode's patches of the same audio, whatever the
    /// chunk sizes (resampled 44.1 kHz stereo; the zero tail at `flush` included).
    #[test]
    fn patches_equal_batch_for_any_chunking() {
        let (rate, ch) = (44_100, 2);
        let pcm = tone(5.0, rate, ch);
        let mut mono = Vec::new();
        mix_to_mono(&pcm, ch, &mut mono);
        let batch = AudioFrontend::new().clip_patches(&Pcm { samples: mono, rate }, 5, PatchPadding::RepeatLast).unwrap();
        for chunk in [1usize, 441, 4410, 100_000] {
            let mut s = AudioStream::new(10 * 16_000);
            for (i, c) in pcm.chunks(chunk * ch).enumerate() {
                assert_eq!(s.push(c, rate, ch, (i * chunk) as f64 / rate as f64).unwrap(), None);
            }
            s.flush().unwrap();
            let mut dst = vec![0.0; PATCH_LEN];
            for p in 0..5 {
                assert_eq!(s.patch_into(15_360 * p as u64, &mut dst, PatchPadding::RepeatLast), Some(PatchSource::Audio));
                assert_eq!(dst, batch.item(p), "chunks of {chunk}: patch {p}");
            }
        }
    }

    /// Past the audio, patches follow the padding policy; before any audio, repeat-last has
    /// nothing to repeat.
    #[test]
    fn padding_past_the_end() {
        let mut s = AudioStream::new(4 * 16_000);
        let mut dst = vec![1.0; PATCH_LEN];
        assert_eq!(s.patch_into(0, &mut dst, PatchPadding::RepeatLast), None);
        assert_eq!(s.patch_into(0, &mut dst, PatchPadding::Zeros), Some(PatchSource::Padded));
        assert!(dst.iter().all(|&v| v == 0.0));
        s.push(&tone(1.5, 16_000, 1), 16_000, 1, 0.0).unwrap();
        let mut first = vec![0.0; PATCH_LEN];
        assert_eq!(s.patch_into(0, &mut first, PatchPadding::RepeatLast), Some(PatchSource::Audio));
        assert_eq!(s.patch_into(16_000, &mut dst, PatchPadding::RepeatLast), Some(PatchSource::Padded));
        assert_eq!(dst, first);
    }

    /// The ring never grows: samples before `keep_from` are forgotten first; when the audio runs
    /// further ahead than the ring holds, the oldest needed ones go too and the push says so.
    #[test]
    fn the_ring_is_bounded() {
        let cap = 3 * 16_000 + RING_HEADROOM;
        let mut s = AudioStream::new(cap);
        let second = tone(1.0, 16_000, 1);
        for k in 0..3 {
            assert_eq!(s.push(&second, 16_000, 1, k as f64).unwrap(), None);
        }
        s.keep_from(32_000);
        assert_eq!(s.push(&second, 16_000, 1, 3.0).unwrap(), None, "room made from what is no longer needed");
        assert!(s.start() <= 32_000);
        let mut discarded = None;
        for k in 4..10 {
            discarded = s.push(&second, 16_000, 1, k as f64).unwrap().or(discarded);
        }
        let to = discarded.expect("audio ran ahead of its consumer");
        assert_eq!(s.start(), to);
        assert_eq!(s.end(), 10 * 16_000);
        assert!(s.ring.capacity() == cap && s.end() - s.start() <= (cap - RING_HEADROOM) as u64 + 800);
        let mut dst = vec![0.0; PATCH_LEN];
        assert_eq!(s.patch_into(to - 1, &mut dst, PatchPadding::Zeros), None, "forgotten");
    }

    #[test]
    fn bad_chunks_are_refused_whole() {
        let mut s = AudioStream::new(0);
        let err = |r: Result<Option<u64>, FrontendError>| r.unwrap_err().to_string();
        assert!(err(s.push(&[0.0; 4], 16_000, 0, 0.0)).contains("channel count 0"));
        assert!(err(s.push(&[0.0; 4], 999, 1, 0.0)).contains("999 Hz"));
        assert!(err(s.push(&[0.0; 4], 16_000, 1, f64::NAN)).contains("not finite"));
        assert!(err(s.push(&[0.0; 5], 16_000, 2, 0.0)).contains("5 samples are not a whole number of 2-channel"));
        assert!(err(s.push(&[0.0, f32::INFINITY], 16_000, 1, 0.0)).contains("non-finite sample"));
        assert_eq!(s.origin(), None, "nothing of a refused chunk is used");
        s.push(&[0.0; 4], 16_000, 1, 2.0).unwrap();
        assert_eq!(s.origin(), Some(2.0));
        assert!(err(s.push(&[0.0; 4], 48_000, 1, 3.0)).contains("one format"));
        assert!(err(s.push(&[0.0; 4], 16_000, 1, 1.0)).contains("goes backwards"));
        assert_eq!((s.input_frames(), s.end()), (4, 4));
    }
}
