//! `avseg kernels`: a clear error for a bad architecture, and the NVRTC check's report (which
//! says plainly when NVRTC is absent).

use std::io::Write;
use std::process::Command;

/// Straight to stderr, past the test harness's capture, so CI logs show what NVRTC said.
fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

fn avseg_bin(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_avseg"));
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run avseg")
}

#[test]
fn kernels_subcommand_reports_clearly() {
    let bad = avseg_bin(&["kernels", "--check", "--arch", "sm_87,bogus"], &[]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(1), "{err}");
    assert!(err.contains("`bogus`"), "{err}");

    let cache = tempfile::tempdir().unwrap();
    let check = avseg_bin(&["kernels", "--check", "--arch", "sm_87"], &[]);
    let (out, err) = (String::from_utf8_lossy(&check.stdout), String::from_utf8_lossy(&check.stderr));
    assert!(!err.contains("panicked"), "{err}");
    if check.status.success() {
        // NVRTC is installed here: every family compiled and its entry points were found.
        assert!(out.contains("all 5 kernel builds ok"), "{out}");
        assert_eq!(out.lines().filter(|l| l.starts_with("ok ")).count(), 5, "{out}");
    } else {
        assert!(err.contains("libnvrtc"), "a missing NVRTC must be named: {err}");
        say("skipped: NVRTC not found; `avseg kernels --check` reported it (tools/test.sh runs the real check)");
    }

    // Without --arch the architecture comes from the GPU; without one, the error says what to do.
    let pre = avseg_bin(&["kernels", "--precompile", "--cache-dir", cache.path().to_str().unwrap()], &[]);
    let err = String::from_utf8_lossy(&pre.stderr);
    assert!(!err.contains("panicked"), "{err}");
    if !pre.status.success() {
        assert!(err.contains("--arch") || err.contains("libnvrtc"), "{err}");
    }
}

/// `avseg kernels --plan`: the CUDA runner's plan for a package, with no GPU.
#[test]
fn plan_prints_kernels_flops_and_memory() {
    let model = concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/tiny-tpavi");
    let out = avseg_bin(&["kernels", "--plan", "--model", model], &[]);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    for want in ["audio_encoder:", "segmenter:", "tpavi fold (1 group)", "implicit-gemm 3x3 conv", "activation arena"] {
        assert!(stdout.contains(want), "{want:?} missing:\n{stdout}");
    }
    assert!(!stdout.contains("no device kernel"), "{stdout}");
    let half = avseg_bin(&["kernels", "--plan", "--model", model, "--precision", "fp16"], &[]);
    assert!(String::from_utf8_lossy(&half.stdout).contains("fp16 storage"));
    let missing = avseg_bin(&["kernels", "--plan"], &[]);
    assert_eq!(missing.status.code(), Some(2), "clap usage error");
    assert!(String::from_utf8_lossy(&missing.stderr).contains("--model"));
}

fn read_npy(path: &std::path::Path) -> (Vec<u64>, Vec<f32>) {
    let f = npyz::NpyFile::new(std::fs::File::open(path).unwrap()).unwrap();
    let shape = f.shape().to_vec();
    (shape, f.into_vec::<f32>().unwrap())
}

/// `avseg segment --backend cuda-emulated`: the CUDA runner's plan and kernels, run on the CPU,
/// give tract's logits (fp32 within 1e-4 of their range, fp16 storage within 1e-2) and masks on
/// the bundled sample; `--precision fp16` elsewhere is an error.
#[test]
fn segment_on_the_emulated_device_matches_tract() {
    let repo = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let dir = tempfile::tempdir().unwrap();
    let sample = format!("{repo}/models/sample");
    let model = format!("{repo}/models/tiny-tpavi");
    let mut logits = Vec::new();
    for (backend, precision) in [("cpu", "fp32"), ("cuda-emulated", "fp32"), ("cuda-emulated", "fp16")] {
        let out = dir.path().join(format!("{backend}-{precision}"));
        let args = ["segment", "--model", &model, "--clip", &sample, "--out", out.to_str().unwrap(), "--save-logits", "--backend", backend, "--precision", precision];
        let run = avseg_bin(&args, &[]);
        assert!(run.status.success(), "{backend} {precision}: {}", String::from_utf8_lossy(&run.stderr));
        logits.push(read_npy(&out.join("logits.npy")));
    }
    let (shape_a, a) = &logits[0];
    let range = a.iter().fold(0f32, |m, v| m.max(v.abs()));
    for ((shape_b, b), precision, tol) in [(&logits[1], "fp32", 1e-4), (&logits[2], "fp16", 1e-2)] {
        assert_eq!(shape_a, shape_b);
        // A NaN on either side makes `worst` NaN, which fails the check below (`f32::max` drops it).
        let worst = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, |m, d| if m.is_nan() || d.is_nan() { f32::NAN } else { m.max(d) });
        let agree = a.iter().zip(b).filter(|(x, y)| (**x > 0.0) == (**y > 0.0)).count() as f64 / a.len() as f64;
        say(&format!("cuda-emulated {precision} vs tract, tiny-tpavi on the sample: max |diff| {worst:.3e} of range {range:.3}, masks agree {:.4}%", 100.0 * agree));
        assert!(worst <= tol * range && agree >= 0.999, "{precision}: max diff {worst} (range {range}), agreement {agree}");
    }
    // fp16 on a backend without the CUDA runner is refused, not run as fp32.
    let out = dir.path().join("cpu-fp16");
    let refused = avseg_bin(&["segment", "--model", &model, "--clip", &sample, "--out", out.to_str().unwrap(), "--backend", "cpu", "--precision", "fp16"], &[]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && stderr.contains("fp16 storage runs on the CUDA runner only"), "{stderr}");
    // So is pre- and post-processing on a device there is none of.
    let out = dir.path().join("cpu-device-pre-post");
    let refused = avseg_bin(&["segment", "--model", &model, "--clip", &sample, "--out", out.to_str().unwrap(), "--backend", "cpu", "--pre-post", "device"], &[]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && stderr.contains("pre- and post-processing on the device need the CUDA runner"), "{stderr}");
}

/// `avseg bench --backend cuda-emulated` adds the device line: the plan's FLOPs per clip (as
/// `avseg kernels --plan` counts them: one call of each graph for the sample's 5 frames), the
/// FLOP/s achieved, and the device memory held; on tract there is no such line.
#[test]
fn bench_reports_flops_and_device_memory_on_the_cuda_runner() {
    let repo = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let model = format!("{repo}/models/tiny-tpavi");
    let sample = format!("{repo}/models/sample");
    let plan = avseg_bin(&["kernels", "--plan", "--model", &model], &[]);
    assert!(plan.status.success(), "{}", String::from_utf8_lossy(&plan.stderr));
    // "segmenter: 165 steps, 4.69 GFLOP per call"
    let plan_stdout = String::from_utf8_lossy(&plan.stdout);
    let per_call = |graph: &str| -> String {
        let l = plan_stdout.lines().find(|l| l.starts_with(graph)).unwrap_or_else(|| panic!("{graph} in the plan"));
        l.split(", ").nth(1).unwrap().split_whitespace().next().unwrap().to_string()
    };
    let (audio, segmenter) = (per_call("audio_encoder:"), per_call("segmenter:"));
    for prepost in ["host", "device"] {
        let run = avseg_bin(&["bench", "--model", &model, "--clip", &sample, "--runs", "1", "--backend", "cuda-emulated", "--pre-post", prepost], &[]);
        let stdout = String::from_utf8_lossy(&run.stdout);
        assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
        let line = stdout.lines().find(|l| l.starts_with("device")).unwrap_or_else(|| panic!("no device line:\n{stdout}"));
        say(line);
        let number_after = |key: &str| -> f64 {
            let rest = &line[line.find(key).unwrap_or_else(|| panic!("{key} in {line}")) + key.len()..];
            rest.trim_start().split_whitespace().next().unwrap().parse().unwrap()
        };
        assert!(number_after("device") > 0.0 && number_after("device memory") > 0.0, "{line}");
        assert!(line.contains(&format!("audio enc. {audio} at")) && line.contains(&format!("segmenter {segmenter} at")), "{line}: the plan's {audio} and {segmenter}");
    }
    let run = avseg_bin(&["bench", "--model", &model, "--clip", &sample, "--runs", "1", "--backend", "cpu"], &[]);
    assert!(run.status.success() && !String::from_utf8_lossy(&run.stdout).lines().any(|l| l.starts_with("device")));
}
