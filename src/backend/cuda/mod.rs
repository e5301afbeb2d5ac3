//! The CUDA backend: avseg's own kernels (`kernels/*.cu`) through cudarc.
//!
//! Layers, from the bottom: cudarc's raw `sys` bindings and thin `result` wrappers (never used
//! outside this module), then
//! * [`build`]: every kernel compiled for a list of architectures (the NVRTC check, the cache fill);
//! * [`kernels`]: the embedded sources, their NVRTC options and cache key, and [`Arch`];
//! * [`nvrtc`]: run-time compilation to a CUBIN for one exact `sm_XY` (needs only libnvrtc);
//! * [`cache`]: the on-disk CUBIN cache (`avseg kernels --precompile` fills it);
//! * [`device`]: the gated device probe and an open [`device::Gpu`] (context, stream, modules);
//! * [`ops`]: typed, shape-checked launch wrappers, one per kernel;
//! * [`reference`]: the CPU reference of every kernel's math, which the tests hold the kernels to.
//!
//! Everything that loads a CUDA library is gated on the library being present, and every driver
//! call runs under `catch_unwind`, so a machine without CUDA gets an error value, never a crash.
//!
//! **Status.** The kernels, their host wrappers, the compile/cache path and the device probe are
//! in place; there is no CUDA model runner yet (the convolutions and the per-family plan are still
//! to be written and measured on a GPU), so [`prepare`] reports [`CudaError::Unsupported`] once a
//! device is found, and `--backend auto` falls back to tract.

pub mod build;
pub mod kernels;
pub mod reference;

#[cfg(feature = "cuda")]
pub mod cache;
#[cfg(feature = "cuda")]
pub mod device;
#[cfg(feature = "cuda")]
pub mod nvrtc;
#[cfg(feature = "cuda")]
pub mod ops;

#[cfg(all(feature = "cuda", not(any(feature = "cuda-12060", feature = "cuda-13000"))))]
compile_error!("the `cuda` feature needs a binding level: enable `cuda-12060` (JetPack 6) or `cuda-13000`");

pub use kernels::Arch;

#[cfg(test)]
mod device_tests;

use std::path::PathBuf;

use super::{BackendOptions, Runner};
use crate::model::ModelPackage;

/// Why the GPU cannot be used, or a GPU operation failed.
#[derive(Clone, Debug, thiserror::Error)]
pub enum CudaError {
    #[error("this avseg was built without the `cuda` feature")]
    NotCompiled,
    #[error("no NVIDIA driver: libcuda.so could not be loaded")]
    NoDriver,
    #[error("the NVIDIA driver supports CUDA {}.{}; this build needs {}.{} or newer", found / 1000, found % 1000 / 10, needed / 1000, needed % 1000 / 10)]
    OldDriver { found: i32, needed: i32 },
    #[error("the NVIDIA driver reports no CUDA device")]
    NoDevice,
    #[error("NVRTC ({library}) unavailable: {detail}")]
    NoNvrtc { library: &'static str, detail: String },
    #[error("CUDA driver call {step} failed: {detail}")]
    Driver { step: &'static str, detail: String },
    #[error("CUDA {step} panicked: {detail}")]
    Panic { step: &'static str, detail: String },
    #[error("kernels/{kernel}.cu for {arch}: NVRTC compile failed: {detail}{}", if log.is_empty() { String::new() } else { format!("\n{log}") })]
    Compile { kernel: String, arch: String, detail: String, log: String },
    #[error("kernel cache {}: {detail}", path.display())]
    Cache { path: PathBuf, detail: String },
    #[error("{kernel}: {detail}")]
    Shape { kernel: &'static str, detail: String },
    #[error("{device} found, but there is no CUDA runner for `{family}` models yet (issue 5)")]
    Unsupported { family: String, device: String },
}

impl CudaError {
    /// True for "this machine has no usable GPU" as opposed to a GPU that failed: the first is an
    /// expected, quiet fallback; the second deserves a warning.
    pub fn is_absent(&self) -> bool {
        matches!(self, CudaError::NotCompiled | CudaError::NoDriver | CudaError::NoDevice)
    }
}

/// Prepares `package` on the GPU. Today this probes the device and stops at
/// [`CudaError::Unsupported`]: no family has a CUDA plan yet.
pub fn prepare(package: &ModelPackage, _options: &BackendOptions) -> Result<Box<dyn Runner>, CudaError> {
    #[cfg(not(feature = "cuda"))]
    {
        let _ = package;
        Err(CudaError::NotCompiled)
    }
    #[cfg(feature = "cuda")]
    {
        let info = device::probe(0)?;
        Err(CudaError::Unsupported { family: package.manifest().family.as_str().to_string(), device: info.to_string() })
    }
}
