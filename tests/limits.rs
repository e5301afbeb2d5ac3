//! Input limits: what outside input may make avseg allocate. Each oversized input is an error that
//! names the file and the limit, found before the memory is taken; audio beyond what a clip's frames
//! need is not decoded, and what is decoded gives the same patches as a whole decode.

use std::path::Path;

use avseg::{
    audio_seconds_for_patches, decode_audio_bytes, decode_audio_with, decode_image_with, AudioFrontend, ClipFiles,
    ClipInput, DecodeError, Error, InputLimits, PatchPadding,
};

fn write_wav(path: &Path, rate: u32, channels: u16, seconds: f64) {
    let spec = hound::WavSpec { channels, sample_rate: rate, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    let n = (seconds * rate as f64) as usize;
    // A chirp with a slow envelope, so that patches differ from each other.
    for i in 0..n {
        let t = i as f64 / rate as f64;
        let v = (0.3 + 0.2 * (t * 0.7).sin()) * (2.0 * std::f64::consts::PI * (300.0 + 40.0 * t) * t).sin();
        for _ in 0..channels {
            w.write_sample((v * 32767.0) as i16).unwrap();
        }
    }
    w.finalize().unwrap();
}

fn expect_limit(e: DecodeError, file: &str, needles: &[&str]) {
    let msg = e.to_string();
    assert!(matches!(e, DecodeError::Limit { .. }), "{msg}");
    assert!(msg.contains(file), "{msg}");
    for n in needles {
        assert!(msg.contains(n), "{n:?} missing from {msg}");
    }
}

/// A long file with a 5-frame clip: only what the 5 patches span is decoded, and the patches equal
/// those of the whole file bit for bit (44.1 kHz, so the resampler runs across the cut).
#[test]
fn a_clip_decodes_only_the_audio_its_frames_need() {
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("long.wav");
    write_wav(&wav, 44_100, 2, 40.0);
    let needed = audio_seconds_for_patches(5);
    assert!((needed - (4.0 * 0.96 + 0.975)).abs() < 1e-9, "{needed}");
    let short = decode_audio_with(&wav, &InputLimits::default(), Some(needed)).unwrap();
    let whole = decode_audio_with(&wav, &InputLimits::default(), None).unwrap();
    let seconds = short.samples.len() as f64 / 44_100.0;
    assert!(seconds >= needed + 0.5 && seconds < needed + 1.0, "decoded {seconds} s");
    assert_eq!(whole.samples.len(), 40 * 44_100);
    let mut fe = AudioFrontend::new();
    let a = fe.clip_patches(&short, 5, PatchPadding::RepeatLast).unwrap();
    let b = fe.clip_patches(&whole, 5, PatchPadding::RepeatLast).unwrap();
    assert_eq!(a.data(), b.data(), "patches of the shortened decode differ");
    assert!(a.data()[..96 * 64] != a.data()[4 * 96 * 64..], "patches are not all alike");
}

#[test]
fn a_whole_decode_over_the_duration_limit_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("three_seconds.wav");
    write_wav(&wav, 16_000, 1, 3.0);
    let mut limits = InputLimits::default();
    limits.max_audio_seconds = 2.0;
    expect_limit(decode_audio_with(&wav, &limits, None).unwrap_err(), "three_seconds.wav", &["max_audio_seconds", "2 s", "3.0 s long"]);
    // A clip that needs less is fine: the limit bounds whole decodes.
    assert!(decode_audio_with(&wav, &limits, Some(1.0)).is_ok());
    // The same from bytes, as the fuzz targets feed it.
    let bytes = std::fs::read(&wav).unwrap();
    expect_limit(decode_audio_bytes(&wav, bytes, &limits, None).unwrap_err(), "three_seconds.wav", &["max_audio_seconds"]);
}

#[test]
fn sample_rates_outside_the_limits_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("slow.wav");
    write_wav(&wav, 800, 1, 2.0);
    expect_limit(decode_audio_with(&wav, &InputLimits::default(), None).unwrap_err(), "slow.wav", &["800 Hz"]);
    let mut limits = InputLimits::default();
    limits.sample_rates = (8_000, 48_000);
    let fast = dir.path().join("fast.wav");
    write_wav(&fast, 96_000, 1, 0.1);
    expect_limit(decode_audio_with(&fast, &limits, None).unwrap_err(), "fast.wav", &["96000 Hz", "8000..=48000"]);
}

/// CRC-32 (ISO-HDLC), as PNG chunks carry it.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// A PNG whose header claims 20000 × 20000 pixels (1.6 GB as RGBA): refused from the header.
#[test]
fn oversized_images_are_refused_before_decoding() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.png");
    // Signature and IHDR only: a decoder that got past the header would fail on the missing data
    // instead, with another message.
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend(20_000u32.to_be_bytes());
    ihdr.extend(20_000u32.to_be_bytes());
    ihdr.extend([8, 6, 0, 0, 0]); // 8-bit RGBA, deflate, no filter, no interlace
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(13u32.to_be_bytes());
    png.extend(&ihdr);
    png.extend(crc32(&ihdr).to_be_bytes());
    std::fs::write(&big, &png).unwrap();
    expect_limit(decode_image_with(&big, &InputLimits::default()).unwrap_err(), "big.png", &["16384"]);

    let mut limits = InputLimits::default();
    limits.max_image_pixels = 10_000;
    let small = dir.path().join("small.png");
    image::RgbImage::new(200, 100).save(&small).unwrap();
    expect_limit(decode_image_with(&small, &limits).unwrap_err(), "small.png", &["200x100", "10000 pixels"]);
    limits.max_image_pixels = 20_000;
    assert_eq!(decode_image_with(&small, &limits).unwrap().dimensions(), (200, 100));
}

#[test]
fn a_clip_with_too_many_frames_is_refused_before_decoding() {
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("a.wav");
    write_wav(&wav, 16_000, 1, 2.0);
    // The frames need not exist: the count is checked first.
    let frames = (1..=20).map(|i| dir.path().join(format!("frames/{i}.png"))).collect();
    let mut limits = InputLimits::default();
    limits.max_clip_frames = 10;
    let e = ClipInput::load_with(&ClipFiles { frames, audio: wav }, &limits, None).unwrap_err();
    assert!(matches!(e, Error::Clip { .. }) && e.to_string().contains("20 frames, over the limit of 10"), "{e}");
}
