//! Streaming sessions over the C ABI: create from a model package, push audio and frames, process,
//! read the latest result into caller-owned buffers, free.

use std::ffi::{c_char, CStr};
use std::path::PathBuf;

use super::error::{avseg_status, guard, guard_value, Failure};
use super::registry::{with_locked, Handles};
use avseg_runtime::{bearing_deg, BackendChoice, OutputSpec, Session, SessionOptions, SoundingObject, StreamMode, StreamResult};

use avseg_status::*;

/// An opaque streaming session. The pointer is a handle, not memory: never dereference it.
#[allow(non_camel_case_types)]
pub struct avseg_session {
    _private: [u8; 0],
}

/// Values of `avseg_session_options.backend`.
#[allow(non_camel_case_types)]
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum avseg_backend {
    /// The best available backend: CUDA when it can run the model, else the CPU (today: the CPU).
    AVSEG_BACKEND_AUTO = 0,
    /// tract on the CPU.
    AVSEG_BACKEND_CPU = 1,
    /// The CUDA backend, or AVSEG_ERR_BACKEND saying why it cannot run the model (no fallback).
    AVSEG_BACKEND_CUDA = 2,
}

/// Values of the `mode` argument of `avseg_session_new_with_mode` (ABI 3).
#[allow(non_camel_case_types)]
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum avseg_stream_mode {
    /// Each frame alone when the package's frames are independent and `hop` is 0, else windows
    /// (the Rust `Session`'s default).
    AVSEG_STREAM_AUTO = 0,
    /// Windows of the model's T frames (the official grouping). What `avseg_session_new` does.
    AVSEG_STREAM_WINDOWS = 1,
    /// Each sampled frame alone, as soon as its own audio patch is in: one frame of compute per
    /// result. `AVSEG_ERR_INVALID_ARGUMENT` for a package whose frames are coupled.
    AVSEG_STREAM_PER_FRAME = 2,
    /// Official TPAVI (frames coupled in groups of T; ABI 4): each sampled frame's result comes
    /// from the window of the T sampling instants ending at it, as soon as its own audio patch is
    /// in, for one frame of compute. The first T-1 instants of a run (the start, or after a
    /// dropped instant) get no result. `AVSEG_ERR_INVALID_ARGUMENT` for other packages. `AUTO`
    /// never picks it.
    AVSEG_STREAM_SLIDING = 3,
    /// As `AVSEG_STREAM_SLIDING`, with a result from the first instant on: a window not yet full
    /// repeats the run's first frame (ABI 4).
    AVSEG_STREAM_SLIDING_PADDED = 4,
}

/// When a result could exist and when it did (ABI 3), from `avseg_session_latest_timing` and
/// `avseg_session_popped_timing`. Set `struct_size` to `sizeof(avseg_result_timing)` before the
/// call: later versions may append fields and write only the first `struct_size` bytes.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct avseg_result_timing {
    /// In: the caller's `sizeof(avseg_result_timing)`. Out: the bytes written.
    pub struct_size: u32,
    pub _reserved: u32,
    /// The result's sequence number (as `avseg_result_info.sequence`).
    pub sequence: u64,
    /// The timestamp the frame was pushed with, in seconds.
    pub frame_timestamp: f64,
    /// The capture time, on the audio clock, at which the frame's own audio patch ends: the
    /// earliest moment any result for it could exist. Stream lag = the time you have the result
    /// − this.
    pub patch_end: f64,
    /// Wall time from the frame's push to its result, in milliseconds.
    pub latency_ms: f64,
}

/// Options for `avseg_session_new`. Fill with `avseg_session_options_default` first, then change
/// what you need; a zero in `threads`, `hop` or `frame_queue` also means "the default".
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct avseg_session_options {
    /// An `avseg_backend` value.
    pub backend: u32,
    /// Threads for matrix products (1..=256; 0 = default).
    pub threads: u32,
    /// Binary models: foreground when sigmoid(logit) > threshold, in (0, 1). 0 = the package's own
    /// threshold. Ignored by semantic models.
    pub threshold: f32,
    /// Connected regions with fewer pixels than this are not reported as objects.
    pub min_object_area: u64,
    /// Frames between the starts of consecutive windows (0 = default).
    pub hop: u32,
    /// Frames kept waiting for their audio before the oldest is dropped (0 = default).
    pub frame_queue: u32,
}

/// Summary of the latest result.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct avseg_result_info {
    /// 0 for the session's first result, then 1, 2, ...
    pub sequence: u64,
    /// The timestamp the frame was pushed with, in seconds.
    pub frame_timestamp: f64,
    /// Mask size: the size of the frame it belongs to. The mask has `width * height` bytes.
    pub width: u32,
    pub height: u32,
    /// Foreground pixels over all pixels, in [0, 1].
    pub foreground_fraction: f64,
    /// Number of sounding objects (`avseg_session_latest_objects` needs this capacity).
    pub object_count: usize,
    /// Wall time from the frame's push to its result, in milliseconds.
    pub latency_ms: f64,
}

/// One sounding object (an 8-connected region of one label).
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct avseg_object {
    /// 1-based position in the result's object list.
    pub id: u32,
    /// The mask label of the region: 1 for binary models, the class index for semantic ones.
    pub class_id: u32,
    /// Bounding box in frame pixels: left, top, width, height.
    pub bbox_x: u32,
    pub bbox_y: u32,
    pub bbox_w: u32,
    pub bbox_h: u32,
    /// Pixels in the region.
    pub area: u64,
    /// Centroid in frame pixels, pixel centres at +0.5.
    pub centroid_x: f32,
    pub centroid_y: f32,
    /// Mean per-pixel probability of the region's label.
    pub confidence: f32,
    /// Horizontal direction of the centroid from the optical axis, in degrees, positive to the
    /// right, for a pinhole camera with the given horizontal field of view (see
    /// `avseg_bearing_deg`).
    pub bearing_deg: f32,
}

/// Counters since the session was created.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct avseg_stats {
    pub frames_pushed: u64,
    /// Frames taken for a sampling instant (one per second of stream, at origin + k + 0.9375 s).
    pub frames_used: u64,
    /// Frames no instant took (e.g. 29 of every 30 from a 30 fps camera).
    pub frames_skipped: u64,
    /// Frames taken for an instant but discarded under back-pressure before they got a result.
    pub frames_dropped: u64,
    /// Audio sample frames pushed (one per channel group).
    pub audio_samples: u64,
    /// Windows of T frames run.
    pub windows: u64,
    pub results: u64,
    /// Results overwritten in the session's ring before `avseg_session_pop_result` took them.
    pub results_overwritten: u64,
}

/// A session and the scratch buffers that keep conversions free of per-call allocation once warm.
struct SessionState {
    session: Session,
    audio_scratch: Vec<f32>,
    frame_scratch: Vec<u8>,
    /// A result popped from the session whose copy-out failed for want of buffer space; the next
    /// `avseg_session_pop_result` hands it out first, so nothing is lost.
    pending: Option<StreamResult>,
    /// Timing of the result the last successful `avseg_session_pop_result` returned.
    popped: Option<avseg_result_timing>,
}

static SESSIONS: Handles<SessionState> = Handles::new();

/// Most threads a session may ask for; more is almost certainly a garbage value.
const MAX_THREADS: u32 = 256;

fn token(session: *const avseg_session) -> usize {
    session as usize
}

/// Looks the handle up and runs `body` with the session locked.
fn with_session<R>(
    session: *const avseg_session,
    function: &str,
    body: impl FnOnce(&mut SessionState) -> Result<R, Failure>,
) -> Result<R, Failure> {
    if session.is_null() {
        return Err(Failure::null(function, "session"));
    }
    let cell = SESSIONS.get(token(session), function)?;
    with_locked(&cell, function, body)
}

fn latest<'a>(state: &'a SessionState, function: &str) -> Result<&'a StreamResult, Failure> {
    state
        .session
        .latest()
        .ok_or_else(|| Failure::new(AVSEG_ERR_NO_RESULT, format!("{function}: no result yet")))
}

/// Checks a caller's input array and borrows it. Alignment and the byte size are checked because
/// a slice over a misaligned or oversized region is undefined behaviour even before it is read.
///
/// # Safety
/// `ptr` must point to `len` readable elements for the duration of the call.
unsafe fn input_slice<'a, T>(ptr: *const T, len: usize, function: &str, name: &str) -> Result<&'a [T], Failure> {
    if ptr.is_null() {
        return Err(Failure::null(function, name));
    }
    if !ptr.is_aligned() {
        return Err(Failure::invalid(function, format!("`{name}` is not aligned for its element type")));
    }
    if len.checked_mul(size_of::<T>()).is_none_or(|b| b > isize::MAX as usize) {
        return Err(Failure::invalid(function, format!("`{name}` length {len} is too large")));
    }
    // SAFETY: non-NULL, aligned, size in range; readability is the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// The caller's output array, or `None` for the "ask for the size" form (NULL with capacity 0).
///
/// # Safety
/// `ptr` must be NULL or point to `capacity` writable elements for the duration of the call.
unsafe fn output_slice<'a, T>(
    ptr: *mut T,
    capacity: usize,
    function: &str,
    name: &str,
) -> Result<Option<&'a mut [T]>, Failure> {
    if ptr.is_null() {
        return if capacity == 0 { Ok(None) } else { Err(Failure::null(function, name)) };
    }
    if !ptr.is_aligned() {
        return Err(Failure::invalid(function, format!("`{name}` is not aligned for its element type")));
    }
    if capacity.checked_mul(size_of::<T>()).is_none_or(|b| b > isize::MAX as usize) {
        return Err(Failure::invalid(function, format!("`{name}` capacity {capacity} is too large")));
    }
    // SAFETY: non-NULL, aligned, size in range; writability is the caller's contract.
    Ok(Some(unsafe { std::slice::from_raw_parts_mut(ptr, capacity) }))
}

/// Writes `value` through a required out-pointer.
///
/// # Safety
/// `ptr` must be NULL or valid for a write of `T`.
unsafe fn write_out<T>(ptr: *mut T, value: T, function: &str, name: &str) -> Result<(), Failure> {
    if ptr.is_null() {
        return Err(Failure::null(function, name));
    }
    if !ptr.is_aligned() {
        return Err(Failure::invalid(function, format!("`{name}` is not aligned")));
    }
    // SAFETY: checked above; validity is the caller's contract. `write` does not drop the old,
    // possibly uninitialised, value.
    unsafe { ptr.write(value) };
    Ok(())
}

/// Writes through an optional out-pointer (NULL = not wanted).
///
/// # Safety
/// As [`write_out`].
unsafe fn write_optional<T>(ptr: *mut T, value: T, function: &str, name: &str) -> Result<(), Failure> {
    if ptr.is_null() {
        Ok(())
    } else {
        // SAFETY: forwarded contract.
        unsafe { write_out(ptr, value, function, name) }
    }
}

fn check_timestamp(timestamp: f64, function: &str) -> Result<(), Failure> {
    if timestamp.is_finite() && timestamp >= 0.0 {
        Ok(())
    } else {
        Err(Failure::invalid(function, format!("timestamp {timestamp} must be finite and >= 0")))
    }
}

fn defaults() -> avseg_session_options {
    let d = SessionOptions::default();
    avseg_session_options {
        backend: match d.engine.backend {
            BackendChoice::Auto => avseg_backend::AVSEG_BACKEND_AUTO as u32,
            BackendChoice::Cpu => avseg_backend::AVSEG_BACKEND_CPU as u32,
            BackendChoice::Cuda => avseg_backend::AVSEG_BACKEND_CUDA as u32,
            // A default the C ABI has no value for yet: AUTO lets the runtime choose.
            _ => avseg_backend::AVSEG_BACKEND_AUTO as u32,
        },
        threads: u32::try_from(d.engine.threads).unwrap_or(1),
        threshold: d.engine.threshold.unwrap_or(0.0),
        min_object_area: d.engine.min_object_area,
        hop: u32::try_from(d.hop).unwrap_or(0),
        frame_queue: u32::try_from(d.frame_queue).unwrap_or(0),
    }
}

fn to_rust_options(o: &avseg_session_options, function: &str) -> Result<SessionOptions, Failure> {
    let mut out = SessionOptions::default();
    out.engine.backend = match o.backend {
        0 => BackendChoice::Auto,
        1 => BackendChoice::Cpu,
        2 => BackendChoice::Cuda,
        b => return Err(Failure::invalid(function, format!("backend {b} is not an avseg_backend value"))),
    };
    if o.threads > MAX_THREADS {
        return Err(Failure::invalid(function, format!("threads {} is over {MAX_THREADS}", o.threads)));
    }
    if o.threads != 0 {
        out.engine.threads = o.threads as usize;
    }
    out.engine.threshold = if o.threshold == 0.0 {
        None
    } else if o.threshold.is_finite() && o.threshold > 0.0 && o.threshold < 1.0 {
        Some(o.threshold)
    } else {
        return Err(Failure::invalid(function, format!("threshold {} must be in (0, 1), or 0 for the package's", o.threshold)));
    };
    out.engine.min_object_area = o.min_object_area;
    if o.hop != 0 {
        out.hop = o.hop as usize;
    }
    if o.frame_queue != 0 {
        out.frame_queue = o.frame_queue as usize;
    }
    Ok(out)
}

/// Writes the default options to `*options`.
///
/// # Safety
/// `options` must be NULL or valid for writing one `avseg_session_options`.
#[no_mangle]
pub unsafe extern "C" fn avseg_session_options_default(options: *mut avseg_session_options) -> avseg_status {
    const F: &str = "avseg_session_options_default";
    guard(F, || unsafe { write_out(options, defaults(), F, "options") })
}

/// Loads the model package in the folder `model_dir` (a NUL-terminated path) and creates a
/// session. `options` may be NULL for the defaults. On success `*session_out` receives the handle;
/// free it with `avseg_session_free`. Loading takes a while (graph optimisation): create sessions
/// at start-up, not per frame. The session streams in windows of the model's T frames
/// (`AVSEG_STREAM_WINDOWS`); `avseg_session_new_with_mode` chooses.
///
/// # Safety
/// `model_dir` must be NULL or a NUL-terminated string; `options` NULL or valid for reading;
/// `session_out` NULL or valid for writing a pointer.
#[no_mangle]
pub unsafe extern "C" fn avseg_session_new(
    model_dir: *const c_char,
    options: *const avseg_session_options,
    session_out: *mut *mut avseg_session,
) -> avseg_status {
    // Windows, as before ABI 3: an existing function keeps its meaning. Per-frame streams are
    // opted into with `avseg_session_new_with_mode`.
    // SAFETY: forwarded contract.
    unsafe { new_session(model_dir, options, avseg_stream_mode::AVSEG_STREAM_WINDOWS as u32, session_out, "avseg_session_new") }
}

/// As `avseg_session_new`, with the stream mode (an `avseg_stream_mode` value; ABI 3).
/// `AVSEG_STREAM_PER_FRAME` on a package whose frames are coupled (official TPAVI) is
/// `AVSEG_ERR_INVALID_ARGUMENT` with the reason; `avseg_session_mode` says which mode `AUTO` chose.
///
/// # Safety
/// As `avseg_session_new`.
#[no_mangle]
pub unsafe extern "C" fn avseg_session_new_with_mode(
    model_dir: *const c_char,
    options: *const avseg_session_options,
    mode: u32,
    session_out: *mut *mut avseg_session,
) -> avseg_status {
    // SAFETY: forwarded contract.
    unsafe { new_session(model_dir, options, mode, session_out, "avseg_session_new_with_mode") }
}

/// # Safety
/// As `avseg_session_new`.
unsafe fn new_session(
    model_dir: *const c_char,
    options: *const avseg_session_options,
    mode: u32,
    session_out: *mut *mut avseg_session,
    function: &'static str,
) -> avseg_status {
    guard(function, || {
        let mode = match mode {
            0 => StreamMode::Auto,
            1 => StreamMode::Windows,
            2 => StreamMode::PerFrame,
            3 => StreamMode::Sliding,
            4 => StreamMode::SlidingPadded,
            m => return Err(Failure::invalid(function, format!("mode {m} is not an avseg_stream_mode value"))),
        };
        if model_dir.is_null() {
            return Err(Failure::null(function, "model_dir"));
        }
        if session_out.is_null() {
            return Err(Failure::null(function, "session_out"));
        }
        // SAFETY: non-NULL; NUL-termination is the caller's contract.
        let dir = path_from_c(unsafe { CStr::from_ptr(model_dir) }, function)?;
        if dir.as_os_str().is_empty() {
            return Err(Failure::invalid(function, "`model_dir` is empty"));
        }
        let opts = if options.is_null() {
            SessionOptions::default()
        } else {
            if !options.is_aligned() {
                return Err(Failure::invalid(function, "`options` is not aligned"));
            }
            // SAFETY: non-NULL and aligned; readability is the caller's contract. Every bit
            // pattern is a valid avseg_session_options (plain integers and a float).
            to_rust_options(unsafe { &*options }, function)?
        };
        let opts = SessionOptions { mode, ..opts };
        let session = Session::new(&dir, &opts).map_err(|e| Failure::from_error(function, &e))?;
        let state = SessionState { session, audio_scratch: Vec::new(), frame_scratch: Vec::new(), pending: None, popped: None };
        let token = SESSIONS.insert(state)?;
        // The registry owns the session now; if the write fails the token is dropped with it.
        unsafe { write_out(session_out, token as *mut avseg_session, function, "session_out") }.inspect_err(|_| {
            let _ = SESSIONS.remove(token, function);
        })
    })
}

#[cfg(unix)]
fn path_from_c(s: &CStr, _function: &str) -> Result<PathBuf, Failure> {
    use std::os::unix::ffi::OsStrExt;
    // Unix paths are bytes; a non-UTF-8 path must still open.
    Ok(PathBuf::from(std::ffi::OsStr::from_bytes(s.to_bytes())))
}

#[cfg(not(unix))]
fn path_from_c(s: &CStr, function: &str) -> Result<PathBuf, Failure> {
    s.to_str().map(PathBuf::from).map_err(|_| Failure::invalid(function, "`model_dir` is not UTF-8"))
}

/// Frees a session. NULL is a no-op (`AVSEG_OK`); a handle that is not live (for instance freed
/// twice) gives `AVSEG_ERR_INVALID_HANDLE` and changes nothing. A call on this session already
/// running on another thread completes normally and the memory is released when it returns;
/// calls made after this one give `AVSEG_ERR_INVALID_HANDLE`.
///
/// # Safety
/// Always safe: the handle is only looked up, never dereferenced.
#[no_mangle]
pub unsafe extern "C" fn avseg_session_free(session: *mut avseg_session) -> avseg_status {
    const F: &str = "avseg_session_free";
    guard(F, || {
        if session.is_null() {
            return Ok(());
        }
        // With no call in flight this is the last reference, and the model is released here.
        drop(SESSIONS.remove(token(session), F)?);
        Ok(())
    })
}

/// Pushes interleaved float audio in [-1, 1]: `sample_count` values (a multiple of `channels`)
/// at `sample_rate` Hz, whose first sample plays at `timestamp` seconds on the session's clock.
///
/// # Safety
/// `samples` must be NULL or point to `sample_count` readable floats.
#[no_mangle]
pub unsafe extern "C" fn avseg_session_push_audio_f32(
    session: *mut avseg_session,
    samples: *const f32,
    sample_count: usize,
    sample_rate: u32,
    channels: u32,
    timestamp: f64,
) -> avseg_status {
    const F: &str = "avseg_session_push_audio_f32";
    guard(F, || {
        with_session(session, F, |st| {
            // SAFETY: forwarded contract.
            let data = unsafe { input_slice(samples, sample_count, F, "samples") }?;
            check_audio(data.len(), sample_rate, channels, timestamp, F)?;
            st.session.push_audio(data, sample_rate, channels as usize, timestamp).map_err(|e| Failure::from_error(F, &e))
        })
    })
}

/// As `avseg_session_push_audio_f32` for interleaved signed 16-bit samples (full scale 32768).
/// They are converted in a session-owned buffer that is reused from call to call.
///
/// # Safety
/// `samples` must be NULL or point to `sample_count` readable int16 values.
#[no_mangle]
pub unsafe extern "C" fn avseg_session_push_audio_s16(
    session: *mut avseg_session,
    samples: *const i16,
    sample_count: usize,
    sample_rate: u32,
    channels: u32,
    timestamp: f64,
) -> avseg_status {
    const F: &str = "avseg_session_push_audio_s16";
    guard(F, || {
        with_session(session, F, |st| {
            // SAFETY: forwarded contract.
            let data = unsafe { input_slice(samples, sample_count, F, "samples") }?;
            check_audio(data.len(), sample_rate, channels, timestamp, F)?;
            st.audio_scratch.clear();
            st.audio_scratch.extend(data.iter().map(|&s| f32::from(s) / 32768.0));
            st.session
                .push_audio(&st.audio_scratch, sample_rate, channels as usize, timestamp)
                .map_err(|e| Failure::from_error(F, &e))
        })
    })
}

fn check_audio(len: usize, rate: u32, channels: u32, timestamp: f64, function: &str) -> Result<(), Failure> {
    if len == 0 {
        return Err(Failure::invalid(function, "`sample_count` is 0"));
    }
    if rate == 0 {
        return Err(Failure::invalid(function, "`sample_rate` is 0"));
    }
    if channels == 0 {
        return Err(Failure::invalid(function, "`channels` is 0"));
    }
    if !len.is_multiple_of(channels as usize) {
        return Err(Failure::invalid(
            function,
            format!("`sample_count` {len} is not a multiple of `channels` {channels} (samples are interleaved)"),
        ));
    }
    check_timestamp(timestamp, function)
}

/// Pushes one RGB8 frame shown at `timestamp` seconds on the session's clock. Row `y` starts at
/// byte `y * stride`; `stride` 0 means tightly packed (`3 * width`). `size` is the buffer's length
/// in bytes and must cover `stride * (height - 1) + 3 * width`.
///
/// # Safety
/// `rgb` must be NULL or point to `size` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn avseg_session_push_frame_rgb8(
    session: *mut avseg_session,
    rgb: *const u8,
    size: usize,
    width: u32,
    height: u32,
    stride: usize,
    timestamp: f64,
) -> avseg_status {
    const F: &str = "avseg_session_push_frame_rgb8";
    guard(F, || {
        with_session(session, F, |st| {
            // SAFETY: forwarded contract.
            let data = unsafe { input_slice(rgb, size, F, "rgb") }?;
            if width == 0 || height == 0 {
                return Err(Failure::invalid(F, format!("frame size {width}x{height} is empty")));
            }
            let row = (width as usize).checked_mul(3).ok_or_else(|| Failure::invalid(F, "width too large"))?;
            let stride = if stride == 0 { row } else { stride };
            if stride < row {
                return Err(Failure::invalid(F, format!("stride {stride} is less than 3 * width = {row}")));
            }
            let needed = stride
                .checked_mul(height as usize - 1)
                .and_then(|n| n.checked_add(row))
                .ok_or_else(|| Failure::invalid(F, "frame too large"))?;
            if data.len() < needed {
                return Err(Failure::invalid(
                    F,
                    format!("`size` {} is less than the {needed} bytes a {width}x{height} frame with stride {stride} needs", data.len()),
                ));
            }
            check_timestamp(timestamp, F)?;
            let packed: &[u8] = if stride == row {
                &data[..row * height as usize]
            } else {
                st.frame_scratch.clear();
                for y in 0..height as usize {
                    st.frame_scratch.extend_from_slice(&data[y * stride..y * stride + row]);
                }
                &st.frame_scratch
            };
            st.session.push_frame(packed, width, height, timestamp).map_err(|e| Failure::from_error(F, &e))
        })
    })
}

/// Runs every window whose frames and audio are complete. `*new_results` (may be NULL) receives
/// how many results were produced; the newest is read with the `avseg_session_latest*` functions.
///
/// # Safety
/// `new_results` must be NULL or valid for writing a `size_t`.
#[no_mangle]
pub unsafe extern "C" fn avseg_session_process(session: *mut avseg_session, new_results: *mut usize) -> avseg_status {
    const F: &str = "avseg_session_process";
    guard(F, || {
        let n = with_session(session, F, |st| st.session.process().map_err(|e| Failure::from_error(F, &e)))?;
        unsafe { write_optional(new_results, n, F, "new_results") }
    })
}

/// Ends the stream: processes what is left (padding the last window as the model was trained).
///
/// # Safety
/// `new_results` must be NULL or valid for writing a `size_t`.
#[no_mangle]
pub unsafe extern "C" fn avseg_session_finish(session: *mut avseg_session, new_results: *mut usize) -> avseg_status {
    const F: &str = "avseg_session_finish";
    guard(F, || {
        let n = with_session(session, F, |st| st.session.finish().map_err(|e| Failure::from_error(F, &e)))?;
        unsafe { write_optional(new_results, n, F, "new_results") }
    })
}

/// Describes the latest result. `AVSEG_ERR_NO_RESULT` before the first one.
///
/// # Safety
/// `info` must be NULL or valid for writing one `avseg_result_info`.
#[no_mangle]
pub unsafe extern "C" fn avseg_session_latest(session: *const avseg_session, info: *mut avseg_result_info) -> avseg_status {
    const F: &str = "avseg_session_latest";
    guard(F, || {
        if info.is_null() {
            return Err(Failure::null(F, "info"));
        }
        let value = with_session(session, F, |st| Ok(info_of(latest(st, F)?)))?;
        unsafe { write_out(info, value, F, "info") }
    })
}

/// Copies a per-pixel array of the latest result into a caller buffer of `capacity` elements.
/// `needed` (may be NULL) receives `width * height` on success and with
/// `AVSEG_ERR_BUFFER_TOO_SMALL`. `buffer` may be NULL only with `capacity` 0, to ask for the size.
///
/// # Safety
/// `buffer` must be NULL or point to `capacity` writable elements; `needed` NULL or writable.
unsafe fn copy_latest<T: Copy>(
    session: *const avseg_session,
    buffer: *mut T,
    capacity: usize,
    needed: *mut usize,
    function: &str,
    pick: impl Fn(&StreamResult) -> &[T],
) -> avseg_status {
    guard(function, || {
        // SAFETY: forwarded contract.
        let out = unsafe { output_slice(buffer, capacity, function, "buffer") }?;
        with_session(session, function, |st| {
            let src = pick(latest(st, function)?);
            unsafe { write_optional(needed, src.len(), function, "needed") }?;
            match out {
                Some(out) if out.len() >= src.len() => {
                    out[..src.len()].copy_from_slice(src);
                    Ok(())
                }
                _ => Err(Failure::new(
                    AVSEG_ERR_BUFFER_TOO_SMALL,
                    format!("{function}: capacity {capacity} is less than the {} elements needed", src.len()),
                )),
            }
        })
    })
}

/// Copies the latest mask, row-major, one byte per pixel: 0 = background; binary models write 1
/// for foreground, semantic models the class index. `*needed` (may be NULL) receives
/// `width * height`, also with `AVSEG_ERR_BUFFER_TOO_SMALL`. `mask` may be NULL only with
/// `capacity` 0, to ask for the size.
///
/// # Safety
/// `mask` must be NULL or point to `capacity` writable bytes; `needed` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn avseg_session_latest_mask(
    session: *const avseg_session,
    mask: *mut u8,
    capacity: usize,
    needed: *mut usize,
) -> avseg_status {
    unsafe { copy_latest(session, mask, capacity, needed, "avseg_session_latest_mask", |r| &r.mask.labels) }
}

/// Copies the latest per-pixel confidence (the probability of each pixel's label), row-major, as
/// floats. Same size and buffer rules as `avseg_session_latest_mask`, counted in floats.
///
/// # Safety
/// `confidence` must be NULL or point to `capacity` writable floats; `needed` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn avseg_session_latest_confidence(
    session: *const avseg_session,
    confidence: *mut f32,
    capacity: usize,
    needed: *mut usize,
) -> avseg_status {
    unsafe { copy_latest(session, confidence, capacity, needed, "avseg_session_latest_confidence", |r| &r.mask.confidence) }
}

/// Copies the latest result's objects into `objects` (capacity `capacity`), writing their number
/// to `*count`. With too small a capacity, `*count` gets the number needed and the status is
/// `AVSEG_ERR_BUFFER_TOO_SMALL`. `objects` may be NULL only with `capacity` 0. `hfov_deg` is the
/// camera's horizontal field of view in degrees, in (0, 180), used for `bearing_deg`.
///
/// # Safety
/// `objects` must be NULL or point to `capacity` writable `avseg_object`s; `count` NULL or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn avseg_session_latest_objects(
    session: *const avseg_session,
    hfov_deg: f32,
    objects: *mut avseg_object,
    capacity: usize,
    count: *mut usize,
) -> avseg_status {
    // SAFETY: forwarded contract.
    unsafe { copy_objects(session, hfov_deg, objects, capacity, count, "avseg_session_latest_objects", |r| &r.objects) }
}

/// Two-stage (`bavs`) packages (ABI 4): copies the latest result's *silent* objects, those the
/// segmenter found but no heard sound supports (dropped from the mask and from
/// `avseg_session_latest_objects`), for debugging. Same rules as `avseg_session_latest_objects`;
/// other packages have none (`*count` = 0).
///
/// # Safety
/// As `avseg_session_latest_objects`.
#[no_mangle]
pub unsafe extern "C" fn avseg_session_latest_silent_objects(
    session: *const avseg_session,
    hfov_deg: f32,
    objects: *mut avseg_object,
    capacity: usize,
    count: *mut usize,
) -> avseg_status {
    // SAFETY: forwarded contract.
    unsafe { copy_objects(session, hfov_deg, objects, capacity, count, "avseg_session_latest_silent_objects", |r| &r.silent_objects) }
}

/// # Safety
/// As `avseg_session_latest_objects`.
unsafe fn copy_objects(
    session: *const avseg_session,
    hfov_deg: f32,
    objects: *mut avseg_object,
    capacity: usize,
    count: *mut usize,
    function: &'static str,
    pick: impl Fn(&StreamResult) -> &[SoundingObject],
) -> avseg_status {
    let f = function;
    guard(f, || {
        if count.is_null() {
            return Err(Failure::null(f, "count"));
        }
        check_hfov(hfov_deg, f)?;
        // SAFETY: forwarded contract.
        let out = unsafe { output_slice(objects, capacity, f, "objects") }?;
        with_session(session, f, |st| {
            let r = latest(st, f)?;
            let src = pick(r);
            let n = src.len();
            unsafe { write_out(count, n, f, "count") }?;
            let out = match out {
                Some(out) if out.len() >= n => out,
                _ if n == 0 => return Ok(()),
                _ => {
                    return Err(Failure::new(
                        AVSEG_ERR_BUFFER_TOO_SMALL,
                        format!("{f}: capacity {capacity} is less than the {n} objects of this result"),
                    ))
                }
            };
            fill_objects(out, src, r.mask.width, hfov_deg);
            Ok(())
        })
    })
}

/// Copies `text` NUL-terminated into `buffer` (capacity `capacity` bytes) and its length in bytes,
/// without the NUL, into `*length` (may be NULL). Too small a buffer is
/// `AVSEG_ERR_BUFFER_TOO_SMALL`, with `*length` set; `buffer` may be NULL only with `capacity` 0,
/// to ask for the length.
///
/// # Safety
/// `buffer` must be NULL or point to `capacity` writable bytes; `length` NULL or writable.
unsafe fn copy_text(text: &str, buffer: *mut c_char, capacity: usize, length: *mut usize, function: &str) -> Result<(), Failure> {
    // SAFETY: forwarded contract.
    let out = unsafe { output_slice(buffer.cast::<u8>(), capacity, function, "buffer") }?;
    unsafe { write_optional(length, text.len(), function, "length") }?;
    match out {
        Some(out) if out.len() > text.len() => {
            out[..text.len()].copy_from_slice(text.as_bytes());
            out[text.len()] = 0;
            Ok(())
        }
        _ => Err(Failure::new(
            AVSEG_ERR_BUFFER_TOO_SMALL,
            format!("{function}: capacity {capacity} is less than the {} bytes needed (text and NUL)", text.len() + 1),
        )),
    }
}

/// The name of mask label `class_id` of the session's package (ABI 4): the manifest's label of a
/// semantic package (0 is background), `"background"` or `"foreground"` for a binary one.
/// Copied as by `avseg_last_error_copy`'s rules, but strict: a buffer shorter than the name and its
/// NUL gives `AVSEG_ERR_BUFFER_TOO_SMALL`, with `*length` (may be NULL) set to the name's length.
/// A class the package does not have is `AVSEG_ERR_INVALID_ARGUMENT`.
///
/// # Safety
/// `buffer` must be NULL or point to `capacity` writable bytes; `length` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn avseg_session_label(
    session: *const avseg_session,
    class_id: u32,
    buffer: *mut c_char,
    capacity: usize,
    length: *mut usize,
) -> avseg_status {
    const F: &str = "avseg_session_label";
    guard(F, || {
        with_session(session, F, |st| {
            let name = match &st.session.package().manifest().output {
                OutputSpec::Semantic { labels, .. } => labels.get(class_id as usize).map(String::as_str),
                _ => ["background", "foreground"].get(class_id as usize).copied(),
            };
            let name = name.ok_or_else(|| Failure::invalid(F, format!("class {class_id} is not a label of this model")))?;
            // SAFETY: forwarded contract.
            unsafe { copy_text(name, buffer, capacity, length, F) }
        })
    })
}

/// The sound that keeps object `index` (0-based, in the order of `avseg_session_latest_objects`)
/// of the latest result, for two-stage (`bavs`) packages (ABI 4): the label tree node's name (a
/// tagger label such as `"dog_bark"`, or a category such as `"animal"`) into `tag`, by the rules
/// of `avseg_session_label`, and the tagger's probability for it into `*score` (may be NULL).
/// Objects of other packages have no sound: an empty name and a score of NaN. An index past the
/// objects is `AVSEG_ERR_INVALID_ARGUMENT`.
///
/// # Safety
/// `tag` must be NULL or point to `capacity` writable bytes; `length` and `score` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn avseg_session_latest_object_sound(
    session: *const avseg_session,
    index: usize,
    tag: *mut c_char,
    capacity: usize,
    length: *mut usize,
    score: *mut f32,
) -> avseg_status {
    const F: &str = "avseg_session_latest_object_sound";
    guard(F, || {
        with_session(session, F, |st| {
            let r = latest(st, F)?;
            let o = r.objects.get(index).ok_or_else(|| {
                Failure::invalid(F, format!("index {index} is past the {} objects of the latest result", r.objects.len()))
            })?;
            let (name, value) = o.sound.as_ref().map_or(("", f32::NAN), |s| (s.tag.as_str(), s.score));
            unsafe { write_optional(score, value, F, "score") }?;
            // SAFETY: forwarded contract.
            unsafe { copy_text(name, tag, capacity, length, F) }
        })
    })
}

fn info_of(r: &StreamResult) -> avseg_result_info {
    avseg_result_info {
        sequence: r.sequence,
        frame_timestamp: r.frame_timestamp,
        width: r.mask.width,
        height: r.mask.height,
        foreground_fraction: r.mask.foreground_fraction(),
        object_count: r.objects.len(),
        latency_ms: r.latency.as_secs_f64() * 1e3,
    }
}

fn timing_of(r: &StreamResult) -> avseg_result_timing {
    avseg_result_timing {
        struct_size: std::mem::size_of::<avseg_result_timing>() as u32,
        _reserved: 0,
        sequence: r.sequence,
        frame_timestamp: r.frame_timestamp,
        patch_end: r.patch_end,
        latency_ms: r.latency.as_secs_f64() * 1e3,
    }
}

/// Checks a caller's versioned timing struct before anything is looked up: non-NULL, aligned, and
/// a `struct_size` covering at least the fields of ABI 3 (all that is written).
///
/// # Safety
/// `out` must be NULL or valid for reading a `u32`.
unsafe fn check_timing(out: *mut avseg_result_timing, function: &str) -> Result<(), Failure> {
    if out.is_null() {
        return Err(Failure::null(function, "timing"));
    }
    if !out.is_aligned() {
        return Err(Failure::invalid(function, "`timing` is not aligned"));
    }
    // SAFETY: non-NULL and aligned; the first field is readable by contract.
    let size = unsafe { (*out).struct_size } as usize;
    let ours = std::mem::size_of::<avseg_result_timing>();
    if size < ours {
        return Err(Failure::invalid(function, format!("timing.struct_size {size} is less than sizeof(avseg_result_timing) = {ours}; set it before the call")));
    }
    Ok(())
}

/// The timing of the latest result (`AVSEG_ERR_NO_RESULT` before the first). Set
/// `timing->struct_size` first.
///
/// # Safety
/// `timing` must be NULL or valid for reading and writing `timing->struct_size` bytes.
#[no_mangle]
pub unsafe extern "C" fn avseg_session_latest_timing(session: *const avseg_session, timing: *mut avseg_result_timing) -> avseg_status {
    const F: &str = "avseg_session_latest_timing";
    guard(F, || {
        // SAFETY: forwarded contract.
        unsafe { check_timing(timing, F) }?;
        let value = with_session(session, F, |st| Ok(timing_of(latest(st, F)?)))?;
        // SAFETY: checked above; the caller's struct holds at least these fields.
        unsafe { timing.write(value) };
        Ok(())
    })
}

/// The timing of the result the last successful `avseg_session_pop_result` returned
/// (`AVSEG_ERR_NO_RESULT` before any). Set `timing->struct_size` first.
///
/// # Safety
/// As `avseg_session_latest_timing`.
#[no_mangle]
pub unsafe extern "C" fn avseg_session_popped_timing(session: *const avseg_session, timing: *mut avseg_result_timing) -> avseg_status {
    const F: &str = "avseg_session_popped_timing";
    guard(F, || {
        // SAFETY: forwarded contract.
        unsafe { check_timing(timing, F) }?;
        let value = with_session(session, F, |st| {
            st.popped.ok_or_else(|| Failure::new(AVSEG_ERR_NO_RESULT, format!("{F}: no result popped yet")))
        })?;
        // SAFETY: checked above; the caller's struct holds at least these fields.
        unsafe { timing.write(value) };
        Ok(())
    })
}

/// The mode the session runs in: `AVSEG_STREAM_WINDOWS` or `AVSEG_STREAM_PER_FRAME` (what
/// `AUTO` chose), or the sliding mode asked for.
///
/// # Safety
/// `mode_out` must be NULL or valid for writing a `uint32_t`.
#[no_mangle]
pub unsafe extern "C" fn avseg_session_mode(session: *const avseg_session, mode_out: *mut u32) -> avseg_status {
    const F: &str = "avseg_session_mode";
    guard(F, || {
        if mode_out.is_null() {
            return Err(Failure::null(F, "mode_out"));
        }
        let mode = with_session(session, F, |st| {
            Ok(match st.session.mode() {
                StreamMode::PerFrame => avseg_stream_mode::AVSEG_STREAM_PER_FRAME,
                StreamMode::Sliding => avseg_stream_mode::AVSEG_STREAM_SLIDING,
                StreamMode::SlidingPadded => avseg_stream_mode::AVSEG_STREAM_SLIDING_PADDED,
                _ => avseg_stream_mode::AVSEG_STREAM_WINDOWS,
            })
        })?;
        // SAFETY: forwarded contract.
        unsafe { write_out(mode_out, mode as u32, F, "mode_out") }
    })
}

fn fill_objects(out: &mut [avseg_object], objects: &[SoundingObject], width: u32, hfov_deg: f32) {
    for (dst, o) in out.iter_mut().zip(objects) {
        *dst = avseg_object {
            id: o.id,
            class_id: o.class,
            bbox_x: o.bbox[0],
            bbox_y: o.bbox[1],
            bbox_w: o.bbox[2],
            bbox_h: o.bbox[3],
            area: o.area,
            centroid_x: o.centroid[0],
            centroid_y: o.centroid[1],
            confidence: o.confidence,
            bearing_deg: o.bearing_deg(width, hfov_deg),
        };
    }
}

fn check_hfov(hfov_deg: f32, function: &str) -> Result<(), Failure> {
    if hfov_deg.is_finite() && hfov_deg > 0.0 && hfov_deg < 180.0 {
        Ok(())
    } else {
        Err(Failure::invalid(function, format!("hfov_deg {hfov_deg} must be in (0, 180)")))
    }
}

/// Takes the oldest result not yet taken, so that a caller sees every result even when one
/// `process` call produces a whole window of them (`avseg_session_latest*` only show the newest).
/// Fills `*info`, copies the mask into `mask` (`width * height` bytes, as
/// `avseg_session_latest_mask`) and the objects into `objects` (as
/// `avseg_session_latest_objects`). Pass NULL with capacity 0 for a part you do not want.
///
/// If a buffer is too small the status is `AVSEG_ERR_BUFFER_TOO_SMALL`, `*info` is still filled
/// (its `width * height` and `object_count` are the sizes needed), and the result stays first in
/// line for the next call. `AVSEG_ERR_NO_RESULT` when every result has been taken. The session
/// keeps a bounded ring of results: a caller that falls behind loses the oldest ones (counted in
/// `avseg_stats.results_overwritten`).
///
/// # Safety
/// `info` NULL or writable; `mask` NULL or `mask_capacity` writable bytes; `objects` NULL or
/// `object_capacity` writable `avseg_object`s.
#[no_mangle]
pub unsafe extern "C" fn avseg_session_pop_result(
    session: *mut avseg_session,
    hfov_deg: f32,
    info: *mut avseg_result_info,
    mask: *mut u8,
    mask_capacity: usize,
    objects: *mut avseg_object,
    object_capacity: usize,
) -> avseg_status {
    const F: &str = "avseg_session_pop_result";
    guard(F, || {
        if info.is_null() {
            return Err(Failure::null(F, "info"));
        }
        // Checked before the pop: a result must not be taken and then lost to a bad pointer.
        if !info.is_aligned() {
            return Err(Failure::invalid(F, "`info` is not aligned"));
        }
        check_hfov(hfov_deg, F)?;
        // SAFETY: forwarded contract.
        let mask_out = unsafe { output_slice(mask, mask_capacity, F, "mask") }?;
        let objects_out = unsafe { output_slice(objects, object_capacity, F, "objects") }?;
        with_session(session, F, |st| {
            let r = match st.pending.take().or_else(|| st.session.pop_result()) {
                Some(r) => r,
                None => return Err(Failure::new(AVSEG_ERR_NO_RESULT, format!("{F}: no result waiting"))),
            };
            unsafe { write_out(info, info_of(&r), F, "info") }?;
            st.popped = Some(timing_of(&r));
            let pixels = r.mask.labels.len();
            let n = r.objects.len();
            let mask_short = mask_out.as_ref().is_some_and(|m| m.len() < pixels);
            let objects_short = objects_out.as_ref().is_some_and(|o| o.len() < n);
            if mask_short || objects_short {
                st.pending = Some(r);
                return Err(Failure::new(
                    AVSEG_ERR_BUFFER_TOO_SMALL,
                    format!(
                        "{F}: result needs {pixels} mask bytes (capacity {mask_capacity}) and {n} objects (capacity {object_capacity}); it stays first in line"
                    ),
                ));
            }
            if let Some(m) = mask_out {
                m[..pixels].copy_from_slice(&r.mask.labels);
            }
            if let Some(o) = objects_out {
                fill_objects(o, &r.objects, r.mask.width, hfov_deg);
            }
            Ok(())
        })
    })
}

/// The bearing, in degrees and positive to the right, of image column `x` (pixel centres at
/// +0.5) in a frame `width` pixels wide, for a pinhole camera with horizontal field of view
/// `hfov_deg`: `atan(((x - W/2) / (W/2)) * tan(hfov/2))`. NaN when `width` is 0 or `hfov_deg` is
/// not in (0, 180). Lens distortion is not modelled.
#[no_mangle]
pub extern "C" fn avseg_bearing_deg(x: f32, width: u32, hfov_deg: f32) -> f32 {
    guard_value(f32::NAN, || bearing_deg(x, width, hfov_deg))
}

/// Copies the session's counters to `*stats`.
///
/// # Safety
/// `stats` must be NULL or valid for writing one `avseg_stats`.
#[no_mangle]
pub unsafe extern "C" fn avseg_session_stats(session: *const avseg_session, stats: *mut avseg_stats) -> avseg_status {
    const F: &str = "avseg_session_stats";
    guard(F, || {
        if stats.is_null() {
            return Err(Failure::null(F, "stats"));
        }
        let s = with_session(session, F, |st| Ok(st.session.stats()))?;
        let value = avseg_stats {
            frames_pushed: s.frames_pushed,
            frames_used: s.frames_used,
            frames_skipped: s.frames_skipped,
            frames_dropped: s.frames_dropped,
            audio_samples: s.audio_samples,
            windows: s.windows,
            results: s.results,
            results_overwritten: s.results_overwritten,
        };
        unsafe { write_out(stats, value, F, "stats") }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearing_follows_the_pinhole_model() {
        assert_eq!(avseg_bearing_deg(50.0, 100, 90.0), 0.0);
        assert!((avseg_bearing_deg(100.0, 100, 90.0) - 45.0).abs() < 1e-4);
        assert!((avseg_bearing_deg(0.0, 100, 90.0) + 45.0).abs() < 1e-4);
        // A quarter of the way right with a 60° lens: atan(0.5 · tan 30°) ≈ 16.10°.
        assert!((avseg_bearing_deg(75.0, 100, 60.0) - 16.102).abs() < 1e-2);
        assert!(avseg_bearing_deg(10.0, 0, 60.0).is_nan());
        assert!(avseg_bearing_deg(10.0, 100, 180.0).is_nan());
    }

    #[test]
    fn bad_arguments_are_refused_before_any_lookup() {
        unsafe {
            let mut out: *mut avseg_session = std::ptr::null_mut();
            assert_eq!(avseg_session_new(std::ptr::null(), std::ptr::null(), &mut out), AVSEG_ERR_NULL);
            assert_eq!(avseg_session_new(c"x".as_ptr(), std::ptr::null(), std::ptr::null_mut()), AVSEG_ERR_NULL);
            assert_eq!(avseg_session_new(c"/nonexistent/model".as_ptr(), std::ptr::null(), &mut out), AVSEG_ERR_MODEL);
            assert!(out.is_null());
            let mut o = defaults();
            o.threshold = 1.5;
            assert_eq!(avseg_session_new(c"x".as_ptr(), &o, &mut out), AVSEG_ERR_INVALID_ARGUMENT);
            o = defaults();
            o.backend = 7;
            assert_eq!(avseg_session_new(c"x".as_ptr(), &o, &mut out), AVSEG_ERR_INVALID_ARGUMENT);
            let fake = 0x1230 as *mut avseg_session;
            assert_eq!(avseg_session_process(fake, std::ptr::null_mut()), AVSEG_ERR_INVALID_HANDLE);
            assert_eq!(avseg_session_free(fake), AVSEG_ERR_INVALID_HANDLE);
            assert_eq!(avseg_session_free(std::ptr::null_mut()), AVSEG_OK);
        }
    }

    /// A two-stage package through the C ABI: a dog (red) and a cat (blue) with a bark (a
    /// 500 Hz tone) on `models/tiny-bavs`. The dog is kept, with its label and its sound readable;
    /// the cat is silent, readable too.
    #[test]
    fn labels_and_sounds_of_a_two_stage_package() {
        let dir = std::ffi::CString::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/tiny-bavs")).unwrap();
        unsafe {
            let mut s: *mut avseg_session = std::ptr::null_mut();
            assert_eq!(avseg_session_new_with_mode(dir.as_ptr(), std::ptr::null(), 0, &mut s), AVSEG_OK);
            let (w, h) = (96u32, 64u32);
            let mut rgb = vec![128u8; (w * h * 3) as usize];
            for y in 20..44 {
                for x in 0..96 {
                    let colour = match x {
                        8..28 => [255, 0, 0],
                        60..80 => [0, 0, 255],
                        _ => continue,
                    };
                    let i = ((y * w + x) * 3) as usize;
                    rgb[i..i + 3].copy_from_slice(&colour);
                }
            }
            let tone: Vec<f32> = (0..16_000 * 3).map(|i| 0.3 * (2.0 * std::f32::consts::PI * 500.0 * i as f32 / 16_000.0).sin()).collect();
            assert_eq!(avseg_session_push_audio_f32(s, tone.as_ptr(), tone.len(), 16_000, 1, 0.0), AVSEG_OK);
            assert_eq!(avseg_session_push_frame_rgb8(s, rgb.as_ptr(), rgb.len(), w, h, 0, 0.9375), AVSEG_OK);
            assert_eq!(avseg_session_push_frame_rgb8(s, rgb.as_ptr(), rgb.len(), w, h, 0, 1.9375), AVSEG_OK);
            let mut made = 0usize;
            assert_eq!(avseg_session_process(s, &mut made), AVSEG_OK);
            assert!(made >= 1);

            let mut objects = [avseg_object::default(); 4];
            let mut count = 0usize;
            assert_eq!(avseg_session_latest_objects(s, 60.0, objects.as_mut_ptr(), 4, &mut count), AVSEG_OK);
            assert_eq!(count, 1);
            let mut name = [0 as c_char; 32];
            let mut len = 0usize;
            assert_eq!(avseg_session_label(s, objects[0].class_id, name.as_mut_ptr(), name.len(), &mut len), AVSEG_OK);
            assert_eq!(CStr::from_ptr(name.as_ptr()).to_str().unwrap(), "dog");
            let mut score = 0.0f32;
            assert_eq!(avseg_session_latest_object_sound(s, 0, name.as_mut_ptr(), name.len(), &mut len, &mut score), AVSEG_OK);
            assert_eq!((CStr::from_ptr(name.as_ptr()).to_str().unwrap(), len), ("bark", 4));
            assert!(score > 0.9, "{score}");
            // Too small a buffer says how much is needed; a missing object is refused.
            assert_eq!(avseg_session_latest_object_sound(s, 0, name.as_mut_ptr(), 4, &mut len, &mut score), AVSEG_ERR_BUFFER_TOO_SMALL);
            assert_eq!(len, 4);
            assert_eq!(avseg_session_latest_object_sound(s, 1, name.as_mut_ptr(), name.len(), &mut len, &mut score), AVSEG_ERR_INVALID_ARGUMENT);
            assert_eq!(avseg_session_label(s, 9, name.as_mut_ptr(), name.len(), &mut len), AVSEG_ERR_INVALID_ARGUMENT);
            assert_eq!(avseg_session_label(s, 2, std::ptr::null_mut(), 0, &mut len), AVSEG_ERR_BUFFER_TOO_SMALL);
            assert_eq!(len, 3, "\"cat\"");

            assert_eq!(avseg_session_latest_silent_objects(s, 60.0, objects.as_mut_ptr(), 4, &mut count), AVSEG_OK);
            assert_eq!(count, 1);
            assert_eq!(avseg_session_label(s, objects[0].class_id, name.as_mut_ptr(), name.len(), &mut len), AVSEG_OK);
            assert_eq!(CStr::from_ptr(name.as_ptr()).to_str().unwrap(), "cat");
            assert_eq!(avseg_session_free(s), AVSEG_OK);
        }
    }
}
