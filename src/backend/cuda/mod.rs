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
//! * [`reference`]: the CPU reference of every kernel's math, which the tests hold the kernels to;
//! * [`plan`]: the runner's plan for a graph (kernel per node, FLOPs, one arena with an offset per
//!   activation), made and tested on the CPU;
//! * [`launch`]: one kernel launch as data, and the [`launch::Device`] trait that a GPU
//!   ([`gpu_device`], cudarc) and the emulated device ([`emulated`], the same kernels compiled for
//!   the host) implement;
//! * [`runner`]: a plan made into a program of launches at load, and the whole package's runner;
//! * [`frames`] and [`resample`]: pre- and post-processing on the device (frames up and masks
//!   down as bytes), and PIL's resize tables.
//!
//! Everything that loads a CUDA library is gated on the library being present, and every driver
//! call runs under `catch_unwind`, so a machine without CUDA gets an error value, never a crash.
//!
//! **Status.** The runner covers the TPAVI family with CNN encoders and runs in CI on the emulated
//! device; it has not yet run on a GPU (docs/cuda.md keeps the on-device checklist), so `--backend
//! auto` stays on tract and `--backend cuda` must be asked for.

pub mod build;
pub mod frames;
#[cfg(feature = "cuda-emulated")]
pub mod emulated;
pub mod kernels;
pub mod launch;
pub mod plan;
pub mod resample;
pub mod runner;
// The CPU references, the launch wrappers and the device's module loading wait for the CUDA model
// runner (issue 17); until it lands only the tests call them.
#[allow(dead_code)]
pub mod reference;

#[cfg(feature = "cuda")]
#[allow(dead_code)]
pub mod cache;
#[cfg(feature = "cuda")]
#[allow(dead_code)]
pub mod device;
#[cfg(feature = "cuda")]
pub mod gpu_device;
#[cfg(feature = "cuda")]
pub mod nvrtc;
#[cfg(feature = "cuda")]
#[allow(dead_code)]
pub mod ops;

#[cfg(all(feature = "cuda", not(any(feature = "cuda-12060", feature = "cuda-13000"))))]
compile_error!("the `cuda` feature needs a binding level: enable `cuda-12060` (JetPack 6) or `cuda-13000`");

pub use kernels::Arch;

#[cfg(test)]
mod device_tests;
#[cfg(all(test, feature = "cuda-emulated"))]
mod frames_tests;
#[cfg(all(test, feature = "cuda-emulated"))]
mod runner_tests;

use std::path::PathBuf;

use super::{BackendOptions, Runner};
use crate::model::ModelPackage;

/// Why the GPU cannot be used, or a GPU operation failed.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CudaError {
    /// A GPU was requested but avseg was built without the `cuda` feature.
    #[error("this avseg was built without the `cuda` feature")]
    NotCompiled,
    /// `libcuda.so` (the NVIDIA driver) could not be loaded.
    #[error("no NVIDIA driver: libcuda.so could not be loaded")]
    NoDriver,
    /// The installed driver supports an older CUDA version than this build's binding level.
    #[error("the NVIDIA driver supports CUDA {}.{}; this build needs {}.{} or newer", found / 1000, found % 1000 / 10, needed / 1000, needed % 1000 / 10)]
    OldDriver {
        /// The driver's CUDA version, encoded as `1000 * major + 10 * minor` (e.g. `12060`).
        found: i32,
        /// The minimum CUDA version this build needs, same encoding.
        needed: i32,
    },
    /// The driver loaded but reports no CUDA device.
    #[error("the NVIDIA driver reports no CUDA device")]
    NoDevice,
    /// The NVRTC library could not be loaded, so kernels cannot be compiled at run time.
    #[error("NVRTC ({library}) unavailable: {detail}")]
    NoNvrtc {
        /// The NVRTC library file name that was tried.
        library: &'static str,
        /// Why loading it failed.
        detail: String,
    },
    /// A CUDA driver call returned an error.
    #[error("CUDA driver call {step} failed: {detail}")]
    Driver {
        /// The call or kernel that failed.
        step: &'static str,
        /// The driver's error message.
        detail: String,
    },
    /// A CUDA call panicked; the panic was caught and turned into this error.
    #[error("CUDA {step} panicked: {detail}")]
    Panic {
        /// The step that panicked.
        step: &'static str,
        /// The panic message.
        detail: String,
    },
    /// NVRTC failed to compile a kernel (`kernels/<kernel>.cu`) for an architecture.
    #[error("kernels/{kernel}.cu for {arch}: NVRTC compile failed: {detail}{}", if log.is_empty() { String::new() } else { format!("\n{log}") })]
    Compile {
        /// The kernel file's stem, e.g. `decoder`.
        kernel: String,
        /// The target architecture, e.g. `sm_87`.
        arch: String,
        /// NVRTC's error message.
        detail: String,
        /// NVRTC's compile log (may be empty).
        log: String,
    },
    /// Reading or writing the on-disk CUBIN cache failed.
    #[error("kernel cache {}: {detail}", path.display())]
    Cache {
        /// The cache file or folder.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// A kernel launch was refused because a buffer's shape or length does not fit the kernel.
    #[error("{kernel}: {detail}")]
    Shape {
        /// The kernel whose launch was refused.
        kernel: &'static str,
        /// Which shape or length was wrong.
        detail: String,
    },
    /// The CUDA runner cannot run a graph: a node without a device kernel, or a precision or
    /// shape its kernels do not cover yet.
    #[error("CUDA runner, {graph}: {detail}")]
    Plan {
        /// The graph's path.
        graph: String,
        /// The node and what it lacks.
        detail: String,
    },
    /// The emulated device was requested but this build has none: built without the
    /// `cuda-emulated` feature, or without a C++20 compiler for its kernels.
    #[error("the emulated CUDA device is not in this build: {0}")]
    NoEmulator(&'static str),
    /// A CUDA device was found, but there is no CUDA runner for the package's model family yet.
    #[error("{device} found, but there is no CUDA runner for `{family}` models yet (issue 5)")]
    Unsupported {
        /// The package's model family.
        family: String,
        /// The device that was found (name and compute capability).
        device: String,
    },
}

impl CudaError {
    /// True for "this machine has no usable GPU" as opposed to a GPU that failed: the first is an
    /// expected, quiet fallback; the second deserves a warning.
    pub fn is_absent(&self) -> bool {
        matches!(self, CudaError::NotCompiled | CudaError::NoDriver | CudaError::NoDevice)
    }
}

/// Prepares `package` on the emulated device ([`emulated`], at `options.cuda_precision`): the CUDA
/// runner's plan and kernels run on the CPU, for checking them without a GPU.
pub fn prepare_emulated(package: &ModelPackage, options: &BackendOptions) -> Result<Box<dyn Runner>, super::BackendError> {
    #[cfg(not(feature = "cuda-emulated"))]
    {
        let _ = (package, options);
        Err(CudaError::NoEmulator("built without the `cuda-emulated` feature").into())
    }
    #[cfg(feature = "cuda-emulated")]
    {
        let device = emulated::EmulatedDevice::new(options.cuda_precision)?;
        Ok(Box::new(runner::DeviceRunner::prepare(package, options, device)?))
    }
}

/// `--backend cuda`: the CUDA runner on GPU 0 (at `options.cuda_precision`) for the packages it covers, or the
/// reason it cannot run. Not yet verified on a GPU (docs/cuda.md's checklist), so only an explicit
/// request uses it; `auto` ([`prepare`]) stays on tract.
pub fn prepare_explicit(package: &ModelPackage, options: &BackendOptions) -> Result<Box<dyn Runner>, super::BackendError> {
    #[cfg(not(feature = "cuda"))]
    {
        let _ = (package, options);
        Err(CudaError::NotCompiled.into())
    }
    #[cfg(feature = "cuda")]
    {
        let device = gpu_device::GpuDevice::open(0, options.cuda_precision)?;
        log::warn!("--backend cuda: the CUDA runner on {} has not been verified on a GPU yet (docs/cuda.md)", device.describe());
        Ok(Box::new(runner::DeviceRunner::prepare(package, options, device)?))
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
