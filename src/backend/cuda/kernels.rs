//! The embedded kernel sources (`kernels/*.cu`), their NVRTC options and the cache key.
//!
//! Each file is compiled as `kernels/common.cuh` followed by the file itself: the shared helpers
//! are concatenated here rather than `#include`d, so NVRTC needs no header search path.

use crate::backend::Fnv1a;
use std::fmt;

/// Shared device helpers prepended to every kernel file.
pub const COMMON: &str = include_str!("../../../kernels/common.cuh");

/// One kernel family: one `.cu` file, compiled into one module.
#[derive(Clone, Copy, Debug)]
pub struct KernelFile {
    /// File stem, also the module's name in logs and the cache (`"tpavi"`).
    pub name: &'static str,
    pub source: &'static str,
    /// Every `extern "C"` entry point the host launches. `avseg kernels --check` verifies each
    /// one is present in the compiled CUBIN, so a renamed kernel fails the CI check, not a user.
    pub entry_points: &'static [&'static str],
    /// NVRTC options besides the architecture. Resampling and thresholds are built without FMA
    /// contraction so the GPU reproduces the CPU path's values exactly.
    pub options: &'static [&'static str],
}

const EXACT: &[&str] = &["--std=c++17", "--fmad=false"];

pub const PREPROCESS: KernelFile = KernelFile {
    name: "preprocess",
    source: include_str!("../../../kernels/preprocess.cu"),
    entry_points: &["preprocess_bilinear_f32", "preprocess_bilinear_f16", "resample_rows_u8", "resample_columns_f32", "resample_columns_f16"],
    options: EXACT,
};

pub const POSTPROCESS: KernelFile = KernelFile {
    name: "postprocess",
    source: include_str!("../../../kernels/postprocess.cu"),
    entry_points: &["mask_binary_f32", "mask_binary_f16", "argmax_classes_f32", "argmax_classes_f16", "nearest_labels"],
    options: EXACT,
};

pub const DECODER: KernelFile = KernelFile {
    name: "decoder",
    source: include_str!("../../../kernels/decoder.cu"),
    entry_points: &[
        "bias_relu_f32",
        "bias_relu_f16",
        "rcu_residual_f32",
        "rcu_residual_f16",
        "add_f32",
        "add_f16",
        "upsample_bilinear_f32",
        "upsample_bilinear_f16",
    ],
    options: EXACT,
};

pub const TPAVI: KernelFile = KernelFile {
    name: "tpavi",
    source: include_str!("../../../kernels/tpavi.cu"),
    entry_points: &[
        "tpavi_frame_sum_f32",
        "tpavi_frame_sum_f16",
        "tpavi_small_gemm",
        "tpavi_apply_f32",
        "tpavi_apply_f16",
        "tpavi_frame_sum_nchw_f32",
        "tpavi_frame_sum_nchw_f16",
        "tpavi_apply_nchw_f32",
        "tpavi_apply_nchw_f16",
        "tpavi_widen_f16",
    ],
    options: &["--std=c++17"],
};

/// The graph runner's operators (convolution, matrix product, broadcast element-wise, transpose,
/// max-pool, linear resize); see `kernels/graph.cu`.
pub const GRAPH: KernelFile = KernelFile {
    name: "graph",
    source: include_str!("../../../kernels/graph.cu"),
    entry_points: &[
        "conv2d_f32",
        "conv2d_f16",
        "matmul_f32",
        "matmul_f16",
        "binary_f32",
        "binary_f16",
        "unary_f32",
        "unary_f16",
        "transpose_f32",
        "transpose_f16",
        "max_pool_f32",
        "max_pool_f16",
        "resize_linear_f32",
        "resize_linear_f16",
    ],
    options: &["--std=c++17"],
};

/// Every kernel family, in the order `avseg kernels` reports them.
pub const ALL: &[KernelFile] = &[PREPROCESS, POSTPROCESS, DECODER, TPAVI, GRAPH];

impl KernelFile {
    /// The exact text NVRTC compiles.
    pub fn full_source(&self) -> String {
        let mut s = String::with_capacity(COMMON.len() + self.source.len() + 64);
        s.push_str(COMMON);
        s.push_str("\n#line 1 \"");
        s.push_str(self.name);
        s.push_str(".cu\"\n");
        s.push_str(self.source);
        s
    }

    /// Hash of everything that determines the CUBIN besides the architecture and the NVRTC
    /// version (which the cache path carries): the source text and the options.
    pub fn source_hash(&self) -> u64 {
        let mut h = Fnv1a::new();
        h.write(self.full_source().as_bytes());
        for o in self.options {
            h.write(&[0]);
            h.write(o.as_bytes());
        }
        h.finish()
    }

    /// Entry points whose symbol name is absent from a compiled CUBIN (an ELF image: names sit in
    /// its string tables, NUL-terminated, preceded by a NUL or by the `.` of a section name).
    pub fn missing_entry_points(&self, cubin: &[u8]) -> Vec<&'static str> {
        self.entry_points
            .iter()
            .copied()
            .filter(|e| {
                let pat: Vec<u8> = e.bytes().chain([0]).collect();
                !cubin
                    .windows(pat.len())
                    .enumerate()
                    .any(|(i, w)| w == pat.as_slice() && i > 0 && matches!(cubin[i - 1], 0 | b'.'))
            })
            .collect()
    }

    /// The options for one architecture, as NVRTC takes them.
    pub fn nvrtc_options(&self, arch: Arch) -> Vec<String> {
        let mut v = vec![format!("--gpu-architecture={arch}")];
        v.extend(self.options.iter().map(|s| s.to_string()));
        v
    }
}

/// A real GPU architecture, `sm_XY` (compute capability X.Y). CUBINs are compiled for exactly one:
/// on Tegra, SASS does not carry across minor revisions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Arch {
    /// The compute capability's major version (X in `sm_XY`).
    pub major: u32,
    /// The compute capability's minor version (Y in `sm_XY`).
    pub minor: u32,
}

impl Arch {
    /// Parses `sm_87`, `sm87`, `87` or `8.7`. Suffixed names (`sm_90a`) are refused: no kernel uses
    /// architecture-specific features.
    pub fn parse(s: &str) -> Option<Arch> {
        let t = s.trim();
        let t = t.strip_prefix("sm_").or_else(|| t.strip_prefix("sm")).unwrap_or(t);
        let (major, minor) = match t.split_once('.') {
            Some((a, b)) => (a.parse().ok()?, b.parse().ok()?),
            None => {
                if t.len() < 2 || !t.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                let (a, b) = t.split_at(t.len() - 1);
                (a.parse().ok()?, b.parse().ok()?)
            }
        };
        if !(3..=20).contains(&major) || minor > 9 {
            return None;
        }
        Some(Arch { major, minor })
    }

    /// Parses a comma-separated list (`sm_87,sm_90`); `Err` carries the first bad item.
    pub fn parse_list(s: &str) -> Result<Vec<Arch>, String> {
        let mut out = Vec::new();
        for item in s.split(',').filter(|i| !i.trim().is_empty()) {
            let a = Arch::parse(item).ok_or_else(|| item.trim().to_string())?;
            if !out.contains(&a) {
                out.push(a);
            }
        }
        if out.is_empty() {
            return Err(s.to_string());
        }
        Ok(out)
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sm_{}{}", self.major, self.minor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arch_parsing() {
        assert_eq!(Arch::parse("sm_87"), Some(Arch { major: 8, minor: 7 }));
        assert_eq!(Arch::parse(" sm_90 "), Some(Arch { major: 9, minor: 0 }));
        assert_eq!(Arch::parse("8.7"), Some(Arch { major: 8, minor: 7 }));
        assert_eq!(Arch::parse("120"), Some(Arch { major: 12, minor: 0 }));
        for bad in ["", "sm_", "sm_9", "sm_90a", "compute_87", "x87", "sm_8.10"] {
            assert_eq!(Arch::parse(bad), None, "{bad}");
        }
        assert_eq!(Arch::parse("sm_87").unwrap().to_string(), "sm_87");
        assert_eq!(Arch::parse_list("sm_87,sm_90,sm_87").unwrap().len(), 2);
        assert_eq!(Arch::parse_list("sm_87,bogus"), Err("bogus".to_string()));
        assert!(Arch::parse_list(",").is_err());
    }

    #[test]
    fn every_file_is_self_contained_and_declares_its_entry_points() {
        for k in ALL {
            let src = k.full_source();
            assert!(
                !src.lines().any(|l| l.trim_start().starts_with("#include")),
                "{}: kernels must not #include (no toolkit headers)",
                k.name
            );
            for e in k.entry_points {
                let call = format!(" {e}(");
                assert!(
                    src.lines().any(|l| l.starts_with("extern \"C\" __global__ void") && l.contains(&call)),
                    "{}: no `extern \"C\" __global__` kernel `{e}`",
                    k.name
                );
            }
        }
    }

    #[test]
    fn entry_points_are_found_as_whole_symbol_names() {
        let cubin = b"\x7fELF\0.text.add_f32\0add_f32\0add_f16\0";
        let decoder = KernelFile { entry_points: &["add_f32", "add_f16", "bias_relu_f32"], ..DECODER };
        assert_eq!(decoder.missing_entry_points(cubin), vec!["bias_relu_f32"]);
        // A longer name that merely ends with an entry point's name does not count.
        let only_suffix = KernelFile { entry_points: &["add_f16"], ..DECODER };
        assert_eq!(only_suffix.missing_entry_points(b"\0xadd_f16\0"), vec!["add_f16"]);
    }

    #[test]
    fn hash_tracks_source_and_options() {
        let a = PREPROCESS.source_hash();
        assert_eq!(a, PREPROCESS.source_hash());
        let other = KernelFile { options: &["--std=c++17"], ..PREPROCESS };
        assert_ne!(a, other.source_hash());
        let names: std::collections::HashSet<_> = ALL.iter().map(|k| k.source_hash()).collect();
        assert_eq!(names.len(), ALL.len());
        // Known FNV-1a vector: "a" → 0xaf63dc4c8601ec8c.
        let mut h = Fnv1a::new();
        h.write(b"a");
        assert_eq!(h.finish(), 0xaf63_dc4c_8601_ec8c);
    }
}
