//! A live session fed the way a camera and a microphone would feed it: 10 ms of stereo PCM at a
//! time and camera frames at 10 fps, with results taken as they come. The "camera" and
//! "microphone" replay a clip folder, so the example runs anywhere; only avseg's public API is used.
//!
//! ```sh
//! cargo run --release --example live -- models/default models/sample
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use avseg::{find_clip, ClipInput, Session, SessionOptions};

const FPS: f64 = 10.0;

fn run(model: PathBuf, clip: PathBuf) -> Result<(), avseg::Error> {
    let source = ClipInput::load(&find_clip(&clip)?)?;
    let mut session = Session::new(&model, &SessionOptions::default())?;
    let rate = source.audio.rate;
    // The microphone: interleaved stereo, 10 ms chunks.
    let stereo: Vec<f32> = source.audio.samples.iter().flat_map(|&v| [v, v]).collect();
    let chunk = 2 * (rate as usize / 100).max(1);
    let seconds = source.audio.samples.len() as f64 / rate as f64;
    let frames = (seconds * FPS) as usize;
    let mut sent = 0;
    for i in 0..frames {
        let now = i as f64 / FPS;
        // Everything the microphone has captured up to now.
        while sent < stereo.len() && ((sent / 2) as f64) / (rate as f64) < now {
            let end = (sent + chunk).min(stereo.len());
            session.push_audio(&stereo[sent..end], rate, 2, (sent / 2) as f64 / rate as f64)?;
            sent = end;
        }
        // The camera shows the clip's frame of the current second.
        let image = &source.frames[(now as usize).min(source.frames.len() - 1)].image;
        session.push_frame(image.as_raw(), image.width(), image.height(), now)?;
        session.process()?;
        while let Some(r) = session.pop_result() {
            println!(
                "sampled frame {} (captured at {:.2} s): {} object(s), {:.1} % foreground, latency {:.0} ms",
                r.sequence,
                r.frame_timestamp,
                r.objects.len(),
                100.0 * r.mask.foreground_fraction(),
                r.latency.as_secs_f64() * 1e3
            );
        }
    }
    if sent < stereo.len() {
        session.push_audio(&stereo[sent..], rate, 2, (sent / 2) as f64 / rate as f64)?;
    }
    session.finish()?;
    while let Some(r) = session.pop_result() {
        println!("sampled frame {} (captured at {:.2} s): {} object(s) [end of stream]", r.sequence, r.frame_timestamp, r.objects.len());
    }
    let s = session.stats();
    println!("{} frames pushed, {} used, {} results, {} dropped", s.frames_pushed, s.frames_used, s.results, s.frames_dropped);
    Ok(())
}

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1).map(PathBuf::from);
    let (Some(model), Some(clip)) = (args.next(), args.next()) else {
        eprintln!("usage: live MODEL_DIR CLIP_DIR");
        return ExitCode::from(2);
    };
    match run(model, clip) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error ({:?}): {e}", e.kind());
            ExitCode::FAILURE
        }
    }
}
