//! The tract backend, with tract's kernels and with avseg's, against ONNX Runtime on the same ONNX
//! graphs and inputs.
//!
//! `tools/avseg_tools/ort_reference.py` ran ONNX Runtime on seeded inputs and saved inputs and outputs under
//! `tests/data/tiny_ort/`; CI also re-runs ONNX Runtime live (`avseg-check-ort`).

use std::path::{Path, PathBuf};

use crate::backend::cpu::CpuKernels;
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
    for (threads, cpu_kernels) in [(1, CpuKernels::Tract), (1, CpuKernels::Avseg), (2, CpuKernels::Tract), (2, CpuKernels::Avseg)] {
        let options = BackendOptions { threads, cpu_kernels, ..BackendOptions::default() };
        let mut runner = prepare_cpu(&pkg, &options).unwrap();
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
        eprintln!("{} kernels, threads {threads}: embedding max abs diff {d_emb:.3e}, logits max abs diff {d_logits:.3e}, mask agreement {:.5}", cpu_kernels.name(), agreement);
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

/// avseg's CPU kernels against tract's own operators on the bundled models and sample: the same
/// graphs and inputs, logits within 1e-4 of the largest logit, and the same masks.
#[test]
fn avseg_kernels_match_tract_kernels_on_the_bundled_models() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    for model in ["models/default", "models/tiny-tpavi"] {
        let pkg = ModelPackage::load(root.join(model)).unwrap();
        let t = pkg.frames_per_clip();
        let [_, c, h, w] = pkg.frames_shape()[..] else { panic!("frames shape") };
        // Deterministic inputs in the ranges the front ends produce.
        let frames: Vec<f32> = (0..t * c * h * w).map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 2.0).collect();
        let logmel: Vec<f32> = (0..t * 96 * 64).map(|i| (i * 104729 % 1000) as f32 / 100.0 - 8.0).collect();
        let frames = Tensor::new(vec![t, c, h, w], frames);
        let logmel = Tensor::new(vec![t, 1, 96, 64], logmel);
        let run = |kernels: CpuKernels, threads: usize| {
            let options = BackendOptions { threads, cpu_kernels: kernels, ..BackendOptions::default() };
            let mut r = prepare_cpu(&pkg, &options).unwrap();
            let emb = r.encode_audio(&logmel).unwrap();
            (emb.clone(), r.segment(&frames, &emb).unwrap())
        };
        let (want_emb, want) = run(CpuKernels::Tract, 1);
        for threads in [1, 2] {
            let (emb, got) = run(CpuKernels::Avseg, threads);
            let scale = want.data().iter().fold(0f32, |m, v| m.max(v.abs()));
            let rel = max_abs(&got, &want) / scale;
            let rel_emb = max_abs(&emb, &want_emb) / want_emb.data().iter().fold(0f32, |m, v| m.max(v.abs()));
            let agree = got.data().iter().zip(want.data()).filter(|(a, b)| (**a > 0.0) == (**b > 0.0)).count() as f64 / got.len() as f64;
            eprintln!("{model}, threads {threads}: logits max |diff| / max |logit| {rel:.2e}, embedding {rel_emb:.2e}, mask agreement {agree:.5}");
            assert!(rel <= 1e-4 && rel_emb <= 1e-4, "{model}: relative diff {rel} (embedding {rel_emb})");
            assert!(agree >= 0.999, "{model}: mask agreement {agree}");
        }
    }
}

#[cfg(unix)]
/// The graph cache on the bundled models: a second prepare reads the entries the first wrote and
/// gives the same logits; entries with a flipped bit (found by their checksum) or that are not
/// valid NNEF are replaced, not trusted.
#[test]
fn cached_graphs_give_the_same_logits() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let entries = || -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().ends_with(".nnef.tar"))
            .collect();
        v.sort();
        v
    };
    for model in ["models/default", "models/tiny-tpavi"] {
        let pkg = ModelPackage::load(root.join(model)).unwrap();
        let t = pkg.frames_per_clip();
        let [_, c, h, w] = pkg.frames_shape()[..] else { panic!("frames shape") };
        let frames = Tensor::new(vec![t, c, h, w], (0..t * c * h * w).map(|i| (i * 7919 % 1000) as f32 / 250.0 - 2.0).collect());
        let logmel = Tensor::new(vec![t, 1, 96, 64], (0..t * 96 * 64).map(|i| (i * 104729 % 1000) as f32 / 100.0 - 8.0).collect());
        // Not shared: each prepare must go through the cache, whatever other tests keep alive.
        let graph_cache = Some(dir.path().to_path_buf());
        let options = BackendOptions { threads: 1, cpu_kernels: CpuKernels::Avseg, graph_cache, share_plans: false, frames_per_call: None, tpavi_window: None, ..BackendOptions::default() };
        let run = || {
            let mut r = prepare_cpu(&pkg, &options).unwrap();
            let emb = r.encode_audio(&logmel).unwrap();
            r.segment(&frames, &emb).unwrap()
        };
        let before = entries();
        let fresh = run();
        let written: Vec<PathBuf> = entries().into_iter().filter(|p| !before.contains(p)).collect();
        assert_eq!(written.len(), 2, "{model}: one entry per graph: {written:?}");
        // A rewrite goes through a new file and a rename: the inode tells a read entry from a
        // rewritten one (a read only touches the modification time).
        let inode = |p: &PathBuf| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
        let inodes: Vec<u64> = written.iter().map(inode).collect();
        let cached = run();
        assert_eq!(fresh.data(), cached.data(), "{model}: logits from the cached graphs differ");
        assert_eq!(inodes, written.iter().map(inode).collect::<Vec<_>>(), "{model}: a cached load rewrote its entries");
        // Each entry's checksum is written beside it.
        for p in &written {
            let sums = std::fs::read_to_string(format!("{}.sum", p.display())).unwrap();
            assert_eq!(sums.lines().next().unwrap(), crate::model::integrity::checksum_file(p).unwrap().1, "{model}");
        }
        // A flipped bit in an entry's weights still parses; its checksum tells, and the entry is
        // rebuilt from the ONNX file instead of giving wrong masks.
        for p in &written {
            let original = std::fs::read(p).unwrap();
            // A byte of tensor data rather than of a tar header: the entry must still parse
            // without the checksum, or the test proves nothing.
            let parses = (1..20).any(|k| {
                let mut bytes = original.clone();
                bytes[original.len() * k / 20] ^= 0x20;
                std::fs::write(p, bytes).unwrap();
                super::graph_cache::GraphCache::new(dir.path()).load(p, false, None).is_some()
            });
            assert!(parses, "{model}: no flipped byte left the entry parseable");
        }
        let flipped = run();
        assert_eq!(fresh.data(), flipped.data(), "{model}: logits after flipped entries differ");
        assert!(written.iter().map(inode).zip(&inodes).all(|(a, b)| a != *b), "{model}: flipped entries were not rewritten");
        // Damaged entries: logged, loaded from ONNX instead, and rewritten.
        for p in &written {
            std::fs::write(p, b"not a tar").unwrap();
        }
        let recovered = run();
        assert_eq!(fresh.data(), recovered.data(), "{model}: logits after damaged entries differ");
        let sizes: Vec<u64> = written.iter().map(|p| std::fs::metadata(p).unwrap().len()).collect();
        assert!(sizes.iter().all(|&s| s > 1024), "{model}: damaged entries were not rewritten: {sizes:?}");
    }
}
