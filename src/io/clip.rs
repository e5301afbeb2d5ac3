//! Finding the frames and the audio of a clip on disk.
//!
//! Accepted layouts (the ones AVSBench and its derivatives use):
//! * AVSBench S4/MS3: `{video}_1.png … {video}_5.png` (MS3: `{video}.mp4_1.png …`), 1-based;
//! * plain numbered frames: `1.png …` or AVSS `frames/0.jpg …` (0-based);
//! * a clip folder holds the frames (directly or in `frames/`) and exactly one audio file.
//!
//! Frames are ordered by their trailing number; a gap in the numbering is an error, because a
//! missing frame would silently shift the pairing of every later frame with its audio patch.

use std::path::{Path, PathBuf};

use super::DecodeError;

/// Image extensions read as frames.
pub const FRAME_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "webp"];
/// Audio extensions looked for in a clip folder.
pub const AUDIO_EXTENSIONS: &[&str] = &["wav", "flac", "ogg", "oga", "mp3"];

/// The files of one clip, frames in temporal order.
#[derive(Clone, Debug, PartialEq)]
pub struct ClipFiles {
    /// The frame images, in temporal order.
    pub frames: Vec<PathBuf>,
    /// The clip's audio file.
    pub audio: PathBuf,
}

fn clip_err(path: &Path, detail: impl Into<String>) -> DecodeError {
    DecodeError::Clip { path: path.to_path_buf(), detail: detail.into() }
}

fn has_ext(path: &Path, exts: &[&str]) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| exts.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

fn list_dir(dir: &Path) -> Result<Vec<PathBuf>, DecodeError> {
    let rd = std::fs::read_dir(dir).map_err(|e| DecodeError::Read { path: dir.to_path_buf(), source: e })?;
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| DecodeError::Read { path: dir.to_path_buf(), source: e })?;
        out.push(entry.path());
    }
    out.sort();
    Ok(out)
}

/// Splits a frame stem into (prefix, index): `vid_3` → ("vid_", 3), `vid.mp4_3` → ("vid.mp4_", 3),
/// `7` → ("", 7).
fn frame_index(stem: &str) -> Option<(String, usize)> {
    let digits = stem.len() - stem.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    if digits == 0 || digits > 9 {
        return None;
    }
    let (prefix, num) = stem.split_at(stem.len() - digits);
    Some((prefix.to_string(), num.parse().ok()?))
}

/// Lists the frames of `dir` in temporal order, checking the numbering is contiguous.
pub fn find_frames(dir: &Path) -> Result<Vec<PathBuf>, DecodeError> {
    if !dir.is_dir() {
        return Err(clip_err(dir, "frame folder not found"));
    }
    let mut numbered = Vec::new();
    for path in list_dir(dir)?.into_iter().filter(|p| p.is_file() && has_ext(p, FRAME_EXTENSIONS)) {
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
        match frame_index(stem) {
            Some((prefix, idx)) => numbered.push((prefix, idx, path)),
            None => return Err(clip_err(&path, "frame file name has no trailing frame number")),
        }
    }
    if numbered.is_empty() {
        return Err(clip_err(dir, format!("no frames found (expected {} files)", FRAME_EXTENSIONS.join("/"))));
    }
    let prefix = numbered[0].0.clone();
    if let Some((other, _, p)) = numbered.iter().find(|(pre, _, _)| *pre != prefix) {
        return Err(clip_err(
            p,
            format!("frames from more than one sequence in one folder (prefixes {prefix:?} and {other:?})"),
        ));
    }
    numbered.sort_by_key(|(_, idx, _)| *idx);
    if let Some(w) = numbered.windows(2).find(|w| w[0].1 == w[1].1) {
        return Err(clip_err(&w[1].2, format!("two frames share number {} ({})", w[0].1, w[0].2.display())));
    }
    let first = numbered[0].1;
    if first > 1 {
        return Err(clip_err(dir, format!("frame numbering starts at {first}; frames before it are missing")));
    }
    for (expected, (_, idx, _)) in (first..).zip(&numbered) {
        if *idx != expected {
            return Err(clip_err(
                dir,
                format!("frame {prefix}{expected} is missing (the sequence jumps to {prefix}{idx})"),
            ));
        }
    }
    Ok(numbered.into_iter().map(|(_, _, p)| p).collect())
}

/// Resolves a clip folder: frames directly in it or in `frames/`, and exactly one audio file.
pub fn find_clip(dir: &Path) -> Result<ClipFiles, DecodeError> {
    if !dir.is_dir() {
        return Err(clip_err(dir, "clip folder not found"));
    }
    let sub = dir.join("frames");
    let frames = if sub.is_dir() { find_frames(&sub)? } else { find_frames(dir)? };
    let audio: Vec<PathBuf> =
        list_dir(dir)?.into_iter().filter(|p| p.is_file() && has_ext(p, AUDIO_EXTENSIONS)).collect();
    match audio.len() {
        0 => Err(clip_err(dir, format!("no audio file in clip folder (expected one {} file)", AUDIO_EXTENSIONS.join("/")))),
        1 => Ok(ClipFiles { frames, audio: audio.into_iter().next().unwrap() }),
        n => Err(clip_err(dir, format!("{n} audio files in clip folder; pass one with --audio"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_numbers_parse_avsbench_names() {
        assert_eq!(frame_index("abc_3"), Some(("abc_".into(), 3)));
        assert_eq!(frame_index("x.mp4_5"), Some(("x.mp4_".into(), 5)));
        assert_eq!(frame_index("0"), Some(("".into(), 0)));
        assert_eq!(frame_index("frame"), None);
    }

    fn touch(dir: &Path, names: &[&str]) {
        for n in names {
            std::fs::write(dir.join(n), b"x").unwrap();
        }
    }

    #[test]
    fn frames_sort_numerically_and_gaps_are_errors() {
        let d = tempfile::tempdir().unwrap();
        touch(d.path(), &["v_1.png", "v_10.png", "v_2.png", "v_3.png", "v_4.png", "v_5.png", "v_6.png", "v_7.png", "v_8.png", "v_9.png"]);
        let f = find_frames(d.path()).unwrap();
        let names: Vec<_> = f.iter().map(|p| p.file_name().unwrap().to_str().unwrap().to_string()).collect();
        assert_eq!(names[..3], ["v_1.png", "v_2.png", "v_3.png"]);
        assert_eq!(names[9], "v_10.png");
        std::fs::remove_file(d.path().join("v_4.png")).unwrap();
        let e = find_frames(d.path()).unwrap_err().to_string();
        assert!(e.contains("frame v_4 is missing"), "{e}");
    }

    #[test]
    fn clip_needs_exactly_one_audio_file() {
        let d = tempfile::tempdir().unwrap();
        touch(d.path(), &["0.jpg", "1.jpg"]);
        assert!(find_clip(d.path()).unwrap_err().to_string().contains("no audio file"));
        touch(d.path(), &["a.wav"]);
        let c = find_clip(d.path()).unwrap();
        assert_eq!(c.frames.len(), 2);
        touch(d.path(), &["b.flac"]);
        assert!(find_clip(d.path()).unwrap_err().to_string().contains("2 audio files"));
    }
}
