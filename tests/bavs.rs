//! Two-stage (BAVS-style) packages end to end, on `models/tiny-bavs`, whose weights are set by
//! hand (`tools/avseg_tools/make_tiny_bavs.py`): red pixels are dogs, blue cats, green cars; a
//! 500 Hz tone is a bark, 1.5 kHz a meow, 4 kHz an engine, loud noise wind. The label tree keeps
//! an object only when a heard sound can come from its class. Frames and sounds are made here.

use std::path::PathBuf;

use avseg::{ClipInput, Engine, EngineOptions, Frame, Pcm, Session, SessionOptions, SoundingObject};
use image::{Rgb, RgbImage};

fn model() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/tiny-bavs")
}

/// A 128x96 grey frame with filled squares of the given colours at the given left edges.
fn frame(squares: &[([u8; 3], u32)]) -> RgbImage {
    let mut img = RgbImage::from_pixel(128, 96, Rgb([128, 128, 128]));
    for &(colour, x0) in squares {
        for y in 30..60 {
            for x in x0..x0 + 24 {
                img.put_pixel(x, y, Rgb(colour));
            }
        }
    }
    img
}

const RED: [u8; 3] = [255, 0, 0];
const BLUE: [u8; 3] = [0, 0, 255];

/// 6 s of 16 kHz audio: the sum of 0.3-amplitude tones, or loud noise for `noise`.
fn sound(tones: &[f32], noise: bool) -> Pcm {
    let mut state = 12345u32;
    let samples = (0..96_000)
        .map(|i| {
            let t = i as f32 / 16_000.0;
            let mut v: f32 = tones.iter().map(|hz| 0.3 * (2.0 * std::f32::consts::PI * hz * t).sin()).sum();
            if noise {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                v += 0.5 * ((state >> 8) as f32 / (1u32 << 24) as f32 - 0.5);
            }
            v
        })
        .collect();
    Pcm { samples, rate: 16_000 }
}

fn clip(img: &RgbImage, audio: Pcm) -> ClipInput {
    let frames = (0..5).map(|i| Frame { image: img.clone(), source: PathBuf::from(format!("frame{i}")) }).collect();
    ClipInput { frames, audio, audio_source: PathBuf::from("generated") }
}

fn names(objects: &[SoundingObject]) -> Vec<(String, Option<String>)> {
    objects.iter().map(|o| (o.label.clone().unwrap_or_default(), o.sound.as_ref().map(|s| s.tag.clone()))).collect()
}

fn owned(v: &[(&str, Option<&str>)]) -> Vec<(String, Option<String>)> {
    v.iter().map(|(a, b)| (a.to_string(), b.map(str::to_string))).collect()
}

/// A dog and a cat side by side; what is kept depends on what is heard.
#[test]
fn the_label_tree_keeps_the_objects_a_heard_sound_can_come_from() {
    let mut engine = Engine::load(model(), &EngineOptions::default()).unwrap();
    let two = engine.package().two_stage().expect("a two-stage package");
    assert_eq!(two.audio_labels, ["bark", "meow", "engine", "wind"]);
    let img = frame(&[(RED, 10), (BLUE, 90)]);
    let dog_pixels = 24 * 30;
    let cases: [(&str, Vec<f32>, bool, Vec<(&str, Option<&str>)>, Vec<&str>); 6] = [
        ("bark", vec![500.0], false, vec![("dog", Some("bark"))], vec!["cat"]),
        ("meow", vec![1500.0], false, vec![("cat", Some("meow"))], vec!["dog"]),
        ("bark and meow", vec![500.0, 1500.0], false, vec![("dog", Some("bark")), ("cat", Some("meow"))], vec![]),
        // An engine with no car in sight (off-screen), wind (no visible source), silence.
        ("engine", vec![4000.0], false, vec![], vec!["dog", "cat"]),
        ("wind", vec![], true, vec![], vec!["dog", "cat"]),
        ("silence", vec![], false, vec![], vec!["dog", "cat"]),
    ];
    for (name, tones, noise, kept, silent) in cases {
        let out = engine.run_clip(&clip(&img, sound(&tones, noise))).unwrap();
        let tags = out.tags.as_ref().expect("a two-stage clip reports its tags");
        assert_eq!(tags.shape(), [5, 4]);
        for f in &out.frames {
            let mut got = names(&f.objects);
            got.sort();
            let mut want = owned(&kept);
            want.sort();
            assert_eq!(got, want, "{name}: kept objects");
            let mut dropped: Vec<String> = f.silent_objects.iter().map(|o| o.label.clone().unwrap()).collect();
            dropped.sort();
            let mut want_silent: Vec<String> = silent.iter().map(|s| s.to_string()).collect();
            want_silent.sort();
            assert_eq!(dropped, want_silent, "{name}: silent objects");
            assert!(f.silent_objects.iter().all(|o| o.sound.is_none()));
            for o in &f.objects {
                let s = o.sound.as_ref().unwrap();
                assert!(s.score > 0.8 && o.confidence > 0.9, "{name}: {o:?}");
                assert_eq!(o.area, dog_pixels);
            }
            // The mask shows the kept objects only.
            let foreground = f.mask.labels.iter().filter(|&&l| l != 0).count() as u64;
            assert_eq!(foreground, kept.len() as u64 * dog_pixels, "{name}: foreground pixels");
            let ids: Vec<u32> = f.objects.iter().map(|o| o.id).collect();
            assert_eq!(ids, (1..=f.objects.len() as u32).collect::<Vec<_>>(), "{name}: ids renumbered");
        }
    }
}

/// Two dogs and a bark: a tag whose visual class appears twice keeps both.
#[test]
fn one_sound_keeps_every_object_of_its_class() {
    let mut engine = Engine::load(model(), &EngineOptions::default()).unwrap();
    let out = engine.run_clip(&clip(&frame(&[(RED, 10), (RED, 90)]), sound(&[500.0], false))).unwrap();
    let f = &out.frames[0];
    assert_eq!(names(&f.objects), owned(&[("dog", Some("bark")), ("dog", Some("bark"))]));
    assert!(f.silent_objects.is_empty());
}

/// The streaming session runs a two-stage package one frame at a time, with the same verdicts.
#[test]
fn a_session_streams_a_two_stage_package_per_frame() {
    let mut s = Session::new(model(), &SessionOptions::default()).unwrap();
    assert!(s.per_frame(), "two-stage packages have independent frames");
    let img = frame(&[(RED, 10), (BLUE, 90)]);
    let audio = sound(&[1500.0], false);
    let mut next = 0u32;
    for (i, chunk) in audio.samples.chunks(160).enumerate() {
        s.push_audio(chunk, 16_000, 1, i as f64 * 0.01).unwrap();
        let now = (i + 1) as f64 * 0.01;
        while next < 5 && next as f64 + 0.9375 <= now {
            s.push_frame(img.as_raw(), img.width(), img.height(), next as f64 + 0.9375).unwrap();
            next += 1;
        }
        s.process().unwrap();
    }
    s.finish().unwrap();
    let mut results = 0;
    while let Some(r) = s.pop_result() {
        results += 1;
        assert_eq!(names(&r.objects), owned(&[("cat", Some("meow"))]), "instant {}", r.sequence);
        assert_eq!(r.silent_objects.len(), 1);
        assert_eq!(r.silent_objects[0].label.as_deref(), Some("dog"));
    }
    assert_eq!(results, 5);
}

/// Post-processing a two-stage package's logits without its tags is an error, not a guess.
#[test]
fn post_processing_needs_the_tags() {
    let mut engine = Engine::load(model(), &EngineOptions::default()).unwrap();
    let c = clip(&frame(&[(RED, 10)]), sound(&[500.0], false));
    let out = engine.run_clip(&c).unwrap();
    let e = engine.post_process(&c, &out.logits).unwrap_err().to_string();
    assert!(e.contains("tag probabilities"), "{e}");
    let again = engine.post_process_tagged(&c, &out.logits, out.tags.as_ref()).unwrap();
    assert_eq!(names(&again[0].objects), names(&out.frames[0].objects));
}

/// A copy of the tiny package in a temporary folder, with `edit` applied to the named file.
fn edited(file: &str, edit: impl FnOnce(String) -> String) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(model()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    let path = dir.path().join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, edit(text)).unwrap();
    dir
}

/// The tiny package with the heard-mass pixel rule in its manifest.
fn heard_mass_package(silent_ratio: f32) -> tempfile::TempDir {
    edited("avseg.json", |t| {
        let key = "\"audio_labels\": \"audio_labels.txt\"";
        assert!(t.contains(key));
        t.replace(key, &format!("{key}, \"pixel_rule\": {{\"kind\": \"heard_mass\", \"silent_ratio\": {silent_ratio}}}"))
    })
}

/// Under the heard-mass pixel rule, clean colour squares (each pixel's classes far apart) keep
/// and drop the same objects as under the arg-max rule, and `avseg eval`'s scores
/// (`two_stage_logits`) are above 0.5 exactly on the mask, for both rules. (Where the rules part,
/// on mixed class probabilities, is `post::mask`'s unit test.)
#[test]
fn the_heard_mass_rule_keeps_what_the_arg_max_rule_keeps_on_clean_colours() {
    let dir = heard_mass_package(0.1);
    let rule = avseg::ModelPackage::load(dir.path()).unwrap().two_stage().unwrap().pixel_rule;
    assert_eq!(rule, avseg::PixelRule::HeardMass { silent_ratio: 0.1 });
    let mut arg_max = Engine::load(model(), &EngineOptions::default()).unwrap();
    assert_eq!(arg_max.package().two_stage().unwrap().pixel_rule, avseg::PixelRule::ArgMax);
    let mut heard_mass = Engine::load(dir.path(), &EngineOptions::default()).unwrap();
    // 64x64 frames, the model's size: the mask is the model-resolution decision pixel for pixel.
    let mut img = RgbImage::from_pixel(64, 64, Rgb([128, 128, 128]));
    for (colour, x0) in [(RED, 4), (BLUE, 36)] {
        for y in 20..44 {
            for x in x0..x0 + 20 {
                img.put_pixel(x, y, Rgb(colour));
            }
        }
    }
    for tones in [vec![500.0], vec![1500.0], vec![500.0, 1500.0], vec![4000.0], vec![]] {
        let c = clip(&img, sound(&tones, false));
        let a = arg_max.run_clip(&c).unwrap();
        let h = heard_mass.run_clip(&c).unwrap();
        for (engine, out) in [(&arg_max, &a), (&heard_mass, &h)] {
            let scores = engine.two_stage_logits(&out.logits, out.tags.as_ref().unwrap()).unwrap();
            for (i, f) in out.frames.iter().enumerate() {
                let kept: Vec<bool> = scores.item(i).iter().map(|&l| l > 0.0).collect();
                let shown: Vec<bool> = f.mask.labels.iter().map(|&l| l != 0).collect();
                assert_eq!(kept, shown, "tones {tones:?}, frame {i}: scores and mask differ");
            }
        }
        for (fa, fh) in a.frames.iter().zip(&h.frames) {
            assert_eq!(names(&fh.objects), names(&fa.objects), "tones {tones:?}: kept objects");
            assert_eq!(names(&fh.silent_objects), names(&fa.silent_objects), "tones {tones:?}: silent objects");
            assert_eq!(fh.mask.labels, fa.mask.labels, "tones {tones:?}: masks");
        }
    }
}

/// Loading checks the whole two-stage package and names the file and the field on each error.
#[test]
fn loading_names_the_file_and_field_of_each_error() {
    let load_err = |dir: &tempfile::TempDir| avseg::ModelPackage::load(dir.path()).unwrap_err().to_string();
    let cases: Vec<(&str, Box<dyn Fn(String) -> String>, &[&str])> = vec![
        // One label more than the tagger scores: a label no output covers.
        ("audio_labels.txt", Box::new(|t: String| t + "rain\n"), &["tagger.onnx", "graphs.audio_tagger.outputs[0]"]),
        ("audio_labels.txt", Box::new(|t: String| t.replace("wind", "bark")), &["audio_labels.txt", "line 4", "repeats \"bark\""]),
        ("audio_labels.txt", Box::new(|t: String| t.replace("meow\n", "\n")), &["audio_labels.txt", "line 2", "empty"]),
        ("tree.json", Box::new(|t: String| t.replace("\"cat\"", "\"tiger\"")), &["tree.json", "tiger"]),
        ("tree.json", Box::new(|t: String| t.replace("\"name\": \"vehicle\"", "\"name\": \"vehicle\", \"parent\": \"engine\"")), &["tree.json", "cycle"]),
        ("avseg.json", Box::new(|t: String| t.replace("\"audio_labels\": \"audio_labels.txt\"", "\"audio_labels\": \"../labels.txt\"")), &["avseg.json", "label_tree.audio_labels", "inside the package"]),
        ("avseg.json", Box::new(|t: String| t.replace("\"family\": \"bavs\"", "\"family\": \"avsegformer\"")), &["avseg.json", "graphs.audio_tagger", "only bavs"]),
        ("avseg.json", Box::new(|t: String| t.replace("\"audio_tagger\"", "\"audio_encoder\"")), &["avseg.json", "graphs.audio_encoder"]),
        ("avseg.json", Box::new(|t: String| {
            let start = t.find(",\n  \"label_tree\"").unwrap();
            let end = t[start..].find('}').unwrap() + start + 1;
            format!("{}{}", &t[..start], &t[end..])
        }), &["avseg.json", "label_tree", "is missing"]),
        ("avseg.json", Box::new(|t: String| t.replace("\"audio_labels\": \"audio_labels.txt\"", "\"audio_labels\": \"audio_labels.txt\", \"pixel_rule\": {\"kind\": \"heard_mass\", \"silent_ratio\": -0.5}")), &["avseg.json", "label_tree.pixel_rule.silent_ratio", "-0.5"]),
        ("avseg.json", Box::new(|t: String| t.replace("\"audio_labels\": \"audio_labels.txt\"", "\"audio_labels\": \"audio_labels.txt\", \"pixel_rule\": {\"kind\": \"soft\"}")), &["avseg.json", "soft"]),
    ];
    for (file, edit, want) in cases {
        let dir = edited(file, edit);
        let e = load_err(&dir);
        for w in want {
            assert!(e.contains(w), "{file}: error {e:?} should mention {w:?}");
        }
    }
}
