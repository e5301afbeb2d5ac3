//! Cutting log-mel frames into VGGish examples and fixing their count (docs/spec/audio.md §2.5–2.6).

use super::{PatchPadding, MEL_BANDS, PATCH_FRAMES};
use crate::tensor::Tensor;

/// Values in one `[96, 64]` patch.
pub const PATCH_LEN: usize = PATCH_FRAMES * MEL_BANDS;

/// Complete, non-overlapping 96-frame patches in `n_frames` log-mel frames (partial tail dropped).
pub fn patch_count(n_frames: usize) -> usize {
    n_frames / PATCH_FRAMES
}

/// Builds exactly `t` patches `[t, 1, 96, 64]` from frame-major log-mel values.
///
/// Extra patches are dropped from the end. Missing ones follow `padding`: S4/MS3 repeat the last
/// real patch, AVSS fills zeros (zeros in the log domain, i.e. not silence, which would be ln 0.01).
/// With no complete patch at all, repeat-last has nothing to repeat and falls back to zeros; the
/// front end rejects such audio before it gets here.
pub fn fixed_patches(log_mel: &[f32], t: usize, padding: PatchPadding) -> Tensor {
    let have = patch_count(log_mel.len() / MEL_BANDS);
    let keep = have.min(t);
    let mut data = vec![0.0; t * PATCH_LEN];
    data[..keep * PATCH_LEN].copy_from_slice(&log_mel[..keep * PATCH_LEN]);
    let (real, missing) = data.split_at_mut(keep * PATCH_LEN);
    let last = keep.checked_sub(1).map(|k| &real[k * PATCH_LEN..]);
    for dst in missing.chunks_exact_mut(PATCH_LEN) {
        fill_missing_patch(dst, last, padding);
    }
    Tensor::new(vec![t, 1, PATCH_FRAMES, MEL_BANDS], data)
}

/// One patch past the end of the audio, per `padding`: a copy of `last` (repeat-last, when there
/// is a last patch) or zeros. Batch clips and streams complete their patches with this.
pub fn fill_missing_patch(dst: &mut [f32], last: Option<&[f32]>, padding: PatchPadding) {
    match (padding, last) {
        (PatchPadding::RepeatLast, Some(last)) => dst.copy_from_slice(last),
        _ => dst.fill(0.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(n_patches: usize, extra_frames: usize) -> Vec<f32> {
        (0..(n_patches * PATCH_FRAMES + extra_frames) * MEL_BANDS).map(|i| (i / PATCH_LEN) as f32 + 1.0).collect()
    }

    #[test]
    fn truncates_and_pads() {
        let lm = frames(3, 50);
        let t = fixed_patches(&lm, 2, PatchPadding::Zeros);
        assert_eq!(t.shape(), &[2, 1, 96, 64]);
        assert_eq!(t.data(), &lm[..2 * PATCH_LEN]);

        let rep = fixed_patches(&lm, 5, PatchPadding::RepeatLast);
        assert_eq!(rep.shape(), &[5, 1, 96, 64]);
        for p in 0..5 {
            let want = (p.min(2) + 1) as f32;
            assert!(rep.item(p).iter().all(|&v| v == want), "patch {p}");
        }
        let zer = fixed_patches(&lm, 5, PatchPadding::Zeros);
        for p in 0..5 {
            let want = if p < 3 { (p + 1) as f32 } else { 0.0 };
            assert!(zer.item(p).iter().all(|&v| v == want), "patch {p}");
        }
    }

    #[test]
    fn serde_names() {
        assert_eq!(serde_json::to_string(&PatchPadding::RepeatLast).unwrap(), "\"repeat_last\"");
        assert_eq!(serde_json::from_str::<PatchPadding>("\"zeros\"").unwrap(), PatchPadding::Zeros);
    }
}
