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

criterion_group!(benches, preprocess, masks);
criterion_main!(benches);
