//! End-to-end tests of the `avseg` binary: the bundled sample, and every kind of bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn tiny_model() -> PathBuf {
    repo().join("models/tiny-tpavi")
}

fn sample() -> PathBuf {
    repo().join("models/sample")
}

fn avseg(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_avseg")).args(args).output().expect("run avseg")
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Runs a command that must fail cleanly: non-zero exit, no panic, exactly one `error:` line
/// that contains `needle` (usually the offending file's name). Log warnings before it (e.g. a
/// package without checksums) are allowed; nothing else is.
fn expect_error(args: &[&str], needles: &[&str]) -> String {
    let out = avseg(args);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "expected failure for {args:?}; stderr: {stderr}");
    assert_eq!(out.status.code(), Some(1), "exit code for {args:?}; stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "panic for {args:?}: {stderr}");
    let is_warning = |l: &str| l.starts_with('[') && l.contains(" WARN ");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty() && !is_warning(l)).collect();
    assert_eq!(lines.len(), 1, "want one error line for {args:?}, got: {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    for n in needles {
        assert!(lines[0].contains(n), "error for {args:?} should mention {n:?}: {stderr}");
    }
    lines[0].to_string()
}

/// A clip folder with copies of the sample's frames and a given audio file.
fn clip_with_audio(dir: &Path, audio_name: &str, audio: &[u8]) -> PathBuf {
    let clip = dir.join("clip");
    std::fs::create_dir_all(&clip).unwrap();
    for entry in std::fs::read_dir(sample().join("frames")).unwrap() {
        let e = entry.unwrap();
        std::fs::copy(e.path(), clip.join(e.file_name())).unwrap();
    }
    std::fs::write(clip.join(audio_name), audio).unwrap();
    clip
}

fn wav_i16(rate: u32, channels: u16, samples: &[i16]) -> Vec<u8> {
    let mut cursor = std::io::Cursor::new(Vec::new());
    let spec = hound::WavSpec { channels, sample_rate: rate, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
    let mut w = hound::WavWriter::new(&mut cursor, spec).unwrap();
    for &s in samples {
        w.write_sample(s).unwrap();
    }
    w.finalize().unwrap();
    cursor.into_inner()
}

fn wav_f32(rate: u32, samples: &[f32]) -> Vec<u8> {
    let mut cursor = std::io::Cursor::new(Vec::new());
    let spec = hound::WavSpec { channels: 1, sample_rate: rate, bits_per_sample: 32, sample_format: hound::SampleFormat::Float };
    let mut w = hound::WavWriter::new(&mut cursor, spec).unwrap();
    for &s in samples {
        w.write_sample(s).unwrap();
    }
    w.finalize().unwrap();
    cursor.into_inner()
}

fn tone(rate: u32, seconds: f32) -> Vec<i16> {
    (0..(rate as f32 * seconds) as usize)
        .map(|i| ((i as f32 * 440.0 * std::f32::consts::TAU / rate as f32).sin() * 8000.0) as i16)
        .collect()
}

#[test]
fn segment_writes_masks_overlays_and_results_for_the_bundled_sample() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    let out = avseg(&["segment", "--model", p(&tiny_model()), "--clip", p(&sample()), "--out", p(&out_dir), "--save-logits", "--min-area", "1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");

    let frames = avseg::find_clip(&sample()).unwrap().frames;
    assert_eq!(frames.len(), 5);
    let count = |sub: &str| std::fs::read_dir(out_dir.join(sub)).unwrap().count();
    assert_eq!(count("masks"), 5);
    assert_eq!(count("overlays"), 5);

    let jsonl = std::fs::read_to_string(out_dir.join("results.jsonl")).unwrap();
    let records: Vec<serde_json::Value> = jsonl.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(records.len(), 5);
    let mut any_object = false;
    for (i, (rec, frame_path)) in records.iter().zip(&frames).enumerate() {
        let frame = image::open(frame_path).unwrap().to_rgb8();
        let stem = frame_path.file_stem().unwrap().to_str().unwrap();
        let mask = image::open(out_dir.join("masks").join(format!("{stem}.png"))).unwrap().to_luma8();
        let overlay = image::open(out_dir.join("overlays").join(format!("{stem}.png"))).unwrap().to_rgb8();
        assert_eq!(mask.dimensions(), frame.dimensions(), "mask at source size");
        assert_eq!(overlay.dimensions(), frame.dimensions(), "overlay at source size");
        assert!(mask.pixels().all(|p| p.0[0] == 0 || p.0[0] == 255), "binary mask PNG is 0/255");

        assert_eq!(rec["frame"], i);
        assert!((rec["timestamp"].as_f64().unwrap() - (i as f64 + 0.9375)).abs() < 1e-9);
        assert_eq!(rec["width"], frame.width());
        assert_eq!(rec["height"], frame.height());
        let fg = mask.pixels().filter(|p| p.0[0] == 255).count();
        assert_eq!(rec["empty"], fg == 0);
        let frac = rec["foreground_fraction"].as_f64().unwrap();
        assert!((frac - fg as f64 / (frame.width() * frame.height()) as f64).abs() < 1e-9);

        // With --min-area 1 the objects partition the foreground exactly.
        let objects = rec["objects"].as_array().unwrap();
        let area_sum: u64 = objects.iter().map(|o| o["area"].as_u64().unwrap()).sum();
        assert_eq!(area_sum, fg as u64, "object areas cover the mask");
        for o in objects {
            any_object = true;
            let b: Vec<u64> = o["bbox"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
            let (x, y, w, h) = (b[0] as u32, b[1] as u32, b[2] as u32, b[3] as u32);
            assert!(w > 0 && h > 0 && x + w <= frame.width() && y + h <= frame.height());
            let inside = (y..y + h).flat_map(|yy| (x..x + w).map(move |xx| (xx, yy))).filter(|&(xx, yy)| mask.get_pixel(xx, yy).0[0] == 255).count();
            assert!(inside as u64 >= o["area"].as_u64().unwrap(), "object pixels lie in its box");
            let c: Vec<f64> = o["centroid"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
            assert!(c[0] >= x as f64 && c[0] <= (x + w) as f64 && c[1] >= y as f64 && c[1] <= (y + h) as f64);
            let conf = o["confidence"].as_f64().unwrap();
            assert!(conf > 0.5 && conf <= 1.0, "foreground confidence is sigmoid > threshold: {conf}");
        }
    }
    assert!(any_object, "the tiny model finds something on the sample (its logits are not one-signed)");

    let logits: npyz::NpyFile<_> = npyz::NpyFile::new(std::fs::File::open(out_dir.join("logits.npy")).unwrap()).unwrap();
    assert_eq!(logits.shape(), &[5, 1, 224, 224]);
    assert!(!out_dir.join("tags.npy").exists(), "tags.npy is for two-stage packages only");
}

/// A two-stage package's `--save-logits`: the segmenter's class logits, and the tagger's
/// probabilities per frame (what `avseg-check-ort --tags` compares with ONNX Runtime).
#[test]
fn segment_saves_a_two_stage_packages_tags() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    let model = repo().join("models/tiny-bavs");
    let out = avseg(&["segment", "--model", p(&model), "--clip", p(&sample()), "--out", p(&out_dir), "--save-logits"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let logits = npyz::NpyFile::new(std::fs::File::open(out_dir.join("logits.npy")).unwrap()).unwrap();
    assert_eq!(logits.shape(), &[5, 4, 64, 64]);
    let tags = npyz::NpyFile::new(std::fs::File::open(out_dir.join("tags.npy")).unwrap()).unwrap();
    assert_eq!(tags.shape(), &[5, 4]);
    // The tiny tagger's labels are independent (sigmoids): each a probability, not a distribution.
    let tags = tags.into_vec::<f32>().unwrap();
    assert!(tags.iter().all(|v| (0.0..=1.0).contains(v)), "probabilities: {tags:?}");
}

/// `avseg info` on a two-stage package prints its tree and its pixel rule.
#[test]
fn info_prints_a_two_stage_packages_tree_and_pixel_rule() {
    let out = avseg(&["info", "--model", p(&repo().join("models/tiny-bavs"))]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    for want in ["label tree", "4 tagger labels", "pixel rule  arg_max", "bark"] {
        assert!(text.contains(want), "info should print {want:?}:\n{text}");
    }
}

#[test]
fn features_dump_the_model_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.npy");
    let f = dir.path().join("f.npy");
    let clip = avseg::find_clip(&sample()).unwrap();
    let out = avseg(&["features", "--audio", p(&clip.audio), "--out", p(&a), "--frames", p(&sample().join("frames")), "--frames-out", p(&f), "--model", p(&tiny_model())]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let read = |path: &Path| {
        let npy = npyz::NpyFile::new(std::fs::File::open(path).unwrap()).unwrap();
        let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
        (shape, npy.into_vec::<f32>().unwrap())
    };
    let ((a_shape, a_values), (f_shape, f_values)) = (read(&a), read(&f));
    assert_eq!(a_shape, [5, 1, 96, 64]);
    assert_eq!(f_shape, [5, 3, 224, 224]);
    // The values are the library's, computed the way a program using avseg would.
    let pkg = avseg::ModelPackage::load(tiny_model()).unwrap();
    let m = pkg.manifest();
    let pcm = avseg::decode_audio(&clip.audio).unwrap();
    let patches = avseg::AudioFrontend::new().clip_patches(&pcm, m.frames_per_clip, m.audio.patch_padding).unwrap();
    assert_eq!((patches.shape(), patches.data()), (&a_shape[..], &a_values[..]), "log-mel differs from the library's");
    let frames: Vec<avseg::Frame> =
        avseg::find_frames(&sample().join("frames")).unwrap().iter().map(|p| avseg::Frame::load(p).unwrap()).collect();
    let tensor = avseg::frame_tensor(&mut avseg::VisionFrontend::new(m.vision.clone()), &frames).unwrap();
    assert_eq!((tensor.shape(), tensor.data()), (&f_shape[..], &f_values[..]), "frames differ from the library's");
    // And they are not degenerate: log-mel of a real sound, frames with their own content.
    assert!(a_values.iter().all(|v| v.is_finite()) && a_values.iter().any(|v| *v != a_values[0]));
    assert!(f_values.iter().all(|v| v.is_finite()) && f_values.iter().any(|v| *v != f_values[0]));
}

#[test]
fn info_reports_graphs_and_parameters() {
    let out = avseg(&["info", "--model", p(&tiny_model())]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let pkg = avseg::ModelPackage::load(tiny_model()).unwrap();
    assert!(text.contains(&format!("parameters  {}", pkg.parameters())), "{text}");
    assert!(pkg.parameters() > 10_000);
    assert!(text.contains("input     frames [5,3,224,224]"), "{text}");
}

// ---- bad audio ------------------------------------------------------------------------------

fn segment_clip(clip: &Path, out: &Path) -> Vec<String> {
    vec!["segment".into(), "--model".into(), p(&tiny_model()).into(), "--clip".into(), p(clip).into(), "--out".into(), p(out).into()]
}

fn expect_clip_error(audio_name: &str, audio: &[u8], needles: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let clip = clip_with_audio(dir.path(), audio_name, audio);
    let args = segment_clip(&clip, &dir.path().join("out"));
    let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    let mut all = vec![audio_name];
    all.extend_from_slice(needles);
    expect_error(&args, &all)
}

#[test]
fn empty_audio_file_is_an_error() {
    expect_clip_error("empty.wav", b"", &["empty"]);
}

#[test]
fn truncated_wav_is_an_error() {
    let full = wav_i16(16000, 1, &tone(16000, 5.0));
    expect_clip_error("cut.wav", &full[..full.len() / 3], &["truncated"]);
}

#[test]
fn text_file_named_wav_is_an_error() {
    expect_clip_error("notes.wav", b"this is not audio, just some text\n", &[]);
}

#[test]
fn unsupported_codec_is_an_error() {
    // A RIFF/WAVE header declaring format tag 0x0161 (Windows Media Audio), which no decoder reads.
    let mut wav = wav_i16(16000, 1, &tone(16000, 2.0));
    wav[20] = 0x61;
    wav[21] = 0x01;
    expect_clip_error("wma.wav", &wav, &["codec"]);
}

#[test]
fn audio_shorter_than_one_patch_is_an_error_that_gives_both_lengths() {
    let e = expect_clip_error("short.wav", &wav_i16(16000, 1, &tone(16000, 0.5)), &["0.500 s", "0.975 s"]);
    assert!(e.contains("short.wav"));
}

#[test]
fn nan_and_inf_samples_are_errors() {
    let mut s: Vec<f32> = (0..32000).map(|i| (i as f32 * 0.05).sin() * 0.1).collect();
    s[20000] = f32::NAN;
    expect_clip_error("nan.wav", &wav_f32(16000, &s), &["non-finite"]);
    s[20000] = 0.0;
    s[100] = f32::INFINITY;
    expect_clip_error("inf.wav", &wav_f32(16000, &s), &["non-finite"]);
}

// ---- bad frames -----------------------------------------------------------------------------

#[test]
fn corrupt_png_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let clip = clip_with_audio(dir.path(), "a.wav", &wav_i16(16000, 1, &tone(16000, 5.0)));
    let victim = avseg::find_frames(&clip).unwrap()[2].clone();
    let bytes = std::fs::read(&victim).unwrap();
    std::fs::write(&victim, &bytes[..bytes.len() / 2]).unwrap();
    let args = segment_clip(&clip, &dir.path().join("out"));
    let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    expect_error(&args, &[victim.file_name().unwrap().to_str().unwrap()]);
}

#[test]
fn missing_frame_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let clip = clip_with_audio(dir.path(), "a.wav", &wav_i16(16000, 1, &tone(16000, 5.0)));
    let victim = avseg::find_frames(&clip).unwrap()[1].clone();
    std::fs::remove_file(&victim).unwrap();
    let args = segment_clip(&clip, &dir.path().join("out"));
    let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    expect_error(&args, &["missing", victim.file_stem().unwrap().to_str().unwrap()]);
}

#[test]
fn frames_of_different_sizes_are_allowed_and_each_mask_keeps_its_frame_size() {
    let dir = tempfile::tempdir().unwrap();
    let clip = clip_with_audio(dir.path(), "a.wav", &wav_i16(44100, 2, &tone(44100, 10.0)));
    let frames = avseg::find_frames(&clip).unwrap();
    let small = image::open(&frames[3]).unwrap().resize_exact(97, 61, image::imageops::FilterType::Triangle);
    small.save(&frames[3]).unwrap();
    let out_dir = dir.path().join("out");
    let out = avseg(&["segment", "--model", p(&tiny_model()), "--clip", p(&clip), "--out", p(&out_dir)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stem = frames[3].file_stem().unwrap().to_str().unwrap();
    let mask = image::open(out_dir.join("masks").join(format!("{stem}.png"))).unwrap();
    assert_eq!((mask.width(), mask.height()), (97, 61));
}

// ---- bad model packages -------------------------------------------------------------------

/// A copy of the tiny package whose manifest is edited by `edit`.
fn package_with(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
    let pkg = dir.join("pkg");
    std::fs::create_dir_all(&pkg).unwrap();
    for entry in std::fs::read_dir(tiny_model()).unwrap() {
        let e = entry.unwrap();
        std::fs::copy(e.path(), pkg.join(e.file_name())).unwrap();
    }
    let path = pkg.join("avseg.json");
    let mut m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut m);
    std::fs::write(&path, serde_json::to_string_pretty(&m).unwrap()).unwrap();
    pkg
}

fn expect_package_error(edit: impl FnOnce(&mut serde_json::Value), needles: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let pkg = package_with(dir.path(), edit);
    expect_error(&["info", "--model", p(&pkg)], needles);
}

#[test]
fn missing_manifest_field_names_the_field() {
    expect_package_error(|m| { m.as_object_mut().unwrap().remove("frames_per_clip"); }, &["avseg.json", "frames_per_clip"]);
    expect_package_error(|m| { m["vision"].as_object_mut().unwrap().remove("std"); }, &["avseg.json", "vision", "std"]);
}

#[test]
fn invalid_manifest_fields_name_the_field() {
    expect_package_error(|m| m["vision"]["resize"] = "lanczos".into(), &["avseg.json", "vision.resize", "lanczos"]);
    expect_package_error(|m| m["output"]["threshold"] = 1.5.into(), &["avseg.json", "output.threshold"]);
    expect_package_error(|m| m["vision"]["std"][1] = 0.0.into(), &["avseg.json", "vision.std[1]"]);
    expect_package_error(|m| m["schema_version"] = 7.into(), &["avseg.json", "schema_version"]);
    expect_package_error(|m| m["treshold"] = 0.3.into(), &["avseg.json", "treshold"]);
    expect_package_error(|m| m["graphs"]["segmenter"]["file"] = "../../etc/passwd".into(), &["graphs.segmenter.file"]);
}

#[test]
fn onnx_shapes_that_disagree_with_the_manifest_are_an_error() {
    expect_package_error(|m| { m["vision"]["width"] = 256.into(); m["vision"]["height"] = 256.into(); }, &["segmenter.onnx", "graphs.segmenter.inputs[0]", "frames", "[5,3,224,224]", "[5|N,3,256,256]"]);
    expect_package_error(|m| m["audio"]["embedding_dim"] = 64.into(), &["audio_encoder.onnx", "graphs.audio_encoder.outputs[0]"]);
    expect_package_error(|m| m["graphs"]["segmenter"]["inputs"][1] = "audio".into(), &["segmenter.onnx", "no input named \"audio\""]);
}

#[test]
fn non_onnx_graph_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    // Without a recorded size and checksum (an older package), the bytes reach the ONNX parser.
    let pkg = package_with(dir.path(), |m| {
        let seg = m["graphs"]["segmenter"].as_object_mut().unwrap();
        seg.remove("size");
        seg.remove("checksum");
    });
    std::fs::write(pkg.join("segmenter.onnx"), b"PNG? no. just bytes that are not protobuf \xff\xfe").unwrap();
    expect_error(&["info", "--model", p(&pkg)], &["segmenter.onnx", "ONNX"]);
}

/// One flipped bit in a graph file: loading, `segment` and `verify` all name the file, and
/// `verify` tells the damaged file from the intact one.
#[test]
fn a_damaged_graph_file_is_found_by_its_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let pkg = package_with(dir.path(), |_| {});
    let out = avseg(&["verify", "--model", p(&pkg)]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout.matches("ok ").count(), 2, "{stdout}");

    let graph = pkg.join("segmenter.onnx");
    let mut bytes = std::fs::read(&graph).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x04;
    std::fs::write(&graph, &bytes).unwrap();
    expect_error(&["info", "--model", p(&pkg)], &["segmenter.onnx", "graphs.segmenter.checksum", "damaged"]);
    expect_error(
        &["segment", "--model", p(&pkg), "--clip", p(&sample()), "--out", p(&dir.path().join("o"))],
        &["segmenter.onnx", "checksum"],
    );
    let out = avseg(&["verify", "--model", p(&pkg)]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("ok ") && stdout.contains("audio_encoder.onnx"), "{stdout}");
    assert!(stdout.contains("DAMAGED") && stdout.contains("segmenter.onnx"), "{stdout}");

    // A cut-short copy is found from the size alone.
    std::fs::write(&graph, &bytes[..middle]).unwrap();
    expect_error(&["info", "--model", p(&pkg)], &["segmenter.onnx", "graphs.segmenter.size", "bytes"]);
    // With checks off (a user who knows), the damaged file is still read as ONNX and fails there.
    expect_error(&["info", "--model", p(&pkg), "--no-verify"], &["segmenter.onnx", "graphs.segmenter.size"]);
}

#[test]
fn a_malformed_checksum_names_the_field() {
    expect_package_error(
        |m| m["graphs"]["segmenter"]["checksum"] = "md5:0123".into(),
        &["avseg.json", "graphs.segmenter.checksum", "md5"],
    );
}

#[test]
fn missing_model_folder_is_an_error() {
    expect_error(&["info", "--model", "/nonexistent/model"], &["/nonexistent/model"]);
}

#[test]
fn bench_clip_light() {
    let out = avseg(&["bench", "--model", p(&tiny_model()), "--clip", p(&sample()), "--runs", "2"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for needle in ["per clip      median", "front end", "audio enc.", "segmenter", "post", "peak RSS"] {
        assert!(stdout.contains(needle), "missing {needle:?} in:\n{stdout}");
    }
}

#[test]
fn bench_stream_light() {
    let out = avseg(&[
        "bench", "--stream", "--model", p(&tiny_model()), "--clip", p(&sample()), "--frames", "60", "--fps", "10",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // 6 s of stream: instants at 0.9375 .. 5.9375 s, one full window of 5.
    assert!(stdout.contains("used 6, skipped 54"), "{stdout}");
    assert!(stdout.contains("dropped 0"), "{stdout}");
    assert!(stdout.contains("RSS start") && stdout.contains("| end "), "{stdout}");
    assert!(stdout.contains("latency, newest frame"), "{stdout}");
}

#[test]
fn bench_bad_arguments() {
    expect_error(&["bench", "--stream", "--model", p(&tiny_model()), "--clip", p(&sample()), "--fps", "0"], &["--fps"]);
    expect_error(&["bench", "--model", p(&tiny_model()), "--clip", "/nonexistent/clip"], &["/nonexistent/clip"]);
}
