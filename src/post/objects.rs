//! Connected regions of a label map → sounding objects with box, area, centroid and confidence.

use image::{GrayImage, ImageBuffer, Luma};
use imageproc::region_labelling::{connected_components, Connectivity};

use super::mask::FrameMask;

/// One connected region of one label.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SoundingObject {
    /// 1-based position in the frame's object list (0 would read as background).
    pub id: u32,
    /// The label value of the region (1 for binary models, the class index for semantic ones).
    pub class: u32,
    /// `labels[class]` when a label list was given.
    pub label: Option<String>,
    /// x, y, width, height in pixels.
    pub bbox: [u32; 4],
    /// Number of pixels in the region.
    pub area: u64,
    /// x, y in pixels, pixel centres at +0.5.
    pub centroid: [f32; 2],
    /// Mean per-pixel confidence over the region.
    pub confidence: f32,
}

/// The bearing, in degrees and positive to the right, of image column `x` (pixel centres at +0.5)
/// in a frame `width` pixels wide, for a pinhole camera with horizontal field of view `hfov_deg`:
/// `atan(((x - W/2) / (W/2)) * tan(hfov/2))`. The image plane sits at focal length
/// f = (W/2) / tan(hfov/2), so a point at x is atan((x - W/2) / f) off the axis. Lens distortion is
/// not modelled. NaN when `width` is 0, `x` is not finite or `hfov_deg` is not in (0, 180).
pub fn bearing_deg(x: f32, width: u32, hfov_deg: f32) -> f32 {
    if width == 0 || !x.is_finite() || !(hfov_deg.is_finite() && hfov_deg > 0.0 && hfov_deg < 180.0) {
        return f32::NAN;
    }
    let half = f64::from(width) / 2.0;
    let offset = (f64::from(x) - half) / half;
    (offset * (f64::from(hfov_deg).to_radians() / 2.0).tan()).atan().to_degrees() as f32
}

impl SoundingObject {
    /// The bearing of the object's centroid in a frame `width` pixels wide; see [`bearing_deg`].
    pub fn bearing_deg(&self, width: u32, hfov_deg: f32) -> f32 {
        bearing_deg(self.centroid[0], width, hfov_deg)
    }
}

#[derive(Clone, Copy)]
struct Stats {
    class: u8,
    min_x: u32,
    min_y: u32,
    max_x: u32,
    max_y: u32,
    area: u64,
    sum_x: f64,
    sum_y: f64,
    sum_conf: f64,
}

/// 8-connected components per label, skipping label 0. Regions with fewer than `min_area` pixels are
/// dropped. Objects come ordered by label, then by their first pixel in raster order (top row
/// first, leftmost first), which is also imageproc's numbering order, so the output is
/// deterministic.
pub fn find_objects(mask: &FrameMask, labels: Option<&[String]>, min_area: u64) -> Vec<SoundingObject> {
    let (w, h) = (mask.width, mask.height);
    let n = w as usize * h as usize;
    // imageproc panics on 2^32 pixels or more; no real frame is that large, and a malformed mask
    // yields no objects rather than a crash.
    if n == 0 || mask.labels.len() != n || mask.confidence.len() != n || n as u64 >= (1u64 << 32) {
        if n != 0 {
            log::warn!(
                "find_objects: mask {w}x{h} has {} labels / {} confidences; no objects",
                mask.labels.len(),
                mask.confidence.len()
            );
        }
        return Vec::new();
    }
    let img: GrayImage = match ImageBuffer::from_raw(w, h, mask.labels.clone()) {
        Some(img) => img,
        None => return Vec::new(),
    };
    // Neighbouring pixels with different non-zero labels never join: connected_components only
    // links pixels of equal value, so one pass labels every class at once.
    let components: ImageBuffer<Luma<u32>, Vec<u32>> = connected_components(&img, Connectivity::Eight, Luma([0u8]));

    let mut stats: Vec<Option<Stats>> = Vec::new();
    for (i, (&comp, (&class, &conf))) in
        components.as_raw().iter().zip(mask.labels.iter().zip(&mask.confidence)).enumerate()
    {
        if comp == 0 {
            continue;
        }
        let (x, y) = ((i % w as usize) as u32, (i / w as usize) as u32);
        let idx = comp as usize - 1;
        if idx >= stats.len() {
            stats.resize(idx + 1, None);
        }
        // Components are numbered in raster order, so the first pixel seen is the topmost.
        let s = stats[idx].get_or_insert(Stats {
            class,
            min_x: x,
            min_y: y,
            max_x: x,
            max_y: y,
            area: 0,
            sum_x: 0.0,
            sum_y: 0.0,
            sum_conf: 0.0,
        });
        s.min_x = s.min_x.min(x);
        s.max_x = s.max_x.max(x);
        s.min_y = s.min_y.min(y);
        s.max_y = s.max_y.max(y);
        s.area += 1;
        s.sum_x += x as f64 + 0.5;
        s.sum_y += y as f64 + 0.5;
        s.sum_conf += if conf.is_finite() { conf as f64 } else { 0.0 };
    }
    // Stable sort: within a class, raster order of the first pixel is kept.
    let mut stats: Vec<Stats> = stats.into_iter().flatten().collect();
    stats.sort_by_key(|s| s.class);
    stats
        .iter()
        .filter(|s| s.area >= min_area.max(1))
        .enumerate()
        .map(|(i, s)| SoundingObject {
            id: i as u32 + 1,
            class: s.class as u32,
            label: labels.and_then(|l| l.get(s.class as usize)).cloned(),
            bbox: [s.min_x, s.min_y, s.max_x - s.min_x + 1, s.max_y - s.min_y + 1],
            area: s.area,
            centroid: [(s.sum_x / s.area as f64) as f32, (s.sum_y / s.area as f64) as f32],
            confidence: (s.sum_conf / s.area as f64) as f32,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask(w: u32, h: u32, labels: &[u8]) -> FrameMask {
        FrameMask { width: w, height: h, labels: labels.to_vec(), confidence: vec![1.0; labels.len()] }
    }

    #[test]
    fn diagonal_pixels_join_and_classes_stay_apart() {
        #[rustfmt::skip]
        let m = mask(4, 3, &[
            1, 0, 0, 2,
            0, 1, 2, 2,
            0, 0, 1, 1,
        ]);
        let objs = find_objects(&m, None, 0);
        assert_eq!(objs.len(), 2);
        assert_eq!((objs[0].class, objs[0].area, objs[0].bbox), (1, 4, [0, 0, 4, 3]));
        assert_eq!((objs[1].class, objs[1].area, objs[1].bbox), (2, 3, [2, 0, 2, 2]));
        assert_eq!(objs[1].id, 2);
    }

    #[test]
    fn malformed_and_empty_masks_give_nothing() {
        assert!(find_objects(&mask(0, 0, &[]), None, 0).is_empty());
        assert!(find_objects(&mask(3, 3, &[1; 4]), None, 0).is_empty());
        assert!(find_objects(&mask(2, 2, &[0; 4]), None, 0).is_empty());
    }
}
