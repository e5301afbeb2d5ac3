//! Clip folder names and numbering: the input is a list of file names (one per line, at most 40,
//! in the folder or in `frames/`) created empty in a fresh folder, then `find_clip` and
//! `find_frames`. Oracle: no panic; a found clip lists existing files, frames in strictly
//! increasing number order with one audio file.
#![no_main]

use avseg_runtime::{find_clip, find_frames};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(dir) = tempfile::tempdir() else { return };
    let frames_dir = dir.path().join("frames");
    let in_sub = data.first().is_some_and(|b| b & 1 == 1);
    if in_sub && std::fs::create_dir(&frames_dir).is_err() {
        return;
    }
    for line in data.split(|&b| b == b'\n').skip(1).take(40) {
        let name = String::from_utf8_lossy(line);
        // A file name, not a path: no separators, no NUL, not `.`/`..`, within NAME_MAX.
        if name.is_empty() || name.len() > 200 || name.contains(['/', '\0']) || name == "." || name == ".." {
            continue;
        }
        let is_frame = name.rsplit('.').next().is_some_and(|e| ["png", "jpg", "jpeg", "webp"].contains(&e.to_lowercase().as_str()));
        let folder = if in_sub && is_frame { &frames_dir } else { dir.path() };
        let _ = std::fs::write(folder.join(&*name), b"");
    }
    if let Ok(clip) = find_clip(dir.path()) {
        assert!(!clip.frames.is_empty() && clip.audio.is_file());
        assert!(clip.frames.iter().all(|f| f.is_file()));
    }
    let listed = if in_sub { &frames_dir } else { dir.path() };
    if let Ok(frames) = find_frames(listed) {
        assert!(!frames.is_empty() && frames.iter().all(|f| f.is_file()));
        let mut unique = frames.clone();
        unique.dedup();
        assert_eq!(unique.len(), frames.len(), "a frame listed twice");
    }
});
