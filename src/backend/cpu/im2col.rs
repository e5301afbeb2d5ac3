//! im2col: one group of an NCHW image → the GEMM's right-hand matrix `[C_in/g · kh · kw, OH · OW]`.
//!
//! Row `(ci, ky, kx)` holds, for every output pixel, the input pixel that tap reads (0 in the
//! padding). Each row is built from whole input-row segments (a copy at stride 1, a strided gather
//! otherwise), and rows are independent, so they are split across the pool's threads.

use std::ops::Range;

use rayon::prelude::*;

use super::conv::ConvGeometry;

/// Fills `cols` `[patch_len, out_rows.len() · out_w]` from `x` `[C_in/g, in_h, in_w]`: the
/// columns of the output rows `out_rows` only, so that a large image is done in cache-sized blocks.
pub fn im2col(g: &ConvGeometry, x: &[f32], out_rows: Range<usize>, cols: &mut [f32], threads: usize) {
    let plane = out_rows.len() * g.out_w;
    let cols = &mut cols[..g.patch_len() * plane];
    let row = |(r, dst): (usize, &mut [f32])| {
        let kx = r % g.kw;
        let ky = (r / g.kw) % g.kh;
        let ci = r / (g.kw * g.kh);
        fill_row(g, &x[ci * g.in_plane()..][..g.in_plane()], ky, kx, out_rows.start, dst);
    };
    if threads > 1 && cols.len() >= 1 << 15 {
        cols.par_chunks_mut(plane).enumerate().for_each(row);
    } else {
        cols.chunks_mut(plane).enumerate().for_each(row);
    }
}

fn fill_row(g: &ConvGeometry, x: &[f32], ky: usize, kx: usize, first_row: usize, dst: &mut [f32]) {
    if g.stride_h == 1 && g.stride_w == 1 && g.in_w == g.out_w {
        return fill_row_shifted(g, x, ky, kx, first_row, dst);
    }
    let off = (kx * g.dil_w) as isize - g.pad_left as isize;
    let (lo, hi) = valid_range(g.out_w, g.in_w, g.stride_w, off);
    for (i, out) in dst.chunks_exact_mut(g.out_w).enumerate() {
        let oy = first_row + i;
        let iy = (oy * g.stride_h + ky * g.dil_h) as isize - g.pad_top as isize;
        if iy < 0 || iy >= g.in_h as isize || lo >= hi {
            out.fill(0.0);
            continue;
        }
        out[..lo].fill(0.0);
        out[hi..].fill(0.0);
        let xrow = &x[iy as usize * g.in_w..][..g.in_w];
        let start = ((lo * g.stride_w) as isize + off) as usize;
        let out = &mut out[lo..hi];
        // Every `stride_w`-th input from `start`; the row may end right after the last one read.
        let src = &xrow[start..(start + g.stride_w * (hi - lo - 1) + 1)];
        match g.stride_w {
            1 => out.copy_from_slice(src),
            // The strides of real models as constants, so that the gather vectorises: 2 (every
            // downsampling of ResNet and EfficientNet), 4 (PVT-v2's first patch embedding).
            2 => every_nth(src, out, 2),
            4 => every_nth(src, out, 4),
            s => every_nth(src, out, s),
        }
    }
}

/// `out[i] = src[i · stride]`, with `src` ending at the last element read. Whole `stride`-wide
/// chunks rather than `step_by`, which the compiler does not vectorise; inlined, so a constant
/// `stride` makes the chunk width a constant.
#[inline(always)]
fn every_nth(src: &[f32], out: &mut [f32], stride: usize) {
    let Some((last, body)) = out.split_last_mut() else { return };
    for (o, chunk) in body.iter_mut().zip(src.chunks_exact(stride)) {
        *o = chunk[0];
    }
    *last = src[stride * body.len()];
}

/// Stride 1 with rows as wide as the input ("same" convolutions): the row is the input plane
/// shifted by one flat offset, so it is one copy, plus zeros where the tap reads the padding:
/// before the plane, after it, and the columns that wrapped around a row edge.
fn fill_row_shifted(g: &ConvGeometry, x: &[f32], ky: usize, kx: usize, first_row: usize, dst: &mut [f32]) {
    let w = g.in_w;
    let dx = (kx * g.dil_w) as isize - g.pad_left as isize;
    let shift = ((ky * g.dil_h) as isize - g.pad_top as isize) * w as isize + dx;
    let start = (first_row * w) as isize + shift; // plane index read by dst[0]
    let n = dst.len() as isize;
    let plane = (g.in_h * w) as isize;
    let lo = (-start).clamp(0, n);
    let hi = (plane - start).clamp(lo, n);
    dst[..lo as usize].fill(0.0);
    dst[hi as usize..].fill(0.0);
    if hi > lo {
        dst[lo as usize..hi as usize].copy_from_slice(&x[(start + lo) as usize..(start + hi) as usize]);
    }
    // Columns whose input column lies outside 0..w read a neighbouring row: zero them.
    let (c_lo, c_hi) = valid_range(w, w, 1, dx);
    if c_lo > 0 || c_hi < w {
        for row in dst.chunks_exact_mut(w) {
            row[..c_lo].fill(0.0);
            row[c_hi..].fill(0.0);
        }
    }
}

/// The output columns `ox` whose input column `ox·stride + offset` lies in `0..input`.
#[inline]
pub(crate) fn valid_range(out: usize, input: usize, stride: usize, offset: isize) -> (usize, usize) {
    let lo = if offset >= 0 { 0 } else { ((-offset) as usize).div_ceil(stride) };
    let hi = if (input as isize) <= offset { 0 } else { ((input as isize - offset) as usize).div_ceil(stride).min(out) };
    (lo.min(hi), hi)
}

#[cfg(test)]
mod tests {
    use super::valid_range;

    #[test]
    fn valid_ranges_match_a_scan() {
        for out in 0..9 {
            for input in 0..12 {
                for stride in 1..4 {
                    for offset in -5isize..6 {
                        let want: Vec<usize> = (0..out)
                            .filter(|&ox| {
                                let ix = (ox * stride) as isize + offset;
                                ix >= 0 && ix < input as isize
                            })
                            .collect();
                        let (lo, hi) = valid_range(out, input, stride, offset);
                        assert_eq!((lo..hi).collect::<Vec<_>>(), want, "out {out} in {input} s {stride} off {offset}");
                    }
                }
            }
        }
    }
}
