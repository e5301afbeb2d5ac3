//! Heap allocations on the streaming path, counted with a wrapping global allocator.
//!
//! The counter is per thread, so the test harness and other tests do not disturb it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::PathBuf;

use avseg::{Session, SessionOptions};

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocs() -> u64 {
    ALLOCS.with(|c| c.get())
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A synthetic camera (640x480 at 30 fps) and microphone (44.1 kHz stereo in 10 ms chunks, i.e.
/// 441 frames, pushed as one 882-value slice).
struct Source {
    rgb: Vec<u8>,
    audio: Vec<f32>,
    audio_frames: u64,
    frames: u64,
}

impl Source {
    fn new() -> Self {
        let rgb = (0..640 * 480 * 3).map(|i| (i * 7 % 251) as u8).collect();
        let audio = (0..882).map(|i| ((i as f32) * 0.05).sin() * 0.1).collect();
        Source { rgb, audio, audio_frames: 0, frames: 0 }
    }

    /// Pushes 1/30 s: the audio up to the frame's time, then the frame. Returns (audio pushes,
    /// allocations in push_audio, allocations in push_frame).
    fn step(&mut self, s: &mut Session) -> (u64, u64, u64) {
        let ts = self.frames as f64 / 30.0;
        let (mut pushes, mut a_allocs) = (0, 0);
        while (self.audio_frames as f64) / 44_100.0 <= ts {
            let before = allocs();
            s.push_audio(&self.audio, 44_100, 2, self.audio_frames as f64 / 44_100.0).unwrap();
            a_allocs += allocs() - before;
            self.audio_frames += 441;
            pushes += 1;
        }
        let before = allocs();
        s.push_frame(&self.rgb, 640, 480, ts).unwrap();
        let f_allocs = allocs() - before;
        self.frames += 1;
        (pushes, a_allocs, f_allocs)
    }
}

#[test]
fn steady_state_push_allocates_nothing() {
    let mut s = Session::new(repo().join("models/tiny-tpavi"), &SessionOptions::default()).unwrap();
    let mut src = Source::new();
    // Warm-up: the first audio push builds the resampler, the first frames size the raw buffers.
    let mut warm = (0, 0, 0);
    for _ in 0..60 {
        let (p, a, f) = src.step(&mut s);
        warm = (warm.0 + p, warm.1 + a, warm.2 + f);
    }
    eprintln!("warm-up (2 s): {} audio pushes with {} allocations, 60 frames with {} allocations", warm.0, warm.1, warm.2);

    // Steady state without processing: 60 s of stream. The queue fills and back-pressure drops
    // the oldest windows, so this also covers the drop path and ring compaction.
    let (mut pushes, mut a_allocs, mut f_allocs) = (0, 0, 0);
    let n_frames = 1800;
    for _ in 0..n_frames {
        let (p, a, f) = src.step(&mut s);
        pushes += p;
        a_allocs += a;
        f_allocs += f;
    }
    let st = s.stats();
    eprintln!(
        "steady, no processing: {pushes} audio pushes -> {a_allocs} allocations ({:.3}/push); \
         {n_frames} frames -> {f_allocs} allocations ({:.3}/frame); {st:?}",
        a_allocs as f64 / pushes as f64,
        f_allocs as f64 / n_frames as f64
    );
    assert!(st.frames_dropped > 0, "the drop path should have run: {st:?}");
    assert_eq!(a_allocs, 0, "push_audio allocated in steady state");
    assert_eq!(f_allocs, 0, "push_frame allocated in steady state");

    // Steady state with processing: pushes still allocate nothing, and once two windows have run
    // (every buffer and result slot sized), process() allocates exactly what tract's run of the
    // window and the resizer's T frames allocate alone (see the per-frame test below).
    let (mut pushes, mut a_allocs, mut f_allocs, mut p_allocs, mut windows) = (0, 0, 0, 0u64, 0u64);
    let n_frames = 900;
    for _ in 0..n_frames {
        let (p, a, f) = src.step(&mut s);
        pushes += p;
        a_allocs += a;
        f_allocs += f;
        let before = allocs();
        let w0 = s.stats().windows;
        s.process().unwrap();
        if w0 >= 2 {
            windows += s.stats().windows - w0;
            p_allocs += allocs() - before;
        }
    }
    let model = repo().join("models/tiny-tpavi");
    let t = s.window_frames() as u64;
    let (graph_allocs, resize_allocs) = alone(avseg::Engine::load(&model, &Default::default()).unwrap(), &src.rgb);
    eprintln!(
        "steady, processing: {pushes} audio pushes -> {a_allocs} allocations; {n_frames} frames -> {f_allocs} \
         allocations; process(): {windows} windows -> {p_allocs} allocations ({:.0}/window); alone: tract's run of \
         the graphs {graph_allocs}/call, fast_image_resize {resize_allocs}/frame",
        p_allocs as f64 / windows.max(1) as f64
    );
    assert!(windows >= 4);
    assert_eq!(a_allocs, 0, "push_audio allocated in steady state");
    assert_eq!(f_allocs, 0, "push_frame allocated in steady state");
    assert_eq!(p_allocs, windows * (graph_allocs + t * resize_allocs), "avseg's own code in process() allocates");
}

/// What one call of the engine's graphs allocates (tract), and one pre-processing of a 640×480
/// frame (fast_image_resize), each alone and after warm-up; the same call must allocate the same
/// each time.
fn alone(mut engine: avseg::Engine, rgb: &[u8]) -> (u64, u64) {
    let vision_cfg = engine.package().manifest().vision.clone();
    let t = engine.package().frames_per_clip();
    let (w, h) = (vision_cfg.width as usize, vision_cfg.height as usize);
    let per_call = |f: &mut dyn FnMut()| {
        f();
        f();
        let before = allocs();
        for _ in 0..5 {
            f();
        }
        let n = allocs() - before;
        assert_eq!(n % 5, 0, "the same call should allocate the same each time: {n} in 5 calls");
        n / 5
    };
    // An engine from `load_per_frame` takes one frame per call; one from `load`, T.
    let mut logits = avseg::Tensor::zeros(Vec::new());
    let mut graphs = |n: usize| {
        let frames = avseg::Tensor::zeros(vec![n, 3, h, w]);
        let logmel = avseg::Tensor::zeros(vec![n, 1, 96, 64]);
        engine.run_graphs_into(&frames, &logmel, &mut logits).map(|()| per_call(&mut || engine.run_graphs_into(&frames, &logmel, &mut logits).unwrap()))
    };
    let graph_allocs = graphs(1).or_else(|_| graphs(t)).unwrap();
    let mut vision = avseg::VisionFrontend::new(vision_cfg);
    let img = image::RgbImage::from_raw(640, 480, rgb.to_vec()).unwrap();
    let mut out = vec![0.0f32; vision.frame_len()];
    let resize_allocs = per_call(&mut || vision.preprocess_into(&img, &mut out).unwrap());
    (graph_allocs, resize_allocs)
}

/// Allocations per result when each frame is segmented alone (the default model): after warm-up,
/// `process()` allocates exactly what its two third-party calls allocate by themselves, measured
/// here alone on the same shapes: tract's run of the graphs for one frame (tract builds every
/// node's output), and fast_image_resize's resize of a 640×480 frame (it computes its filter
/// coefficients on every call; 6.1 has no way to keep them). avseg's own part of `process()` (the
/// log-mel patch, the input and output tensors, normalisation, the mask, the objects, the result
/// ring) allocates nothing.
#[test]
fn per_frame_process_allocates_only_inside_tract_and_the_resizer() {
    let model = repo().join("models/default");
    // The synthetic scene holds no sounding object; a low threshold makes the mask mostly
    // foreground, so the objects path runs on real regions.
    let engine_options = avseg::EngineOptions { threshold: Some(1e-20), ..Default::default() };
    let mut s = Session::new(&model, &SessionOptions { engine: engine_options.clone(), ..Default::default() }).unwrap();
    assert!(s.per_frame());
    let mut src = Source::new();
    let (mut p_allocs, mut results, mut objects) = (0u64, 0u64, 0usize);
    // Warm-up: 15 results, so that every slot of the result ring (10) has held a mask.
    for i in 0..1050 {
        let (_, a, f) = src.step(&mut s);
        if i >= 450 {
            assert_eq!((a, f), (0, 0), "pushes allocate nothing after warm-up");
        }
        let before = allocs();
        let n = s.process().unwrap() as u64;
        if i >= 450 {
            p_allocs += allocs() - before;
            results += n;
            objects += s.latest().map_or(0, |r| r.objects.len()) * n as usize;
        }
    }
    assert!(results >= 15, "{results}");
    assert!(objects >= results as usize, "the masks should hold objects: {objects} in {results} results");

    // The graphs alone, prepared for one frame as the session prepares them.
    let (graph_allocs, resize_allocs) = alone(avseg::Engine::load_per_frame(&model, &engine_options).unwrap(), &src.rgb);
    eprintln!(
        "per frame, after warm-up: process() made {results} results ({objects} objects) with {p_allocs} allocations ({:.1}/result); \
         alone: tract's run of the graphs {graph_allocs}/call, fast_image_resize {resize_allocs}/frame",
        p_allocs as f64 / results as f64
    );
    assert_eq!(
        p_allocs,
        results * (graph_allocs + resize_allocs),
        "process() allocated more than tract and the resizer do alone: avseg's own code allocates"
    );
}

/// Sliding windows for official TPAVI (the tiny package, groups of 5): after warm-up, each result
/// costs one call of the window step, and `process()` allocates exactly what that call and the
/// resizer allocate alone. The kept `[φ; gs]` terms, the summed K of the older frames and the
/// step's inputs are all made when the session is.
#[test]
fn sliding_process_allocates_only_inside_tract_and_the_resizer() {
    use avseg::{Engine, StreamMode, Tensor};
    let model = repo().join("models/tiny-tpavi");
    let engine_options = avseg::EngineOptions { threshold: Some(1e-20), ..Default::default() };
    let options = SessionOptions { engine: engine_options.clone(), mode: StreamMode::Sliding, ..Default::default() };
    let mut s = Session::new(&model, &options).unwrap();
    let mut src = Source::new();
    let (mut p_allocs, mut results, mut calls) = (0u64, 0u64, 0u64);
    for i in 0..1050 {
        let (_, a, f) = src.step(&mut s);
        if i >= 450 {
            assert_eq!((a, f), (0, 0), "pushes allocate nothing after warm-up");
        }
        let before = (allocs(), s.stats().windows);
        let n = s.process().unwrap() as u64;
        if i >= 450 {
            p_allocs += allocs() - before.0;
            results += n;
            calls += s.stats().windows - before.1;
        }
    }
    assert!(results >= 15 && results == calls, "{results} results in {calls} calls: one call per result once the window is full");

    // The window step alone, on an engine prepared as the session prepares it.
    let mut engine = Engine::load_sliding(&model, &engine_options).unwrap();
    let v = engine.package().manifest().vision.clone();
    let blocks = engine.window_blocks();
    assert_eq!(blocks.len(), 4, "one TPAVI block per encoder stage");
    let frames = Tensor::zeros(vec![1, 3, v.height as usize, v.width as usize]);
    let logmel = Tensor::zeros(vec![1, 1, 96, 64]);
    let weight = Tensor::new(vec![1], vec![1.0]);
    let rest: Vec<Tensor> = blocks.iter().map(|&cp| Tensor::zeros(vec![cp, cp])).collect();
    let mut terms: Vec<Tensor> = blocks.iter().map(|&cp| Tensor::zeros(vec![2, cp])).collect();
    let mut logits = Tensor::zeros(Vec::new());
    let mut step = || engine.run_window_step_into(&frames, &logmel, &weight, &rest, &mut logits, &mut terms).unwrap();
    step();
    step();
    let before = allocs();
    for _ in 0..5 {
        step();
    }
    let graph_allocs = (allocs() - before) / 5;
    let mut vision = avseg::VisionFrontend::new(v);
    let img = image::RgbImage::from_raw(640, 480, src.rgb.clone()).unwrap();
    let mut out = vec![0.0f32; vision.frame_len()];
    vision.preprocess_into(&img, &mut out).unwrap();
    let before = allocs();
    vision.preprocess_into(&img, &mut out).unwrap();
    let resize_allocs = allocs() - before;
    eprintln!(
        "sliding, after warm-up: process() made {results} results in {calls} calls with {p_allocs} allocations ({:.1}/result); \
         alone: tract's run of the window step {graph_allocs}/call, fast_image_resize {resize_allocs}/frame",
        p_allocs as f64 / results as f64
    );
    assert_eq!(
        p_allocs,
        calls * (graph_allocs + resize_allocs),
        "process() allocated more than tract and the resizer do alone: avseg's own code allocates"
    );
}
