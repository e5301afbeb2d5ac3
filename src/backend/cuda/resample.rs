//! The host half of the device's PIL resize (`resample_rows_u8` and `resample_columns_*` in
//! `kernels/preprocess.cu`): each pass's tap table, and the same two passes on the CPU, which the
//! kernels are held to and which is itself held to PIL's output (`tests/data/resize`).
//!
//! PIL's BILINEAR resize (`Image.resize`) is separable. For each output index `o` of an axis of
//! `input` samples resized to `output`:
//! * `scale = input / output`, and the triangle filter is widened to `support = max(scale, 1)`
//!   source samples on each side (antialiasing on a downscale);
//! * the centre is `c = (o + 0.5)·scale`; the taps run from `trunc(c − support + 0.5)` (at least
//!   0) to `trunc(c + support + 0.5)` (at most `input`), exclusive;
//! * tap `i` weighs `max(0, 1 − |(i − c + 0.5) / max(scale, 1)|)`, in f64; the weights are divided
//!   by their sum, then scaled by 2²² and rounded half away from zero to integers.
//!
//! A pass sums `pixel × weight` in integers, starting from 2²¹ (the rounding half), shifts right by
//! 22 and clamps to 0..=255. The horizontal pass runs first, over the rows the vertical pass reads,
//! and its bytes feed the vertical pass (Pillow's `ImagingResampleInner`).

/// Fixed-point bits of a weight (the kernels' `AVS_PIL_BITS`).
pub const PIL_BITS: u32 = 22;

/// One axis's taps: per output index its first source index and tap count (`bounds`, pairs), and
/// its weights (`coeffs`, `taps` per output index, zero past its count).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AxisTaps {
    pub bounds: Vec<i32>,
    pub coeffs: Vec<i32>,
    pub taps: usize,
}

impl AxisTaps {
    /// PIL's BILINEAR taps for `input` samples resized to `output` (both at least 1), written into
    /// `self` (its buffers reused).
    pub fn pil_bilinear_into(&mut self, input: usize, output: usize) {
        let scale = input as f64 / output as f64;
        let widen = scale.max(1.0);
        let support = widen;
        self.taps = support.ceil() as usize * 2 + 1;
        self.bounds.clear();
        self.coeffs.clear();
        self.coeffs.resize(output * self.taps, 0);
        let mut w = vec![0f64; self.taps];
        for o in 0..output {
            let centre = (o as f64 + 0.5) * scale;
            // Truncation toward zero, as C's (int) cast: both ends are > −1 here.
            let first = ((centre - support + 0.5) as i64).max(0) as usize;
            let end = ((centre + support + 0.5) as i64).min(input as i64) as usize;
            let count = end.saturating_sub(first).min(self.taps);
            let mut sum = 0.0;
            for (i, wi) in w[..count].iter_mut().enumerate() {
                let x = ((first + i) as f64 - centre + 0.5) / widen;
                *wi = (1.0 - x.abs()).max(0.0);
                sum += *wi;
            }
            for (dst, &wi) in self.coeffs[o * self.taps..o * self.taps + count].iter_mut().zip(&w[..count]) {
                let k = if sum != 0.0 { wi / sum } else { wi };
                let scaled = k * f64::from(1u32 << PIL_BITS);
                *dst = if scaled < 0.0 { (scaled - 0.5) as i32 } else { (scaled + 0.5) as i32 };
            }
            self.bounds.extend_from_slice(&[first as i32, count as i32]);
        }
    }

    /// The source samples the taps read: `[first, end)`.
    pub fn span(&self) -> (usize, usize) {
        let output = self.bounds.len() / 2;
        if output == 0 {
            return (0, 0);
        }
        let first = self.bounds[0] as usize;
        let end = (0..output).map(|o| (self.bounds[2 * o] + self.bounds[2 * o + 1]) as usize).max().unwrap_or(first);
        (first, end)
    }
}

/// Both passes' taps for one frame size, and the rows of the frame the horizontal pass covers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PilTables {
    pub columns: AxisTaps,
    /// Row taps, with first indices relative to `row0`.
    pub rows: AxisTaps,
    pub row0: usize,
    pub row_count: usize,
}

impl PilTables {
    /// The tables for a `sw`×`sh` frame resized to `dw`×`dh`, into `self`.
    pub fn compute_into(&mut self, (sw, sh): (usize, usize), (dw, dh): (usize, usize)) {
        self.columns.pil_bilinear_into(sw, dw);
        self.rows.pil_bilinear_into(sh, dh);
        let (first, end) = self.rows.span();
        self.row0 = first;
        self.row_count = end - first;
        for pair in self.rows.bounds.chunks_exact_mut(2) {
            pair[0] -= first as i32;
        }
    }
}

#[cfg(test)]
fn pil_byte(sum: i32) -> u8 {
    (sum >> PIL_BITS).clamp(0, 255) as u8
}

/// PIL's BILINEAR resize of an RGB8 frame (HWC, rows `stride` bytes apart) to `dw`×`dh`, on the CPU
/// in the kernels' integer arithmetic: the reference they are held to.
#[cfg(test)]
pub fn pil_resize_rgb(src: &[u8], (sw, sh, stride): (usize, usize, usize), (dw, dh): (usize, usize)) -> Vec<u8> {
    let mut t = PilTables::default();
    t.compute_into((sw, sh), (dw, dh));
    let half = 1i32 << (PIL_BITS - 1);
    let mut tmp = vec![0u8; t.row_count * dw * 3];
    for r in 0..t.row_count {
        let row = &src[(t.row0 + r) * stride..];
        for x in 0..dw {
            let (first, count) = (t.columns.bounds[2 * x] as usize, t.columns.bounds[2 * x + 1] as usize);
            let k = &t.columns.coeffs[x * t.columns.taps..][..count];
            for c in 0..3 {
                let s = k.iter().enumerate().fold(half, |s, (i, &w)| s + i32::from(row[3 * (first + i) + c]) * w);
                tmp[(r * dw + x) * 3 + c] = pil_byte(s);
            }
        }
    }
    let mut out = vec![0u8; dh * dw * 3];
    for y in 0..dh {
        let (first, count) = (t.rows.bounds[2 * y] as usize, t.rows.bounds[2 * y + 1] as usize);
        let k = &t.rows.coeffs[y * t.rows.taps..][..count];
        for x in 0..dw {
            for c in 0..3 {
                let s = k.iter().enumerate().fold(half, |s, (i, &w)| s + i32::from(tmp[((first + i) * dw + x) * 3 + c]) * w);
                out[(y * dw + x) * 3 + c] = pil_byte(s);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each output index's weights sum to 2²² within rounding, cover at most `taps` samples inside
    /// the input, and an unchanged size is the identity (one tap of weight 2²²).
    #[test]
    fn taps_are_normalised_and_inside_the_input() {
        let mut a = AxisTaps::default();
        for (input, output) in [(1, 1), (7, 7), (1920, 224), (224, 512), (13, 224), (300, 1), (5, 700), (333, 224)] {
            a.pil_bilinear_into(input, output);
            for o in 0..output {
                let (first, count) = (a.bounds[2 * o] as usize, a.bounds[2 * o + 1] as usize);
                assert!(count >= 1 && count <= a.taps && first + count <= input, "{input}->{output} at {o}: {first}+{count}");
                let sum: i64 = a.coeffs[o * a.taps..][..count].iter().map(|&w| i64::from(w)).sum();
                assert!((sum - (1 << PIL_BITS)).abs() <= count as i64, "{input}->{output} at {o}: weights sum to {sum}");
                assert!(a.coeffs[o * a.taps + count..(o + 1) * a.taps].iter().all(|&w| w == 0));
                if input == output {
                    assert_eq!((first, a.coeffs[o * a.taps]), (o, 1 << PIL_BITS));
                }
            }
        }
    }

    /// The row tables are relative to the first row any output reads, and the horizontal pass
    /// covers exactly the rows they read.
    #[test]
    fn row_tables_cover_the_rows_read() {
        let mut t = PilTables::default();
        for (sh, dh) in [(300, 3), (3, 300), (517, 224), (1, 1)] {
            t.compute_into((40, sh), (40, dh));
            let end = (0..dh).map(|y| (t.rows.bounds[2 * y] + t.rows.bounds[2 * y + 1]) as usize).max().unwrap();
            assert_eq!(end, t.row_count, "{sh}->{dh}");
            assert!(t.row0 + t.row_count <= sh);
            assert!(t.rows.bounds.chunks_exact(2).any(|p| p[0] == 0));
        }
    }

    /// Against PIL itself: the `Image.resize(BILINEAR)` fixtures of tests/data/resize (made by
    /// tools/avseg_tools/make_resize_reference.py with the Pillow of tools/requirements.txt).
    /// Upstream Pillow always runs the horizontal pass first, which this follows. The Pillow build
    /// that made the fixtures runs the vertical pass first for some shapes (seen here on
    /// 333×517 → 224×224 only, and on random tall frames), where a value can then differ by one
    /// level; every other fixture must match to the byte.
    #[test]
    fn matches_pil_fixtures() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/resize");
        let cases: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).unwrap()).unwrap();
        let mut exact = 0;
        for c in cases.as_array().unwrap() {
            let load = |k: &str| image::open(dir.join(c[k].as_str().unwrap())).unwrap().to_rgb8();
            let (input, pil) = (load("input"), load("pil"));
            let (sw, sh) = (input.width() as usize, input.height() as usize);
            let (dw, dh) = (pil.width() as usize, pil.height() as usize);
            let ours = pil_resize_rgb(input.as_raw(), (sw, sh, sw * 3), (dw, dh));
            let worst = ours.iter().zip(pil.as_raw()).map(|(a, b)| a.abs_diff(*b)).max().unwrap();
            let differ = ours.iter().zip(pil.as_raw()).filter(|(a, b)| a != b).count();
            println!("{}: {sw}x{sh} -> {dw}x{dh}: max {worst} levels, {differ} of {} values differ", c["name"], ours.len());
            assert!(worst <= 1, "{}: {worst} levels", c["name"]);
            exact += usize::from(worst == 0);
            if sw >= sh {
                assert_eq!(worst, 0, "{}: a wide frame must match PIL to the byte", c["name"]);
            }
        }
        assert!(exact >= cases.as_array().unwrap().len() - 1, "{exact} fixtures exact");
    }
}
