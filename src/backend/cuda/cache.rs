//! The on-disk CUBIN cache.
//!
//! Layout: `ROOT/sm_XY/nvrtc-MAJOR.MINOR/NAME-HASH.cubin`, where HASH is the 64-bit FNV-1a of the
//! kernel source and its options ([`KernelFile::source_hash`]). ROOT is `$AVSEG_KERNEL_CACHE`, else
//! `$XDG_CACHE_HOME/avseg/kernels`, else `~/.cache/avseg/kernels`. Files are written to a temporary
//! name and renamed, so a reader never sees half a CUBIN, and concurrent writers are harmless.

use std::path::{Path, PathBuf};

use super::kernels::{Arch, KernelFile};
use super::CudaError;

#[derive(Clone, Debug)]
pub struct KernelCache {
    root: PathBuf,
}

impl KernelCache {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The cache the environment selects; `None` when no location can be derived (no HOME).
    pub fn from_env() -> Option<Self> {
        let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
        var("AVSEG_KERNEL_CACHE")
            .or_else(|| var("XDG_CACHE_HOME").map(|p| p.join("avseg/kernels")))
            .or_else(|| var("HOME").map(|p| p.join(".cache/avseg/kernels")))
            .map(Self::new)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the CUBIN for `file` on `arch` built by NVRTC `nvrtc` lives.
    pub fn path(&self, file: &KernelFile, arch: Arch, nvrtc: (i32, i32)) -> PathBuf {
        self.root.join(arch.to_string()).join(format!("nvrtc-{}.{}", nvrtc.0, nvrtc.1)).join(format!(
            "{}-{:016x}.cubin",
            file.name,
            file.source_hash()
        ))
    }

    /// The cached CUBIN built by exactly this NVRTC, if present and plausible.
    pub fn load(&self, file: &KernelFile, arch: Arch, nvrtc: (i32, i32)) -> Option<Vec<u8>> {
        read_cubin(&self.path(file, arch, nvrtc))
    }

    /// Without an NVRTC to name the version (a field image filled by `avseg kernels
    /// --precompile`), any NVRTC's build of the same source for the same architecture will do;
    /// the newest version wins.
    pub fn load_any_nvrtc(&self, file: &KernelFile, arch: Arch) -> Option<(Vec<u8>, PathBuf)> {
        let dir = self.root.join(arch.to_string());
        let mut versions: Vec<((u32, u32), PathBuf)> = std::fs::read_dir(&dir)
            .ok()?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let (a, b) = name.strip_prefix("nvrtc-")?.split_once('.')?;
                Some(((a.parse().ok()?, b.parse().ok()?), e.path()))
            })
            .collect();
        versions.sort_by_key(|v| std::cmp::Reverse(v.0));
        let leaf = format!("{}-{:016x}.cubin", file.name, file.source_hash());
        versions.into_iter().find_map(|(_, d)| {
            let p = d.join(&leaf);
            read_cubin(&p).map(|c| (c, p))
        })
    }

    /// Stores a CUBIN atomically and returns its path.
    pub fn store(&self, file: &KernelFile, arch: Arch, nvrtc: (i32, i32), cubin: &[u8]) -> Result<PathBuf, CudaError> {
        let path = self.path(file, arch, nvrtc);
        let err = |detail: String| CudaError::Cache { path: path.clone(), detail };
        let dir = path.parent().ok_or_else(|| err("no parent folder".into()))?;
        std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        let tmp = dir.join(format!(".{}.{}.tmp", file.name, std::process::id()));
        std::fs::write(&tmp, cubin).map_err(|e| err(e.to_string()))?;
        std::fs::rename(&tmp, &path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            err(e.to_string())
        })?;
        Ok(path)
    }
}

/// A CUBIN is an ELF image; anything else (a truncated or foreign file) is ignored and rebuilt.
fn read_cubin(path: &Path) -> Option<Vec<u8>> {
    let bytes = std::fs::read(path).ok()?;
    (bytes.len() > 64 && bytes.starts_with(b"\x7fELF")).then_some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cuda::kernels::{DECODER, TPAVI};

    fn fake_cubin(tag: u8) -> Vec<u8> {
        let mut v = b"\x7fELF".to_vec();
        v.resize(100, tag);
        v
    }

    #[test]
    fn store_then_load_by_exact_key_and_by_any_version() {
        let dir = tempfile::tempdir().unwrap();
        let cache = KernelCache::new(dir.path());
        let arch = Arch::parse("sm_87").unwrap();
        assert!(cache.load(&TPAVI, arch, (12, 9)).is_none());
        let p = cache.store(&TPAVI, arch, (12, 6), &fake_cubin(1)).unwrap();
        assert!(p.starts_with(dir.path().join("sm_87/nvrtc-12.6")), "{}", p.display());
        cache.store(&TPAVI, arch, (12, 9), &fake_cubin(2)).unwrap();
        assert_eq!(cache.load(&TPAVI, arch, (12, 6)).unwrap()[99], 1);
        assert!(cache.load(&TPAVI, arch, (13, 0)).is_none());
        assert!(cache.load(&DECODER, arch, (12, 9)).is_none());
        assert!(cache.load(&TPAVI, Arch::parse("sm_90").unwrap(), (12, 9)).is_none());
        let (newest, path) = cache.load_any_nvrtc(&TPAVI, arch).unwrap();
        assert_eq!(newest[99], 2);
        assert!(path.to_string_lossy().contains("nvrtc-12.9"));
        // No temporary files are left behind.
        let leftovers: Vec<_> = std::fs::read_dir(p.parent().unwrap()).unwrap().filter_map(|e| e.ok()).collect();
        assert_eq!(leftovers.len(), 1);
    }

    #[test]
    fn garbage_files_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let cache = KernelCache::new(dir.path());
        let arch = Arch::parse("sm_90").unwrap();
        let path = cache.path(&TPAVI, arch, (12, 9));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"not a cubin").unwrap();
        assert!(cache.load(&TPAVI, arch, (12, 9)).is_none());
        assert!(cache.load_any_nvrtc(&TPAVI, arch).is_none());
    }

    #[test]
    fn unwritable_root_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        let cache = KernelCache::new(&file);
        let e = cache.store(&TPAVI, Arch::parse("sm_87").unwrap(), (12, 9), &fake_cubin(0)).unwrap_err();
        assert!(matches!(e, CudaError::Cache { .. }), "{e}");
    }
}
