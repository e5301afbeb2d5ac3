//! `C = clamp(bias + A · B)`: avseg's register-tiled matrix product for convolutions whose weights
//! are constant, with the bias and clamp applied in registers so that every output is written
//! once, and the weights packed once at load.
//!
//! Why not the `gemm` crate here: it re-packs the constant weights on every call and writes its
//! product before avseg's bias and clamp can read it back, and the pointwise and im2col layers of
//! the AVS encoders are small enough (`C_in` 16–1152, 49–12544 pixels per image) that the packing
//! and the second pass were a third of their time (profiles in `docs/cpu.md`).
//!
//! A tile is `mr` rows × `w` columns of C, held in registers ([`TileShape`], chosen per
//! instruction set and product width). Each step along the depth broadcasts `mr` values of A and
//! loads `w` contiguous values of B. A is the activations (pixels × depth), read in place through
//! any strides; B is the weights (depth × output channels), packed once for the tile shape by
//! [`pack_cols`]. The loops are portable Rust compiled per instruction set (as `per_isa!` does for
//! the other kernels) and vectorised by the compiler; [`naive`] is the reference the tests hold
//! them to.

use rayon::prelude::*;

use super::Isa;
use super::conv::Clamp;

/// Rows × columns of C in registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TileShape {
    /// Rows: values of A broadcast per depth step.
    pub mr: usize,
    /// Columns: contiguous values of B loaded per depth step (a multiple of the vector width).
    pub w: usize,
}

impl TileShape {
    /// AVX-512: 6 × 64 is 24 of the 32 vector registers as accumulators, 4 for B, 1 broadcast.
    const V4: TileShape = TileShape { mr: 6, w: 64 };
    /// AVX2: 6 × 16 is 12 of 16 registers, 2 for B, 1 broadcast.
    const V3: TileShape = TileShape { mr: 6, w: 16 };
    /// NEON (32 registers of 4 lanes): 6 × 16 is 24 accumulators.
    #[cfg(target_arch = "aarch64")]
    const BASELINE: TileShape = TileShape { mr: 6, w: 16 };
    /// SSE2 (16 registers of 4 lanes): 4 × 8 is 8 accumulators.
    #[cfg(not(target_arch = "aarch64"))]
    const BASELINE: TileShape = TileShape { mr: 4, w: 8 };

    /// AVX-512 for products of at most 32 columns (the 32-channel convolutions of the TPAVI
    /// decoders): 12 × 32 is 24 accumulators too, without a half-empty 64-wide block.
    const V4_NARROW: TileShape = TileShape { mr: 12, w: 32 };

    /// The shape this process uses ([`Isa::current`]) for a product of `n` columns; packing and
    /// running a product both ask here.
    pub fn for_columns(n: usize) -> TileShape {
        match Isa::current() {
            Isa::X86V4 if n <= Self::V4_NARROW.w => Self::V4_NARROW,
            Isa::X86V4 => Self::V4,
            Isa::X86V3 => Self::V3,
            Isa::Baseline => Self::BASELINE,
        }
    }
}

/// A `k × n` matrix (element `(kk, j)` at `kk·ks + j·cs`) packed as B: blocks of `w` columns, each
/// `[k][w]`, the last block padded with zeros.
pub fn pack_cols(src: &[f32], k: usize, n: usize, ks: usize, cs: usize, shape: TileShape) -> Vec<f32> {
    let blocks = n.div_ceil(shape.w);
    let mut out = vec![0.0; blocks * k * shape.w];
    for (b, block) in out.chunks_exact_mut(k * shape.w).enumerate() {
        for kk in 0..k {
            for c in 0..shape.w {
                let j = b * shape.w + c;
                if j < n {
                    block[kk * shape.w + c] = src[kk * ks + j * cs];
                }
            }
        }
    }
    out
}

/// One product `C[m, n] = clamp(bias + A[m, k] · B[k, n])`. A's rows are rows `a_first..` of a
/// batch whose rows come in frames of `a_frame_rows` (the images): batch row `i` is row
/// `i % a_frame_rows` of frame `i / a_frame_rows`, and its element `kk` is at
/// `a + frame·a_frame_stride + row·a_rs + kk·a_ks` (one frame: `a_first = 0, a_frame_rows = m`). B is packed by [`pack_cols`] for
/// [`TileShape::for_columns`]`(n)`; one bias per column; C row-major with row stride `dst_rs`.
#[derive(Clone, Copy, Debug)]
pub struct Product<'a> {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: *const f32,
    pub a_rs: usize,
    pub a_ks: usize,
    pub a_first: usize,
    pub a_frame_rows: usize,
    pub a_frame_stride: usize,
    pub b: &'a [f32],
    pub bias: &'a [f32],
    pub clamp: Clamp,
    pub dst: *mut f32,
    pub dst_rs: usize,
}

// SAFETY: the pointers are read (A, B) or written (C) by the tasks of one `run`, which write
// disjoint tiles of C; the caller of `run` guarantees they are valid for its duration.
unsafe impl Send for Product<'_> {}
unsafe impl Sync for Product<'_> {}

/// Runs the product on `threads` threads of the current pool.
///
/// # Safety
/// A and C must be valid for the extents `p` describes (`m` rows of A and C, `n` columns of C,
/// depth `k`), B must be packed for them, and C must not overlap A.
pub unsafe fn run(p: &Product, threads: usize) {
    let shape = TileShape::for_columns(p.n);
    let row_tiles = p.m.div_ceil(shape.mr);
    let col_blocks = p.n.div_ceil(shape.w);
    // Splitting small products costs more than it gains.
    let tasks = if p.m * p.n * p.k < 1 << 18 { 1 } else { threads.max(1) };
    if tasks == 1 {
        return unsafe { run_range(p, 0..col_blocks, 0..row_tiles) };
    }
    // Split whichever dimension has more tiles, in a few chunks per thread.
    let parts = (tasks * 3).min(col_blocks.max(row_tiles));
    if col_blocks >= row_tiles {
        (0..parts).into_par_iter().for_each(|i| {
            let cb = col_blocks * i / parts..col_blocks * (i + 1) / parts;
            unsafe { run_range(p, cb, 0..row_tiles) }
        });
    } else {
        (0..parts).into_par_iter().for_each(|i| {
            let rt = row_tiles * i / parts..row_tiles * (i + 1) / parts;
            unsafe { run_range(p, 0..col_blocks, rt) }
        });
    }
}

/// The tiles `col_blocks × row_tiles` of C, on the calling thread, through the copy of the loops
/// compiled for this CPU.
unsafe fn run_range(p: &Product, col_blocks: std::ops::Range<usize>, row_tiles: std::ops::Range<usize>) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,bmi1,bmi2")]
        unsafe fn v4(p: &Product, cb: std::ops::Range<usize>, rt: std::ops::Range<usize>) {
            if TileShape::for_columns(p.n) == TileShape::V4_NARROW {
                unsafe { tiles::<12, 32, true>(p, cb, rt) }
            } else {
                unsafe { tiles::<6, 64, true>(p, cb, rt) }
            }
        }
        #[target_feature(enable = "avx2,fma,bmi1,bmi2")]
        unsafe fn v3(p: &Product, cb: std::ops::Range<usize>, rt: std::ops::Range<usize>) {
            unsafe { tiles::<6, 16, true>(p, cb, rt) }
        }
        match Isa::current() {
            // SAFETY: the CPU reported these features (Isa::detect).
            Isa::X86V4 => return unsafe { v4(p, col_blocks, row_tiles) },
            Isa::X86V3 => return unsafe { v3(p, col_blocks, row_tiles) },
            Isa::Baseline => {}
        }
        // SSE2 has no fused multiply-add: `mul_add` would call the C library per element.
        unsafe { tiles::<4, 8, false>(p, col_blocks, row_tiles) }
    }
    #[cfg(target_arch = "aarch64")]
    unsafe {
        tiles::<6, 16, true>(p, col_blocks, row_tiles)
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    unsafe {
        tiles::<4, 8, false>(p, col_blocks, row_tiles)
    }
}

/// The tile loops for one shape. Column blocks outside, row tiles inside, so that one block of B
/// (`k × W`) is reused from cache by every row tile. Everything here is inlined into the copies
/// compiled per instruction set: no closures, whose bodies would be compiled for the baseline
/// (and `mul_add` there calls the C library).
#[inline(always)]
unsafe fn tiles<const MR: usize, const W: usize, const FMA: bool>(
    p: &Product, col_blocks: std::ops::Range<usize>, row_tiles: std::ops::Range<usize>,
) {
    debug_assert_eq!(TileShape { mr: MR, w: W }, TileShape::for_columns(p.n));
    let k = p.k;
    let rows_max = p.m.saturating_sub(1);
    debug_assert!(p.a_frame_rows > 0);
    for cb in col_blocks {
        let col0 = cb * W;
        let cols = W.min(p.n - col0);
        let b = p.b[cb * k * W..][..k * W].as_ptr();
        let mut col_bias = [0.0; W];
        col_bias[..cols].copy_from_slice(&p.bias[col0..col0 + cols]);
        for rt in row_tiles.clone() {
            let row0 = rt * MR;
            let rows = MR.min(p.m - row0);
            // Offsets of the tile's rows in A; rows past the end repeat the last one (so every
            // read stays inside A) and are not stored.
            let offset = |i: usize| (i / p.a_frame_rows) * p.a_frame_stride + (i % p.a_frame_rows) * p.a_rs;
            let mut a_off = [0usize; MR];
            let first = p.a_first + row0;
            let (frame, row) = (first / p.a_frame_rows, first % p.a_frame_rows);
            if rows == MR && row + MR <= p.a_frame_rows {
                // The common case, a whole tile inside one frame: offsets in arithmetic
                // progression, which the compiler keeps in registers rather than on the stack
                // (measured: computing every offset in general made these layers 16 % slower).
                let base = frame * p.a_frame_stride + row * p.a_rs;
                for (r, off) in a_off.iter_mut().enumerate() {
                    *off = base + r * p.a_rs;
                }
            } else {
                for (r, off) in a_off.iter_mut().enumerate() {
                    *off = offset(p.a_first + (row0 + r).min(rows_max));
                }
            }
            let mut acc = [col_bias; MR];
            unsafe { accumulate::<MR, W, FMA>(k, p.a, &a_off, p.a_ks, b, W, &mut acc) };
            if !p.clamp.is_none() {
                let (lo, hi) = (p.clamp.lo, p.clamp.hi);
                for row in acc.iter_mut() {
                    for v in row.iter_mut() {
                        *v = v.max(lo).min(hi);
                    }
                }
            }
            for (r, row) in acc.iter().enumerate().take(rows) {
                let dst = unsafe { p.dst.add((row0 + r) * p.dst_rs + col0) };
                if cols == W {
                    unsafe { dst.cast::<[f32; W]>().write_unaligned(*row) };
                } else {
                    unsafe { std::ptr::copy_nonoverlapping(row.as_ptr(), dst, cols) };
                }
            }
        }
    }
}

/// `acc[r][j] += Σ_kk a[a_off[r] + kk·a_ks] · b[kk·b_ks + j]`: the register tile.
#[inline(always)]
unsafe fn accumulate<const MR: usize, const W: usize, const FMA: bool>(
    k: usize, a: *const f32, a_off: &[usize; MR], a_ks: usize, b: *const f32, b_ks: usize, acc: &mut [[f32; W]; MR],
) {
    let mut t = *acc;
    for kk in 0..k {
        let bv: [f32; W] = unsafe { b.add(kk * b_ks).cast::<[f32; W]>().read_unaligned() };
        for r in 0..MR {
            let av = unsafe { *a.add(a_off[r] + kk * a_ks) };
            for j in 0..W {
                t[r][j] = if FMA { av.mul_add(bv[j], t[r][j]) } else { t[r][j] + av * bv[j] };
            }
        }
    }
    *acc = t;
}

/// The definition, for tests: `C = clamp(bias + A · B)` with A `m × k` at (`a_rs`, `a_ks`), B
/// `k × n` at (`b_ks`, `b_cs`) and one bias per column, summed in f64 and rounded once.
#[allow(clippy::too_many_arguments)]
#[cfg(test)]
pub fn naive(
    m: usize, n: usize, k: usize, a: &[f32], a_rs: usize, a_ks: usize, b: &[f32], b_ks: usize, b_cs: usize, bias: &[f32],
    clamp: Clamp,
) -> Vec<f32> {
    let mut c = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s = bias[j] as f64;
            for kk in 0..k {
                s += a[i * a_rs + kk * a_ks] as f64 * b[kk * b_ks + j * b_cs] as f64;
            }
            let v = s as f32;
            c[i * n + j] = if clamp.is_none() { v } else { v.max(clamp.lo).min(clamp.hi) };
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_common::pseudo;

    fn run_on_pool(p: &Product, threads: usize) {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| unsafe { run(p, threads) });
    }

    /// Sizes around the tile edges of every shape (narrow and wide products), A row-major and
    /// transposed, with and without a clamp, with 1 and 3 threads, into a C with a wider stride
    /// whose gaps must stay untouched.
    #[test]
    fn tiles_match_the_definition() {
        let sizes = [(1, 1, 1), (6, 64, 3), (7, 65, 17), (11, 187, 40), (12, 32, 5), (13, 31, 96), (37, 203, 96), (200, 70, 33), (25, 32, 2880)];
        for (si, &(m, n, k)) in sizes.iter().enumerate() {
            let shape = TileShape::for_columns(n);
            let a = pseudo(m * k, si as u32 * 7 + 1);
            let b = pseudo(k * n, si as u32 * 7 + 2);
            let bias = pseudo(n, si as u32 * 7 + 3);
            // A as [m][k] (row stride k) and as its transpose [k][m] (row stride 1).
            let a_t: Vec<f32> = (0..k * m).map(|x| a[(x % m) * k + x / m]).collect();
            // B given as the weights are, [n][k], packed as [k][n].
            let w: Vec<f32> = (0..n * k).map(|x| b[(x % k) * n + x / k]).collect();
            let packed = pack_cols(&w, k, n, 1, k, shape);
            for clamp in [Clamp::NONE, Clamp { lo: 0.0, hi: 6.0 }, Clamp { lo: -0.5, hi: f32::INFINITY }] {
                let want = naive(m, n, k, &a, k, 1, &b, n, 1, &bias, clamp);
                // A's rows in frames of `fr` rows, each frame's block of A transposed ([k][fr]
                // at stride fr, frames `k·fr` apart), as a batch of NCHW images is read.
                let fr = (m / 3).max(1);
                let frames = m.div_ceil(fr);
                let mut a_f = vec![f32::NAN; frames * k * fr];
                for i in 0..m {
                    for kk in 0..k {
                        a_f[(i / fr) * k * fr + kk * fr + i % fr] = a[i * k + kk];
                    }
                }
                let forms = [(a.as_ptr(), k, 1, m, 0), (a_t.as_ptr(), 1, m, m, 0), (a_f.as_ptr(), 1, fr, fr, k * fr)];
                for (ptr, a_rs, a_ks, a_frame_rows, a_frame_stride) in forms {
                    for threads in [1, 3] {
                        let mut c = vec![f32::NAN; m * (n + 3)];
                        // The product in two parts, the second starting inside a frame, as the
                        // NCHW output's pixel blocks do.
                        let split = if m > 1 { m / 2 + 1 } else { m };
                        for (first, rows) in [(0, split), (split, m - split)] {
                            let p = Product {
                                m: rows, n, k, a: ptr, a_rs, a_ks, a_first: first, a_frame_rows, a_frame_stride, b: &packed, bias: &bias, clamp,
                                dst: c[first * (n + 3)..].as_mut_ptr(), dst_rs: n + 3,
                            };
                            run_on_pool(&p, threads);
                        }
                        for i in 0..m {
                            for j in 0..n {
                                let (got, want) = (c[i * (n + 3) + j], want[i * n + j]);
                                // Each term is at most 1 in magnitude: f32 sums of k of them stay
                                // within k·2^-22 of the exact sum.
                                let tol = 1e-6 + k as f32 * 2.5e-7;
                                assert!((got - want).abs() <= tol, "{m}x{n}x{k} ({i}, {j}): {got} vs {want}");
                            }
                            assert!(c[i * (n + 3) + n..][..3].iter().all(|v| v.is_nan()), "{m}x{n}x{k}: wrote past row {i}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn the_clamp_turns_nan_into_its_low_bound_only_when_present() {
        let (m, n, k) = (6, 64, 2);
        let mut a = vec![1.0; m * k];
        a[0] = f32::NAN;
        let packed = pack_cols(&vec![1.0; n * k], k, n, 1, k, TileShape::for_columns(n));
        let bias = vec![0.0; n];
        for (clamp, first) in [(Clamp::NONE, None), (Clamp { lo: 0.0, hi: 6.0 }, Some(0.0f32))] {
            let mut c = vec![0.0; m * n];
            let p = Product {
                m, n, k, a: a.as_ptr(), a_rs: k, a_ks: 1, a_first: 0, a_frame_rows: m, a_frame_stride: 0, b: &packed, bias: &bias, clamp, dst: c.as_mut_ptr(), dst_rs: n,
            };
            unsafe { run(&p, 1) };
            match first {
                None => assert!(c[..n].iter().all(|v| v.is_nan())),
                // max(NaN, 0) is 0 in Rust, as the graph's Max node gave before avseg fused it.
                Some(v) => assert!(c[..n].iter().all(|x| *x == v)),
            }
            assert!(c[n..].iter().all(|x| *x == 2.0));
        }
    }
}
