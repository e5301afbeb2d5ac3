//! The per-pixel softmax arg-max of class logits: for every pixel of `K` class planes, the winning
//! class and its softmax probability. Semantic masks ([`super::mask::MaskBuilder::semantic_into`])
//! and two-stage scores (`Engine::two_stage_logits`) both need it, and with 71 (AVSS) or 101
//! (AVS-Reg) classes its `K` exponentials per pixel were most of their time.
//!
//! **Why blocks of pixels.** The logits are `[K, plane]`: a pixel's classes lie `plane` apart. Taking
//! a block of [`BLOCK`] pixels through all `K` planes twice (the maximum, then the sum of
//! exponentials) reads each plane's run of the block contiguously and keeps the block's `K` runs in
//! cache between the two passes. [`softmax_argmax_naive`] is the per-pixel definition the tests
//! hold it to.
//!
//! **Why our own `exp`.** A libm call per value cannot be vectorised, and a SIMD library's `exp`
//! is compiled for the build's baseline (SSE2 on x86-64) whatever the CPU has. [`exp_f32`] is plain
//! arithmetic on `f32` and its bits, so the block loops, compiled per instruction set by
//! [`per_isa!`] (AVX-512 or AVX2+FMA on x86-64, chosen at run time; NEON on aarch64), run it
//! 8 or 16 lanes at a time. Its accuracy is tested against `f32::exp`.

use crate::backend::cpu::per_isa;

/// Pixels per block: 256 pixels × 101 classes × 4 bytes is about 100 KiB of logits, which stays
/// in L2 between the two passes.
pub const BLOCK: usize = 256;

/// e^x in f32 without a libm call, so that loops over it vectorise: x = n·ln 2 + r with
/// |r| ≤ ln 2 / 2 (n rounded to nearest through the 1.5·2²³ shift, ln 2 in two parts so that r is
/// exact), e^r by Cephes' degree-7 polynomial, and 2ⁿ written into the exponent bits. Within
/// 2 ulp of `f32::exp` on finite results; below about −87.3 it gives 0 (where `f32::exp` goes
/// subnormal, under 1.2e-38), above 88 it gives +∞, and NaN stays NaN. `exp_f32(0.0)` is exactly 1.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const SHIFT: f32 = 12_582_912.0; // 1.5·2²³: adding it rounds to an integer in the low bits
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const LOW: f32 = -87.336_55; // ln of the smallest normal f32
    const HIGH: f32 = 88.0; // n stays ≤ 127, a normal exponent
    // NaN passes through the clamp, and then through every step below.
    let xc = x.clamp(LOW, HIGH);
    let shifted = xc * std::f32::consts::LOG2_E + SHIFT;
    let n = shifted - SHIFT;
    let r = (xc - n * LN2_HI) - n * LN2_LO;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 5.000_000_1e-1;
    let er = p * (r * r) + r + 1.0;
    // n as an integer is the shifted value's low bits; |n| ≤ 127 by the clamp.
    let n_int = shifted.to_bits().wrapping_sub(SHIFT.to_bits()) as i32;
    let scale = f32::from_bits(((n_int + 127) as u32) << 23);
    let y = er * scale;
    if x < LOW {
        0.0
    } else if x > HIGH {
        f32::INFINITY
    } else {
        y
    }
}

/// Block pass 1: for pixels `start..start + max.len()`, the lowest class holding the largest logit
/// (strict `>`, so a NaN never wins) into `best`, and that logit into `max`.
#[inline(always)]
fn block_max(logits: &[f32], k: usize, plane: usize, start: usize, best: &mut [u16], max: &mut [f32]) {
    let n = max.len();
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
}

/// Block pass 2: `sum[j] = Σ_c exp(l_c − max[j])` over all classes in order.
#[inline(always)]
fn block_exp_sum(logits: &[f32], k: usize, plane: usize, start: usize, max: &[f32], sum: &mut [f32]) {
    let n = max.len();
    sum.fill(0.0);
    for c in 0..k {
        let row = &logits[c * plane + start..c * plane + start + n];
        for ((s, &m), &v) in sum.iter_mut().zip(max).zip(row) {
            *s += exp_f32(v - m);
        }
    }
}

/// The sums become the arg-max class's probability `1 / sum` (0 where not finite).
#[inline(always)]
fn block_inverse(sum: &mut [f32]) {
    for s in sum.iter_mut() {
        let p = 1.0 / *s;
        *s = if p.is_finite() { p } else { 0.0 };
    }
}

#[inline(always)]
fn argmax_block(logits: &[f32], k: usize, plane: usize, start: usize, best: &mut [u16], max: &mut [f32], sum: &mut [f32]) {
    block_max(logits, k, plane, start, best, max);
    block_exp_sum(logits, k, plane, start, max, sum);
    block_inverse(sum);
}

per_isa!(fn argmax_block_simd(logits: &[f32], k: usize, plane: usize, start: usize, best: &mut [u16], max: &mut [f32], sum: &mut [f32]) = argmax_block);

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
        argmax_block_simd(logits, k, plane, start, best, max, sum);
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

/// One block's per-pixel values in [`heard_mass`], each slice the block's length.
struct HeardScratch<'a> {
    best: &'a mut [u16],
    max: &'a mut [f32],
    best_heard: &'a mut [u16],
    /// The largest heard logit; then the background's probability.
    heard_max: &'a mut [f32],
    /// The sum of exponentials; then the arg-max probability.
    sum: &'a mut [f32],
    /// The heard classes' sum of exponentials; then their probability.
    heard: &'a mut [f32],
}

/// [`heard_mass`]'s work on one block.
#[inline(always)]
fn heard_block(logits: &[f32], k: usize, plane: usize, start: usize, is_heard: &[bool], out: &mut HeardScratch<'_>) {
    let (best, max, best_heard) = (&mut *out.best, &mut *out.max, &mut *out.best_heard);
    let (heard_max, sum, heard) = (&mut *out.heard_max, &mut *out.sum, &mut *out.heard);
    let n = max.len();
    block_max(logits, k, plane, start, best, max);
    best_heard.fill(0);
    heard_max.fill(f32::NEG_INFINITY);
    for c in (1..k).filter(|&c| is_heard[c]) {
        let row = &logits[c * plane + start..c * plane + start + n];
        for ((b, m), &v) in best_heard.iter_mut().zip(heard_max.iter_mut()).zip(row) {
            if v > *m {
                *m = v;
                *b = c as u16;
            }
        }
    }
    // One exponential per class and pixel feeds both sums (the same order as `block_exp_sum`, so
    // the arg-max probability is `softmax_argmax`'s bit for bit).
    sum.fill(0.0);
    heard.fill(0.0);
    for c in 0..k {
        let row = &logits[c * plane + start..c * plane + start + n];
        if c > 0 && is_heard[c] {
            for (((s, h), &m), &v) in sum.iter_mut().zip(heard.iter_mut()).zip(&*max).zip(row) {
                let e = exp_f32(v - m);
                *s += e;
                *h += e;
            }
        } else {
            for ((s, &m), &v) in sum.iter_mut().zip(&*max).zip(row) {
                *s += exp_f32(v - m);
            }
        }
    }
    // The background's probability goes where the heard maxima were, the heard mass where its
    // sum was, and the arg-max probability where the sum was.
    let finite = |v: f32| if v.is_finite() { v } else { 0.0 };
    for ((((b, hm), s), &m), &l0) in heard_max.iter_mut().zip(heard.iter_mut()).zip(sum.iter_mut()).zip(max.iter()).zip(&logits[start..start + n]) {
        *b = finite(exp_f32(l0 - m) / *s);
        *hm = finite(*hm / *s);
        *s = finite(1.0 / *s);
    }
}

per_isa!(fn heard_block_simd(logits: &[f32], k: usize, plane: usize, start: usize, is_heard: &[bool], out: &mut HeardScratch<'_>) = heard_block);

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
        let mut block = HeardScratch {
            best: &mut best[..n],
            max: &mut max[..n],
            best_heard: &mut best_heard[..n],
            heard_max: &mut heard_max[..n],
            sum: &mut sum[..n],
            heard: &mut heard[..n],
        };
        heard_block_simd(logits, k, plane, start, is_heard, &mut block);
        let HeardScratch { best, best_heard, heard_max, sum, heard, .. } = block;
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

    /// Distance in units in the last place between two finite non-negative f32.
    fn ulps(a: f32, b: f32) -> u32 {
        a.to_bits().abs_diff(b.to_bits())
    }

    #[test]
    fn exp_f32_is_within_two_ulp_of_libm_and_keeps_the_special_values() {
        // Every 997th f32 from the smallest normal result to the largest clamped input, plus the
        // integers and the points where the rounding of n changes.
        let mut worst = (0u32, 0f32);
        let mut check = |x: f32| {
            let (got, want) = (exp_f32(x), x.exp());
            let d = ulps(got, want);
            if d > worst.0 {
                worst = (d, x);
            }
        };
        let (lo, hi) = (-87.33f32, 88.0f32);
        let mut bits = lo.to_bits();
        // Negative floats: bits decrease towards zero.
        while f32::from_bits(bits) < 0.0 {
            check(f32::from_bits(bits));
            bits = bits.saturating_sub(997).max(0x8000_0000);
            if bits == 0x8000_0000 {
                break;
            }
        }
        let mut bits = 0u32;
        while f32::from_bits(bits) <= hi {
            check(f32::from_bits(bits));
            bits += 997;
        }
        for i in -87..=88 {
            for d in [-0.5f32, -0.25, 0.0, 0.25, 0.5] {
                let x = i as f32 + d;
                if (lo..=hi).contains(&x) {
                    check(x);
                }
                check((i as f32 + d) * std::f32::consts::LN_2);
            }
        }
        assert!(worst.0 <= 2, "exp_f32 is {} ulp from f32::exp at {}", worst.0, worst.1);
        assert_eq!(exp_f32(0.0), 1.0);
        assert_eq!(exp_f32(-0.0), 1.0);
        assert!(exp_f32(f32::NAN).is_nan());
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_f32(-100.0), 0.0);
        assert_eq!(exp_f32(-1e30), 0.0);
        assert_eq!(exp_f32(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp_f32(88.5), f32::INFINITY);
        // Below the smallest normal result libm goes subnormal; we give 0: both tiny.
        assert!(exp_f32(-87.5) == 0.0 && (-87.5f32).exp() < 1.2e-38);
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
