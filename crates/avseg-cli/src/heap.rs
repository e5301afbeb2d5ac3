//! The process's heap policy: freed memory stays in the heap for the next graph call.
//!
//! Why: tract allocates every operator's output afresh on each graph call. glibc hands out large
//! blocks with `mmap` (above its mmap threshold, which it raises with use but never past 32 MiB)
//! and unmaps them on `free`, and gives the heap's top back to the kernel once more than its trim
//! threshold is free. Each call's large activations then arrive as fresh pages: one page fault,
//! and the kernel zeroing 4 KiB, per page, every call. On `models/bavs-avsreg` (52 MB tensors of
//! 101 class maps) that was more than half of the graphs' time, and 40 % on the default model
//! (docs/cpu.md, "The heap").
//!
//! With both thresholds at 1 GiB, large blocks come from the heap and freed ones are reused by
//! the next call. The cost: resident memory stays near the peak between calls, and the peak
//! itself grows by a fifth to two fifths, since freed blocks are kept rather than returned.
//!
//! Only glibc (Linux, `target_env = "gnu"`) is tuned; other C libraries keep their own policy. A
//! user who set glibc's own variables (`MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_`,
//! `MALLOC_TOP_PAD_` or `GLIBC_TUNABLES`) keeps what they asked for.

/// Both thresholds, in bytes.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const THRESHOLD: libc::c_int = 1 << 30;

/// Applies the policy above, once, at start-up (before any thread is spawned). Returns whether
/// it changed anything.
pub(crate) fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const USER_SET: [&str; 4] = ["MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "GLIBC_TUNABLES"];
        if USER_SET.iter().any(|v| std::env::var_os(v).is_some()) {
            return false;
        }
        // SAFETY: mallopt only sets glibc's allocator parameters; it is called before any other
        // thread exists. A value glibc refuses leaves its default (mallopt returns 0).
        unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, THRESHOLD) == 1 && libc::mallopt(libc::M_TRIM_THRESHOLD, THRESHOLD) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}
