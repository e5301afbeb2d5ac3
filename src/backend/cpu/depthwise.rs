//! Depthwise convolution (one input channel per group) on NHWC images.
//!
//! In NHWC one kernel tap of one output pixel is a run of channels, so the kernel vectorises over
//! channels whatever the stride, padding or plane size. Interior pixels (every tap inside the
//! image) are computed four at a time per block of 16 channels, so each tap's weights are loaded
//! once for four pixels and no tap is bounds-checked; accumulation starts from the bias and the
//! clamp is applied before the single store. Border pixels, and channels left over from the
//! blocks, go through a per-pixel path that skips taps falling in the padding. The code is written once and
//! compiled per instruction set by [`per_isa!`](super::per_isa) (AVX-512 or AVX2+FMA on x86-64,
//! picked at run time; the portable build elsewhere, NEON on aarch64).

use rayon::prelude::*;

use super::conv::{Clamp, ConvGeometry};

/// One image: `x` `[in_h, in_w, C]`, `taps` `[kh·kw, C]`, `bias` `[C]` → `y` `[out_h, out_w, C]`.
pub fn depthwise_nhwc(g: &ConvGeometry, x: &[f32], taps: &[f32], bias: &[f32], clamp: Clamp, y: &mut [f32], threads: usize) {
    let c = g.c_in;
    let row_len = g.out_w * c;
    let row = |(oy, out): (usize, &mut [f32])| output_row_simd(g, x, taps, bias, clamp, oy, out);
    if threads > 1 && y.len() >= 1 << 14 {
        y.par_chunks_mut(row_len).enumerate().for_each(row);
    } else {
        y.chunks_mut(row_len).enumerate().for_each(row);
    }
}

per_isa!(fn output_row_simd(g: &ConvGeometry, x: &[f32], taps: &[f32], bias: &[f32], clamp: Clamp, oy: usize, out: &mut [f32]) = output_row);

#[inline(always)]
pub(crate) fn output_row(g: &ConvGeometry, x: &[f32], taps: &[f32], bias: &[f32], clamp: Clamp, oy: usize, out: &mut [f32]) {
    let c = g.c_in;
    // Output columns whose taps all fall inside the image: no per-tap checks there.
    let (lo, hi) = interior(g.in_w, g.out_w, g.kw, g.stride_w, g.dil_w, g.pad_left);
    for ox in (0..lo).chain(hi.max(lo)..g.out_w) {
        pixel(g, x, taps, bias, clamp, oy, ox, 0, &mut out[ox * c..][..c]);
    }
    if hi <= lo {
        return;
    }
    // Rows of taps inside the image: ky in first..last.
    let inside = |ky: usize| (oy * g.stride_h + ky * g.dil_h).checked_sub(g.pad_top).is_some_and(|iy| iy < g.in_h);
    let first = (0..g.kh).find(|&ky| inside(ky)).unwrap_or(g.kh);
    let last = (first..g.kh).find(|&ky| !inside(ky)).unwrap_or(g.kh);
    let rows = (oy, first, last);
    let blocks = c / LANES * LANES;
    let mut ox = lo;
    while ox + PIXELS <= hi {
        for c0 in (0..blocks).step_by(LANES) {
            interior_block::<PIXELS>(g, x, taps, bias, clamp, rows, ox, c0, out);
        }
        ox += PIXELS;
    }
    while ox < hi {
        for c0 in (0..blocks).step_by(LANES) {
            interior_block::<1>(g, x, taps, bias, clamp, rows, ox, c0, out);
        }
        ox += 1;
    }
    if blocks < c {
        for ox in lo..hi {
            pixel(g, x, taps, bias, clamp, oy, ox, blocks, &mut out[ox * c..][..c]);
        }
    }
}

/// Channels per register block, and output pixels computed together (each tap's weights are
/// loaded once for all of them).
const LANES: usize = 16;
const PIXELS: usize = 4;

/// The output columns `lo..hi` whose taps `ox·stride + kx·dil − pad` all lie in `0..in_w`.
pub(crate) fn interior(in_w: usize, out_w: usize, kw: usize, stride: usize, dil: usize, pad: usize) -> (usize, usize) {
    let lo = pad.div_ceil(stride);
    let span = (kw - 1) * dil;
    // ox·stride − pad + span ≤ in_w − 1
    let hi = if in_w + pad > span { ((in_w + pad - span - 1) / stride + 1).min(out_w) } else { 0 };
    (lo.min(out_w), hi)
}

/// `P` neighbouring interior output pixels from `ox` in output row `rows.0`, channels
/// `c0..c0 + LANES`, over the tap rows `rows.1..rows.2` (all inside the image).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn interior_block<const P: usize>(
    g: &ConvGeometry, x: &[f32], taps: &[f32], bias: &[f32], clamp: Clamp, rows: (usize, usize, usize), ox: usize, c0: usize, out: &mut [f32],
) {
    let c = g.c_in;
    let b: &[f32; LANES] = bias[c0..][..LANES].try_into().unwrap();
    let mut acc = [*b; P];
    let step = g.stride_w * c;
    let (oy, first, last) = rows;
    for ky in first..last {
        let iy = oy * g.stride_h + ky * g.dil_h - g.pad_top;
        let row = &x[iy * g.in_w * c..][..g.in_w * c];
        for kx in 0..g.kw {
            let w: &[f32; LANES] = taps[(ky * g.kw + kx) * c + c0..][..LANES].try_into().unwrap();
            // First input column of this tap for pixel ox; the interior bounds keep every one of
            // the P pixels inside the row.
            let base = (ox * g.stride_w + kx * g.dil_w - g.pad_left) * c + c0;
            let span = &row[base..base + (P - 1) * step + LANES];
            for (p, a) in acc.iter_mut().enumerate() {
                let v: &[f32; LANES] = span[p * step..][..LANES].try_into().unwrap();
                for i in 0..LANES {
                    a[i] += w[i] * v[i];
                }
            }
        }
    }
    for (p, a) in acc.iter().enumerate() {
        let o: &mut [f32; LANES] = (&mut out[(ox + p) * c + c0..][..LANES]).try_into().unwrap();
        for i in 0..LANES {
            o[i] = a[i].max(clamp.lo).min(clamp.hi);
        }
    }
}

/// Channels `c0..` of output pixel (oy, ox), with every tap checked against the image: the border
/// pixels, and the channels that do not fill a register block.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn pixel(g: &ConvGeometry, x: &[f32], taps: &[f32], bias: &[f32], clamp: Clamp, oy: usize, ox: usize, c0: usize, px: &mut [f32]) {
    let c = g.c_in;
    let mut c0 = c0;
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
