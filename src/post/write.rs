//! Output writers: mask PNGs, overlays, `.npy` arrays and `results.jsonl`.
//!
//! Every error names the file it was writing. Inputs are checked before the file is created, so a
//! refused request leaves nothing half-written behind.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

#[cfg(feature = "image-files")]
use image::RgbImage;

use super::mask::FrameMask;
use super::objects::SoundingObject;
use super::PostError;

/// Overlay colour for the foreground of binary (S4/MS3) models.
pub const DEFAULT_OVERLAY_COLOUR: [u8; 3] = [255, 32, 96];

/// Colour table for binary masks: `[background, foreground]`.
pub fn binary_colours() -> Vec<[u8; 3]> {
    vec![[0, 0, 0], DEFAULT_OVERLAY_COLOUR]
}

/// The PASCAL-VOC bit-interleaved colormap that AVSBench uses for AVSS (docs/spec/datasets.md §11.1): for
/// class j, bit group i (j >> 3i) puts its bits 0, 1, 2 into R, G, B at bit position 7 − i.
pub fn voc_palette(n: usize) -> Vec<[u8; 3]> {
    (0..n)
        .map(|j| {
            let mut rgb = [0u8; 3];
            let mut c = j;
            let mut i = 0;
            while c > 0 && i < 8 {
                for (ch, v) in rgb.iter_mut().enumerate() {
                    *v |= (((c >> ch) & 1) as u8) << (7 - i);
                }
                c >>= 3;
                i += 1;
            }
            rgb
        })
        .collect()
}

/// Colour table for a semantic model with `num_classes` classes: the model's palette where it has
/// an entry, the VOC colormap for any class beyond it. Index 0 (background) is never drawn.
pub fn colour_table(palette: Option<&[[u8; 3]]>, num_classes: usize) -> Vec<[u8; 3]> {
    let mut table = voc_palette(num_classes);
    if let Some(p) = palette {
        for (dst, src) in table.iter_mut().zip(p) {
            *dst = *src;
        }
    }
    table
}

fn write_err(path: &Path, e: impl std::fmt::Display) -> PostError {
    PostError::Write { path: path.to_path_buf(), detail: e.to_string() }
}

fn invalid(path: &Path, detail: impl Into<String>) -> PostError {
    PostError::Invalid { path: path.to_path_buf(), detail: detail.into() }
}

#[cfg(feature = "image-files")]
fn check_mask(path: &Path, mask: &FrameMask) -> Result<(), PostError> {
    let n = mask.width as usize * mask.height as usize;
    if mask.width == 0 || mask.height == 0 {
        return Err(invalid(path, format!("mask is {}x{}; nothing to write", mask.width, mask.height)));
    }
    if mask.labels.len() != n {
        return Err(invalid(
            path,
            format!("mask is {}x{} but holds {} labels", mask.width, mask.height, mask.labels.len()),
        ));
    }
    Ok(())
}

fn create(path: &Path) -> Result<BufWriter<File>, PostError> {
    File::create(path).map(BufWriter::new).map_err(|e| write_err(path, e))
}

#[cfg(feature = "image-files")]
/// Writes a mask PNG. Without a palette: 8-bit grey, 0 for background and 255 for any other label
/// (the official S4/MS3 `save_mask` format). With a palette: an indexed PNG whose pixel values are
/// the labels, so tools that read the indices get the class and viewers show the palette colours.
pub fn write_mask_png(path: &Path, mask: &FrameMask, palette: Option<&[[u8; 3]]>) -> Result<(), PostError> {
    check_mask(path, mask)?;
    let (color, data, plte) = match palette {
        None => {
            let grey: Vec<u8> = mask.labels.iter().map(|&l| if l == 0 { 0 } else { 255 }).collect();
            (png::ColorType::Grayscale, grey, None)
        }
        Some(p) => {
            if p.is_empty() || p.len() > 256 {
                return Err(invalid(path, format!("palette has {} entries; an indexed PNG needs 1..=256", p.len())));
            }
            let max = mask.max_label();
            if max as usize >= p.len() {
                return Err(invalid(
                    path,
                    format!("mask has label {max} but the palette has only {} entries", p.len()),
                ));
            }
            let plte: Vec<u8> = p.iter().flatten().copied().collect();
            (png::ColorType::Indexed, mask.labels.clone(), Some(plte))
        }
    };
    let file = create(path)?;
    let mut enc = png::Encoder::new(file, mask.width, mask.height);
    enc.set_color(color);
    enc.set_depth(png::BitDepth::Eight);
    if let Some(plte) = plte {
        enc.set_palette(plte);
    }
    let mut writer = enc.write_header().map_err(|e| write_err(path, e))?;
    writer.write_image_data(&data).map_err(|e| write_err(path, e))?;
    writer.finish().map_err(|e| write_err(path, e))
}

#[cfg(feature = "image-files")]
/// Writes the frame with each labelled region blended 50 % with `colours[label]` and outlined in
/// the full colour (the region's inner 1 px boundary, so touching regions keep separate outlines).
/// The mask must be at the frame's size.
pub fn write_overlay_png(
    path: &Path,
    frame: &RgbImage,
    mask: &FrameMask,
    colours: &[[u8; 3]],
) -> Result<(), PostError> {
    check_mask(path, mask)?;
    if (frame.width(), frame.height()) != (mask.width, mask.height) {
        return Err(invalid(
            path,
            format!("mask is {}x{} but the frame is {}x{}", mask.width, mask.height, frame.width(), frame.height()),
        ));
    }
    let max = mask.max_label();
    if max != 0 && max as usize >= colours.len() {
        return Err(invalid(path, format!("mask has label {max} but only {} colours were given", colours.len())));
    }
    let (w, h) = (mask.width as usize, mask.height as usize);
    let labels = &mask.labels;
    let mut out = frame.clone();
    for (i, px) in out.as_mut().chunks_exact_mut(3).enumerate() {
        let l = labels[i];
        if l == 0 {
            continue;
        }
        let c = colours[l as usize];
        let (x, y) = (i % w, i / w);
        // A pixel is on the outline when a 4-neighbour inside the frame has another label.
        let edge = (x > 0 && labels[i - 1] != l)
            || (x + 1 < w && labels[i + 1] != l)
            || (y > 0 && labels[i - w] != l)
            || (y + 1 < h && labels[i + w] != l);
        for ch in 0..3 {
            px[ch] = if edge { c[ch] } else { (px[ch] as u16 + c[ch] as u16).div_ceil(2) as u8 };
        }
    }
    let file = create(path)?;
    let mut enc = png::Encoder::new(file, mask.width, mask.height);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header().map_err(|e| write_err(path, e))?;
    writer.write_image_data(out.as_raw()).map_err(|e| write_err(path, e))?;
    writer.finish().map_err(|e| write_err(path, e))
}

/// Writes a little-endian f32 `.npy` array in C order.
pub fn write_npy(path: &Path, shape: &[usize], data: &[f32]) -> Result<(), PostError> {
    let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    if n != Some(data.len()) {
        return Err(invalid(path, format!("shape {shape:?} does not hold {} values", data.len())));
    }
    use npyz::WriterBuilder;
    let shape_u64: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    let file = create(path)?;
    let mut writer = npyz::WriteOptions::new()
        .default_dtype()
        .shape(&shape_u64)
        .writer(file)
        .begin_nd()
        .map_err(|e| write_err(path, e))?;
    writer.extend(data.iter().copied()).map_err(|e| write_err(path, e))?;
    writer.finish().map_err(|e| write_err(path, e))
}

/// One line of `results.jsonl`: what was found in one frame.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct FrameRecord {
    /// The frame's index in the clip or stream.
    pub frame: usize,
    /// Seconds from the start of the audio.
    pub timestamp: f64,
    /// The frame's file, or the video it was sampled from.
    pub source: String,
    /// Mask width in pixels (the source frame's width).
    pub width: u32,
    /// Mask height in pixels (the source frame's height).
    pub height: u32,
    /// True when no pixel is foreground.
    pub empty: bool,
    /// Foreground pixels over all pixels, 0..1.
    pub foreground_fraction: f64,
    /// The sounding objects found in the frame.
    pub objects: Vec<SoundingObject>,
    /// Two-stage packages: objects found but supported by no heard sound, dropped from `objects`
    /// and the mask (written only when there are any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub silent_objects: Vec<SoundingObject>,
}

impl FrameRecord {
    /// Fills the size, emptiness and foreground fraction from the mask.
    pub fn from_mask(
        frame: usize,
        timestamp: f64,
        source: impl Into<String>,
        mask: &FrameMask,
        objects: Vec<SoundingObject>,
    ) -> Self {
        Self {
            frame,
            timestamp,
            source: source.into(),
            width: mask.width,
            height: mask.height,
            empty: mask.is_empty(),
            foreground_fraction: mask.foreground_fraction(),
            objects,
            silent_objects: Vec::new(),
        }
    }
}

/// Writes one JSON object per line. Lines are buffered; call [`JsonlWriter::finish`] to flush and
/// see any final write error (dropping the writer flushes too, but silently).
pub struct JsonlWriter {
    path: PathBuf,
    out: BufWriter<File>,
}

impl JsonlWriter {
    /// Creates (or truncates) the file at `path`.
    pub fn create(path: &Path) -> Result<Self, PostError> {
        Ok(Self { path: path.to_path_buf(), out: create(path)? })
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `record` as one JSON line.
    pub fn write(&mut self, record: &FrameRecord) -> Result<(), PostError> {
        serde_json::to_writer(&mut self.out, record).map_err(|e| write_err(&self.path, e))?;
        self.out.write_all(b"\n").map_err(|e| write_err(&self.path, e))
    }

    /// Flushes the buffer and syncs the file to disk, reporting any write error.
    pub fn finish(mut self) -> Result<(), PostError> {
        self.out.flush().map_err(|e| write_err(&self.path, e))?;
        self.out.get_ref().sync_data().map_err(|e| write_err(&self.path, e))
    }
}

/// Where a frame came from, for its `results.jsonl` line.
#[derive(Clone, Copy, Debug)]
pub struct FrameInfo<'a> {
    /// The frame's index in the clip or stream.
    pub index: usize,
    /// Seconds from the start of the audio.
    pub timestamp: f64,
    /// The frame's file, or the video it was sampled from.
    pub source: &'a str,
}

/// Writes the per-frame outputs of a run into one folder: `masks/{stem}.png`,
/// `overlays/{stem}.png` (unless turned off) and one `results.jsonl` line per frame. The CLI's
/// `segment` (clips and videos) and Rust users share this one writer, so the files are the same
/// whichever way a run was made.
#[cfg(feature = "image-files")]
pub struct FrameWriter {
    masks_dir: PathBuf,
    overlays_dir: Option<PathBuf>,
    palette: Option<Vec<[u8; 3]>>,
    colours: Vec<[u8; 3]>,
    jsonl: JsonlWriter,
}

#[cfg(feature = "image-files")]
impl FrameWriter {
    /// Creates `out/masks`, `out/overlays` (when `overlays`) and `out/results.jsonl`. Binary
    /// models get 0/255 masks and the default overlay colour; semantic ones get indexed masks in
    /// the package's palette.
    pub fn create(out: &Path, output: &crate::model::OutputSpec, overlays: bool) -> Result<Self, PostError> {
        let mkdir = |d: &Path| std::fs::create_dir_all(d).map_err(|e| write_err(d, e));
        let masks_dir = out.join("masks");
        mkdir(&masks_dir)?;
        let overlays_dir = overlays.then(|| out.join("overlays"));
        if let Some(d) = &overlays_dir {
            mkdir(d)?;
        }
        let (palette, colours) = match output {
            crate::model::OutputSpec::Binary { .. } => (None, binary_colours()),
            crate::model::OutputSpec::Semantic { palette, .. } => (Some(palette.clone()), palette.clone()),
        };
        let jsonl = JsonlWriter::create(&out.join("results.jsonl"))?;
        Ok(FrameWriter { masks_dir, overlays_dir, palette, colours, jsonl })
    }

    /// Writes one frame's mask, overlay and results line. `image` is the source frame, at the
    /// mask's size.
    pub fn write(
        &mut self,
        stem: &str,
        image: &RgbImage,
        mask: &FrameMask,
        objects: &[SoundingObject],
        info: FrameInfo<'_>,
    ) -> Result<(), PostError> {
        self.write_with_silent(stem, image, mask, objects, &[], info)
    }

    /// [`FrameWriter::write`], with a two-stage package's silent objects in the results line.
    pub fn write_with_silent(
        &mut self,
        stem: &str,
        image: &RgbImage,
        mask: &FrameMask,
        objects: &[SoundingObject],
        silent_objects: &[SoundingObject],
        info: FrameInfo<'_>,
    ) -> Result<(), PostError> {
        write_mask_png(&self.masks_dir.join(format!("{stem}.png")), mask, self.palette.as_deref())?;
        if let Some(d) = &self.overlays_dir {
            write_overlay_png(&d.join(format!("{stem}.png")), image, mask, &self.colours)?;
        }
        let mut record = FrameRecord::from_mask(info.index, info.timestamp, info.source, mask, objects.to_vec());
        record.silent_objects = silent_objects.to_vec();
        self.jsonl.write(&record)
    }

    /// Flushes `results.jsonl` and reports a final write error.
    pub fn finish(self) -> Result<(), PostError> {
        self.jsonl.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn voc_palette_matches_spec_table() {
        let p = voc_palette(71);
        assert_eq!(p[0], [0, 0, 0]);
        assert_eq!(p[1], [128, 0, 0]);
        assert_eq!(p[7], [128, 128, 128]);
        assert_eq!(p[8], [64, 0, 0]);
        assert_eq!(p[25], [192, 64, 0]);
        assert_eq!(p[56], [64, 64, 64]);
        assert_eq!(p[64], [32, 0, 0]);
        assert_eq!(p[70], [32, 128, 128]);
        let mut sorted = p.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 71, "AVSS colours are distinct");
    }

    #[test]
    fn colour_table_prefers_the_given_palette() {
        let t = colour_table(Some(&[[1, 2, 3], [4, 5, 6]]), 3);
        assert_eq!(t, vec![[1, 2, 3], [4, 5, 6], [0, 128, 0]]);
    }
}
