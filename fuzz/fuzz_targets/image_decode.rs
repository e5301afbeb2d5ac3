//! Image bytes (PNG, JPEG, WebP, or anything else) through `io::image` within limits, then the
//! vision front end's resize and normalisation with either filter. Oracle: no panic; decoded images
//! respect the limits; the model input is finite.
#![no_main]

use std::path::Path;

use avseg_runtime::{decode_image_bytes_with, InputLimits, ResizeFilter, VisionConfig, VisionFrontend};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut limits = InputLimits::default();
    limits.max_image_side = 4096;
    limits.max_image_pixels = 4_000_000;
    let Ok(img) = decode_image_bytes_with(Path::new("frame.png"), data, &limits) else { return };
    assert!(img.width().max(img.height()) <= 4096 && (img.width() as u64 * img.height() as u64) <= 4_000_000);
    let filter = if data.len() % 2 == 0 { ResizeFilter::BilinearOpencv } else { ResizeFilter::BilinearPil };
    let mut vision = VisionFrontend::new(VisionConfig::imagenet(40, 24, filter));
    let mut out = vec![0f32; 3 * 40 * 24];
    if vision.preprocess_into(&img, &mut out).is_ok() {
        assert!(out.iter().all(|v| v.is_finite()), "non-finite frame tensor");
    }
});
