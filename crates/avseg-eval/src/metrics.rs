//! The AVSBench metrics, computed the way the official code computes them (docs/spec/metrics.md §9).
//!
//! * S4/MS3 Jaccard ([`mask_iou`]) with the empty-GT rule: an empty ground truth scores the
//!   fraction of pixels correctly left as background.
//! * S4/MS3 F-score ([`f_curve`], [`fscore_batch`]) with β² = 0.3 over 255 f32 thresholds on
//!   σ(logit); the official number takes the threshold maximum **per batch**, so it depends on
//!   batch size and order. [`FscoreDataset`] is the batch-independent variant, always reported
//!   beside it and labelled as such.
//! * AVSS ([`AvssAccumulator`]): 71-class mIoU and F over every frame, background and padded
//!   frames included, plus the official `noBg` quirk (it drops the *last* class) as a labelled extra.
//!
//! The arithmetic copies the official dtype (f32) wherever a rounding step could move a value by
//! more than 1e-7; sums across frames are kept in f64, which changes results by less than 1e-7.

use std::ops::Range;

/// β² of the official F-measure.
pub const BETA2: f32 = 0.3;
/// Number of F-measure thresholds (`pr_num`).
pub const PR_NUM: usize = 255;
/// `mask_iou`'s epsilon, added to the union in f32.
pub const IOU_EPS: f32 = 1e-7;
/// `_eval_pr`'s epsilon, added to the predicted and GT pixel counts in f32.
pub const PR_EPS: f32 = 1e-20;
/// The AVSS IoU epsilon (`np.finfo(float).eps`).
pub const AVSS_EPS: f64 = 2.220446049250313e-16;

/// The 255 f32 thresholds, bit-identical to `torch.linspace(0, 1 - 1e-10, 255)` in f32.
///
/// torch fills the first half forwards from the start and the second half backwards from the
/// end, each with one rounding of an exact product; 1 − 1e-10 is 1.0 in f32, so index 127 is
/// exactly 0.5 and the last threshold is exactly 1.0.
pub fn f_thresholds() -> [f32; PR_NUM] {
    let step = (1.0f32 / (PR_NUM as f32 - 1.0)) as f64;
    let half = PR_NUM / 2;
    let mut t = [0f32; PR_NUM];
    for (i, v) in t.iter_mut().enumerate() {
        *v = if i < half {
            (step * i as f64) as f32
        } else {
            (1.0 - step * (PR_NUM - 1 - i) as f64) as f32
        };
    }
    t
}

/// σ in f32 as PyTorch's CPU kernel evaluates it: 1 / (1 + e^(−x)). Saturates to exactly 0 and 1.
#[inline]
pub fn sigmoid_f32(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// The official foreground rule: σ(logit) > 0.5 in f32, strictly (so a logit of exactly 0, or
/// any |logit| small enough for σ to round to 0.5, is background).
#[inline]
pub fn is_foreground(logit: f32) -> bool {
    sigmoid_f32(logit) > 0.5
}

/// `mask_iou` for one frame. `gt` holds 0/1 (any non-zero counts as 1).
///
/// Non-empty GT: |P∧G| / (|P∨G| + 1e-7). Empty GT: |¬P∧¬G| / (H·W + 1e-7), the fraction of pixels
/// correctly predicted as background. Computed in f32 like the official tensor code.
pub fn mask_iou(logits: &[f32], gt: &[u8]) -> f64 {
    assert_eq!(logits.len(), gt.len(), "logits and GT sizes differ");
    let (mut inter, mut union, mut both_bg, mut g_sum) = (0u64, 0u64, 0u64, 0u64);
    for (&x, &g) in logits.iter().zip(gt) {
        let p = is_foreground(x);
        let g = g != 0;
        inter += (p && g) as u64;
        union += (p || g) as u64;
        both_bg += (!p && !g) as u64;
        g_sum += g as u64;
    }
    let (num, den) = if g_sum == 0 { (both_bg, logits.len() as u64) } else { (inter, union) };
    (num as f32 / (den as f32 + IOU_EPS)) as f64
}

/// Intersection over union of a shown mask (any non-zero label is foreground) and a 0/1 ground
/// truth of the same size: |P∧G| / |P∨G|, and 1 when both are empty. Unlike [`mask_iou`], an empty
/// ground truth scores 0 for any foreground shown: this is the figure a user reads off one mask
/// (`avseg segment --gt`), not the official metric.
pub fn shown_mask_iou(labels: &[u8], gt: &[u8]) -> f64 {
    assert_eq!(labels.len(), gt.len(), "mask and GT sizes differ");
    let (mut inter, mut union) = (0u64, 0u64);
    for (&l, &g) in labels.iter().zip(gt) {
        let (p, g) = (l != 0, g != 0);
        inter += (p && g) as u64;
        union += (p || g) as u64;
    }
    if union == 0 {
        1.0
    } else {
        inter as f64 / union as f64
    }
}

/// The share of a region's pixels (`region` non-zero) that a shown mask covers, or `None` for an
/// empty region: how much of a silent object a mask wrongly takes.
pub fn coverage(labels: &[u8], region: &[u8]) -> Option<f64> {
    assert_eq!(labels.len(), region.len(), "mask and region sizes differ");
    let (mut covered, mut area) = (0u64, 0u64);
    for (&l, &r) in labels.iter().zip(region) {
        if r != 0 {
            area += 1;
            covered += (l != 0) as u64;
        }
    }
    (area > 0).then(|| covered as f64 / area as f64)
}

/// The F-measure curve of one frame over the 255 thresholds, or `None` for an empty GT (the
/// official code skips such frames entirely).
///
/// For threshold θ_i: predicted = σ(logit) ≥ θ_i; P = TP/(#pred + 1e-20); R = TP/(#GT + 1e-20);
/// F = 1.3·P·R / (0.3·P + R), NaN → 0; all in f32. Counting each pixel once against the sorted
/// thresholds gives the same counts as 255 passes over the frame.
pub fn f_curve(logits: &[f32], gt: &[u8], thresholds: &[f32; PR_NUM]) -> Option<[f32; PR_NUM]> {
    assert_eq!(logits.len(), gt.len(), "logits and GT sizes differ");
    // passed[k] = pixels whose σ clears exactly the first k thresholds.
    let mut passed = [0u64; PR_NUM + 1];
    let mut passed_fg = [0u64; PR_NUM + 1];
    let mut g_sum = 0u64;
    for (&x, &g) in logits.iter().zip(gt) {
        let s = sigmoid_f32(x);
        let k = thresholds.partition_point(|&t| s >= t);
        passed[k] += 1;
        if g != 0 {
            passed_fg[k] += 1;
            g_sum += 1;
        }
    }
    if g_sum == 0 {
        return None;
    }
    let mut curve = [0f32; PR_NUM];
    // Pixels clearing threshold i are those whose count k exceeds i: a suffix sum over k.
    let (mut n_pred, mut tp) = (0u64, 0u64);
    for i in (0..PR_NUM).rev() {
        n_pred += passed[i + 1];
        tp += passed_fg[i + 1];
        let prec = tp as f32 / (n_pred as f32 + PR_EPS);
        let rec = tp as f32 / (g_sum as f32 + PR_EPS);
        let f = ((1.0 + BETA2) * prec * rec) / (BETA2 * prec + rec);
        curve[i] = if f.is_nan() { 0.0 } else { f };
    }
    Some(curve)
}

/// The official per-batch F: the mean curve over the batch's non-empty frames (accumulated in
/// f32 in frame order, then divided by their count), maximised over thresholds. A batch whose
/// frames all have empty GT scores 0.
pub fn fscore_batch<'a>(curves: impl IntoIterator<Item = Option<&'a [f32; PR_NUM]>>) -> f64 {
    let mut sum = [0f32; PR_NUM];
    let mut n = 0u32;
    for c in curves.into_iter().flatten() {
        for (s, v) in sum.iter_mut().zip(c) {
            *s += v;
        }
        n += 1;
    }
    if n == 0 {
        return 0.0;
    }
    sum.iter().map(|&s| s / n as f32).fold(f32::NEG_INFINITY, f32::max) as f64
}

/// The official F of one frame on its own (0 for an empty GT).
pub fn fscore_frame(curve: Option<&[f32; PR_NUM]>) -> f64 {
    fscore_batch([curve])
}

/// Batch-independent F: the F curve averaged over **all** non-empty-GT frames of the set, then
/// maximised over thresholds. Not the official number; always labelled as such when reported.
#[derive(Clone, Debug)]
pub struct FscoreDataset {
    sum: Vec<f64>,
    frames: u64,
}

impl Default for FscoreDataset {
    fn default() -> Self {
        Self { sum: vec![0.0; PR_NUM], frames: 0 }
    }
}

impl FscoreDataset {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one frame's curve; empty-GT frames (`None`) are skipped as in the official F.
    pub fn add(&mut self, curve: Option<&[f32; PR_NUM]>) {
        if let Some(c) = curve {
            for (s, &v) in self.sum.iter_mut().zip(c) {
                *s += v as f64;
            }
            self.frames += 1;
        }
    }

    /// Frames with non-empty GT seen so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// max over thresholds of the mean curve; 0 when no frame had a non-empty GT.
    pub fn value(&self) -> f64 {
        if self.frames == 0 {
            return 0.0;
        }
        self.sum.iter().map(|s| s / self.frames as f64).fold(f64::NEG_INFINITY, f64::max)
    }
}

/// One scored S4/MS3 frame.
#[derive(Clone, Debug)]
pub struct FrameScore {
    pub iou: f64,
    /// `None` when the GT is empty.
    pub curve: Option<Box<[f32; PR_NUM]>>,
}

impl FrameScore {
    pub fn new(logits: &[f32], gt: &[u8], thresholds: &[f32; PR_NUM]) -> Self {
        Self { iou: mask_iou(logits, gt), curve: f_curve(logits, gt, thresholds).map(Box::new) }
    }

    pub fn empty_gt(&self) -> bool {
        self.curve.is_none()
    }

    /// The official F of this frame alone.
    pub fn fscore(&self) -> f64 {
        fscore_frame(self.curve.as_deref())
    }
}

/// Per-batch official values and their means (the reported numbers).
#[derive(Clone, Debug, PartialEq)]
pub struct BatchedScores {
    pub iou_per_batch: Vec<f64>,
    pub f_per_batch: Vec<f64>,
    /// Mean of the batch mIoUs (the official `AverageMeter`).
    pub miou: f64,
    /// Mean of the batch F-scores.
    pub fscore: f64,
}

/// The official aggregation: each batch (a range of frames) scores the mean IoU of its frames and
/// the per-batch-maximised F; the reported values are plain means over batches, so a short last
/// batch weighs as much as a full one, as in the official meter.
pub fn score_batches(frames: &[FrameScore], batches: &[Range<usize>]) -> BatchedScores {
    let mut iou_per_batch = Vec::with_capacity(batches.len());
    let mut f_per_batch = Vec::with_capacity(batches.len());
    for r in batches {
        let b = &frames[r.clone()];
        let iou = if b.is_empty() { 0.0 } else { b.iter().map(|f| f.iou).sum::<f64>() / b.len() as f64 };
        iou_per_batch.push(iou);
        f_per_batch.push(fscore_batch(b.iter().map(|f| f.curve.as_deref())));
    }
    let mean = |v: &[f64]| if v.is_empty() { 0.0 } else { v.iter().sum::<f64>() / v.len() as f64 };
    BatchedScores { miou: mean(&iou_per_batch), fscore: mean(&f_per_batch), iou_per_batch, f_per_batch }
}

/// Consecutive batches of `batch` frames over `n` frames (the last one may be short).
pub fn frame_batches(n: usize, batch: usize) -> Vec<Range<usize>> {
    let batch = batch.max(1);
    (0..n).step_by(batch).map(|s| s..(s + batch).min(n)).collect()
}

/// Batches of `batch_videos` consecutive videos, given each video's scored frame count: this is
/// how the official test loader groups frames (a batch of B clips holds B·T frames).
pub fn video_batches(frames_per_video: &[usize], batch_videos: usize) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    for chunk in frames_per_video.chunks(batch_videos.max(1)) {
        let n: usize = chunk.iter().sum();
        out.push(start..start + n);
        start += n;
    }
    out
}

/// argmax over `k` class planes of one frame's logits `[k, h·w]`; ties go to the lowest index, so
/// all-equal (e.g. all-zero padded) logits give class 0, as `torch.argmax` does.
pub fn argmax_labels(logits: &[f32], k: usize) -> Vec<u8> {
    assert!(k > 0 && k <= 256 && logits.len() % k == 0, "bad class count {k} for {} logits", logits.len());
    let hw = logits.len() / k;
    let mut best = logits[..hw].to_vec();
    let mut labels = vec![0u8; hw];
    for c in 1..k {
        let plane = &logits[c * hw..(c + 1) * hw];
        for ((b, l), &v) in best.iter_mut().zip(labels.iter_mut()).zip(plane) {
            // Strict: an equal later class never replaces an earlier one. NaN never wins.
            if v > *b {
                *b = v;
                *l = c as u8;
            }
        }
    }
    labels
}

/// The AVSS accumulators of `calc_color_miou_fscore`, summed over every frame (padded ones too).
#[derive(Clone, Debug)]
pub struct AvssAccumulator {
    classes: usize,
    pub iou_sum: Vec<f64>,
    pub f_sum: Vec<f64>,
    /// Frames in which class c appears in the prediction or the label (union > 0).
    pub count: Vec<u64>,
    /// The official fourth return value: per frame, Σ IoU / #(IoU ≠ 0).
    pub frame_miou: Vec<f64>,
}

/// The summary values of an [`AvssAccumulator`].
#[derive(Clone, Debug, PartialEq)]
pub struct AvssScores {
    /// Headline: mean over all classes (background included) of sum/count, 0 where count = 0.
    pub miou: f64,
    pub fscore: f64,
    /// What the official test loop prints: the mean over classes seen at least once.
    pub miou_present: f64,
    pub fscore_present: f64,
    /// Background excluded (mean over classes 1..K−1). avseg's extra, labelled.
    pub miou_no_background: f64,
    pub fscore_no_background: f64,
    /// The official `miou_noBg` quirk: drops the **last** class, not background.
    pub miou_nobg_official: f64,
    pub fscore_nobg_official: f64,
    pub classes_present: usize,
    pub per_class_iou: Vec<f64>,
    pub per_class_f: Vec<f64>,
}

impl AvssAccumulator {
    pub fn new(classes: usize) -> Self {
        Self {
            classes,
            iou_sum: vec![0.0; classes],
            f_sum: vec![0.0; classes],
            count: vec![0; classes],
            frame_miou: Vec::new(),
        }
    }

    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Adds one frame from its logits `[K, h·w]` (argmax with lowest-index ties).
    pub fn add_logits(&mut self, logits: &[f32], labels: &[u8]) -> f64 {
        let pred = argmax_labels(logits, self.classes);
        self.add_labels(&pred, labels)
    }

    /// Adds one frame given predicted and true class maps; returns the frame's official
    /// Σ IoU / #(IoU ≠ 0). Labels ≥ K are counted nowhere (the official histogram range drops them).
    pub fn add_labels(&mut self, pred: &[u8], labels: &[u8]) -> f64 {
        assert_eq!(pred.len(), labels.len(), "prediction and label sizes differ");
        let k = self.classes;
        let (mut a_int, mut a_pred, mut a_lab) = (vec![0u64; k], vec![0u64; k], vec![0u64; k]);
        for (&p, &y) in pred.iter().zip(labels) {
            let (p, y) = (p as usize, y as usize);
            if p < k {
                a_pred[p] += 1;
            }
            if y < k {
                a_lab[y] += 1;
            }
            if p == y && p < k {
                a_int[p] += 1;
            }
        }
        let (mut frame_sum, mut frame_nonzero) = (0f64, 0u32);
        for c in 0..k {
            let (i, p, l) = (a_int[c] as f32, a_pred[c] as f32, a_lab[c] as f32);
            let u = p + l - i;
            // The official tensors are f32; the f64 eps only matters for an empty union (0/eps = 0).
            let iou = (i as f64 / (AVSS_EPS + u as f64)) as f32;
            self.iou_sum[c] += iou as f64;
            if u > 0.0 {
                self.count[c] += 1;
            }
            let prec = i / p;
            let rec = i / l;
            let f = ((1.0 + BETA2) * prec * rec) / (BETA2 * prec + rec);
            self.f_sum[c] += if f.is_nan() { 0.0 } else { f as f64 };
            if iou != 0.0 {
                frame_sum += iou as f64;
                frame_nonzero += 1;
            }
        }
        // A frame with no non-zero IoU gives 0/0 officially; 0 here keeps the list finite.
        let fm = if frame_nonzero == 0 { 0.0 } else { frame_sum / frame_nonzero as f64 };
        self.frame_miou.push(fm);
        fm
    }

    /// A padded frame (v1 clips padded from 5 to 10): zero logits → background everywhere, zero
    /// labels. Its size is irrelevant: it scores a perfect background and touches no other class.
    pub fn add_padded_frame(&mut self) -> f64 {
        self.add_labels(&[0], &[0])
    }

    pub fn scores(&self) -> AvssScores {
        let k = self.classes;
        let per = |sum: &[f64]| -> Vec<f64> {
            sum.iter().zip(&self.count).map(|(&s, &c)| if c == 0 { 0.0 } else { s / c as f64 }).collect()
        };
        let per_class_iou = per(&self.iou_sum);
        let per_class_f = per(&self.f_sum);
        let mean = |v: &[f64]| if v.is_empty() { 0.0 } else { v.iter().sum::<f64>() / v.len() as f64 };
        let present: Vec<usize> = (0..k).filter(|&c| self.count[c] > 0).collect();
        let mean_present = |v: &[f64]| {
            if present.is_empty() {
                0.0
            } else {
                present.iter().map(|&c| v[c]).sum::<f64>() / present.len() as f64
            }
        };
        AvssScores {
            miou: mean(&per_class_iou),
            fscore: mean(&per_class_f),
            miou_present: mean_present(&per_class_iou),
            fscore_present: mean_present(&per_class_f),
            miou_no_background: mean(&per_class_iou[1.min(k)..]),
            fscore_no_background: mean(&per_class_f[1.min(k)..]),
            miou_nobg_official: mean(&per_class_iou[..k.saturating_sub(1)]),
            fscore_nobg_official: mean(&per_class_f[..k.saturating_sub(1)]),
            classes_present: present.len(),
            per_class_iou,
            per_class_f,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_endpoints() {
        let t = f_thresholds();
        assert_eq!(t[0], 0.0);
        assert_eq!(t[127], 0.5);
        assert_eq!(t[254], 1.0);
        assert!(t.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn empty_gt_iou_is_background_ratio() {
        // 4 pixels, one predicted foreground, GT empty: 3 of 4 correctly background.
        let iou = mask_iou(&[5.0, -5.0, -5.0, -5.0], &[0, 0, 0, 0]);
        assert!((iou - 0.75).abs() < 1e-6, "{iou}");
        // Predicting nothing on an empty GT scores ~1.
        let iou = mask_iou(&[-1.0; 4], &[0; 4]);
        assert!((iou - 1.0).abs() < 1e-6);
        // Empty GT frames are skipped by the F-measure.
        assert!(f_curve(&[-1.0; 4], &[0; 4], &f_thresholds()).is_none());
    }

    #[test]
    fn shown_mask_iou_and_coverage_count_pixels() {
        // P = {0, 1, 2}, G = {1, 2, 3}: 2 of 4.
        assert_eq!(shown_mask_iou(&[1, 1, 1, 0, 0], &[0, 1, 1, 1, 0]), 0.5);
        // Labels of any class count as foreground; both empty is a perfect answer.
        assert_eq!(shown_mask_iou(&[3, 0], &[1, 0]), 1.0);
        assert_eq!(shown_mask_iou(&[0, 0], &[0, 0]), 1.0);
        // Foreground on an empty GT scores 0 (mask_iou would give the background ratio).
        assert_eq!(shown_mask_iou(&[1, 0, 0, 0], &[0; 4]), 0.0);
        assert_eq!(coverage(&[1, 1, 0, 0], &[0, 1, 1, 0]), Some(0.5));
        assert_eq!(coverage(&[1, 1], &[0, 0]), None);
    }

    #[test]
    fn all_empty_batch_scores_zero_f() {
        let th = f_thresholds();
        let a = FrameScore::new(&[-3.0; 4], &[0; 4], &th);
        let b = FrameScore::new(&[3.0; 4], &[0; 4], &th);
        let s = score_batches(&[a, b], &[0..2]);
        assert_eq!(s.f_per_batch, vec![0.0]);
        assert_eq!(s.fscore, 0.0);
        // The IoU still counts the background ratio of each frame.
        assert!((s.miou - 0.5).abs() < 1e-6);
        let mut d = FscoreDataset::new();
        d.add(None);
        assert_eq!(d.value(), 0.0);
    }

    #[test]
    fn logit_exactly_zero_is_background_but_f_peaks_at_half() {
        let th = f_thresholds();
        let logits = [0.0, 0.0, -10.0, -10.0];
        let gt = [1, 1, 0, 0];
        assert_eq!(mask_iou(&logits, &gt), 0.0);
        let c = f_curve(&logits, &gt, &th).unwrap();
        // σ(0) = 0.5 ≥ θ_127 = 0.5, and nothing else passes it.
        assert!((c[127] - 1.0).abs() < 1e-6);
        assert!(c[128] == 0.0);
        assert!((fscore_frame(Some(&c)) - 1.0).abs() < 1e-6);
        // Tiny logits round to σ = 0.5 in f32, so they are background too.
        assert!(!is_foreground(1e-8));
        assert!(is_foreground(1e-3));
    }

    #[test]
    fn argmax_ties_take_lowest_index() {
        // 3 classes, 2 pixels: pixel 0 ties classes 1 and 2; pixel 1 all zero.
        let logits = [0.0, 0.0, 1.0, 0.0, 1.0, 0.0];
        assert_eq!(argmax_labels(&logits, 3), vec![1, 0]);
    }

    #[test]
    fn padded_frames_add_perfect_background() {
        let mut a = AvssAccumulator::new(3);
        a.add_labels(&[1, 1, 0, 0], &[1, 2, 0, 0]);
        let before = a.scores();
        a.add_padded_frame();
        assert_eq!(a.count, vec![2, 1, 1]);
        assert!((a.iou_sum[0] - 2.0).abs() < 1e-9 && (a.f_sum[0] - 2.0).abs() < 1e-9);
        let after = a.scores();
        assert_eq!(before.per_class_iou[1], after.per_class_iou[1]);
        // Padded frames with all-zero logits argmax to background.
        let mut b = AvssAccumulator::new(3);
        b.add_logits(&[0.0; 12], &[0; 4]);
        assert_eq!(b.count, vec![1, 0, 0]);
        assert_eq!(b.frame_miou, vec![1.0]);
    }

    #[test]
    fn video_batches_group_frames() {
        assert_eq!(video_batches(&[5, 5, 5], 2), vec![0..10, 10..15]);
        assert_eq!(frame_batches(5, 2), vec![0..2, 2..4, 4..5]);
    }
}
