//! Frame front end and mask post-processing throughput.
//!
//! `cargo bench --bench vision -- --warm-up-time 1 --measurement-time 3`
//! Compare with `tools/avseg_tools/bench_ref_vision.py` (cv2 / PIL on the same input).

use std::hint::black_box;
use std::path::PathBuf;

use avseg::{ResizeFilter, VisionConfig, VisionFrontend};
use avseg::{FrameMask, MaskBuilder};
use criterion::{criterion_group, criterion_main, Criterion};

fn frame_1920x1080() -> image::RgbImage {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/resize/card_1920x1080.png");
    avseg::decode_image(&path).expect("bench fixture")
}

fn preprocess(c: &mut Criterion) {
    let frame = frame_1920x1080();
    let mut group = c.benchmark_group("preprocess_1920x1080_to_224_nchw");
    for (name, filter) in
        [("bilinear_opencv", ResizeFilter::BilinearOpencv), ("bilinear_pil", ResizeFilter::BilinearPil)]
    {
        let mut fe = VisionFrontend::new(VisionConfig::imagenet(224, 224, filter));
        let mut out = vec![0.0f32; fe.frame_len()];
        group.bench_function(name, |b| {
            b.iter(|| {
                fe.preprocess_into(black_box(&frame), &mut out).unwrap();
                black_box(&out);
            })
        });
    }
    group.finish();
}

fn masks(c: &mut Criterion) {
    // A smooth logit field at model resolution, upsampled to the 1920x1080 source frame.
    let (h, w) = (224usize, 224usize);
    let logits: Vec<f32> =
        (0..h * w).map(|i| ((i % w) as f32 / w as f32 - 0.5) * 8.0 + ((i / w) as f32 / h as f32 - 0.5) * 3.0).collect();
    let mut builder = MaskBuilder::new();
    let mut out = FrameMask::background(1, 1);
    c.bench_function("binary_mask_224_to_1920x1080", |b| {
        b.iter(|| {
            builder.binary_into(black_box(&logits), h, w, 1920, 1080, 0.5, &mut out).unwrap();
            black_box(&out);
        })
    });
}

/// AVS-Reg's two-stage segmenter output: 101 class planes at 160×160, to a 224×224 label map (the
/// sample's frame size). `tools/avseg_tools/bench_ref_vision.py` times the same in numpy.
fn semantic_logits() -> (usize, usize, usize, Vec<f32>) {
    let (k, h, w) = (101usize, 160usize, 160usize);
    // Each class peaks at its own spot, so the winner changes across the frame.
    let logits = (0..k * h * w)
        .map(|i| {
            let (c, y, x) = (i / (h * w), (i / w) % h, i % w);
            let (cy, cx) = ((c * 37 % h) as f32, (c * 61 % w) as f32);
            -((y as f32 - cy).powi(2) + (x as f32 - cx).powi(2)) / 800.0 + (c % 7) as f32 * 0.1
        })
        .collect();
    (k, h, w, logits)
}

fn semantic_masks(c: &mut Criterion) {
    let (k, h, w, logits) = semantic_logits();
    let mut builder = MaskBuilder::new();
    let mut out = FrameMask::background(1, 1);
    c.bench_function("semantic_mask_101x160x160_to_224x224", |b| {
        b.iter(|| {
            builder.semantic_into(black_box(&logits), k, h, w, 224, 224, &mut out).unwrap();
            black_box(&out);
        })
    });
    // A two-stage package's heard-mass rule on the same logits, two classes heard: both masks
    // (heard mass and arg-max) from one pass.
    let mut is_heard = vec![false; k];
    is_heard[5] = true;
    is_heard[40] = true;
    let mut arg_max = FrameMask::background(1, 1);
    c.bench_function("heard_mass_mask_101x160x160_to_224x224", |b| {
        b.iter(|| {
            builder.heard_mass_into(black_box(&logits), (k, h, w), &is_heard, 0.05, 224, 224, &mut out, &mut arg_max).unwrap();
            black_box((&out, &arg_max));
        })
    });
    // The per-pixel definition (one scalar exp per class and pixel), which semantic_into used
    // before src/post/softmax.rs: the softmax arg-max alone, without the upsampling.
    c.bench_function("semantic_softmax_argmax_101x160x160_per_pixel_naive", |b| {
        b.iter(|| black_box(avseg::softmax_argmax_naive(black_box(&logits), k, h * w)))
    });
}

criterion_group!(benches, preprocess, masks, semantic_masks);
criterion_main!(benches);
