//! Finding a usable GPU and holding its context, stream and kernel modules.
//!
//! Every step that touches the driver is gated: cudarc panics (rather than returning an error)
//! when libcuda is missing or lacks a symbol, so the library's presence is checked first and each
//! call is wrapped in `catch_unwind` as a second line of defence. The probe reports which step
//! failed: no driver library, `cuInit`, a driver older than this build's binding level, no device,
//! context creation.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, OnceLock};

use cudarc::driver::{sys, CudaContext, CudaFunction, CudaModule, CudaStream};
use cudarc::nvrtc::Ptx;

use super::cache::KernelCache;
use super::kernels::{Arch, KernelFile};
use super::nvrtc::Nvrtc;
use crate::error::panic_message;
use super::CudaError;

/// The oldest driver API this build binds against (CUDA major × 1000).
#[cfg(feature = "cuda-13000")]
const MIN_DRIVER: i32 = 13000;
#[cfg(not(feature = "cuda-13000"))]
const MIN_DRIVER: i32 = 12000;

/// What the probe learned about device 0.
#[derive(Clone, Debug)]
pub struct DeviceInfo {
    pub ordinal: usize,
    pub name: String,
    pub arch: Arch,
    /// CUDA driver API version, e.g. 12060.
    pub driver_version: i32,
    pub total_memory: usize,
}

impl std::fmt::Display for DeviceInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "GPU {} \"{}\" ({}, {} MiB, driver API {}.{})",
            self.ordinal,
            self.name,
            self.arch,
            self.total_memory >> 20,
            self.driver_version / 1000,
            self.driver_version % 1000 / 10
        )
    }
}

pub(super) fn guarded<T>(step: &'static str, f: impl FnOnce() -> Result<T, CudaError>) -> Result<T, CudaError> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| Err(CudaError::Panic { step, detail: panic_message(&*p) }))
}

pub(super) fn driver(step: &'static str) -> impl Fn(cudarc::driver::DriverError) -> CudaError {
    move |e| CudaError::Driver { step, detail: e.to_string() }
}

/// Whether libcuda can be loaded at all. Each check dlopens, so the answer is kept.
pub fn driver_present() -> bool {
    static PRESENT: OnceLock<bool> = OnceLock::new();
    *PRESENT.get_or_init(|| catch_unwind(|| unsafe { sys::is_culib_present() }).unwrap_or(false))
}

/// Probes device `ordinal` without creating a context.
pub fn probe(ordinal: usize) -> Result<DeviceInfo, CudaError> {
    if !driver_present() {
        return Err(CudaError::NoDriver);
    }
    guarded("device probe", || {
        use cudarc::driver::result;
        result::init().map_err(driver("cuInit"))?;
        let mut version = 0;
        unsafe { sys::cuDriverGetVersion(&mut version) }.result().map_err(driver("cuDriverGetVersion"))?;
        if version < MIN_DRIVER {
            return Err(CudaError::OldDriver { found: version, needed: MIN_DRIVER });
        }
        let count = result::device::get_count().map_err(driver("cuDeviceGetCount"))?;
        if count <= 0 {
            return Err(CudaError::NoDevice);
        }
        let index = i32::try_from(ordinal).ok().filter(|&i| i < count).ok_or(CudaError::NoDevice)?;
        let dev = result::device::get(index).map_err(driver("cuDeviceGet"))?;
        let attr = |a| unsafe { result::device::get_attribute(dev, a) }.map_err(driver("cuDeviceGetAttribute"));
        let major = attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?;
        let minor = attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?;
        let name = result::device::get_name(dev).map_err(driver("cuDeviceGetName"))?;
        let total_memory = unsafe { result::device::total_mem(dev) }.map_err(driver("cuDeviceTotalMem"))?;
        Ok(DeviceInfo {
            ordinal,
            name,
            arch: Arch { major: major.max(0) as u32, minor: minor.max(0) as u32 },
            driver_version: version,
            total_memory,
        })
    })
}

/// Where a module's CUBIN came from, for logs and `avseg kernels`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CubinOrigin {
    Cache(std::path::PathBuf),
    Compiled,
}

/// The CUBIN for `file` on `arch`: from the cache when present, else compiled by NVRTC and
/// stored (a read-only cache is only a warning). Without NVRTC, a precompiled cache still works.
pub fn cubin_for(
    file: &KernelFile,
    arch: Arch,
    cache: Option<&KernelCache>,
) -> Result<(Vec<u8>, CubinOrigin), CudaError> {
    let nvrtc = Nvrtc::load();
    match (&nvrtc, cache) {
        (Ok(n), Some(c)) => {
            if let Some(bytes) = c.load(file, arch, n.version) {
                return Ok((bytes, CubinOrigin::Cache(c.path(file, arch, n.version))));
            }
        }
        (Err(_), Some(c)) => {
            if let Some((bytes, path)) = c.load_any_nvrtc(file, arch) {
                return Ok((bytes, CubinOrigin::Cache(path)));
            }
        }
        _ => {}
    }
    let nvrtc = nvrtc?;
    let cubin = nvrtc.compile_cubin(file, arch)?;
    if let Some(c) = cache {
        if let Err(e) = c.store(file, arch, nvrtc.version, &cubin) {
            log::warn!("kernel cache not written ({e}); kernels will be compiled again next run");
        }
    }
    Ok((cubin, CubinOrigin::Compiled))
}

/// An open device: context, one stream, and the kernel modules loaded so far.
pub struct Gpu {
    pub info: DeviceInfo,
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    cache: Option<KernelCache>,
    modules: HashMap<&'static str, Arc<CudaModule>>,
}

impl Gpu {
    /// Opens device `ordinal` after probing it. Kernels are compiled lazily, per family.
    pub fn open(ordinal: usize) -> Result<Gpu, CudaError> {
        let info = probe(ordinal)?;
        let (ctx, stream) = guarded("context creation", || {
            let ctx = CudaContext::new(ordinal).map_err(driver("cuDevicePrimaryCtxRetain"))?;
            let stream = ctx.new_stream().map_err(driver("cuStreamCreate"))?;
            Ok((ctx, stream))
        })?;
        Ok(Gpu { info, ctx, stream, cache: KernelCache::from_env(), modules: HashMap::new() })
    }

    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// Loads (compiling or reading from the cache) a kernel family. A cached CUBIN the driver
    /// rejects is rebuilt once before giving up.
    pub fn module(&mut self, file: &KernelFile) -> Result<Arc<CudaModule>, CudaError> {
        if let Some(m) = self.modules.get(file.name) {
            return Ok(m.clone());
        }
        let arch = self.info.arch;
        let (cubin, origin) = cubin_for(file, arch, self.cache.as_ref())?;
        let load = |bytes: Vec<u8>| {
            guarded("module load", || self.ctx.load_module(Ptx::from_binary(bytes)).map_err(driver("cuModuleLoadData")))
        };
        let module = match (load(cubin), &origin) {
            (Ok(m), _) => m,
            (Err(e), CubinOrigin::Cache(path)) => {
                log::warn!("{}: cached CUBIN rejected ({e}); recompiling", path.display());
                let cubin = Nvrtc::load()?.compile_cubin(file, arch)?;
                load(cubin)?
            }
            (Err(e), CubinOrigin::Compiled) => return Err(e),
        };
        log::debug!("kernels {} for {arch}: {:?}", file.name, origin);
        self.modules.insert(file.name, module.clone());
        Ok(module)
    }

    /// One entry point of a kernel family.
    pub fn function(&mut self, file: &KernelFile, name: &str) -> Result<CudaFunction, CudaError> {
        let module = self.module(file)?;
        guarded("function lookup", || module.load_function(name).map_err(driver("cuModuleGetFunction")))
    }
}
