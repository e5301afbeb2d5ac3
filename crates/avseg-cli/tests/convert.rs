//! `avseg convert` end to end, on checkpoints written at test time by
//! `tools/avseg_tools/fixtures/convert.py`: a width-reduced TPAVI-R50 + VGGish with the official
//! key layout, saved in the torch.save layouts by the fixture script itself (so no torch is
//! needed), plus one broken file per error the converter must report.
//!
//! Needs a Python with numpy and onnx (`$AVSEG_PYTHON`, else the repository's `.venv`). Without
//! one the tests print why and pass; under CI (`CI` set) they fail instead.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use avseg::{BackendChoice, Engine, EngineOptions};
use avseg::ModelPackage;
use avseg::Tensor;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn python_candidate() -> PathBuf {
    std::env::var_os("AVSEG_PYTHON").map(PathBuf::from).unwrap_or_else(|| repo().join(".venv/bin/python"))
}

/// (python, fixture folder), generated once per test process.
fn fixtures() -> &'static Option<(PathBuf, PathBuf)> {
    static FIXTURES: OnceLock<Option<(PathBuf, PathBuf)>> = OnceLock::new();
    FIXTURES.get_or_init(|| {
        let py = python_candidate();
        let usable = Command::new(&py)
            .args(["-c", "import numpy, onnx"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !usable {
            let why = format!(
                "no Python with numpy and onnx at {} (set AVSEG_PYTHON or create .venv from tools/requirements.txt)",
                py.display()
            );
            if std::env::var_os("CI").is_some() {
                panic!("convert tests: {why}");
            }
            eprintln!("skipped: convert tests: {why}");
            return None;
        }
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("convert-fixtures-{}", std::process::id()));
        let out = Command::new(&py)
            .env("PYTHONPATH", repo().join("tools"))
            .args(["-m", "avseg_tools.fixtures.convert"])
            .arg("--out")
            .arg(&dir)
            .output()
            .expect("run the fixture script");
        assert!(out.status.success(), "fixture script failed: {}", String::from_utf8_lossy(&out.stderr));
        Some((py, dir))
    })
}

macro_rules! need_fixtures {
    () => {
        match fixtures() {
            Some((py, dir)) => (py.clone(), dir.clone()),
            None => return,
        }
    };
}

fn avseg(py: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_avseg")).arg("convert").args(args).env("AVSEG_PYTHON", py).output().expect("run avseg")
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Converts `checkpoint` as tpavi-r50 into a fresh folder; returns (output, folder).
fn convert_tpavi(py: &Path, dir: &Path, checkpoint: &str, extra: &[&str], out_name: &str) -> (Output, PathBuf) {
    let out = dir.join(out_name);
    let _ = std::fs::remove_dir_all(&out);
    let ck = dir.join(checkpoint);
    let vg = dir.join("vggish.pth");
    let mut args = vec!["--family", "tpavi-r50", "--checkpoint", s(&ck), "--out", s(&out)];
    if !extra.contains(&"--no-vggish") {
        args.extend(["--vggish", s(&vg)]);
    }
    args.extend(extra.iter().filter(|a| **a != "--no-vggish"));
    (avseg(py, &args), out)
}

/// Asserts a failed run whose one-line error contains every `needles` entry.
fn assert_error(o: &Output, needles: &[&str]) -> String {
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(!o.status.success(), "expected failure, got success; stderr: {err}");
    assert!(err.starts_with("error: "), "{err}");
    for n in needles {
        assert!(err.contains(n), "error lacks `{n}`: {err}");
    }
    assert!(!err.contains("Traceback"), "a Python traceback leaked: {err}");
    err
}

#[test]
fn pth_safetensors_and_module_prefix_give_identical_graphs() {
    let (py, dir) = need_fixtures!();
    let mut graphs = vec![];
    for (i, ck) in ["tpavi.pth", "tpavi.safetensors", "tpavi_module.pth"].iter().enumerate() {
        let (o, out) = convert_tpavi(&py, &dir, ck, &[], &format!("same{i}"));
        assert!(o.status.success(), "{ck}: {}", String::from_utf8_lossy(&o.stderr));
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert!(stdout.contains("family      tpavi-r50") && stdout.contains("parameters"), "{stdout}");
        let read = |f: &str| std::fs::read(out.join(f)).unwrap();
        graphs.push((read("audio_encoder.onnx"), read("segmenter.onnx")));

        let m: serde_json::Value = serde_json::from_slice(&read("avseg.json")).unwrap();
        let conv = &m["provenance"]["conversion"];
        assert_eq!(conv["family"], "tpavi-r50");
        assert_eq!(conv["inputs"][0]["file"], *ck);
        assert_eq!(conv["inputs"][1]["file"], "vggish.pth");
        assert_eq!(conv["inputs"][0]["sha256"].as_str().unwrap().len(), 64);
        assert_eq!(m["family"], "tpavi");
        assert_eq!(m["output"]["kind"], "binary");
        ModelPackage::load(&out).unwrap_or_else(|e| panic!("{ck}: converted package does not load: {e}"));
    }
    assert!(graphs[0] == graphs[1], ".pth and .safetensors give different ONNX");
    assert!(graphs[0] == graphs[2], "`module.`-prefixed, wrapped checkpoint gives different ONNX");
}

#[test]
fn truncated_checkpoints_are_reported() {
    let (py, dir) = need_fixtures!();
    let (o, _) = convert_tpavi(&py, &dir, "truncated.pth", &[], "trunc");
    assert_error(&o, &["truncated.pth", "truncated"]);
    let (o, _) = convert_tpavi(&py, &dir, "nostorage.pth", &[], "nostorage");
    assert_error(&o, &["nostorage.pth", "storage record", "data/3", "missing"]);
}

#[test]
fn wrong_family_names_the_family_the_keys_match() {
    let (py, dir) = need_fixtures!();
    let (o, _) = convert_tpavi(&py, &dir, "avsegformer.pth", &[], "wrongfam");
    assert_error(&o, &["avsegformer.pth", "wrong family", "AVSegFormer-R50", "--family avsegformer-r50"]);
    let ck = dir.join("tpavi.pth");
    let out = dir.join("wrongfam2");
    let o = avseg(&py, &["--family", "avsegformer-r50", "--checkpoint", s(&ck), "--out", s(&out)]);
    assert_error(&o, &["tpavi.pth", "TPAVI-R50", "not avsegformer-r50", "--family tpavi-r50"]);
}

#[test]
fn missing_vggish_is_reported() {
    let (py, dir) = need_fixtures!();
    let (o, out) = convert_tpavi(&py, &dir, "tpavi.pth", &["--no-vggish"], "novgg");
    assert_error(&o, &["tpavi-r50", "--vggish", "vggish-10086976.pth"]);
    assert!(!out.join("avseg.json").exists(), "a package was written anyway");
    // A TPAVI checkpoint given as the VGGish file.
    let ck = dir.join("tpavi.pth");
    let o = avseg(&py, &["--family", "tpavi-r50", "--checkpoint", s(&ck), "--vggish", s(&ck), "--out", s(&out)]);
    assert_error(&o, &["tpavi.pth", "not a VGGish file"]);
}

#[test]
fn shape_mismatch_names_key_expected_and_actual() {
    let (py, dir) = need_fixtures!();
    let (o, _) = convert_tpavi(&py, &dir, "shape.pth", &[], "shape");
    assert_error(&o, &["shape.pth", "tpavi_b2.phi.weight", "(8, 19, 1, 1, 1)", "expected (8, 16, 1, 1, 1)"]);
    // A conv whose input width disagrees with the layer before it: only a graph-level check sees it.
    let (o, _) = convert_tpavi(&py, &dir, "channels.pth", &[], "channels");
    assert_error(&o, &["channels.pth", "resnet.layer2.1.conv2.weight", "[8, 6, 3, 3]", "8 channels"]);
}

#[test]
fn missing_keys_are_listed_with_a_count() {
    let (py, dir) = need_fixtures!();
    let (o, _) = convert_tpavi(&py, &dir, "missing.pth", &[], "missing");
    assert_error(&o, &["missing.pth", "missing 16 weight(s)", "tpavi_b3.theta.weight", "(16 in all)"]);
}

#[test]
fn non_finite_weights_name_the_key() {
    let (py, dir) = need_fixtures!();
    let (o, _) = convert_tpavi(&py, &dir, "nan.pth", &[], "nan");
    assert_error(&o, &["nan.pth", "conv3.conv2d_list.1.weight", "1 NaN", "[2, 1, 0, 0]"]);
}

#[test]
fn foreign_pickle_globals_are_refused_not_run() {
    let (py, dir) = need_fixtures!();
    let (o, _) = convert_tpavi(&py, &dir, "evil.pth", &[], "evil");
    let err = assert_error(&o, &["evil.pth", "refusing to load global", "system"]);
    assert!(!err.contains("pwned") && !String::from_utf8_lossy(&o.stdout).contains("pwned"), "{err}");
}

/// Deterministic pseudo-random values in [lo, hi).
fn lcg(n: usize, seed: u64, lo: f32, hi: f32) -> Vec<f32> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            lo + (hi - lo) * ((x >> 40) as f32 / (1u64 << 24) as f32)
        })
        .collect()
}

fn run_package(dir: &Path) -> Tensor {
    let options = EngineOptions { backend: BackendChoice::Cpu, threads: 1, ..EngineOptions::default() };
    let mut engine = Engine::load(dir, &options).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let logmel = Tensor::new(vec![5, 1, 96, 64], lcg(5 * 96 * 64, 1, -4.6, 2.0));
    let frames = Tensor::new(vec![5, 3, 224, 224], lcg(5 * 3 * 224 * 224, 2, -2.0, 2.5));
    engine.run_graphs(&frames, &logmel).unwrap()
}

/// Tolerance for f16 weights, relative to the largest |logit| of the f32 model: f16 keeps 11
/// significant bits (relative rounding 2^-11 ≈ 4.9e-4 per weight), and the errors of a ~60-layer
/// net add up to a few times that.
const F16_REL_TOL: f32 = 1e-2;

#[test]
fn f16_package_is_half_the_size_and_runs_in_tract_close_to_f32() {
    let (py, dir) = need_fixtures!();
    let (o, out32) = convert_tpavi(&py, &dir, "tpavi.pth", &[], "p32");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (o, out16) = convert_tpavi(&py, &dir, "tpavi.pth", &["--precision", "f16"], "p16");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("precision   f16"));

    let size = |d: &Path| -> u64 {
        ["audio_encoder.onnx", "segmenter.onnx"].iter().map(|f| std::fs::metadata(d.join(f)).unwrap().len()).sum()
    };
    let (s32, s16) = (size(&out32), size(&out16));
    let ratio = s16 as f64 / s32 as f64;
    eprintln!("graphs: f32 {s32} bytes, f16 {s16} bytes (ratio {ratio:.3})");
    assert!(ratio < 0.56, "f16 package is {ratio:.3} of the f32 size");

    let (a, b) = (run_package(&out32), run_package(&out16));
    assert_eq!(a.shape(), b.shape());
    let max_logit = a.data().iter().fold(0f32, |m, v| m.max(v.abs()));
    let max_diff = a.data().iter().zip(b.data()).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    // The random fixture's logits are mostly negative; split at the f32 median instead of 0 so the
    // agreement measures a mask with as much foreground as background.
    let mut sorted = a.data().to_vec();
    sorted.sort_by(f32::total_cmp);
    let cut = sorted[sorted.len() / 2];
    let agree = a.data().iter().zip(b.data()).filter(|(x, y)| (**x > cut) == (**y > cut)).count() as f64 / a.len() as f64;
    eprintln!(
        "f16 vs f32 logits: max abs diff {max_diff:.3e}, max |logit| {max_logit:.3e} (relative {:.3e}), agreement at the median {agree:.5}",
        max_diff / max_logit
    );
    assert!(a.data().iter().all(|v| v.is_finite()) && b.data().iter().all(|v| v.is_finite()));
    assert!(max_diff <= F16_REL_TOL * max_logit, "f16 logits differ by {max_diff} (max |logit| {max_logit})");
    assert!(agree >= 0.99, "mask agreement {agree}");
}

#[test]
fn a_missing_python_is_a_clear_error() {
    // Needs no venv: the error comes before Python would run.
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let ck = repo().join("Cargo.toml"); // any existing file
    let o = Command::new(env!("CARGO_BIN_EXE_avseg"))
        .args(["convert", "--family", "tpavi-r50", "--checkpoint", s(&ck), "--out"])
        .arg(dir.join("nopython"))
        .env("AVSEG_PYTHON", "/nonexistent/bin/python")
        .output()
        .unwrap();
    assert_error(&o, &["AVSEG_PYTHON=/nonexistent/bin/python", "no such file"]);
    let o = Command::new(env!("CARGO_BIN_EXE_avseg"))
        .args(["convert", "--family", "tpavi-r50", "--checkpoint", "/nonexistent.pth", "--out"])
        .arg(dir.join("nofile"))
        .output()
        .unwrap();
    assert_error(&o, &["/nonexistent.pth", "no such file", "--checkpoint"]);
}
