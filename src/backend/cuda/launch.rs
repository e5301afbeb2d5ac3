//! The device layer of the CUDA runner: what one kernel launch is ([`Launch`]), the parameter
//! structs the kernels of `kernels/graph.cu` and `kernels/tpavi.cu` take by value (each the
//! `#[repr(C)]` twin of its C struct), and the [`Device`] trait that a real GPU (cudarc) and the
//! emulated device (`emulated.rs`, the same kernels compiled for the host) implement.
//!
//! Addresses are `u64` device addresses, as `CUdeviceptr` is; on the emulated device they are host
//! addresses. A [`Launch`] holds everything its kernel reads, so the runner's whole program is a
//! list of launches made at load time, which a CUDA graph can capture as it is.

use super::plan::Precision;
use super::CudaError;

/// Threads per block of every one-thread-per-output kernel.
pub const BLOCK: u32 = 256;

/// A CUDA launch shape (`dim3`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dim3 {
    pub x: u32,
    pub y: u32,
    pub z: u32,
}

/// Grid and block of a launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub grid: Dim3,
    pub block: Dim3,
}

impl Shape {
    /// One thread per each of `n` outputs, in blocks of [`BLOCK`]; fails when the grid would pass
    /// CUDA's limit of 2³¹ − 1 blocks.
    pub fn linear(n: u64) -> Result<Shape, CudaError> {
        let blocks = n.div_ceil(BLOCK as u64).max(1);
        if blocks > i32::MAX as u64 {
            return Err(CudaError::Shape { kernel: "launch", detail: format!("{n} outputs need {blocks} blocks, over CUDA's limit") });
        }
        Ok(Shape { grid: Dim3 { x: blocks as u32, y: 1, z: 1 }, block: Dim3 { x: BLOCK, y: 1, z: 1 } })
    }

    /// One thread per pixel of a `w`×`h` image, in 16×16 blocks (the frame and mask kernels).
    pub fn planar(w: usize, h: usize) -> Result<Shape, CudaError> {
        let (gx, gy) = (w.div_ceil(16).max(1), h.div_ceil(16).max(1));
        // CUDA allows 2³¹ − 1 blocks in x and 65,535 in y.
        if gx > i32::MAX as usize || gy > 65_535 {
            return Err(CudaError::Shape { kernel: "launch", detail: format!("a {w}x{h} image needs {gx}x{gy} blocks, over CUDA's limit") });
        }
        Ok(Shape { grid: Dim3 { x: gx as u32, y: gy as u32, z: 1 }, block: Dim3 { x: 16, y: 16, z: 1 } })
    }
}

/// The per-channel normalisation of a frame kernel: `(p / 255 − mean) / std`, RGB order.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Normalise {
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

/// Axes of the strided kernels (broadcast, transpose).
pub const MAX_RANK: usize = 6;

/// `AvsConv` (kernels/graph.cu).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ConvParams {
    pub n: i32,
    pub c_in: i32,
    pub c_out: i32,
    pub groups: i32,
    pub kh: i32,
    pub kw: i32,
    pub stride_h: i32,
    pub stride_w: i32,
    pub dil_h: i32,
    pub dil_w: i32,
    pub pad_top: i32,
    pub pad_left: i32,
    pub in_h: i32,
    pub in_w: i32,
    pub out_h: i32,
    pub out_w: i32,
    pub in_nhwc: i32,
    pub out_nhwc: i32,
    pub clamp: i32,
    pub lo: f32,
    pub hi: f32,
    /// A second clamp, after the residual (`res`): non-zero to apply it.
    pub res_clamp: i32,
    pub res_lo: f32,
    pub res_hi: f32,
}

/// `AvsMatMul` (kernels/graph.cu).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MatMulParams {
    pub m: i32,
    pub n: i32,
    pub k: i32,
    pub batch_rank: i32,
    pub a_sm: i64,
    pub a_sk: i64,
    pub b_sk: i64,
    pub b_sn: i64,
    pub o_sm: i64,
    pub o_sn: i64,
    pub batch_len: [i64; 4],
    pub a_bs: [i64; 4],
    pub b_bs: [i64; 4],
    pub o_bs: [i64; 4],
    /// 0 none, 1 per row, 2 per column.
    pub bias_mode: i32,
    pub clamp: i32,
    pub lo: f32,
    pub hi: f32,
}

/// `AvsStrided` (kernels/graph.cu): output axes and, per axis, each input's stride.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Strided {
    pub rank: i32,
    pub dims: [i64; MAX_RANK],
    pub a_st: [i64; MAX_RANK],
    pub b_st: [i64; MAX_RANK],
}

impl Strided {
    /// Elements of the output.
    pub fn len(&self) -> u64 {
        self.dims[..self.rank as usize].iter().product::<i64>() as u64
    }
}

/// `AvsPool` (kernels/graph.cu).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolParams {
    pub nc: i32,
    pub in_h: i32,
    pub in_w: i32,
    pub out_h: i32,
    pub out_w: i32,
    pub kh: i32,
    pub kw: i32,
    pub stride_h: i32,
    pub stride_w: i32,
    pub pad_top: i32,
    pub pad_left: i32,
}

/// `AvsResize` (kernels/graph.cu).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResizeParams {
    pub nc: i32,
    pub in_h: i32,
    pub in_w: i32,
    pub out_h: i32,
    pub out_w: i32,
}

/// Element-wise binary operations, numbered as `binary` in kernels/graph.cu.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum BinaryKind {
    Add = 0,
    Sub = 1,
    Mul = 2,
    Div = 3,
    Max = 4,
    Min = 5,
}

/// Element-wise unary operations, numbered as `unary` in kernels/graph.cu.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum UnaryKind {
    Sigmoid = 0,
    Relu = 1,
    Exp = 2,
    Neg = 3,
    Abs = 4,
    Sqrt = 5,
    Recip = 6,
    Tanh = 7,
    Erf = 8,
}

/// One kernel launch with its arguments. Activations are at the plan's storage precision (the
/// `_f32` or `_f16` instantiation); `bias`, tap tables and the TPAVI matrices are always fp32.
/// A null `bias` (0) means none; so does a null `res`, a residual of the output's shape added
/// last (a following Add the plan folded in).
#[derive(Clone, Debug, PartialEq)]
pub enum Launch {
    Conv2d { shape: Shape, x: u64, w: u64, bias: u64, res: u64, y: u64, p: ConvParams },
    MatMul { shape: Shape, a: u64, b: u64, bias: u64, out: u64, p: MatMulParams },
    Binary { shape: Shape, a: u64, b: u64, out: u64, kind: BinaryKind, s: Strided },
    Unary { shape: Shape, x: u64, out: u64, kind: UnaryKind, n: u64 },
    Transpose { shape: Shape, x: u64, out: u64, s: Strided },
    MaxPool { shape: Shape, x: u64, out: u64, p: PoolParams },
    ResizeLinear { shape: Shape, x: u64, res: u64, out: u64, row_taps: u64, row_w: u64, col_taps: u64, col_w: u64, p: ResizeParams },
    /// `S[t·C + c] = Σ_p V[t][c][p]`, fp32 sums.
    TpaviFrameSumNchw { shape: Shape, v: u64, hw: i32, tc: i32, sums: u64 },
    /// `out[i][j] = α·Σ_k A(i,k)·B(k,j) + bias_scale·bias[j] (+ diag on i = j)`, fp32.
    TpaviSmallGemm {
        shape: Shape,
        a: u64,
        sam: i64,
        sak: i64,
        b: u64,
        sbk: i64,
        sbn: i64,
        bias: u64,
        bias_scale: f32,
        alpha: f32,
        diag: f32,
        out: u64,
        m: i32,
        n: i32,
        k: i32,
    },
    /// fp16 bits → fp32 (`n` values).
    TpaviWidenF16 { shape: Shape, x: u64, out: u64, n: i32 },
    TpaviApplyNchw { shape: Shape, v: u64, weff: u64, cvec: u64, gamma: u64, beta: u64, out: u64, frames: i32, c: i32, hw: i32, eps: f32 },
    /// RGB8 frame (HWC, `stride` bytes per row) → OpenCV-bilinear resized, normalised CHW.
    PreprocessBilinear { shape: Shape, src: u64, sw: i32, sh: i32, stride: i32, dst: u64, dw: i32, dh: i32, norm: Normalise },
    /// PIL resize, horizontal pass: frame rows `[row0, row0 + rows)` → `dw` RGB8 columns in `tmp`.
    ResampleRows { shape: Shape, src: u64, stride: i32, row0: i32, rows: i32, bounds: u64, coeffs: u64, taps: i32, tmp: u64, dw: i32 },
    /// PIL resize, vertical pass: `tmp` → `dh` rows, normalised CHW.
    ResampleColumns { shape: Shape, tmp: u64, dw: i32, bounds: u64, coeffs: u64, taps: i32, dst: u64, dh: i32, norm: Normalise },
    /// Binary logits `[h, w]` → labels (u8) and confidences (f32) at `ow`×`oh`.
    MaskBinary { shape: Shape, logits: u64, h: i32, w: i32, labels: u64, confidence: u64, ow: i32, oh: i32, threshold: f32 },
    /// Class logits `[k, plane]` → arg-max labels and their softmax probabilities.
    ArgmaxClasses { shape: Shape, logits: u64, k: i32, plane: i32, labels: u64, confidence: u64 },
    /// Labels and confidences `[h, w]` → nearest-neighbour at `ow`×`oh`.
    NearestLabels { shape: Shape, labels: u64, confidence: u64, h: i32, w: i32, out_labels: u64, out_confidence: u64, ow: i32, oh: i32 },
}

impl Launch {
    /// The kernel's entry point at `precision` (as listed in `kernels.rs`). Static names: a GPU
    /// device looks each launch's function up by it on every call, so it must not allocate.
    pub fn entry_point(&self, precision: Precision) -> &'static str {
        let at = |f32_name: &'static str, f16_name: &'static str| if precision == Precision::F16 { f16_name } else { f32_name };
        match self {
            Launch::Conv2d { .. } => at("conv2d_f32", "conv2d_f16"),
            Launch::MatMul { .. } => at("matmul_f32", "matmul_f16"),
            Launch::Binary { .. } => at("binary_f32", "binary_f16"),
            Launch::Unary { .. } => at("unary_f32", "unary_f16"),
            Launch::Transpose { .. } => at("transpose_f32", "transpose_f16"),
            Launch::MaxPool { .. } => at("max_pool_f32", "max_pool_f16"),
            Launch::ResizeLinear { .. } => at("resize_linear_f32", "resize_linear_f16"),
            Launch::TpaviFrameSumNchw { .. } => at("tpavi_frame_sum_nchw_f32", "tpavi_frame_sum_nchw_f16"),
            // fp32 scratch at either storage precision.
            Launch::TpaviSmallGemm { .. } => "tpavi_small_gemm",
            Launch::TpaviWidenF16 { .. } => "tpavi_widen_f16",
            Launch::TpaviApplyNchw { .. } => at("tpavi_apply_nchw_f32", "tpavi_apply_nchw_f16"),
            Launch::PreprocessBilinear { .. } => at("preprocess_bilinear_f32", "preprocess_bilinear_f16"),
            // Bytes in, bytes out.
            Launch::ResampleRows { .. } => "resample_rows_u8",
            Launch::ResampleColumns { .. } => at("resample_columns_f32", "resample_columns_f16"),
            Launch::MaskBinary { .. } => at("mask_binary_f32", "mask_binary_f16"),
            Launch::ArgmaxClasses { .. } => at("argmax_classes_f32", "argmax_classes_f16"),
            // u8 labels and f32 confidences at either storage precision.
            Launch::NearestLabels { .. } => "nearest_labels",
        }
    }

    /// The launch's grid and block.
    pub fn shape(&self) -> Shape {
        match self {
            Launch::Conv2d { shape, .. }
            | Launch::MatMul { shape, .. }
            | Launch::Binary { shape, .. }
            | Launch::Unary { shape, .. }
            | Launch::Transpose { shape, .. }
            | Launch::MaxPool { shape, .. }
            | Launch::ResizeLinear { shape, .. }
            | Launch::TpaviFrameSumNchw { shape, .. }
            | Launch::TpaviSmallGemm { shape, .. }
            | Launch::TpaviWidenF16 { shape, .. }
            | Launch::TpaviApplyNchw { shape, .. }
            | Launch::PreprocessBilinear { shape, .. }
            | Launch::ResampleRows { shape, .. }
            | Launch::ResampleColumns { shape, .. }
            | Launch::MaskBinary { shape, .. }
            | Launch::ArgmaxClasses { shape, .. }
            | Launch::NearestLabels { shape, .. } => *shape,
        }
    }
}

/// Device memory a [`Device`] holds: now, and the most it has held at once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceMemory {
    pub now: u64,
    pub peak: u64,
}

impl DeviceMemory {
    /// Counts an allocation of `bytes`.
    pub fn allocated(&mut self, bytes: u64) {
        self.now += bytes;
        self.peak = self.peak.max(self.now);
    }

    /// Counts the release of `bytes`.
    pub fn freed(&mut self, bytes: u64) {
        self.now = self.now.saturating_sub(bytes);
    }
}

/// A device that runs [`Launch`]es: memory, copies and kernels, in submission order.
pub trait Device {
    /// For logs and errors (`"cuda"`, `"cuda-emulated"`).
    fn name(&self) -> &'static str;
    /// Storage precision of activations and weights this device was opened for.
    fn precision(&self) -> Precision;
    /// `bytes` of device memory, 256-byte aligned, zeroed; its address. Called at set-up only.
    fn alloc(&mut self, bytes: usize) -> Result<u64, CudaError>;
    /// Copies `src` to the device address `dst`.
    fn upload(&mut self, dst: u64, src: &[u8]) -> Result<(), CudaError>;
    /// Copies `dst.len()` bytes from the device address `src`.
    fn download(&mut self, src: u64, dst: &mut [u8]) -> Result<(), CudaError>;
    /// Releases an allocation made by `alloc` (its address). Only the frame and mask buffers,
    /// which grow with the largest frame seen, are ever released.
    fn free(&mut self, addr: u64) -> Result<(), CudaError>;
    /// Runs one kernel.
    fn launch(&mut self, launch: &Launch) -> Result<(), CudaError>;
    /// The device memory this device allocated and holds, and its peak.
    fn memory(&self) -> DeviceMemory;
    /// Readies every kernel `launches` will use, at load, so that a kernel that fails to compile
    /// or is missing from its module fails the load instead of a later call. Nothing by default.
    fn prepare(&mut self, launches: &[Launch]) -> Result<(), CudaError> {
        let _ = launches;
        Ok(())
    }
}
