//! Logits at model resolution → label maps at the source frame's size.
//!
//! Binary (S4/MS3) models: the logit map is upsampled bilinearly with half-pixel centres (PyTorch
//! `F.interpolate(mode="bilinear", align_corners=False)`), then a pixel is foreground when
//! σ(logit) > threshold, strictly, as the official code binarises (docs/spec/masks.md §5).
//!
//! Semantic (AVSS) models: argmax over the classes at model resolution (ties go to the lowest
//! index, so all-equal logits give background), then nearest-neighbour upsampling of the labels.
//! Upsampling labels instead of logits keeps the work per output pixel independent of K.

use super::softmax::softmax_argmax;
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
        Ok(())
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
}
