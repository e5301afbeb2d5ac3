//! `avseg segment --video` on a real video with sound (Big Buck Bunny excerpt, CC-BY 3.0; see
//! tests/data/video/README.md). Needs ffmpeg; without it the test prints a visible skip line,
//! except under CI, where ffmpeg is installed by .ci/run and its absence is a failure.

use std::path::PathBuf;
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn video() -> PathBuf {
    repo().join("tests/data/video/bigbuckbunny.mp4")
}

fn have_ffmpeg(test: &str) -> bool {
    let ok = ["ffmpeg", "ffprobe"]
        .iter()
        .all(|p| Command::new(p).arg("-version").output().is_ok_and(|o| o.status.success()));
    if !ok {
        assert!(std::env::var_os("CI").is_none(), "{test}: ffmpeg/ffprobe missing under CI");
        eprintln!("skipped: {test}: ffmpeg/ffprobe not installed");
    }
    ok
}

#[test]
fn probe_reads_stream_facts() {
    if !have_ffmpeg("probe_reads_stream_facts") {
        return;
    }
    let info = avseg::probe_video(&video()).unwrap();
    assert_eq!((info.width, info.height), (1280, 720));
    assert!((info.fps - 25.0).abs() < 1e-9);
    assert!((info.duration - 5.312).abs() < 1e-3, "{}", info.duration);
    let audio = info.audio.clone().unwrap();
    assert_eq!((audio.rate, audio.channels), (48_000, 6));
    let (samples, rate, channels) = avseg::decode_audio_track(&info).unwrap();
    assert_eq!((rate, channels), (48_000, 6));
    let seconds = samples.len() as f64 / channels as f64 / rate as f64;
    assert!((seconds - info.duration).abs() < 0.05, "decoded {seconds} s of audio");
    assert!(samples.iter().any(|v| v.abs() > 1e-4), "the soundtrack is not silent");
}

#[test]
fn segment_video_writes_timestamped_results_within_the_video() {
    if !have_ffmpeg("segment_video_writes_timestamped_results_within_the_video") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    let out = Command::new(env!("CARGO_BIN_EXE_avseg"))
        .args(["segment", "--model", repo().join("models/tiny-tpavi").to_str().unwrap()])
        .args(["--video", video().to_str().unwrap(), "--out", out_dir.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");

    let jsonl = std::fs::read_to_string(out_dir.join("results.jsonl")).unwrap();
    let records: Vec<serde_json::Value> = jsonl.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    // 5.312 s at 25 fps: AVSBench samples int((l + 15/16)·25) = 23, 48, 73, 98, 123.
    let frames: Vec<u64> = records.iter().map(|r| r["frame"].as_u64().unwrap()).collect();
    assert_eq!(frames, [23, 48, 73, 98, 123]);
    for r in &records {
        let ts = r["timestamp"].as_f64().unwrap();
        assert!((ts - r["frame"].as_f64().unwrap() / 25.0).abs() < 1e-9, "timestamp is index / fps");
        assert!(ts < 5.312, "frame time {ts} inside the video");
        assert_eq!((r["width"].as_u64(), r["height"].as_u64()), (Some(1280), Some(720)));
        let stem = format!("frame_{:06}", r["frame"].as_u64().unwrap());
        let mask = image::open(out_dir.join("masks").join(format!("{stem}.png"))).unwrap();
        assert_eq!((mask.width(), mask.height()), (1280, 720));
        assert!(out_dir.join("overlays").join(format!("{stem}.png")).is_file());
    }
}

#[test]
fn a_file_that_is_not_a_video_is_a_clear_error() {
    if !have_ffmpeg("a_file_that_is_not_a_video_is_a_clear_error") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("fake.mp4");
    std::fs::write(&fake, b"not a video at all").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_avseg"))
        .args(["segment", "--model", repo().join("models/tiny-tpavi").to_str().unwrap()])
        .args(["--video", fake.to_str().unwrap(), "--out", dir.path().join("o").to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.starts_with("error: ") && stderr.contains("fake.mp4") && !stderr.contains("panicked"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}
