//! The device layer on a real GPU, through cudarc: the same [`Launch`]es the emulated device runs,
//! submitted to one stream, with the kernels from the NVRTC/CUBIN path of [`Gpu`].
//!
//! **Not yet run on a GPU** (none has been available to this project; docs/cuda.md keeps the
//! on-device checklist). It is compiled in every `cuda` build and used only when `--backend cuda`
//! is asked for explicitly; `auto` stays on tract until the checklist has passed.
//!
//! Allocations are made at load (one per region of a program) and kept for the device's life;
//! only the frame and mask buffers of pre- and post-processing on the device grow, freeing the one
//! they replace.
//! Uploads and downloads go through the stream and wait for it, so the host buffers they read or
//! fill are free to reuse when they return.

use std::collections::HashMap;

use cudarc::driver::{result, CudaFunction, CudaSlice, DevicePtr, DeviceRepr, LaunchConfig, PushKernelArg};

use super::device::{driver, guarded, Gpu};
use super::kernels::{GRAPH, POSTPROCESS, PREPROCESS, TPAVI};
use super::launch::{ConvParams, Device, DeviceMemory, Launch, MatMulParams, Normalise, PoolParams, ResizeParams, Strided};
use super::plan::Precision;
use super::CudaError;

// SAFETY: plain `#[repr(C)]` structs of integers and floats, laid out as their C twins in
// kernels/graph.cu, passed to the kernels by value.
unsafe impl DeviceRepr for ConvParams {}
unsafe impl DeviceRepr for MatMulParams {}
unsafe impl DeviceRepr for Strided {}
unsafe impl DeviceRepr for PoolParams {}
unsafe impl DeviceRepr for ResizeParams {}

/// One GPU as a [`Device`].
pub struct GpuDevice {
    gpu: Gpu,
    precision: Precision,
    /// Each allocation with its device address, kept for the device's life (or until freed).
    allocations: Vec<(u64, CudaSlice<u8>)>,
    functions: HashMap<&'static str, CudaFunction>,
    memory: DeviceMemory,
}

impl GpuDevice {
    /// Opens GPU `ordinal` for storage at `precision`.
    pub fn open(ordinal: usize, precision: Precision) -> Result<Self, CudaError> {
        Ok(GpuDevice { gpu: Gpu::open(ordinal)?, precision, allocations: Vec::new(), functions: HashMap::new(), memory: DeviceMemory::default() })
    }

    /// The device's name and compute capability, for logs.
    pub fn describe(&self) -> String {
        self.gpu.info.to_string()
    }

    fn function(&mut self, launch: &Launch) -> Result<CudaFunction, CudaError> {
        let name = launch.entry_point(self.precision);
        if let Some(f) = self.functions.get(name) {
            return Ok(f.clone());
        }
        let file = match launch {
            Launch::TpaviFrameSumNchw { .. } | Launch::TpaviSmallGemm { .. } | Launch::TpaviWidenF16 { .. } | Launch::TpaviApplyNchw { .. } => &TPAVI,
            Launch::PreprocessBilinear { .. } | Launch::ResampleRows { .. } | Launch::ResampleColumns { .. } => &PREPROCESS,
            Launch::MaskBinary { .. } | Launch::ArgmaxClasses { .. } | Launch::NearestLabels { .. } => &POSTPROCESS,
            _ => &GRAPH,
        };
        let f = self.gpu.function(file, name)?;
        self.functions.insert(name, f.clone());
        Ok(f)
    }
}

impl Device for GpuDevice {
    fn name(&self) -> &'static str {
        "cuda"
    }

    fn precision(&self) -> Precision {
        self.precision
    }

    fn alloc(&mut self, bytes: usize) -> Result<u64, CudaError> {
        let stream = self.gpu.stream().clone();
        // cuMemAlloc aligns to at least 256 bytes, which the plan's offsets assume.
        let slice = guarded("alloc", || stream.alloc_zeros::<u8>(bytes.max(1)).map_err(driver("cuMemAlloc")))?;
        let addr = {
            let (ptr, _sync) = slice.device_ptr(&stream);
            ptr as u64
        };
        self.memory.allocated(slice.len() as u64);
        self.allocations.push((addr, slice));
        Ok(addr)
    }

    fn free(&mut self, addr: u64) -> Result<(), CudaError> {
        let at = self.allocations.iter().position(|(a, _)| *a == addr);
        let at = at.ok_or_else(|| CudaError::Shape { kernel: "free", detail: format!("{addr:#x} is not an allocation of this device") })?;
        // Dropping the slice frees it (cuMemFreeAsync on the stream, after the work queued on it).
        let (_, slice) = self.allocations.swap_remove(at);
        self.memory.freed(slice.len() as u64);
        guarded("free", move || {
            drop(slice);
            Ok(())
        })
    }

    fn upload(&mut self, dst: u64, src: &[u8]) -> Result<(), CudaError> {
        let stream = self.gpu.stream().clone();
        guarded("upload", || {
            // SAFETY: `dst` lies in one of this device's allocations (the runner's addresses come
            // from `alloc` and the plan); the stream is synchronised before `src` is released.
            unsafe { result::memcpy_htod_async(dst, src, stream.cu_stream()) }.map_err(driver("cuMemcpyHtoDAsync"))?;
            stream.synchronize().map_err(driver("cuStreamSynchronize"))
        })
    }

    fn download(&mut self, src: u64, dst: &mut [u8]) -> Result<(), CudaError> {
        let stream = self.gpu.stream().clone();
        guarded("download", || {
            // SAFETY: as in `upload`; `dst` is not read before the stream is synchronised.
            unsafe { result::memcpy_dtoh_async(dst, src, stream.cu_stream()) }.map_err(driver("cuMemcpyDtoHAsync"))?;
            stream.synchronize().map_err(driver("cuStreamSynchronize"))
        })
    }

    fn memory(&self) -> DeviceMemory {
        self.memory
    }

    /// Compiles (or loads from the cache) each module the launches use and resolves each entry
    /// point once: a call then only looks its functions up.
    fn prepare(&mut self, launches: &[Launch]) -> Result<(), CudaError> {
        for l in launches {
            self.function(l)?;
        }
        Ok(())
    }

    fn launch(&mut self, launch: &Launch) -> Result<(), CudaError> {
        let f = self.function(launch)?;
        let stream = self.gpu.stream().clone();
        let s = launch.shape();
        let cfg = LaunchConfig { grid_dim: (s.grid.x, s.grid.y, s.grid.z), block_dim: (s.block.x, s.block.y, s.block.z), shared_mem_bytes: 0 };
        guarded("kernel launch", || {
            // Locals that hold converted arguments for as long as the builder refers to them.
            let (kind, n64, n_bin);
            let mut b = stream.launch_builder(&f);
            // The arguments in each kernel's order (kernels/graph.cu, kernels/tpavi.cu).
            match launch {
                Launch::Conv2d { x, w, bias, res, y, p, .. } => {
                    b.arg(x).arg(w).arg(bias).arg(res).arg(y).arg(p);
                }
                Launch::MatMul { a, b: bb, bias, out, p, .. } => {
                    b.arg(a).arg(bb).arg(bias).arg(out).arg(p);
                }
                Launch::Binary { a, b: bb, out, kind: k, s, .. } => {
                    kind = *k as i32;
                    n_bin = s.len() as i64;
                    b.arg(a).arg(bb).arg(out).arg(&kind).arg(s).arg(&n_bin);
                }
                Launch::Unary { x, out, kind: k, n, .. } => {
                    kind = *k as i32;
                    n64 = *n as i64;
                    b.arg(x).arg(out).arg(&kind).arg(&n64);
                }
                Launch::Transpose { x, out, s, .. } => {
                    n64 = s.len() as i64;
                    b.arg(x).arg(out).arg(s).arg(&n64);
                }
                Launch::MaxPool { x, out, p, .. } => {
                    b.arg(x).arg(out).arg(p);
                }
                Launch::ResizeLinear { x, res, out, row_taps, row_w, col_taps, col_w, p, .. } => {
                    b.arg(x).arg(res).arg(out).arg(row_taps).arg(row_w).arg(col_taps).arg(col_w).arg(p);
                }
                Launch::TpaviFrameSumNchw { v, hw, tc, sums, .. } => {
                    b.arg(v).arg(hw).arg(tc).arg(sums);
                }
                Launch::TpaviSmallGemm { a, sam, sak, b: bb, sbk, sbn, bias, bias_scale, alpha, diag, out, m, n, k, .. } => {
                    b.arg(a).arg(sam).arg(sak).arg(bb).arg(sbk).arg(sbn).arg(bias).arg(bias_scale).arg(alpha).arg(diag).arg(out).arg(m).arg(n).arg(k);
                }
                Launch::TpaviWidenF16 { x, out, n, .. } => {
                    b.arg(x).arg(out).arg(n);
                }
                Launch::TpaviApplyNchw { v, weff, cvec, gamma, beta, out, frames, c, hw, eps, .. } => {
                    b.arg(v).arg(weff).arg(cvec).arg(gamma).arg(beta).arg(out).arg(frames).arg(c).arg(hw).arg(eps);
                }
                Launch::PreprocessBilinear { src, sw, sh, stride, dst, dw, dh, norm: Normalise { mean, std }, .. } => {
                    b.arg(src).arg(sw).arg(sh).arg(stride).arg(dst).arg(dw).arg(dh);
                    b.arg(&mean[0]).arg(&mean[1]).arg(&mean[2]).arg(&std[0]).arg(&std[1]).arg(&std[2]);
                }
                Launch::ResampleRows { src, stride, row0, rows, bounds, coeffs, taps, tmp, dw, .. } => {
                    b.arg(src).arg(stride).arg(row0).arg(rows).arg(bounds).arg(coeffs).arg(taps).arg(tmp).arg(dw);
                }
                Launch::ResampleColumns { tmp, dw, bounds, coeffs, taps, dst, dh, norm: Normalise { mean, std }, .. } => {
                    b.arg(tmp).arg(dw).arg(bounds).arg(coeffs).arg(taps).arg(dst).arg(dh);
                    b.arg(&mean[0]).arg(&mean[1]).arg(&mean[2]).arg(&std[0]).arg(&std[1]).arg(&std[2]);
                }
                Launch::MaskBinary { logits, h, w, labels, confidence, ow, oh, threshold, .. } => {
                    b.arg(logits).arg(h).arg(w).arg(labels).arg(confidence).arg(ow).arg(oh).arg(threshold);
                }
                Launch::ArgmaxClasses { logits, k, plane, labels, confidence, .. } => {
                    b.arg(logits).arg(k).arg(plane).arg(labels).arg(confidence);
                }
                Launch::NearestLabels { labels, confidence, h, w, out_labels, out_confidence, ow, oh, .. } => {
                    b.arg(labels).arg(confidence).arg(h).arg(w).arg(out_labels).arg(out_confidence).arg(ow).arg(oh);
                }
            }
            // SAFETY: every pointer argument is an address inside this device's allocations, and
            // every size matches the buffers the runner planned (the emulated device checks the
            // same launches in CI).
            unsafe { b.launch(cfg) }.map_err(driver("cuLaunchKernel"))?;
            Ok(())
        })
    }
}
