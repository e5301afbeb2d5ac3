//! Audio bytes through `io::audio` (every container the prober knows, hinted by the first byte),
//! then the front end: resampling and log-mel patches. Oracle: no panic, no abort, bounded memory;
//! what decodes is finite and gives finite patches.
#![no_main]

use std::path::Path;

use avseg_runtime::{decode_audio_bytes, AudioFrontend, InputLimits, PatchPadding};
use libfuzzer_sys::fuzz_target;

#[path = "caught_panics.rs"]
mod caught_panics;

const NAMES: [&str; 6] = ["clip.wav", "clip.flac", "clip.ogg", "clip.mp3", "clip.aiff", "clip"];

fuzz_target!(init: caught_panics::tolerate_caught_panics(), |data: &[u8]| {
    let Some((&first, bytes)) = data.split_first() else { return };
    let name = Path::new(NAMES[first as usize % NAMES.len()]);
    let mut limits = InputLimits::default();
    // Whole decodes up to 20 s keep one input's memory near 30 MB at 384 kHz.
    limits.max_audio_seconds = 20.0;
    let needed = (first & 0x80 != 0).then_some(2.0);
    let Ok(pcm) = decode_audio_bytes(name, bytes.to_vec(), &limits, needed) else { return };
    assert!(pcm.samples.iter().all(|v| v.is_finite()), "decoded a non-finite sample");
    let mut frontend = AudioFrontend::new();
    if let Ok(patches) = frontend.clip_patches(&pcm, 3, PatchPadding::RepeatLast) {
        assert!(patches.data().iter().all(|v| v.is_finite()), "non-finite log-mel");
    }
});
