//! Depthwise convolution (one input channel per group) on NHWC images.
//!
//! In NHWC one kernel tap of one output pixel is a run of channels, so the kernel vectorises over
//! channels whatever the stride, padding or plane size. Each output row is computed one block of
//! channels at a time (its inputs, `kh` rows of that block, stay in L1 however many channels the
//! layer has):
//!
//! * interior pixels (every tap inside the image) `P` at a time, so each tap's weights are loaded
//!   once for `P` pixels;
//! * the others one at a time over a wider block of channels, with their taps clipped to the
//!   image once per pixel rather than checked per tap (on a 5 × 5 plane with a 5 × 5 kernel four
//!   pixels in five are such border pixels).
//!
//! Both keep eight or more independent accumulators in registers, enough to cover the latency of
//! the multiply-add; accumulation starts from the bias and the clamp is applied before the single
//! store. The loops are compiled per instruction set (AVX-512 or AVX2 with FMA on x86-64, picked at
//! run time; NEON with FMA on aarch64; SSE2 without FMA elsewhere on x86-64), each with its own
//! block widths.

use rayon::prelude::*;

use super::conv::{Clamp, ConvGeometry};
#[cfg(target_arch = "x86_64")]
use super::Isa;

/// One image: `x` `[in_h, in_w, C]`, `taps` `[kh·kw, C]`, `bias` `[C]` → `y` `[out_h, out_w, C]`.
pub fn depthwise_nhwc(g: &ConvGeometry, x: &[f32], taps: &[f32], bias: &[f32], clamp: Clamp, y: &mut [f32], threads: usize) {
    let c = g.c_in;
    assert!(x.len() >= g.in_plane() * c && taps.len() >= g.kh * g.kw * c && bias.len() >= c && y.len() >= g.out_plane() * c);
    let row_len = g.out_w * c;
    let row = |(oy, out): (usize, &mut [f32])| {
        // SAFETY: the sizes are checked above, and `out` is one whole output row.
        unsafe { output_row(g, x, taps, bias, clamp, oy, out) }
    };
    if threads > 1 && y.len() >= 1 << 14 {
        y[..g.out_h * row_len].par_chunks_mut(row_len).enumerate().for_each(row);
    } else {
        y[..g.out_h * row_len].chunks_mut(row_len).enumerate().for_each(row);
    }
}

/// One output row, through the copy of the loops compiled for this CPU.
///
/// # Safety
/// `x`, `taps`, `bias` hold a whole image, its `kh·kw` taps and `C` biases; `out` one output row.
unsafe fn output_row(g: &ConvGeometry, x: &[f32], taps: &[f32], bias: &[f32], clamp: Clamp, oy: usize, out: &mut [f32]) {
    // row::<P, IN, TAIL, ONE, FMA>: interior groups of P pixels × IN channels, single pixels over
    // ONE channels, TAIL-wide blocks for what is left. Each makes 8–16 vector accumulators: AVX-512
    // 6 × 2 and 8 zmm; AVX2 4 × 2 and 8 ymm; NEON 4 × 4 and 16 registers; SSE2 4 × 2 and 8 xmm.
    // Measured on AVX-512: 8 pixels (16 accumulators) ran seven times slower, out of registers;
    // 6 pixels on AVX2 no faster than 4.
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,bmi1,bmi2")]
        unsafe fn v4(g: &ConvGeometry, x: &[f32], taps: &[f32], bias: &[f32], clamp: Clamp, oy: usize, out: &mut [f32]) {
            unsafe { row::<6, 32, 16, 128, true>(g, x, taps, bias, clamp, oy, out) }
        }
        #[target_feature(enable = "avx2,fma,bmi1,bmi2")]
        unsafe fn v3(g: &ConvGeometry, x: &[f32], taps: &[f32], bias: &[f32], clamp: Clamp, oy: usize, out: &mut [f32]) {
            unsafe { row::<4, 16, 8, 64, true>(g, x, taps, bias, clamp, oy, out) }
        }
        match Isa::current() {
            // SAFETY: the CPU reported these features (Isa::detect).
            Isa::X86V4 => return unsafe { v4(g, x, taps, bias, clamp, oy, out) },
            Isa::X86V3 => return unsafe { v3(g, x, taps, bias, clamp, oy, out) },
            Isa::Baseline => {}
        }
        // SSE2 has no fused multiply-add: `mul_add` would call the C library per element.
        unsafe { row::<4, 8, 4, 32, false>(g, x, taps, bias, clamp, oy, out) }
    }
    #[cfg(target_arch = "aarch64")]
    unsafe {
        row::<4, 16, 8, 64, true>(g, x, taps, bias, clamp, oy, out)
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    unsafe {
        row::<4, 8, 4, 32, false>(g, x, taps, bias, clamp, oy, out)
    }
}

/// The image and the row being computed, as the block loops read them.
struct Row {
    x: *const f32,
    taps: *const f32,
    bias: *const f32,
    out: *mut f32,
    c: usize,
    /// Floats between horizontally neighbouring output pixels' inputs, and between taps.
    step: usize,
    tap_step: usize,
    /// The tap rows inside the image, `ky0..ky1`, and for each the first float of its input row.
    ky0: usize,
    ky1: usize,
    row_stride: usize,
    iy_first: usize,
    kw: usize,
    clamp: Clamp,
}

#[inline(always)]
unsafe fn row<const P: usize, const IN: usize, const TAIL: usize, const ONE: usize, const FMA: bool>(
    g: &ConvGeometry, x: &[f32], taps: &[f32], bias: &[f32], clamp: Clamp, oy: usize, out: &mut [f32],
) {
    let c = g.c_in;
    let (ky0, ky1) = tap_range(oy, g.stride_h, g.dil_h, g.pad_top, g.in_h, g.kh);
    if ky0 >= ky1 {
        // Every tap in the padding: the bias alone.
        for px in out.chunks_exact_mut(c) {
            px.copy_from_slice(&bias[..c]);
            clamp.apply(px);
        }
        return;
    }
    let r = Row {
        x: x.as_ptr(),
        taps: taps.as_ptr(),
        bias: bias.as_ptr(),
        out: out.as_mut_ptr(),
        c,
        step: g.stride_w * c,
        tap_step: g.dil_w * c,
        ky0,
        ky1,
        row_stride: g.dil_h * g.in_w * c,
        // The first inside tap row's input row: oy·stride + ky0·dil − pad ≥ 0 by tap_range.
        iy_first: (oy * g.stride_h + ky0 * g.dil_h - g.pad_top) * g.in_w * c,
        kw: g.kw,
        clamp,
    };
    // Output columns whose taps all fall inside the image.
    let (lo, hi) = interior(g.in_w, g.out_w, g.kw, g.stride_w, g.dil_w, g.pad_left);
    let groups = if hi > lo { (hi - lo) / P } else { 0 };
    let mut c0 = 0;
    while c0 < c {
        // The widest block that fits what is left of the channels.
        let (width, one_width) = if c - c0 >= ONE {
            (IN, ONE)
        } else if c - c0 >= IN {
            (IN, IN)
        } else if c - c0 >= TAIL {
            (TAIL, TAIL)
        } else {
            (1, 1)
        };
        // Interior groups at width `width`, on the `one_width` blocks' channels.
        for sub in (c0..c0 + one_width).step_by(width) {
            for gi in 0..groups {
                let ox = lo + gi * P;
                let first_input = (ox * g.stride_w - g.pad_left) * c;
                // (IN twice: the interior never takes the `ONE` width.)
                unsafe { block_of_width::<P, IN, IN, TAIL, FMA>(width, &r, ox, first_input, 0..g.kw, sub) }
            }
        }
        // Every other pixel alone, its taps clipped to the image.
        let alone = (0..lo.min(g.out_w)).chain(lo + groups * P..g.out_w);
        for ox in alone {
            let (kx0, kx1) = tap_range(ox, g.stride_w, g.dil_w, g.pad_left, g.in_w, g.kw);
            if kx0 >= kx1 {
                unsafe { bias_alone(&r, ox, c0, one_width) };
                continue;
            }
            // Tap column 0's offset: before the row where kx0 > 0 (only kx0.. are read).
            let input0 = (ox * g.stride_w + kx0 * g.dil_w - g.pad_left) * c;
            let input0 = input0.wrapping_sub(kx0 * r.tap_step);
            unsafe { block_of_width::<1, ONE, IN, TAIL, FMA>(one_width, &r, ox, input0, kx0..kx1, c0) }
        }
        c0 += one_width;
    }
}

/// [`block`] at the run-time channel width `width`, which is `W1`, `W2`, `W3` or 1: the one place
/// that maps a width to its compiled block.
#[inline(always)]
unsafe fn block_of_width<const Q: usize, const W1: usize, const W2: usize, const W3: usize, const FMA: bool>(
    width: usize, r: &Row, ox: usize, input0: usize, kx: std::ops::Range<usize>, c0: usize,
) {
    debug_assert!([W1, W2, W3, 1].contains(&width), "block width {width}");
    unsafe {
        if width == W1 {
            block::<Q, W1, FMA>(r, ox, input0, kx, c0)
        } else if width == W2 {
            block::<Q, W2, FMA>(r, ox, input0, kx, c0)
        } else if width == W3 {
            block::<Q, W3, FMA>(r, ox, input0, kx, c0)
        } else {
            block::<Q, 1, FMA>(r, ox, input0, kx, c0)
        }
    }
}

/// Channels `c0..c0 + n` of output pixel `ox` when every tap lies in the padding: the bias alone,
/// clamped where the node has a clamp, as [`block`] does.
#[inline(always)]
unsafe fn bias_alone(r: &Row, ox: usize, c0: usize, n: usize) {
    // SAFETY: the caller's pixel and channels lie inside the output row and the bias.
    let px = unsafe { std::slice::from_raw_parts_mut(r.out.add(ox * r.c + c0), n) };
    px.copy_from_slice(unsafe { std::slice::from_raw_parts(r.bias.add(c0), n) });
    r.clamp.apply(px);
}

/// `Q` neighbouring output pixels from `ox`, channels `c0..c0 + W`, over the tap columns `kx`
/// (inside the image for all `Q` pixels) of the row's inside tap rows. `input0` is the offset, in
/// an input row, of tap column 0 of pixel `ox` (it may lie before the row when `kx` starts later:
/// only the offsets of the taps in `kx` are read).
#[inline(always)]
unsafe fn block<const Q: usize, const W: usize, const FMA: bool>(r: &Row, ox: usize, input0: usize, kx: std::ops::Range<usize>, c0: usize) {
    let b: [f32; W] = unsafe { r.bias.add(c0).cast::<[f32; W]>().read_unaligned() };
    let mut acc = [b; Q];
    for ky in r.ky0..r.ky1 {
        let input_row = unsafe { r.x.add(r.iy_first + (ky - r.ky0) * r.row_stride + c0) };
        let tap_row = unsafe { r.taps.add(ky * r.kw * r.c + c0) };
        for k in kx.clone() {
            let w: [f32; W] = unsafe { tap_row.add(k * r.c).cast::<[f32; W]>().read_unaligned() };
            let at = unsafe { input_row.add(input0.wrapping_add(k * r.tap_step)) };
            for (p, a) in acc.iter_mut().enumerate() {
                let v: [f32; W] = unsafe { at.add(p * r.step).cast::<[f32; W]>().read_unaligned() };
                for j in 0..W {
                    a[j] = if FMA { w[j].mul_add(v[j], a[j]) } else { a[j] + w[j] * v[j] };
                }
            }
        }
    }
    for (p, a) in acc.iter().enumerate() {
        let mut o = *a;
        r.clamp.apply(&mut o);
        unsafe { r.out.add((ox + p) * r.c + c0).cast::<[f32; W]>().write_unaligned(o) };
    }
}

/// The taps `k0..k1` of output position `o` whose input `o·stride + k·dil − pad` lies in `0..len`.
pub(crate) fn tap_range(o: usize, stride: usize, dil: usize, pad: usize, len: usize, k: usize) -> (usize, usize) {
    let start = o * stride;
    // k·dil ≥ pad − start
    let k0 = pad.saturating_sub(start).div_ceil(dil).min(k);
    // start + k·dil − pad ≤ len − 1
    let k1 = if len + pad > start { ((len - 1 + pad - start) / dil + 1).min(k) } else { 0 };
    (k0, k1.max(k0))
}

/// The output columns `lo..hi` whose taps `ox·stride + kx·dil − pad` all lie in `0..in_w`.
pub(crate) fn interior(in_w: usize, out_w: usize, kw: usize, stride: usize, dil: usize, pad: usize) -> (usize, usize) {
    let lo = pad.div_ceil(stride);
    let span = (kw - 1) * dil;
    // ox·stride − pad + span ≤ in_w − 1
    let hi = if in_w + pad > span { ((in_w + pad - span - 1) / stride + 1).min(out_w) } else { 0 };
    (lo.min(out_w), hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tap_ranges_are_the_taps_inside_the_image() {
        for (stride, dil, pad, len, k) in [(1usize, 1usize, 1usize, 9usize, 3usize), (2, 1, 0, 12, 3), (2, 1, 2, 5, 5), (1, 2, 2, 9, 3), (1, 4, 2, 1, 2), (3, 2, 5, 4, 7)] {
            let out = (len + 2 * pad - dil * (k - 1) - 1) / stride + 1;
            for o in 0..out {
                let inside: Vec<usize> =
                    (0..k).filter(|&t| (o * stride + t * dil).checked_sub(pad).is_some_and(|i| i < len)).collect();
                let (k0, k1) = tap_range(o, stride, dil, pad, len, k);
                if inside.is_empty() {
                    assert!(k0 >= k1, "{o} {stride} {dil} {pad} {len} {k}");
                } else {
                    assert_eq!((k0, k1), (inside[0], inside[inside.len() - 1] + 1), "{o} {stride} {dil} {pad} {len} {k}");
                }
            }
        }
    }

    #[test]
    fn nan_stays_nan_without_a_clamp_and_meets_a_clamps_low_bound() {
        let g = ConvGeometry {
            n: 1, c_in: 40, c_out: 40, groups: 40, kh: 3, kw: 3, stride_h: 1, stride_w: 1, dil_h: 1, dil_w: 1,
            pad_top: 1, pad_left: 1, in_h: 3, in_w: 9, out_h: 3, out_w: 9,
        };
        let mut x = vec![0.5f32; g.in_plane() * g.c_in];
        for px in x.chunks_mut(g.c_in) {
            px[3] = f32::NAN;
        }
        let taps = vec![1.0f32; 9 * g.c_in];
        let bias = vec![0.0f32; g.c_in];
        let mut y = vec![0.0f32; g.out_plane() * g.c_in];
        depthwise_nhwc(&g, &x, &taps, &bias, Clamp::NONE, &mut y, 1);
        assert!(y.chunks(g.c_in).all(|px| px[3].is_nan() && px[4].is_finite()));
        depthwise_nhwc(&g, &x, &taps, &bias, Clamp { lo: 0.0, hi: 6.0 }, &mut y, 1);
        assert!(y.chunks(g.c_in).all(|px| px[3] == 0.0 && px[4] > 0.0));
    }
}
