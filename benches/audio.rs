//! Audio front-end throughput. Compare with `tools/avseg_tools/bench_ref_audio.py` (the official algorithm in
//! numpy + resampy) on the same signals.
//!
//! `cargo bench --bench audio -- --warm-up-time 1 --measurement-time 3`
//!
//! Measured 2026-12-05 on the 2-core dev box (AMD EPYC), `cargo bench --bench audio` after the
//! FFT magnitudes stopped going through libm's hypot: 16 kHz log-mel 0.51 ms, 48 kHz stereo mix +
//! resample + log-mel 1.50 ms, resample alone 0.78 ms. `avseg-bench-ref-audio` in the same session:
//! numpy log-mel 0.82 ms, numpy + resampy 34.0 ms.

use std::hint::black_box;

use avseg::{AudioFrontend, PatchPadding};
use avseg::{mix_to_mono, Pcm};
use criterion::{criterion_group, criterion_main, Criterion};

/// Deterministic speech-like test signal: two tones plus xorshift noise.
fn signal(rate: u32, channels: usize, seconds: f64) -> Vec<f32> {
    let n = (rate as f64 * seconds) as usize;
    let mut s = 0x9E37_79B9_7F4A_7C15u64;
    let mut out = Vec::with_capacity(n * channels);
    for i in 0..n {
        let t = i as f64 / rate as f64;
        for c in 0..channels {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let noise = (s >> 40) as f64 / (1u64 << 24) as f64 - 0.5;
            let v = 0.3 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()
                + 0.2 * (2.0 * std::f64::consts::PI * (2000.0 + 100.0 * c as f64) * t).sin()
                + 0.1 * noise;
            out.push(((v * 32768.0).round().clamp(-32768.0, 32767.0) / 32768.0) as f32);
        }
    }
    out
}

fn bench_audio(c: &mut Criterion) {
    let mono16 = Pcm { samples: signal(16_000, 1, 5.0), rate: 16_000 };
    let stereo48 = signal(48_000, 2, 5.0);
    let mut fe = AudioFrontend::new();

    c.bench_function("logmel_5s_16k_mono", |b| {
        b.iter(|| fe.clip_patches(black_box(&mono16), 5, PatchPadding::RepeatLast).unwrap())
    });

    let mut mono = Vec::with_capacity(stereo48.len() / 2);
    c.bench_function("logmel_5s_48k_stereo_mix_resample", |b| {
        b.iter(|| {
            mono.clear();
            mix_to_mono(black_box(&stereo48), 2, &mut mono);
            let pcm = Pcm { samples: std::mem::take(&mut mono), rate: 48_000 };
            let out = fe.clip_patches(&pcm, 5, PatchPadding::RepeatLast).unwrap();
            mono = pcm.samples;
            out
        })
    });

    let pcm48 = Pcm { samples: { let mut m = Vec::new(); mix_to_mono(&stereo48, 2, &mut m); m }, rate: 48_000 };
    c.bench_function("resample_5s_48k_to_16k", |b| b.iter(|| fe.resample_to_16k(black_box(&pcm48)).unwrap()));
}

criterion_group!(benches, bench_audio);
criterion_main!(benches);
