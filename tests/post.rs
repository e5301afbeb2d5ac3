//! Post-processing: masks, objects and the writers, with hand-computed expectations.

use std::io::BufRead;

use avseg::{binary_mask, semantic_mask, FrameMask, MaskBuilder};
use avseg::{find_objects, SoundingObject};
use avseg::{
    binary_colours, colour_table, voc_palette, write_mask_png, write_npy, write_overlay_png, FrameRecord, JsonlWriter,
    DEFAULT_OVERLAY_COLOUR,
};
use avseg::PostError;
use image::RgbImage;

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

// ---------------------------------------------------------------------------------------------
// binary_mask

#[test]
fn threshold_is_strict_and_logit_zero_is_background() {
    // σ(0) = 0.5 exactly; σ(1e-8) rounds to 0.5 in f32 and is background too, as in the official
    // f32 `sigmoid(x) > 0.5`; σ(1e-3) > 0.5.
    let m = binary_mask(&[0.0, 1e-8, 1e-3, -1e-3], 1, 4, 4, 1, 0.5);
    assert_eq!(m.labels, vec![0, 0, 1, 0]);
    assert_eq!(m.confidence[0], 0.5);
    assert!(!m.is_empty() && m.foreground_pixels() == 1);
    // Other thresholds are on the probability scale.
    let m = binary_mask(&[0.0, 1.0, 2.0], 1, 3, 3, 1, sigmoid(1.0) as f32);
    assert_eq!(m.labels, vec![0, 0, 1]);
    let m = binary_mask(&[-5.0; 4], 2, 2, 2, 2, 0.5);
    assert!(m.is_empty());
    assert_eq!(m.foreground_fraction(), 0.0);
}

/// Independent f64 half-pixel bilinear (PyTorch align_corners=False), for comparison.
fn reference_upsample(logits: &[f32], h: usize, w: usize, oh: usize, ow: usize) -> Vec<f64> {
    let tap = |d: usize, n_in: usize, n_out: usize| {
        let s = ((d as f64 + 0.5) * n_in as f64 / n_out as f64 - 0.5).max(0.0);
        let i0 = (s.floor() as usize).min(n_in - 1);
        let i1 = (i0 + 1).min(n_in - 1);
        (i0, i1, s - i0 as f64)
    };
    let mut out = Vec::new();
    for oy in 0..oh {
        let (y0, y1, ly) = tap(oy, h, oh);
        for ox in 0..ow {
            let (x0, x1, lx) = tap(ox, w, ow);
            let v = |y: usize, x: usize| logits[y * w + x] as f64;
            out.push(
                (1.0 - ly) * ((1.0 - lx) * v(y0, x0) + lx * v(y0, x1)) + ly * ((1.0 - lx) * v(y1, x0) + lx * v(y1, x1)),
            );
        }
    }
    out
}

#[test]
fn upsampling_to_a_non_square_size_is_half_pixel_bilinear() {
    // 1x2 → 4x3 by hand: source x = -0.25 (clamped), 0.25, 0.75, 1.25 (clamped) → -1, -0.5, 0.5, 1.
    let m = binary_mask(&[-1.0, 1.0], 1, 2, 4, 3, 0.5);
    assert_eq!((m.width, m.height), (4, 3));
    assert_eq!(m.labels, [0, 0, 1, 1].repeat(3));
    let want = [1.0 - sigmoid(-1.0), 1.0 - sigmoid(-0.5), sigmoid(0.5), sigmoid(1.0)];
    for (c, w) in m.confidence.iter().zip(want.iter().cycle()) {
        assert!((*c as f64 - w).abs() < 1e-6, "{c} vs {w}");
    }

    // 3x4 logits → 10x7 (non-integer factors both ways), against the f64 reference.
    let logits: Vec<f32> = (0..12).map(|i| ((i * 7) % 12) as f32 - 5.3).collect();
    let (h, w, oh, ow) = (3, 4, 7, 10);
    let m = binary_mask(&logits, h, w, ow as u32, oh as u32, 0.5);
    let want = reference_upsample(&logits, h, w, oh, ow);
    assert_eq!(m.labels.len(), ow * oh);
    for (i, v) in want.iter().enumerate() {
        let p = sigmoid(*v);
        let (label, conf) = if p > 0.5 { (1, p) } else { (0, 1.0 - p) };
        // f32 vs f64 rounding can only flip a label whose logit is within rounding of 0.
        assert!(v.abs() > 1e-4, "test data has a logit too close to 0 at pixel {i}");
        assert_eq!(m.labels[i], label, "pixel {i}: logit {v}");
        assert!((m.confidence[i] as f64 - conf).abs() < 1e-5, "pixel {i}");
    }

    // Downscale works as well (the same half-pixel rule, no antialiasing).
    let m = binary_mask(&logits, h, w, 2, 2, 0.5);
    let want = reference_upsample(&logits, h, w, 2, 2);
    let labels: Vec<u8> = want.iter().map(|v| (sigmoid(*v) > 0.5) as u8).collect();
    assert_eq!(m.labels, labels);
}

#[test]
fn builder_reuses_buffers_and_matches_the_free_function() {
    let logits: Vec<f32> = (0..20).map(|i| (i as f32 - 9.5) * 0.3).collect();
    let mut b = MaskBuilder::new();
    let mut out = FrameMask::background(1, 1);
    for (ow, oh) in [(9u32, 13u32), (4, 5), (40, 3)] {
        b.binary_into(&logits, 4, 5, ow, oh, 0.5, &mut out).unwrap();
        assert_eq!(out, binary_mask(&logits, 4, 5, ow, oh, 0.5));
    }
    let e = b.binary(&logits, 4, 4, 8, 8, 0.5).unwrap_err();
    assert!(matches!(e, PostError::LogitShape { .. }), "{e}");
}

// ---------------------------------------------------------------------------------------------
// semantic_mask

#[test]
fn semantic_argmax_ties_go_to_the_lowest_index() {
    // k = 3, 1x3 pixels: [all equal], [classes 1 and 2 tie above 0], [class 2 wins].
    #[rustfmt::skip]
    let logits = [
        0.0, 0.0, 0.0,  // class 0
        0.0, 2.0, 1.0,  // class 1
        0.0, 2.0, 3.0,  // class 2
    ];
    let m = semantic_mask(&logits, 3, 1, 3, 3, 1);
    assert_eq!(m.labels, vec![0, 1, 2]);
    assert!((m.confidence[0] - 1.0 / 3.0).abs() < 1e-6);
    let e2 = (2.0f64).exp();
    assert!((m.confidence[1] as f64 - e2 / (1.0 + 2.0 * e2)).abs() < 1e-6);
    let want = 3f64.exp() / (1.0 + 1f64.exp() + 3f64.exp());
    assert!((m.confidence[2] as f64 - want).abs() < 1e-6);
    assert_eq!(m.foreground_pixels(), 2);
}

#[test]
fn semantic_upsampling_is_nearest_at_pixel_centres() {
    // k = 2, 2x3 map whose argmax is class 1 at (row 0, col 2) and (row 1, col 0).
    let mut logits = vec![0.0f32; 2 * 6];
    logits[6 + 2] = 1.0;
    logits[6 + 3] = 1.0;
    let m = semantic_mask(&logits, 2, 2, 3, 7, 5);
    // x: (2d+1)*3/14 → 0,0,1,1,1,2,2; y: (2d+1)*2/10 → 0,0,1,1,1.
    #[rustfmt::skip]
    let want = [
        0, 0, 0, 0, 0, 1, 1,
        0, 0, 0, 0, 0, 1, 1,
        1, 1, 0, 0, 0, 0, 0,
        1, 1, 0, 0, 0, 0, 0,
        1, 1, 0, 0, 0, 0, 0,
    ];
    assert_eq!(m.labels, want);
    assert_eq!((m.width, m.height), (7, 5));
}

// ---------------------------------------------------------------------------------------------
// find_objects

fn two_blob_mask() -> FrameMask {
    // 8x6; blob A (label 1): a 3x2 rectangle at x 1..=3, y 1..=2 plus a diagonal pixel (4, 3)
    // (joined by 8-connectivity); blob B (label 1): a 2x2 square at x 6..=7, y 4..=5;
    // blob C (label 2): a single pixel at (0, 5).
    #[rustfmt::skip]
    let labels: Vec<u8> = vec![
        0, 0, 0, 0, 0, 0, 0, 0,
        0, 1, 1, 1, 0, 0, 0, 0,
        0, 1, 1, 1, 0, 0, 0, 0,
        0, 0, 0, 0, 1, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 1, 1,
        2, 0, 0, 0, 0, 0, 1, 1,
    ];
    let confidence = labels
        .iter()
        .enumerate()
        .map(|(i, &l)| match l {
            0 => 0.9,
            1 if i < 32 => 0.8,
            1 => 0.6,
            _ => 0.7,
        })
        .collect();
    FrameMask { width: 8, height: 6, labels, confidence }
}

#[test]
fn find_objects_on_two_blobs() {
    let names: Vec<String> = ["background", "guitar", "piano"].iter().map(|s| s.to_string()).collect();
    let objs = find_objects(&two_blob_mask(), Some(&names), 0);
    assert_eq!(objs.len(), 3, "{objs:#?}");

    let a = &objs[0];
    assert_eq!((a.id, a.class, a.label.as_deref()), (1, 1, Some("guitar")));
    assert_eq!(a.bbox, [1, 1, 4, 3]);
    assert_eq!(a.area, 7);
    // x centres: 1.5,2.5,3.5 twice and 4.5 → 19.5/7; y: 1.5×3, 2.5×3, 3.5 → 15.5/7.
    assert!((a.centroid[0] - 19.5 / 7.0).abs() < 1e-6 && (a.centroid[1] - 15.5 / 7.0).abs() < 1e-6, "{:?}", a.centroid);
    assert!((a.confidence - 0.8).abs() < 1e-6);

    let b = &objs[1];
    assert_eq!((b.id, b.class), (2, 1));
    assert_eq!(b.bbox, [6, 4, 2, 2]);
    assert_eq!(b.area, 4);
    assert_eq!(b.centroid, [7.0, 5.0]);
    assert!((b.confidence - 0.6).abs() < 1e-6);

    let c = &objs[2];
    assert_eq!((c.id, c.class, c.label.as_deref()), (3, 2, Some("piano")));
    assert_eq!((c.bbox, c.area, c.centroid), ([0, 5, 1, 1], 1, [0.5, 5.5]));
    assert!((c.confidence - 0.7).abs() < 1e-6);

    // Without names, and with a label list too short for a class.
    assert!(find_objects(&two_blob_mask(), None, 0).iter().all(|o| o.label.is_none()));
    let short = vec!["background".to_string()];
    assert!(find_objects(&two_blob_mask(), Some(&short), 0).iter().all(|o| o.label.is_none()));
}

#[test]
fn find_objects_min_area_drops_small_regions_and_renumbers() {
    let objs = find_objects(&two_blob_mask(), None, 4);
    assert_eq!(objs.iter().map(|o| (o.id, o.area)).collect::<Vec<_>>(), vec![(1, 7), (2, 4)]);
    let objs = find_objects(&two_blob_mask(), None, 5);
    assert_eq!(objs.iter().map(|o| (o.id, o.area)).collect::<Vec<_>>(), vec![(1, 7)]);
    assert!(find_objects(&two_blob_mask(), None, 100).is_empty());
}

// ---------------------------------------------------------------------------------------------
// Writers

fn read_png(path: &std::path::Path) -> (png::OutputInfo, Vec<u8>, Option<Vec<u8>>) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let palette = reader.info().palette.as_ref().map(|p| p.to_vec());
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    buf.truncate(info.buffer_size());
    (info, buf, palette)
}

#[test]
fn binary_mask_png_is_grey_0_255() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("mask.png");
    let m = two_blob_mask();
    write_mask_png(&p, &m, None).unwrap();
    let (info, data, palette) = read_png(&p);
    assert_eq!((info.width, info.height), (8, 6));
    assert_eq!(info.color_type, png::ColorType::Grayscale);
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    assert!(palette.is_none());
    let want: Vec<u8> = m.labels.iter().map(|&l| if l != 0 { 255 } else { 0 }).collect();
    assert_eq!(data, want);
    // The spec's GT rule (grey > 127) recovers the mask.
    let back = image::open(&p).unwrap().to_luma8();
    assert_eq!(
        back.as_raw().iter().map(|&v| (v > 127) as u8).collect::<Vec<_>>(),
        m.labels.iter().map(|&l| (l != 0) as u8).collect::<Vec<_>>()
    );
}

#[test]
fn semantic_mask_png_is_indexed_with_the_palette() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("mask.png");
    let m = two_blob_mask();
    let palette = voc_palette(71);
    write_mask_png(&p, &m, Some(&palette)).unwrap();
    let (info, data, plte) = read_png(&p);
    assert_eq!(info.color_type, png::ColorType::Indexed);
    assert_eq!(data, m.labels, "pixel values are the label indices");
    let plte = plte.expect("PLTE chunk");
    assert_eq!(plte.len(), 71 * 3);
    assert_eq!(&plte[3..6], &[128, 0, 0]);
    // Viewers see the palette colours.
    let rgb = image::open(&p).unwrap().to_rgb8();
    assert_eq!(rgb.get_pixel(0, 5).0, [0, 128, 0]);
    assert_eq!(rgb.get_pixel(1, 1).0, [128, 0, 0]);

    // A label without a palette entry is refused before anything is written.
    let q = dir.path().join("short.png");
    let e = write_mask_png(&q, &m, Some(&palette[..2])).unwrap_err();
    assert!(matches!(e, PostError::Invalid { .. }) && e.to_string().contains("short.png"), "{e}");
    assert!(!q.exists());
}

#[test]
fn overlay_has_the_frame_size_and_blends() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("overlay.png");
    let frame = RgbImage::from_pixel(8, 6, image::Rgb([100, 100, 100]));
    let mut m = two_blob_mask();
    // Grow blob A so it has an interior pixel.
    for y in 1..4 {
        for x in 1..4 {
            m.labels[y * 8 + x] = 1;
        }
    }
    let colours = colour_table(Some(&binary_colours()), 3);
    write_overlay_png(&p, &frame, &m, &colours).unwrap();
    let out = image::open(&p).unwrap().to_rgb8();
    assert_eq!(out.dimensions(), frame.dimensions());
    assert_eq!(out.get_pixel(0, 0).0, [100, 100, 100], "background untouched");
    let c = DEFAULT_OVERLAY_COLOUR;
    let blend = |v: u8, c: u8| (v as u16 + c as u16).div_ceil(2) as u8;
    assert_eq!(out.get_pixel(2, 2).0, [blend(100, c[0]), blend(100, c[1]), blend(100, c[2])], "interior blended");
    assert_eq!(out.get_pixel(1, 1).0, c, "boundary outlined");

    let small = RgbImage::new(4, 4);
    let e = write_overlay_png(&p, &small, &m, &colours).unwrap_err();
    assert!(e.to_string().contains("overlay.png") && e.to_string().contains("frame is 4x4"), "{e}");
    let e = write_overlay_png(&p, &frame, &m, &colours[..2]).unwrap_err();
    assert!(e.to_string().contains("label 2"), "{e}");
}

#[test]
fn npy_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("logits.npy");
    let data: Vec<f32> = (0..2 * 3 * 4).map(|i| i as f32 * 0.25 - 1.0).collect();
    write_npy(&p, &[2, 3, 4], &data).unwrap();
    let bytes = std::fs::read(&p).unwrap();
    let npy = npyz::NpyFile::new(&bytes[..]).unwrap();
    assert_eq!(npy.shape(), &[2, 3, 4]);
    assert_eq!(npy.order(), npyz::Order::C);
    let back: Vec<f32> = npy.into_vec().unwrap();
    assert_eq!(back, data);

    let e = write_npy(&p, &[5], &data).unwrap_err();
    assert!(matches!(e, PostError::Invalid { .. }), "{e}");
}

#[test]
fn jsonl_parses_back() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("results.jsonl");
    let m = two_blob_mask();
    let objs = find_objects(&m, None, 0);
    let mut w = JsonlWriter::create(&p).unwrap();
    w.write(&FrameRecord::from_mask(0, 0.9375, "clip/0.png", &m, objs.clone())).unwrap();
    w.write(&FrameRecord::from_mask(1, 1.9375, "clip/1.png", &FrameMask::background(8, 6), vec![])).unwrap();
    w.finish().unwrap();

    let lines: Vec<String> =
        std::io::BufReader::new(std::fs::File::open(&p).unwrap()).lines().map(|l| l.unwrap()).collect();
    assert_eq!(lines.len(), 2);
    let r0: FrameRecord = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!((r0.frame, r0.timestamp, r0.source.as_str(), r0.width, r0.height), (0, 0.9375, "clip/0.png", 8, 6));
    assert!(!r0.empty);
    assert!((r0.foreground_fraction - 12.0 / 48.0).abs() < 1e-12);
    assert_eq!(r0.objects, objs);
    let r1: FrameRecord = serde_json::from_str(&lines[1]).unwrap();
    assert!(r1.empty && r1.objects.is_empty() && r1.foreground_fraction == 0.0);
    // Field names are part of the output format.
    let v: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    let o = &v["objects"][0];
    for key in ["id", "class", "label", "bbox", "area", "centroid", "confidence"] {
        assert!(o.get(key).is_some(), "missing {key}");
    }
    let _: SoundingObject = serde_json::from_value(o.clone()).unwrap();
}

#[test]
fn writer_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("no/such/dir/mask.png");
    let e = write_mask_png(&p, &two_blob_mask(), None).unwrap_err();
    assert!(matches!(e, PostError::Write { .. }) && e.to_string().contains("mask.png"), "{e}");
    let e = JsonlWriter::create(&dir.path().join("no/results.jsonl")).err().unwrap();
    assert!(e.to_string().contains("results.jsonl"), "{e}");
    let bad = FrameMask { width: 3, height: 3, labels: vec![0; 4], confidence: vec![0.0; 4] };
    let e = write_mask_png(&dir.path().join("bad.png"), &bad, None).unwrap_err();
    assert!(e.to_string().contains("bad.png"), "{e}");
}
