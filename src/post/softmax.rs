//! The per-pixel softmax arg-max of class logits: for every pixel of `K` class planes, the winning
//! class and its softmax probability. Semantic masks ([`super::mask::MaskBuilder::semantic_into`])
//! and two-stage scores (`Engine::two_stage_logits`) both need it, and with 71 (AVSS) or 101
//! (AVS-Reg) classes its `K` exponentials per pixel were most of their time.
//!
//! **Why blocks of pixels.** The logits are `[K, plane]`: a pixel's classes lie `plane` apart. Taking
//! a block of [`BLOCK`] pixels through all `K` planes twice (the maximum, then the sum of
//! exponentials) reads each plane's run of the block contiguously, keeps the block's `K` runs in
//! cache between the two passes, and lets the exponentials run 8 lanes at a time (`wide`'s
//! `f32x8::exp`: SSE2/AVX on x86-64, NEON on aarch64, a portable fallback elsewhere) instead of one
//! libm call per value. [`softmax_argmax_naive`] is the per-pixel definition the tests hold it to.

use wide::f32x8;

/// Pixels per block: 256 pixels × 101 classes × 4 bytes is about 100 KiB of logits, which stays
/// in L2 between the two passes.
pub const BLOCK: usize = 256;

/// Calls `emit(first_pixel, best, prob)` for consecutive blocks of at most [`BLOCK`] pixels that
/// together cover `0..plane` in order. `best[j]` is the lowest class index holding pixel
/// `first_pixel + j`'s largest logit (strict `>`, as torch.argmax on the CPU: ties and all-equal
/// logits go to the lowest index; a NaN never wins), and `prob[j]` is that class's softmax
/// probability `1 / Σ_c exp(l_c − l_best)`, or 0 where it is not finite (a NaN or infinite logit).
///
/// `logits` is `[k, plane]` row-major; `k` must be at least 1 and `logits.len()` must be
/// `k·plane` (callers check shapes first; this panics otherwise). Allocates nothing.
pub fn softmax_argmax(logits: &[f32], k: usize, plane: usize, mut emit: impl FnMut(usize, &[u16], &[f32])) {
    assert!(k >= 1 && k <= usize::from(u16::MAX) + 1, "class count {k} out of 1..=65536");
    assert_eq!(logits.len(), k * plane, "logits are not [k, plane]");
    let mut best = [0u16; BLOCK];
    let mut max = [0f32; BLOCK];
    let mut sum = [0f32; BLOCK];
    let mut start = 0;
    while start < plane {
        let n = BLOCK.min(plane - start);
        let (best, max, sum) = (&mut best[..n], &mut max[..n], &mut sum[..n]);
        max.copy_from_slice(&logits[start..start + n]);
        best.fill(0);
        for c in 1..k {
            let row = &logits[c * plane + start..c * plane + start + n];
            for ((b, m), &v) in best.iter_mut().zip(max.iter_mut()).zip(row) {
                if v > *m {
                    *m = v;
                    *b = c as u16;
                }
            }
        }
        sum.fill(0.0);
        let lanes = n / 8 * 8;
        for c in 0..k {
            let row = &logits[c * plane + start..c * plane + start + n];
            for ((s, m), v) in sum[..lanes].chunks_exact_mut(8).zip(max[..lanes].chunks_exact(8)).zip(row.chunks_exact(8)) {
                let m = f32x8::from(<[f32; 8]>::try_from(m).unwrap());
                let v = f32x8::from(<[f32; 8]>::try_from(v).unwrap());
                let acc = f32x8::from(<[f32; 8]>::try_from(&*s).unwrap()) + (v - m).exp();
                s.copy_from_slice(&acc.to_array());
            }
            for j in lanes..n {
                sum[j] += (row[j] - max[j]).exp();
            }
        }
        // The block's probabilities go where the sums were.
        for s in sum.iter_mut() {
            let p = 1.0 / *s;
            *s = if p.is_finite() { p } else { 0.0 };
        }
        emit(start, best, sum);
        start += n;
    }
}

/// One block of [`heard_mass`]'s per-pixel results, each slice one value per pixel.
pub struct HeardBlock<'a> {
    /// The arg-max class and its softmax probability, exactly as [`softmax_argmax`] gives them.
    pub best: &'a [u16],
    pub prob: &'a [f32],
    /// The lowest heard class holding the largest heard logit (0 when none is heard).
    pub best_heard: &'a [u16],
    /// The background's softmax probability, `p_0`.
    pub background: &'a [f32],
    /// The heard classes' summed softmax probability (0 when none is heard).
    pub heard: &'a [f32],
}

/// For a two-stage package's heard-mass rule, and in the same pass what [`softmax_argmax`] gives
/// (the silent objects are the arg-max mask's): calls `emit(first_pixel, block)` for consecutive
/// blocks of at most [`BLOCK`] pixels covering `0..plane` in order ([`HeardBlock`]). A heard class
/// is one with `is_heard[c]` (one flag per class; `is_heard[0]`, the background, is ignored).
/// Probabilities that are not finite (a NaN or infinite logit) are reported as 0, as in
/// [`softmax_argmax`]. `logits` is `[k, plane]`; panics on other shapes (callers check them).
/// Allocates nothing.
pub fn heard_mass(logits: &[f32], k: usize, plane: usize, is_heard: &[bool], mut emit: impl FnMut(usize, HeardBlock<'_>)) {
    assert!(k >= 1 && k <= usize::from(u16::MAX) + 1, "class count {k} out of 1..=65536");
    assert_eq!(logits.len(), k * plane, "logits are not [k, plane]");
    assert_eq!(is_heard.len(), k, "one heard flag per class");
    let mut best = [0u16; BLOCK];
    let mut max = [0f32; BLOCK];
    let mut best_heard = [0u16; BLOCK];
    let mut heard_max = [0f32; BLOCK];
    let mut sum = [0f32; BLOCK];
    let mut heard = [0f32; BLOCK];
    let mut start = 0;
    while start < plane {
        let n = BLOCK.min(plane - start);
        let (best, max, best_heard, heard_max) = (&mut best[..n], &mut max[..n], &mut best_heard[..n], &mut heard_max[..n]);
        let (sum, heard) = (&mut sum[..n], &mut heard[..n]);
        max.copy_from_slice(&logits[start..start + n]);
        best.fill(0);
        best_heard.fill(0);
        heard_max.fill(f32::NEG_INFINITY);
        for c in 1..k {
            let row = &logits[c * plane + start..c * plane + start + n];
            for ((b, m), &v) in best.iter_mut().zip(max.iter_mut()).zip(row) {
                if v > *m {
                    *m = v;
                    *b = c as u16;
                }
            }
            if is_heard[c] {
                for ((b, m), &v) in best_heard.iter_mut().zip(heard_max.iter_mut()).zip(row) {
                    if v > *m {
                        *m = v;
                        *b = c as u16;
                    }
                }
            }
        }
        sum.fill(0.0);
        heard.fill(0.0);
        let lanes = n / 8 * 8;
        let load = |s: &[f32]| f32x8::from(<[f32; 8]>::try_from(s).unwrap());
        for c in 0..k {
            let row = &logits[c * plane + start..c * plane + start + n];
            let counts = c > 0 && is_heard[c];
            for (((s, hm), m), v) in
                sum[..lanes].chunks_exact_mut(8).zip(heard[..lanes].chunks_exact_mut(8)).zip(max[..lanes].chunks_exact(8)).zip(row.chunks_exact(8))
            {
                let e = (load(v) - load(m)).exp();
                s.copy_from_slice(&(load(s) + e).to_array());
                if counts {
                    hm.copy_from_slice(&(load(hm) + e).to_array());
                }
            }
            for j in lanes..n {
                let e = (row[j] - max[j]).exp();
                sum[j] += e;
                if counts {
                    heard[j] += e;
                }
            }
        }
        // The background's probability goes where the heard maxima were, the heard mass where its
        // sum was, and the arg-max probability where the sum was.
        let finite = |v: f32| if v.is_finite() { v } else { 0.0 };
        for ((((b, hm), s), &m), &l0) in heard_max.iter_mut().zip(heard.iter_mut()).zip(sum.iter_mut()).zip(max.iter()).zip(&logits[start..start + n]) {
            *b = finite((l0 - m).exp() / *s);
            *hm = finite(*hm / *s);
            *s = finite(1.0 / *s);
        }
        emit(start, HeardBlock { best, prob: sum, best_heard, background: heard_max, heard });
        start += n;
    }
}

/// The heard-mass rule's test for one pixel ([`crate::PixelRule::HeardMass`]): kept when the heard
/// classes' probability `heard` is above the background's and above `silent_ratio` times the
/// rest's (`1 − background − heard`). The mask and `avseg eval`'s scores both use it.
pub fn heard_mass_keeps(background: f32, heard: f32, silent_ratio: f32) -> bool {
    heard > background && heard > silent_ratio * (1.0 - background - heard).max(0.0)
}

/// The per-pixel definition of [`heard_mass`], one pixel at a time with scalar `exp`, for its
/// tests. Returns `(best_heard, background, heard)` per pixel.
#[cfg(test)]
pub fn heard_mass_naive(logits: &[f32], k: usize, plane: usize, is_heard: &[bool]) -> Vec<(usize, f32, f32)> {
    (0..plane)
        .map(|i| {
            let l = |c: usize| logits[c * plane + i];
            let m = (1..k).map(l).fold(l(0), |a, v| if v > a { v } else { a });
            let z: f32 = (0..k).map(|c| (l(c) - m).exp()).sum();
            let hz: f32 = (1..k).filter(|&c| is_heard[c]).map(|c| (l(c) - m).exp()).sum();
            let best = (1..k).filter(|&c| is_heard[c]).fold((0, f32::NEG_INFINITY), |(b, bv), c| if l(c) > bv { (c, l(c)) } else { (b, bv) }).0;
            let fin = |v: f32| if v.is_finite() { v } else { 0.0 };
            (best, fin((l(0) - m).exp() / z), fin(hz / z))
        })
        .collect()
}

/// The per-pixel definition, one pixel at a time with scalar `exp`: what [`softmax_argmax`]
/// computes, for its tests. Returns `(best, prob)` per pixel.
pub fn softmax_argmax_naive(logits: &[f32], k: usize, plane: usize) -> Vec<(usize, f32)> {
    (0..plane)
        .map(|i| {
            let mut best = 0;
            let mut best_v = logits[i];
            for c in 1..k {
                let v = logits[c * plane + i];
                if v > best_v {
                    best = c;
                    best_v = v;
                }
            }
            let z: f32 = (0..k).map(|c| (logits[c * plane + i] - best_v).exp()).sum();
            let p = 1.0 / z;
            (best, if p.is_finite() { p } else { 0.0 })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the blocked version into flat vectors.
    fn blocked(logits: &[f32], k: usize, plane: usize) -> Vec<(usize, f32)> {
        let mut out = Vec::new();
        let mut next = 0;
        softmax_argmax(logits, k, plane, |start, best, prob| {
            assert_eq!(start, next, "blocks out of order");
            assert!(best.len() == prob.len() && !best.is_empty() && best.len() <= BLOCK);
            next += best.len();
            out.extend(best.iter().zip(prob).map(|(&b, &p)| (b as usize, p)));
        });
        assert_eq!(next, plane, "blocks do not cover the plane");
        out
    }

    /// A deterministic pseudo-random generator (xorshift), so failures reproduce.
    fn noise(seed: u64, n: usize, scale: f32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * scale
            })
            .collect()
    }

    fn assert_close(got: &[(usize, f32)], want: &[(usize, f32)], what: &str) {
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert_eq!(g.0, w.0, "{what}: pixel {i} class");
            let tol = 2e-6 * w.1.abs().max(1e-30);
            assert!((g.1 - w.1).abs() <= tol, "{what}: pixel {i} prob {} vs {}", g.1, w.1);
        }
    }

    #[test]
    fn matches_the_per_pixel_definition_across_block_and_lane_edges() {
        // Planes that end inside a lane group, exactly on a block, and past several blocks; class
        // counts from one (every pixel is class 0 with probability 1) to AVS-Reg's 101.
        for (k, plane) in [(1, 5), (2, 7), (3, 8), (5, 255), (5, 256), (71, 257), (101, 1000), (4, 3 * BLOCK + 9)] {
            for scale in [0.5f32, 8.0, 200.0] {
                let logits = noise((k * 131 + plane) as u64, k * plane, scale);
                assert_close(&blocked(&logits, k, plane), &softmax_argmax_naive(&logits, k, plane), &format!("k {k}, plane {plane}, scale {scale}"));
            }
        }
    }

    fn heard_blocked(logits: &[f32], k: usize, plane: usize, is_heard: &[bool]) -> Vec<(usize, f32, f32)> {
        let mut out = Vec::new();
        let mut arg_max = Vec::new();
        heard_mass(logits, k, plane, is_heard, |start, b| {
            assert_eq!(start, out.len(), "blocks out of order");
            let n = b.best.len();
            assert!([b.prob.len(), b.best_heard.len(), b.background.len(), b.heard.len()].iter().all(|&l| l == n) && n > 0 && n <= BLOCK);
            out.extend(b.best_heard.iter().zip(b.background).zip(b.heard).map(|((&c, &p0), &h)| (c as usize, p0, h)));
            arg_max.extend(b.best.iter().zip(b.prob).map(|(&c, &p)| (c as usize, p)));
        });
        // The same pass's arg-max is softmax_argmax's, bit for bit.
        assert_eq!(arg_max, blocked(logits, k, plane), "arg-max and its probability");
        assert_eq!(out.len(), plane, "blocks do not cover the plane");
        out
    }

    fn assert_heard_close(got: &[(usize, f32, f32)], want: &[(usize, f32, f32)], what: &str) {
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert_eq!(g.0, w.0, "{what}: pixel {i} best heard class");
            for (a, b, name) in [(g.1, w.1, "background"), (g.2, w.2, "heard mass")] {
                assert!((a - b).abs() <= 2e-6 * b.abs().max(1e-30) + 1e-12, "{what}: pixel {i} {name} {a} vs {b}");
            }
        }
    }

    #[test]
    fn heard_mass_matches_its_per_pixel_definition() {
        for (k, plane) in [(1, 5), (2, 7), (3, 8), (5, 255), (71, 257), (101, 1000), (4, 3 * BLOCK + 9)] {
            // No class heard, every class heard, and every third one.
            for pattern in [0usize, 1, 3] {
                let is_heard: Vec<bool> = (0..k).map(|c| c > 0 && pattern > 0 && c % pattern == 0).collect();
                for scale in [0.5f32, 8.0, 200.0] {
                    let logits = noise((k * 17 + plane + pattern) as u64, k * plane, scale);
                    let what = format!("k {k}, plane {plane}, heard every {pattern}, scale {scale}");
                    let got = heard_blocked(&logits, k, plane, &is_heard);
                    assert_heard_close(&got, &heard_mass_naive(&logits, k, plane, &is_heard), &what);
                    // The masses are probabilities that add up with the rest.
                    let all = softmax_argmax_naive(&logits, k, plane);
                    for (j, g) in got.iter().enumerate() {
                        assert!(g.1 + g.2 <= 1.0 + 1e-5, "{what}: pixel {j}");
                        if pattern == 0 {
                            assert_eq!((g.0, g.2), (0, 0.0), "{what}: nothing heard");
                        }
                        if all[j].0 == 0 {
                            assert!((g.1 - all[j].1).abs() <= 2e-6, "{what}: pixel {j} background as softmax_argmax");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn heard_mass_ignores_a_heard_flag_on_the_background_and_gives_non_finite_pixels_zero() {
        let (k, plane) = (3, 16);
        let mut logits = noise(11, k * plane, 4.0);
        logits[plane + 5] = f32::NAN;
        logits[2 * plane + 9] = f32::INFINITY;
        let is_heard = [true, false, true];
        let got = heard_blocked(&logits, k, plane, &is_heard);
        assert_heard_close(&got, &heard_mass_naive(&logits, k, plane, &is_heard), "non-finite");
        assert_eq!((got[5].1, got[5].2), (0.0, 0.0));
        assert_eq!((got[9].0, got[9].1, got[9].2), (2, 0.0, 0.0));
        // Background heard or not: the same.
        assert_eq!(got, heard_blocked(&logits, k, plane, &[false, false, true]));
    }

    #[test]
    fn ties_go_to_the_lowest_class_and_equal_logits_split_the_probability() {
        let (k, plane) = (4, 20);
        let mut logits = vec![1.0f32; k * plane];
        // Pixel 3: classes 1 and 2 tie for the maximum; pixel 4: class 3 wins alone.
        logits[plane + 3] = 5.0;
        logits[2 * plane + 3] = 5.0;
        logits[3 * plane + 4] = 2.0;
        let got = blocked(&logits, k, plane);
        assert_eq!(got[0], (0, 0.25), "all equal: background, 1/4");
        assert_eq!(got[3].0, 1);
        assert!((got[3].1 - 1.0 / (2.0 + 2.0 * (-4.0f32).exp())).abs() < 1e-6, "{:?}", got[3]);
        assert_eq!(got[4].0, 3);
        assert_close(&got, &softmax_argmax_naive(&logits, k, plane), "ties");
    }

    #[test]
    fn non_finite_logits_give_probability_zero_as_the_definition_does() {
        let (k, plane) = (3, 16);
        let mut logits = noise(7, k * plane, 4.0);
        logits[2] = f32::NAN; // class 0 of pixel 2: NaN is the starting maximum, nothing beats it
        logits[plane + 5] = f32::NAN; // class 1 of pixel 5: never wins, poisons the sum
        logits[2 * plane + 9] = f32::INFINITY; // class 2 of pixel 9 wins; inf − inf is NaN
        logits[11] = f32::NEG_INFINITY; // class 0 of pixel 11 contributes exp(−inf) = 0
        logits[plane + 12] = -1e30; // far below: its exponential underflows to 0
        let got = blocked(&logits, k, plane);
        let want = softmax_argmax_naive(&logits, k, plane);
        assert_eq!((got[2], got[5], got[9]), ((0, 0.0), (want[5].0, 0.0), (2, 0.0)));
        assert!(got[11].1 > 0.0 && got[12].1 > 0.0);
        assert_close(&got, &want, "non-finite");
    }
}
