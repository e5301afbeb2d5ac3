//! Evaluation outputs: `eval.json`, the per-video CSV, the contact sheet of the worst frames and
//! the terminal table.

use std::path::{Path, PathBuf};

use serde_json::json;

use super::dataset::{Subset, AVSS_CLASSES};
use super::{EvalError, EvalOutcome, Source};
use avseg::decode_image;
use avseg::voc_palette;

/// AVSS class names by model channel (docs/spec/datasets.md §11.1; alphabetical after background).
pub const AVSS_LABELS: [&str; AVSS_CLASSES] = [
    "background", "accordion", "airplane", "axe", "baby", "bassoon", "bell", "bird", "boat", "boy", "bus", "car",
    "cat", "cello", "clarinet", "clipper", "clock", "dog", "donkey", "drum", "duck", "elephant", "emergency-car",
    "erhu", "flute", "frying-food", "girl", "goose", "guitar", "gun", "guzheng", "hair-dryer", "handpan",
    "harmonica", "harp", "helicopter", "hen", "horse", "keyboard", "leopard", "lion", "man", "marimba",
    "missile-rocket", "motorcycle", "mower", "parrot", "piano", "pig", "pipa", "saw", "saxophone", "sheep", "sitar",
    "sorna", "squirrel", "tabla", "tank", "tiger", "tractor", "train", "trombone", "truck", "trumpet", "tuba",
    "ukulele", "utv", "vacuum-cleaner", "violin", "wolf", "woman",
];

pub const EVAL_JSON: &str = "eval.json";
pub const VIDEOS_CSV: &str = "per_video.csv";
pub const CONTACT_SHEET: &str = "worst_frames.png";

fn write_err(path: &Path, e: impl std::fmt::Display) -> EvalError {
    EvalError::Write { path: path.to_path_buf(), detail: e.to_string() }
}

/// The headline pair: J (mIoU) and the official F.
pub fn headline(o: &EvalOutcome) -> (f64, f64) {
    match (&o.binary, &o.avss) {
        (Some(b), _) => (b.miou, b.fscore),
        (None, Some(a)) => (a.miou, a.fscore),
        _ => (0.0, 0.0),
    }
}

/// The `eval.json` document (schema in the README's Evaluation section).
pub fn eval_json(o: &EvalOutcome) -> serde_json::Value {
    let (j, f) = headline(o);
    let (kind, path) = match &o.source {
        Source::Model(p) => ("model", p),
        Source::Logits(p) => ("logits", p),
    };
    let binary = o.binary.as_ref().map(|b| {
        json!({
            "miou": b.miou,
            "miou_frame_mean": b.miou_frame_mean,
            "fscore": b.fscore,
            "fscore_batch_independent": b.fscore_batch_independent,
            "batches": b.batches,
            "empty_gt_frames": b.empty_gt_frames,
            "miou_nonempty_gt": b.miou_nonempty_gt,
            "empty_gt_predicted_empty": b.empty_gt_predicted_empty,
        })
    });
    let avss = o.avss.as_ref().map(|a| {
        let np = o.avss_no_padding.as_ref().unwrap_or(a);
        let per_class: Vec<_> = (0..AVSS_CLASSES)
            .map(|c| {
                json!({"class": c, "name": AVSS_LABELS[c], "iou": a.per_class_iou[c], "fscore": a.per_class_f[c]})
            })
            .collect();
        json!({
            "miou": a.miou,
            "fscore": a.fscore,
            "present": {"miou": a.miou_present, "fscore": a.fscore_present},
            "no_padding": {"miou": np.miou, "fscore": np.fscore},
            "no_background": {"miou": a.miou_no_background, "fscore": a.fscore_no_background},
            "official_nobg_quirk": {"miou": a.miou_nobg_official, "fscore": a.fscore_nobg_official},
            "classes_present": a.classes_present,
            "padded_frames": o.padded_frames,
            "per_class": per_class,
        })
    });
    let worst: Vec<_> = o
        .worst
        .iter()
        .map(|w| {
            let v = &o.videos_list[w.video];
            json!({"video": v.name, "frame": w.frame, "score": w.score, "source": v.frames[w.frame].display().to_string()})
        })
        .collect();
    json!({
        "format": "avseg-eval",
        "schema_version": 1,
        "subset": o.subset.as_str(),
        "split": o.split.as_str(),
        "dataset": o.dataset_root.display().to_string(),
        "source": {"kind": kind, "path": path.display().to_string()},
        "videos": o.videos.len(),
        "frames": o.frames,
        "logits_size": [o.logits_size.0, o.logits_size.1],
        "batch": {"videos": o.batch_videos, "frames": o.batch_videos * o.frames_per_video},
        "J": j,
        "F": f,
        "F_batch_independent": o.binary.as_ref().map(|b| b.fscore_batch_independent),
        "binary": binary,
        "avss": avss,
        "worst_frames": worst,
    })
}

#[derive(serde::Serialize)]
struct VideoRow<'a> {
    video: &'a str,
    group: &'a str,
    frames: usize,
    scored_frames: usize,
    empty_gt_frames: usize,
    padded_frames: usize,
    miou: f64,
    fscore: f64,
}

/// Writes `eval.json`, `per_video.csv` and `worst_frames.png` into `out`; returns their paths.
pub fn write_all(o: &EvalOutcome, out: &Path) -> Result<Vec<PathBuf>, EvalError> {
    std::fs::create_dir_all(out).map_err(|e| write_err(out, e))?;
    let json_path = out.join(EVAL_JSON);
    let text = serde_json::to_string_pretty(&eval_json(o)).map_err(|e| write_err(&json_path, e))?;
    std::fs::write(&json_path, text + "\n").map_err(|e| write_err(&json_path, e))?;

    let csv_path = out.join(VIDEOS_CSV);
    write_video_csv(o, &csv_path)?;
    let sheet = out.join(CONTACT_SHEET);
    write_contact_sheet(o, &sheet)?;
    Ok(vec![json_path, csv_path, sheet])
}

/// One row per video. S4/MS3: `miou` is the mean frame IoU and `fscore` the official F of the
/// video's frames as one batch. AVSS: both are over the classes present in the video.
pub fn write_video_csv(o: &EvalOutcome, path: &Path) -> Result<(), EvalError> {
    let mut w = csv::Writer::from_path(path).map_err(|e| write_err(path, e))?;
    for v in &o.videos {
        w.serialize(VideoRow {
            video: &v.name,
            group: &v.group,
            frames: v.frames,
            scored_frames: v.scored_frames,
            empty_gt_frames: v.empty_gt_frames,
            padded_frames: v.padded_frames,
            miou: v.miou,
            fscore: v.fscore,
        })
        .map_err(|e| write_err(path, e))?;
    }
    w.flush().map_err(|e| write_err(path, e))
}

/// The worst frames, worst first, one row each: frame | ground truth | prediction, every tile at
/// the logits' resolution. The image is (3·w) × (rows·h).
pub fn write_contact_sheet(o: &EvalOutcome, path: &Path) -> Result<(), EvalError> {
    let (h, w) = o.logits_size;
    let rows = o.worst.len().max(1);
    let (w32, h32) = (w.max(1) as u32, h.max(1) as u32);
    let mut sheet = image::RgbImage::new(3 * w32, rows as u32 * h32);
    let colours: Vec<[u8; 3]> = match o.subset {
        Subset::Avss => voc_palette(AVSS_CLASSES),
        _ => vec![[0, 0, 0], [255, 255, 255]],
    };
    for (r, s) in o.worst.iter().enumerate() {
        let y0 = r as u32 * h32;
        let src = &o.videos_list[s.video].frames[s.frame];
        let frame = decode_image(src).map_err(|e| write_err(path, e))?;
        let frame = image::imageops::resize(&frame, w32, h32, image::imageops::FilterType::Triangle);
        image::imageops::replace(&mut sheet, &frame, 0, y0 as i64);
        for (col, labels) in [(1u32, &s.gt), (2u32, &s.pred)] {
            for (i, &l) in labels.iter().enumerate() {
                let (x, y) = ((i % w) as u32, (i / w) as u32);
                let c = colours.get(l as usize).copied().unwrap_or([255, 255, 255]);
                sheet.put_pixel(col * w32 + x, y0 + y, image::Rgb(c));
            }
        }
    }
    sheet.save_with_format(path, image::ImageFormat::Png).map_err(|e| write_err(path, e))
}

/// The final table printed by `avseg eval`.
pub fn table(o: &EvalOutcome) -> String {
    let mut rows: Vec<(String, String)> = Vec::new();
    let t = o.frames_per_video;
    match (&o.binary, &o.avss) {
        (Some(b), _) => {
            let batch = format!("batch {} videos = {} frames", o.batch_videos, o.batch_videos * t);
            rows.push((format!("J  mIoU (official, {batch})"), format!("{:.4}", b.miou)));
            rows.push(("F  official (per-batch threshold max)".into(), format!("{:.4}", b.fscore)));
            rows.push(("F  batch-independent (avseg; not official)".into(), format!("{:.4}", b.fscore_batch_independent)));
            rows.push(("empty-GT frames".into(), b.empty_gt_frames.to_string()));
            if let Some(v) = b.miou_nonempty_gt {
                rows.push(("J  over non-empty-GT frames (avseg)".into(), format!("{v:.4}")));
            }
            if let Some(v) = b.empty_gt_predicted_empty {
                rows.push(("empty-GT frames predicted empty (<1 % fg)".into(), format!("{:.1} %", 100.0 * v)));
            }
        }
        (None, Some(a)) => {
            rows.push(("J  mIoU (official, 71 classes incl. bg, padded)".into(), format!("{:.4}", a.miou)));
            rows.push(("F  official (71 classes incl. bg, padded)".into(), format!("{:.4}", a.fscore)));
            if let Some(np) = &o.avss_no_padding {
                rows.push(("J / F  without padded frames (avseg)".into(), format!("{:.4} / {:.4}", np.miou, np.fscore)));
            }
            rows.push((
                "J / F  without background (avseg)".into(),
                format!("{:.4} / {:.4}", a.miou_no_background, a.fscore_no_background),
            ));
            rows.push((
                "J / F  official noBg quirk (drops last class)".into(),
                format!("{:.4} / {:.4}", a.miou_nobg_official, a.fscore_nobg_official),
            ));
            rows.push(("classes present".into(), a.classes_present.to_string()));
            rows.push(("padded frames".into(), o.padded_frames.to_string()));
        }
        _ => {}
    }
    rows.push(("frames".into(), o.frames.to_string()));
    rows.push(("videos".into(), o.videos.len().to_string()));
    let width = rows.iter().map(|(k, _)| k.chars().count()).max().unwrap_or(0);
    let mut s = format!("avseg eval: {} {} ({})\n", o.subset, o.split, o.dataset_root.display());
    for (k, v) in rows {
        s.push_str(&format!("  {k:<width$}  {v}\n"));
    }
    s
}
