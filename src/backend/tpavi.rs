//! The TPAVI fold (spec §6.6), in one place: avseg's CPU operator ([`super::cpu::tpavi`]) runs it,
//! the sliding-window form of it that streams run ([`super::cpu::tpavi::AvTpaviWindow`]), and the CUDA kernels' CPU reference
//! (`cuda::reference::tpavi_folded`, which the device tests hold the kernels to) is held to it by
//! the tests below.
//!
//! TPAVI "dot" has no softmax, so for one group of frames (positions n, N of them)
//!
//! ```text
//! y_n = θ_n · K,  K = (1/N) Σ_t φ_tᵀ (Σ_{y,x} g_{t,y,x}),  Σ_{y,x} g_t = W_g S_t + h·w·b_g,
//! ```
//!
//! with S_t the spatial sum of frame t, and the block's output `LayerNorm(BN(W_z y_n + b_z) + V_n)`
//! is one channel mixing whose matrix depends on the clip:
//!
//! ```text
//! z_n = V_n · A + c,  A = I + W_θᵀ K W_zᵀ,  c = b_θ K W_zᵀ + b_z      (row vectors; BN folded in W_z, b_z)
//! ```
//!
//! [`frame_sums`], [`k_matrix`] and [`fold`] build A and c per group (≈ C·C'·(C + C') multiply-adds);
//! [`apply_nchw`] is the per-position part, a C×C product and the channel LayerNorm.

use super::cpu::conv::{gemm_into, Matrix};

/// One TPAVI block's parameters, as stored in a checkpoint (spec §6.5), row-major `[out, in]`
/// matrices. `c` = 256 and `cp` = 128 in every official model.
#[derive(Clone, Debug)]
pub struct TpaviWeights {
    pub c: usize,
    pub cp: usize,
    /// Audio embedding width (VGGish: 128).
    pub d: usize,
    pub align_w: Vec<f32>,
    /// Absent in AVSS checkpoints.
    pub align_b: Option<Vec<f32>>,
    pub theta_w: Vec<f32>,
    pub theta_b: Vec<f32>,
    pub phi_w: Vec<f32>,
    pub phi_b: Vec<f32>,
    pub g_w: Vec<f32>,
    pub g_b: Vec<f32>,
    pub wz_w: Vec<f32>,
    pub wz_b: Vec<f32>,
    pub bn_gamma: Vec<f32>,
    pub bn_beta: Vec<f32>,
    pub bn_mean: Vec<f32>,
    pub bn_var: Vec<f32>,
    pub ln_gamma: Vec<f32>,
    pub ln_beta: Vec<f32>,
}

/// BatchNorm3d's eps in `W_z.1`, and the channel LayerNorm's.
pub const TPAVI_BN_EPS: f32 = 1e-5;
pub const TPAVI_LN_EPS: f32 = 1e-5;

impl TpaviWeights {
    /// `W_z` and its bias with the inference-mode BatchNorm folded in:
    /// s = γ/sqrt(σ² + eps); W' = diag(s)·W; b' = s·(b − μ) + β.
    pub fn folded_wz(&self) -> (Vec<f32>, Vec<f32>) {
        let mut w = self.wz_w.clone();
        let mut b = vec![0.0f32; self.c];
        for o in 0..self.c {
            let s = self.bn_gamma[o] / (self.bn_var[o] + TPAVI_BN_EPS).sqrt();
            for v in &mut w[o * self.cp..(o + 1) * self.cp] {
                *v *= s;
            }
            b[o] = s * (self.wz_b[o] - self.bn_mean[o]) + self.bn_beta[o];
        }
        (w, b)
    }
}

/// `S[t][c] = Σ_p V[t][c][p]` for NCHW frames `v` `[T, C, hw]`.
#[cfg(test)]
pub fn frame_sums(v: &[f32], t: usize, c: usize, hw: usize) -> Vec<f32> {
    let mut out = Vec::new();
    frame_sums_into(&v[..t * c * hw], hw, &mut out);
    out
}

/// [`frame_sums`] of every `hw`-plane of `v` into `out` (its buffer reused).
pub fn frame_sums_into(v: &[f32], hw: usize, out: &mut Vec<f32>) {
    out.clear();
    out.extend(v.chunks_exact(hw).map(|plane| plane.iter().sum::<f32>()));
}

/// `K = inv_n · Σ_t φ_tᵀ gs_t` over the frames of one group: `phi` and `gs` are `[F, C']`.
/// (The naive reference of the tests; operators use the `_into` forms.)
#[cfg(test)]
pub fn k_matrix(phi: &[f32], gs: &[f32], cp: usize, inv_n: f32) -> Vec<f32> {
    let mut k = vec![0.0f32; cp * cp];
    for (ph, g) in phi.chunks_exact(cp).zip(gs.chunks_exact(cp)) {
        add_outer(&mut k, ph, g, 1.0);
    }
    k.iter_mut().for_each(|v| *v *= inv_n);
    k
}

/// `k += scale · φᵀ gs`: one frame's rank-1 term of K (`φ`, `gs` `[C']`, `k` `[C', C']`). A
/// sliding window keeps each frame's φ and gs and sums the terms of the frames it covers.
pub fn add_outer(k: &mut [f32], phi: &[f32], gs: &[f32], scale: f32) {
    let cp = gs.len();
    for (row, &pi) in k.chunks_exact_mut(cp).zip(phi) {
        let s = pi * scale;
        row.iter_mut().zip(gs).for_each(|(kij, &gj)| *kij += s * gj);
    }
}

/// `gs = W_g·S + g_b` for one frame's spatial sums `S` `[C]`: `g_w` `[C', C]`, `g_b` `[C']`.
pub fn g_sums_into(g_w: &[f32], g_b: &[f32], sums: &[f32], gs: &mut [f32]) {
    let c = sums.len();
    for ((g, w), b) in gs.iter_mut().zip(g_w.chunks_exact(c)).zip(g_b) {
        *g = w.iter().zip(sums).map(|(w, x)| w * x).sum::<f32>() + b;
    }
}

/// The folded channel mixing of one group: `A = I + Wt·K·Wz` `[C, C]` and `c = bt·K·Wz + bz`.
/// `wt` is W_θᵀ `[C, C']`, `bt` b_θ `[C']`, `k` `[C', C']`, `wz` W_zᵀ (BN folded) `[C', C]`, `bz`
/// `[C]`.
/// (The naive reference of the tests; operators use the `_into` forms.)
#[cfg(test)]
#[allow(clippy::too_many_arguments)]
pub fn fold(wt: &[f32], bt: &[f32], k: &[f32], wz: &[f32], bz: &[f32], c: usize, cp: usize, threads: usize) -> (Vec<f32>, Vec<f32>) {
    let mut scratch = FoldScratch::default();
    fold_into(wt, bt, k, wz, bz, c, cp, threads, &mut scratch);
    (scratch.a, scratch.cvec)
}

/// Buffers of [`fold_into`], grown once to the block's size and reused, so that a stream folds
/// each window without allocating.
#[derive(Debug, Default)]
pub struct FoldScratch {
    /// K·W_z `[C', C]`.
    kwz: Vec<f32>,
    /// The result: A `[C, C]` and c `[C]`.
    pub a: Vec<f32>,
    pub cvec: Vec<f32>,
}

/// [`fold`] into `scratch.a` and `scratch.cvec`.
#[allow(clippy::too_many_arguments)]
pub fn fold_into(wt: &[f32], bt: &[f32], k: &[f32], wz: &[f32], bz: &[f32], c: usize, cp: usize, threads: usize, scratch: &mut FoldScratch) {
    let FoldScratch { kwz, a, cvec } = scratch;
    kwz.resize(cp * c, 0.0);
    a.resize(c * c, 0.0);
    let m = |ptr: *const f32, rs: usize| Matrix { ptr, rs, cs: 1 };
    // SAFETY: every matrix is row-major with the stated shape, inside its vector; gemm_into
    // overwrites its output (accumulate = false).
    unsafe {
        gemm_into(cp, c, cp, m(k.as_ptr(), cp), m(wz.as_ptr(), c), kwz.as_mut_ptr(), c, 1, threads, false);
        gemm_into(c, c, cp, m(wt.as_ptr(), cp), m(kwz.as_ptr(), c), a.as_mut_ptr(), c, 1, threads, false);
    }
    for i in 0..c {
        a[i * c + i] += 1.0;
    }
    cvec.clear();
    cvec.extend_from_slice(&bz[..c]);
    for (j, cj) in cvec.iter_mut().enumerate() {
        *cj += (0..cp).map(|q| bt[q] * kwz[q * c + j]).sum::<f32>();
    }
}

/// `out = LayerNorm_C(Aᵀ·V + c)·γ + β` for one NCHW frame: `v` and `out` `[C, hw]`. The
/// LayerNorm is the graph's: mean, then the mean of squared deviations, `1/sqrt(var + eps)`.
/// `stats` is scratch of `2·hw`.
#[allow(clippy::too_many_arguments)]
pub fn apply_nchw(
    v: &[f32], a: &[f32], cvec: &[f32], gamma: &[f32], beta: &[f32], eps: f32, c: usize, hw: usize, out: &mut [f32], stats: &mut [f32],
    threads: usize,
) {
    // Z[o, p] = Σ_i A[i, o] V[i, p] + c[o]: the output starts as c, the product accumulates.
    for (row, &co) in out.chunks_exact_mut(hw).zip(cvec) {
        row.fill(co);
    }
    let at = Matrix { ptr: a.as_ptr(), rs: 1, cs: c };
    let vm = Matrix { ptr: v.as_ptr(), rs: hw, cs: 1 };
    // SAFETY: A is [C, C], V and out are [C, hw].
    unsafe { gemm_into(c, hw, c, at, vm, out.as_mut_ptr(), hw, 1, threads, true) };
    let (mean, inv) = stats[..2 * hw].split_at_mut(hw);
    let n = c as f32;
    mean.fill(0.0);
    for row in out.chunks_exact(hw) {
        mean.iter_mut().zip(row).for_each(|(m, z)| *m += z);
    }
    mean.iter_mut().for_each(|m| *m /= n);
    inv.fill(0.0);
    for row in out.chunks_exact(hw) {
        inv.iter_mut().zip(row).zip(mean.iter()).for_each(|((s, z), m)| *s += (z - m) * (z - m));
    }
    inv.iter_mut().for_each(|s| *s = 1.0 / (*s / n + eps).sqrt());
    for ((row, g), b) in out.chunks_exact_mut(hw).zip(gamma).zip(beta) {
        for ((z, m), s) in row.iter_mut().zip(mean.iter()).zip(inv.iter()) {
            *z = (*z - m) * s * g + b;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cuda::reference::{random_tpavi_weights, tpavi_folded, tpavi_literal, Lcg};

    /// One group through this module (spatial sums, K, fold, apply), against the literal N×N
    /// definition and against the CUDA launch sequence's reference, at an official-like scale.
    #[test]
    fn the_fold_matches_the_definition_and_the_cuda_reference() {
        let (t, h, w, d) = (3, 4, 5, 16);
        for (c, cp) in [(64, 32), (24, 8)] {
            let mut rng = Lcg::new(7);
            let wts = random_tpavi_weights(&mut rng, c, cp, d, true);
            let hw = h * w;
            let v_nhwc = rng.normals(t * hw * c, 1.0);
            let audio = rng.normals(t * d, 1.0);
            let lin = |wm: &[f32], b: Option<&[f32]>, x: &[f32], rows: usize| -> Vec<f32> {
                (0..rows).map(|o| x.iter().enumerate().map(|(i, xi)| wm[o * x.len() + i] * xi).sum::<f32>() + b.map_or(0.0, |b| b[o])).collect()
            };
            // φ_t from the audio, as the graph computes it.
            let phi: Vec<f32> = (0..t)
                .flat_map(|f| {
                    let aligned = lin(&wts.align_w, wts.align_b.as_deref(), &audio[f * d..(f + 1) * d], c);
                    lin(&wts.phi_w, Some(&wts.phi_b), &aligned, cp)
                })
                .collect();
            // NHWC → NCHW per frame.
            let mut v = vec![0.0f32; t * c * hw];
            for f in 0..t {
                for p in 0..hw {
                    for ch in 0..c {
                        v[(f * c + ch) * hw + p] = v_nhwc[(f * hw + p) * c + ch];
                    }
                }
            }
            let sums = frame_sums(&v, t, c, hw);
            let gb: Vec<f32> = wts.g_b.iter().map(|b| b * hw as f32).collect();
            let gs: Vec<f32> = sums.chunks_exact(c).flat_map(|s| lin(&wts.g_w, Some(&gb), s, cp)).collect();
            let k = k_matrix(&phi, &gs, cp, 1.0 / (t * hw) as f32);
            let transpose = |m: &[f32], rows: usize, cols: usize| -> Vec<f32> {
                (0..cols).flat_map(|j| (0..rows).map(move |i| m[i * cols + j])).collect()
            };
            let (wz, bz) = wts.folded_wz();
            let (a, cvec) = fold(&transpose(&wts.theta_w, cp, c), &wts.theta_b, &k, &transpose(&wz, c, cp), &bz, c, cp, 1);
            let mut out = vec![0.0f32; v.len()];
            let mut stats = vec![0.0f32; 2 * hw];
            for f in 0..t {
                let frame = f * c * hw..(f + 1) * c * hw;
                apply_nchw(&v[frame.clone()], &a, &cvec, &wts.ln_gamma, &wts.ln_beta, TPAVI_LN_EPS, c, hw, &mut out[frame], &mut stats, 1);
            }
            let got: Vec<f32> = (0..t * hw * c).map(|i| {
                let (f, p, ch) = (i / (hw * c), i / c % hw, i % c);
                out[(f * c + ch) * hw + p]
            }).collect();
            for (name, want) in [("literal", tpavi_literal(&wts, &v_nhwc, &audio, t, hw)), ("CUDA reference", tpavi_folded(&wts, &v_nhwc, &audio, t, hw))] {
                let diff = crate::test_common::max_abs_diff(&got, &want);
                eprintln!("c {c} cp {cp}: fold vs {name}: max |diff| {diff:.2e}");
                assert!(diff <= 2e-5, "c {c} cp {cp}: fold vs {name}: max |diff| {diff}");
            }
        }
    }
}
