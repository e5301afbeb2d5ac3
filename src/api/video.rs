//! Video files through a streaming session: ffmpeg demuxes the file, and its audio and the
//! AVSBench-sampled frames are pushed into a [`Session`] in capture order, as a live source would
//! deliver them. `avseg segment --video`, Rust users and (later) C users share this one driver.

use std::collections::VecDeque;
use std::path::Path;

use image::RgbImage;

use super::session::{Session, SessionStats, StreamResult};
use crate::error::Error;
use crate::io::video::{decode_audio_track, probe, SampledFrames, VideoInfo};

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
/// delivered by the time the camera's next sampled frame arrives.
pub fn segment_video(
    session: &mut Session,
    video: &Path,
    mut on_result: impl FnMut(VideoResult<'_>) -> Result<(), Error>,
) -> Result<VideoSummary, Error> {
    let info = probe(video)?;
    let (audio, rate, channels) = decode_audio_track(&info)?;
    let mut frames = SampledFrames::open(&info)?;
    // Frames wait here, in capture order, until their result comes back (bounded by the window).
    let mut waiting: VecDeque<(u64, f64, RgbImage)> = VecDeque::new();
    let mut pushed = 0usize;
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

    let samples_until = |t: f64| -> usize { ((t.max(0.0) * rate as f64) as usize * channels).min(audio.len()) };
    while let Some(frame) = frames.next_frame()? {
        let end = samples_until(frame.timestamp + 1.0);
        if end > pushed {
            let ts = (pushed / channels) as f64 / rate as f64;
            session.push_audio(&audio[pushed..end], rate, channels, ts)?;
            pushed = end;
        }
        session.push_frame(frame.image.as_raw(), frame.image.width(), frame.image.height(), frame.timestamp)?;
        waiting.push_back((frame.index, frame.timestamp, frame.image));
        session.process()?;
        drain(session, &mut waiting)?;
    }
    if audio.len() > pushed {
        let ts = (pushed / channels) as f64 / rate as f64;
        session.push_audio(&audio[pushed..], rate, channels, ts)?;
    }
    session.finish()?;
    drain(session, &mut waiting)?;
    Ok(VideoSummary { info, audio_rate: rate, audio_channels: channels, results, stats: session.stats().clone() })
}
