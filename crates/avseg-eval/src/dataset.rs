//! AVSBench dataset readers: S4 and MS3 (AVSBench-object) and AVSS (AVSBench-semantic), laid out
//! exactly as the official download (docs/spec/datasets.md §10), plus ground-truth decoding (docs/spec/masks.md §5).
//!
//! `open` reads the split's CSV, builds every expected path and checks them all before anything
//! runs, so an incomplete download fails once with the list of what is missing instead of hours
//! into an evaluation.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::EvalError;
use avseg::decode_image;
use avseg::voc_palette;

/// How many missing files an error lists by name; the rest are counted.
pub const MISSING_LISTED: usize = 20;
/// AVSS classes: 70 sounding-object classes plus background (index 0).
pub const AVSS_CLASSES: usize = 71;
/// AVSS clips are padded to this many frames by the official loader.
pub const AVSS_PADDED_LEN: usize = 10;
/// Frames per AVSBench-object (S4/MS3) clip.
pub const OBJECT_FRAMES: usize = 5;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Subset {
    S4,
    Ms3,
    Avss,
}

impl Subset {
    pub fn as_str(self) -> &'static str {
        match self {
            Subset::S4 => "s4",
            Subset::Ms3 => "ms3",
            Subset::Avss => "avss",
        }
    }

    /// S4 and MS3 are binary (one foreground channel); AVSS is 71-class semantic.
    pub fn is_binary(self) -> bool {
        self != Subset::Avss
    }

    /// The metadata CSV, and the folder that holds it in the official download.
    /// The subset's metadata CSV and the folder that holds it in the official layouts.
    pub fn csv_and_folder(self) -> (&'static str, &'static str) {
        match self {
            Subset::S4 => ("s4_meta_data.csv", "Single-source"),
            Subset::Ms3 => ("ms3_meta_data.csv", "Multi-sources"),
            Subset::Avss => ("metadata.csv", "AVSS"),
        }
    }
}

impl fmt::Display for Subset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Subset {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "s4" => Ok(Subset::S4),
            "ms3" => Ok(Subset::Ms3),
            "avss" => Ok(Subset::Avss),
            _ => Err(format!("unknown subset {s:?} (expected s4, ms3 or avss)")),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Split {
    Train,
    Val,
    Test,
}

impl Split {
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Split {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "train" => Ok(Split::Train),
            "val" => Ok(Split::Val),
            "test" => Ok(Split::Test),
            _ => Err(format!("unknown split {s:?} (expected train, val or test)")),
        }
    }
}

/// One video of a split, with every file it needs.
#[derive(Clone, Debug, PartialEq)]
pub struct Video {
    /// The video id: S4/MS3 name, AVSS uid. Saved logits are `{name}.npy`.
    pub name: String,
    /// S4 category, AVSS label (v1s, v1m, v2); empty for MS3.
    pub group: String,
    /// Frames in temporal order.
    pub frames: Vec<PathBuf>,
    /// Ground truth per frame; `None` where the split has no annotation (S4/v1s train: frame 1 only).
    pub gt: Vec<Option<PathBuf>>,
    pub audio: PathBuf,
    /// AVSS: frames the official loader appends (v1 clips are padded from 5 to 10 with zero
    /// logits and zero labels). Always 0 for S4/MS3.
    pub padded_frames: usize,
}

/// A split of an AVSBench dataset, in CSV order (the official test order).
#[derive(Clone, Debug)]
pub struct Dataset {
    /// The folder holding the CSV (`Single-source/`, `Multi-sources/` or `AVSS/`).
    pub root: PathBuf,
    pub csv: PathBuf,
    pub subset: Subset,
    pub split: Split,
    pub videos: Vec<Video>,
}

fn csv_err(path: &Path, detail: impl Into<String>) -> EvalError {
    EvalError::Csv { path: path.to_path_buf(), detail: detail.into() }
}

/// Lists up to [`MISSING_LISTED`] items and counts the rest.
pub fn list_some(items: &[String]) -> String {
    let mut s = items.iter().take(MISSING_LISTED).cloned().collect::<Vec<_>>().join(", ");
    if items.len() > MISSING_LISTED {
        s.push_str(&format!(" … and {} more", items.len() - MISSING_LISTED));
    }
    s
}

/// Finds the folder that holds the subset's CSV: `dir` itself, or the subset's folder inside it
/// (`avsbench_data/`, AVSegFormer's `data/`).
pub fn resolve_root(dir: &Path, subset: Subset) -> Result<PathBuf, EvalError> {
    let (csv, folder) = subset.csv_and_folder();
    for cand in [dir.to_path_buf(), dir.join(folder)] {
        if cand.join(csv).is_file() {
            return Ok(cand);
        }
    }
    if !dir.is_dir() {
        return Err(EvalError::Dataset { path: dir.to_path_buf(), detail: "dataset folder not found".into() });
    }
    Err(EvalError::Dataset {
        path: dir.to_path_buf(),
        detail: format!("not an AVSBench {subset} dataset: neither {csv} nor {folder}/{csv} exists"),
    })
}

struct Rows {
    header: Vec<String>,
    /// (line number, fields)
    rows: Vec<(u64, Vec<String>)>,
}

fn read_csv(path: &Path) -> Result<Rows, EvalError> {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_path(path)
        .map_err(|e| csv_err(path, e.to_string()))?;
    let header: Vec<String> =
        rdr.headers().map_err(|e| csv_err(path, e.to_string()))?.iter().map(|h| h.trim().to_string()).collect();
    let mut rows = Vec::new();
    for rec in rdr.records() {
        let rec = rec.map_err(|e| csv_err(path, e.to_string()))?;
        let line = rec.position().map(|p| p.line()).unwrap_or(0);
        if rec.iter().all(|f| f.trim().is_empty()) {
            continue;
        }
        rows.push((line, rec.iter().map(|f| f.trim().to_string()).collect()));
    }
    Ok(Rows { header, rows })
}

fn column(path: &Path, rows: &Rows, name: &str) -> Result<usize, EvalError> {
    rows.header.iter().position(|h| h == name).ok_or_else(|| {
        csv_err(path, format!("no `{name}` column (header: {})", rows.header.join(",")))
    })
}

fn field<'a>(path: &Path, line: u64, fields: &'a [String], i: usize, what: &str) -> Result<&'a str, EvalError> {
    match fields.get(i).map(String::as_str) {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(csv_err(path, format!("line {line}: empty or missing {what} (column {i})"))),
    }
}

/// A field that becomes one component of a path (a video name or a category): it must not climb
/// out of the data set folder (`..`, separators), since the names also name the files `eval`
/// writes (`--save-logits`).
fn name_field<'a>(path: &Path, line: u64, fields: &'a [String], i: usize, what: &str) -> Result<&'a str, EvalError> {
    let v = field(path, line, fields, i, what)?;
    if v == "." || v == ".." || v.contains(['/', '\\', '\0']) {
        return Err(csv_err(path, format!("line {line}: {what} {v:?} is not a plain file name (column {i})")));
    }
    Ok(v)
}

impl Dataset {
    /// Reads `subset`'s CSV under `dir` and checks that every file of `split` exists.
    pub fn open(dir: &Path, subset: Subset, split: Split) -> Result<Self, EvalError> {
        let root = resolve_root(dir, subset)?;
        let csv = root.join(subset.csv_and_folder().0);
        let rows = read_csv(&csv)?;
        let split_col = column(&csv, &rows, "split")?;
        let label_col = if subset == Subset::Avss { Some(column(&csv, &rows, "label")?) } else { None };
        let name_col = if subset == Subset::Avss { column(&csv, &rows, "uid")? } else { 0 };
        // S4 loaders read the category by position (column 2); MS3 has none.
        let group_col = match subset {
            Subset::S4 => Some(2),
            Subset::Ms3 => None,
            Subset::Avss => label_col,
        };

        // A split or label value outside the known set would silently drop videos: refuse it.
        let mut bad = Vec::new();
        let mut selected = Vec::new();
        for (line, f) in &rows.rows {
            let sv = f.get(split_col).map(String::as_str).unwrap_or("");
            let s = match Split::from_str(sv) {
                Ok(s) => s,
                Err(_) => {
                    bad.push(format!("line {line}: split {sv:?}"));
                    continue;
                }
            };
            if let Some(lc) = label_col {
                let lv = f.get(lc).map(String::as_str).unwrap_or("");
                if !matches!(lv, "v1s" | "v1m" | "v2") {
                    bad.push(format!("line {line}: label {lv:?}"));
                    continue;
                }
            }
            if s == split {
                selected.push((*line, f));
            }
        }
        if !bad.is_empty() {
            return Err(csv_err(
                &csv,
                format!(
                    "{} row(s) with an unknown value (split must be train/val/test{}): {}",
                    bad.len(),
                    if label_col.is_some() { ", label v1s/v1m/v2" } else { "" },
                    list_some(&bad)
                ),
            ));
        }
        if selected.is_empty() {
            return Err(csv_err(&csv, format!("no video has split = {split}")));
        }

        let mut videos = Vec::with_capacity(selected.len());
        let mut seen: HashMap<String, u64> = HashMap::new();
        for (line, f) in selected {
            let name = name_field(&csv, line, f, name_col, "video name")?.to_string();
            if let Some(prev) = seen.insert(name.clone(), line) {
                return Err(csv_err(&csv, format!("line {line}: video {name} is listed twice (also line {prev})")));
            }
            let group = match group_col {
                Some(c) => name_field(&csv, line, f, c, "category/label")?.to_string(),
                None => String::new(),
            };
            videos.push(layout(&root, subset, split, name, group));
        }

        let mut missing = Vec::new();
        for v in &videos {
            for p in v.frames.iter().chain(v.gt.iter().flatten()).chain(std::iter::once(&v.audio)) {
                if !p.is_file() {
                    missing.push(p.strip_prefix(&root).unwrap_or(p).display().to_string());
                }
            }
        }
        if !missing.is_empty() {
            return Err(EvalError::Missing {
                root,
                subset: subset.as_str().into(),
                split: split.as_str().into(),
                count: missing.len(),
                listed: list_some(&missing),
            });
        }
        Ok(Dataset { root, csv, subset, split, videos })
    }

    /// Keeps only the first `n` videos.
    pub fn truncate(&mut self, n: usize) {
        self.videos.truncate(n);
    }
}

/// The paths of one video, exactly as §10 lays them out.
fn layout(root: &Path, subset: Subset, split: Split, name: String, group: String) -> Video {
    let s = split.as_str();
    match subset {
        Subset::S4 => {
            let d = root.join("s4_data");
            let frames_dir = d.join("visual_frames").join(s).join(&group).join(&name);
            let gt_dir = d.join("gt_masks").join(s).join(&group).join(&name);
            let frames = (1..=OBJECT_FRAMES).map(|i| frames_dir.join(format!("{name}_{i}.png"))).collect();
            // S4 train annotates only the first frame.
            let gt = (1..=OBJECT_FRAMES)
                .map(|i| (split != Split::Train || i == 1).then(|| gt_dir.join(format!("{name}_{i}.png"))))
                .collect();
            let audio = d.join("audio_wav").join(s).join(&group).join(format!("{name}.wav"));
            Video { name, group, frames, gt, audio, padded_frames: 0 }
        }
        Subset::Ms3 => {
            let d = root.join("ms3_data");
            // MS3 frames have no split folder and keep ".mp4_" in their names.
            let frames_dir = d.join("visual_frames").join(&name);
            let gt_dir = d.join("gt_masks").join(s).join(&name);
            let frames = (1..=OBJECT_FRAMES).map(|i| frames_dir.join(format!("{name}.mp4_{i}.png"))).collect();
            let gt = (1..=OBJECT_FRAMES).map(|i| Some(gt_dir.join(format!("{name}_{i}.png")))).collect();
            let audio = d.join("audio_wav").join(s).join(format!("{name}.wav"));
            Video { name, group, frames, gt, audio, padded_frames: 0 }
        }
        Subset::Avss => {
            let d = root.join(&group).join(&name);
            let n = if group == "v2" { AVSS_PADDED_LEN } else { OBJECT_FRAMES };
            let m = if group == "v1s" && split == Split::Train { 1 } else { n };
            let frames = (0..n).map(|i| d.join("frames").join(format!("{i}.jpg"))).collect();
            let gt = (0..n).map(|i| (i < m).then(|| d.join("labels_rgb").join(format!("{i}.png")))).collect();
            Video { name, group, frames, gt, audio: d.join("audio.wav"), padded_frames: AVSS_PADDED_LEN - n }
        }
    }
}

/// Nearest-neighbour source index per output index, sampling at pixel centres as PIL NEAREST
/// does; integer arithmetic, so exact at any size.
fn nearest_index(input: usize, output: usize) -> Vec<usize> {
    (0..output).map(|d| (((2 * d + 1) * input) / (2 * output)).min(input - 1)).collect()
}

/// Resizes a label map with nearest neighbour (identity when the size already matches).
pub fn resize_nearest(labels: &[u8], w: usize, h: usize, out_w: usize, out_h: usize) -> Vec<u8> {
    if (w, h) == (out_w, out_h) {
        return labels.to_vec();
    }
    let xs = nearest_index(w, out_w);
    let ys = nearest_index(h, out_h);
    let mut out = Vec::with_capacity(out_w * out_h);
    for &y in &ys {
        let row = &labels[y * w..(y + 1) * w];
        out.extend(xs.iter().map(|&x| row[x]));
    }
    out
}

fn gt_err(path: &Path, detail: impl Into<String>) -> EvalError {
    EvalError::GroundTruth { path: path.to_path_buf(), detail: detail.into() }
}

/// A ground-truth image decoded to 8-bit RGB; an image without pixels is an error naming `path`.
pub fn decode_gt_rgb(path: &Path) -> Result<image::RgbImage, EvalError> {
    let img = decode_image(path).map_err(|e| gt_err(path, e.to_string()))?;
    if img.width() == 0 || img.height() == 0 {
        return Err(gt_err(path, "image has no pixels"));
    }
    Ok(img)
}

/// S4/MS3 ground truth as 0/1 at `out_w`×`out_h`: 8-bit grey (ITU-R 601 luma, as PIL 'L') > 127,
/// then nearest resize to the logits' size when it differs (as AVSegFormer's 512 pipeline does).
pub fn load_binary_gt(path: &Path, out_w: usize, out_h: usize) -> Result<Vec<u8>, EvalError> {
    Ok(binary_gt_from_rgb(&decode_gt_rgb(path)?, out_w, out_h))
}

/// [`load_binary_gt`] on an image already decoded (by [`decode_gt_rgb`]), for callers that
/// inspect the pixels first.
pub fn binary_gt_from_rgb(img: &image::RgbImage, out_w: usize, out_h: usize) -> Vec<u8> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let bits: Vec<u8> = img
        .pixels()
        .map(|p| {
            let [r, g, b] = p.0;
            let l = (r as u32 * 299 + g as u32 * 587 + b as u32 * 114) / 1000;
            (l > 127) as u8
        })
        .collect();
    resize_nearest(&bits, w, h, out_w, out_h)
}

/// AVSS ground truth as class indices at `out_w`×`out_h`: the position of the exact RGB match in
/// the 71-colour palette (unmatched colours are background), then nearest resize.
pub fn load_avss_gt(path: &Path, out_w: usize, out_h: usize) -> Result<Vec<u8>, EvalError> {
    let img = decode_gt_rgb(path)?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    let lut: HashMap<[u8; 3], u8> =
        voc_palette(AVSS_CLASSES).into_iter().enumerate().map(|(i, c)| (c, i as u8)).collect();
    let classes: Vec<u8> = img.pixels().map(|p| lut.get(&p.0).copied().unwrap_or(0)).collect();
    Ok(resize_nearest(&classes, w, h, out_w, out_h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_matches_pil_centres() {
        // 4 → 2 takes source pixels 1 and 3 (centres 1.0 and 3.0).
        assert_eq!(nearest_index(4, 2), vec![1, 3]);
        // 2 → 4 repeats each source pixel twice.
        assert_eq!(nearest_index(2, 4), vec![0, 0, 1, 1]);
        assert_eq!(resize_nearest(&[1, 2, 3, 4], 2, 2, 2, 2), vec![1, 2, 3, 4]);
    }

    #[test]
    fn palette_has_71_distinct_colours() {
        let p = voc_palette(AVSS_CLASSES);
        let set: std::collections::HashSet<_> = p.iter().collect();
        assert_eq!(set.len(), 71);
        assert_eq!(p[70], [32, 128, 128]);
        assert_eq!(p[64], [32, 0, 0]);
    }

    #[test]
    fn parse_names() {
        assert_eq!("MS3".parse::<Subset>().unwrap(), Subset::Ms3);
        assert!("tst".parse::<Split>().is_err());
    }
}
