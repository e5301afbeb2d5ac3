//! Depthwise convolution (one input channel per group) on NHWC images.
//!
//! In NHWC one kernel tap of one output pixel is a run of channels, so the kernel vectorises over
//! channels whatever the stride, padding or plane size: per output pixel, blocks of 64 (then 16,
//! then 1) channels are accumulated in registers over every tap, starting from the bias, clamped,
//! and stored once. Taps that fall in the padding are skipped. The code is written once and
//! compiled per instruction set by `pulp` (AVX-512, AVX2+FMA on x86-64, NEON on aarch64, a
//! portable fallback), picked at run time.

use rayon::prelude::*;

use super::conv::{Clamp, ConvGeometry};

/// One image: `x` `[in_h, in_w, C]`, `taps` `[kh·kw, C]`, `bias` `[C]` → `y` `[out_h, out_w, C]`.
pub fn depthwise_nhwc(g: &ConvGeometry, x: &[f32], taps: &[f32], bias: &[f32], clamp: Clamp, y: &mut [f32], threads: usize) {
    let c = g.c_in;
    let row_len = g.out_w * c;
    let arch = pulp::Arch::new();
    let row = |(oy, out): (usize, &mut [f32])| arch.dispatch(|| output_row(g, x, taps, bias, clamp, oy, out));
    if threads > 1 && y.len() >= 1 << 14 {
        y.par_chunks_mut(row_len).enumerate().for_each(row);
    } else {
        y.chunks_mut(row_len).enumerate().for_each(row);
    }
}

#[inline(always)]
fn output_row(g: &ConvGeometry, x: &[f32], taps: &[f32], bias: &[f32], clamp: Clamp, oy: usize, out: &mut [f32]) {
    let c = g.c_in;
    for ox in 0..g.out_w {
        let px = &mut out[ox * c..][..c];
        let mut c0 = 0;
        while c0 + 64 <= c {
            channel_block::<64>(g, x, taps, bias, clamp, oy, ox, c0, &mut px[c0..c0 + 64]);
            c0 += 64;
        }
        while c0 + 16 <= c {
            channel_block::<16>(g, x, taps, bias, clamp, oy, ox, c0, &mut px[c0..c0 + 16]);
            c0 += 16;
        }
        while c0 < c {
            channel_block::<1>(g, x, taps, bias, clamp, oy, ox, c0, &mut px[c0..c0 + 1]);
            c0 += 1;
        }
    }
}

/// Channels `c0..c0+B` of output pixel (oy, ox).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn channel_block<const B: usize>(
    g: &ConvGeometry, x: &[f32], taps: &[f32], bias: &[f32], clamp: Clamp, oy: usize, ox: usize, c0: usize, out: &mut [f32],
) {
    let c = g.c_in;
    let mut acc: [f32; B] = std::array::from_fn(|i| bias[c0 + i]);
    for ky in 0..g.kh {
        let iy = (oy * g.stride_h + ky * g.dil_h) as isize - g.pad_top as isize;
        if iy < 0 || iy >= g.in_h as isize {
            continue;
        }
        for kx in 0..g.kw {
            let ix = (ox * g.stride_w + kx * g.dil_w) as isize - g.pad_left as isize;
            if ix < 0 || ix >= g.in_w as isize {
                continue;
            }
            let xs: &[f32; B] = x[(iy as usize * g.in_w + ix as usize) * c + c0..][..B].try_into().unwrap();
            let ws: &[f32; B] = taps[(ky * g.kw + kx) * c + c0..][..B].try_into().unwrap();
            for i in 0..B {
                acc[i] += ws[i] * xs[i];
            }
        }
    }
    for i in 0..B {
        out[i] = acc[i].max(clamp.lo).min(clamp.hi);
    }
}
