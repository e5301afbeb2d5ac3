//! `segment --gt DIR [--gt-silent DIR]`: how the masks `segment` writes agree with known answers,
//! so that a user can check a model on a clip with ground truth (the bundled sample carries its
//! own) without setting up a data set for `avseg eval`.
//!
//! Per frame: J, the IoU of the shown mask and the ground truth (1 when both are empty), and the
//! share of the silent objects' area that the mask covers. The figures go to stdout and to
//! `scores.json` beside the masks.

use std::path::{Path, PathBuf};

use avseg::{FrameMask, FRAME_EXTENSIONS};
use avseg_eval::dataset::{binary_gt_from_rgb, decode_gt_rgb};
use avseg_eval::metrics::{coverage, shown_mask_iou};
use avseg_eval::EvalError;

use crate::CliError;

/// J at or above which a frame counts as found in the summary line.
const FOUND_J: f64 = 0.6;

/// Ground-truth masks of a clip, loaded and checked against its frames before the model runs.
pub(crate) struct GtCheck {
    gt: Option<PathBuf>,
    silent: Option<PathBuf>,
    /// Per frame: its stem, and its masks (0/1 at the frame's size).
    masks: Vec<(String, Option<Vec<u8>>, Option<Vec<u8>>)>,
    rows: Vec<Row>,
}

struct Row {
    frame: String,
    j: Option<f64>,
    silent_covered: Option<f64>,
}

fn gt_error(path: &Path, detail: impl Into<String>) -> CliError {
    CliError::Eval(EvalError::GroundTruth { path: path.to_path_buf(), detail: detail.into() })
}

/// The mask named like the frame (`sample_1.png` for frame `sample_1.jpg`), in any frame format.
fn find_mask(dir: &Path, stem: &str) -> Result<PathBuf, CliError> {
    if !dir.is_dir() {
        return Err(gt_error(dir, "not a folder of masks"));
    }
    FRAME_EXTENSIONS
        .iter()
        .map(|ext| dir.join(format!("{stem}.{ext}")))
        .find(|p| p.is_file())
        .ok_or_else(|| gt_error(&dir.join(format!("{stem}.png")), format!("no mask for frame {stem} (named like the frame, any of {})", FRAME_EXTENSIONS.join(", "))))
}

/// A 0/1 mask at the frame's size. A mask of another size is resized (nearest) only when its shape
/// is the frame's; another aspect ratio means it belongs to other frames.
/// Decoded once: the checks and the thresholding read the same pixels.
fn load_mask(path: &Path, width: u32, height: u32) -> Result<Vec<u8>, CliError> {
    let img = decode_gt_rgb(path).map_err(CliError::Eval)?;
    let (w, h) = img.dimensions();
    let aspect = |a: u32, b: u32| a as f64 / b.max(1) as f64;
    if (w, h) != (width, height) && (aspect(w, h) / aspect(width, height) - 1.0).abs() > 0.01 {
        return Err(gt_error(path, format!("{w}×{h}, but its frame is {width}×{height} (another aspect ratio)")));
    }
    not_a_mask(path, &img)?;
    Ok(binary_gt_from_rgb(&img, width as usize, height as usize))
}

/// Refuses an image that is not a black-and-white mask (a photo given by mistake would otherwise
/// be thresholded into a meaningless score): colour, or over 5 % mid-grey pixels.
fn not_a_mask(path: &Path, img: &image::RgbImage) -> Result<(), CliError> {
    let n = img.pixels().len().max(1);
    let coloured = img.pixels().filter(|p| p.0[0] != p.0[1] || p.0[1] != p.0[2]).count();
    if coloured > 0 {
        return Err(gt_error(path, format!("not a mask: {coloured} pixels are coloured (expected grey 0/255)")));
    }
    let mid = img.pixels().filter(|p| (32..224).contains(&p.0[0])).count();
    if mid * 20 > n {
        return Err(gt_error(path, format!("not a mask: {:.0} % of pixels are mid-grey (expected 0/255)", 100.0 * mid as f64 / n as f64)));
    }
    Ok(())
}

impl GtCheck {
    /// `None` when neither folder is given. `frames`: each frame's stem, width and height.
    pub(crate) fn load(gt: Option<&Path>, silent: Option<&Path>, frames: &[(String, u32, u32)]) -> Result<Option<Self>, CliError> {
        if gt.is_none() && silent.is_none() {
            return Ok(None);
        }
        let one = |dir: Option<&Path>, stem: &str, w, h| -> Result<Option<Vec<u8>>, CliError> {
            dir.map(|d| load_mask(&find_mask(d, stem)?, w, h)).transpose()
        };
        let mut masks = Vec::with_capacity(frames.len());
        for (stem, w, h) in frames {
            masks.push((stem.clone(), one(gt, stem, *w, *h)?, one(silent, stem, *w, *h)?));
        }
        Ok(Some(Self { gt: gt.map(Path::to_path_buf), silent: silent.map(Path::to_path_buf), masks, rows: Vec::new() }))
    }

    /// Scores frame `index`'s shown mask.
    pub(crate) fn score(&mut self, index: usize, mask: &FrameMask) {
        let (stem, gt, silent) = &self.masks[index];
        self.rows.push(Row {
            frame: stem.clone(),
            j: gt.as_ref().map(|g| shown_mask_iou(&mask.labels, g)),
            silent_covered: silent.as_ref().and_then(|s| coverage(&mask.labels, s)),
        });
    }

    /// Prints the table and the summary, and writes `scores.json` into `out`.
    pub(crate) fn report(&self, out: &Path) -> Result<(), CliError> {
        let pct = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.1} %", 100.0 * v));
        println!("{:<24} {:>6} {:>15}", "frame", "J", "silent covered");
        for r in &self.rows {
            let j = r.j.map_or("-".to_string(), |j| format!("{j:.3}"));
            println!("{:<24} {:>6} {:>15}", r.frame, j, pct(r.silent_covered));
        }
        let js: Vec<f64> = self.rows.iter().filter_map(|r| r.j).collect();
        let covered: Vec<f64> = self.rows.iter().filter_map(|r| r.silent_covered).collect();
        let mean = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
        let worst = covered.iter().copied().fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
        let found = js.iter().filter(|&&j| j >= FOUND_J).count();
        let mut summary = Vec::new();
        if let Some(m) = mean(&js) {
            summary.push(format!("mean J {m:.3} over {} frames, {found} with J ≥ {FOUND_J}", js.len()));
        }
        if let Some(m) = mean(&covered) {
            summary.push(format!("silent objects: {} of their area covered on average, {} in the worst frame", pct(Some(m)), pct(worst)));
        }
        println!("{}", summary.join("; "));
        let json = serde_json::json!({
            "gt": self.gt.as_ref().map(|p| p.display().to_string()),
            "gt_silent": self.silent.as_ref().map(|p| p.display().to_string()),
            "frames": self.rows.iter().map(|r| serde_json::json!({
                "frame": r.frame, "j": r.j, "silent_covered": r.silent_covered,
            })).collect::<Vec<_>>(),
            "mean_j": mean(&js),
            "frames_found": found,
            "found_j": FOUND_J,
            "mean_silent_covered": mean(&covered),
            "max_silent_covered": worst,
        });
        let path = out.join("scores.json");
        std::fs::write(&path, format!("{json:#}\n")).map_err(|source| CliError::Io { path, source })
    }
}
