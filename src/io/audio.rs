//! Audio decoding with symphonia: WAV (int16/24/32, float32), FLAC, Ogg/Vorbis, MP3 → mono f32 PCM
//! at the file's own rate.
//!
//! Integer samples are scaled by 1/2^(bits-1); for int16 that is exactly `int / 32768`, the
//! official loader's scaling (symphonia's i16→f32 conversion is `s as f32 / 32768.0`, exact in f32).
//!
//! Truncation policy: when the container states how many frames it holds (WAV data chunk length,
//! FLAC STREAMINFO) and fewer can be read, decoding fails with [`DecodeError::CorruptAudio`] naming
//! the file and both counts. Returning the shorter audio instead would silently shift which audio
//! patch pairs with which video frame. WAVs written by a stream (length field 0xFFFFFFFF) state no
//! length and decode up to the end of the file.

#[cfg(feature = "audio-files")]
use std::fs::File;
#[cfg(feature = "audio-files")]
use std::io::Read;
#[cfg(feature = "audio-files")]
use std::path::{Path, PathBuf};


#[cfg(feature = "audio-files")]
use symphonia::core::codecs::audio::AudioDecoderOptions;
#[cfg(feature = "audio-files")]
use symphonia::core::errors::Error as SymError;
#[cfg(feature = "audio-files")]
use symphonia::core::formats::probe::Hint;
#[cfg(feature = "audio-files")]
use symphonia::core::formats::{FormatOptions, TrackType};
#[cfg(feature = "audio-files")]
use symphonia::core::io::MediaSourceStream;
#[cfg(feature = "audio-files")]
use symphonia::core::meta::MetadataOptions;

#[cfg(feature = "audio-files")]
use super::DecodeError;
#[cfg(feature = "audio-files")]
use super::limits::InputLimits;

/// Mono PCM at the file's own rate. Integer PCM is scaled as int/32768 (int16) like the official
/// loader; multi-channel audio is averaged to mono (channel mean).
#[derive(Clone, Debug, PartialEq)]
pub struct Pcm {
    /// Mono samples, nominally in -1..1.
    pub samples: Vec<f32>,
    /// Sample rate in Hz.
    pub rate: u32,
}

impl Pcm {
    /// Duration in seconds (0 when `rate` is 0).
    pub fn seconds(&self) -> f64 {
        if self.rate == 0 {
            0.0
        } else {
            self.samples.len() as f64 / self.rate as f64
        }
    }
}

/// Averages interleaved channels into mono, appending to `out`.
///
/// The mean is taken in f64 so it does not depend on channel order; for int16 stereo the result
/// equals the f32 mean exactly. A trailing partial frame is ignored. `channels == 0` appends nothing.
pub fn mix_to_mono(interleaved: &[f32], channels: usize, out: &mut Vec<f32>) {
    match channels {
        0 => {}
        1 => out.extend_from_slice(interleaved),
        _ => {
            let inv = 1.0 / channels as f64;
            out.extend(interleaved.chunks_exact(channels).map(|frame| {
                let sum: f64 = frame.iter().map(|&v| v as f64).sum();
                (sum * inv) as f32
            }))
        }
    }
}

#[cfg(feature = "audio-files")]
/// Formats whose stated frame count is exact, so a shortfall means a damaged file rather than an
/// estimate (MP3 and Vorbis durations can be estimates or include encoder padding).
fn has_exact_length(format_short_name: &str) -> bool {
    matches!(format_short_name, "wave" | "aiff" | "flac")
}

#[cfg(feature = "audio-files")]
/// The codec tag of a RIFF/WAVE file's `fmt ` chunk, read directly from the header so an
/// unsupported codec can be named (symphonia only says "unsupported wave format").
fn wav_format_tag(head: &[u8]) -> Option<u16> {
    if head.len() < 12 || &head[0..4] != b"RIFF" || &head[8..12] != b"WAVE" {
        return None;
    }
    let mut pos = 12;
    while pos + 8 <= head.len() {
        let id = &head[pos..pos + 4];
        let len = u32::from_le_bytes(head[pos + 4..pos + 8].try_into().ok()?) as usize;
        let body = pos + 8;
        if id == b"fmt " {
            let tag = u16::from_le_bytes(head.get(body..body + 2)?.try_into().ok()?);
            // WAVE_FORMAT_EXTENSIBLE keeps the real codec in the first two bytes of the sub-format GUID.
            if tag == 0xFFFE {
                return head.get(body + 24..body + 26).map(|b| u16::from_le_bytes([b[0], b[1]]));
            }
            return Some(tag);
        }
        pos = body.checked_add(len)?.checked_add(len & 1)?;
    }
    None
}

#[cfg(feature = "audio-files")]
fn is_riff_wave(head: &[u8]) -> bool {
    head.len() >= 12 && &head[0..4] == b"RIFF" && &head[8..12] == b"WAVE"
}

#[cfg(feature = "audio-files")]
/// Decodes a whole audio file to mono f32 PCM at its own sample rate, within the default
/// [`InputLimits`].
///
/// Never panics on file content: a panic inside a codec (a bug there, triggered by a malformed file)
/// is reported as [`DecodeError::CorruptAudio`] for that file.
pub fn decode_audio(path: &Path) -> Result<Pcm, DecodeError> {
    decode_audio_with(path, &InputLimits::default(), None)
}

#[cfg(feature = "audio-files")]
/// Decodes an audio file within `limits`. With `needed_seconds`, decoding stops once that much audio
/// is in (plus [`DECODE_MARGIN_SECONDS`], so the resampler's last blocks see the same input as in a
/// whole decode), with a warning naming what was left; without it the whole file is decoded, and
/// audio longer than `limits.max_audio_seconds` is an error.
pub fn decode_audio_with(path: &Path, limits: &InputLimits, needed_seconds: Option<f64>) -> Result<Pcm, DecodeError> {
    let p = || path.to_path_buf();
    let meta = std::fs::metadata(path).map_err(|source| DecodeError::Read { path: p(), source })?;
    if meta.is_dir() {
        return Err(DecodeError::Read { path: p(), source: std::io::Error::other("is a directory") });
    }
    if meta.len() == 0 {
        return Err(DecodeError::Empty { path: p() });
    }
    let file = File::open(path).map_err(|source| DecodeError::Read { path: p(), source })?;
    guarded(path, || decode_source(path, Box::new(file), limits, needed_seconds))
}

#[cfg(feature = "audio-files")]
/// [`decode_audio_with`] on bytes in memory (a network buffer, a fuzzer's input); `path` names the
/// source in errors, and its extension, if any, is a hint to the container prober.
pub fn decode_audio_bytes(
    path: &Path,
    bytes: Vec<u8>,
    limits: &InputLimits,
    needed_seconds: Option<f64>,
) -> Result<Pcm, DecodeError> {
    if bytes.is_empty() {
        return Err(DecodeError::Empty { path: path.to_path_buf() });
    }
    guarded(path, || decode_source(path, Box::new(std::io::Cursor::new(bytes)), limits, needed_seconds))
}

/// Audio decoded past what a caller needs, so that the resampler's blocks (10 ms) and filter near
/// the cut see the same input as in a whole decode: the patches are then bit-identical.
pub const DECODE_MARGIN_SECONDS: f64 = 0.5;

#[cfg(feature = "audio-files")]
/// A panic inside a codec becomes a [`DecodeError::CorruptAudio`] naming the file.
fn guarded(path: &Path, decode: impl FnOnce() -> Result<Pcm, DecodeError>) -> Result<Pcm, DecodeError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(decode)).unwrap_or_else(|panic| {
        let why = crate::error::panic_message(&*panic);
        Err(DecodeError::CorruptAudio { path: path.to_path_buf(), detail: format!("decoder failed: {why}") })
    })
}

#[cfg(feature = "audio-files")]
fn decode_source(
    path: &Path,
    mut source: Box<dyn symphonia::core::io::MediaSource>,
    limits: &InputLimits,
    needed_seconds: Option<f64>,
) -> Result<Pcm, DecodeError> {
    use std::io::{Seek, SeekFrom};
    let p = || path.to_path_buf();
    let mut head = Vec::with_capacity(4096);
    (&mut source).take(4096).read_to_end(&mut head).map_err(|source| DecodeError::Read { path: p(), source })?;
    source.seek(SeekFrom::Start(0)).map_err(|source| DecodeError::Read { path: p(), source })?;

    let mut hint = Hint::new();
    if let Some(ext) = path.extension().and_then(|e| e.to_str()) {
        hint.with_extension(ext);
    }
    let mss = MediaSourceStream::new(source, Default::default());
    let mut format = symphonia::default::get_probe()
        .probe(&hint, mss, FormatOptions::default(), MetadataOptions::default())
        .map_err(|e| probe_error(path, &head, e))?;
    let exact_length = has_exact_length(format.format_info().short_name);

    let track = format.default_track(TrackType::Audio).ok_or_else(|| DecodeError::NoAudioTrack { path: p() })?;
    let track_id = track.id;
    let stated_frames = track.num_frames;
    let params = track
        .codec_params
        .as_ref()
        .and_then(|c| c.audio())
        .ok_or_else(|| DecodeError::NoAudioTrack { path: p() })?
        .clone();
    let (min_rate, max_rate) = limits.sample_rates;
    let check_rate = |rate: u32| -> Result<(), DecodeError> {
        if (min_rate..=max_rate).contains(&rate) {
            return Ok(());
        }
        Err(DecodeError::Limit {
            path: p(),
            detail: format!("sample rate {rate} Hz is outside {min_rate}..={max_rate} Hz (InputLimits::sample_rates)"),
        })
    };
    if let Some(rate) = params.sample_rate {
        check_rate(rate)?;
        // A stated length lets a whole decode be refused before it starts.
        if let (None, Some(frames)) = (needed_seconds, stated_frames) {
            check_duration(path, frames as f64 / rate as f64, "", limits)?;
        }
    }
    let mut decoder = symphonia::default::get_codecs()
        .make_audio_decoder(&params, &AudioDecoderOptions::default())
        .map_err(|e| match e {
            SymError::Unsupported(_) => DecodeError::UnsupportedCodec { path: p(), codec: params.codec.to_string() },
            other => DecodeError::CorruptAudio { path: p(), detail: other.to_string() },
        })?;

    let mut samples = Vec::new();
    let mut interleaved: Vec<f32> = Vec::new();
    let mut rate = params.sample_rate.unwrap_or(0);
    let mut frames_decoded: u64 = 0;
    let mut skipped_packets = 0usize;
    let mut stopped_early = false;
    loop {
        let packet = match format.next_packet() {
            Ok(Some(packet)) => packet,
            Ok(None) => break,
            // A chained Ogg stream starts a new logical stream; the first one is the audio.
            Err(SymError::ResetRequired) => break,
            // Running out of bytes mid-packet: the end of a stream without a stated length, or a
            // truncated file, which the length check below tells apart.
            Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(DecodeError::CorruptAudio { path: p(), detail: e.to_string() }),
        };
        if packet.track_id != track_id {
            continue;
        }
        let buf = match decoder.decode(&packet) {
            Ok(buf) => buf,
            // Lossy streams routinely carry a damaged frame or two (e.g. a cut MP3); players skip
            // them. Lossless formats have no such excuse.
            Err(SymError::DecodeError(msg)) if !exact_length => {
                skipped_packets += 1;
                log::warn!("{}: skipped an undecodable packet: {msg}", path.display());
                continue;
            }
            Err(SymError::Unsupported(what)) => {
                return Err(DecodeError::UnsupportedCodec { path: p(), codec: format!("{} ({what})", params.codec) })
            }
            Err(e) => return Err(DecodeError::CorruptAudio { path: p(), detail: e.to_string() }),
        };
        let channels = buf.spec().channels().count();
        rate = buf.spec().rate();
        check_rate(rate)?;
        let n = buf.samples_interleaved();
        if channels == 0 || n == 0 {
            continue;
        }
        interleaved.resize(n, 0.0);
        buf.copy_to_slice_interleaved(&mut interleaved[..]);
        if let Some(i) = interleaved.iter().position(|v| !v.is_finite()) {
            let frame = frames_decoded + (i / channels) as u64;
            return Err(DecodeError::NonFiniteSample {
                path: p(),
                value: interleaved[i],
                seconds: if rate > 0 { frame as f64 / rate as f64 } else { 0.0 },
            });
        }
        mix_to_mono(&interleaved, channels, &mut samples);
        frames_decoded += (n / channels) as u64;
        let seconds = frames_decoded as f64 / rate as f64;
        match needed_seconds {
            Some(needed) if seconds >= needed + DECODE_MARGIN_SECONDS => {
                let stated = stated_frames
                    .zip(params.sample_rate)
                    .map(|(f, r)| format!(" of {:.1} s", f as f64 / r as f64))
                    .unwrap_or_default();
                log::warn!(
                    "{}: only the first {seconds:.1} s{stated} of audio are decoded: the frames need {needed:.2} s",
                    path.display()
                );
                stopped_early = true;
                break;
            }
            None => check_duration(path, seconds, "at least ", limits)?,
            Some(_) => {}
        }
    }

    if exact_length && !stopped_early {
        if let Some(stated) = stated_frames {
            if frames_decoded < stated {
                return Err(DecodeError::CorruptAudio {
                    path: p(),
                    detail: format!(
                        "truncated: the header promises {stated} frames but only {frames_decoded} could be read"
                    ),
                });
            }
        }
    }
    if frames_decoded == 0 && skipped_packets > 0 {
        return Err(DecodeError::CorruptAudio {
            path: p(),
            detail: format!("none of {skipped_packets} packets could be decoded"),
        });
    }
    if rate == 0 {
        return Err(DecodeError::CorruptAudio { path: p(), detail: "no sample rate".into() });
    }
    Ok(Pcm { samples, rate })
}

#[cfg(feature = "audio-files")]
fn check_duration(path: &Path, seconds: f64, at_least: &str, limits: &InputLimits) -> Result<(), DecodeError> {
    if seconds <= limits.max_audio_seconds {
        return Ok(());
    }
    Err(DecodeError::Limit {
        path: path.to_path_buf(),
        detail: format!(
            "audio is {at_least}{seconds:.1} s long, over the limit of {} s for a whole decode (InputLimits::max_audio_seconds, \
             `--max-audio-s` in the CLI)",
            limits.max_audio_seconds
        ),
    })
}

#[cfg(feature = "audio-files")]
fn probe_error(path: &Path, head: &[u8], e: SymError) -> DecodeError {
    let path: PathBuf = path.to_path_buf();
    match e {
        SymError::Unsupported(what) if is_riff_wave(head) => match wav_format_tag(head) {
            Some(tag) => DecodeError::UnsupportedCodec { path, codec: format!("WAV format tag 0x{tag:04X}") },
            None => DecodeError::UnsupportedCodec { path, codec: format!("WAV ({what})") },
        },
        SymError::Unsupported(what) => DecodeError::UnknownAudioFormat { path, detail: what.to_string() },
        SymError::IoError(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            if is_riff_wave(head) {
                DecodeError::CorruptAudio { path, detail: "truncated: file ends inside the WAV header".into() }
            } else {
                DecodeError::UnknownAudioFormat { path, detail: "too short to be an audio file".into() }
            }
        }
        SymError::IoError(source) => DecodeError::Read { path, source },
        other => DecodeError::CorruptAudio { path, detail: other.to_string() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mono_mix() {
        let mut out = Vec::new();
        mix_to_mono(&[1.0, 3.0, -1.0, 0.0, 7.0], 2, &mut out);
        assert_eq!(out, vec![2.0, -0.5]);
        mix_to_mono(&[0.25], 1, &mut out);
        assert_eq!(out, vec![2.0, -0.5, 0.25]);
        mix_to_mono(&[1.0, 2.0, 3.0], 3, &mut out);
        assert_eq!(out[3], 2.0);
        mix_to_mono(&[1.0], 0, &mut out);
        assert_eq!(out.len(), 4);
    }

    #[test]
    fn fmt_tag_sniffing() {
        let mut h = b"RIFF\0\0\0\0WAVE".to_vec();
        h.extend(b"LIST");
        h.extend(3u32.to_le_bytes());
        h.extend([0, 0, 0, 0]); // odd chunk + pad byte
        h.extend(b"fmt ");
        h.extend(16u32.to_le_bytes());
        h.extend(0x0161u16.to_le_bytes());
        assert_eq!(wav_format_tag(&h), Some(0x0161));
        assert_eq!(wav_format_tag(b"hello world, not a wav"), None);
        assert_eq!(wav_format_tag(b"RIFF"), None);
    }
}
