//! Device tests of the CUDA backend: every kernel on the device against its CPU reference
//! (`crate::backend::cuda::reference`, itself tested against the CPU path in the library's unit
//! tests), on fresh random inputs, with every output buffer poisoned (NaN, or 0xAA bytes) before
//! the launch so an element a kernel fails to write is caught.
//!
//! Without a GPU (CI, most laptops) each device test writes a visible `skipped: no CUDA device`
//! line straight to stderr (past the test harness's capture) and passes. The backend-selection
//! and `avseg kernels` tests run everywhere.

use std::io::Write;
use std::path::PathBuf;

use crate::backend::cuda::reference::{self as r, Lcg};
use crate::backend::{self, BackendError, BackendKind, BackendOptions};
use crate::model::ModelPackage;

fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

fn rng(test: &str) -> Lcg {
    let seed = Lcg::fresh_seed();
    say(&format!("{test}: seed {seed}"));
    Lcg::new(seed)
}

fn tiny_model() -> ModelPackage {
    ModelPackage::load(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/tiny-tpavi"))
        .expect("bundled model loads")
}

#[test]
fn auto_falls_back_to_tract_and_explicit_cuda_explains_why_not() {
    let package = tiny_model();
    let opts = BackendOptions::default();
    let runner = backend::select(BackendKind::Auto, &package, &opts).expect("auto never fails for lack of a GPU");
    // No family has a CUDA runner yet, so auto is tract on every machine, GPU or not.
    assert_eq!(runner.backend_name(), "tract");
    match backend::select(BackendKind::Cuda, &package, &opts) {
        // With a GPU: the runner (held to tract by runner_tests' GPU test).
        Ok(r) => assert_eq!(r.backend_name(), "cuda"),
        Err(BackendError::Cuda(e)) => {
            let msg = BackendError::Cuda(e.clone()).to_string();
            assert!(msg.starts_with("CUDA backend: "), "{msg}");
            say(&format!("--backend cuda here: {msg}"));
        }
        Err(other) => panic!("unexpected error kind: {other}"),
    }
}


// ---------------------------------------------------------------------------------------------
// Device tests
// ---------------------------------------------------------------------------------------------

#[cfg(feature = "cuda")]
mod device {
    use super::*;
    use crate::backend::cuda::device::Gpu;
    use crate::backend::cuda::ops::{self, Element, F16};
    use cudarc::driver::CudaSlice;

    fn gpu(test: &str) -> Option<Gpu> {
        match Gpu::open(0) {
            Ok(g) => {
                say(&format!("{test}: {}", g.info));
                Some(g)
            }
            Err(e) => {
                say(&format!("skipped: no CUDA device: {test} ({e})"));
                None
            }
        }
    }

    /// NaN in the storage type: any element left unwritten fails every comparison.
    fn poisoned<T: Element>(g: &Gpu, n: usize) -> CudaSlice<T> {
        g.stream().clone_htod(&vec![T::from_f32(f32::NAN); n]).unwrap()
    }

    fn poisoned_bytes(g: &Gpu, n: usize) -> CudaSlice<u8> {
        g.stream().clone_htod(&vec![0xAAu8; n]).unwrap()
    }

    fn up<T: Element>(g: &Gpu, v: &[f32]) -> CudaSlice<T> {
        g.stream().clone_htod(&v.iter().map(|&x| T::from_f32(x)).collect::<Vec<T>>()).unwrap()
    }

    fn down<T: Element>(g: &Gpu, d: &CudaSlice<T>) -> Vec<f32> {
        g.stream().clone_dtoh(d).unwrap().into_iter().map(T::to_f32).collect()
    }

    /// What the storage type holds for `x`: the reference's inputs and outputs go through it.
    fn stored<T: Element>(v: &[f32]) -> Vec<f32> {
        v.iter().map(|&x| T::from_f32(x).to_f32()).collect()
    }

    /// Every element finite-or-equal and within `tol`·max(1, |want|).
    fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        let mut worst = (0.0f32, 0usize);
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            if g.is_nan() && !w.is_nan() {
                panic!("{what}: element {i} was never written (still NaN); want {w}");
            }
            let d = (g - w).abs() / w.abs().max(1.0);
            if d > worst.0 {
                worst = (d, i);
            }
        }
        say(&format!("{what}: max rel diff {:.3e} at {}", worst.0, worst.1));
        assert!(
            worst.0 <= tol,
            "{what}: element {} is {} but the reference is {} (tolerance {tol})",
            worst.1,
            got[worst.1],
            want[worst.1]
        );
    }

    fn preprocess_case<T: Element>(g: &mut Gpu, rng: &mut Lcg, tol: f32) {
        let mean = [0.485, 0.456, 0.406];
        let std = [0.229, 0.224, 0.225];
        let sizes = [
            (1920, 1080, 224, 224),
            (224, 224, 224, 224),
            (37, 23, 224, 224),
            (1, 1, 5, 3),
            (rng.range(1, 700), rng.range(1, 700), rng.range(1, 300), rng.range(1, 300)),
        ];
        for (sw, sh, dw, dh) in sizes {
            let stride = sw * 3 + rng.range(0, 13);
            let src = rng.bytes(stride * sh);
            let want = stored::<T>(&r::preprocess_bilinear(&src, sw, sh, stride, dw, dh, mean, std));
            let src_d = g.stream().clone_htod(&src).unwrap();
            let mut dst = poisoned::<T>(g, 3 * dw * dh);
            ops::preprocess_bilinear(g, &src_d, (sw, sh, stride), &mut dst, (dw, dh), mean, std).unwrap();
            assert_close(&format!("preprocess_{} {sw}x{sh}->{dw}x{dh}", T::SUFFIX), &down(g, &dst), &want, tol);
        }
    }

    #[test]
    fn preprocess_matches_reference() {
        let Some(mut g) = gpu("preprocess") else { return };
        let mut rng = rng("preprocess");
        // Built without FMA contraction: fp32 is the reference to the last bit.
        preprocess_case::<f32>(&mut g, &mut rng, 0.0);
        preprocess_case::<F16>(&mut g, &mut rng, 0.0);
    }

    fn mask_case<T: Element>(g: &mut Gpu, rng: &mut Lcg) {
        for (h, w, ow, oh) in [
            (224, 224, 1920, 1080),
            (224, 224, 224, 224),
            (56, 56, 33, 17),
            (rng.range(1, 64), rng.range(1, 64), rng.range(1, 500), rng.range(1, 500)),
        ] {
            let th = 0.3 + 0.4 * rng.uniform();
            let logits = stored::<T>(&rng.normals(h * w, 4.0));
            let (want_l, want_c) = r::mask_binary(&logits, h, w, ow, oh, th);
            let ld = up::<T>(g, &logits);
            let mut labels = poisoned_bytes(g, ow * oh);
            let mut conf = poisoned::<f32>(g, ow * oh);
            ops::mask_binary(g, &ld, (h, w), &mut labels, Some(&mut conf), (ow, oh), th).unwrap();
            let got_l = g.stream().clone_dtoh(&labels).unwrap();
            let got_c = down(g, &conf);
            let what = format!("mask_binary_{} {h}x{w}->{ow}x{oh}", T::SUFFIX);
            // expf on the device may differ from the CPU's in the last bits, which can flip a
            // pixel whose probability sits on the threshold; nothing else may differ.
            for i in 0..ow * oh {
                let p = if want_l[i] == 1 { want_c[i] } else { 1.0 - want_c[i] };
                assert!(
                    got_l[i] == want_l[i] || (p - th).abs() < 1e-5,
                    "{what}: label {i} is {} want {}",
                    got_l[i],
                    want_l[i]
                );
            }
            assert_close(&what, &got_c, &want_c, 1e-5);
        }
    }

    #[test]
    fn binary_mask_matches_reference() {
        let Some(mut g) = gpu("mask_binary") else { return };
        let mut rng = rng("mask_binary");
        mask_case::<f32>(&mut g, &mut rng);
        mask_case::<F16>(&mut g, &mut rng);
    }

    fn semantic_case<T: Element>(g: &mut Gpu, rng: &mut Lcg) {
        for (k, h, w, ow, oh) in [
            (71, 224, 224, 640, 360),
            (2, 7, 9, 9, 7),
            (rng.range(1, 71), rng.range(1, 50), rng.range(1, 50), rng.range(1, 300), rng.range(1, 300)),
        ] {
            let logits = stored::<T>(&rng.normals(k * h * w, 2.0));
            let (small_l, small_c) = r::argmax_classes(&logits, k, h * w);
            let (want_l, want_c) = r::nearest_labels(&small_l, &small_c, h, w, ow, oh);
            let ld = up::<T>(g, &logits);
            let mut sl = poisoned_bytes(g, h * w);
            let mut sc = poisoned::<f32>(g, h * w);
            ops::argmax_classes(g, &ld, k, h * w, &mut sl, &mut sc).unwrap();
            let mut labels = poisoned_bytes(g, ow * oh);
            let mut conf = poisoned::<f32>(g, ow * oh);
            ops::nearest_labels(g, &sl, &sc, (h, w), &mut labels, Some(&mut conf), (ow, oh)).unwrap();
            let what = format!("argmax_classes_{} k={k} {h}x{w}->{ow}x{oh}", T::SUFFIX);
            assert_eq!(g.stream().clone_dtoh(&labels).unwrap(), want_l, "{what}: labels");
            assert_close(&what, &down(g, &conf), &want_c, 1e-5);
        }
    }

    #[test]
    fn semantic_mask_matches_reference() {
        let Some(mut g) = gpu("argmax_classes") else { return };
        let mut rng = rng("argmax_classes");
        semantic_case::<f32>(&mut g, &mut rng);
        semantic_case::<F16>(&mut g, &mut rng);
    }

    fn decoder_case<T: Element>(g: &mut Gpu, rng: &mut Lcg) {
        let (n, c, h, w) = (5, 256, rng.range(1, 30), rng.range(1, 30));
        let len = n * c * h * w;
        let x = stored::<T>(&rng.normals(len, 1.0));
        let conv = stored::<T>(&rng.normals(len, 1.0));
        let bias = rng.normals(c, 0.5);
        let bias_d = g.stream().clone_htod(&bias).unwrap();

        let mut want = x.clone();
        r::bias_relu(&mut want, &bias, h * w);
        let mut xd = up::<T>(g, &x);
        ops::bias_relu(g, &mut xd, &bias_d, h * w).unwrap();
        assert_close(&format!("bias_relu_{}", T::SUFFIX), &down(g, &xd), &stored::<T>(&want), 0.0);

        let want = stored::<T>(&r::rcu_residual(&conv, &bias, &x, h * w));
        let (cd, xd) = (up::<T>(g, &conv), up::<T>(g, &x));
        let mut out = poisoned::<T>(g, len);
        ops::rcu_residual(g, &mut out, &cd, &bias_d, &xd, h * w).unwrap();
        assert_close(&format!("rcu_residual_{}", T::SUFFIX), &down(g, &out), &want, 0.0);

        let want = stored::<T>(&r::add(&conv, &x));
        let mut out = poisoned::<T>(g, len);
        ops::add(g, &mut out, &cd, &xd).unwrap();
        assert_close(&format!("add_{}", T::SUFFIX), &down(g, &out), &want, 0.0);

        for (align_corners, with_addend) in [(true, false), (true, true), (false, false), (false, true)] {
            let (oh, ow) = if align_corners { (2 * h, 2 * w) } else { (rng.range(1, 70), rng.range(1, 70)) };
            let addend = stored::<T>(&rng.normals(n * c * oh * ow, 1.0));
            let want = stored::<T>(&r::upsample_bilinear(
                &x,
                n * c,
                h,
                w,
                oh,
                ow,
                align_corners,
                with_addend.then_some(addend.as_slice()),
            ));
            let ad = up::<T>(g, &addend);
            let mut out = poisoned::<T>(g, n * c * oh * ow);
            ops::upsample_bilinear(
                g,
                &xd,
                n * c,
                (h, w),
                &mut out,
                (oh, ow),
                align_corners,
                with_addend.then_some(&ad),
            )
            .unwrap();
            let what =
                format!("upsample_bilinear_{} ac={align_corners} addend={with_addend} {h}x{w}->{oh}x{ow}", T::SUFFIX);
            assert_close(&what, &down(g, &out), &want, 0.0);
        }
    }

    #[test]
    fn decoder_kernels_match_reference() {
        let Some(mut g) = gpu("decoder") else { return };
        let mut rng = rng("decoder");
        decoder_case::<f32>(&mut g, &mut rng);
        decoder_case::<F16>(&mut g, &mut rng);
    }

    fn tpavi_case<T: Element>(g: &mut Gpu, rng: &mut Lcg, tol: f32) {
        for (h, w, align_bias) in [(7, 7, true), (14, 14, false), (5, 9, true), (28, 28, true)] {
            let t = 5;
            let weights = r::random_tpavi_weights(rng, 256, 128, 128, align_bias);
            let v = stored::<T>(&rng.normals(t * h * w * 256, 1.0));
            let audio = rng.normals(t * 128, 1.0);
            let want = r::tpavi_folded(&weights, &v, &audio, t, h * w);
            let mut block = ops::TpaviBlock::upload(g, &weights, t, h * w).unwrap();
            let vd = up::<T>(g, &v);
            let mut out = poisoned::<T>(g, v.len());
            block.run(g, &vd, &audio, &mut out).unwrap();
            assert_close(&format!("tpavi_{} {h}x{w} align_bias={align_bias}", T::SUFFIX), &down(g, &out), &want, tol);
        }
    }

    #[test]
    fn tpavi_sequence_matches_reference() {
        let Some(mut g) = gpu("tpavi") else { return };
        let mut rng = rng("tpavi");
        // fp32 accumulation in a different order (and with FMA): relative 1e-3 on O(1) outputs.
        tpavi_case::<f32>(&mut g, &mut rng, 1e-3);
        // fp16 storage of the features and outputs; one fp16 ulp at |x| ≈ 4 is 4e-3.
        tpavi_case::<F16>(&mut g, &mut rng, 1e-2);
    }

    #[test]
    fn bad_shapes_are_errors_not_launches() {
        let Some(mut g) = gpu("shapes") else { return };
        let src = g.stream().clone_htod(&[0u8; 12]).unwrap();
        let mut dst = poisoned::<f32>(&g, 3 * 4);
        // Stride shorter than a row, and a buffer too small for the claimed frame.
        assert!(ops::preprocess_bilinear(&mut g, &src, (2, 2, 5), &mut dst, (2, 2), [0.0; 3], [1.0; 3]).is_err());
        assert!(ops::preprocess_bilinear(&mut g, &src, (3, 3, 9), &mut dst, (2, 2), [0.0; 3], [1.0; 3]).is_err());
        assert!(ops::preprocess_bilinear(&mut g, &src, (2, 2, 6), &mut dst, (2, 2), [0.0; 3], [0.0; 3]).is_err());
        let weights = r::random_tpavi_weights(&mut Lcg::new(1), 64, 32, 16, true);
        assert!(ops::TpaviBlock::upload(&mut g, &weights, 5, 4).is_err(), "only C = 256 is built");
    }
}
