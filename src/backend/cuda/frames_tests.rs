//! Pre- and post-processing on the emulated device: the frame and mask kernels, through the
//! runner's stages, against the CPU references (the PIL resize of `resample.rs`, the OpenCV resize
//! of `reference.rs`, the host's mask builder of `src/post/mask.rs`), and whole clips with
//! pre- and post-processing on the device against the host's.

use super::emulated::EmulatedDevice;
use super::frames::{FrameStage, MaskStage};
use super::launch::Device;
use super::plan::Precision;
use super::reference::{self as r, Lcg};
use super::resample::pil_resize_rgb;
use crate::backend::{MaskRule, RawFrame};
use crate::frontend::vision::{ResizeFilter, VisionConfig};
use crate::post::mask::MaskBuilder;

fn rng() -> Lcg {
    let seed = Lcg::fresh_seed();
    println!("seed {seed}");
    Lcg::new(seed)
}

/// Stored values back as f32.
fn download(device: &mut dyn Device, at: u64, n: usize) -> Vec<f32> {
    let bytes = device.precision().bytes() as usize;
    let mut raw = vec![0u8; n * bytes];
    device.download(at, &mut raw).unwrap();
    match device.precision() {
        Precision::F32 => raw.chunks_exact(4).map(|c| f32::from_ne_bytes([c[0], c[1], c[2], c[3]])).collect(),
        Precision::F16 => raw.chunks_exact(2).map(|c| half::f16::from_bits(u16::from_ne_bytes([c[0], c[1]])).to_f32()).collect(),
    }
}

/// Equal value for value; a failure names the first difference rather than printing both frames.
fn assert_same(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    if let Some(i) = (0..got.len()).find(|&i| got[i].to_bits() != want[i].to_bits()) {
        panic!("{what}: value {i} is {} on the device, {} in the reference", got[i], want[i]);
    }
}

fn stored(v: f32, precision: Precision) -> f32 {
    if precision == Precision::F16 {
        r::round_f16(v)
    } else {
        v
    }
}

/// `(p / 255 − mean) / std` of RGB8 HWC bytes, as planar CHW: what the kernels write.
fn normalised(rgb: &[u8], cfg: &VisionConfig, precision: Precision) -> Vec<f32> {
    let plane = rgb.len() / 3;
    let mut out = vec![0f32; rgb.len()];
    for (i, px) in rgb.chunks_exact(3).enumerate() {
        for c in 0..3 {
            out[c * plane + i] = stored((f32::from(px[c]) / 255.0 - cfg.mean[c]) / cfg.std[c], precision);
        }
    }
    out
}

/// Frames of random sizes (downscales by up to 20×, upscales, one-pixel rows and columns, the
/// target size itself), one after another through one stage, so its buffers grow and are reused:
/// each frame equals the CPU reference exactly, at both storage precisions.
#[test]
fn frames_match_the_cpu_references_exactly() {
    frames_match_on(|p| EmulatedDevice::new(p).unwrap(), |d| d.allocations());
}

/// [`frames_match_the_cpu_references_exactly`] on the devices `open` makes; `live` counts a
/// device's allocations where it can.
fn frames_match_on<D: Device>(open: impl Fn(Precision) -> D, live: impl Fn(&D) -> usize) {
    let mut rng = rng();
    for precision in [Precision::F32, Precision::F16] {
        for resize in [ResizeFilter::BilinearPil, ResizeFilter::BilinearOpencv] {
            let mut device = open(precision);
            let (dw, dh) = (rng.range(1, 60), rng.range(1, 60));
            let cfg = VisionConfig::imagenet(dw as u32, dh as u32, resize);
            let mut stage = FrameStage::new(&cfg);
            let before = live(&device);
            let dst = device.alloc(stage.frame_len() * precision.bytes() as usize).unwrap();
            let mut sizes: Vec<(usize, usize)> = (0..6).map(|_| (rng.range(1, 400), rng.range(1, 400))).collect();
            let first = sizes[0];
            sizes.extend([(dw, dh), (1, rng.range(1, 90)), (rng.range(1, 90), 1), (dw * 20 + 3, dh * 17 + 1), first]);
            for (sw, sh) in sizes {
                let pixels = rng.bytes(sw * sh * 3);
                let frame = RawFrame { pixels: &pixels, width: sw as u32, height: sh as u32 };
                stage.frame_into(&mut device, &frame, dst).unwrap();
                let want: Vec<f32> = match resize {
                    ResizeFilter::BilinearPil => normalised(&pil_resize_rgb(&pixels, (sw, sh, sw * 3), (dw, dh)), &cfg, precision),
                    // The OpenCV reference returns normalised planar values already.
                    _ => r::preprocess_bilinear(&pixels, sw, sh, sw * 3, dw, dh, cfg.mean, cfg.std).into_iter().map(|v| stored(v, precision)).collect(),
                };
                assert_same(&download(&mut device, dst, want.len()), &want, &format!("{resize:?} {precision:?} {sw}x{sh} -> {dw}x{dh}"));
            }
            // The frame, tap-table and row buffers, plus `dst`: growing frees what it replaces.
            let grown = live(&device) - before;
            assert!(grown <= 4, "{grown} allocations after growing");
        }
    }
}

/// An empty frame, or pixels that do not fill the frame, are errors, not reads past the buffer.
#[test]
fn malformed_frames_are_refused() {
    let mut device = EmulatedDevice::new(Precision::F32).unwrap();
    let cfg = VisionConfig::imagenet(8, 8, ResizeFilter::BilinearPil);
    let mut stage = FrameStage::new(&cfg);
    let dst = device.alloc(stage.frame_len() * 4).unwrap();
    let e = stage.frame_into(&mut device, &RawFrame { pixels: &[], width: 0, height: 4 }, dst).unwrap_err();
    assert!(e.to_string().contains("0x4, empty"), "{e}");
    let e = stage.frame_into(&mut device, &RawFrame { pixels: &[0; 10], width: 2, height: 2 }, dst).unwrap_err();
    assert!(e.to_string().contains("10 bytes for a 2x2 RGB frame"), "{e}");
}

/// Masks from logits on the device against the host's mask builder: the same labels, and the
/// same confidences within 1e-6 (binary: one sigmoid of the same interpolated logit; classes: the
/// host's softmax runs a vectorised exp).
#[test]
fn masks_match_the_host_builder() {
    masks_match_on(|p| EmulatedDevice::new(p).unwrap());
}

/// The frame and mask stages on a real GPU, when there is one (docs/cuda.md's on-device
/// checklist): the same exact checks as on the emulated device.
#[cfg(feature = "cuda")]
#[test]
fn frames_and_masks_on_a_gpu_match_the_references() {
    use super::gpu_device::GpuDevice;
    if let Err(e) = GpuDevice::open(0, Precision::F32) {
        eprintln!("skipped: no CUDA device: frames_and_masks_on_a_gpu_match_the_references ({e})");
        return;
    }
    frames_match_on(|p| GpuDevice::open(0, p).unwrap(), |_| 0);
    masks_match_on(|p| GpuDevice::open(0, p).unwrap());
}

fn masks_match_on<D: Device>(open: impl Fn(Precision) -> D) {
    let mut rng = rng();
    for precision in [Precision::F32, Precision::F16] {
        let mut device = open(precision);
        let mut stage = MaskStage::default();
        let mut builder = MaskBuilder::default();
        for _ in 0..6 {
            let (h, w) = (rng.range(1, 40), rng.range(1, 40));
            let (fw, fh) = (rng.range(1, 300), rng.range(1, 300));
            for k in [1usize, rng.range(2, 80)] {
                let logits: Vec<f32> = rng.normals(k * h * w, 3.0).into_iter().map(|v| stored(v, precision)).collect();
                let at = device.alloc(logits.len() * 4).unwrap();
                let bytes: Vec<u8> = match precision {
                    Precision::F32 => logits.iter().flat_map(|v| v.to_ne_bytes()).collect(),
                    Precision::F16 => logits.iter().flat_map(|v| half::f16::from_f32(*v).to_bits().to_ne_bytes()).collect(),
                };
                device.upload(at, &bytes).unwrap();
                let (rule, host) = if k == 1 {
                    (MaskRule::Binary { threshold: 0.4 }, builder.binary(&logits, h, w, fw as u32, fh as u32, 0.4).unwrap())
                } else {
                    (MaskRule::Classes, builder.semantic(&logits, k, h, w, fw as u32, fh as u32).unwrap())
                };
                let (mut labels, mut confidence) = (vec![0u8; fw * fh], vec![0f32; fw * fh]);
                stage.mask_into(&mut device, at, (k, h, w), (fw, fh), rule, &mut labels, &mut confidence).unwrap();
                assert_eq!(labels, host.labels, "{precision:?} k={k} {h}x{w} -> {fw}x{fh}");
                let worst = crate::test_common::max_abs_diff(&confidence, &host.confidence);
                assert!(worst <= 1e-6, "{precision:?} k={k} {h}x{w} -> {fw}x{fh}: confidences differ by {worst}");
            }
        }
        let (mut labels, mut confidence) = (vec![0u8; 4], vec![0f32; 3]);
        let e = stage.mask_into(&mut device, 0, (1, 2, 2), (2, 2), MaskRule::Binary { threshold: 0.5 }, &mut labels, &mut confidence).unwrap_err();
        assert!(e.to_string().contains("4 labels and 3 confidences"), "{e}");
    }
}

/// Whole clips on the emulated device with pre- and post-processing there too (`models/default`
/// declares PIL's resize, `models/tiny-tpavi` OpenCV's): the logits equal tract's on frames made
/// by the CPU reference of the device's resize (within 1e-4 of their range, the runner's fp32
/// bound), and each mask is the host builder's from those logits, label for label.
#[test]
fn clips_with_pre_and_post_processing_on_the_device() {
    use crate::api::{BackendChoice, Engine, EngineOptions};
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let files = crate::io::clip::find_clip(&repo.join("models/sample")).unwrap();
    for package in ["models/default", "models/tiny-tpavi"] {
        let device_options = EngineOptions { backend: BackendChoice::CudaEmulated, pre_post_on_device: true, ..EngineOptions::default() };
        let mut device = Engine::load(repo.join(package), &device_options).unwrap();
        let clip = device.load_clip(&files).unwrap();
        let out = device.run_clip(&clip).unwrap();

        let mut host = Engine::load(repo.join(package), &EngineOptions { backend: BackendChoice::Cpu, ..EngineOptions::default() }).unwrap();
        let cfg = host.package().manifest().vision.clone();
        let (w, h) = (cfg.width as usize, cfg.height as usize);
        let mut frames = Vec::new();
        for f in &clip.frames {
            let (sw, sh) = (f.image.width() as usize, f.image.height() as usize);
            let rgb = match cfg.resize {
                ResizeFilter::BilinearPil => normalised(&pil_resize_rgb(f.image.as_raw(), (sw, sh, sw * 3), (w, h)), &cfg, Precision::F32),
                _ => r::preprocess_bilinear(f.image.as_raw(), sw, sh, sw * 3, w, h, cfg.mean, cfg.std),
            };
            frames.extend(rgb);
        }
        let frames = crate::tensor::Tensor::new(vec![clip.frames.len(), 3, h, w], frames);
        let logmel = host.audio_features(&clip.audio, &clip.audio_source, 1).unwrap();
        let want = host.run_graphs(&frames, &logmel).unwrap();
        let scale = want.data().iter().fold(0f32, |m, v| m.max(v.abs()));
        let worst = crate::test_common::max_abs_diff(out.logits.data(), want.data());
        println!("{package}: device pre/post logits within {:.2e} of their range ({scale:.2}) of tract's on the reference resize", worst / scale);
        assert!(worst <= 1e-4 * scale, "{package}: {worst} of {scale}");

        let masks = host.post_process(&clip, &out.logits).unwrap();
        for (i, (ours, theirs)) in out.frames.iter().zip(&masks).enumerate() {
            assert_eq!(ours.mask.labels, theirs.mask.labels, "{package} frame {i}");
            let d = crate::test_common::max_abs_diff(&ours.mask.confidence, &theirs.mask.confidence);
            assert!(d <= 1e-6, "{package} frame {i}: confidences differ by {d}");
            assert_eq!(ours.objects.len(), theirs.objects.len(), "{package} frame {i}");
        }
    }
}

/// A streaming session with pre- and post-processing on the device gives the clip's results: the
/// same logits to the bit (the stream's audio is the clip's, and the same launches run) and the
/// same masks, on both bundled packages (windows of T frames, the mode whose calls are the clip's).
#[test]
fn a_session_with_pre_and_post_processing_on_the_device_gives_the_clips_results() {
    use crate::api::session::{Session, SessionOptions, StreamMode};
    use crate::api::{BackendChoice, Engine, EngineOptions};
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let files = crate::io::clip::find_clip(&repo.join("models/sample")).unwrap();
    let engine = EngineOptions { backend: BackendChoice::CudaEmulated, pre_post_on_device: true, ..EngineOptions::default() };
    for package in ["models/tiny-tpavi", "models/default"] {
        let mut batch_engine = Engine::load(repo.join(package), &engine).unwrap();
        let clip = batch_engine.load_clip(&files).unwrap();
        let batch = batch_engine.run_clip(&clip).unwrap();

        let mut s = Session::new(repo.join(package), &SessionOptions { engine: engine.clone(), mode: StreamMode::Windows, ..SessionOptions::default() }).unwrap();
        let (rate, pcm) = (clip.audio.rate, &clip.audio.samples);
        let mut next_frame = 0usize;
        for (i, chunk) in pcm.chunks(rate as usize / 50).enumerate() {
            s.push_audio(chunk, rate, 1, (i * (rate as usize / 50)) as f64 / f64::from(rate)).unwrap();
            let now = ((i + 1) * (rate as usize / 50)).min(pcm.len()) as f64 / f64::from(rate);
            while next_frame < clip.frames.len() && next_frame as f64 + 0.9375 <= now {
                let img = &clip.frames[next_frame].image;
                s.push_frame(img.as_raw(), img.width(), img.height(), next_frame as f64 + 0.9375).unwrap();
                next_frame += 1;
            }
            s.process().unwrap();
        }
        s.finish().unwrap();
        let mut results = Vec::new();
        while let Some(r) = s.pop_result() {
            results.push(r);
        }
        assert_eq!(results.len(), batch.frames.len(), "{package}");
        let (_, logits) = s.last_window_logits().unwrap();
        assert_eq!(logits.data(), batch.logits.data(), "{package}: streamed logits");
        for (r, b) in results.iter().zip(&batch.frames) {
            assert_eq!(r.mask, b.mask, "{package} frame {}", b.index);
            assert_eq!(r.objects, b.objects, "{package} frame {}", b.index);
        }
    }
}
