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
        assert!(out.contains("all 4 kernel builds ok"), "{out}");
        assert_eq!(out.lines().filter(|l| l.starts_with("ok ")).count(), 4, "{out}");
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
