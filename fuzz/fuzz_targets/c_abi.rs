//! The C ABI: arbitrary sequences of calls on sessions of the bundled tiny-tpavi model, with fuzzed
//! arguments, timestamps, sizes, strides and NULLs. The ABI's own sources are compiled into this
//! target (`crates/avseg-ffi/src`), so the fuzzer sees their branches. Oracle: no call panics or
//! aborts, and none answers `AVSEG_ERR_PANIC`, the status for a bug in avseg.
#![no_main]

use std::ffi::CString;
use std::ptr::{null, null_mut};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

#[allow(dead_code, unused_imports, clippy::all)]
#[path = "../../crates/avseg-ffi/src/lib.rs"]
mod ffi;

use ffi::avseg_status;
use ffi::session::*;

#[derive(Arbitrary, Debug)]
enum Call {
    PushAudioF32 { n: u16, rate: u32, channels: u8, timestamp: f64, value: f32, null_ptr: bool },
    PushAudioS16 { n: u16, rate: u32, channels: u8, timestamp: f64, value: i16 },
    PushFrame { width: u16, height: u16, stride_pad: u8, size_cut: u16, timestamp: f64, null_ptr: bool },
    Process { null_out: bool },
    Finish,
    Latest { null: bool },
    LatestMask { capacity: u16 },
    LatestConfidence { capacity: u16 },
    LatestObjects { capacity: u8, hfov: f32 },
    Pop { mask_capacity: u16, object_capacity: u8, hfov: f32, null_info: bool },
    Stats,
    Bearing { x: f32, width: u32, hfov: f32 },
}

#[derive(Arbitrary, Debug)]
struct Input {
    threads: u8,
    threshold: f32,
    min_area: u16,
    hop: u8,
    frame_queue: u8,
    calls: Vec<Call>,
    free_twice: bool,
}

fn ok(status: avseg_status, call: &str) {
    assert!(status != avseg_status::AVSEG_ERR_PANIC, "{call} answered AVSEG_ERR_PANIC");
}

fn model_dir() -> CString {
    CString::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../models/tiny-tpavi")).unwrap()
}

/// One session per thread count the inputs can ask for, created once and never freed: while they
/// live, every new session of the same package and threads takes their prepared plans (avseg shares
/// plans between live engines) instead of optimising the graphs again, which ran at 4 inputs/s.
/// Each input still gets a fresh session, so a crash reproduces from its input alone.
fn keep_plans_alive() {
    static PINNED: std::sync::Once = std::sync::Once::new();
    PINNED.call_once(|| {
        let dir = model_dir();
        for threads in 0..3 {
            let mut options = std::mem::MaybeUninit::<avseg_session_options>::uninit();
            let mut session = null_mut();
            unsafe {
                avseg_session_options_default(options.as_mut_ptr());
                let mut options = options.assume_init();
                options.backend = 1;
                options.threads = threads;
                assert_eq!(avseg_session_new(dir.as_ptr(), &options, &mut session), avseg_status::AVSEG_OK);
            }
        }
    });
}

fuzz_target!(|input: Input| {
    if input.calls.len() > 48 {
        return;
    }
    keep_plans_alive();
    let dir = model_dir();
    let mut options = std::mem::MaybeUninit::<avseg_session_options>::uninit();
    unsafe {
        ok(avseg_session_options_default(options.as_mut_ptr()), "options_default");
    }
    let mut options = unsafe { options.assume_init() };
    options.backend = 1; // the CPU: a fuzzer's machine has no GPU to choose
    options.threads = (input.threads % 3) as u32;
    options.threshold = input.threshold;
    options.min_object_area = input.min_area as u64;
    options.hop = input.hop as u32;
    options.frame_queue = input.frame_queue as u32;
    let mut session = null_mut();
    let status = unsafe { avseg_session_new(dir.as_ptr(), &options, &mut session) };
    ok(status, "session_new");
    if session.is_null() {
        return;
    }
    let mut results = 0usize;
    for call in &input.calls {
        let status = unsafe {
            match *call {
                Call::PushAudioF32 { n, rate, channels, timestamp, value, null_ptr } => {
                    let samples = vec![value; n as usize];
                    let ptr = if null_ptr { null() } else { samples.as_ptr() };
                    avseg_session_push_audio_f32(session, ptr, samples.len(), rate, channels as u32, timestamp)
                }
                Call::PushAudioS16 { n, rate, channels, timestamp, value } => {
                    let samples: Vec<i16> = (0..n).map(|i| value.wrapping_mul(i as i16)).collect();
                    avseg_session_push_audio_s16(session, samples.as_ptr(), samples.len(), rate, channels as u32, timestamp)
                }
                Call::PushFrame { width, height, stride_pad, size_cut, timestamp, null_ptr } => {
                    let (w, h) = ((width % 300) as u32, (height % 300) as u32);
                    let stride = w as usize * 3 + stride_pad as usize;
                    let size = (stride * h as usize).saturating_sub(size_cut as usize);
                    let pixels: Vec<u8> = (0..size).map(|i| (i * 7) as u8).collect();
                    let ptr = if null_ptr { null() } else { pixels.as_ptr() };
                    avseg_session_push_frame_rgb8(session, ptr, size, w, h, stride, timestamp)
                }
                Call::Process { null_out } => {
                    avseg_session_process(session, if null_out { null_mut() } else { &mut results })
                }
                Call::Finish => avseg_session_finish(session, &mut results),
                Call::Latest { null } => {
                    let mut info = avseg_result_info::default();
                    avseg_session_latest(session, if null { null_mut() } else { &mut info })
                }
                Call::LatestMask { capacity } => {
                    let mut mask = vec![0u8; capacity as usize * 16];
                    let mut needed = 0usize;
                    avseg_session_latest_mask(session, mask.as_mut_ptr(), mask.len(), &mut needed)
                }
                Call::LatestConfidence { capacity } => {
                    let mut conf = vec![0f32; capacity as usize * 16];
                    let mut needed = 0usize;
                    avseg_session_latest_confidence(session, conf.as_mut_ptr(), conf.len(), &mut needed)
                }
                Call::LatestObjects { capacity, hfov } => {
                    let mut objects = vec![avseg_object::default(); capacity as usize];
                    let mut count = 0usize;
                    avseg_session_latest_objects(session, hfov, objects.as_mut_ptr(), objects.len(), &mut count)
                }
                Call::Pop { mask_capacity, object_capacity, hfov, null_info } => {
                    let mut info = avseg_result_info::default();
                    let mut mask = vec![0u8; mask_capacity as usize * 16];
                    let mut objects = vec![avseg_object::default(); object_capacity as usize];
                    let info_ptr = if null_info { null_mut() } else { &mut info as *mut _ };
                    avseg_session_pop_result(
                        session,
                        hfov,
                        info_ptr,
                        mask.as_mut_ptr(),
                        mask.len(),
                        objects.as_mut_ptr(),
                        objects.len(),
                    )
                }
                Call::Stats => {
                    let mut stats = avseg_stats::default();
                    avseg_session_stats(session, &mut stats)
                }
                Call::Bearing { x, width, hfov } => {
                    let _ = avseg_bearing_deg(x, width, hfov);
                    avseg_status::AVSEG_OK
                }
            }
        };
        ok(status, &format!("{call:?}"));
    }
    unsafe {
        ok(avseg_session_free(session), "session_free");
        if input.free_twice {
            // A freed handle is refused, not undefined behaviour.
            assert_eq!(avseg_session_free(session), avseg_status::AVSEG_ERR_INVALID_HANDLE);
        }
    }
});
