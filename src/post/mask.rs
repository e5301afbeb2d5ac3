//! Logits at model resolution → label maps at the source frame's size.
//!
//! Binary (S4/MS3) models: the logit map is upsampled bilinearly with half-pixel centres (PyTorch
//! `F.interpolate(mode="bilinear", align_corners=False)`), then a pixel is foreground when
//! σ(logit) > threshold, strictly, as the official code binarises (docs/spec/masks.md §5).
//!
//! Semantic (AVSS) models: argmax over the classes at model resolution (ties go to the lowest
//! index, so all-equal logits give background), then nearest-neighbour upsampling of the labels.
//! Upsampling labels instead of logits keeps the work per output pixel independent of K.

use super::softmax::{heard_mass, heard_mass_keeps, softmax_argmax};
use super::PostError;

/// A per-pixel label map at the source frame's size.
///
/// `labels`: 0 = background; binary models use 1 for foreground; semantic models use the class
/// index (0..K-1, 0 = background). `confidence`: probability of the chosen label per pixel
/// (σ or 1 − σ for binary models, the softmax probability of the winner for semantic ones).
#[derive(Clone, Debug, PartialEq)]
pub struct FrameMask {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Row-major label per pixel, `width·height` values.
    pub labels: Vec<u8>,
    /// Row-major probability of the chosen label per pixel, `width·height` values in 0..1.
    pub confidence: Vec<f32>,
}

impl Default for FrameMask {
    /// An empty (0×0) mask, to be sized by a builder.
    fn default() -> Self {
        Self::background(0, 0)
    }
}

impl FrameMask {
    /// An all-background mask with zero confidence.
    pub fn background(width: u32, height: u32) -> Self {
        let n = width as usize * height as usize;
        Self { width, height, labels: vec![0; n], confidence: vec![0.0; n] }
    }

    /// True when no pixel is foreground (every label is 0).
    pub fn is_empty(&self) -> bool {
        self.labels.iter().all(|&l| l == 0)
    }

    /// Number of pixels with a non-zero label.
    pub fn foreground_pixels(&self) -> usize {
        self.labels.iter().filter(|&&l| l != 0).count()
    }

    /// Foreground pixels over all pixels; 0 for a mask with no pixels.
    pub fn foreground_fraction(&self) -> f64 {
        if self.labels.is_empty() {
            0.0
        } else {
            self.foreground_pixels() as f64 / self.labels.len() as f64
        }
    }

    /// The largest label present (0 for an empty mask).
    pub fn max_label(&self) -> u8 {
        self.labels.iter().copied().max().unwrap_or(0)
    }

    /// Resizes to `width`×`height`, all background with zero confidence, keeping the buffers.
    pub(crate) fn reset(&mut self, width: u32, height: u32) {
        let n = width as usize * height as usize;
        self.width = width;
        self.height = height;
        self.labels.clear();
        self.labels.resize(n, 0);
        self.confidence.clear();
        self.confidence.resize(n, 0.0);
    }
}

/// One output coordinate's two source taps and the weight of the second, for half-pixel-centre
/// bilinear resampling exactly as PyTorch computes them (f32 scale `in/out`, negative source
/// coordinates clamped to 0, the second tap clamped to the last pixel).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Tap {
    i0: usize,
    i1: usize,
    w0: f32,
    w1: f32,
}

fn bilinear_taps(input: usize, output: usize, taps: &mut Vec<Tap>) {
    taps.clear();
    let scale = input as f32 / output as f32;
    for d in 0..output {
        let src = (scale * (d as f32 + 0.5) - 0.5).max(0.0);
        let i0 = (src as usize).min(input - 1);
        let i1 = if i0 + 1 < input { i0 + 1 } else { i0 };
        let w1 = (src - i0 as f32).clamp(0.0, 1.0);
        taps.push(Tap { i0, i1, w0: 1.0 - w1, w1 });
    }
}

/// Nearest source index for each output index, sampling at pixel centres (as PIL NEAREST and
/// PyTorch "nearest-exact"); integer arithmetic, so exact for any size.
fn nearest_taps(input: usize, output: usize, taps: &mut Vec<usize>) {
    taps.clear();
    taps.extend((0..output).map(|d| (((2 * d + 1) * input) / (2 * output)).min(input - 1)));
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Builds masks frame after frame, keeping its scratch buffers (resampling taps, the horizontally
/// interpolated rows, the label map at model resolution) between calls.
#[derive(Debug, Default)]
pub struct MaskBuilder {
    x_taps: Vec<Tap>,
    y_taps: Vec<Tap>,
    x_near: Vec<usize>,
    y_near: Vec<usize>,
    rows: Vec<f32>,
    small_labels: Vec<u8>,
    small_conf: Vec<f32>,
    /// The arg-max labels and probabilities beside the heard-mass ones (`heard_mass_into`).
    small_arg_labels: Vec<u8>,
    small_arg_conf: Vec<f32>,
}

impl MaskBuilder {
    /// A builder with empty scratch buffers.
    pub fn new() -> Self {
        Self::default()
    }

    /// See [`binary_mask`]; writes into `out`, reusing its allocations.
    #[allow(clippy::too_many_arguments)]
    pub fn binary_into(
        &mut self,
        logits: &[f32],
        h: usize,
        w: usize,
        out_w: u32,
        out_h: u32,
        threshold: f32,
        out: &mut FrameMask,
    ) -> Result<(), PostError> {
        check_len(logits, &[h, w], "h*w")?;
        out.reset(out_w, out_h);
        let (ow, oh) = (out_w as usize, out_h as usize);
        if ow == 0 || oh == 0 {
            return Ok(());
        }
        if h == 0 || w == 0 {
            return Err(PostError::LogitShape { shape: vec![h, w], expected: "h >= 1, w >= 1".into() });
        }
        bilinear_taps(w, ow, &mut self.x_taps);
        bilinear_taps(h, oh, &mut self.y_taps);
        // Horizontal pass over every source row, then one vertical blend per output row. The
        // arithmetic is h0·(w0·a + w1·b) + h1·(w0·c + w1·d), the order PyTorch's kernel uses.
        self.rows.clear();
        self.rows.resize(h * ow, 0.0);
        for (y, row) in self.rows.chunks_exact_mut(ow).enumerate() {
            let src = &logits[y * w..(y + 1) * w];
            for (o, t) in row.iter_mut().zip(&self.x_taps) {
                *o = t.w0 * src[t.i0] + t.w1 * src[t.i1];
            }
        }
        for (oy, t) in self.y_taps.iter().enumerate() {
            let a = &self.rows[t.i0 * ow..(t.i0 + 1) * ow];
            let b = &self.rows[t.i1 * ow..(t.i1 + 1) * ow];
            let labels = &mut out.labels[oy * ow..(oy + 1) * ow];
            let conf = &mut out.confidence[oy * ow..(oy + 1) * ow];
            for x in 0..ow {
                let p = sigmoid(t.w0 * a[x] + t.w1 * b[x]);
                // NaN logits fall through as background with zero confidence.
                if p > threshold {
                    labels[x] = 1;
                    conf[x] = p;
                } else {
                    labels[x] = 0;
                    conf[x] = if p.is_nan() { 0.0 } else { 1.0 - p };
                }
            }
        }
        Ok(())
    }

    /// Binary mask of one frame, as [`binary_mask`], but returning an error instead of panicking
    /// when `logits` is not `[h*w]`.
    pub fn binary(
        &mut self,
        logits: &[f32],
        h: usize,
        w: usize,
        out_w: u32,
        out_h: u32,
        threshold: f32,
    ) -> Result<FrameMask, PostError> {
        let mut out = FrameMask::background(0, 0);
        self.binary_into(logits, h, w, out_w, out_h, threshold, &mut out)?;
        Ok(out)
    }

    /// See [`semantic_mask`]; writes into `out`, reusing its allocations.
    #[allow(clippy::too_many_arguments)]
    pub fn semantic_into(
        &mut self,
        logits: &[f32],
        k: usize,
        h: usize,
        w: usize,
        out_w: u32,
        out_h: u32,
        out: &mut FrameMask,
    ) -> Result<(), PostError> {
        check_len(logits, &[k, h, w], "k*h*w")?;
        if k == 0 || k > 256 {
            return Err(PostError::LogitShape {
                shape: vec![k, h, w],
                expected: "1..=256 classes (labels are stored as u8)".into(),
            });
        }
        out.reset(out_w, out_h);
        let (ow, oh) = (out_w as usize, out_h as usize);
        if ow == 0 || oh == 0 {
            return Ok(());
        }
        if h == 0 || w == 0 {
            return Err(PostError::LogitShape { shape: vec![k, h, w], expected: "h >= 1, w >= 1".into() });
        }
        let plane = h * w;
        self.small_labels.clear();
        self.small_labels.resize(plane, 0);
        self.small_conf.clear();
        self.small_conf.resize(plane, 0.0);
        // Ties go to the lowest index (torch.argmax on CPU does the same); k <= 256 was checked,
        // so every class index fits the u8 label.
        let (labels, conf) = (&mut self.small_labels, &mut self.small_conf);
        softmax_argmax(logits, k, plane, |start, best, prob| {
            for (dst, &b) in labels[start..start + best.len()].iter_mut().zip(best) {
                *dst = b as u8;
            }
            conf[start..start + prob.len()].copy_from_slice(prob);
        });
        self.upsample_small(h, w, out);
        Ok(())
    }

    /// A two-stage package's mask under the heard-mass rule ([`crate::PixelRule::HeardMass`]):
    /// per pixel at model resolution, with b the background's softmax probability, m the heard
    /// classes' (`is_heard`, one flag per class) and s = 1 − b − m the rest's, the pixel is kept
    /// when m > b and m > `silent_ratio`·s, labelled with its most probable heard class, with
    /// confidence m; otherwise it is background with confidence 1 − m (the probability that no
    /// heard class is there). Then nearest-neighbour upsampling to `out_w`×`out_h`, as
    /// [`MaskBuilder::semantic_into`]. The same pass also writes the arg-max mask
    /// ([`MaskBuilder::semantic_into`]'s, exactly) into `arg_max`, whose objects the package
    /// reports as silent when no heard sound supports them.
    #[allow(clippy::too_many_arguments)]
    pub fn heard_mass_into(
        &mut self,
        logits: &[f32],
        (k, h, w): (usize, usize, usize),
        is_heard: &[bool],
        silent_ratio: f32,
        out_w: u32,
        out_h: u32,
        out: &mut FrameMask,
        arg_max: &mut FrameMask,
    ) -> Result<(), PostError> {
        check_len(logits, &[k, h, w], "k*h*w")?;
        if k == 0 || k > 256 || is_heard.len() != k {
            return Err(PostError::LogitShape {
                shape: vec![k, h, w],
                expected: format!("1..=256 classes (labels are stored as u8), one heard flag per class ({} given)", is_heard.len()),
            });
        }
        out.reset(out_w, out_h);
        arg_max.reset(out_w, out_h);
        if out_w == 0 || out_h == 0 {
            return Ok(());
        }
        if h == 0 || w == 0 {
            return Err(PostError::LogitShape { shape: vec![k, h, w], expected: "h >= 1, w >= 1".into() });
        }
        let plane = h * w;
        for v in [&mut self.small_labels, &mut self.small_arg_labels] {
            v.clear();
            v.resize(plane, 0);
        }
        for v in [&mut self.small_conf, &mut self.small_arg_conf] {
            v.clear();
            v.resize(plane, 0.0);
        }
        let (labels, conf) = (&mut self.small_labels, &mut self.small_conf);
        let (arg_labels, arg_conf) = (&mut self.small_arg_labels, &mut self.small_arg_conf);
        heard_mass(logits, k, plane, is_heard, |start, b| {
            let n = b.best.len();
            let dst = labels[start..start + n].iter_mut().zip(conf[start..start + n].iter_mut());
            for ((l, c), ((&best, &p0), &m)) in dst.zip(b.best_heard.iter().zip(b.background).zip(b.heard)) {
                // k <= 256 was checked, so every class index fits the u8 label.
                (*l, *c) = if heard_mass_keeps(p0, m, silent_ratio) { (best as u8, m) } else { (0, 1.0 - m) };
            }
            for (l, &best) in arg_labels[start..start + n].iter_mut().zip(b.best) {
                *l = best as u8;
            }
            arg_conf[start..start + n].copy_from_slice(b.prob);
        });
        self.upsample_small(h, w, out);
        std::mem::swap(&mut self.small_labels, &mut self.small_arg_labels);
        std::mem::swap(&mut self.small_conf, &mut self.small_arg_conf);
        self.upsample_small(h, w, arg_max);
        Ok(())
    }

    /// The model-resolution labels and confidences (`small_*`, `h`×`w`) into `out`, already reset
    /// to its size, by nearest neighbour.
    fn upsample_small(&mut self, h: usize, w: usize, out: &mut FrameMask) {
        let (ow, oh) = (out.width as usize, out.height as usize);
        nearest_taps(w, ow, &mut self.x_near);
        nearest_taps(h, oh, &mut self.y_near);
        for (oy, &sy) in self.y_near.iter().enumerate() {
            let src_l = &self.small_labels[sy * w..(sy + 1) * w];
            let src_c = &self.small_conf[sy * w..(sy + 1) * w];
            let labels = &mut out.labels[oy * ow..(oy + 1) * ow];
            let conf = &mut out.confidence[oy * ow..(oy + 1) * ow];
            for (x, &sx) in self.x_near.iter().enumerate() {
                labels[x] = src_l[sx];
                conf[x] = src_c[sx];
            }
        }
    }

    /// Semantic mask of one frame, as [`semantic_mask`], but returning an error instead of
    /// panicking when `logits` is not `[k*h*w]` or k is not in 1..=256.
    pub fn semantic(
        &mut self,
        logits: &[f32],
        k: usize,
        h: usize,
        w: usize,
        out_w: u32,
        out_h: u32,
    ) -> Result<FrameMask, PostError> {
        let mut out = FrameMask::background(0, 0);
        self.semantic_into(logits, k, h, w, out_w, out_h, &mut out)?;
        Ok(out)
    }
}

fn check_len(logits: &[f32], dims: &[usize], expected: &str) -> Result<(), PostError> {
    let n = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    if n != Some(logits.len()) {
        return Err(PostError::LogitShape {
            shape: vec![logits.len()],
            expected: format!("{expected} = {}", dims.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("*")),
        });
    }
    Ok(())
}

/// Binary mask of one frame. `logits`: `[h*w]` at model resolution. Upsamples the logits
/// bilinearly (half-pixel centres) to `out_w`×`out_h`, then foreground = σ(logit) > `threshold`.
///
/// # Panics
/// If `logits.len() != h*w` (a caller bug: the API checks model output shapes first). Use
/// [`MaskBuilder::binary`] for a `Result` and reused scratch buffers.
pub fn binary_mask(logits: &[f32], h: usize, w: usize, out_w: u32, out_h: u32, threshold: f32) -> FrameMask {
    MaskBuilder::new().binary(logits, h, w, out_w, out_h, threshold).unwrap_or_else(|e| panic!("binary_mask: {e}"))
}

/// Semantic mask of one frame. `logits`: `[k*h*w]`. Argmax over k at model resolution (ties go to
/// the lowest index), the winner's softmax probability as confidence, nearest-neighbour upsampling
/// to `out_w`×`out_h`.
///
/// # Panics
/// If `logits.len() != k*h*w` or k is not in 1..=256. Use [`MaskBuilder::semantic`] for a `Result`.
pub fn semantic_mask(logits: &[f32], k: usize, h: usize, w: usize, out_w: u32, out_h: u32) -> FrameMask {
    MaskBuilder::new().semantic(logits, k, h, w, out_w, out_h).unwrap_or_else(|e| panic!("semantic_mask: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taps_match_pytorch_half_pixel_rule() {
        let mut t = Vec::new();
        bilinear_taps(2, 4, &mut t);
        // src = 0.5*(d+0.5)-0.5 → -0.25 (clamped 0), 0.25, 0.75, 1.25 (second tap clamped).
        assert_eq!(t[0], Tap { i0: 0, i1: 1, w0: 1.0, w1: 0.0 });
        assert_eq!(t[1], Tap { i0: 0, i1: 1, w0: 0.75, w1: 0.25 });
        assert_eq!(t[2], Tap { i0: 0, i1: 1, w0: 0.25, w1: 0.75 });
        assert_eq!(t[3], Tap { i0: 1, i1: 1, w0: 0.75, w1: 0.25 });
        let mut n = Vec::new();
        nearest_taps(3, 7, &mut n);
        assert_eq!(n, vec![0, 0, 1, 1, 1, 2, 2]);
        nearest_taps(4, 2, &mut n);
        assert_eq!(n, vec![1, 3]);
    }

    #[test]
    fn identity_size_binary_is_elementwise() {
        let logits = [-1.0, 0.0, 1e-3, 5.0];
        let m = binary_mask(&logits, 2, 2, 2, 2, 0.5);
        assert_eq!(m.labels, vec![0, 0, 1, 1]);
        assert!((m.confidence[0] - (1.0 - sigmoid(-1.0))).abs() < 1e-7);
        assert_eq!(m.confidence[1], 0.5);
    }

    #[test]
    fn builder_reports_shape_errors() {
        let mut b = MaskBuilder::new();
        assert!(matches!(b.binary(&[0.0; 5], 2, 2, 4, 4, 0.5), Err(PostError::LogitShape { .. })));
        assert!(matches!(b.semantic(&[0.0; 8], 2, 2, 3, 4, 4), Err(PostError::LogitShape { .. })));
        assert!(matches!(b.semantic(&[], 0, 2, 2, 4, 4), Err(PostError::LogitShape { .. })));
    }

    #[test]
    fn nan_logits_become_background() {
        let m = binary_mask(&[f32::NAN, 3.0], 1, 2, 2, 1, 0.5);
        assert_eq!(m.labels, vec![0, 1]);
        assert_eq!(m.confidence[0], 0.0);
    }

    /// Four pixels (2×2) over background and three classes, from probabilities (logits = ln p).
    fn probability_logits(pixels: [[f32; 4]; 4]) -> Vec<f32> {
        (0..4).flat_map(|c| pixels.iter().map(move |p| p[c].ln())).collect()
    }

    #[test]
    fn heard_mass_keeps_what_the_heard_classes_together_win() {
        // Classes 1 and 2 are heard, class 3 is not.
        let logits = probability_logits([
            // The silent class 3 wins the arg-max, but the heard 1 + 2 (0.55) beat the
            // background (0.1) and the silent class (0.35): kept, as class 2, its best heard.
            [0.10, 0.25, 0.30, 0.35],
            // The background (0.6) beats the heard classes together (0.3): not kept, with
            // confidence 1 - 0.3.
            [0.60, 0.20, 0.10, 0.10],
            // Only a little heard mass (0.15) against much silence (0.8): kept at silent_ratio
            // 0.1 (0.15 > 0.08), dropped at 0.5 (0.15 < 0.4).
            [0.05, 0.15, 0.00001, 0.79999],
            // A heard class wins outright.
            [0.05, 0.90, 0.02, 0.03],
        ]);
        let heard = [false, true, true, false];
        let mut b = MaskBuilder::new();
        let mut m = FrameMask::background(0, 0);
        let mut arg = FrameMask::background(0, 0);
        b.heard_mass_into(&logits, (4, 2, 2), &heard, 0.1, 4, 4, &mut m, &mut arg).unwrap();
        let small = |m: &FrameMask| [m.labels[0], m.labels[2], m.labels[8], m.labels[10]];
        assert_eq!(small(&m), [2, 0, 1, 1]);
        // Nearest upsampling: each model pixel covers a 2x2 block.
        assert_eq!(&m.labels[..4], &[2, 2, 0, 0]);
        let want_conf = [0.55, 1.0 - 0.3, 0.15001, 0.92];
        for (i, (&got, want)) in [m.confidence[0], m.confidence[2], m.confidence[8], m.confidence[10]].iter().zip(want_conf).enumerate() {
            assert!((got - want).abs() < 1e-5, "pixel {i}: confidence {got} vs {want}");
        }
        b.heard_mass_into(&logits, (4, 2, 2), &heard, 0.5, 4, 4, &mut m, &mut arg).unwrap();
        assert_eq!(small(&m), [2, 0, 0, 1]);
        // Nothing heard: nothing kept, every pixel background with confidence 1.
        b.heard_mass_into(&logits, (4, 2, 2), &[false; 4], 0.0, 2, 2, &mut m, &mut arg).unwrap();
        assert_eq!((m.labels.as_slice(), m.confidence.as_slice()), (&[0u8; 4][..], &[1.0f32; 4][..]));
        // The arg-max mask of the same pass, for contrast (pixel 0 is class 3's), is
        // semantic_into's.
        b.semantic_into(&logits, 4, 2, 2, 2, 2, &mut m).unwrap();
        assert_eq!(m.labels, vec![3, 0, 3, 1]);
        assert_eq!(arg, m);
    }

    #[test]
    fn heard_mass_reports_shape_errors() {
        let mut b = MaskBuilder::new();
        let (mut m, mut a) = (FrameMask::background(0, 0), FrameMask::background(0, 0));
        assert!(b.heard_mass_into(&[0.0; 8], (2, 2, 2), &[false, true, true], 0.1, 2, 2, &mut m, &mut a).is_err(), "flags per class");
        assert!(b.heard_mass_into(&[0.0; 7], (2, 2, 2), &[false, true], 0.1, 2, 2, &mut m, &mut a).is_err(), "length");
        assert!(b.heard_mass_into(&[0.0; 2], (2, 1, 1), &[false, true], 0.1, 0, 0, &mut m, &mut a).is_ok(), "an empty frame");
    }
}
