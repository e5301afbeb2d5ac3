//! Building every kernel for a list of architectures: the compile check CI runs without a GPU, and
//! the cache fill for read-only field images. The CLI (`avseg kernels`) only prints what this
//! returns, so Rust users get the same check.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::kernels::ALL;
use super::{Arch, CudaError};

/// What to do with each CUBIN once it compiles.
#[derive(Clone, Debug, Default)]
pub struct KernelBuildOptions {
    /// Architectures to build for; empty means the GPU's own (an error without one).
    pub archs: Vec<Arch>,
    /// Store each CUBIN in this cache folder (`None`: compile only, a check).
    pub cache_dir: Option<PathBuf>,
}

/// One kernel file built for one architecture.
#[derive(Clone, Debug)]
pub struct KernelBuild {
    /// The architecture it was built for.
    pub arch: Arch,
    /// The kernel file's name (`kernels/{name}.cu`).
    pub kernel: &'static str,
    /// How many entry points the file has.
    pub entry_points: usize,
    /// The CUBIN's size in bytes (0 on failure).
    pub cubin_bytes: usize,
    /// Compile time.
    pub elapsed: Duration,
    /// Where the CUBIN was cached, when a cache was asked for.
    pub stored: Option<PathBuf>,
    /// Why the build failed; `None` when it succeeded.
    pub failure: Option<String>,
}

/// Every kernel build of a run, and the NVRTC that made them.
#[derive(Clone, Debug)]
pub struct KernelBuildReport {
    /// NVRTC's (major, minor) version.
    pub nvrtc_version: (i32, i32),
    /// The architectures built for.
    pub archs: Vec<Arch>,
    /// One entry per kernel file and architecture, in build order.
    pub builds: Vec<KernelBuild>,
}

impl KernelBuildReport {
    /// The builds that failed.
    pub fn failures(&self) -> usize {
        self.builds.iter().filter(|b| b.failure.is_some()).count()
    }
}

/// The number of kernel files and of their entry points.
pub fn kernel_counts() -> (usize, usize) {
    (ALL.len(), ALL.iter().map(|k| k.entry_points.len()).sum())
}

/// Compiles every kernel for every architecture in `options` with NVRTC (no GPU needed when the
/// architectures are given), checks that each CUBIN holds all of its entry points, and stores it in
/// the cache when one is given. A failing build is recorded in the report, not returned as an
/// error, so that one run shows every failure; an error means nothing could be built at all.
#[cfg(feature = "cuda")]
pub fn build_kernels(options: &KernelBuildOptions) -> Result<KernelBuildReport, CudaError> {
    use super::cache::KernelCache;
    use super::{device, nvrtc::Nvrtc};

    let archs = if options.archs.is_empty() {
        vec![device::probe(0)?.arch]
    } else {
        options.archs.clone()
    };
    let nvrtc = Nvrtc::load()?;
    let cache = options.cache_dir.clone().map(KernelCache::new);
    let supported = nvrtc.supported_archs();
    let mut builds = Vec::with_capacity(archs.len() * ALL.len());
    for &arch in &archs {
        for k in ALL {
            let mut build = KernelBuild {
                arch,
                kernel: k.name,
                entry_points: k.entry_points.len(),
                cubin_bytes: 0,
                elapsed: Duration::ZERO,
                stored: None,
                failure: None,
            };
            if !supported.is_empty() && !supported.contains(&arch) {
                build.failure = Some(format!("this NVRTC does not support {arch}"));
                builds.push(build);
                continue;
            }
            let start = Instant::now();
            let result = nvrtc.compile_cubin(k, arch);
            build.elapsed = start.elapsed();
            match result {
                Ok(cubin) => {
                    build.cubin_bytes = cubin.len();
                    let missing = k.missing_entry_points(&cubin);
                    if !missing.is_empty() {
                        build.failure = Some(format!("entry points missing from the CUBIN: {}", missing.join(", ")));
                    } else if let Some(c) = &cache {
                        match c.store(k, arch, nvrtc.version, &cubin) {
                            Ok(p) => build.stored = Some(p),
                            Err(e) => build.failure = Some(e.to_string()),
                        }
                    }
                }
                Err(e) => build.failure = Some(e.to_string()),
            }
            builds.push(build);
        }
    }
    Ok(KernelBuildReport { nvrtc_version: nvrtc.version, archs, builds })
}

/// Without the `cuda` feature there is no NVRTC to build with.
#[cfg(not(feature = "cuda"))]
pub fn build_kernels(_options: &KernelBuildOptions) -> Result<KernelBuildReport, CudaError> {
    Err(CudaError::NotCompiled)
}

/// The kernel cache folder the environment selects (`$AVSEG_KERNEL_CACHE`, else
/// `$XDG_CACHE_HOME/avseg/kernels`, else `~/.cache/avseg/kernels`); `None` when none can be derived,
/// or when this build has no CUDA backend.
pub fn default_cache_dir() -> Option<PathBuf> {
    #[cfg(feature = "cuda")]
    {
        super::cache::KernelCache::from_env().map(|c| c.root().to_path_buf())
    }
    #[cfg(not(feature = "cuda"))]
    {
        None
    }
}
