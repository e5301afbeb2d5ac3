//! Segments a video file (anything ffmpeg reads; needs `ffmpeg` and `ffprobe` on PATH) through a
//! streaming session and writes masks, overlays and results.jsonl, using only avseg's public API:
//! the same driver and writer as `avseg segment --video`.
//!
//! ```sh
//! cargo run --release --example video -- models/default tests/data/video/bigbuckbunny.mp4 out/video
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use avseg::{segment_video, FrameInfo, FrameWriter, Session, SessionOptions};

fn run(model: PathBuf, video: PathBuf, out: PathBuf) -> Result<(), avseg::Error> {
    let mut session = Session::new(&model, &SessionOptions::default())?;
    let mut writer = FrameWriter::create(&out, &session.package().manifest().output, true)?;
    let source = video.display().to_string();
    let summary = segment_video(&mut session, &video, |r| {
        println!("frame {} at {:.3} s: {} object(s)", r.frame_index, r.timestamp, r.result.objects.len());
        let info = FrameInfo { index: r.frame_index as usize, timestamp: r.timestamp, source: &source };
        Ok(writer.write(&format!("frame_{:06}", r.frame_index), r.image, &r.result.mask, &r.result.objects, info)?)
    })?;
    writer.finish()?;
    println!(
        "{:.1} s of video at {:.2} fps: {} results ({} dropped) -> {}",
        summary.info.duration,
        summary.info.fps,
        summary.results,
        summary.stats.frames_dropped,
        out.display()
    );
    Ok(())
}

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1).map(PathBuf::from);
    let (Some(model), Some(video), Some(out)) = (args.next(), args.next(), args.next()) else {
        eprintln!("usage: video MODEL_DIR VIDEO_FILE OUT_DIR");
        return ExitCode::from(2);
    };
    match run(model, video, out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error ({:?}): {e}", e.kind());
            ExitCode::FAILURE
        }
    }
}
