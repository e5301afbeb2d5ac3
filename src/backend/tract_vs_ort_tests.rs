//! The tract backend against ONNX Runtime on the same ONNX graphs and inputs.
//!
//! `tools/avseg_tools/ort_reference.py` ran ONNX Runtime on seeded inputs and saved inputs and outputs under
//! `tests/data/tiny_ort/`; CI also re-runs ONNX Runtime live (`avseg-check-ort`).

use std::path::{Path, PathBuf};

use crate::backend::{prepare_cpu, BackendOptions};
use crate::model::ModelPackage;
use crate::Tensor;

fn read_npy(path: &Path) -> Tensor {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let npy = npyz::NpyFile::new(std::io::BufReader::new(file)).unwrap();
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    let data: Vec<f32> = npy.into_vec().unwrap();
    Tensor::new(shape, data)
}

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/tiny_ort")
}

fn max_abs(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.shape(), b.shape());
    crate::test_common::max_abs_diff(a.data(), b.data())
}

#[test]
fn tract_matches_onnx_runtime_on_the_tiny_tpavi_model() {
    let pkg = ModelPackage::load(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/tiny-tpavi")).unwrap();
    for threads in [1, 2] {
        let mut runner = prepare_cpu(&pkg, &BackendOptions { threads, ..BackendOptions::default() }).unwrap();
        let logmel = read_npy(&data_dir().join("audio_logmel.npy"));
        let frames = read_npy(&data_dir().join("frames.npy"));
        let want_emb = read_npy(&data_dir().join("audio_embedding.npy"));
        let want_logits = read_npy(&data_dir().join("mask_logits.npy"));

        let emb = runner.encode_audio(&logmel).unwrap();
        let d_emb = max_abs(&emb, &want_emb);
        let logits = runner.segment(&frames, &emb).unwrap();
        let d_logits = max_abs(&logits, &want_logits);
        let agree = logits.data().iter().zip(want_logits.data()).filter(|(a, b)| (**a > 0.0) == (**b > 0.0)).count();
        let agreement = agree as f64 / logits.len() as f64;
        eprintln!("threads {threads}: embedding max abs diff {d_emb:.3e}, logits max abs diff {d_logits:.3e}, mask agreement {:.5}", agreement);
        assert!(d_emb <= 1e-4, "embedding diff {d_emb}");
        assert!(d_logits <= 1e-4, "logit diff {d_logits}");
        assert!(agreement >= 0.999, "mask agreement {agreement}");
        let positive = want_logits.data().iter().filter(|v| **v > 0.0).count() as f64 / want_logits.len() as f64;
        assert!(positive > 0.01 && positive < 0.99, "reference logits are not one-signed ({positive})");
    }
}

#[test]
fn wrong_input_shapes_and_nans_are_refused() {
    let pkg = ModelPackage::load(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/tiny-tpavi")).unwrap();
    let mut runner = prepare_cpu(&pkg, &BackendOptions::default()).unwrap();
    let e = runner.encode_audio(&Tensor::zeros(vec![4, 1, 96, 64])).unwrap_err().to_string();
    assert!(e.contains("expected [5, 1, 96, 64]"), "{e}");
    let mut logmel = Tensor::zeros(vec![5, 1, 96, 64]);
    logmel.data_mut()[7] = f32::NAN;
    let e = runner.encode_audio(&logmel).unwrap_err().to_string();
    assert!(e.contains("non-finite") && e.contains("index 7"), "{e}");
}
