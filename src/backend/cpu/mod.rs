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
//! * [`resize::AvResize`]: separable linear Resize on the last two axes, every ONNX coordinate mode
//!   tract supports for it.
//!
//! Every kernel is tested against a naive reference and against tract's own operator; the switch
//! [`CpuKernels`] turns the rewrite off so that the comparison stays possible.

pub mod binary;
pub mod conv;
pub mod depthwise;
pub mod im2col;
pub mod resize;
pub mod rewrite;
pub mod winograd;

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
