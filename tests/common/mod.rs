//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use safetensors::{Dtype, SafeTensors};

/// Where the official reference tensors live: `$AVSEG_REFERENCE_DIR`, else the repository's own
/// copy in `tests/data/reference`.
///
/// Returns `None` (and prints a visible skip line) when they are absent on a developer machine.
/// Under CI (`CI` set) a missing directory is a failure, so fidelity tests can never silently
/// stop running.
pub fn reference_dir(test: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("AVSEG_REFERENCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/reference"));
    if dir.join("README.md").is_file() {
        return Some(dir);
    }
    if std::env::var_os("CI").is_some() {
        panic!("{test}: reference tensors not found at {} (set AVSEG_REFERENCE_DIR)", dir.display());
    }
    eprintln!("skipped: {test}: reference tensors not found at {}", dir.display());
    None
}

/// One tensor from a reference file, converted to f64 for comparisons.
#[derive(Clone, Debug)]
pub struct RefTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f64>,
}

impl RefTensor {
    pub fn f32(&self) -> Vec<f32> {
        self.data.iter().map(|&v| v as f32).collect()
    }
}

/// Loads every tensor of a reference safetensors file. BF16 weights widen to f32 exactly (the
/// stored bits become the upper half of the f32), as the reference README prescribes.
pub fn load_reference(path: &std::path::Path) -> HashMap<String, RefTensor> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = SafeTensors::deserialize(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        let raw = view.data();
        let data: Vec<f64> = match view.dtype() {
            Dtype::F32 => raw.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64).collect(),
            Dtype::F64 => raw.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap())).collect(),
            Dtype::BF16 => raw
                .chunks_exact(2)
                .map(|b| f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16) as f64)
                .collect(),
            Dtype::I64 => raw.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap()) as f64).collect(),
            other => panic!("{}: tensor {name} has unsupported dtype {other:?}", path.display()),
        };
        out.insert(name, RefTensor { shape: view.shape().to_vec(), data });
    }
    out
}

/// Maximum absolute difference, asserting equal lengths. A NaN on either side makes the result
/// NaN, so `d <= tol` and `d == 0.0` fail: `f32::max` would drop it and report 0 for all-NaN output.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, |m, d| if m.is_nan() || d.is_nan() { f32::NAN } else { m.max(d) })
}

/// [`max_abs_diff`] in f64.
pub fn max_abs_diff_f64(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, |m, d| if m.is_nan() || d.is_nan() { f64::NAN } else { m.max(d) })
}

/// `n` pseudo-random values in [-1, 1] from `seed` (xorshift): kernel tests' inputs, the same on
/// every machine.
pub fn pseudo(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2654435761).wrapping_add(12345);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s % 2001) as f32 / 1000.0 - 1.0
        })
        .collect()
}

#[test]
fn max_abs_diff_fails_on_nan() {
    assert_eq!(max_abs_diff(&[1.0, 2.0], &[1.5, 2.0]), 0.5);
    assert!(max_abs_diff(&[f32::NAN; 3], &[0.0; 3]).is_nan());
    assert!(max_abs_diff(&[0.0, f32::NAN, 0.0], &[0.0; 3]).is_nan());
    assert!(max_abs_diff(&[0.0; 2], &[5.0, f32::NAN]).is_nan());
    assert!(!(max_abs_diff(&[f32::NAN], &[0.0]) <= 1e-3), "a NaN must fail a tolerance check");
    assert!(max_abs_diff_f64(&[0.0, f64::NAN], &[0.0, 0.0]).is_nan());
    assert_eq!(max_abs_diff_f64(&[1.0], &[3.0]), 2.0);
}

/// Guards the rule above across the repository: a difference folded with `f32::max` (or
/// `f64::max`) drops NaN, and slipped back into seven tests once. Names each offending line.
#[test]
fn no_comparison_folds_differences_with_a_nan_dropping_max() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut stack = vec![root.join("src"), root.join("tests"), root.join("crates"), root.join("benches"), root.join("fuzz/fuzz_targets")];
    let mut offenders = Vec::new();
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                if !path.ends_with("target") {
                    stack.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for (i, line) in text.lines().enumerate() {
                    let folds_max = line.contains("f32::max)") || line.contains("f64::max)");
                    if folds_max && line.contains(".fold(") && line.contains(".abs()") {
                        offenders.push(format!("{}:{}: {}", path.display(), i + 1, line.trim()));
                    }
                }
            }
        }
    }
    assert!(offenders.is_empty(), "differences folded with a NaN-dropping max (use max_abs_diff):\n{}", offenders.join("\n"));
}
