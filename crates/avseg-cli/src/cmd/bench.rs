
//! `avseg bench`: clip latency per stage (optionally against ONNX Runtime) and a streaming soak.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;

use avseg::{find_clip, CpuKernels, write_npy, ClipInput, Engine, EngineOptions, Session, SessionOptions, StreamMode};

use super::segment::{BackendArg, CpuKernelsArg, PrePostArg, PrecisionArg};
use crate::{python as pytools, CliError};

#[derive(Args)]
pub(crate) struct BenchArgs {
    /// Model package folder.
    #[arg(long)]
    pub model: PathBuf,
    /// Clip whose frames and audio are used (the stream mode loops them). Default: models/sample.
    #[arg(long)]
    pub clip: Option<PathBuf>,
    /// Timed clip runs (after one untimed warm-up run).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Threads for matrix products (and ONNX Runtime's intra-op threads).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Kernels for convolutions and resizes on the CPU.
    #[arg(long, value_enum, default_value_t = CpuKernelsArg::Avseg)]
    pub cpu_kernels: CpuKernelsArg,
    /// What runs the graphs, as `avseg segment --backend`. On the CUDA runner (cuda,
    /// cuda-emulated) the report adds the plan's FLOPs, the FLOP/s achieved on the graphs and the
    /// device memory held.
    #[arg(long, value_enum, default_value_t = BackendArg::Auto)]
    pub backend: BackendArg,
    /// Storage precision on the CUDA runner, as `avseg segment --precision`.
    #[arg(long, value_enum, default_value_t = PrecisionArg::Fp32)]
    pub precision: PrecisionArg,
    /// Where frames are pre-processed and masks made, as `avseg segment --pre-post`.
    #[arg(long, value_enum, default_value_t = PrePostArg::Host)]
    pub pre_post: PrePostArg,
    /// Also time the package's graphs in ONNX Runtime (tools/avseg_tools/bench_ort.py, via $AVSEG_PYTHON or
    /// .venv/bin/python) on the same inputs.
    #[arg(long, conflicts_with = "stream")]
    pub vs_onnxruntime: bool,
    /// Also time every operator of the graphs over the runs, and print the top ones with their
    /// share of the graphs' time, per node and folded per operator kind.
    #[arg(long, conflicts_with = "stream")]
    pub profile: bool,
    /// With --profile: how many nodes and operator kinds to print.
    #[arg(long, default_value_t = 15)]
    pub profile_top: usize,
    /// Soak a streaming session instead: a simulated live camera and microphone.
    #[arg(long)]
    pub stream: bool,
    /// Stream mode: camera frames to push.
    #[arg(long, default_value_t = 1000)]
    pub frames: u64,
    /// Stream mode: camera frame rate.
    #[arg(long, default_value_t = 10.0)]
    pub fps: f64,
    /// Stream mode: simulated extra inference time per window, in ms (added to the simulated clock,
    /// not slept), to show back-pressure.
    #[arg(long, default_value_t = 0.0)]
    pub slow_ms: f64,
    /// Stream mode: window hop in frames (0 = T).
    #[arg(long, default_value_t = 0)]
    pub hop: usize,
    /// Stream mode: pending-frame queue (0 = 2·T).
    #[arg(long, default_value_t = 0)]
    pub frame_queue: usize,
    /// Stream mode: windows of T frames, or each sampled frame alone (auto: alone when the
    /// package's frames are independent and --hop is not given).
    #[arg(long, value_enum, default_value_t = super::segment::StreamModeArg::Auto)]
    pub stream_mode: super::segment::StreamModeArg,
    #[command(flatten)]
    pub package: super::PackageArgs,
}



/// A `/proc/self/status` field in kB (Linux); None elsewhere.
fn proc_kb(key: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines().find(|l| l.starts_with(key))?.split_whitespace().nth(1)?.parse().ok()
}

fn mb(kb: Option<u64>) -> String {
    kb.map_or("n/a".into(), |k| format!("{:.1} MB", k as f64 / 1024.0))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Nearest-rank percentile of unsorted values.
fn pct(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let i = ((p / 100.0 * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1;
    s[i]
}

fn engine_options(a: &BenchArgs) -> EngineOptions {
    EngineOptions {
        threads: a.threads,
        cpu_kernels: a.cpu_kernels.into(),
        package: a.package.options(),
        backend: a.backend.into(),
        device_precision: a.precision.into(),
        pre_post_on_device: a.pre_post == PrePostArg::Device,
        ..EngineOptions::default()
    }
}

fn clip_dir(a: &BenchArgs) -> Result<PathBuf, CliError> {
    let dir = a.clip.clone().unwrap_or_else(|| PathBuf::from("models/sample"));
    if !dir.is_dir() {
        return Err(CliError::Usage(format!("{}: clip folder not found (give --clip DIR)", dir.display())));
    }
    Ok(dir)
}

/// Runs `avseg bench`.
pub(crate) fn run(a: BenchArgs) -> Result<(), CliError> {
    if a.stream {
        stream(&a)
    } else {
        clip(&a)
    }
}

fn clip(a: &BenchArgs) -> Result<(), CliError> {
    if a.runs == 0 {
        return Err(CliError::Usage("--runs must be at least 1".into()));
    }
    let t0 = Instant::now();
    let mut engine = Engine::load(&a.model, &engine_options(a))?;
    let load = t0.elapsed();
    let clip = ClipInput::load(&find_clip(&clip_dir(a)?)?)?;
    engine.run_clip(&clip)?; // warm-up: first-touch of weights and scratch
    // total, front end, audio encoder, segmenter, post, audio front end, both graphs
    let mut stages: [Vec<f64>; 7] = Default::default();
    for _ in 0..a.runs {
        let t = engine.run_clip(&clip)?.times;
        let front = t.audio_frontend + t.vision_frontend;
        let graphs = t.audio_encoder + t.segmenter;
        for (v, d) in
            stages.iter_mut().zip([t.total(), front, t.audio_encoder, t.segmenter, t.post, t.audio_frontend, graphs])
        {
            v.push(ms(d));
        }
    }
    let median = pct(&stages[0], 50.0);
    println!(
        "model {} | clip {} ({} frames) | backend {} ({} kernels) | threads {} | load {:.0} ms | {} runs",
        a.model.display(),
        clip_dir(a)?.display(),
        clip.frames.len(),
        engine.backend_name(),
        CpuKernels::from(a.cpu_kernels).name(),
        a.threads,
        ms(load),
        a.runs
    );
    println!("per clip      median {:>8.1} ms   min {:.1}   max {:.1}", median, pct(&stages[0], 0.0), pct(&stages[0], 100.0));
    println!("  front end   median {:>8.1} ms   (audio {:.1})", pct(&stages[1], 50.0), pct(&stages[5], 50.0));
    println!("  audio enc.  median {:>8.1} ms", pct(&stages[2], 50.0));
    println!("  segmenter   median {:>8.1} ms", pct(&stages[3], 50.0));
    println!("  post        median {:>8.1} ms", pct(&stages[4], 50.0));
    println!("peak RSS {} (VmHWM), RSS now {}", mb(proc_kb("VmHWM:")), mb(proc_kb("VmRSS:")));
    if let Some(d) = engine.device_report() {
        // Each window of T frames is one call of each graph.
        let calls = clip.frames.len().div_ceil(engine.package().frames_per_clip()) as f64;
        let gflop = |f: u64| f as f64 * calls / 1e9;
        let per_s = |f: u64, ms: f64| gflop(f) / (ms / 1e3);
        println!(
            "device        {:.2} GFLOP per clip (audio enc. {:.2} at {:.1} GFLOP/s, segmenter {:.2} at {:.1} GFLOP/s); device memory {:.1} MiB held, peak {:.1} MiB",
            gflop(d.audio_encoder_flops + d.segmenter_flops),
            gflop(d.audio_encoder_flops),
            per_s(d.audio_encoder_flops, pct(&stages[2], 50.0)),
            gflop(d.segmenter_flops),
            per_s(d.segmenter_flops, pct(&stages[3], 50.0)),
            d.memory_bytes as f64 / (1 << 20) as f64,
            d.peak_memory_bytes as f64 / (1 << 20) as f64
        );
    }
    // One key=value line for scripts (tools/bench_cpu.sh): the medians in ms, RSS in MB.
    let mut summary = format!(
        "summary kernels={} threads={} load_ms={:.0} graphs_ms={:.2} audio_encoder_ms={:.2} segmenter_ms={:.2} peak_rss_mb={:.0}",
        CpuKernels::from(a.cpu_kernels).name(),
        a.threads,
        ms(load),
        pct(&stages[6], 50.0),
        pct(&stages[2], 50.0),
        pct(&stages[3], 50.0),
        proc_kb("VmHWM:").map_or(f64::NAN, |k| k as f64 / 1024.0)
    );
    if a.vs_onnxruntime {
        let graphs = pct(&stages[6], 50.0);
        let ort = ort_times(a, &mut engine, &clip)?;
        println!(
            "onnxruntime   median {:>8.1} ms (graphs only, {} intra-op threads); avseg graphs {:.1} ms -> avseg/ORT = {:.2}",
            ort.clip,
            a.threads,
            graphs,
            graphs / ort.clip
        );
        println!(
            "  load        {:>8.0} ms; peak RSS {} (the Python process with ONNX Runtime)",
            ort.load_ms.unwrap_or(f64::NAN),
            mb(ort.peak_rss_kb)
        );
        summary += &format!(
            " ort_graphs_ms={:.2} ort_audio_encoder_ms={:.2} ort_segmenter_ms={:.2} ort_load_ms={:.0} ort_peak_rss_mb={:.0}",
            ort.clip,
            ort.audio_encoder.unwrap_or(f64::NAN),
            ort.segmenter.unwrap_or(f64::NAN),
            ort.load_ms.unwrap_or(f64::NAN),
            ort.peak_rss_kb.map_or(f64::NAN, |k| k as f64 / 1024.0)
        );
        if let (Some(enc), Some(seg)) = (ort.audio_encoder, ort.segmenter) {
            println!(
                "  audio enc.  median {:>8.1} ms (avseg/ORT = {:.2})\n  segmenter   median {:>8.1} ms (avseg/ORT = {:.2})",
                enc,
                pct(&stages[2], 50.0) / enc,
                seg,
                pct(&stages[3], 50.0) / seg
            );
        }
    }
    println!("{summary}");
    if a.profile {
        print_profile(a, &mut engine, &clip)?;
    }
    Ok(())
}

/// `--profile`: the operator times of `--runs` graph runs, per node and per operator kind.
fn print_profile(a: &BenchArgs, engine: &mut Engine, clip: &ClipInput) -> Result<(), CliError> {
    let f = engine.features(clip)?;
    let times = engine.profile_graphs(&f.frames, &f.logmel, a.runs)?;
    let total: f64 = times.iter().map(|t| ms(t.time)).sum();
    let per_run = |v: f64| v / a.runs as f64;
    println!("profile: {} nodes, {:.1} ms per run in operators", times.len(), per_run(total));
    println!("  top nodes (ms per run, share):");
    for t in times.iter().take(a.profile_top) {
        println!("    {:>7.2} {:>5.1} %  {:<14} {:<22} {}", per_run(ms(t.time)), 100.0 * ms(t.time) / total, t.graph, t.op, t.node);
    }
    let mut kinds: Vec<(String, f64, usize)> = Vec::new();
    for t in &times {
        let key = format!("{}/{}", t.graph, t.op);
        match kinds.iter_mut().find(|k| k.0 == key) {
            Some(k) => {
                k.1 += ms(t.time);
                k.2 += 1;
            }
            None => kinds.push((key, ms(t.time), 1)),
        }
    }
    kinds.sort_by(|x, y| y.1.total_cmp(&x.1));
    println!("  top operator kinds (ms per run, share, nodes):");
    for (key, time, nodes) in kinds.iter().take(a.profile_top) {
        println!("    {:>7.2} {:>5.1} %  {:>4}  {}", per_run(*time), 100.0 * time / total, nodes, key);
    }
    Ok(())
}

/// ONNX Runtime's medians over the same inputs (tools/avseg_tools/bench_ort.py).
struct OrtTimes {
    clip: f64,
    audio_encoder: Option<f64>,
    segmenter: Option<f64>,
    load_ms: Option<f64>,
    peak_rss_kb: Option<u64>,
}

fn ort_times(a: &BenchArgs, engine: &mut Engine, clip: &ClipInput) -> Result<OrtTimes, CliError> {
    // Look Python up first: without it there is no point in writing the inputs.
    let py = pytools::python()?;
    let tools = pytools::tools_dir()?;
    // The ONNX Runtime side of the comparison (tools/avseg_tools/bench_ort.py).
    let script = "avseg_tools.bench_ort";
    let f = engine.features(clip)?;
    let dir = std::env::temp_dir().join(format!("avseg-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| CliError::Io { path: dir.clone(), source: e })?;
    let (lm, fr) = (dir.join("logmel.npy"), dir.join("frames.npy"));
    write_npy(&lm, f.logmel.shape(), f.logmel.data())?;
    write_npy(&fr, f.frames.shape(), f.frames.data())?;
    let out = pytools::command(&py, &tools)
        .args(["-m", script])
        .arg("--model")
        .arg(&a.model)
        .arg("--logmel")
        .arg(&lm)
        .arg("--frames")
        .arg(&fr)
        .args(["--threads", &a.threads.to_string(), "--runs", &a.runs.to_string()])
        .output()
        .map_err(|e| CliError::Tool(format!("{}: cannot run ONNX Runtime benchmark: {e}", py.display())));
    let _ = std::fs::remove_dir_all(&dir);
    let out = out?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(pytools::failure(script, &py, &String::from_utf8_lossy(&out.stderr)));
    }
    let field = |name: &str| -> Option<f64> {
        stdout.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
    };
    Ok(OrtTimes {
        clip: field("median_ms ")
            .ok_or_else(|| CliError::Tool(format!("{script}: no `median_ms` line in its output")))?,
        audio_encoder: field("audio_encoder_median_ms "),
        segmenter: field("segmenter_median_ms "),
        load_ms: field("load_ms "),
        peak_rss_kb: field("peak_rss_kb ").map(|v| v as u64),
    })
}

/// A live source simulated on a virtual clock: idle time is skipped, but time spent in
/// `process()` (plus `--slow-ms` per window) passes on the clock, so frames and audio arrive in
/// the bursts a real camera and microphone would deliver.
fn stream(a: &BenchArgs) -> Result<(), CliError> {
    if !(a.fps.is_finite() && a.fps > 0.0) || !(a.slow_ms.is_finite() && a.slow_ms >= 0.0) {
        return Err(CliError::Usage("--fps must be > 0 and --slow-ms >= 0".into()));
    }
    let clip = ClipInput::load(&find_clip(&clip_dir(a)?)?)?;
    let rate = clip.audio.rate;
    // Stereo, to exercise the channel mix; 10 ms chunks.
    let stereo: Vec<f32> = clip.audio.samples.iter().flat_map(|&v| [v, v]).collect();
    let chunk = (rate as usize / 100).max(1);
    let options =
        SessionOptions { engine: engine_options(a), hop: a.hop, frame_queue: a.frame_queue, mode: a.stream_mode.into() };
    let rss_begin = proc_kb("VmRSS:");
    let mut s = Session::new(&a.model, &options)?;
    let rss_start = proc_kb("VmRSS:");
    println!(
        "stream soak: model {} ({}, frames per call {}, hop {}, frame queue {}), {} frames at {} fps ({:.0} s of stream), audio {} Hz stereo in 10 ms chunks, slow {} ms/window, threads {}",
        a.model.display(),
        match s.mode() {
            StreamMode::PerFrame => "each frame alone",
            StreamMode::Sliding => "sliding windows, one frame per result",
            StreamMode::SlidingPadded => "sliding windows, padded start",
            _ => "windows",
        },
        s.window_frames(),
        s.hop(),
        s.frame_queue(),
        a.frames,
        a.fps,
        a.frames as f64 / a.fps,
        rate,
        a.slow_ms,
        a.threads
    );
    println!("RSS before session {}, after Session::new {}", mb(rss_begin), mb(rss_start));

    let mut buf = Vec::with_capacity(chunk * 2);
    let mut sim = 0.0f64;
    let (mut next_frame, mut audio_pos, mut audio_chunks) = (0u64, 0usize, 0u64);
    let mut proc_ms = Vec::new();
    let mut newest_ms = Vec::new();
    let mut capture_ms = Vec::new();
    let mut lag_ms = Vec::new();
    let mut result_ms = Vec::new();
    let mut rss_warm = None;
    let warm_frames = (a.frames / 10).max(1);
    let wall = Instant::now();
    while next_frame < a.frames {
        sim = sim.max(next_frame as f64 / a.fps);
        while (audio_chunks + 1) as f64 * chunk as f64 / rate as f64 <= sim {
            // Loop the clip's audio: fill one chunk, wrapping to the start.
            buf.clear();
            while buf.len() < chunk * 2 {
                let take = (chunk * 2 - buf.len()).min(stereo.len() - audio_pos);
                buf.extend_from_slice(&stereo[audio_pos..audio_pos + take]);
                audio_pos = (audio_pos + take) % stereo.len();
            }
            s.push_audio(&buf, rate, 2, audio_chunks as f64 * chunk as f64 / rate as f64)?;
            audio_chunks += 1;
        }
        while next_frame < a.frames && next_frame as f64 / a.fps <= sim {
            let img = &clip.frames[(next_frame as usize) % clip.frames.len()].image;
            s.push_frame(img.as_raw(), img.width(), img.height(), next_frame as f64 / a.fps)?;
            next_frame += 1;
        }
        let w0 = s.stats().windows;
        let t = Instant::now();
        let n = s.process()?;
        let took = t.elapsed();
        let windows = s.stats().windows - w0;
        sim += took.as_secs_f64() + windows as f64 * a.slow_ms / 1e3;
        if windows > 0 {
            proc_ms.push(ms(took) / windows as f64);
        }
        if n > 0 {
            result_ms.push(ms(took) / n as f64);
            let newest = s.latest().map(|r| r.sequence);
            while let Some(r) = s.pop_result() {
                capture_ms.push((sim - r.frame_timestamp) * 1e3);
                lag_ms.push((sim - r.patch_end) * 1e3);
                if Some(r.sequence) == newest {
                    newest_ms.push(ms(r.latency));
                }
            }
        }
        if rss_warm.is_none() && next_frame >= warm_frames {
            rss_warm = proc_kb("VmRSS:");
        }
    }
    s.finish()?;
    while s.pop_result().is_some() {}
    let rss_end = proc_kb("VmRSS:");
    let st = s.stats();
    let t = s.stage_times();
    println!(
        "pushed {} frames and {} audio chunks in {:.1} s wall ({:.0} s simulated)",
        st.frames_pushed,
        audio_chunks,
        wall.elapsed().as_secs_f64(),
        sim
    );
    println!(
        "frames: used {}, skipped {} (not at a sampling instant), dropped {} (back-pressure); windows {}, results {}",
        st.frames_used, st.frames_skipped, st.frames_dropped, st.windows, st.results
    );
    println!(
        "process() per window: median {:.1} ms, p99 {:.1} ms (front end {:.1} ms, audio enc. {:.1}, segmenter {:.1}, post {:.1} per window on average)",
        pct(&proc_ms, 50.0),
        pct(&proc_ms, 99.0),
        ms(t.audio_frontend + t.vision_frontend) / st.windows.max(1) as f64,
        ms(t.audio_encoder) / st.windows.max(1) as f64,
        ms(t.segmenter) / st.windows.max(1) as f64,
        ms(t.post) / st.windows.max(1) as f64
    );
    println!(
        "latency, newest frame of each window, push_frame -> mask (wall): median {:.1} ms, p99 {:.1} ms ({} windows)",
        pct(&newest_ms, 50.0),
        pct(&newest_ms, 99.0),
        newest_ms.len()
    );
    let stats = |v: &[f64]| format!("median {:.1} ms, p99 {:.1} ms, max {:.1} ms", pct(v, 50.0), pct(v, 99.0), pct(v, 100.0));
    println!("compute per result (process() time / results it made): {}", stats(&result_ms));
    println!(
        "stream lag, every result (simulated clock: result ready - end of the frame's own audio patch): {}",
        stats(&lag_ms)
    );
    println!(
        "capture -> mask, every result (simulated clock, includes waiting for a window's later frames): {}",
        stats(&capture_ms)
    );
    println!(
        "RSS start {} | after warm-up ({} frames) {} | end {} | peak (VmHWM) {}",
        mb(rss_start),
        warm_frames,
        mb(rss_warm),
        mb(rss_end),
        mb(proc_kb("VmHWM:"))
    );
    Ok(())
}
