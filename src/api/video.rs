//! Video files through a streaming session: ffmpeg demuxes the file, and its audio and the
//! AVSBench-sampled frames are pushed into a [`Session`] in capture order, as a live source would
//! deliver them. `avseg segment --video`, Rust users and (later) C users share this one driver.

use std::collections::VecDeque;
use std::path::Path;

use image::RgbImage;

use super::session::{Session, SessionStats, StreamResult};
use crate::error::Error;
use crate::io::video::{probe, AudioTrackReader, SampledFrames, VideoInfo};

/// One result of a video run, with the frame it belongs to.
#[derive(Debug)]
pub struct VideoResult<'a> {
    /// The frame's index in the video's own frame numbering.
    pub frame_index: u64,
    /// The frame's time in the video, in seconds (`frame_index / fps`).
    pub timestamp: f64,
    /// The decoded frame.
    pub image: &'a RgbImage,
    /// The session's result for it.
    pub result: &'a StreamResult,
}

/// What a video run did.
#[derive(Clone, Debug)]
pub struct VideoSummary {
    /// The probed video.
    pub info: VideoInfo,
    /// The audio track's rate in Hz.
    pub audio_rate: u32,
    /// The audio track's channel count.
    pub audio_channels: usize,
    /// Results handed to the callback.
    pub results: usize,
    /// The session's counters at the end of the run.
    pub stats: SessionStats,
}

/// Segments a video file through `session`, calling `on_result` for every result in order. The
/// session is finished at the end (the last window is completed as batch mode does).
///
/// Audio is pushed up to one second past each sampled frame: what a live microphone would have
/// delivered by the time the camera's next sampled frame arrives. Both the audio and the frames
/// stream out of ffmpeg as they are needed (the audio in pieces of 0.1 s), so memory does not grow
/// with the video's duration.
pub fn segment_video(
    session: &mut Session,
    video: &Path,
    mut on_result: impl FnMut(VideoResult<'_>) -> Result<(), Error>,
) -> Result<VideoSummary, Error> {
    let info = probe(video)?;
    let mut audio = AudioTrackReader::open(&info)?;
    let (rate, channels) = (audio.rate(), audio.channels());
    let piece = (rate as usize / 10).max(1);
    let mut chunk = Vec::with_capacity(piece * channels);
    let mut frames = SampledFrames::open(&info)?;
    // Frames wait here, in capture order, until their result comes back (bounded by the window).
    let mut waiting: VecDeque<(u64, f64, RgbImage)> = VecDeque::new();
    let mut results = 0usize;

    let mut drain = |session: &mut Session, waiting: &mut VecDeque<(u64, f64, RgbImage)>| -> Result<(), Error> {
        while let Some(r) = session.pop_result() {
            while waiting.front().is_some_and(|(_, ts, _)| *ts < r.frame_timestamp) {
                waiting.pop_front();
            }
            let Some((index, ts, image)) = waiting.front() else { continue };
            on_result(VideoResult { frame_index: *index, timestamp: *ts, image, result: &r })?;
            results += 1;
        }
        Ok(())
    };

    // Pushes the track's audio up to sample frame `until` (or its end); false once it has ended.
    let mut push_until = |session: &mut Session, until: u64| -> Result<bool, Error> {
        while audio.frames_read() < until {
            let ts = audio.frames_read() as f64 / rate as f64;
            chunk.clear();
            let want = (until - audio.frames_read()).min(piece as u64) as usize;
            if audio.read(want, &mut chunk)? == 0 {
                return Ok(false);
            }
            session.push_audio(&chunk, rate, channels, ts)?;
        }
        Ok(true)
    };
    while let Some(frame) = frames.next_frame()? {
        push_until(session, ((frame.timestamp + 1.0).max(0.0) * rate as f64) as u64)?;
        session.push_frame(frame.image.as_raw(), frame.image.width(), frame.image.height(), frame.timestamp)?;
        waiting.push_back((frame.index, frame.timestamp, frame.image));
        session.process()?;
        drain(session, &mut waiting)?;
    }
    while push_until(session, u64::MAX)? {}
    session.finish()?;
    drain(session, &mut waiting)?;
    Ok(VideoSummary { info, audio_rate: rate, audio_channels: channels, results, stats: session.stats().clone() })
}
