//! Decoding: the committed fixtures in `tests/data/audio/` (see its README) and bad inputs written at
//! test time.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};

use avseg::{decode_audio, Pcm};
use avseg::DecodeError;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/audio").join(name)
}

fn tone_i16(rate: u32, hz: f64, amp: f64, n: usize) -> Vec<i16> {
    (0..n).map(|i| (amp * (2.0 * std::f64::consts::PI * hz * i as f64 / rate as f64).sin() * 32767.0).round() as i16).collect()
}

/// Amplitude of the `hz` component (Goertzel-style single-bin DFT).
fn amplitude_at(x: &[f32], rate: u32, hz: f64) -> f64 {
    let (mut re, mut im) = (0.0, 0.0);
    for (i, &v) in x.iter().enumerate() {
        let ph = 2.0 * std::f64::consts::PI * hz * i as f64 / rate as f64;
        re += v as f64 * ph.cos();
        im -= v as f64 * ph.sin();
    }
    2.0 * (re * re + im * im).sqrt() / x.len() as f64
}

fn assert_err_names_file(err: &DecodeError, path: &Path) {
    let msg = err.to_string();
    let name = path.file_name().unwrap().to_str().unwrap();
    assert!(msg.contains(name), "message does not name the file: {msg}");
}

fn write_wav_hound(path: &Path, spec: hound::WavSpec, write: impl FnOnce(&mut hound::WavWriter<std::io::BufWriter<std::fs::File>>)) {
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    write(&mut w);
    w.finalize().unwrap();
}

#[test]
fn wav_int16_stereo_is_channel_mean_of_int_over_32768() {
    let path = fixture("tone_s16_stereo_44k.wav");
    let pcm = decode_audio(&path).unwrap();
    assert_eq!(pcm.rate, 44_100);
    let ints: Vec<i16> = hound::WavReader::open(&path).unwrap().samples::<i16>().map(|s| s.unwrap()).collect();
    assert_eq!(ints.len(), 2 * 2205);
    // Cross-check the fixture content itself against its documented recipe.
    let left = tone_i16(44_100, 440.0, 0.5, 2205);
    let right = tone_i16(44_100, 880.0, 0.25, 2205);
    let mut mismatches = 0;
    for i in 0..2205 {
        mismatches += (ints[2 * i] != left[i]) as usize + (ints[2 * i + 1] != right[i]) as usize;
    }
    assert!(mismatches <= 2, "fixture differs from its recipe in {mismatches} samples");
    let want: Vec<f32> =
        ints.chunks_exact(2).map(|lr| (lr[0] as f32 / 32768.0 + lr[1] as f32 / 32768.0) / 2.0).collect();
    assert_eq!(pcm.samples.len(), 2205);
    // Bit-exact: int/32768 is exact in f32 and so is the mean of two such values.
    assert_eq!(pcm.samples, want);
    assert!(pcm.samples.iter().any(|&v| v != 0.0));
}

#[test]
fn int16_full_range_scaling_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("range.wav");
    let spec = hound::WavSpec { channels: 1, sample_rate: 16_000, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
    let vals: Vec<i16> = vec![i16::MIN, -12345, -1, 0, 1, 12345, i16::MAX];
    write_wav_hound(&path, spec, |w| vals.iter().for_each(|&v| w.write_sample(v).unwrap()));
    let pcm = decode_audio(&path).unwrap();
    let want: Vec<f32> = vals.iter().map(|&v| v as f32 / 32768.0).collect();
    assert_eq!(pcm.samples, want);
    assert_eq!(pcm.samples[0], -1.0);
    assert_eq!(pcm.samples[6], 32767.0 / 32768.0);
}

#[test]
fn wav_int24_int32_float32() {
    let dir = tempfile::tempdir().unwrap();
    let p24 = dir.path().join("i24.wav");
    let p32 = dir.path().join("i32.wav");
    let pf = dir.path().join("f32.wav");
    let v24 = [-(1 << 23), -1_234_567, 0, 7, 4_194_304, (1 << 23) - 1];
    let v32 = [i32::MIN, -1_000_000_000, 0, 65_536, i32::MAX];
    let vf = [-1.0f32, -0.3, 0.0, 1e-6, 0.7];
    let int = |bits| hound::WavSpec { channels: 1, sample_rate: 22_050, bits_per_sample: bits, sample_format: hound::SampleFormat::Int };
    write_wav_hound(&p24, int(24), |w| v24.iter().for_each(|&v| w.write_sample(v).unwrap()));
    write_wav_hound(&p32, int(32), |w| v32.iter().for_each(|&v| w.write_sample(v).unwrap()));
    let fspec = hound::WavSpec { channels: 1, sample_rate: 48_000, bits_per_sample: 32, sample_format: hound::SampleFormat::Float };
    write_wav_hound(&pf, fspec, |w| vf.iter().for_each(|&v| w.write_sample(v).unwrap()));

    let a = decode_audio(&p24).unwrap();
    assert_eq!(a.rate, 22_050);
    let want: Vec<f32> = v24.iter().map(|&v| (v as f64 / 8_388_608.0) as f32).collect();
    assert_eq!(a.samples, want);
    let b = decode_audio(&p32).unwrap();
    let want: Vec<f32> = v32.iter().map(|&v| (v as f64 / 2_147_483_648.0) as f32).collect();
    for (g, w) in b.samples.iter().zip(&want) {
        assert!((g - w).abs() <= 1e-7, "{g} vs {w}");
    }
    let c = decode_audio(&pf).unwrap();
    assert_eq!(c, Pcm { samples: vf.to_vec(), rate: 48_000 });
}

#[test]
fn flac_is_lossless() {
    let pcm = decode_audio(&fixture("tone_440_16k.flac")).unwrap();
    assert_eq!(pcm.rate, 16_000);
    let want: Vec<f32> = tone_i16(16_000, 440.0, 0.5, 8000).iter().map(|&v| v as f32 / 32768.0).collect();
    assert_eq!(pcm.samples.len(), 8000);
    let d = common::max_abs_diff(&pcm.samples, &want);
    // Equal up to a possible last-ulp difference in sin() between numpy and Rust flipping a rounding.
    assert!(d <= 1.0 / 32768.0, "{d}");
}

fn check_lossy_tone(name: &str) {
    let pcm = decode_audio(&fixture(name)).unwrap();
    assert_eq!(pcm.rate, 16_000, "{name}");
    // Encoders add priming/padding; allow up to ~0.15 s either way around 0.5 s.
    assert!((6_000..=10_500).contains(&pcm.samples.len()), "{name}: {} samples", pcm.samples.len());
    let a440 = amplitude_at(&pcm.samples, 16_000, 440.0);
    let a1k = amplitude_at(&pcm.samples, 16_000, 1000.0);
    println!("{name}: {} samples, |440 Hz| {a440:.3}, |1 kHz| {a1k:.4}", pcm.samples.len());
    assert!(a440 > 0.3 && a440 < 0.6, "{name}: 440 Hz amplitude {a440}");
    assert!(a1k < 0.02, "{name}: 1 kHz amplitude {a1k}");
}

#[test]
fn ogg_vorbis_decodes() {
    check_lossy_tone("tone_440_16k.ogg");
}

#[test]
fn mp3_decodes() {
    check_lossy_tone("tone_440_16k.mp3");
}

#[test]
fn missing_file_is_read_error() {
    let path = PathBuf::from("/nonexistent/dir/missing_clip.wav");
    let err = decode_audio(&path).unwrap_err();
    assert!(matches!(err, DecodeError::Read { .. }), "{err:?}");
    assert_err_names_file(&err, &path);
    let dir = tempfile::tempdir().unwrap();
    let err = decode_audio(dir.path()).unwrap_err();
    assert!(matches!(err, DecodeError::Read { .. }), "{err:?}");
}

#[test]
fn empty_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty_clip.wav");
    std::fs::File::create(&path).unwrap();
    let err = decode_audio(&path).unwrap_err();
    assert!(matches!(err, DecodeError::Empty { .. }), "{err:?}");
    assert_err_names_file(&err, &path);
}

#[test]
fn text_named_wav_is_unknown_format() {
    let dir = tempfile::tempdir().unwrap();
    for (name, body) in [
        ("notes.wav", "this is a text file, not audio\n".repeat(50)),
        ("tiny.wav", "hi".to_string()),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, body).unwrap();
        let err = decode_audio(&path).unwrap_err();
        assert!(matches!(err, DecodeError::UnknownAudioFormat { .. }), "{name}: {err:?}");
        assert_err_names_file(&err, &path);
    }
}

#[test]
fn truncated_wav_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut_short.wav");
    let spec = hound::WavSpec { channels: 2, sample_rate: 16_000, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
    write_wav_hound(&path, spec, |w| (0..32_000).for_each(|i| w.write_sample((i % 1000) as i16).unwrap()));
    let full = std::fs::read(&path).unwrap();
    assert_eq!(decode_audio(&path).unwrap().samples.len(), 16_000);
    // Keep the header (which still promises 16,000 frames) and 40 % of the data.
    std::fs::write(&path, &full[..44 + 25_600]).unwrap();
    let err = decode_audio(&path).unwrap_err();
    assert!(matches!(err, DecodeError::CorruptAudio { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("truncated") && msg.contains("16000"), "{msg}");
    assert_err_names_file(&err, &path);
    // Cut inside the header.
    std::fs::write(&path, &full[..30]).unwrap();
    let err = decode_audio(&path).unwrap_err();
    assert!(matches!(err, DecodeError::CorruptAudio { .. } | DecodeError::UnknownAudioFormat { .. }), "{err:?}");
    assert_err_names_file(&err, &path);
    // Odd byte count: half a sample at the end.
    std::fs::write(&path, &full[..full.len() - 1]).unwrap();
    let err = decode_audio(&path).unwrap_err();
    assert!(matches!(err, DecodeError::CorruptAudio { .. }), "{err:?}");
}

#[test]
fn truncated_flac_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.flac");
    let full = std::fs::read(fixture("tone_440_16k.flac")).unwrap();
    std::fs::write(&path, &full[..full.len() / 2]).unwrap();
    let err = decode_audio(&path).unwrap_err();
    assert!(matches!(err, DecodeError::CorruptAudio { .. }), "{err:?}");
    assert_err_names_file(&err, &path);
}

/// A RIFF/WAVE file whose `fmt ` chunk declares codec `tag`.
fn wav_with_tag(tag: u16) -> Vec<u8> {
    let data = vec![0u8; 400];
    let mut v = Vec::new();
    v.extend(b"RIFF");
    v.extend((4 + 8 + 16 + 8 + data.len() as u32).to_le_bytes());
    v.extend(b"WAVE");
    v.extend(b"fmt ");
    v.extend(16u32.to_le_bytes());
    v.extend(tag.to_le_bytes());
    v.extend(1u16.to_le_bytes()); // channels
    v.extend(16_000u32.to_le_bytes());
    v.extend(32_000u32.to_le_bytes()); // byte rate
    v.extend(2u16.to_le_bytes()); // block align
    v.extend(16u16.to_le_bytes()); // bits
    v.extend(b"data");
    v.extend((data.len() as u32).to_le_bytes());
    v.extend(data);
    v
}

#[test]
fn unknown_wav_codec_is_unsupported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wma_inside.wav");
    std::fs::write(&path, wav_with_tag(0x0161)).unwrap();
    let err = decode_audio(&path).unwrap_err();
    assert!(matches!(err, DecodeError::UnsupportedCodec { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("0x0161"), "{msg}");
    assert_err_names_file(&err, &path);
    // The same header with tag 1 (PCM) is fine: the test above fails for the right reason.
    std::fs::write(&path, wav_with_tag(1)).unwrap();
    assert_eq!(decode_audio(&path).unwrap().samples.len(), 200);
}

#[test]
fn non_finite_float_samples() {
    let dir = tempfile::tempdir().unwrap();
    let spec = hound::WavSpec { channels: 2, sample_rate: 16_000, bits_per_sample: 32, sample_format: hound::SampleFormat::Float };
    for (name, bad) in [("nan_inside.wav", f32::NAN), ("inf_inside.wav", f32::INFINITY), ("neginf.wav", f32::NEG_INFINITY)] {
        let path = dir.path().join(name);
        // Frame 8000 (0.5 s), right channel.
        write_wav_hound(&path, spec, |w| {
            for i in 0..20_000 {
                w.write_sample(if i == 16_001 { bad } else { 0.1f32 }).unwrap()
            }
        });
        match decode_audio(&path) {
            Err(ref err @ DecodeError::NonFiniteSample { seconds, value, .. }) => {
                assert!((seconds - 0.5).abs() < 1e-9, "{name}: {seconds}");
                assert_eq!(value.is_nan(), bad.is_nan());
                assert_err_names_file(err, &path);
            }
            other => panic!("{name}: expected NonFiniteSample, got {other:?}"),
        }
    }
}

#[test]
fn garbage_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let real: Vec<Vec<u8>> = ["tone_s16_stereo_44k.wav", "tone_440_16k.flac", "tone_440_16k.ogg", "tone_440_16k.mp3"]
        .iter()
        .map(|n| std::fs::read(fixture(n)).unwrap())
        .collect();
    for round in 0..80 {
        let ext = ["wav", "flac", "ogg", "mp3", "bin"][round % 5];
        let bytes: Vec<u8> = if round % 2 == 0 {
            (0..(next() % 5000) as usize).map(|_| next() as u8).collect()
        } else {
            // A real file with a few bytes flipped or cut: the hardest case for parsers.
            let mut b = real[(round / 2) % real.len()].clone();
            for _ in 0..(1 + next() % 8) {
                let i = (next() as usize) % b.len();
                b[i] = next() as u8;
            }
            b.truncate(1 + (next() as usize) % b.len());
            b
        };
        let path = dir.path().join(format!("fuzz_{round}.{ext}"));
        std::fs::File::create(&path).unwrap().write_all(&bytes).unwrap();
        let result = std::panic::catch_unwind(|| decode_audio(&path));
        let result = result.unwrap_or_else(|_| panic!("decode_audio panicked on round {round} ({ext})"));
        if let Err(err) = result {
            assert_err_names_file(&err, &path);
        }
    }
}
