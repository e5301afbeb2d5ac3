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

/// `--video` runs the video's sampled frames and soundtrack through a streaming session; the same
/// frames and sound given as a folder and a WAV (`--frames --audio`, the batch path) must give the
/// same masks. ffmpeg extracts both with the filter and pixel format the video driver uses, and the
/// soundtrack as 6-channel float, which avseg mixes to mono on both paths.
#[test]
fn video_masks_equal_the_same_frames_and_sound_run_as_a_clip() {
    let test = "video_masks_equal_the_same_frames_and_sound_run_as_a_clip";
    if !have_ffmpeg(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let frames = dir.path().join("frames");
    std::fs::create_dir(&frames).unwrap();
    let wav = dir.path().join("audio.wav");
    let ffmpeg = |args: &[&str]| {
        let out = Command::new("ffmpeg").args(["-nostdin", "-v", "error", "-i", video().to_str().unwrap()]).args(args).output().unwrap();
        assert!(out.status.success(), "ffmpeg {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    // 25 fps: frame n is sampled when n mod 25 == 15·25/16 = 23 (src/io/video.rs).
    ffmpeg(&["-map", "0:v:0", "-an", "-vf", "select='eq(mod(n\\,25)\\,23)'", "-fps_mode", "passthrough", "-pix_fmt", "rgb24", frames.join("%d.png").to_str().unwrap()]);
    ffmpeg(&["-map", "0:a:0", "-vn", "-c:a", "pcm_f32le", wav.to_str().unwrap()]);

    let run = |args: &[&str], out: &std::path::Path| {
        let o = Command::new(env!("CARGO_BIN_EXE_avseg"))
            .args(["segment", "--model", repo().join("models/tiny-tpavi").to_str().unwrap(), "--no-overlay", "--out", out.to_str().unwrap()])
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    let (video_out, clip_out) = (dir.path().join("video"), dir.path().join("clip"));
    run(&["--video", video().to_str().unwrap()], &video_out);
    run(&["--frames", frames.to_str().unwrap(), "--audio", wav.to_str().unwrap()], &clip_out);

    let mut foreground = 0usize;
    for (i, frame) in [23, 48, 73, 98, 123].iter().enumerate() {
        let a = image::open(video_out.join(format!("masks/frame_{frame:06}.png"))).unwrap().to_luma8();
        let b = image::open(clip_out.join(format!("masks/{}.png", i + 1))).unwrap().to_luma8();
        assert_eq!(a.dimensions(), b.dimensions());
        let differ = a.pixels().zip(b.pixels()).filter(|(p, q)| (p[0] > 0) != (q[0] > 0)).count();
        let share = differ as f64 / (a.width() * a.height()) as f64;
        assert!(share <= 1e-3, "frame {frame}: {:.4} % of the pixels differ", share * 100.0);
        foreground += a.pixels().filter(|p| p[0] > 0).count();
    }
    // The comparison means something only if the masks are not all empty (or all full).
    let total = 5 * 1280 * 720;
    assert!(foreground > 0 && foreground < total, "foreground {foreground} of {total}");
}
