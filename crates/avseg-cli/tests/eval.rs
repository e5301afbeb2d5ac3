//! `avseg eval` end to end on tiny AVSBench-layout datasets built at test time: the model path and
//! the saved-logits path must agree exactly; reports are complete; broken datasets fail once,
//! listing what is wrong.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn avseg(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_avseg")).args(args).output().expect("run avseg")
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = avseg(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "avseg {args:?} failed: {stderr}");
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// One `error:` line containing every needle, exit code 1, no panic.
fn expect_error(args: &[&str], needles: &[&str]) -> String {
    let out = avseg(args);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "want one error line: {stderr}");
    for n in needles {
        assert!(lines[0].contains(n), "error should mention {n:?}: {stderr}");
    }
    lines[0].to_string()
}

fn sample_frame(i: usize) -> image::RgbImage {
    let img = image::open(repo().join(format!("models/sample/frames/sample_{i}.png"))).unwrap().to_rgb8();
    image::imageops::resize(&img, 224, 224, image::imageops::FilterType::Triangle)
}

fn write_wav(path: &Path, seconds: f32, freq: f32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let spec = hound::WavSpec { channels: 1, sample_rate: 16000, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for i in 0..(16000.0 * seconds) as usize {
        w.write_sample(((i as f32 * freq * std::f32::consts::TAU / 16000.0).sin() * 8000.0) as i16).unwrap();
    }
    w.finalize().unwrap();
}

/// A 224×224 0/255 mask with a rectangle (empty when `size` is 0).
fn write_mask(path: &Path, x0: u32, y0: u32, size: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let img = image::GrayImage::from_fn(224, 224, |x, y| {
        image::Luma([if x >= x0 && x < x0 + size && y >= y0 && y < y0 + size { 255 } else { 0 }])
    });
    img.save(path).unwrap();
}

fn save_frame(path: &Path, img: &image::RgbImage) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    img.save(path).unwrap();
}

const VIDEOS: [(&str, &str); 3] = [("vidA", "dog_barking"), ("vidB", "male_speech"), ("vidC", "dog_barking")];

/// `Single-source/` with 3 test videos (plus a train row that must be ignored). Video B's third
/// frame has an empty GT.
fn make_s4(root: &Path) -> PathBuf {
    let ss = root.join("Single-source");
    let d = ss.join("s4_data");
    let mut csv = String::from("name,start_time,category,split\n");
    csv.push_str("trainvid,0,dog_barking,train\n");
    let frames: Vec<_> = (1..=5).map(sample_frame).collect();
    for (v, (name, cat)) in VIDEOS.iter().enumerate() {
        csv.push_str(&format!("{name},{},{cat},test\n", v + 1));
        for i in 1..=5usize {
            save_frame(&d.join(format!("visual_frames/test/{cat}/{name}/{name}_{i}.png")), &frames[(i + v) % 5]);
            let size = if v == 1 && i == 3 { 0 } else { 40 + 20 * v as u32 };
            write_mask(&d.join(format!("gt_masks/test/{cat}/{name}/{name}_{i}.png")), 10 * i as u32, 30, size);
        }
        write_wav(&d.join(format!("audio_wav/test/{cat}/{name}.wav")), 5.0, 300.0 + 100.0 * v as f32);
    }
    std::fs::write(ss.join("s4_meta_data.csv"), csv).unwrap();
    ss
}

/// `Multi-sources/` with 2 test videos: frames without a split folder, `.mp4_` in their names.
fn make_ms3(root: &Path) -> PathBuf {
    let ms = root.join("Multi-sources");
    let d = ms.join("ms3_data");
    let mut csv = String::from("video_id,split\n");
    let frames: Vec<_> = (1..=5).map(sample_frame).collect();
    for (v, name) in ["m1", "m2"].iter().enumerate() {
        csv.push_str(&format!("{name},test\n"));
        for i in 1..=5usize {
            save_frame(&d.join(format!("visual_frames/{name}/{name}.mp4_{i}.png")), &frames[(i + 2 * v) % 5]);
            write_mask(&d.join(format!("gt_masks/test/{name}/{name}_{i}.png")), 60, 20 * i as u32, 70);
        }
        write_wav(&d.join(format!("audio_wav/test/{name}.wav")), 5.0, 500.0);
    }
    std::fs::write(ms.join("ms3_meta_data.csv"), csv).unwrap();
    ms
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn s4_model_and_saved_logits_agree() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = make_s4(tmp.path());
    let model = repo().join("models/tiny-tpavi");
    let out1 = tmp.path().join("run_model");
    let table = ok(&[
        "eval", "--model", p(&model), "--dataset", p(tmp.path()), "--subset", "s4", "--split", "test",
        "--out", p(&out1), "--save-logits",
    ]);
    assert!(table.contains("J  mIoU (official") && table.contains("batch-independent"), "{table}");
    for v in VIDEOS {
        assert!(out1.join(format!("logits/{}.npy", v.0)).is_file());
    }
    let out2 = tmp.path().join("run_logits");
    ok(&[
        "eval", "--logits", p(&out1.join("logits")), "--dataset", p(&ds), "--subset", "s4", "--out", p(&out2),
    ]);
    let a = read_json(&out1.join("eval.json"));
    let b = read_json(&out2.join("eval.json"));
    for key in ["J", "F", "F_batch_independent"] {
        assert!(a[key].is_f64(), "{key} missing: {a}");
        assert_eq!(a[key], b[key], "{key}: model vs --logits");
    }
    assert_eq!(a["binary"], b["binary"]);
    assert_eq!(a["source"]["kind"], "model");
    assert_eq!(b["source"]["kind"], "logits");
    assert_eq!(a["subset"], "s4");
    assert_eq!(a["split"], "test");
    assert_eq!(a["videos"], 3);
    assert_eq!(a["frames"], 15);
    assert_eq!(a["batch"]["videos"], 4);
    assert_eq!(a["batch"]["frames"], 20);
    assert_eq!(a["binary"]["empty_gt_frames"], 1);
    assert_eq!(a["binary"]["batches"], 1);
    let j = a["J"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&j));
    // One batch holding every frame: the official F equals the batch-independent one.
    assert!((a["F"].as_f64().unwrap() - a["F_batch_independent"].as_f64().unwrap()).abs() < 1e-6);

    let csv = std::fs::read_to_string(out1.join("per_video.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 4, "{csv}");
    assert!(lines[0].starts_with("video,group,frames,scored_frames,empty_gt_frames"), "{csv}");
    assert!(lines[2].starts_with("vidB,male_speech,5,5,1,"), "{csv}");

    let (h, w) = (a["logits_size"][0].as_u64().unwrap() as u32, a["logits_size"][1].as_u64().unwrap() as u32);
    let sheet = image::open(out1.join("worst_frames.png")).unwrap();
    assert_eq!((sheet.width(), sheet.height()), (3 * w, 15 * h));
    assert_eq!(a["worst_frames"].as_array().unwrap().len(), 15);

    // Batches of 1 video: per-video thresholds, a different official F, the same J.
    let out3 = tmp.path().join("batch1");
    ok(&[
        "eval", "--logits", p(&out1.join("logits")), "--dataset", p(&ds), "--subset", "s4", "--batch-videos", "1",
        "--out", p(&out3),
    ]);
    let c = read_json(&out3.join("eval.json"));
    assert!((c["J"].as_f64().unwrap() - j).abs() < 1e-12);
    assert_eq!(c["binary"]["batches"], 3);
    assert_eq!(c["F_batch_independent"], a["F_batch_independent"]);
}

#[test]
fn ms3_model_and_saved_logits_agree() {
    let tmp = tempfile::tempdir().unwrap();
    make_ms3(tmp.path());
    let model = repo().join("models/tiny-tpavi");
    let out1 = tmp.path().join("m");
    ok(&[
        "eval", "--model", p(&model), "--dataset", p(tmp.path()), "--subset", "ms3", "--out", p(&out1), "--save-logits",
        "--limit", "2",
    ]);
    let out2 = tmp.path().join("l");
    ok(&["eval", "--logits", p(&out1.join("logits")), "--dataset", p(tmp.path()), "--subset", "ms3", "--out", p(&out2)]);
    let a = read_json(&out1.join("eval.json"));
    let b = read_json(&out2.join("eval.json"));
    assert_eq!(a["J"], b["J"]);
    assert_eq!(a["F"], b["F"]);
    assert_eq!(a["frames"], 10);
    assert_eq!(a["binary"]["empty_gt_frames"], 0);
}

#[test]
fn incomplete_dataset_lists_everything_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = make_s4(tmp.path());
    let d = ds.join("s4_data");
    std::fs::remove_file(d.join("visual_frames/test/dog_barking/vidA/vidA_3.png")).unwrap();
    std::fs::remove_file(d.join("gt_masks/test/male_speech/vidB/vidB_5.png")).unwrap();
    std::fs::remove_file(d.join("audio_wav/test/dog_barking/vidC.wav")).unwrap();
    let model = repo().join("models/tiny-tpavi");
    let line = expect_error(
        &["eval", "--model", p(&model), "--dataset", p(&ds), "--subset", "s4", "--out", p(&tmp.path().join("o"))],
        &["3 missing", "vidA_3.png", "vidB_5.png", "vidC.wav", "Single-source"],
    );
    assert!(!line.contains("more"), "{line}");
}

#[test]
fn many_missing_files_are_listed_up_to_a_count() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = make_s4(tmp.path());
    std::fs::remove_dir_all(ds.join("s4_data/visual_frames")).unwrap();
    let line = expect_error(&["eval", "--logits", p(tmp.path()), "--dataset", p(&ds), "--subset", "s4"], &["15 missing"]);
    assert!(!line.contains("more"), "{line}");
    std::fs::remove_dir_all(ds.join("s4_data/gt_masks")).unwrap();
    expect_error(&["eval", "--logits", p(tmp.path()), "--dataset", p(&ds), "--subset", "s4"], &["30 missing", "and 10 more"]);
}

#[test]
fn mislabelled_split_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = make_s4(tmp.path());
    let csv = ds.join("s4_meta_data.csv");
    let text = std::fs::read_to_string(&csv).unwrap().replace("vidB,2,male_speech,test", "vidB,2,male_speech,tset");
    std::fs::write(&csv, text).unwrap();
    expect_error(
        &["eval", "--logits", p(tmp.path()), "--dataset", p(&ds), "--subset", "s4"],
        &["s4_meta_data.csv", "\"tset\"", "line 4"],
    );
    // A subset whose CSV is absent names the folder.
    expect_error(&["eval", "--logits", p(tmp.path()), "--dataset", p(&ds), "--subset", "ms3"], &["ms3_meta_data.csv"]);
}

/// Names from the CSV become paths, read and (with --save-logits) written: one that would climb out
/// of the data set folder is refused, naming the line.
#[test]
fn a_video_name_that_is_a_path_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = make_s4(tmp.path());
    let csv = ds.join("s4_meta_data.csv");
    let clean = std::fs::read_to_string(&csv).unwrap();
    for (from, to, needle) in [("vidB,2", "../../vidB,2", "\"../../vidB\""), ("male_speech,test", "..,test", "\"..\"")] {
        std::fs::write(&csv, clean.replacen(from, to, 1)).unwrap();
        expect_error(
            &["eval", "--logits", p(tmp.path()), "--dataset", p(&ds), "--subset", "s4"],
            &["s4_meta_data.csv", "line 4", needle, "not a plain file name"],
        );
    }
}

#[test]
fn wrong_logits_are_errors_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = make_s4(tmp.path());
    let logits = tmp.path().join("logits");
    std::fs::create_dir_all(&logits).unwrap();
    let w = |name: &str, shape: &[usize]| {
        let n = shape.iter().product();
        avseg::write_npy(&logits.join(name), shape, &vec![0.5f32; n]).unwrap();
    };
    w("vidA.npy", &[5, 1, 56, 56]);
    w("vidB.npy", &[5, 1, 56, 56]);
    expect_error(&["eval", "--logits", p(&logits), "--dataset", p(&ds), "--subset", "s4"], &["vidC.npy", "1 of 3"]);
    w("vidC.npy", &[4, 1, 56, 56]);
    expect_error(&["eval", "--logits", p(&logits), "--dataset", p(&ds), "--subset", "s4"], &["vidC.npy", "4 frames"]);
    w("vidC.npy", &[5, 2, 56, 56]);
    expect_error(&["eval", "--logits", p(&logits), "--dataset", p(&ds), "--subset", "s4"], &["vidC.npy", "2 channels"]);
}

/// GT at 224 against logits at 56: the GT is resized with nearest to the logits' size, and
/// perfect logits score J = F = 1.
#[test]
fn perfect_logits_at_lower_resolution_score_one() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = make_s4(tmp.path());
    let logits = tmp.path().join("logits");
    std::fs::create_dir_all(&logits).unwrap();
    for (v, (name, _)) in VIDEOS.iter().enumerate() {
        let mut data = Vec::new();
        for i in 1..=5u32 {
            let size = if v == 1 && i == 3 { 0 } else { 40 + 20 * v as u32 };
            let (x0, y0) = (10 * i, 30);
            for y in 0..56u32 {
                for x in 0..56u32 {
                    // Nearest sample at the centre of each 4×4 block: source pixel 4x+2.
                    let (sx, sy) = (4 * x + 2, 4 * y + 2);
                    let fg = sx >= x0 && sx < x0 + size && sy >= y0 && sy < y0 + size;
                    data.push(if fg { 6.0f32 } else { -6.0 });
                }
            }
        }
        avseg::write_npy(&logits.join(format!("{name}.npy")), &[5, 1, 56, 56], &data).unwrap();
    }
    let out = tmp.path().join("o");
    ok(&["eval", "--logits", p(&logits), "--dataset", p(&ds), "--subset", "s4", "--out", p(&out)]);
    let a = read_json(&out.join("eval.json"));
    assert!((a["J"].as_f64().unwrap() - 1.0).abs() < 1e-6, "{a}");
    assert!((a["F"].as_f64().unwrap() - 1.0).abs() < 1e-6, "{a}");
    assert_eq!(a["logits_size"], serde_json::json!([56, 56]));
    assert!((a["binary"]["miou_nonempty_gt"].as_f64().unwrap() - 1.0).abs() < 1e-6, "{a}");
    assert_eq!(a["binary"]["empty_gt_predicted_empty"], 1.0, "{a}");

    // The empty-GT frame (video 1, frame 3) now predicted 2 % foreground: no longer "predicted
    // empty", while the frames with foreground still score 1.
    let name = VIDEOS[1].0;
    let path = logits.join(format!("{name}.npy"));
    let mut data: Vec<f32> = npyz::NpyFile::new(std::fs::File::open(&path).unwrap()).unwrap().into_vec().unwrap();
    let frame = &mut data[2 * 56 * 56..3 * 56 * 56];
    for v in frame.iter_mut().take(63) {
        *v = 6.0; // 63 / 3136 = 2.0 %
    }
    avseg::write_npy(&path, &[5, 1, 56, 56], &data).unwrap();
    ok(&["eval", "--logits", p(&logits), "--dataset", p(&ds), "--subset", "s4", "--out", p(&out)]);
    let b = read_json(&out.join("eval.json"));
    assert_eq!(b["binary"]["empty_gt_predicted_empty"], 0.0, "{b}");
    assert!((b["binary"]["miou_nonempty_gt"].as_f64().unwrap() - 1.0).abs() < 1e-6, "{b}");
}

/// AVSS: one v1s clip (5 frames, padded to 10) and one v2 clip (10 frames), colour labels, scored
/// from one-hot logits: every present class gets IoU 1, absent classes count 0 of 71.
#[test]
fn avss_perfect_logits_and_padding() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("AVSS");
    let palette = avseg::voc_palette(71);
    let mut csv = String::from("vid,uid,s_min,s_sec,a_obj,split,label\n");
    let clips = [("u1", "v1s", 5usize, 17u8), ("u2", "v2", 10, 41)];
    let logits = tmp.path().join("logits");
    std::fs::create_dir_all(&logits).unwrap();
    let frame = sample_frame(1);
    for (uid, label, n, class) in clips {
        csv.push_str(&format!("x,{uid},0,0,y,test,{label}\n"));
        let d = root.join(label).join(uid);
        let mut data = vec![0f32; n * 71 * 32 * 32];
        for i in 0..n {
            save_frame(&d.join(format!("frames/{i}.jpg")), &frame);
            // 64×64 colour labels: the object in the top-left quarter.
            let img = image::RgbImage::from_fn(64, 64, |x, y| image::Rgb(if x < 32 && y < 32 { palette[class as usize] } else { [0, 0, 0] }));
            std::fs::create_dir_all(d.join("labels_rgb")).unwrap();
            img.save(d.join(format!("labels_rgb/{i}.png"))).unwrap();
            for y in 0..32 {
                for x in 0..32 {
                    let c = if x < 16 && y < 16 { class as usize } else { 0 };
                    data[((i * 71 + c) * 32 + y) * 32 + x] = 5.0;
                }
            }
        }
        write_wav(&d.join("audio.wav"), n as f32, 440.0);
        avseg::write_npy(&logits.join(format!("{uid}.npy")), &[n, 71, 32, 32], &data).unwrap();
    }
    std::fs::write(root.join("metadata.csv"), csv).unwrap();
    let out = tmp.path().join("o");
    let table = ok(&["eval", "--logits", p(&logits), "--dataset", p(tmp.path()), "--subset", "avss", "--out", p(&out)]);
    assert!(table.contains("padded frames"), "{table}");
    let a = read_json(&out.join("eval.json"));
    let want = 3.0 / 71.0;
    assert!((a["J"].as_f64().unwrap() - want).abs() < 1e-9, "{a}");
    assert!((a["F"].as_f64().unwrap() - want).abs() < 1e-9, "{a}");
    assert_eq!(a["avss"]["padded_frames"], 5);
    assert_eq!(a["avss"]["classes_present"], 3);
    assert_eq!(a["frames"], 15);
    assert!((a["avss"]["present"]["miou"].as_f64().unwrap() - 1.0).abs() < 1e-9);
    assert_eq!(a["avss"]["per_class"][41]["name"], "man");
    let sheet = image::open(out.join("worst_frames.png")).unwrap();
    assert_eq!((sheet.width(), sheet.height()), (96, 15 * 32));
}

/// A two-stage package (`models/tiny-bavs`: red = dog, blue = cat, 500 Hz = bark, 1.5 kHz = meow,
/// 4 kHz = engine) on an S4-layout set made here: a dog beside a cat in every frame, the ground
/// truth the sounding one. Heard and seen, the sounding animal scores high; an engine with no car
/// in sight keeps nothing, so J is 0 there.
#[test]
fn a_two_stage_package_is_scored_on_what_it_keeps() {
    let tmp = tempfile::tempdir().unwrap();
    let ss = tmp.path().join("Single-source");
    let d = ss.join("s4_data");
    let mut img = image::RgbImage::from_pixel(224, 224, image::Rgb([128, 128, 128]));
    for y in 56..112 {
        for x in 28..84 {
            img.put_pixel(x, y, image::Rgb([255, 0, 0]));
            img.put_pixel(x + 112, y, image::Rgb([0, 0, 255]));
        }
    }
    let mut csv = String::from("name,start_time,category,split\n");
    // (video, tone, x of the sounding animal's square)
    let videos = [("barkv", 500.0, 28), ("meowv", 1500.0, 140), ("enginev", 4000.0, 28)];
    for (name, hz, x0) in videos {
        csv.push_str(&format!("{name},0,animal,test\n"));
        for i in 1..=5usize {
            save_frame(&d.join(format!("visual_frames/test/animal/{name}/{name}_{i}.png")), &img);
            write_mask(&d.join(format!("gt_masks/test/animal/{name}/{name}_{i}.png")), x0, 56, 56);
        }
        write_wav(&d.join(format!("audio_wav/test/animal/{name}.wav")), 5.0, hz);
    }
    std::fs::write(ss.join("s4_meta_data.csv"), csv).unwrap();
    let out = tmp.path().join("o");
    ok(&[
        "eval", "--model", p(&repo().join("models/tiny-bavs")), "--dataset", p(tmp.path()), "--subset", "s4", "--out",
        p(&out), "--batch-videos", "1",
    ]);
    let csv = std::fs::read_to_string(out.join("per_video.csv")).unwrap();
    let miou = |name: &str| -> f64 {
        let line = csv.lines().find(|l| l.starts_with(&format!("{name},"))).unwrap_or_else(|| panic!("{csv}"));
        let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
        let col = header.iter().position(|h| *h == "miou").unwrap();
        line.split(',').nth(col).unwrap().parse().unwrap()
    };
    eprintln!("{csv}");
    assert!(miou("barkv") > 0.99, "{csv}");
    assert!(miou("meowv") > 0.99, "{csv}");
    assert_eq!(miou("enginev"), 0.0, "{csv}");
}
