//! VGGish log-mel spectrogram (docs/spec/audio.md §2.2–2.4).
//!
//! The official front end runs in float64 numpy and casts to float32 only at the very end; doing the
//! same here keeps 16 kHz inputs within float32 rounding of the reference (~1e-6 on values up to ~5),
//! where an all-f32 path drifts to 1e-4 on chirps.

use std::sync::Arc;

use realfft::num_complex::Complex;
use realfft::{RealFftPlanner, RealToComplex};

/// Samples per STFT frame: round(16000 · 0.025).
pub const WINDOW_LEN: usize = 400;
/// Samples between frame starts: round(16000 · 0.010).
pub const HOP_LEN: usize = 160;
/// Next power of two above the window.
pub const FFT_LEN: usize = 512;
/// FFT bins kept by a real FFT of `FFT_LEN`.
pub const N_BINS: usize = FFT_LEN / 2 + 1;
pub const N_BANDS: usize = 64;
const SAMPLE_RATE: f64 = 16_000.0;
const MEL_LOW_HZ: f64 = 125.0;
const MEL_HIGH_HZ: f64 = 7_500.0;
/// Added before the log so silence maps to ln(0.01) instead of -inf.
pub const LOG_OFFSET: f64 = 0.01;

/// HTK mel scale, as the reference uses it.
fn hz_to_mel(hz: f64) -> f64 {
    1127.0 * (1.0 + hz / 700.0).ln()
}

/// `numpy.linspace` reproduced term by term (i·step + start, last value forced to `stop`) so the
/// f64 mel matrix matches the reference bit for bit where libm agrees.
fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    let step = (stop - start) / (num - 1) as f64;
    let mut v: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
    v[num - 1] = stop;
    v
}

/// The VGGish mel weight matrix, `[257 * 64]` row-major: row k is FFT bin k, column i is band i.
///
/// Triangles are linear in mel (not Hz), not area-normalised, and the DC row is zero.
pub fn mel_matrix() -> Vec<f64> {
    let bins_mel: Vec<f64> = linspace(0.0, SAMPLE_RATE / 2.0, N_BINS).into_iter().map(hz_to_mel).collect();
    let edges = linspace(hz_to_mel(MEL_LOW_HZ), hz_to_mel(MEL_HIGH_HZ), N_BANDS + 2);
    let mut w = vec![0.0f64; N_BINS * N_BANDS];
    for band in 0..N_BANDS {
        let (lower, center, upper) = (edges[band], edges[band + 1], edges[band + 2]);
        // k = 0 stays zero: the reference discards DC even though mel(0) is never inside a band.
        for (k, &m) in bins_mel.iter().enumerate().skip(1) {
            let rising = (m - lower) / (center - lower);
            let falling = (upper - m) / (upper - center);
            w[k * N_BANDS + band] = rising.min(falling).max(0.0);
        }
    }
    w
}

/// Number of complete STFT frames in `len` samples (no padding, partial tail dropped).
pub fn frame_count(len: usize) -> usize {
    if len < WINDOW_LEN {
        0
    } else {
        1 + (len - WINDOW_LEN) / HOP_LEN
    }
}

/// A reusable log-mel plan: FFT plan, window, sparse mel weights and per-frame scratch.
pub struct LogMel {
    window: Vec<f64>,
    /// Per band: first FFT bin with a non-zero weight, and the weights from there on. The triangles
    /// cover a handful of bins each, so this is ~20x less work than the dense 257x64 product, and
    /// skipping exact zeros does not change any sum.
    bands: Vec<(usize, Vec<f64>)>,
    fft: Arc<dyn RealToComplex<f64>>,
    frame: Vec<f64>,
    spectrum: Vec<Complex<f64>>,
    scratch: Vec<Complex<f64>>,
    magnitude: Vec<f64>,
}

impl Default for LogMel {
    fn default() -> Self {
        Self::new()
    }
}

impl LogMel {
    pub fn new() -> Self {
        // Periodic Hann (period 400, not 399): the reference's window, not numpy's np.hanning.
        let window = (0..WINDOW_LEN)
            .map(|n| 0.5 - 0.5 * (2.0 * std::f64::consts::PI / WINDOW_LEN as f64 * n as f64).cos())
            .collect();
        let dense = mel_matrix();
        let bands = (0..N_BANDS)
            .map(|band| {
                let col: Vec<f64> = (0..N_BINS).map(|k| dense[k * N_BANDS + band]).collect();
                let first = col.iter().position(|&v| v != 0.0).unwrap_or(0);
                let last = col.iter().rposition(|&v| v != 0.0).map_or(0, |p| p + 1);
                (first, col[first..last.max(first)].to_vec())
            })
            .collect();
        let fft = RealFftPlanner::<f64>::new().plan_fft_forward(FFT_LEN);
        let frame = fft.make_input_vec();
        let spectrum = fft.make_output_vec();
        let scratch = fft.make_scratch_vec();
        Self { window, bands, fft, frame, spectrum, scratch, magnitude: vec![0.0; N_BINS] }
    }

    /// Log-mel frames of 16 kHz samples, appended to `out` as `[n_frames * 64]` frame-major.
    pub fn compute_into(&mut self, samples: &[f32], out: &mut Vec<f32>) {
        let n_frames = frame_count(samples.len());
        out.reserve(n_frames * N_BANDS);
        for f in 0..n_frames {
            let start = f * HOP_LEN;
            let src = &samples[start..start + WINDOW_LEN];
            // The FFT uses its input as scratch, so the whole buffer (window and zero padding) is
            // rewritten every frame.
            for ((dst, &s), &w) in self.frame.iter_mut().zip(src).zip(&self.window) {
                *dst = s as f64 * w;
            }
            self.frame[WINDOW_LEN..].fill(0.0);
            self.fft
                .process_with_scratch(&mut self.frame, &mut self.spectrum, &mut self.scratch)
                .expect("buffer lengths come from the plan itself");
            // |c| as sqrt(re² + im²), not `norm()`: that is libm's hypot, which guards against
            // overflow at several times the cost, and FFT magnitudes of audio are nowhere near
            // f64's range. The two differ by at most an ulp of f64, far below the f32 output.
            for (m, c) in self.magnitude.iter_mut().zip(&self.spectrum) {
                *m = (c.re * c.re + c.im * c.im).sqrt();
            }
            for (first, weights) in &self.bands {
                let mel: f64 = self.magnitude[*first..*first + weights.len()]
                    .iter()
                    .zip(weights)
                    .map(|(m, w)| m * w)
                    .sum();
                out.push((mel + LOG_OFFSET).ln() as f32);
            }
        }
    }

    /// Log-mel frames of 16 kHz samples as `[n_frames * 64]`.
    pub fn compute(&mut self, samples: &[f32]) -> Vec<f32> {
        let mut out = Vec::new();
        self.compute_into(samples, &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mel_matrix_shape_and_support() {
        let w = mel_matrix();
        assert_eq!(w.len(), N_BINS * N_BANDS);
        let nonzero_rows: Vec<usize> =
            (0..N_BINS).filter(|&k| w[k * N_BANDS..(k + 1) * N_BANDS].iter().any(|&v| v != 0.0)).collect();
        // docs/spec/audio.md §2.3: non-zero rows are bins 5..=239.
        assert_eq!(nonzero_rows.first(), Some(&5));
        assert_eq!(nonzero_rows.last(), Some(&239));
        assert_eq!(nonzero_rows.len(), 235);
        assert!(w.iter().all(|&v| (0.0..=1.0).contains(&v)));
    }

    #[test]
    fn frame_counts() {
        assert_eq!(frame_count(399), 0);
        assert_eq!(frame_count(400), 1);
        assert_eq!(frame_count(80_000), 498);
        assert_eq!(frame_count(160_000), 998);
        assert_eq!(frame_count(15_600), 96);
        assert_eq!(frame_count(77_040), 480);
    }

    #[test]
    fn silence_is_log_offset() {
        let mut lm = LogMel::new();
        let out = lm.compute(&vec![0.0; 1000]);
        assert_eq!(out.len(), frame_count(1000) * N_BANDS);
        assert!(out.iter().all(|&v| v == (0.01f64).ln() as f32));
    }

    #[test]
    fn tone_peaks_in_its_band() {
        // 1 kHz sits at mel 999.99; the band whose centre is nearest must win.
        let x: Vec<f32> =
            (0..4000).map(|n| (2.0 * std::f64::consts::PI * 1000.0 * n as f64 / 16000.0).sin() as f32 * 0.5).collect();
        let mut lm = LogMel::new();
        let out = lm.compute(&x);
        let frame = &out[..N_BANDS];
        let argmax = (0..N_BANDS).max_by(|&a, &b| frame[a].total_cmp(&frame[b])).unwrap();
        let edges = linspace(hz_to_mel(MEL_LOW_HZ), hz_to_mel(MEL_HIGH_HZ), N_BANDS + 2);
        let m = hz_to_mel(1000.0);
        let nearest = (0..N_BANDS).min_by(|&a, &b| (edges[a + 1] - m).abs().total_cmp(&(edges[b + 1] - m).abs())).unwrap();
        assert_eq!(argmax, nearest);
    }
}
