//! The emulated device: the runner's launches executed on the CPU by the same `kernels/*.cu`
//! sources, compiled for the host (build.rs, `emulated.cpp`, `kernels/emu/shim.h`). Memory is host
//! memory, addresses are host addresses, launches run in order, each split over the host's cores
//! by blocks.
//!
//! What it checks: the plan, the memory plan (buffers that overlap while live corrupt results
//! here as on a GPU), the launch order, every launch's shape against CUDA's limits, the kernels'
//! indexing and guards, and the numerics of fp32 and fp16 storage. What it cannot: races between
//! threads or blocks (they run one after another), the device memory model, occupancy and timing,
//! and tensor-core numerics (the emulated kernels round each product like the scalar code).

use super::launch::{Device, DeviceMemory, Launch};
#[cfg(not(avseg_emulator_missing))]
use super::launch::Normalise;
use super::plan::{Precision, ALIGN};
use super::CudaError;

#[cfg(not(avseg_emulator_missing))]
#[allow(improper_ctypes)]
mod ffi {
    use crate::backend::cuda::launch::{ConvParams, Dim3, MatMulParams, PoolParams, ResizeParams, Strided};
    type P = *const u8;
    type M = *mut u8;
    macro_rules! launchers {
        ($($name:ident($($arg:ident: $ty:ty),*);)*) => {
            extern "C" {
                $(pub fn $name(grid: Dim3, block: Dim3, $($arg: $ty),*) -> i32;)*
            }
        };
    }
    launchers! {
        avs_emu_conv2d_f32(x: P, w: P, b: P, r: P, y: M, p: ConvParams);
        avs_emu_conv2d_f16(x: P, w: P, b: P, r: P, y: M, p: ConvParams);
        avs_emu_matmul_f32(a: P, b: P, bias: P, o: M, p: MatMulParams);
        avs_emu_matmul_f16(a: P, b: P, bias: P, o: M, p: MatMulParams);
        avs_emu_binary_f32(a: P, b: P, o: M, kind: i32, s: Strided, n: i64);
        avs_emu_binary_f16(a: P, b: P, o: M, kind: i32, s: Strided, n: i64);
        avs_emu_unary_f32(x: P, o: M, kind: i32, n: i64);
        avs_emu_unary_f16(x: P, o: M, kind: i32, n: i64);
        avs_emu_transpose_f32(x: P, o: M, s: Strided, n: i64);
        avs_emu_transpose_f16(x: P, o: M, s: Strided, n: i64);
        avs_emu_max_pool_f32(x: P, o: M, p: PoolParams);
        avs_emu_max_pool_f16(x: P, o: M, p: PoolParams);
        avs_emu_resize_linear_f32(x: P, r: P, o: M, rt: P, rw: P, ct: P, cw: P, p: ResizeParams);
        avs_emu_resize_linear_f16(x: P, r: P, o: M, rt: P, rw: P, ct: P, cw: P, p: ResizeParams);
        avs_emu_tpavi_frame_sum_nchw_f32(v: P, hw: i32, tc: i32, s: M);
        avs_emu_tpavi_frame_sum_nchw_f16(v: P, hw: i32, tc: i32, s: M);
        avs_emu_tpavi_small_gemm(a: P, sam: i64, sak: i64, b: P, sbk: i64, sbn: i64, bias: P, bias_scale: f32, alpha: f32, diag: f32, out: M, m: i32, n: i32, k: i32);
        avs_emu_tpavi_widen_f16(x: P, out: M, n: i32);
        avs_emu_tpavi_apply_nchw_f32(v: P, weff: P, cvec: P, g: P, be: P, out: M, frames: i32, c: i32, hw: i32, eps: f32);
        avs_emu_tpavi_apply_nchw_f16(v: P, weff: P, cvec: P, g: P, be: P, out: M, frames: i32, c: i32, hw: i32, eps: f32);
        avs_emu_preprocess_bilinear_f32(src: P, sw: i32, sh: i32, stride: i32, dst: M, dw: i32, dh: i32, m0: f32, m1: f32, m2: f32, s0: f32, s1: f32, s2: f32);
        avs_emu_preprocess_bilinear_f16(src: P, sw: i32, sh: i32, stride: i32, dst: M, dw: i32, dh: i32, m0: f32, m1: f32, m2: f32, s0: f32, s1: f32, s2: f32);
        avs_emu_resample_rows_u8(src: P, stride: i32, row0: i32, rows: i32, bounds: P, coeffs: P, taps: i32, tmp: M, dw: i32);
        avs_emu_resample_columns_f32(tmp: P, dw: i32, bounds: P, coeffs: P, taps: i32, dst: M, dh: i32, m0: f32, m1: f32, m2: f32, s0: f32, s1: f32, s2: f32);
        avs_emu_resample_columns_f16(tmp: P, dw: i32, bounds: P, coeffs: P, taps: i32, dst: M, dh: i32, m0: f32, m1: f32, m2: f32, s0: f32, s1: f32, s2: f32);
        avs_emu_mask_binary_f32(l: P, h: i32, w: i32, lab: M, conf: M, ow: i32, oh: i32, th: f32);
        avs_emu_mask_binary_f16(l: P, h: i32, w: i32, lab: M, conf: M, ow: i32, oh: i32, th: f32);
        avs_emu_argmax_classes_f32(l: P, k: i32, plane: i32, lab: M, conf: M);
        avs_emu_argmax_classes_f16(l: P, k: i32, plane: i32, lab: M, conf: M);
        avs_emu_nearest_labels(lab: P, conf: P, h: i32, w: i32, ol: M, oc: M, ow: i32, oh: i32);
    }
}

/// One allocation: 256-byte aligned host memory, kept for the device's life.
struct Region {
    base: u64,
    bytes: usize,
    /// Owns the memory; `u128` blocks keep the base 16-byte aligned, the slack re-aligns to 256.
    _store: Vec<u128>,
}

/// The emulated device; see the module documentation.
pub struct EmulatedDevice {
    precision: Precision,
    regions: Vec<Region>,
    memory: DeviceMemory,
}

impl EmulatedDevice {
    /// A device storing activations at `precision`; fails when this build has no emulator.
    pub fn new(precision: Precision) -> Result<Self, CudaError> {
        if cfg!(avseg_emulator_missing) {
            return Err(CudaError::NoEmulator("its kernels were not compiled (no C++20 compiler for the target at build time)"));
        }
        Ok(EmulatedDevice { precision, regions: Vec::new(), memory: DeviceMemory::default() })
    }

    /// How many allocations are live.
    #[cfg(test)]
    pub fn allocations(&self) -> usize {
        self.regions.len()
    }

    /// Checks that `[addr, addr + bytes)` lies inside one allocation: an address the runner got
    /// wrong is an error here, not a write into the host's heap.
    fn check(&self, addr: u64, bytes: usize, what: &'static str) -> Result<(), CudaError> {
        let inside = self.regions.iter().any(|r| addr >= r.base && addr + bytes as u64 <= r.base + r.bytes as u64);
        if inside {
            Ok(())
        } else {
            Err(CudaError::Shape { kernel: what, detail: format!("{bytes} bytes at {addr:#x} are outside every allocation") })
        }
    }
}

impl Device for EmulatedDevice {
    fn name(&self) -> &'static str {
        "cuda-emulated"
    }

    fn precision(&self) -> Precision {
        self.precision
    }

    fn alloc(&mut self, bytes: usize) -> Result<u64, CudaError> {
        let words = (bytes + ALIGN as usize).div_ceil(16);
        let store = vec![0u128; words];
        let raw = store.as_ptr() as u64;
        let base = raw.div_ceil(ALIGN) * ALIGN;
        self.regions.push(Region { base, bytes, _store: store });
        self.memory.allocated(bytes as u64);
        Ok(base)
    }

    fn upload(&mut self, dst: u64, src: &[u8]) -> Result<(), CudaError> {
        self.check(dst, src.len(), "upload")?;
        // SAFETY: the destination range lies inside one of this device's allocations (checked).
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst as *mut u8, src.len()) };
        Ok(())
    }

    fn download(&mut self, src: u64, dst: &mut [u8]) -> Result<(), CudaError> {
        self.check(src, dst.len(), "download")?;
        // SAFETY: the source range lies inside one of this device's allocations (checked).
        unsafe { std::ptr::copy_nonoverlapping(src as *const u8, dst.as_mut_ptr(), dst.len()) };
        Ok(())
    }

    fn free(&mut self, addr: u64) -> Result<(), CudaError> {
        let at = self.regions.iter().position(|r| r.base == addr);
        let at = at.ok_or_else(|| CudaError::Shape { kernel: "free", detail: format!("{addr:#x} is not an allocation of this device") })?;
        let region = self.regions.swap_remove(at);
        self.memory.freed(region.bytes as u64);
        Ok(())
    }

    fn launch(&mut self, launch: &Launch) -> Result<(), CudaError> {
        run(self.precision, launch)
    }

    fn memory(&self) -> DeviceMemory {
        self.memory
    }
}

#[cfg(avseg_emulator_missing)]
fn run(_precision: Precision, _launch: &Launch) -> Result<(), CudaError> {
    Err(CudaError::NoEmulator("its kernels were not compiled"))
}

/// Runs one launch through its C launcher. The runner builds every address from its own
/// allocations and the plan's offsets, and its tests hold the results to tract.
#[cfg(not(avseg_emulator_missing))]
fn run(precision: Precision, launch: &Launch) -> Result<(), CudaError> {
    use ffi::*;
    let half = precision == Precision::F16;
    let p = |a: u64| a as *const u8;
    let m = |a: u64| a as *mut u8;
    let s = launch.shape();
    let (g, b) = (s.grid, s.block);
    // SAFETY: the launchers only touch the addresses passed, which the runner derives from this
    // device's allocations and the plan; the kernels guard every index against the sizes given.
    let status = unsafe {
        match *launch {
            Launch::Conv2d { x, w, bias, res, y, p: prm, .. } => {
                if half {
                    avs_emu_conv2d_f16(g, b, p(x), p(w), p(bias), p(res), m(y), prm)
                } else {
                    avs_emu_conv2d_f32(g, b, p(x), p(w), p(bias), p(res), m(y), prm)
                }
            }
            Launch::MatMul { a, b: bb, bias, out, p: prm, .. } => {
                if half {
                    avs_emu_matmul_f16(g, b, p(a), p(bb), p(bias), m(out), prm)
                } else {
                    avs_emu_matmul_f32(g, b, p(a), p(bb), p(bias), m(out), prm)
                }
            }
            Launch::Binary { a, b: bb, out, kind, s: st, .. } => {
                let n = st.len() as i64;
                if half {
                    avs_emu_binary_f16(g, b, p(a), p(bb), m(out), kind as i32, st, n)
                } else {
                    avs_emu_binary_f32(g, b, p(a), p(bb), m(out), kind as i32, st, n)
                }
            }
            Launch::Unary { x, out, kind, n, .. } => {
                if half {
                    avs_emu_unary_f16(g, b, p(x), m(out), kind as i32, n as i64)
                } else {
                    avs_emu_unary_f32(g, b, p(x), m(out), kind as i32, n as i64)
                }
            }
            Launch::Transpose { x, out, s: st, .. } => {
                let n = st.len() as i64;
                if half {
                    avs_emu_transpose_f16(g, b, p(x), m(out), st, n)
                } else {
                    avs_emu_transpose_f32(g, b, p(x), m(out), st, n)
                }
            }
            Launch::MaxPool { x, out, p: prm, .. } => {
                if half {
                    avs_emu_max_pool_f16(g, b, p(x), m(out), prm)
                } else {
                    avs_emu_max_pool_f32(g, b, p(x), m(out), prm)
                }
            }
            Launch::ResizeLinear { x, res, out, row_taps, row_w, col_taps, col_w, p: prm, .. } => {
                if half {
                    avs_emu_resize_linear_f16(g, b, p(x), p(res), m(out), p(row_taps), p(row_w), p(col_taps), p(col_w), prm)
                } else {
                    avs_emu_resize_linear_f32(g, b, p(x), p(res), m(out), p(row_taps), p(row_w), p(col_taps), p(col_w), prm)
                }
            }
            Launch::TpaviFrameSumNchw { v, hw, tc, sums, .. } => {
                if half {
                    avs_emu_tpavi_frame_sum_nchw_f16(g, b, p(v), hw, tc, m(sums))
                } else {
                    avs_emu_tpavi_frame_sum_nchw_f32(g, b, p(v), hw, tc, m(sums))
                }
            }
            Launch::TpaviSmallGemm { a, sam, sak, b: bb, sbk, sbn, bias, bias_scale, alpha, diag, out, m: mm, n, k, .. } => {
                avs_emu_tpavi_small_gemm(g, b, p(a), sam, sak, p(bb), sbk, sbn, p(bias), bias_scale, alpha, diag, m(out), mm, n, k)
            }
            Launch::TpaviWidenF16 { x, out, n, .. } => avs_emu_tpavi_widen_f16(g, b, p(x), m(out), n),
            Launch::TpaviApplyNchw { v, weff, cvec, gamma, beta, out, frames, c, hw, eps, .. } => {
                if half {
                    avs_emu_tpavi_apply_nchw_f16(g, b, p(v), p(weff), p(cvec), p(gamma), p(beta), m(out), frames, c, hw, eps)
                } else {
                    avs_emu_tpavi_apply_nchw_f32(g, b, p(v), p(weff), p(cvec), p(gamma), p(beta), m(out), frames, c, hw, eps)
                }
            }
            Launch::PreprocessBilinear { src, sw, sh, stride, dst, dw, dh, norm: Normalise { mean: mn, std: sd }, .. } => {
                if half {
                    avs_emu_preprocess_bilinear_f16(g, b, p(src), sw, sh, stride, m(dst), dw, dh, mn[0], mn[1], mn[2], sd[0], sd[1], sd[2])
                } else {
                    avs_emu_preprocess_bilinear_f32(g, b, p(src), sw, sh, stride, m(dst), dw, dh, mn[0], mn[1], mn[2], sd[0], sd[1], sd[2])
                }
            }
            Launch::ResampleRows { src, stride, row0, rows, bounds, coeffs, taps, tmp, dw, .. } => {
                avs_emu_resample_rows_u8(g, b, p(src), stride, row0, rows, p(bounds), p(coeffs), taps, m(tmp), dw)
            }
            Launch::ResampleColumns { tmp, dw, bounds, coeffs, taps, dst, dh, norm: Normalise { mean: mn, std: sd }, .. } => {
                if half {
                    avs_emu_resample_columns_f16(g, b, p(tmp), dw, p(bounds), p(coeffs), taps, m(dst), dh, mn[0], mn[1], mn[2], sd[0], sd[1], sd[2])
                } else {
                    avs_emu_resample_columns_f32(g, b, p(tmp), dw, p(bounds), p(coeffs), taps, m(dst), dh, mn[0], mn[1], mn[2], sd[0], sd[1], sd[2])
                }
            }
            Launch::MaskBinary { logits, h, w, labels, confidence, ow, oh, threshold, .. } => {
                if half {
                    avs_emu_mask_binary_f16(g, b, p(logits), h, w, m(labels), m(confidence), ow, oh, threshold)
                } else {
                    avs_emu_mask_binary_f32(g, b, p(logits), h, w, m(labels), m(confidence), ow, oh, threshold)
                }
            }
            Launch::ArgmaxClasses { logits, k, plane, labels, confidence, .. } => {
                if half {
                    avs_emu_argmax_classes_f16(g, b, p(logits), k, plane, m(labels), m(confidence))
                } else {
                    avs_emu_argmax_classes_f32(g, b, p(logits), k, plane, m(labels), m(confidence))
                }
            }
            Launch::NearestLabels { labels, confidence, h, w, out_labels, out_confidence, ow, oh, .. } => {
                avs_emu_nearest_labels(g, b, p(labels), p(confidence), h, w, m(out_labels), m(out_confidence), ow, oh)
            }
        }
    };
    if status != 0 {
        return Err(CudaError::Driver {
            step: "emulated launch",
            detail: format!("{} with grid {:?} and block {:?} breaks CUDA's launch limits", launch.entry_point(precision), g, b),
        });
    }
    Ok(())
}
