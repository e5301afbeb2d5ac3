//! `AvConv`: 2-D convolution of NCHW f32 tensors, with the bias and a following clamp (ReLU,
//! ReLU6) fused, so the output is written once.
//!
//! Three kernels, chosen from the geometry at load time:
//! * pointwise (1×1, stride 1, no padding, one group): the image is already the GEMM's right-hand
//!   matrix `[C_in, H·W]`, so the output is `W · X` written straight into NCHW, no copy;
//! * depthwise (one input channel per group): [`super::depthwise`], a direct kernel;
//! * everything else: [`super::im2col`] per group, then one GEMM.
//!
//! Where the weights outweigh the image (`C_out ≥ H·W`, one group: [`ConvGeometry::runs_tiled`]),
//! the pointwise and im2col products run through [`super::tiled_gemm`], with the weights packed
//! once at load, instead of the `gemm` crate, which packs them on every call.
//!
//! The GEMMs start from the bias (the output is pre-filled with it, and the GEMM accumulates), and
//! the clamp is applied to each image's output while it is still in cache.

use std::cell::RefCell;
use std::sync::Arc;

use gemm::Parallelism;
use rayon::prelude::*;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;

use super::{depthwise, im2col, output, tiled_gemm, winograd, SendPtr};

/// Shape and hyper-parameters of one convolution, all concrete.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ConvGeometry {
    /// Batch size (frames per call).
    pub n: usize,
    pub c_in: usize,
    pub c_out: usize,
    pub groups: usize,
    /// Kernel height and width.
    pub kh: usize,
    pub kw: usize,
    pub stride_h: usize,
    pub stride_w: usize,
    pub dil_h: usize,
    pub dil_w: usize,
    /// Zero padding before the first row and column (the padding after follows from the sizes).
    pub pad_top: usize,
    pub pad_left: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub out_h: usize,
    pub out_w: usize,
}

impl ConvGeometry {
    pub fn in_plane(&self) -> usize {
        self.in_h * self.in_w
    }
    pub fn out_plane(&self) -> usize {
        self.out_h * self.out_w
    }
    /// Input channels per group.
    pub fn cin_g(&self) -> usize {
        self.c_in / self.groups
    }
    /// Output channels per group.
    pub fn cout_g(&self) -> usize {
        self.c_out / self.groups
    }
    /// Rows of the im2col matrix (and the GEMM's depth) per group.
    pub fn patch_len(&self) -> usize {
        self.cin_g() * self.kh * self.kw
    }
    pub fn kind(&self) -> ConvKind {
        if self.groups == self.c_in && self.c_out == self.c_in && self.groups > 1 {
            ConvKind::Depthwise
        } else if self.kh == 1
            && self.kw == 1
            && self.stride_h == 1
            && self.stride_w == 1
            && self.pad_top == 0
            && self.pad_left == 0
            && self.in_h == self.out_h
            && self.in_w == self.out_w
        {
            ConvKind::Pointwise
        } else if winograd::applies(self) {
            ConvKind::Winograd
        } else {
            ConvKind::Im2col
        }
    }
    /// Whether a pointwise or im2col convolution runs through [`tiled_gemm`]: one group, weights
    /// (`C_out × K`) at least as large as one image's GEMM operand (`K × HW`, the input of a
    /// pointwise convolution or the im2col columns), that is `C_out ≥ HW`, and weights under
    /// [`TILED_WEIGHTS_MAX`]: the deep layers of small encoders at 1/16 and 1/32 scale. There the
    /// `gemm` crate's packing of the weights on every call cost more than the product, and
    /// `tiled_gemm`, with the weights packed once at load, is faster. On larger planes it is not,
    /// nor with larger weights, which every row tile streams again from beyond L2 (ResNet-50's
    /// last stage, TPAVI's ASPP at 1/16 scale: `docs/cpu.md`, "Stop 35").
    pub fn runs_tiled(&self) -> bool {
        matches!(self.kind(), ConvKind::Pointwise | ConvKind::Im2col)
            && self.groups == 1
            && self.c_out >= self.out_plane()
            && self.c_out * self.patch_len() < TILED_WEIGHTS_MAX
    }

    /// Whether the window can pool: every size, stride and dilation at least 1, and the padding
    /// narrower than the dilated window, so that no window lies in the padding alone (whose
    /// maximum would be −∞). The rewrite and the graph cache's decoder both ask here.
    pub fn pools_cleanly(&self) -> bool {
        [self.kh, self.kw, self.stride_h, self.stride_w, self.dil_h, self.dil_w].iter().all(|&v| v >= 1)
            && self.pad_top < (self.kh - 1) * self.dil_h + 1
            && self.pad_left < (self.kw - 1) * self.dil_w + 1
    }

    /// Multiply-accumulates per call.
    pub fn macs(&self) -> usize {
        self.n * self.c_out * self.out_plane() * self.patch_len()
    }
}

/// Which kernel runs a convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvKind {
    Pointwise,
    Depthwise,
    /// 3×3 at stride 1: [`super::winograd`].
    Winograd,
    Im2col,
}

/// A clamp applied after the bias: `(lo, hi)`, infinite bounds when absent.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Clamp {
    pub lo: f32,
    pub hi: f32,
}

impl Clamp {
    pub const NONE: Clamp = Clamp { lo: f32::NEG_INFINITY, hi: f32::INFINITY };

    pub fn is_none(&self) -> bool {
        self.lo == f32::NEG_INFINITY && self.hi == f32::INFINITY
    }

    /// Applies the clamp in place. `max` then `min`, as the graph's Max/Min nodes do, so NaN
    /// behaves as it did there.
    #[inline(always)]
    pub fn apply(&self, v: &mut [f32]) {
        if self.is_none() {
            return;
        }
        let (lo, hi) = (self.lo, self.hi);
        for x in v {
            *x = x.max(lo).min(hi);
        }
    }
}

/// Memory order of an image tensor between two avseg operators. Graph inputs and outputs, and
/// every tensor a tract operator reads, are NCHW; [`super::rewrite`] switches the tensors between a
/// pointwise and a depthwise convolution to NHWC, where the depthwise kernel vectorises over
/// channels and the pointwise GEMM costs the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Layout {
    Nchw,
    Nhwc,
}

/// The operator. Weights are `[C_out, C_in/groups, kh, kw]` (ONNX OIHW), bias `[C_out]`.
#[derive(Clone, Debug)]
pub struct AvConv {
    pub geo: ConvGeometry,
    pub weights: Arc<Vec<f32>>,
    pub bias: Arc<Vec<f32>>,
    pub clamp: Clamp,
    /// Layout of the input tensor (NHWC only for pointwise and depthwise kernels).
    pub input: Layout,
    /// Layout of the output tensor (NHWC only for pointwise and depthwise kernels).
    pub output: Layout,
    /// The weights re-ordered for the kernel: depthwise taps as `[kh·kw, C]` (one tap is a run of
    /// channels), Winograd filters as [`winograd::transform_filters`]; empty for the GEMM kernels.
    packed: Arc<Vec<f32>>,
    /// The weights packed as [`tiled_gemm`]'s right operand, `W^T` `[K, C_out]`, for the
    /// convolutions it runs ([`ConvGeometry::runs_tiled`]); empty otherwise.
    tiled: Arc<Vec<f32>>,
}

impl PartialEq for AvConv {
    fn eq(&self, other: &Self) -> bool {
        self.geo == other.geo
            && Arc::ptr_eq(&self.weights, &other.weights)
            && Arc::ptr_eq(&self.bias, &other.bias)
            && self.clamp.lo.to_bits() == other.clamp.lo.to_bits()
            && self.clamp.hi.to_bits() == other.clamp.hi.to_bits()
            && (self.input, self.output) == (other.input, other.output)
    }
}

impl Eq for AvConv {}

thread_local! {
    /// im2col scratch, grown to the largest convolution once and reused by every call on this
    /// thread: nothing is allocated per frame after the first call.
    static COLUMNS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// NHWC copies of an NCHW input and output around the depthwise kernel, likewise reused.
    static DW_IN: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static DW_OUT: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// One block of a pointwise output before its transposition to NCHW.
    static PW_BLOCK: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

impl AvConv {
    /// A convolution on NCHW tensors. `weights` are OIHW, `bias` has one value per output channel.
    pub fn new(geo: ConvGeometry, weights: Vec<f32>, bias: Vec<f32>, clamp: Clamp) -> Self {
        let taps = geo.kh * geo.kw;
        let packed = match geo.kind() {
            ConvKind::Depthwise => {
                (0..taps).flat_map(|t| (0..geo.c_out).map(move |c| (t, c))).map(|(t, c)| weights[c * taps + t]).collect()
            }
            ConvKind::Winograd => winograd::transform_filters(&geo, &weights),
            _ => Vec::new(),
        };
        let tiled = if geo.runs_tiled() {
            let k = geo.patch_len();
            tiled_gemm::pack_cols(&weights, k, geo.c_out, 1, k, tiled_gemm::TileShape::for_columns(geo.c_out))
        } else {
            Vec::new()
        };
        AvConv {
            geo,
            weights: Arc::new(weights),
            bias: Arc::new(bias),
            clamp,
            input: Layout::Nchw,
            output: Layout::Nchw,
            packed: Arc::new(packed),
            tiled: Arc::new(tiled),
        }
    }

    /// The shape of a `[n, c, h, w]` image in `layout`.
    pub fn shape(layout: Layout, n: usize, c: usize, h: usize, w: usize) -> [usize; 4] {
        match layout {
            Layout::Nchw => [n, c, h, w],
            Layout::Nhwc => [n, h, w, c],
        }
    }

    pub fn input_shape(&self) -> [usize; 4] {
        let g = &self.geo;
        Self::shape(self.input, g.n, g.c_in, g.in_h, g.in_w)
    }

    pub fn output_shape(&self) -> [usize; 4] {
        let g = &self.geo;
        Self::shape(self.output, g.n, g.c_out, g.out_h, g.out_w)
    }

    /// Runs the convolution on one batch `x` (in [`Self::input`] layout) into `y` (in
    /// [`Self::output`] layout).
    pub fn run(&self, x: &[f32], y: &mut [f32], threads: usize) {
        let g = &self.geo;
        debug_assert_eq!(x.len(), g.n * g.c_in * g.in_plane());
        debug_assert_eq!(y.len(), g.n * g.c_out * g.out_plane());
        let images = x.chunks_exact(g.c_in * g.in_plane()).zip(y.chunks_exact_mut(g.c_out * g.out_plane()));
        match g.kind() {
            ConvKind::Depthwise => images.for_each(|(xi, yi)| self.depthwise_image(xi, yi, threads)),
            ConvKind::Pointwise => {
                let hw = g.out_plane();
                if g.runs_tiled() {
                    // The whole batch as the product's left operand, [N·HW, C_in] through strides.
                    let (x_rs, x_ks) = if self.input == Layout::Nchw { (1, hw) } else { (g.c_in, 1) };
                    return self.tiled(x, (x_rs, x_ks), g.n, y, threads);
                }
                // (row stride, column stride) of x as [C_in, HW] and of y as [C_out, HW]
                let (x_rs, x_cs) = if self.input == Layout::Nchw { (hw, 1) } else { (1, g.c_in) };
                let (y_rs, y_cs) = if self.output == Layout::Nchw { (hw, 1) } else { (1, g.c_out) };
                for (xi, yi) in images {
                    // y[C_out, HW] = W[C_out, C_in] · x[C_in, HW], then bias and clamp in one pass.
                    let lhs = Matrix { ptr: self.weights.as_ptr(), rs: g.c_in, cs: 1 };
                    let rhs = Matrix { ptr: xi.as_ptr(), rs: x_rs, cs: x_cs };
                    unsafe { gemm_into(g.c_out, hw, g.c_in, lhs, rhs, yi.as_mut_ptr(), y_rs, y_cs, threads, false) };
                    self.add_bias_and_clamp(yi, threads);
                }
            }
            ConvKind::Winograd => COLUMNS.with_borrow_mut(|scratch| {
                winograd::conv(g, x, &self.packed, &self.bias, self.clamp, y, scratch, threads)
            }),
            ConvKind::Im2col if g.runs_tiled() => COLUMNS.with_borrow_mut(|cols| {
                // Small planes: the whole image's columns `[K, HW]` at once (at most K·C_out
                // floats, the weights' size), then the tiled product with the packed weights.
                let len = g.patch_len() * g.out_plane();
                if cols.len() < len {
                    cols.resize(len, 0.0);
                }
                for (xi, yi) in images {
                    im2col::im2col(g, xi, 0..g.out_h, &mut cols[..len], threads);
                    self.tiled(&cols[..len], (1, g.out_plane()), 1, yi, threads);
                }
            }),
            ConvKind::Im2col => COLUMNS.with_borrow_mut(|cols| {
                // Output rows per block, so that one block of columns stays in L2.
                let rows = (COLUMN_BLOCK / (g.patch_len() * g.out_w)).clamp(1, g.out_h);
                let len = g.patch_len() * rows * g.out_w;
                if cols.len() < len {
                    cols.resize(len, 0.0);
                }
                // Output channel c of pixel p is at c·(channel stride) + p·(pixel stride); an NHWC
                // output (only chosen with one group, `choose_layouts`) only changes the strides.
                let (c_stride, p_stride) = match self.output {
                    Layout::Nchw => (g.out_plane(), 1),
                    Layout::Nhwc => (1, g.c_out),
                };
                for (xi, yi) in images {
                    self.fill_bias(yi);
                    for grp in 0..g.groups {
                        let xg = &xi[grp * g.cin_g() * g.in_plane()..][..g.cin_g() * g.in_plane()];
                        let w = Matrix { ptr: self.weights[grp * g.cout_g() * g.patch_len()..].as_ptr(), rs: g.patch_len(), cs: 1 };
                        let yg = &mut yi[grp * g.cout_g() * c_stride..];
                        for r0 in (0..g.out_h).step_by(rows) {
                            let r1 = (r0 + rows).min(g.out_h);
                            let n = (r1 - r0) * g.out_w;
                            im2col::im2col(g, xg, r0..r1, &mut cols[..g.patch_len() * n], threads);
                            // y_g[C_out/g, block] += W_g[C_out/g, K] · cols[K, block]
                            let rhs = Matrix { ptr: cols.as_ptr(), rs: n, cs: 1 };
                            let dst = yg[r0 * g.out_w * p_stride..].as_mut_ptr();
                            unsafe { gemm_acc(g.cout_g(), n, g.patch_len(), w, rhs, dst, c_stride, p_stride, threads) };
                        }
                    }
                    self.finish(yi, threads);
                }
            }),
        }
    }

    /// Pre-fills the output with the bias, in the output's layout.
    fn fill_bias(&self, y: &mut [f32]) {
        match self.output {
            Layout::Nchw => {
                for (row, b) in y.chunks_exact_mut(self.geo.out_plane()).zip(self.bias.iter()) {
                    row.fill(*b);
                }
            }
            Layout::Nhwc => {
                for px in y.chunks_exact_mut(self.geo.c_out) {
                    px.copy_from_slice(&self.bias);
                }
            }
        }
    }

    /// `y = clamp(y + bias)` over one image, in the output's layout.
    fn add_bias_and_clamp(&self, y: &mut [f32], threads: usize) {
        let (bias, clamp) = (&self.bias[..], self.clamp);
        match self.output {
            Layout::Nchw => {
                let plane = self.geo.out_plane();
                let channel = |(c, row): (usize, &mut [f32])| add_clamp(row, bias[c], clamp);
                if threads > 1 && y.len() >= 1 << 15 {
                    y.par_chunks_mut(plane).enumerate().for_each(channel);
                } else {
                    y.chunks_mut(plane).enumerate().for_each(channel);
                }
            }
            Layout::Nhwc => {
                if threads > 1 && y.len() >= 1 << 15 {
                    y.par_chunks_mut(bias.len() * 256).for_each(|px| add_clamp_rows(px, bias, clamp));
                } else {
                    add_clamp_rows(y, bias, clamp);
                }
            }
        }
    }

    /// `frames` images through one [`tiled_gemm`] product: `y[HW, C_out] = clamp(bias + X · W^T)`
    /// per image, where X `[HW, K]` is element (p, kk) at `x[p·strides.0 + kk·strides.1]` and
    /// images follow each other in `x` (one group). One product for the batch keeps the row tiles
    /// full on small planes (5 frames of 5 × 5 pixels: 125 rows, not 5 × 25 in tiles of 6).
    /// Pixels are broadcast and channels are in vectors, straight into an NHWC output. An NCHW
    /// output is made in blocks of [`PIXEL_BLOCK`] pixels in scratch, each transposed into place
    /// while in cache.
    fn tiled(&self, x: &[f32], strides: (usize, usize), frames: usize, y: &mut [f32], threads: usize) {
        let g = &self.geo;
        let hw = g.out_plane();
        let k = g.patch_len();
        // Rows q0..q0 + rows of the batch (pixel q % hw of image q / hw; images K·HW apart).
        let product = |q0: usize, rows: usize, dst: *mut f32| {
            tiled_gemm::Product {
                m: rows,
                n: g.c_out,
                k,
                a: x.as_ptr(),
                a_rs: strides.0,
                a_ks: strides.1,
                a_first: q0,
                a_frame_rows: hw,
                a_frame_stride: k * hw,
                b: &self.tiled,
                bias: &self.bias,
                clamp: self.clamp,
                dst,
                dst_rs: g.c_out,
            }
        };
        let total = frames * hw;
        if self.output == Layout::Nhwc {
            return unsafe { tiled_gemm::run(&product(0, total, y.as_mut_ptr()), threads) };
        }
        let y_ptr = SendPtr(y.as_mut_ptr());
        let block = |b: usize| {
            let q0 = b * PIXEL_BLOCK;
            let rows = PIXEL_BLOCK.min(total - q0);
            PW_BLOCK.with_borrow_mut(|scratch| {
                scratch.resize(PIXEL_BLOCK * g.c_out, 0.0);
                unsafe { tiled_gemm::run(&product(q0, rows, scratch.as_mut_ptr()), 1) };
                let y = y_ptr;
                // Runs of the block within one image: pixels p0..p0 + len of image f.
                let mut q = q0;
                while q < q0 + rows {
                    let (f, p0) = (q / hw, q % hw);
                    let len = (hw - p0).min(q0 + rows - q);
                    for c in 0..g.c_out {
                        // SAFETY: block b writes only its own pixels of each channel row of y.
                        let dst = unsafe { std::slice::from_raw_parts_mut(y.0.add((f * g.c_out + c) * hw + p0), len) };
                        for (i, d) in dst.iter_mut().enumerate() {
                            *d = scratch[(q - q0 + i) * g.c_out + c];
                        }
                    }
                    q += len;
                }
            })
        };
        let blocks = total.div_ceil(PIXEL_BLOCK);
        if threads > 1 && blocks > 1 {
            (0..blocks).into_par_iter().for_each(block);
        } else {
            (0..blocks).for_each(block);
        }
    }

    fn finish(&self, y: &mut [f32], threads: usize) {
        if self.clamp.is_none() {
            return;
        }
        if threads > 1 && y.len() >= 1 << 15 {
            y.par_chunks_mut(1 << 13).for_each(|c| clamp_simd(c, self.clamp));
        } else {
            clamp_simd(y, self.clamp);
        }
    }

    /// One image through the depthwise kernel, which works in NHWC: an NCHW input or output is
    /// transposed through scratch.
    fn depthwise_image(&self, x: &[f32], y: &mut [f32], threads: usize) {
        let g = &self.geo;
        DW_IN.with_borrow_mut(|tin| {
            DW_OUT.with_borrow_mut(|tout| {
                let x = match self.input {
                    Layout::Nhwc => x,
                    Layout::Nchw => {
                        tin.resize(x.len(), 0.0);
                        transpose(x, g.c_in, g.in_plane(), tin);
                        &tin[..]
                    }
                };
                let dw = |out: &mut [f32]| {
                    depthwise::depthwise_nhwc(g, x, &self.packed, &self.bias, self.clamp, out, threads)
                };
                match self.output {
                    Layout::Nhwc => dw(y),
                    Layout::Nchw => {
                        tout.resize(y.len(), 0.0);
                        dw(tout);
                        transpose(tout, g.out_plane(), g.c_out, y);
                    }
                }
            })
        })
    }
}

per_isa!(
    /// `v = clamp(v + b)`.
    pub(crate) fn add_clamp(v: &mut [f32], b: f32, clamp: Clamp) = add_clamp_kernel
);
per_isa!(
    /// `v[r, i] = clamp(v[r, i] + bias[i])` over rows of `bias.len()`.
    pub(crate) fn add_clamp_rows(v: &mut [f32], bias: &[f32], clamp: Clamp) = add_clamp_rows_kernel
);
per_isa!(
    /// `v = clamp(v)`.
    pub(crate) fn clamp_simd(v: &mut [f32], clamp: Clamp) = clamp_kernel
);

#[inline(always)]
fn add_clamp_kernel(v: &mut [f32], b: f32, clamp: Clamp) {
    v.iter_mut().for_each(|x| *x = (*x + b).max(clamp.lo).min(clamp.hi));
}

#[inline(always)]
fn add_clamp_rows_kernel(v: &mut [f32], bias: &[f32], clamp: Clamp) {
    for row in v.chunks_exact_mut(bias.len()) {
        row.iter_mut().zip(bias).for_each(|(x, b)| *x = (*x + b).max(clamp.lo).min(clamp.hi));
    }
}

#[inline(always)]
fn clamp_kernel(v: &mut [f32], clamp: Clamp) {
    clamp.apply(v)
}

/// im2col columns per GEMM: 256 Ki floats (1 MiB, about one core's L2), in whole output rows. Measured
/// on the default model: 64 Ki floats 19.6 ms of im2col convolutions per clip, 256 Ki 16.5 ms, 1 Mi 16.3 ms.
const COLUMN_BLOCK: usize = 1 << 18;

/// Weights (floats) below which [`ConvGeometry::runs_tiled`] may choose `tiled_gemm`: 1 MiB, an
/// L2's worth. The default model's tiled layers are at most 221 k floats; ResNet-50's last stage
/// and TPAVI's 1/16-scale ASPP (1–2.4 M) ran up to twice as slowly through it.
const TILED_WEIGHTS_MAX: usize = 1 << 18;

/// Pixels per block of a pointwise convolution from NHWC to NCHW: a multiple of every tile's row
/// count, and at most 96 × C_out floats of scratch (the widest layers, 1280 channels, 480 KiB).
const PIXEL_BLOCK: usize = 96;

/// A strided row-major view for the GEMM.
#[derive(Clone, Copy)]
pub(crate) struct Matrix {
    pub ptr: *const f32,
    pub rs: usize,
    pub cs: usize,
}

/// `dst[m, n] += lhs[m, k] · rhs[k, n]`; `dst` has row stride `dst_rs` and column stride `dst_cs`.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_acc(m: usize, n: usize, k: usize, lhs: Matrix, rhs: Matrix, dst: *mut f32, dst_rs: usize, dst_cs: usize, threads: usize) {
    unsafe { gemm_into(m, n, k, lhs, rhs, dst, dst_rs, dst_cs, threads, true) }
}

/// `dst[m, n] (+)= lhs[m, k] · rhs[k, n]`: accumulates into `dst` when `accumulate`, else overwrites.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_into(
    m: usize, n: usize, k: usize, lhs: Matrix, rhs: Matrix, dst: *mut f32, dst_rs: usize, dst_cs: usize, threads: usize, accumulate: bool,
) {
    // Splitting small products costs more than it gains.
    let par = if threads > 1 && m * n * k >= 1 << 18 { Parallelism::Rayon(threads) } else { Parallelism::None };
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            dst_cs as isize,
            dst_rs as isize,
            accumulate,
            lhs.ptr,
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.ptr,
            rhs.cs as isize,
            rhs.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        )
    };
}

/// `dst[c, r] = src[r, c]` for a row-major `src` of `rows × cols`, in cache-sized tiles.
pub(crate) fn transpose(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    const TILE: usize = 32;
    for r0 in (0..rows).step_by(TILE) {
        for c0 in (0..cols).step_by(TILE) {
            for r in r0..(r0 + TILE).min(rows) {
                for c in c0..(c0 + TILE).min(cols) {
                    dst[c * rows + r] = src[r * cols + c];
                }
            }
        }
    }
}

impl Op for AvConv {
    fn name(&self) -> StaticName {
        match self.geo.kind() {
            ConvKind::Pointwise => "AvConvPointwise".into(),
            ConvKind::Depthwise => "AvConvDepthwise".into(),
            ConvKind::Winograd => "AvConvWinograd".into(),
            ConvKind::Im2col => "AvConvIm2col".into(),
        }
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("{:?}", self.geo), format!("clamp {:?}, {:?} -> {:?}", self.clamp, self.input, self.output)])
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    op_as_typed_op!();
}

impl EvalOp for AvConv {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        ensure!(input.shape() == self.input_shape(), "AvConv: input shape {:?}, planned for {:?}", input.shape(), self.input_shape());
        let x = input.try_as_plain_ram()?.as_slice::<f32>()?;
        Ok(tvec!(output(&self.output_shape(), |y, threads| self.run(x, y, threads))?.into_tvalue()))
    }
}

impl TypedOp for AvConv {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs.len() == 1 && inputs[0].datum_type == f32::datum_type());
        Ok(tvec!(f32::fact(self.output_shape())))
    }

    fn cost(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        Ok(tvec!((Cost::FMA(f32::datum_type()), self.geo.macs().into())))
    }

    as_op!();
}

/// The textbook convolution, one output at a time: the reference every kernel is tested against.
#[cfg(test)]
pub fn naive_conv(g: &ConvGeometry, x: &[f32], w: &[f32], bias: &[f32], clamp: Clamp) -> Vec<f32> {
    let mut y = vec![0f32; g.n * g.c_out * g.out_plane()];
    for n in 0..g.n {
        for co in 0..g.c_out {
            let grp = co / g.cout_g();
            for oy in 0..g.out_h {
                for ox in 0..g.out_w {
                    let mut acc = bias[co] as f64;
                    for ci in 0..g.cin_g() {
                        for ky in 0..g.kh {
                            for kx in 0..g.kw {
                                let iy = (oy * g.stride_h + ky * g.dil_h) as isize - g.pad_top as isize;
                                let ix = (ox * g.stride_w + kx * g.dil_w) as isize - g.pad_left as isize;
                                if iy < 0 || ix < 0 || iy >= g.in_h as isize || ix >= g.in_w as isize {
                                    continue;
                                }
                                let xv = x[((n * g.c_in + grp * g.cin_g() + ci) * g.in_h + iy as usize) * g.in_w + ix as usize];
                                let wv = w[((co * g.cin_g() + ci) * g.kh + ky) * g.kw + kx];
                                acc += xv as f64 * wv as f64;
                            }
                        }
                    }
                    let mut v = [acc as f32];
                    clamp.apply(&mut v);
                    y[((n * g.c_out + co) * g.out_h + oy) * g.out_w + ox] = v[0];
                }
            }
        }
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_common::{max_abs_diff, pseudo};

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn geometry(
        n: usize, c_in: usize, c_out: usize, groups: usize, k: (usize, usize), stride: usize, dil: usize, pad: (usize, usize, usize, usize), hw: (usize, usize),
    ) -> ConvGeometry {
        let (pt, pl, pb, pr) = pad;
        let out_h = (hw.0 + pt + pb - dil * (k.0 - 1) - 1) / stride + 1;
        let out_w = (hw.1 + pl + pr - dil * (k.1 - 1) - 1) / stride + 1;
        ConvGeometry {
            n, c_in, c_out, groups, kh: k.0, kw: k.1, stride_h: stride, stride_w: stride, dil_h: dil, dil_w: dil,
            pad_top: pt, pad_left: pl, in_h: hw.0, in_w: hw.1, out_h, out_w,
        }
    }

    fn check(g: ConvGeometry, clamp: Clamp, threads: usize) {
        check_layouts(g, clamp, threads, Layout::Nchw, Layout::Nchw);
    }

    /// Runs the kernel `g` selects with the given tensor layouts against the naive convolution.
    fn check_layouts(g: ConvGeometry, clamp: Clamp, threads: usize, input: Layout, output: Layout) {
        let x = pseudo(g.n * g.c_in * g.in_plane(), 1);
        let w = pseudo(g.c_out * g.patch_len(), 2);
        let b = pseudo(g.c_out, 3);
        let want = naive_conv(&g, &x, &w, &b, clamp);
        let mut op = AvConv::new(g.clone(), w, b, clamp);
        op.input = input;
        op.output = output;
        let nhwc = |v: &[f32], c: usize, plane: usize| -> Vec<f32> {
            let mut t = vec![0.0; v.len()];
            for (src, dst) in v.chunks_exact(c * plane).zip(t.chunks_exact_mut(c * plane)) {
                transpose(src, c, plane, dst);
            }
            t
        };
        let x_in = if input == Layout::Nhwc { nhwc(&x, g.c_in, g.in_plane()) } else { x };
        let mut got = vec![f32::NAN; want.len()];
        if threads > 1 {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| op.run(&x_in, &mut got, threads));
        } else {
            op.run(&x_in, &mut got, 1);
        }
        let got = if output == Layout::Nhwc {
            // back to NCHW: per image [HW, C] → [C, HW]
            let mut t = vec![0.0; got.len()];
            for (src, dst) in got.chunks_exact(g.c_out * g.out_plane()).zip(t.chunks_exact_mut(g.c_out * g.out_plane())) {
                transpose(src, g.out_plane(), g.c_out, dst);
            }
            t
        } else {
            got
        };
        // Sums of patch_len products of values in [-1, 1]: rounding grows with the depth.
        let tol = 1e-5 * (g.patch_len() as f32).sqrt().max(1.0) * 4.0;
        let d = max_abs_diff(&got, &want);
        assert!(d <= tol, "{:?} {:?} {input:?}->{output:?} threads {threads}: max |diff| {d} > {tol}", g.kind(), g);
    }

    #[test]
    fn winograd_matches_the_naive_convolution() {
        let relu = Clamp { lo: 0.0, hi: f32::INFINITY };
        for threads in [1, 2] {
            // Winograd takes ≥ 64 input channels on ≥ 1024 outputs, or ≥ 256 input channels.
            // Same padding, odd and even sizes (partial tiles), two images, asymmetric padding:
            let g = geometry(2, 256, 24, 1, (3, 3), 1, 1, (1, 1, 1, 1), (9, 8));
            assert_eq!(g.kind(), ConvKind::Winograd);
            check(g, relu, threads);
            check(geometry(1, 256, 20, 1, (3, 3), 1, 1, (1, 1, 1, 1), (7, 13)), Clamp::NONE, threads);
            check(geometry(1, 256, 16, 1, (3, 3), 1, 1, (0, 0, 0, 0), (6, 6)), Clamp::NONE, threads);
            check(geometry(3, 256, 16, 1, (3, 3), 1, 1, (0, 1, 2, 1), (5, 9)), relu, threads);
            let g = geometry(1, 64, 16, 1, (3, 3), 1, 1, (1, 1, 1, 1), (33, 32));
            assert_eq!(g.kind(), ConvKind::Winograd);
            check(g, relu, threads);
            // dilated (the ASPP branches): phases of unequal sizes, padding equal to the dilation
            let g = geometry(1, 256, 16, 1, (3, 3), 1, 2, (2, 2, 2, 2), (17, 19));
            assert_eq!(g.kind(), ConvKind::Winograd);
            check(g, Clamp::NONE, threads);
            check(geometry(2, 256, 16, 1, (3, 3), 1, 3, (3, 3, 3, 3), (25, 28)), relu, threads);
            // too few channels, or too wide a dilation for the map: im2col
            assert_eq!(geometry(1, 64, 64, 1, (3, 3), 1, 1, (1, 1, 1, 1), (9, 8)).kind(), ConvKind::Im2col);
            assert_eq!(geometry(1, 256, 64, 1, (3, 3), 1, 12, (12, 12, 12, 12), (56, 56)).kind(), ConvKind::Im2col);
        }
    }

    #[test]
    fn nhwc_layouts_match_the_naive_convolution() {
        let relu6 = Clamp { lo: 0.0, hi: 6.0 };
        for threads in [1, 2] {
            let pw = geometry(2, 16, 24, 1, (1, 1), 1, 1, (0, 0, 0, 0), (9, 7));
            let dw = geometry(2, 24, 24, 24, (3, 3), 2, 1, (0, 0, 1, 1), (9, 7));
            for (i, o) in [(Layout::Nchw, Layout::Nhwc), (Layout::Nhwc, Layout::Nchw), (Layout::Nhwc, Layout::Nhwc)] {
                check_layouts(pw.clone(), relu6, threads, i, o);
                check_layouts(dw.clone(), relu6, threads, i, o);
            }
            // An im2col convolution writing NHWC (a stem before a depthwise one): the stem's
            // geometry, and one whose output rows take several column blocks.
            let stem = geometry(2, 3, 32, 1, (3, 3), 2, 1, (0, 0, 1, 1), (16, 16));
            assert_eq!(stem.kind(), ConvKind::Im2col);
            check_layouts(stem, relu6, threads, Layout::Nchw, Layout::Nhwc);
            let wide = geometry(1, 12, 20, 1, (3, 3), 1, 1, (1, 1, 1, 1), (70, 90));
            assert_eq!(wide.kind(), ConvKind::Im2col);
            check_layouts(wide, Clamp::NONE, threads, Layout::Nchw, Layout::Nhwc);
        }
    }

    /// Convolutions whose weights outweigh the image (`runs_tiled`) go through `tiled_gemm`:
    /// pointwise in every layout, with one and several pixel blocks of the NCHW transposition,
    /// narrow (32 channels) and wide products, and im2col at the decoders' 1/32 scale.
    #[test]
    fn tiled_products_match_the_naive_convolution() {
        let relu6 = Clamp { lo: 0.0, hi: 6.0 };
        let layouts = [(Layout::Nchw, Layout::Nchw), (Layout::Nchw, Layout::Nhwc), (Layout::Nhwc, Layout::Nchw), (Layout::Nhwc, Layout::Nhwc)];
        for threads in [1, 2] {
            for (i, o) in layouts {
                // 5 frames of 5 × 5 (the expansions at 1/32 scale; the second 96-pixel block starts
                // inside the fourth image), 10 × 10 (two blocks), 32 channels (the narrow tile).
                let deep = geometry(5, 40, 96, 1, (1, 1), 1, 1, (0, 0, 0, 0), (5, 5));
                let two_blocks = geometry(1, 24, 130, 1, (1, 1), 1, 1, (0, 0, 0, 0), (10, 10));
                let narrow = geometry(2, 70, 32, 1, (1, 1), 1, 1, (0, 0, 0, 0), (4, 6));
                for g in [deep, two_blocks, narrow] {
                    assert!(g.runs_tiled());
                    check_layouts(g, relu6, threads, i, o);
                }
            }
            // im2col, one group: the ASPP's 3×3 at 1/32 scale (K = 9·C_in, 32 channels out),
            // dilated, and a wider one.
            let aspp = geometry(2, 20, 32, 1, (3, 3), 1, 1, (1, 1, 1, 1), (5, 5));
            let dilated = geometry(1, 16, 32, 1, (3, 3), 1, 2, (2, 2, 2, 2), (5, 4));
            let wide = geometry(1, 12, 70, 1, (3, 3), 2, 1, (0, 0, 1, 1), (9, 9));
            for g in [aspp, dilated, wide] {
                assert_eq!(g.kind(), ConvKind::Im2col);
                assert!(g.runs_tiled());
                check(g.clone(), relu6, threads);
                check(g.clone(), Clamp::NONE, threads);
                check_layouts(g, relu6, threads, Layout::Nchw, Layout::Nhwc);
            }
        }
    }

    /// The rule, on the shapes it was measured on (5 frames at 160² and 224²).
    #[test]
    fn tiled_products_run_where_they_measured_faster() {
        let pw = |c_in, c_out, side| geometry(5, c_in, c_out, 1, (1, 1), 1, 1, (0, 0, 0, 0), (side, side));
        let c3 = |c_in, c_out, dil, side| geometry(5, c_in, c_out, 1, (3, 3), 1, dil, (dil, dil, dil, dil), (side, side));
        // The default model: expansions and projections at 1/16 and 1/32 scale, the ASPP's 3×3
        // at 1/32.
        for g in [pw(192, 1152, 5), pw(1152, 192, 5), pw(112, 672, 10), pw(80, 480, 10), c3(320, 32, 1, 5)] {
            assert!(g.runs_tiled(), "{g:?}");
        }
        // Larger planes; ResNet-50's last stage and TPAVI's ASPP at 1/16 scale (weights past
        // 1 MiB); one group per channel.
        let dw = geometry(5, 96, 96, 96, (3, 3), 1, 1, (1, 1, 1, 1), (5, 5));
        for g in [pw(16, 96, 80), pw(24, 144, 40), pw(2048, 512, 7), pw(512, 2048, 7), c3(1024, 256, 12, 14), c3(512, 512, 1, 7), dw] {
            assert!(!g.runs_tiled(), "{g:?}");
        }
    }

    #[test]
    fn every_kernel_matches_the_naive_convolution() {
        let relu6 = Clamp { lo: 0.0, hi: 6.0 };
        let relu = Clamp { lo: 0.0, hi: f32::INFINITY };
        for threads in [1, 2] {
            // pointwise
            check(geometry(2, 16, 24, 1, (1, 1), 1, 1, (0, 0, 0, 0), (9, 7)), Clamp::NONE, threads);
            check(geometry(1, 40, 96, 1, (1, 1), 1, 1, (0, 0, 0, 0), (20, 20)), relu6, threads);
            // depthwise: 3×3 and 5×5, stride 1 and 2, symmetric and asymmetric padding
            check(geometry(2, 8, 8, 8, (3, 3), 1, 1, (1, 1, 1, 1), (11, 9)), relu6, threads);
            check(geometry(1, 6, 6, 6, (3, 3), 2, 1, (0, 0, 1, 1), (12, 10)), relu6, threads);
            check(geometry(1, 5, 5, 5, (5, 5), 2, 1, (1, 1, 2, 2), (13, 16)), Clamp::NONE, threads);
            check(geometry(2, 4, 4, 4, (5, 5), 1, 1, (2, 2, 2, 2), (7, 6)), relu, threads);
            check(geometry(1, 4, 4, 4, (3, 3), 1, 2, (2, 2, 2, 2), (9, 9)), relu, threads);
            // depthwise with every channel block (128, 32, 16, 8 and 1 wide on AVX-512; 64, 16,
            // 8, 1 on AVX2; 32, 8, 4, 1 without): interior groups of pixels, the pixels alone
            // at the borders and after the groups; narrow images where no column is interior;
            // rows whose every tap is in the padding
            check(geometry(2, 32, 32, 32, (3, 3), 1, 1, (1, 1, 1, 1), (11, 13)), relu6, threads);
            check(geometry(1, 53, 53, 53, (3, 3), 2, 1, (0, 0, 1, 1), (12, 17)), relu6, threads);
            check(geometry(1, 48, 48, 48, (5, 5), 2, 1, (1, 1, 2, 2), (13, 16)), Clamp::NONE, threads);
            check(geometry(1, 16, 16, 16, (5, 5), 1, 1, (2, 2, 2, 2), (9, 23)), relu, threads);
            check(geometry(1, 16, 16, 16, (3, 3), 1, 2, (2, 2, 2, 2), (9, 10)), relu, threads);
            check(geometry(1, 32, 32, 32, (5, 5), 1, 1, (2, 2, 2, 2), (3, 3)), relu, threads);
            check(geometry(1, 16, 16, 16, (3, 3), 2, 1, (1, 1, 1, 1), (2, 1)), relu, threads);
            check(geometry(1, 181, 181, 181, (5, 5), 1, 1, (2, 2, 2, 2), (10, 10)), relu6, threads);
            check(geometry(1, 144, 144, 144, (5, 5), 2, 1, (1, 1, 2, 2), (10, 11)), Clamp::NONE, threads);
            check(geometry(2, 100, 100, 100, (3, 3), 1, 1, (1, 1, 1, 1), (5, 5)), relu, threads);
            check(geometry(1, 20, 20, 20, (2, 2), 1, 4, (2, 2, 2, 2), (1, 1)), relu6, threads);
            // im2col: stem (3 channels, stride 2), 3×3 same, dilated, strided 1×1, grouped, 7×7
            check(geometry(2, 3, 8, 1, (3, 3), 2, 1, (0, 0, 1, 1), (16, 16)), relu6, threads);
            check(geometry(1, 12, 10, 1, (3, 3), 1, 1, (1, 1, 1, 1), (10, 12)), relu, threads);
            check(geometry(1, 8, 8, 1, (3, 3), 1, 3, (3, 3, 3, 3), (10, 10)), Clamp::NONE, threads);
            check(geometry(1, 8, 16, 1, (1, 1), 2, 1, (0, 0, 0, 0), (9, 9)), Clamp::NONE, threads);
            check(geometry(2, 8, 12, 4, (3, 3), 1, 1, (1, 1, 1, 1), (6, 5)), relu, threads);
            check(geometry(1, 3, 4, 1, (7, 7), 2, 1, (3, 3, 3, 3), (15, 15)), Clamp::NONE, threads);
            // strides 4 (PVT-v2's first patch embedding) and 3 (no constant arm), rows read to
            // their last input column and short of it
            check(geometry(1, 3, 8, 1, (7, 7), 4, 1, (3, 3, 3, 3), (23, 21)), relu, threads);
            check(geometry(1, 3, 8, 1, (7, 7), 4, 1, (3, 3, 3, 3), (20, 20)), relu, threads);
            check(geometry(2, 4, 6, 1, (3, 3), 3, 1, (1, 1, 0, 0), (14, 17)), Clamp::NONE, threads);
            check(geometry(1, 4, 6, 1, (2, 2), 3, 1, (0, 0, 0, 0), (13, 13)), Clamp::NONE, threads);
        }
    }
}
