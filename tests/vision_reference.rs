//! The frame front end against OpenCV and PIL, and image decoding.
//!
//! Fixtures: `tests/data/resize/` (see its README; made by `tools/avseg_tools/make_resize_reference.py`).
//! Run with `--nocapture` to see the measured differences.

use std::path::{Path, PathBuf};

use avseg::{ResizeFilter, VisionConfig, VisionFrontend};
use avseg::decode_image;
use avseg::DecodeError;
use image::RgbImage;

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/resize")
}

struct Case {
    name: String,
    input: PathBuf,
    width: u32,
    height: u32,
    cv2: PathBuf,
    pil: PathBuf,
    cv2_norm: Option<PathBuf>,
}

fn cases() -> Vec<Case> {
    let dir = data_dir();
    let text = std::fs::read_to_string(dir.join("cases.json")).expect("cases.json");
    let v: serde_json::Value = serde_json::from_str(&text).expect("cases.json parses");
    v.as_array()
        .expect("cases.json is a list")
        .iter()
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap_or_else(|| panic!("case field {k}")).to_string();
            Case {
                name: s("name"),
                input: dir.join(s("input")),
                width: c["width"].as_u64().unwrap() as u32,
                height: c["height"].as_u64().unwrap() as u32,
                cv2: dir.join(s("cv2")),
                pil: dir.join(s("pil")),
                cv2_norm: c.get("cv2_norm").and_then(|v| v.as_str()).map(|p| dir.join(p)),
            }
        })
        .collect()
}

/// (max, mean) absolute difference in uint8 levels.
fn level_diff(a: &RgbImage, b: &RgbImage) -> (u8, f64) {
    assert_eq!(a.dimensions(), b.dimensions());
    let mut max = 0u8;
    let mut sum = 0u64;
    for (x, y) in a.as_raw().iter().zip(b.as_raw()) {
        let d = x.abs_diff(*y);
        max = max.max(d);
        sum += d as u64;
    }
    (max, sum as f64 / a.as_raw().len() as f64)
}

/// (max, mean) absolute difference of two float slices.
fn float_diff(a: &[f32], b: &[f32]) -> (f32, f64) {
    assert_eq!(a.len(), b.len());
    let mut max = 0f32;
    let mut sum = 0f64;
    for (x, y) in a.iter().zip(b) {
        let d = (x - y).abs();
        // NaN-aware: `f32::max` would drop a NaN and report a perfect match.
        max = if max.is_nan() || d.is_nan() { f32::NAN } else { max.max(d) };
        sum += d as f64;
    }
    (max, sum / a.len() as f64)
}

#[test]
fn float_diff_fails_on_nan() {
    assert!(float_diff(&[0.0, f32::NAN], &[0.0, 0.0]).0.is_nan());
    assert!(float_diff(&[f32::NAN; 4], &[1.0; 4]).0.is_nan());
    assert_eq!(float_diff(&[1.0, 2.0], &[1.0, 2.5]).0, 0.5);
}

/// CHW normalisation of an RGB8 image with the torchvision arithmetic, as the reference side.
fn normalise(img: &RgbImage, cfg: &VisionConfig) -> Vec<f32> {
    let plane = (img.width() * img.height()) as usize;
    let mut out = vec![0.0; 3 * plane];
    for (i, px) in img.pixels().enumerate() {
        for c in 0..3 {
            out[c * plane + i] = (px[c] as f32 / 255.0 - cfg.mean[c]) / cfg.std[c];
        }
    }
    out
}

// Measured on every fixture (fast_image_resize 6.1.0 vs opencv-python-headless 5.0.0 / Pillow
// 13.0.0): max 1 level for both filters; mean 0.07-0.10 levels vs cv2 and 0.0005-0.05 vs PIL;
// identity 0. A 2-level difference anywhere is a regression.
const MAX_LEVELS_OPENCV: u8 = 1;
const MAX_LEVELS_PIL: u8 = 1;
// 1 uint8 level at the smallest std (0.224) is 1/255/0.224 = 0.0175 normalised units.
const ONE_LEVEL_NORM: f32 = 1.0 / 255.0 / 0.224 + 1e-6;
const MAX_MEAN_LEVELS: f64 = 0.5;

fn check_filter(filter: ResizeFilter, max_levels: u8) {
    let mut worst = 0u8;
    for case in cases() {
        let input = decode_image(&case.input).unwrap();
        let reference = decode_image(match filter {
            ResizeFilter::BilinearOpencv => &case.cv2,
            ResizeFilter::BilinearPil => &case.pil,
            other => panic!("no reference images for {other:?}"),
        })
        .unwrap();
        let cfg = VisionConfig::imagenet(case.width, case.height, filter);
        let mut fe = VisionFrontend::new(cfg.clone());
        let ours = fe.resize_rgb8(&input).unwrap();
        let (max, mean) = level_diff(&ours, &reference);

        let mut norm = vec![0.0; fe.frame_len()];
        fe.preprocess_into(&input, &mut norm).unwrap();
        let (nmax, nmean) = float_diff(&norm, &normalise(&reference, &cfg));
        println!(
            "{filter:?} {:>22} {}x{} -> {}x{}: uint8 max {max} mean {mean:.4}; normalised max {nmax:.5} mean {nmean:.6}",
            case.name,
            input.width(),
            input.height(),
            case.width,
            case.height
        );
        assert!(max <= max_levels, "{filter:?} {}: max diff {max} levels > {max_levels}", case.name);
        assert!(mean <= MAX_MEAN_LEVELS, "{filter:?} {}: mean diff {mean} levels", case.name);
        assert!(nmax <= max_levels as f32 * ONE_LEVEL_NORM, "{filter:?} {}: normalised max diff {nmax}", case.name);
        worst = worst.max(max);
    }
    println!("{filter:?}: worst max diff over all cases {worst} levels");
}

#[test]
fn bilinear_opencv_matches_cv2_inter_linear() {
    check_filter(ResizeFilter::BilinearOpencv, MAX_LEVELS_OPENCV);
}

#[test]
fn bilinear_pil_matches_pil_bilinear() {
    check_filter(ResizeFilter::BilinearPil, MAX_LEVELS_PIL);
}

/// The fixtures discriminate: on downscales each filter is far from the other library's output,
/// so passing the two tests above means the right algorithm is wired to the right name.
#[test]
fn filters_are_not_interchangeable_on_downscale() {
    for case in cases().iter().filter(|c| c.name == "card_1920x1080" || c.name == "card_640x480") {
        let input = decode_image(&case.input).unwrap();
        let cv2 = decode_image(&case.cv2).unwrap();
        let pil = decode_image(&case.pil).unwrap();
        let mut ocv = VisionFrontend::new(VisionConfig::imagenet(224, 224, ResizeFilter::BilinearOpencv));
        let mut opil = VisionFrontend::new(VisionConfig::imagenet(224, 224, ResizeFilter::BilinearPil));
        let (m1, _) = level_diff(&ocv.resize_rgb8(&input).unwrap(), &pil);
        let (m2, _) = level_diff(&opil.resize_rgb8(&input).unwrap(), &cv2);
        println!("{}: BilinearOpencv vs PIL max {m1}; BilinearPil vs cv2 max {m2}", case.name);
        assert!(m1 > 50 && m2 > 50, "{}: {m1} {m2}", case.name);
    }
}

#[test]
fn normalised_tensor_matches_numpy_reference() {
    let case = cases().into_iter().find(|c| c.cv2_norm.is_some()).expect("a case with cv2_norm");
    let bytes = std::fs::read(case.cv2_norm.as_ref().unwrap()).unwrap();
    let npy = npyz::NpyFile::new(&bytes[..]).unwrap();
    assert_eq!(npy.shape(), &[3, case.height as u64, case.width as u64]);
    let want: Vec<f32> = npy.into_vec().unwrap();

    let mut fe = VisionFrontend::new(VisionConfig::imagenet(case.width, case.height, ResizeFilter::BilinearOpencv));
    let input = decode_image(&case.input).unwrap();
    let t = fe.batch(&[input.clone(), input]).unwrap();
    assert_eq!(t.shape(), &[2, 3, case.height as usize, case.width as usize]);
    let (max, mean) = float_diff(t.item(0), &want);
    let exact = t.item(0).iter().zip(&want).filter(|(a, b)| a == b).count();
    println!("{}: normalised vs numpy max {max:.5} mean {mean:.6}; bit-exact {exact}/{}", case.name, want.len());
    assert!(max <= MAX_LEVELS_OPENCV as f32 * ONE_LEVEL_NORM, "max {max}");
    assert_eq!(t.item(0), t.item(1));

    // Where the resized uint8 value agrees with cv2, the float is bit-identical to numpy's: the
    // normalisation adds no error of its own.
    let ours = fe.resize_rgb8(&decode_image(&case.input).unwrap()).unwrap();
    let cv2 = decode_image(&case.cv2).unwrap();
    let plane = (case.width * case.height) as usize;
    let mut same_u8 = 0;
    for (i, (a, b)) in ours.as_raw().iter().zip(cv2.as_raw()).enumerate() {
        if a == b {
            same_u8 += 1;
            let chw = (i % 3) * plane + i / 3;
            assert_eq!(t.item(0)[chw].to_bits(), want[chw].to_bits(), "value {i}");
        }
    }
    assert_eq!(same_u8, exact);
}

#[test]
fn identity_size_is_not_resampled() {
    let case = cases().into_iter().find(|c| c.name == "card_224x224").unwrap();
    let input = decode_image(&case.input).unwrap();
    for f in [ResizeFilter::BilinearOpencv, ResizeFilter::BilinearPil] {
        let cfg = VisionConfig::imagenet(224, 224, f);
        let mut fe = VisionFrontend::new(cfg.clone());
        let mut out = vec![0.0; fe.frame_len()];
        fe.preprocess_into(&input, &mut out).unwrap();
        assert_eq!(out, normalise(&input, &cfg), "{f:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding

fn names_file(e: &DecodeError, path: &Path) {
    let msg = e.to_string();
    assert!(msg.contains(&path.display().to_string()), "error does not name {}: {msg}", path.display());
    println!("{msg}");
}

#[test]
fn truncated_png_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(data_dir().join("card_100x75.png")).unwrap();
    for (i, keep) in [bytes.len() / 2, 40, 9].into_iter().enumerate() {
        let path = dir.path().join(format!("truncated_{i}.png"));
        std::fs::write(&path, &bytes[..keep]).unwrap();
        let e = decode_image(&path).unwrap_err();
        assert!(matches!(e, DecodeError::Image { .. }), "{e:?}");
        names_file(&e, &path);
    }
    // Corrupt in the middle (bad IDAT checksum / data), full length.
    let mut bad = bytes.clone();
    let mid = bad.len() / 2;
    for b in &mut bad[mid..mid + 64] {
        *b ^= 0x5a;
    }
    let path = dir.path().join("corrupt.png");
    std::fs::write(&path, &bad).unwrap();
    let e = decode_image(&path).unwrap_err();
    names_file(&e, &path);
}

#[test]
fn empty_text_and_missing_files_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.png");
    std::fs::write(&empty, b"").unwrap();
    let e = decode_image(&empty).unwrap_err();
    assert!(matches!(e, DecodeError::Empty { .. }), "{e:?}");
    names_file(&e, &empty);

    let text = dir.path().join("notes.png");
    std::fs::write(&text, "this is not an image\n").unwrap();
    let e = decode_image(&text).unwrap_err();
    assert!(matches!(e, DecodeError::Image { .. }), "{e:?}");
    assert!(e.to_string().contains("unrecognised"), "{e}");
    names_file(&e, &text);

    let missing = dir.path().join("missing.png");
    let e = decode_image(&missing).unwrap_err();
    assert!(matches!(e, DecodeError::Read { .. }), "{e:?}");
    names_file(&e, &missing);

    // A supported container of an unsupported kind (BMP magic) is refused by name.
    let bmp = dir.path().join("frame.bmp");
    std::fs::write(&bmp, b"BM\x3a\0\0\0\0\0\0\0\x36\0\0\0").unwrap();
    let e = decode_image(&bmp).unwrap_err();
    names_file(&e, &bmp);
}

#[test]
fn alpha_grey_and_16_bit_pngs_decode_to_rgb() {
    let dir = tempfile::tempdir().unwrap();
    let rgba = image::RgbaImage::from_fn(5, 4, |x, y| image::Rgba([x as u8 * 40, y as u8 * 60, 7, (x * y * 20) as u8]));
    let p = dir.path().join("alpha.png");
    rgba.save(&p).unwrap();
    let rgb = decode_image(&p).unwrap();
    assert_eq!(rgb.dimensions(), (5, 4));
    for (a, b) in rgb.pixels().zip(rgba.pixels()) {
        // Alpha is dropped, not composited, as PIL's convert('RGB').
        assert_eq!(a.0, [b[0], b[1], b[2]]);
    }

    let grey = image::GrayImage::from_fn(3, 2, |x, y| image::Luma([(x * 50 + y * 100) as u8]));
    let p = dir.path().join("grey.png");
    grey.save(&p).unwrap();
    let rgb = decode_image(&p).unwrap();
    for (a, b) in rgb.pixels().zip(grey.pixels()) {
        assert_eq!(a.0, [b[0]; 3]);
    }

    let grey_alpha = image::GrayAlphaImage::from_pixel(2, 2, image::LumaA([77, 0]));
    let p = dir.path().join("grey_alpha.png");
    grey_alpha.save(&p).unwrap();
    assert!(decode_image(&p).unwrap().pixels().all(|px| px.0 == [77; 3]));

    let deep: image::ImageBuffer<image::Rgb<u16>, Vec<u16>> = image::ImageBuffer::from_fn(2, 1, |x, _| {
        image::Rgb(if x == 0 { [0, 32896, 65535] } else { [257, 514, 65535] })
    });
    let p = dir.path().join("deep.png");
    deep.save(&p).unwrap();
    let rgb = decode_image(&p).unwrap();
    assert_eq!(rgb.get_pixel(0, 0).0, [0, 128, 255]);
    assert_eq!(rgb.get_pixel(1, 0).0, [1, 2, 255]);
}

#[test]
fn jpeg_and_webp_decode_whatever_the_extension() {
    let dir = tempfile::tempdir().unwrap();
    let img =
        RgbImage::from_fn(16, 16, |x, _| if x < 8 { image::Rgb([200, 30, 40]) } else { image::Rgb([20, 180, 90]) });

    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 95).encode_image(&img).unwrap();
    // Named .png on purpose: the format comes from the content.
    let p = dir.path().join("frame.png");
    std::fs::write(&p, &jpeg).unwrap();
    let dec = decode_image(&p).unwrap();
    assert_eq!(dec.dimensions(), (16, 16));
    let (max, _) = level_diff(&dec, &img);
    // Away from the colour edge JPEG at q95 is close; the edge itself rings.
    let px = dec.get_pixel(2, 8).0;
    assert!(px.iter().zip([200u8, 30, 40]).all(|(a, b)| a.abs_diff(b) <= 6), "{px:?} (max diff {max})");

    let mut webp = Vec::new();
    image::codecs::webp::WebPEncoder::new_lossless(&mut webp)
        .encode(img.as_raw(), 16, 16, image::ExtendedColorType::Rgb8)
        .unwrap();
    let p = dir.path().join("frame.webp");
    std::fs::write(&p, &webp).unwrap();
    assert_eq!(decode_image(&p).unwrap(), img);
}
