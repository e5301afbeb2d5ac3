//! avseg's own CPU kernels, registered in tract as operators by a load-time graph rewrite.
//!
//! tract stays the CPU engine: it loads, declutters, plans and runs every graph. Where its own
//! operators are slow on AVS graphs (NCHW convolutions through im2col and einsum with the bias and
//! clamp as separate passes, single-threaded Resize), [`rewrite`] swaps the node for an avseg
//! operator before tract optimises the graph:
//!
//! * [`conv::AvConv`]: 2-D convolution in NCHW with its bias and a following ReLU / ReLU6 fused.
//!   Pointwise convolutions are one GEMM per image ([`gemm`] crate); depthwise ones run a direct
//!   kernel ([`depthwise`]) on NHWC tensors; 3×3 ones at stride 1 use Winograd F(2×2, 3×3)
//!   ([`winograd`]); the rest go through [`im2col`] and a GEMM.
//! * [`binary::AvBinary`]: broadcasting Add, Sub, Mul, Div, Max, Min (tract's own kernels cover
//!   equal shapes and scalars; a tensor against a broadcast one takes its slow generic path).
//! * [`matmul::AvMatMul`]: batched matrix products (ONNX MatMul, Gemm) read in place through
//!   strides, with the bias and a clamp fused.
//! * [`gather_sum::AvGatherSum`]: Gather → multiply → ReduceSum as one pass (the sampling of
//!   deformable attention), without materialising the gathered rows.
//! * [`tpavi::AvTpavi`]: a whole TPAVI block as its fold ([`crate::backend::tpavi`]).
//! * [`resize::AvResize`]: separable linear Resize on the last two axes, every ONNX coordinate mode
//!   tract supports for it.
//! * [`maxpool::AvMaxPool`]: 2-D max pooling (VGGish's, ResNet's stem), a running maximum of whole
//!   rows.
//!
//! Every kernel is tested against a naive reference and against tract's own operator; the switch
//! [`CpuKernels`] turns the rewrite off so that the comparison stays possible.


use std::sync::OnceLock;

use tract_linalg::multithread::{current_tract_executor, Executor};
use tract_onnx::prelude::{Tensor, TractResult};

/// Which kernels run the hot operators on the CPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum CpuKernels {
    /// avseg's convolution and resize operators where they apply, tract for everything else.
    #[default]
    Avseg,
    /// tract's operators only (no rewrite): the reference for avseg's kernels.
    Tract,
}

impl CpuKernels {
    /// The name used on the command line and in reports (`avseg`, `tract`).
    pub fn name(self) -> &'static str {
        match self {
            CpuKernels::Avseg => "avseg",
            CpuKernels::Tract => "tract",
        }
    }
}

impl std::str::FromStr for CpuKernels {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "avseg" => Ok(CpuKernels::Avseg),
            "tract" => Ok(CpuKernels::Tract),
            other => Err(format!("unknown CPU kernel set `{other}` (expected avseg or tract)")),
        }
    }
}

/// The instruction set avseg's element-wise and depthwise kernels are compiled for, chosen once
/// per process from what the CPU reports (the `gemm` crate makes the same choice for the matrix
/// products on its own).
///
/// Each kernel is written once as portable Rust, marked `#[inline(always)]`, and instantiated by
/// [`per_isa!`] inside functions compiled with `#[target_feature]` for x86-64-v4 (AVX-512) and
/// x86-64-v3 (AVX2, FMA), where the compiler vectorises it for those registers; everywhere else
/// (aarch64, whose baseline has NEON, and older x86) the portable build runs. Closures handed to a
/// generic dispatcher are not enough: their bodies are compiled for the baseline unless inlined,
/// and were measured running SSE2 code on an AVX-512 machine.
///
/// `AVSEG_CPU_ISA=baseline|avx2|avx512` caps the choice (for comparisons and for testing the
/// portable build on a machine that has more).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// AVX-512 F/VL/BW/DQ with AVX2, FMA, BMI1/2.
    X86V4,
    /// AVX2, FMA, BMI1/2.
    X86V3,
    /// The target's baseline (SSE2 on x86-64, NEON on aarch64).
    Baseline,
}

impl Isa {
    /// The instruction set in use (detected on first call).
    pub fn current() -> Isa {
        static ISA: OnceLock<Isa> = OnceLock::new();
        *ISA.get_or_init(|| {
            let cap = std::env::var("AVSEG_CPU_ISA").ok();
            let detected = Isa::detect();
            match cap.as_deref() {
                Some("baseline") => Isa::Baseline,
                Some("avx2") if detected == Isa::X86V4 => Isa::X86V3,
                _ => detected,
            }
        })
    }

    /// What this CPU supports, ignoring `AVSEG_CPU_ISA`.
    pub fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            let v3 = has!("avx2") && has!("fma") && has!("bmi1") && has!("bmi2");
            if v3 && has!("avx512f") && has!("avx512vl") && has!("avx512bw") && has!("avx512dq") {
                return Isa::X86V4;
            }
            if v3 {
                return Isa::X86V3;
            }
        }
        Isa::Baseline
    }
}

/// Defines `fn $name(args)` that calls the `#[inline(always)]` kernel `$inner(args)` through a
/// copy compiled for the CPU's instruction set ([`Isa`]).
macro_rules! per_isa {
    ($(#[$attr:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) = $inner:path) => {
        $(#[$attr])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,bmi1,bmi2")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn v4($($arg: $ty),*) {
                    $inner($($arg),*)
                }
                #[target_feature(enable = "avx2,fma,bmi1,bmi2")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn v3($($arg: $ty),*) {
                    $inner($($arg),*)
                }
                match $crate::backend::cpu::Isa::current() {
                    // SAFETY: the CPU reported these features (Isa::detect).
                    $crate::backend::cpu::Isa::X86V4 => return unsafe { v4($($arg),*) },
                    $crate::backend::cpu::Isa::X86V3 => return unsafe { v3($($arg),*) },
                    $crate::backend::cpu::Isa::Baseline => {}
                }
            }
            $inner($($arg),*)
        }
    };
}
// Other stages with hot loops (the softmax of semantic masks) use it too.
pub(crate) use per_isa;

pub mod binary;
pub mod conv;
pub mod depthwise;
pub mod gather_sum;
pub mod im2col;
pub mod matmul;
pub mod maxpool;
pub mod resize;
pub mod rewrite;
pub mod tiled_gemm;
pub mod tpavi;
pub mod winograd;

/// A raw output pointer shared by parallel tasks that write disjoint elements of one buffer
/// (each use states why they are disjoint).
#[derive(Clone, Copy)]
pub(crate) struct SendPtr(pub *mut f32);
// SAFETY: the tasks sharing it write disjoint elements, and the buffer outlives them.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

/// Runs `f` on the thread pool of the tract executor in scope (the runner's), so that avseg's
/// parallel kernels use the same threads as tract's matrix products; returns the pool's thread
/// count alongside. Without a pool, `f` runs on the caller's thread with a count of 1.
pub(crate) fn in_pool<R: Send>(f: impl FnOnce(usize) -> R + Send) -> R {
    match current_tract_executor() {
        Executor::MultiThread(pool) => pool.install(|| f(rayon::current_num_threads())),
        _ => f(1),
    }
}

/// A new f32 output tensor of `shape`, filled by `fill(values, threads)` on the runner's pool: the
/// common tail of every avseg operator's `eval`.
pub(crate) fn output(shape: &[usize], fill: impl FnOnce(&mut [f32], usize) + Send) -> TractResult<Tensor> {
    // Every kernel writes each output element before anything reads it.
    let mut out = unsafe { Tensor::uninitialized::<f32>(shape)? };
    {
        let mut view = out.try_as_plain_ram_mut()?;
        let y = view.as_slice_mut::<f32>()?;
        in_pool(|threads| fill(y, threads));
    }
    Ok(out)
}
