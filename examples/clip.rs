//! Segments a clip folder (numbered frames plus one audio file) with a model package, using only
//! avseg's public API, and prints each frame's sounding objects.
//!
//! ```sh
//! cargo run --release --example clip -- models/default models/sample
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use avseg::{find_clip, ClipInput, Engine, EngineOptions};

fn run(model: PathBuf, clip: PathBuf) -> Result<(), avseg::Error> {
    let mut engine = Engine::load(&model, &EngineOptions::default())?;
    let input = ClipInput::load(&find_clip(&clip)?)?;
    let out = engine.run_clip(&input)?;
    for f in &out.frames {
        println!(
            "frame {} at {:.4} s ({}x{}): {} sounding object(s), {:.1} % of the frame",
            f.index,
            f.timestamp,
            f.mask.width,
            f.mask.height,
            f.objects.len(),
            100.0 * f.mask.foreground_fraction()
        );
        for o in &f.objects {
            println!("  object {}: box {:?}, centroid {:?}, confidence {:.2}", o.id, o.bbox, o.centroid, o.confidence);
        }
    }
    println!("{} frames on {} in {:.0} ms", out.frames.len(), engine.backend_name(), out.times.total().as_secs_f64() * 1e3);
    Ok(())
}

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1).map(PathBuf::from);
    let (Some(model), Some(clip)) = (args.next(), args.next()) else {
        eprintln!("usage: clip MODEL_DIR CLIP_DIR");
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
