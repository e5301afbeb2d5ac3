//! TEMPORARY stand-in for `crate::api::Session` until branch `session` lands. Deleted on merge.
#![allow(dead_code)]
use std::path::Path;
use std::time::{Duration, Instant};

use crate::api::{ClipInput, Engine, EngineOptions, Frame};
use crate::io::audio::Pcm;
use crate::post::mask::FrameMask;
use crate::post::objects::SoundingObject;
use crate::Error;

#[derive(Clone, Debug)]
pub struct SessionOptions { pub engine: EngineOptions, pub hop: usize, pub frame_queue: usize }
impl Default for SessionOptions {
    fn default() -> Self { Self { engine: EngineOptions::default(), hop: 5, frame_queue: 32 } }
}
#[derive(Clone, Debug)]
pub struct StreamResult { pub sequence: u64, pub frame_timestamp: f64, pub mask: FrameMask, pub objects: Vec<SoundingObject>, pub latency: Duration }
#[derive(Clone, Debug, Default)]
pub struct SessionStats { pub frames_pushed: u64, pub frames_used: u64, pub frames_skipped: u64, pub frames_dropped: u64, pub audio_samples: u64, pub windows: u64, pub results: u64 }

pub struct Session { engine: Engine, audio: Vec<f32>, rate: u32, frames: Vec<(Frame, f64, Instant)>, latest: Option<StreamResult>, stats: SessionStats }

impl Session {
    pub fn new(model_dir: impl AsRef<Path>, options: &SessionOptions) -> Result<Session, Error> {
        Ok(Session { engine: Engine::load(model_dir, &options.engine)?, audio: vec![], rate: 0, frames: vec![], latest: None, stats: SessionStats::default() })
    }
    pub fn push_audio(&mut self, interleaved: &[f32], rate: u32, channels: usize, _timestamp: f64) -> Result<(), Error> {
        self.rate = rate;
        for c in interleaved.chunks_exact(channels) { self.audio.push(c.iter().sum::<f32>() / channels as f32); }
        self.stats.audio_samples += interleaved.len() as u64;
        Ok(())
    }
    pub fn push_frame(&mut self, rgb: &[u8], width: u32, height: u32, timestamp: f64) -> Result<(), Error> {
        let image = image::RgbImage::from_raw(width, height, rgb.to_vec()).ok_or_else(|| Error::Input("bad frame".into()))?;
        self.frames.push((Frame { image, source: "stream".into() }, timestamp, Instant::now()));
        self.stats.frames_pushed += 1;
        Ok(())
    }
    fn run(&mut self, n: usize) -> Result<usize, Error> {
        let taken: Vec<_> = self.frames.drain(..n).collect();
        let clip = ClipInput { frames: taken.iter().map(|f| f.0.clone()).collect(), audio: Pcm { samples: self.audio.clone(), rate: self.rate }, audio_source: "stream".into() };
        let out = self.engine.run_clip(&clip)?;
        for (f, (_, ts, t0)) in out.frames.into_iter().zip(taken) {
            self.latest = Some(StreamResult { sequence: self.stats.results, frame_timestamp: ts, mask: f.mask, objects: f.objects, latency: t0.elapsed() });
            self.stats.results += 1;
        }
        self.stats.windows += 1;
        self.stats.frames_used += n as u64;
        Ok(n)
    }
    pub fn process(&mut self) -> Result<usize, Error> {
        let t = self.engine.package().frames_per_clip();
        if self.frames.len() >= t && self.rate > 0 && self.audio.len() as f64 / self.rate as f64 >= t as f64 * 0.96 + 0.015 { self.run(t) } else { Ok(0) }
    }
    pub fn finish(&mut self) -> Result<usize, Error> {
        let n = self.frames.len();
        if n == 0 { Ok(0) } else { self.run(n) }
    }
    pub fn latest(&self) -> Option<&StreamResult> { self.latest.as_ref() }
    pub fn stats(&self) -> SessionStats { self.stats.clone() }
}
