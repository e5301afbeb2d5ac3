//! `avseg kernels`: the NVRTC compile check of every CUDA kernel (no GPU needed), the kernel
//! cache fill, and the CUDA runner's plan for a package (`--plan`, made on the CPU). The work is
//! the runtime's [`avseg::build_kernels`] and [`avseg::plan_package`]; this prints their reports.

use std::path::PathBuf;

use clap::Args;

use avseg::{build_kernels, default_cache_dir, kernel_counts, plan_package, Arch, KernelBuildOptions, ModelPackage, Precision};

use crate::CliError;

#[derive(Args)]
pub(crate) struct KernelsArgs {
    /// Compile every kernel for each --arch (only libnvrtc is needed, no GPU or driver) and report
    /// each; exits non-zero, with NVRTC's log, if any fails.
    #[arg(long, required_unless_present_any = ["precompile", "plan"])]
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
    /// Print the CUDA runner's plan for the package in --model (no GPU needed): the kernel of
    /// every node, FLOPs per clip, and the memory plan.
    #[arg(long, requires = "model", conflicts_with_all = ["check", "precompile"])]
    pub plan: bool,
    /// The package to plan.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Storage precision of the plan: fp32 or fp16.
    #[arg(long, default_value = "fp32", value_parser = ["fp32", "fp16"])]
    pub precision: String,
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

/// `avseg kernels --plan`.
fn print_plan(model: &std::path::Path, precision: &str) -> Result<(), CliError> {
    let package = ModelPackage::load(model)?;
    let precision = if precision == "fp16" { Precision::F16 } else { Precision::F32 };
    let plans = plan_package(&package, precision)?;
    println!(
        "CUDA plan for {} ({}, T = {} frames per call, {} storage)",
        model.display(),
        package.manifest().family.as_str(),
        package.frames_per_clip(),
        if precision == Precision::F16 { "fp16" } else { "fp32" }
    );
    let mut unsupported = 0;
    for (role, p) in &plans {
        println!();
        println!("{role}: {} steps, {:.2} GFLOP per call", p.steps.len(), p.flops as f64 / 1e9);
        println!("  {:<28} {:>6} {:>12} {:>7}", "kernel", "steps", "GFLOP", "share");
        for (kernel, steps, flops) in p.kernel_table() {
            let share = if p.flops > 0 { 100.0 * flops as f64 / p.flops as f64 } else { 0.0 };
            println!("  {kernel:<28} {steps:>6} {:>12.3} {share:>6.1}%", flops as f64 / 1e9);
        }
        println!(
            "  memory: weights {}, activation arena {} ({} buffers; {} if none shared; lower bound {})",
            mib(p.weight_bytes),
            mib(p.arena_bytes),
            p.buffers.len(),
            mib(p.unshared_bytes),
            mib(p.peak_live_bytes)
        );
        for u in &p.unsupported {
            println!("  no device kernel: {u}");
        }
        unsupported += p.unsupported.len();
    }
    if unsupported > 0 {
        println!();
        println!("{unsupported} node(s) have no device kernel: the CUDA runner cannot run this package yet");
    }
    Ok(())
}

/// Runs `avseg kernels`.
pub(crate) fn run(a: KernelsArgs) -> Result<(), CliError> {
    if a.plan {
        let model = a.model.as_deref().ok_or_else(|| CliError::Usage("--plan needs --model".into()))?;
        return print_plan(model, &a.precision);
    }
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
