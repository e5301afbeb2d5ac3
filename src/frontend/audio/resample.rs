//! Resampling to 16 kHz with rubato's synchronous FFT resampler.
//!
//! The official pipeline used resampy `kaiser_best`; no rubato setting reproduces it bit for bit, so
//! parity for non-16 kHz input is statistical (see `src/frontend/audio/reference_tests.rs` for the measured
//! differences and why the default FFT size was chosen).
//!
//! The struct is built once per input rate (planning FFTs and the filter is the expensive part) and
//! keeps its pending input, output scratch and start-up delay bookkeeping, so a streaming caller can
//! feed arbitrary chunks through [`Resampler16k::push`] and finish with [`Resampler16k::flush`];
//! [`Resampler16k::process`] is the whole-clip form of the same two calls.

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler};

use super::TARGET_RATE;
use crate::frontend::FrontendError;

/// Lowest and highest input rates accepted (the bounds named by [`FrontendError::BadSampleRate`]).
pub const MIN_RATE: u32 = 1_000;
pub const MAX_RATE: u32 = 384_000;

/// Default FFT block length on the input side, in seconds of input (rounded up per
/// [`Resampler16k::with_block`]).
///
/// rubato's FFT resampler filters with a windowed sinc as long as the block and places its cutoff
/// from the block length. Surveyed against the stored resampy `kaiser_best` output of the 48 kHz
/// speech clip (`resampler_config_survey` in `src/frontend/audio/reference_tests.rs`), 10 ms blocks are a sharp
/// optimum: mean abs diff 2.4e-5 and max 7.4e-4, versus 1.8e-4 / 8.5e-3 at 15 ms, 3.9e-4 / 2.4e-2 at
/// 60 ms and 5.4e-4 / 2.3e-2 at 5 ms, because the resulting transition band sits closest to
/// resampy's (roll-off 0.9475 of Nyquist). rubato's sinc `Async` resampler was 10-500x further
/// off. It also keeps the streaming latency at one 10 ms block.
pub const DEFAULT_BLOCK_SECONDS: f64 = 0.01;

/// Mono resampler from one fixed input rate to 16 kHz, with the FFT delay compensated so output
/// sample i lines up with input time i / 16000 s.
pub struct Resampler16k {
    rate_in: u32,
    inner: Fft<f64>,
    chunk_in: usize,
    chunk_out: usize,
    /// Input waiting for a full chunk; always `chunk_in` long, the first `pending` values are live.
    in_buf: Vec<f64>,
    pending: usize,
    out_buf: Vec<f64>,
    /// Output samples still to drop at start-up (the resampler's group delay).
    delay_left: usize,
    consumed: u64,
    emitted: u64,
}

impl std::fmt::Debug for Resampler16k {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resampler16k")
            .field("rate_in", &self.rate_in)
            .field("chunk_in", &self.chunk_in)
            .field("chunk_out", &self.chunk_out)
            .field("delay", &self.inner.output_delay())
            .finish()
    }
}

/// Output length for `len` input samples: round(len · 16000 / rate), in integers so long clips do
/// not pick up float error.
pub fn output_len(len: usize, rate_in: u32) -> usize {
    let num = len as u128 * TARGET_RATE as u128;
    ((num + rate_in as u128 / 2) / rate_in as u128) as usize
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

pub fn check_rate(rate: u32) -> Result<(), FrontendError> {
    if (MIN_RATE..=MAX_RATE).contains(&rate) {
        Ok(())
    } else {
        Err(FrontendError::BadSampleRate { rate })
    }
}

impl Resampler16k {
    /// A resampler for `rate_in` → 16 kHz with the default block length.
    pub fn new(rate_in: u32) -> Result<Self, FrontendError> {
        let block = (rate_in as f64 * DEFAULT_BLOCK_SECONDS).round() as usize;
        Self::with_block(rate_in, block)
    }

    /// A resampler whose FFT input block is at least `block_in` samples, rounded up to an even
    /// multiple of the reduced rate ratio.
    ///
    /// rubato needs a multiple for fixed-size chunks on both sides. The even count is ours: rubato
    /// reports its delay as half the output block, which is exact only when both blocks have even
    /// length; with an odd block (e.g. 22.05 kHz → 16 kHz in 441:160 blocks) the output lands ~0.4
    /// samples late, which `sine_is_aligned_and_preserved` catches.
    pub fn with_block(rate_in: u32, block_in: usize) -> Result<Self, FrontendError> {
        check_rate(rate_in)?;
        let min_in = (rate_in / gcd(rate_in, TARGET_RATE)) as usize;
        let blocks = block_in.max(1).div_ceil(min_in).next_multiple_of(2);
        let inner = Fft::<f64>::new(rate_in as usize, TARGET_RATE as usize, blocks * min_in, 1, FixedSync::Both)
            .map_err(|e| FrontendError::Resample(e.to_string()))?;
        let chunk_in = inner.input_frames_next();
        let chunk_out = inner.output_frames_next();
        let delay_left = inner.output_delay();
        Ok(Self {
            rate_in,
            inner,
            chunk_in,
            chunk_out,
            in_buf: vec![0.0; chunk_in],
            pending: 0,
            out_buf: vec![0.0; chunk_out],
            delay_left,
            consumed: 0,
            emitted: 0,
        })
    }

    #[allow(dead_code)] // read by the reference tests; the session keeps its own counts
    pub fn rate_in(&self) -> u32 {
        self.rate_in
    }

    #[allow(dead_code)] // read by the reference tests; the session keeps its own counts
    /// Input samples per internal chunk.
    pub fn chunk_in(&self) -> usize {
        self.chunk_in
    }

    #[allow(dead_code)] // read by the reference tests; the session keeps its own counts
    /// Start-up delay in 16 kHz samples that `push` drops before emitting anything.
    pub fn delay(&self) -> usize {
        self.inner.output_delay()
    }

    /// Forgets all state: the next `push` starts a new signal at time 0.
    pub fn reset(&mut self) {
        self.inner.reset();
        self.pending = 0;
        self.delay_left = self.inner.output_delay();
        self.consumed = 0;
        self.emitted = 0;
    }

    fn run_chunk(&mut self, out: &mut Vec<f32>) -> Result<(), FrontendError> {
        let input = InterleavedSlice::new(&self.in_buf[..], 1, self.chunk_in)
            .map_err(|e| FrontendError::Resample(e.to_string()))?;
        let mut output = InterleavedSlice::new_mut(&mut self.out_buf[..], 1, self.chunk_out)
            .map_err(|e| FrontendError::Resample(e.to_string()))?;
        let (_, written) = self
            .inner
            .process_into_buffer(&input, &mut output, None)
            .map_err(|e| FrontendError::Resample(e.to_string()))?;
        let skip = self.delay_left.min(written);
        self.delay_left -= skip;
        out.extend(self.out_buf[skip..written].iter().map(|&v| v as f32));
        self.emitted += (written - skip) as u64;
        self.pending = 0;
        Ok(())
    }

    /// Feeds more input; appends every 16 kHz sample that is already final to `out`.
    pub fn push(&mut self, input: &[f32], out: &mut Vec<f32>) -> Result<(), FrontendError> {
        let mut rest = input;
        self.consumed += input.len() as u64;
        while !rest.is_empty() {
            let take = (self.chunk_in - self.pending).min(rest.len());
            for (d, &s) in self.in_buf[self.pending..self.pending + take].iter_mut().zip(&rest[..take]) {
                *d = s as f64;
            }
            self.pending += take;
            rest = &rest[take..];
            if self.pending == self.chunk_in {
                self.run_chunk(out)?;
            }
        }
        Ok(())
    }

    /// Ends the signal: pads with silence until the output holds round(consumed · 16000 / rate)
    /// samples in total, appends the tail to `out`, and resets for the next signal.
    pub fn flush(&mut self, out: &mut Vec<f32>) -> Result<(), FrontendError> {
        let total = output_len(self.consumed as usize, self.rate_in) as u64;
        while self.emitted < total {
            self.in_buf[self.pending..].fill(0.0);
            self.pending = self.chunk_in;
            self.run_chunk(out)?;
        }
        // The last chunk may overshoot; the samples past the end belong to the padding.
        let excess = (self.emitted.saturating_sub(total) as usize).min(out.len());
        out.truncate(out.len() - excess);
        self.reset();
        Ok(())
    }

    /// Resamples a whole clip (any previous state is discarded).
    pub fn process(&mut self, input: &[f32]) -> Result<Vec<f32>, FrontendError> {
        self.reset();
        let mut out = Vec::with_capacity(output_len(input.len(), self.rate_in) + self.chunk_out);
        self.push(input, &mut out)?;
        self.flush(&mut out)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(rate: u32, hz: f64, secs: f64) -> Vec<f32> {
        let n = (rate as f64 * secs) as usize;
        (0..n).map(|i| (0.5 * (2.0 * std::f64::consts::PI * hz * i as f64 / rate as f64).sin()) as f32).collect()
    }

    #[test]
    fn lengths_are_rounded() {
        assert_eq!(output_len(240_000, 48_000), 80_000);
        assert_eq!(output_len(220_500, 44_100), 80_000);
        assert_eq!(output_len(100, 44_100), 36); // 36.28
        assert_eq!(output_len(0, 44_100), 0);
        for (rate, n) in [(48_000u32, 240_000usize), (44_100, 220_500), (22_050, 1234), (8_000, 777)] {
            let mut r = Resampler16k::new(rate).unwrap();
            assert_eq!(r.process(&vec![0.1; n]).unwrap().len(), output_len(n, rate), "rate {rate}");
        }
    }

    #[test]
    fn bad_rates_rejected() {
        assert!(matches!(Resampler16k::new(0), Err(FrontendError::BadSampleRate { rate: 0 })));
        assert!(matches!(Resampler16k::new(999), Err(FrontendError::BadSampleRate { .. })));
        assert!(matches!(Resampler16k::new(400_000), Err(FrontendError::BadSampleRate { .. })));
    }

    #[test]
    fn sine_is_aligned_and_preserved() {
        // A 1 kHz tone resampled from 48 kHz must equal the same tone generated at 16 kHz, sample
        // for sample, away from the edges: this pins the delay compensation to zero samples.
        for rate in [48_000u32, 44_100, 22_050, 32_000, 11_025, 8_000, 96_000] {
            let x = sine(rate, 1000.0, 1.0);
            let y = Resampler16k::new(rate).unwrap().process(&x).unwrap();
            let want = sine(16_000, 1000.0, 1.0);
            let err = crate::test_common::max_abs_diff(&y[2000..14000], &want[2000..14000]);
            assert!(err < 1e-5, "rate {rate}: max err {err}");
        }
    }

    #[test]
    fn streaming_matches_whole_clip() {
        let x = sine(44_100, 440.0, 0.7);
        let mut r = Resampler16k::new(44_100).unwrap();
        let whole = r.process(&x).unwrap();
        let mut streamed = Vec::new();
        for chunk in x.chunks(337) {
            r.push(chunk, &mut streamed).unwrap();
        }
        r.flush(&mut streamed).unwrap();
        assert_eq!(whole, streamed);
    }
}
