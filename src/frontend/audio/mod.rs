//! Audio front end: mono PCM → 16 kHz ([`resample`], rubato) → VGGish log-mel ([`logmel`]) →
//! a fixed number of `[1, 96, 64]` patches ([`patches`]), as the official VGGish input code does it
//! (docs/spec/audio.md §2).

pub mod logmel;
pub mod patches;
pub mod resample;
pub mod stream;

#[cfg(test)]
mod reference_tests;

use std::collections::HashMap;

use crate::frontend::FrontendError;
use crate::io::audio::Pcm;
use crate::tensor::Tensor;

pub use logmel::{mel_matrix, LogMel};
pub use patches::fixed_patches;
pub use resample::Resampler16k;

/// The rate VGGish was trained at.
pub const TARGET_RATE: u32 = 16_000;
/// Log-mel frames (10 ms each) per patch.
pub const PATCH_FRAMES: usize = 96;
/// Mel bands per frame.
pub const MEL_BANDS: usize = 64;
/// 16 kHz samples needed for one patch: 95 hops of 160 plus one 400-sample window (0.975 s).
pub const MIN_SAMPLES_16K: usize = (PATCH_FRAMES - 1) * logmel::HOP_LEN + logmel::WINDOW_LEN;

/// How a clip with fewer patches than the model expects is filled up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum PatchPadding {
    /// S4/MS3 (AVSBench `preprocess_s4.py`): repeat the last patch.
    RepeatLast,
    /// AVSS: copy into an all-zero tensor (log-domain zeros, not silence).
    Zeros,
}

/// Owns one resampler per input rate seen (built on first use, then reused) and the log-mel plan.
pub struct AudioFrontend {
    resamplers: HashMap<u32, Resampler16k>,
    log_mel: LogMel,
    frames: Vec<f32>,
}

impl Default for AudioFrontend {
    fn default() -> Self {
        Self::new()
    }
}

impl AudioFrontend {
    /// A front end with no resamplers yet (one is created per input rate on first use).
    pub fn new() -> Self {
        Self { resamplers: HashMap::new(), log_mel: LogMel::new(), frames: Vec::new() }
    }

    /// Exactly `t` patches as `[t, 1, 96, 64]`: the first `t` if there are more, padded per
    /// `padding` if there are fewer.
    pub fn clip_patches(&mut self, pcm: &Pcm, t: usize, padding: PatchPadding) -> Result<Tensor, FrontendError> {
        resample::check_rate(pcm.rate)?;
        check_finite(&pcm.samples)?;
        // Refuse before resampling: the 16 kHz length is known from the input length alone.
        let len_16k = resample::output_len(pcm.samples.len(), pcm.rate);
        if len_16k < MIN_SAMPLES_16K {
            return Err(FrontendError::AudioTooShort {
                seconds: pcm.samples.len() as f64 / pcm.rate as f64,
                samples: pcm.samples.len(),
                rate: pcm.rate,
            });
        }
        let mut frames = std::mem::take(&mut self.frames);
        frames.clear();
        if pcm.rate == TARGET_RATE {
            self.log_mel.compute_into(&pcm.samples, &mut frames);
        } else {
            let samples = self.resample_to_16k(pcm)?;
            self.log_mel.compute_into(&samples, &mut frames);
        }
        let out = fixed_patches(&frames, t, padding);
        self.frames = frames;
        Ok(out)
    }

    /// Every complete 0.96 s patch the audio holds, unpadded (at least one: audio shorter than one
    /// patch is an error, as for [`AudioFrontend::clip_patches`]).
    pub fn all_patches(&mut self, pcm: &Pcm, padding: PatchPadding) -> Result<Tensor, FrontendError> {
        resample::check_rate(pcm.rate)?;
        let t = patches::patch_count(logmel::frame_count(resample::output_len(pcm.samples.len(), pcm.rate))).max(1);
        self.clip_patches(pcm, t, padding)
    }

    /// `pcm` at 16 kHz, aligned so output sample i is input time i/16000 s, with
    /// round(len · 16000 / rate) samples. 16 kHz input is returned unchanged.
    pub fn resample_to_16k(&mut self, pcm: &Pcm) -> Result<Vec<f32>, FrontendError> {
        resample::check_rate(pcm.rate)?;
        if pcm.rate == TARGET_RATE {
            return Ok(pcm.samples.clone());
        }
        let r = match self.resamplers.entry(pcm.rate) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(Resampler16k::new(pcm.rate)?),
        };
        r.process(&pcm.samples)
    }

    /// Log-mel frames `[n_frames * 64]` (frame-major) of 16 kHz samples.
    pub fn log_mel(&mut self, samples_16k: &[f32]) -> Vec<f32> {
        self.log_mel.compute(samples_16k)
    }
}

/// NaN or ±inf would silently poison every frame that overlaps it; refuse with its position.
pub fn check_finite(samples: &[f32]) -> Result<(), FrontendError> {
    match samples.iter().position(|v| !v.is_finite()) {
        Some(index) => Err(FrontendError::NonFiniteSample { index, value: samples[index] }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pcm(samples: Vec<f32>, rate: u32) -> Pcm {
        Pcm { samples, rate }
    }

    #[test]
    fn min_samples_constant() {
        assert_eq!(MIN_SAMPLES_16K, 15_600);
    }

    #[test]
    fn too_short_and_exactly_one_patch() {
        let mut fe = AudioFrontend::new();
        let err = fe.clip_patches(&pcm(vec![0.1; 15_599], 16_000), 5, PatchPadding::Zeros).unwrap_err();
        assert!(matches!(err, FrontendError::AudioTooShort { samples: 15_599, rate: 16_000, .. }), "{err}");
        let t = fe.clip_patches(&pcm(vec![0.0; 15_600], 16_000), 1, PatchPadding::Zeros).unwrap();
        assert_eq!(t.shape(), &[1, 1, 96, 64]);
        assert!(t.data().iter().all(|&v| v == (0.01f64).ln() as f32));
    }

    #[test]
    fn non_finite_and_bad_rate() {
        let mut fe = AudioFrontend::new();
        let mut s = vec![0.0; 20_000];
        s[1234] = f32::NAN;
        let err = fe.clip_patches(&pcm(s, 16_000), 1, PatchPadding::Zeros).unwrap_err();
        assert!(matches!(err, FrontendError::NonFiniteSample { index: 1234, .. }), "{err}");
        let err = fe.clip_patches(&pcm(vec![0.0; 20_000], 0), 1, PatchPadding::Zeros).unwrap_err();
        assert!(matches!(err, FrontendError::BadSampleRate { rate: 0 }), "{err}");
    }

    #[test]
    fn sixteen_k_passthrough_is_bit_exact() {
        let s: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.37).sin()).collect();
        let mut fe = AudioFrontend::new();
        assert_eq!(fe.resample_to_16k(&pcm(s.clone(), 16_000)).unwrap(), s);
    }
}
