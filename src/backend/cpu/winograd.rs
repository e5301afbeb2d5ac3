//! Winograd F(2×2, 3×3) for 3×3 convolutions at stride 1 without dilation: the decoders' convs.
//!
//! Each 2×2 output tile comes from a 4×4 input tile through 16 element-wise products in the
//! transformed domain instead of 36 multiply-adds, so the GEMM work drops by 2.25×, and the
//! transformed input (16 values per 4 outputs) is smaller than im2col's columns (9 per output):
//!
//! * at load, each 3×3 filter becomes `U = G·g·Gᵀ` (4×4), stored as 16 matrices `[C_out, C_in]`;
//! * per block of tiles, each 4×4 input tile `d` becomes `V = Bᵀ·d·B`, stored as 16 matrices
//!   `[C_in, tiles]`;
//! * 16 GEMMs `M_ξ = U_ξ · V_ξ`;
//! * each output tile is `Aᵀ·M·A` (2×2), plus the bias, clamped.
//!
//! F(2,3)'s transforms use only 0, ±1 and ±½, so its rounding error stays at the level of a direct
//! convolution's (Lavin & Gray, 2016); the tests bound it against the naive convolution.

use std::cell::RefCell;

use gemm::Parallelism;
use rayon::prelude::*;

use super::conv::{Clamp, ConvGeometry};
use super::SendPtr;

/// Whether this convolution runs here. With few input channels the transforms cost more than the
/// multiplications they save (measured on the default model's 16- and 32-channel decoder), so
/// those stay on im2col, as do small maps with few channels (the default model's audio encoder:
/// 64 and 128 channels on 24×16 and 12×8 maps ran 1.4× faster on im2col). A dilated convolution (the ASPP branches) is d_h·d_w undilated ones on
/// the phase sub-grids of its input and output, each tiled as usual; when a sub-grid is narrower
/// than 8 outputs (a dilation of 12 or 18 on a 56² map), partial tiles waste more than Winograd
/// saves (measured on TPAVI-R50's ASPP branches), and im2col runs it.
pub fn applies(g: &ConvGeometry) -> bool {
    g.kh == 3
        && g.kw == 3
        && g.stride_h == 1
        && g.stride_w == 1
        && g.groups == 1
        && g.c_in >= 64
        && g.c_out >= 16
        && (g.c_in >= 256 || g.out_plane() >= 1024)
        && g.out_h / g.dil_h >= 8
        && g.out_w / g.dil_w >= 8
}

/// Filters `[C_out, C_in, 3, 3]` → `U` as 16 matrices `[C_out, C_in]`.
pub fn transform_filters(g: &ConvGeometry, w: &[f32]) -> Vec<f32> {
    let (co_n, ci_n) = (g.c_out, g.c_in);
    let mut u = vec![0f32; 16 * co_n * ci_n];
    for co in 0..co_n {
        for ci in 0..ci_n {
            let k = &w[(co * ci_n + ci) * 9..][..9];
            // G·g: 4×3
            let mut t = [[0f32; 3]; 4];
            for c in 0..3 {
                let (a, b, d) = (k[c], k[3 + c], k[6 + c]);
                t[0][c] = a;
                t[1][c] = 0.5 * (a + b + d);
                t[2][c] = 0.5 * (a - b + d);
                t[3][c] = d;
            }
            // (G·g)·Gᵀ: 4×4
            for (r, row) in t.iter().enumerate() {
                let (a, b, d) = (row[0], row[1], row[2]);
                let vals = [a, 0.5 * (a + b + d), 0.5 * (a - b + d), d];
                for (c, v) in vals.iter().enumerate() {
                    u[((r * 4 + c) * co_n + co) * ci_n + ci] = *v;
                }
            }
        }
    }
    u
}

/// Tile rows per block, so that a block's transformed input and products stay in the caches.
fn block_rows(g: &ConvGeometry) -> usize {
    let tw = g.out_w.div_ceil(2);
    // About 4 MiB of transformed input (L3), but at least 256 tiles so that the GEMMs are wide.
    ((1usize << 20) / (16 * g.c_in.max(g.c_out) * tw)).max(256usize.div_ceil(tw)).max(1)
}

/// Scratch floats [`conv`] needs for `g`.
pub fn scratch_len(g: &ConvGeometry) -> usize {
    let tw = g.out_w.div_ceil(2);
    16 * (g.c_in + g.c_out) * block_rows(g) * tw
}

/// The whole batch: `x` `[N, C_in, H, W]` → `y` `[N, C_out, OH, OW]`, with `u` from
/// [`transform_filters`]. Tiles are handled a tile row at a time so that every transform is a
/// run of contiguous loads and stores across the row's tiles.
#[allow(clippy::too_many_arguments)]
pub fn conv(g: &ConvGeometry, x: &[f32], u: &[f32], bias: &[f32], clamp: Clamp, y: &mut [f32], scratch: &mut Vec<f32>, threads: usize) {
    // Tile rows of one phase sub-grid (the largest phase; smaller ones skip what falls outside).
    let (th, tw) = (g.out_h.div_ceil(g.dil_h).div_ceil(2), g.out_w.div_ceil(g.dil_w).div_ceil(2));
    let phases = g.dil_h * g.dil_w;
    let rows_total = g.n * phases * th; // (image, phase, tile row)
    let locate = |row: usize| {
        let (n, rest) = (row / (phases * th), row % (phases * th));
        let (phase, ty) = (rest / th, rest % th);
        (n, Tile { py: phase / g.dil_w, px: phase % g.dil_w, ty })
    };
    let rb = block_rows(g);
    if scratch.len() < scratch_len(g) {
        scratch.resize(scratch_len(g), 0.0);
    }
    let (v, m) = scratch.split_at_mut(16 * g.c_in * rb * tw);
    let m = &mut m[..16 * g.c_out * rb * tw];
    let y_ptr = SendPtr(y.as_mut_ptr());
    for r0 in (0..rows_total).step_by(rb) {
        let nr = rb.min(rows_total - r0);
        let nt = nr * tw;
        // V_ξ[ci, t], t = (tile row in block) · tw + tx
        {
            let v_ptr = SendPtr(v.as_mut_ptr());
            let channel = |ci: usize| {
                let v_ptr = &v_ptr;
                with_line(line_len(tw), |line| for k in 0..nr {
                    let (n, tile) = locate(r0 + k);
                    let plane = &x[(n * g.c_in + ci) * g.in_plane()..][..g.in_plane()];
                    // Rows (ξ, ci) of this tile row are disjoint across channels and tile rows.
                    let rows: [&mut [f32]; 16] = std::array::from_fn(|xi| unsafe {
                        std::slice::from_raw_parts_mut(v_ptr.0.add((xi * g.c_in + ci) * nt + k * tw), tw)
                    });
                    input_tile_row_simd(g, plane, tile, tw, line, rows);
                });
            };
            if threads > 1 {
                (0..g.c_in).into_par_iter().for_each(channel);
            } else {
                (0..g.c_in).for_each(channel);
            }
        }
        // M_ξ[co, t] = U_ξ[co, ci] · V_ξ[ci, t]
        let par = if threads > 1 && g.c_out * g.c_in * nt >= 1 << 16 { Parallelism::Rayon(threads) } else { Parallelism::None };
        for xi in 0..16 {
            let lhs = u[xi * g.c_out * g.c_in..].as_ptr();
            let rhs = v[xi * g.c_in * nt..].as_ptr();
            let dst = m[xi * g.c_out * nt..].as_mut_ptr();
            unsafe {
                gemm::gemm(
                    g.c_out, nt, g.c_in, dst, 1, nt as isize, false, lhs, 1, g.c_in as isize, rhs, 1, nt as isize, 0.0, 1.0, false, false,
                    false, par,
                )
            };
        }
        // Aᵀ·M·A per output channel and tile row.
        let m = &m[..];
        let out_channel = |co: usize| {
            let y_ptr = &y_ptr;
            with_line(line_len(tw), |line| for k in 0..nr {
                let (n, tile) = locate(r0 + k);
                let mv: [&[f32]; 16] = std::array::from_fn(|xi| &m[(xi * g.c_out + co) * nt + k * tw..][..tw]);
                let plane = unsafe { y_ptr.0.add((n * g.c_out + co) * g.out_plane()) };
                output_tile_row_simd(g, mv, bias[co], clamp, tile, tw, line, plane);
            });
        };
        if threads > 1 {
            (0..g.c_out).into_par_iter().for_each(out_channel);
        } else {
            (0..g.c_out).for_each(out_channel);
        }
    }
}

/// One tile row: row `ty` of the tiles of phase sub-grid (`py`, `px`). Output `(i, j)` of the
/// sub-grid is output `(py + d_h·i, px + d_w·j)`; without dilation there is one phase, (0, 0).
#[derive(Clone, Copy)]
struct Tile {
    py: usize,
    px: usize,
    ty: usize,
}

per_isa!(fn input_tile_row_simd(g: &ConvGeometry, plane: &[f32], tile: Tile, tw: usize, line: &mut [f32], out: [&mut [f32]; 16]) = input_tile_row);

/// `Bᵀ·d·B` for every tile of one tile row of one channel. `line` is scratch of [`line_len`].
#[inline(always)]
fn input_tile_row(g: &ConvGeometry, plane: &[f32], tile: Tile, tw: usize, line: &mut [f32], out: [&mut [f32]; 16]) {
    let w2 = tw + 1; // tile tx reads padded columns 2·tx .. 2·tx + 3: even and odd samples 0..=tw
    let (eo, e) = line.split_at_mut(2 * w2);
    let (even, odd) = eo.split_at_mut(w2);
    let e = &mut e[..16 * tw]; // d·B of input row r, column c': e[(4·r + c')·tw + tx]
    let (dh, dw) = (g.dil_h as isize, g.dil_w as isize);
    let x0 = tile.px as isize - g.pad_left as isize;
    let y0 = tile.py as isize - g.pad_top as isize + dh * 2 * tile.ty as isize;
    for r in 0..4 {
        even.fill(0.0);
        odd.fill(0.0);
        let iy = y0 + dh * r as isize;
        if iy >= 0 && iy < g.in_h as isize {
            let src = &plane[iy as usize * g.in_w..][..g.in_w];
            for k in 0..w2 {
                let ie = x0 + dw * 2 * k as isize;
                if ie >= 0 && ie < g.in_w as isize {
                    even[k] = src[ie as usize];
                }
                let io = ie + dw;
                if io >= 0 && io < g.in_w as isize {
                    odd[k] = src[io as usize];
                }
            }
        }
        let er = &mut e[4 * r * tw..][..4 * tw];
        let (e0, rest) = er.split_at_mut(tw);
        let (e1, rest) = rest.split_at_mut(tw);
        let (e2, e3) = rest.split_at_mut(tw);
        let (ev0, ev1, od0, od1) = (&even[..tw], &even[1..=tw], &odd[..tw], &odd[1..=tw]);
        for t in 0..tw {
            e0[t] = ev0[t] - ev1[t];
            e1[t] = od0[t] + ev1[t];
            e2[t] = ev1[t] - od0[t];
            e3[t] = od0[t] - od1[t];
        }
    }
    // Bᵀ down the rows: V[4·r' + c'] from e[4·r + c'], r = 0..4.
    let [o0, o1, o2, o3, o4, o5, o6, o7, o8, o9, o10, o11, o12, o13, o14, o15] = out;
    let outs = [[o0, o4, o8, o12], [o1, o5, o9, o13], [o2, o6, o10, o14], [o3, o7, o11, o15]];
    for (c, [v0, v1, v2, v3]) in outs.into_iter().enumerate() {
        let (a, b, d, f) = (&e[c * tw..][..tw], &e[(4 + c) * tw..][..tw], &e[(8 + c) * tw..][..tw], &e[(12 + c) * tw..][..tw]);
        for t in 0..tw {
            v0[t] = a[t] - d[t];
            v1[t] = b[t] + d[t];
            v2[t] = d[t] - b[t];
            v3[t] = b[t] - f[t];
        }
    }
}

/// Scratch floats per thread for one tile row's transforms.
fn line_len(tw: usize) -> usize {
    2 * (tw + 1) + 16 * tw
}

thread_local! {
    /// Per-thread scratch of the transforms, grown once.
    static LINE: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

fn with_line<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    LINE.with_borrow_mut(|line| {
        if line.len() < len {
            line.resize(len, 0.0);
        }
        f(&mut line[..len])
    })
}

per_isa!(fn output_tile_row_simd(g: &ConvGeometry, m: [&[f32]; 16], bias: f32, clamp: Clamp, tile: Tile, tw: usize, line: &mut [f32], plane: *mut f32) = output_tile_row);

/// `Aᵀ·M·A` plus bias and clamp for every tile of one tile row of one output channel, written
/// into its two output rows of `plane`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn output_tile_row(g: &ConvGeometry, m: [&[f32]; 16], bias: f32, clamp: Clamp, tile: Tile, tw: usize, line: &mut [f32], plane: *mut f32) {
    let (even, odd) = line[..4 * tw].split_at_mut(2 * tw);
    // Aᵀ·M (two rows r of 4 columns), then ·A: even and odd output columns.
    let (a0, a1) = even.split_at_mut(tw);
    let (b0, b1) = odd.split_at_mut(tw);
    for t in 0..tw {
        let col = |c: usize| (m[c][t] + m[4 + c][t] + m[8 + c][t], m[4 + c][t] - m[8 + c][t] - m[12 + c][t]);
        let (p0, q0) = col(0);
        let (p1, q1) = col(1);
        let (p2, q2) = col(2);
        let (p3, q3) = col(3);
        a0[t] = (p0 + p1 + p2 + bias).max(clamp.lo).min(clamp.hi);
        a1[t] = (p1 - p2 - p3 + bias).max(clamp.lo).min(clamp.hi);
        b0[t] = (q0 + q1 + q2 + bias).max(clamp.lo).min(clamp.hi);
        b1[t] = (q1 - q2 - q3 + bias).max(clamp.lo).min(clamp.hi);
    }
    for (r, (ev, od)) in [(&*a0, &*a1), (&*b0, &*b1)].into_iter().enumerate() {
        let oy = tile.py + g.dil_h * (2 * tile.ty + r);
        if oy >= g.out_h {
            continue;
        }
        // Each output element belongs to exactly one (channel, phase, tile): no other task writes it.
        let row = unsafe { std::slice::from_raw_parts_mut(plane.add(oy * g.out_w), g.out_w) };
        let d = g.dil_w;
        for t in 0..tw {
            let ox = tile.px + d * 2 * t;
            if ox < g.out_w {
                row[ox] = ev[t];
            }
            if ox + d < g.out_w {
                row[ox + d] = od[t];
            }
        }
    }
}

