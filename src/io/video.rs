//! Video files (MP4, MKV, MOV, WebM, …) through the `ffmpeg` and `ffprobe` programs.
//!
//! avseg drives the ffmpeg command-line tools rather than linking libav*: builds stay free of
//! native dependencies, and field images that can play a video already have ffmpeg. Both programs
//! must be on `PATH`, or be named by `$AVSEG_FFMPEG` / `$AVSEG_FFPROBE`.
//!
//! Frames are sampled as AVSBench made its data (docs/spec/vision.md §4.1): in second `l`, the frame with
//! index `int((l + 15/16) · round(fps))`. Audio is decoded at the file's own rate and channel
//! count; the audio front end resamples it.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};

use image::RgbImage;

use super::DecodeError;

/// What ffprobe reports about a video file.
#[derive(Clone, Debug, PartialEq)]
pub struct VideoInfo {
    /// The probed file.
    pub path: PathBuf,
    /// Frame width in pixels.
    pub width: u32,
    /// Frame height in pixels.
    pub height: u32,
    /// Average frame rate of the video stream.
    pub fps: f64,
    /// Container duration in seconds.
    pub duration: f64,
    /// The first audio track, if the file has one.
    pub audio: Option<AudioTrackInfo>,
}

/// What ffprobe reports about a video file's audio track.
#[derive(Clone, Debug, PartialEq)]
pub struct AudioTrackInfo {
    /// Sample rate in Hz.
    pub rate: u32,
    /// Number of channels.
    pub channels: usize,
    /// ffprobe's codec name, e.g. `aac`.
    pub codec: String,
}

fn err(path: &Path, detail: impl Into<String>) -> DecodeError {
    DecodeError::Video { path: path.to_path_buf(), detail: detail.into() }
}

fn tool(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.to_string())
}

fn spawn_error(path: &Path, program: &str, e: std::io::Error) -> DecodeError {
    if e.kind() == std::io::ErrorKind::NotFound {
        err(path, format!("`{program}` was not found; install ffmpeg (Debian/Ubuntu: apt-get install ffmpeg) or set AVSEG_FFMPEG/AVSEG_FFPROBE"))
    } else {
        err(path, format!("cannot run `{program}`: {e}"))
    }
}

/// Last meaningful line of a tool's stderr, for error messages.
fn last_line(stderr: &[u8]) -> String {
    String::from_utf8_lossy(stderr).lines().map(str::trim).filter(|l| !l.is_empty()).last().unwrap_or("no message").to_string()
}

fn parse_rate(s: &str) -> Option<f64> {
    let (n, d) = s.split_once('/').unwrap_or((s, "1"));
    let (n, d): (f64, f64) = (n.trim().parse().ok()?, d.trim().parse().ok()?);
    (d != 0.0 && n > 0.0).then(|| n / d)
}

/// Reads stream and container facts with ffprobe.
pub fn probe(path: &Path) -> Result<VideoInfo, DecodeError> {
    if !path.is_file() {
        return Err(err(path, "file not found"));
    }
    let program = tool("AVSEG_FFPROBE", "ffprobe");
    let out = Command::new(&program)
        .args(["-v", "error", "-print_format", "json", "-show_streams", "-show_format"])
        .arg(path)
        .output()
        .map_err(|e| spawn_error(path, &program, e))?;
    if !out.status.success() {
        return Err(err(path, format!("not a readable video ({})", last_line(&out.stderr))));
    }
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| err(path, format!("unexpected ffprobe output: {e}")))?;
    let streams = json["streams"].as_array().cloned().unwrap_or_default();
    let video = streams
        .iter()
        .find(|s| s["codec_type"] == "video" && s["disposition"]["attached_pic"].as_i64() != Some(1))
        .ok_or_else(|| err(path, "no video stream"))?;
    let width = video["width"].as_u64().unwrap_or(0) as u32;
    let height = video["height"].as_u64().unwrap_or(0) as u32;
    if width == 0 || height == 0 {
        return Err(err(path, "video stream has no frame size"));
    }
    let fps = video["avg_frame_rate"]
        .as_str()
        .and_then(parse_rate)
        .or_else(|| video["r_frame_rate"].as_str().and_then(parse_rate))
        .ok_or_else(|| err(path, "video stream has no frame rate"))?;
    let duration = json["format"]["duration"]
        .as_str()
        .and_then(|d| d.parse::<f64>().ok())
        .or_else(|| video["duration"].as_str().and_then(|d| d.parse().ok()))
        .ok_or_else(|| err(path, "unknown duration"))?;
    let audio = streams.iter().find(|s| s["codec_type"] == "audio").map(|a| AudioTrackInfo {
        rate: a["sample_rate"].as_str().and_then(|r| r.parse().ok()).unwrap_or(0),
        channels: a["channels"].as_u64().unwrap_or(0) as usize,
        codec: a["codec_name"].as_str().unwrap_or("?").to_string(),
    });
    Ok(VideoInfo { path: path.to_path_buf(), width, height, fps, duration, audio })
}

/// Decodes the whole first audio track to interleaved f32 at its own rate and channel count.
/// Memory grows with the duration; [`AudioTrackReader`] reads it piece by piece instead.
pub fn decode_audio_track(info: &VideoInfo) -> Result<(Vec<f32>, u32, usize), DecodeError> {
    let mut reader = AudioTrackReader::open(info)?;
    let mut samples = Vec::new();
    while reader.read(usize::MAX / 2, &mut samples)? > 0 {}
    Ok((samples, reader.rate(), reader.channels()))
}

/// The first audio track streamed out of ffmpeg as interleaved f32 at its own rate and channel
/// count, a piece at a time: memory stays what the caller asks for, whatever the duration.
pub struct AudioTrackReader {
    child: Child,
    stdout: ChildStdout,
    path: PathBuf,
    rate: u32,
    channels: usize,
    /// Sample frames (one per channel group) read so far.
    frames_read: u64,
    /// Bytes of a sample frame split across two reads.
    partial: Vec<u8>,
    bytes: Vec<u8>,
    done: bool,
}

impl AudioTrackReader {
    /// Starts decoding the file's first audio track.
    pub fn open(info: &VideoInfo) -> Result<Self, DecodeError> {
        let path = &info.path;
        let track = info.audio.as_ref().ok_or_else(|| DecodeError::NoAudioTrack { path: path.clone() })?;
        if track.rate == 0 || track.channels == 0 {
            return Err(err(path, format!("audio track ({}) has no rate or channel count", track.codec)));
        }
        let program = tool("AVSEG_FFMPEG", "ffmpeg");
        let mut child = Command::new(&program)
            .args(["-nostdin", "-v", "error", "-i"])
            .arg(path)
            .args(["-map", "0:a:0", "-vn", "-f", "f32le", "-acodec", "pcm_f32le", "pipe:1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| spawn_error(path, &program, e))?;
        let stdout = child.stdout.take().expect("stdout was piped");
        Ok(Self {
            child,
            stdout,
            path: path.clone(),
            rate: track.rate,
            channels: track.channels,
            frames_read: 0,
            partial: Vec::with_capacity(4 * track.channels),
            bytes: Vec::new(),
            done: false,
        })
    }

    /// The track's sample rate in Hz.
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// The track's channel count.
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// Sample frames (one per channel group) read so far.
    pub fn frames_read(&self) -> u64 {
        self.frames_read
    }

    /// Appends up to `max_frames` sample frames (whole channel groups) to `out` and returns how
    /// many; 0 at the end of the track. A NaN or infinite sample is an error naming its time.
    pub fn read(&mut self, max_frames: usize, out: &mut Vec<f32>) -> Result<usize, DecodeError> {
        let frame_bytes = 4 * self.channels;
        let want = max_frames.min(1 << 16).saturating_mul(frame_bytes);
        if self.done || want == 0 {
            return Ok(0);
        }
        self.bytes.clear();
        self.bytes.extend_from_slice(&self.partial);
        self.partial.clear();
        let mut filled = self.bytes.len();
        self.bytes.resize(want.max(filled), 0);
        while filled < want {
            match self.stdout.read(&mut self.bytes[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(err(&self.path, format!("reading audio from ffmpeg: {e}"))),
            }
        }
        let whole = filled / frame_bytes * frame_bytes;
        self.partial.extend_from_slice(&self.bytes[whole..filled]);
        if whole == 0 {
            return self.finish();
        }
        let first = self.frames_read;
        let start = out.len();
        out.extend(self.bytes[..whole].chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])));
        if let Some(i) = out[start..].iter().position(|v| !v.is_finite()) {
            let seconds = (first + (i / self.channels) as u64) as f64 / self.rate as f64;
            return Err(DecodeError::NonFiniteSample { path: self.path.clone(), value: out[start + i], seconds });
        }
        let frames = whole / frame_bytes;
        self.frames_read += frames as u64;
        Ok(frames)
    }

    /// The end of ffmpeg's output: its exit status decides whether the track was read whole.
    fn finish(&mut self) -> Result<usize, DecodeError> {
        self.done = true;
        let status = self.child.wait().map_err(|e| err(&self.path, e.to_string()))?;
        let mut stderr = Vec::new();
        if let Some(mut s) = self.child.stderr.take() {
            let _ = s.read_to_end(&mut stderr);
        }
        if !status.success() {
            return Err(err(&self.path, format!("cannot decode the audio track ({})", last_line(&stderr))));
        }
        if !self.partial.is_empty() {
            return Err(err(&self.path, "ffmpeg's audio ended in the middle of a sample frame"));
        }
        Ok(0)
    }
}

impl Drop for AudioTrackReader {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Frame indices AVSBench keeps: `int((l + 15/16) · round(fps))` for each whole second `l`.
pub fn avsbench_frame_index(second: u64, fps: f64) -> u64 {
    let f = fps.round().max(1.0) as u64;
    // (l + 15/16)·f = l·f + 15f/16, and l·f is an integer, so the floor falls on the fraction.
    second * f + (15 * f) / 16
}

/// One sampled frame.
#[derive(Clone, Debug)]
pub struct VideoFrame {
    /// Index of the frame in the stream.
    pub index: u64,
    /// Presentation time, `index / fps` seconds.
    pub timestamp: f64,
    pub image: RgbImage,
}

/// Streams the AVSBench-sampled frames (one per second) out of ffmpeg, one at a time, so a long
/// video never sits in memory.
pub struct SampledFrames {
    child: Child,
    stdout: ChildStdout,
    info: VideoInfo,
    second: u64,
    done: bool,
}

impl SampledFrames {
    pub fn open(info: &VideoInfo) -> Result<Self, DecodeError> {
        let f = info.fps.round().max(1.0) as u64;
        let k = (15 * f) / 16;
        let program = tool("AVSEG_FFMPEG", "ffmpeg");
        // Select by stream frame number, not by time: that is how AVSBench indexed its frames.
        let filter = format!("select='eq(mod(n\\,{f})\\,{k})'");
        let mut child = Command::new(&program)
            .args(["-nostdin", "-v", "error", "-i"])
            .arg(&info.path)
            .args(["-map", "0:v:0", "-an", "-vf", &filter, "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| spawn_error(&info.path, &program, e))?;
        let stdout = child.stdout.take().expect("stdout was piped");
        Ok(SampledFrames { child, stdout, info: info.clone(), second: 0, done: false })
    }

    /// The next sampled frame, or `None` at the end of the video.
    pub fn next_frame(&mut self) -> Result<Option<VideoFrame>, DecodeError> {
        if self.done {
            return Ok(None);
        }
        let (w, h) = (self.info.width, self.info.height);
        let mut buf = vec![0u8; w as usize * h as usize * 3];
        let mut filled = 0;
        while filled < buf.len() {
            match self.stdout.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(err(&self.info.path, format!("reading frames from ffmpeg: {e}"))),
            }
        }
        if filled < buf.len() {
            self.done = true;
            let status = self.child.wait().map_err(|e| err(&self.info.path, e.to_string()))?;
            let mut stderr = Vec::new();
            if let Some(mut s) = self.child.stderr.take() {
                let _ = s.read_to_end(&mut stderr);
            }
            if !status.success() {
                return Err(err(&self.info.path, format!("ffmpeg failed while decoding frames ({})", last_line(&stderr))));
            }
            if filled > 0 {
                return Err(err(&self.info.path, "ffmpeg ended in the middle of a frame"));
            }
            return Ok(None);
        }
        let index = avsbench_frame_index(self.second, self.info.fps);
        self.second += 1;
        let image = RgbImage::from_raw(w, h, buf).expect("buffer sized for the frame");
        Ok(Some(VideoFrame { index, timestamp: index as f64 / self.info.fps, image }))
    }
}

impl Drop for SampledFrames {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampled_indices_match_avsbench() {
        let at25: Vec<u64> = (0..5).map(|l| avsbench_frame_index(l, 25.0)).collect();
        assert_eq!(at25, [23, 48, 73, 98, 123]);
        let at30: Vec<u64> = (0..5).map(|l| avsbench_frame_index(l, 29.97)).collect();
        assert_eq!(at30, [28, 58, 88, 118, 148]);
    }

    #[test]
    fn frame_rates_parse() {
        assert_eq!(parse_rate("30000/1001").map(|r| (r * 1000.0).round()), Some(29970.0));
        assert_eq!(parse_rate("25"), Some(25.0));
        assert_eq!(parse_rate("0/0"), None);
    }
}
