//! Connected regions of a label map → sounding objects with box, area, centroid and confidence.

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
    /// Two-stage (`bavs`) packages: the heard sound that keeps the object (`None` otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sound: Option<ObjectSound>,
}

/// The sound that keeps an object in a two-stage package's output: a node of the label tree (a
/// tagger label, or a category above some) heard in the frame's second.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ObjectSound {
    /// The node's name, e.g. `"dog_bark"` or `"animal"`.
    pub tag: String,
    /// The tagger's probability for it, in [0, 1].
    pub score: f32,
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
    /// Raster index of the region's first pixel: regions of a class are listed in this order.
    first: u32,
    min_x: u32,
    min_y: u32,
    max_x: u32,
    max_y: u32,
    area: u64,
    sum_x: f64,
    sum_y: f64,
    sum_conf: f64,
}

/// Finds the objects of a mask with scratch buffers kept between calls: after the first frames of
/// a size (and the most regions seen), a call allocates nothing, so a stream can run it per frame.
/// [`find_objects`] is the one-shot form.
///
/// The regions are 8-connected components of equal non-zero labels, found in two raster passes
/// with a union-find over provisional labels (each provisional label is a pixel's index into the
/// same-size `parent` table, so its size is fixed by the frame). The tests hold it to imageproc's
/// `connected_components` on random masks.
#[derive(Default)]
pub struct ObjectFinder {
    /// Provisional label + 1 of each pixel (0: background).
    component: Vec<u32>,
    /// Union-find parents of provisional labels.
    parent: Vec<u32>,
    stats: Vec<Stats>,
}

impl ObjectFinder {
    /// A finder with empty scratch buffers; they grow on the first frames.
    pub fn new() -> Self {
        Self::default()
    }

    fn root(parent: &mut [u32], mut a: u32) -> u32 {
        while parent[a as usize] != a {
            // Path halving keeps the trees flat without recursion.
            let grand = parent[parent[a as usize] as usize];
            parent[a as usize] = grand;
            a = grand;
        }
        a
    }

    /// Joins two provisional labels; the smaller root wins, so a region's root is its first label.
    fn union(parent: &mut [u32], a: u32, b: u32) -> u32 {
        let (ra, rb) = (Self::root(parent, a), Self::root(parent, b));
        let (lo, hi) = if ra < rb { (ra, rb) } else { (rb, ra) };
        parent[hi as usize] = lo;
        lo
    }

    /// The objects of `mask` into `out` (cleared first; its elements and their label strings are
    /// reused). Ordered by label, then by first pixel in raster order (top row first, leftmost
    /// first); regions with fewer than `min_area` pixels are dropped.
    pub fn find_into(&mut self, mask: &FrameMask, labels: Option<&[String]>, min_area: u64, out: &mut Vec<SoundingObject>) {
        let (w, h) = (mask.width as usize, mask.height as usize);
        let n = w * h;
        // Provisional labels are u32 pixel indices; no real frame reaches 2^32 pixels, and a
        // malformed mask yields no objects rather than a crash.
        if n == 0 || mask.labels.len() != n || mask.confidence.len() != n || n as u64 >= u32::MAX as u64 {
            if n != 0 {
                log::warn!(
                    "find_objects: mask {w}x{h} has {} labels / {} confidences; no objects",
                    mask.labels.len(),
                    mask.confidence.len()
                );
            }
            out.clear();
            return;
        }
        let labels_px = &mask.labels;
        self.component.clear();
        self.component.resize(n, 0);
        self.parent.clear();
        let (component, parent) = (&mut self.component, &mut self.parent);
        // Pass 1: each pixel joins its already-labelled 8-neighbours of the same value (west,
        // north-west, north, north-east); a pixel with none starts a provisional label.
        for y in 0..h {
            for x in 0..w {
                let i = y * w + x;
                let v = labels_px[i];
                if v == 0 {
                    continue;
                }
                let mut label = u32::MAX;
                let join = |j: usize, label: &mut u32, parent: &mut Vec<u32>| {
                    if labels_px[j] == v {
                        let other = component[j] - 1;
                        *label = if *label == u32::MAX { Self::root(parent, other) } else { Self::union(parent, *label, other) };
                    }
                };
                if x > 0 {
                    join(i - 1, &mut label, parent);
                }
                if y > 0 {
                    if x > 0 {
                        join(i - w - 1, &mut label, parent);
                    }
                    join(i - w, &mut label, parent);
                    if x + 1 < w {
                        join(i - w + 1, &mut label, parent);
                    }
                }
                if label == u32::MAX {
                    label = parent.len() as u32;
                    parent.push(label);
                }
                component[i] = label + 1;
            }
        }
        // Pass 2: statistics per root, in raster order, so each region's first pixel comes first
        // and its sums add up in the same order as always.
        self.stats.clear();
        self.stats.resize(parent.len(), Stats {
            class: 0,
            first: u32::MAX,
            min_x: 0,
            min_y: 0,
            max_x: 0,
            max_y: 0,
            area: 0,
            sum_x: 0.0,
            sum_y: 0.0,
            sum_conf: 0.0,
        });
        for (i, (&c, &conf)) in component.iter().zip(&mask.confidence).enumerate() {
            if c == 0 {
                continue;
            }
            let (x, y) = ((i % w) as u32, (i / w) as u32);
            let s = &mut self.stats[Self::root(parent, c - 1) as usize];
            if s.area == 0 {
                *s = Stats { class: labels_px[i], first: i as u32, min_x: x, min_y: y, max_x: x, max_y: y, ..*s };
            }
            s.min_x = s.min_x.min(x);
            s.max_x = s.max_x.max(x);
            s.min_y = s.min_y.min(y);
            s.max_y = s.max_y.max(y);
            s.area += 1;
            s.sum_x += x as f64 + 0.5;
            s.sum_y += y as f64 + 0.5;
            s.sum_conf += if conf.is_finite() { conf as f64 } else { 0.0 };
        }
        // Roots only, in place; then by label and first pixel (unique keys: an unstable sort,
        // which needs no buffer, gives the one order).
        let min_area = min_area.max(1);
        self.stats.retain(|s| s.area >= min_area);
        self.stats.sort_unstable_by_key(|s| (s.class, s.first));
        out.truncate(self.stats.len());
        for (i, s) in self.stats.iter().enumerate() {
            let label = labels.and_then(|l| l.get(s.class as usize));
            let object = SoundingObject {
                id: i as u32 + 1,
                class: s.class as u32,
                label: None,
                bbox: [s.min_x, s.min_y, s.max_x - s.min_x + 1, s.max_y - s.min_y + 1],
                area: s.area,
                centroid: [(s.sum_x / s.area as f64) as f32, (s.sum_y / s.area as f64) as f32],
                confidence: (s.sum_conf / s.area as f64) as f32,
                sound: None,
            };
            match out.get_mut(i) {
                Some(o) => {
                    // Keeps the old label's string buffer when there is one.
                    let mut old_label = o.label.take();
                    match (&mut old_label, label) {
                        (Some(dst), Some(src)) => dst.clone_from(src),
                        (_, src) => old_label = src.cloned(),
                    }
                    *o = SoundingObject { label: old_label, ..object };
                }
                None => out.push(SoundingObject { label: label.cloned(), ..object }),
            }
        }
    }
}

/// 8-connected components per label, skipping label 0. Regions with fewer than `min_area` pixels are
/// dropped. Objects come ordered by label, then by their first pixel in raster order (top row
/// first, leftmost first), so the output is deterministic. For repeated calls, [`ObjectFinder`]
/// keeps its buffers.
pub fn find_objects(mask: &FrameMask, labels: Option<&[String]>, min_area: u64) -> Vec<SoundingObject> {
    let mut out = Vec::new();
    ObjectFinder::new().find_into(mask, labels, min_area, &mut out);
    out
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

    /// The objects as imageproc's connected components give them: the reference for the
    /// union-find labelling, with the statistics summed the same way.
    fn reference_objects(m: &FrameMask, labels: Option<&[String]>, min_area: u64) -> Vec<SoundingObject> {
        use image::{GrayImage, ImageBuffer, Luma};
        use imageproc::region_labelling::{connected_components, Connectivity};
        let w = m.width as usize;
        let img: GrayImage = ImageBuffer::from_raw(m.width, m.height, m.labels.clone()).unwrap();
        let comps: ImageBuffer<Luma<u32>, Vec<u32>> = connected_components(&img, Connectivity::Eight, Luma([0u8]));
        let mut stats: Vec<Option<Stats>> = Vec::new();
        for (i, &c) in comps.as_raw().iter().enumerate() {
            if c == 0 {
                continue;
            }
            let (x, y) = ((i % w) as u32, (i / w) as u32);
            if stats.len() < c as usize {
                stats.resize(c as usize, None);
            }
            let s = stats[c as usize - 1].get_or_insert(Stats {
                class: m.labels[i],
                first: i as u32,
                min_x: x,
                min_y: y,
                max_x: x,
                max_y: y,
                area: 0,
                sum_x: 0.0,
                sum_y: 0.0,
                sum_conf: 0.0,
            });
            (s.min_x, s.max_x, s.min_y, s.max_y) = (s.min_x.min(x), s.max_x.max(x), s.min_y.min(y), s.max_y.max(y));
            s.area += 1;
            s.sum_x += x as f64 + 0.5;
            s.sum_y += y as f64 + 0.5;
            s.sum_conf += m.confidence[i] as f64;
        }
        // imageproc numbers components by first pixel; a stable sort by label keeps that order.
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
                sound: None,
            })
            .collect()
    }

    /// Random masks of several densities, label counts and shapes (including one-row, one-column
    /// and spiral-prone sparse ones), through one finder reused across all of them: the objects
    /// equal imageproc's to the bit.
    #[test]
    fn union_find_matches_imageproc() {
        let names: Vec<String> = (0..5).map(|i| format!("class{i}")).collect();
        let mut finder = ObjectFinder::new();
        let mut out = Vec::new();
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut regions = 0;
        for case in 0..300 {
            let w = 1 + (next() % 40) as u32;
            let h = 1 + (next() % 30) as u32;
            let classes = 1 + (next() % 4) as u8;
            let density = next() % 100;
            let n = (w * h) as usize;
            let labels: Vec<u8> =
                (0..n).map(|_| if next() % 100 < density { 1 + (next() % classes as u64) as u8 } else { 0 }).collect();
            let confidence: Vec<f32> = (0..n).map(|_| (next() % 1000) as f32 / 1000.0).collect();
            let m = FrameMask { width: w, height: h, labels, confidence };
            let min_area = if case % 3 == 0 { 3 } else { 0 };
            let with_names = (case % 2 == 0).then_some(names.as_slice());
            finder.find_into(&m, with_names, min_area, &mut out);
            // imageproc 0.27 panics on a 1×1 image with a labelled pixel (its union-find count is
            // off by one there), which the old find_objects passed on as a crash; that case is
            // checked by hand in `one_pixel_frames`.
            if w * h == 1 {
                continue;
            }
            let want = reference_objects(&m, with_names, min_area);
            assert_eq!(out, want, "case {case}: {w}x{h}, {classes} classes, density {density}%");
            regions += out.len();
        }
        assert!(regions > 1000, "the random masks should hold many regions: {regions}");
    }

    #[test]
    fn one_pixel_frames() {
        let one = FrameMask { width: 1, height: 1, labels: vec![3], confidence: vec![0.5] };
        let objs = find_objects(&one, None, 0);
        assert_eq!(objs.len(), 1);
        let o = &objs[0];
        assert_eq!((o.id, o.class, o.bbox, o.area, o.centroid, o.confidence), (1, 3, [0, 0, 1, 1], 1, [0.5, 0.5], 0.5));
        assert!(find_objects(&one, None, 2).is_empty());
        assert!(find_objects(&mask(1, 1, &[0]), None, 0).is_empty());
    }

    #[test]
    fn malformed_and_empty_masks_give_nothing() {
        assert!(find_objects(&mask(0, 0, &[]), None, 0).is_empty());
        assert!(find_objects(&mask(3, 3, &[1; 4]), None, 0).is_empty());
        assert!(find_objects(&mask(2, 2, &[0; 4]), None, 0).is_empty());
    }
}
