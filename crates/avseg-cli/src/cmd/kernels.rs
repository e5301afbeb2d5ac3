//! `avseg kernels`: the NVRTC compile check of every CUDA kernel (no GPU needed) and the kernel
//! cache fill. The work is the runtime's [`avseg::build_kernels`]; this prints its report.

use std::path::PathBuf;

use clap::Args;

use avseg::{build_kernels, default_cache_dir, kernel_counts, Arch, KernelBuildOptions};

use crate::CliError;

#[derive(Args)]
pub(crate) struct KernelsArgs {
    /// Compile every kernel for each --arch (only libnvrtc is needed, no GPU or driver) and report
    /// each; exits non-zero, with NVRTC's log, if any fails.
    #[arg(long, required_unless_present = "precompile")]
    pub check: bool,
    /// Compile into the kernel cache, e.g. while building a read-only field image; for --arch, or
    /// the present GPU's architecture.
    #[arg(long)]
    pub precompile: bool,
    /// Comma-separated GPU architectures, e.g. sm_87,sm_90 (default: the present GPU's).
    #[arg(long)]
    pub arch: Option<String>,
    /// Cache folder for --precompile (default: $AVSEG_KERNEL_CACHE, else
    /// $XDG_CACHE_HOME/avseg/kernels, else ~/.cache/avseg/kernels).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
}

/// Runs `avseg kernels`.
pub(crate) fn run(a: KernelsArgs) -> Result<(), CliError> {
    let archs = match &a.arch {
        Some(list) => Arch::parse_list(list)
            .map_err(|bad| CliError::Usage(format!("--arch: `{bad}` is not an architecture like sm_87")))?,
        None => Vec::new(),
    };
    let cache_dir = if a.precompile {
        Some(a.cache_dir.clone().or_else(default_cache_dir).ok_or_else(|| {
            CliError::Usage("no kernel cache folder: set AVSEG_KERNEL_CACHE or HOME, or pass --cache-dir".into())
        })?)
    } else {
        None
    };
    let no_gpu_hint = archs.is_empty();
    let report = build_kernels(&KernelBuildOptions { archs, cache_dir }).map_err(|e| {
        if no_gpu_hint {
            CliError::Tool(format!("no GPU to take the architecture from ({e}); pass --arch, e.g. --arch sm_87,sm_90"))
        } else {
            CliError::Tool(e.to_string())
        }
    })?;
    let (files, entry_points) = kernel_counts();
    println!(
        "NVRTC {}.{}; {files} kernel families ({entry_points} entry points) for {}",
        report.nvrtc_version.0,
        report.nvrtc_version.1,
        report.archs.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", ")
    );
    for b in &report.builds {
        match &b.failure {
            Some(why) => println!("FAIL  {}  {:<12} {why}", b.arch, b.kernel),
            None => println!(
                "ok    {}  {:<12} {:>2} kernels {:>7.1} KiB {:>6.2} s{}",
                b.arch,
                b.kernel,
                b.entry_points,
                b.cubin_bytes as f64 / 1024.0,
                b.elapsed.as_secs_f64(),
                b.stored.as_ref().map_or(String::new(), |p| format!("  -> {}", p.display()))
            ),
        }
    }
    let failures = report.failures();
    if failures > 0 {
        return Err(CliError::Tool(format!("{failures} of {} kernel builds failed", report.builds.len())));
    }
    println!("all {} kernel builds ok", report.builds.len());
    Ok(())
}
