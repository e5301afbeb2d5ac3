//! Typed launch wrappers: one function per kernel, checking every size before anything reaches
//! the device, so a bad shape is a [`CudaError::Shape`], never an out-of-bounds access.
//!
//! Storage is `f32` or [`F16`] (fp16 bits); arithmetic inside the kernels is always fp32.

use std::collections::HashMap;

use cudarc::driver::{CudaSlice, DeviceRepr, LaunchConfig, PushKernelArg, ValidAsZeroBits};

use super::device::Gpu;
use super::kernels::{self, KernelFile};
use super::reference::{tpavi_steps, GemmStep, TpaviBuf, TpaviWeights, TPAVI_LN_EPS};
use super::CudaError;

/// An fp16 value as its bit pattern, the device layout of `__half`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(transparent)]
pub struct F16(pub u16);

unsafe impl DeviceRepr for F16 {}
unsafe impl ValidAsZeroBits for F16 {}

/// A storage type the kernels are instantiated for.
pub trait Element: DeviceRepr + ValidAsZeroBits + Copy + Default + Unpin + 'static {
    /// The suffix of the kernel instantiation (`_f32`, `_f16`).
    const SUFFIX: &'static str;
    fn from_f32(x: f32) -> Self;
    fn to_f32(self) -> f32;
}

impl Element for f32 {
    const SUFFIX: &'static str = "f32";
    fn from_f32(x: f32) -> Self {
        x
    }
    fn to_f32(self) -> f32 {
        self
    }
}

impl Element for F16 {
    const SUFFIX: &'static str = "f16";
    fn from_f32(x: f32) -> Self {
        F16(half::f16::from_f32(x).to_bits())
    }
    fn to_f32(self) -> f32 {
        half::f16::from_bits(self.0).to_f32()
    }
}

fn shape(kernel: &'static str, detail: impl Into<String>) -> CudaError {
    CudaError::Shape { kernel, detail: detail.into() }
}

/// A positive size that fits the kernels' `int` parameters.
fn dim(kernel: &'static str, what: &str, v: usize) -> Result<i32, CudaError> {
    i32::try_from(v).ok().filter(|&x| x > 0).ok_or_else(|| shape(kernel, format!("{what} = {v} must be in 1..2^31")))
}

fn expect_len(kernel: &'static str, what: &str, len: usize, want: usize) -> Result<(), CudaError> {
    if len != want {
        return Err(shape(kernel, format!("{what} holds {len} elements; expected {want}")));
    }
    Ok(())
}

fn grid_2d(w: i32, h: i32, z: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: ((w as u32).div_ceil(16), (h as u32).div_ceil(16), z),
        block_dim: (16, 16, 1),
        shared_mem_bytes: 0,
    }
}

fn grid_1d(kernel: &'static str, n: usize) -> Result<LaunchConfig, CudaError> {
    let blocks = u32::try_from(n.div_ceil(256)).map_err(|_| shape(kernel, format!("{n} elements is too many")))?;
    Ok(LaunchConfig { grid_dim: (blocks.max(1), 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 })
}

fn launch_failed(kernel: &'static str) -> impl Fn(cudarc::driver::DriverError) -> CudaError {
    move |e| CudaError::Driver { step: kernel, detail: e.to_string() }
}

fn function<T: Element>(
    gpu: &mut Gpu,
    file: &KernelFile,
    base: &str,
) -> Result<cudarc::driver::CudaFunction, CudaError> {
    gpu.function(file, &format!("{base}_{}", T::SUFFIX))
}

/// No buffer: the kernels take a null pointer for optional outputs and addends.
const NULL: u64 = 0;

/// RGB8 frame (HWC, `stride` bytes per row) → normalised CHW `[3, dh, dw]` in `dst`.
#[allow(clippy::too_many_arguments)]
pub fn preprocess_bilinear<T: Element>(
    gpu: &mut Gpu,
    src: &CudaSlice<u8>,
    (sw, sh, stride): (usize, usize, usize),
    dst: &mut CudaSlice<T>,
    (dw, dh): (usize, usize),
    mean: [f32; 3],
    std: [f32; 3],
) -> Result<(), CudaError> {
    const K: &str = "preprocess_bilinear";
    let (swi, shi, sti) = (dim(K, "width", sw)?, dim(K, "height", sh)?, dim(K, "stride", stride)?);
    let (dwi, dhi) = (dim(K, "output width", dw)?, dim(K, "output height", dh)?);
    if stride < sw * 3 {
        return Err(shape(K, format!("stride {stride} is less than 3 x width {sw}")));
    }
    let need = stride * (sh - 1) + sw * 3;
    if src.len() < need {
        return Err(shape(
            K,
            format!("frame buffer holds {} bytes; {sw}x{sh} with stride {stride} needs {need}", src.len()),
        ));
    }
    expect_len(K, "output", dst.len(), 3 * dw * dh)?;
    if std.iter().any(|&s| s == 0.0 || !s.is_finite()) || mean.iter().any(|m| !m.is_finite()) {
        return Err(shape(K, "mean and std must be finite, std non-zero"));
    }
    let f = function::<T>(gpu, &kernels::PREPROCESS, K)?;
    let mut b = gpu.stream().launch_builder(&f);
    b.arg(src).arg(&swi).arg(&shi).arg(&sti).arg(dst).arg(&dwi).arg(&dhi);
    b.arg(&mean[0]).arg(&mean[1]).arg(&mean[2]).arg(&std[0]).arg(&std[1]).arg(&std[2]);
    unsafe { b.launch(grid_2d(dwi, dhi, 1)) }.map(|_| ()).map_err(launch_failed(K))
}

/// Binary logits `[h, w]` → labels (0/1) and optionally confidences at `ow`×`oh`.
#[allow(clippy::too_many_arguments)]
pub fn mask_binary<T: Element>(
    gpu: &mut Gpu,
    logits: &CudaSlice<T>,
    (h, w): (usize, usize),
    labels: &mut CudaSlice<u8>,
    confidence: Option<&mut CudaSlice<f32>>,
    (ow, oh): (usize, usize),
    threshold: f32,
) -> Result<(), CudaError> {
    const K: &str = "mask_binary";
    let (hi, wi, owi, ohi) =
        (dim(K, "h", h)?, dim(K, "w", w)?, dim(K, "output width", ow)?, dim(K, "output height", oh)?);
    expect_len(K, "logits", logits.len(), h * w)?;
    expect_len(K, "labels", labels.len(), ow * oh)?;
    if let Some(c) = &confidence {
        expect_len(K, "confidence", c.len(), ow * oh)?;
    }
    if !(threshold > 0.0 && threshold < 1.0) {
        return Err(shape(K, format!("threshold {threshold} must be in (0, 1)")));
    }
    let f = function::<T>(gpu, &kernels::POSTPROCESS, K)?;
    let mut b = gpu.stream().launch_builder(&f);
    b.arg(logits).arg(&hi).arg(&wi).arg(labels);
    match confidence {
        Some(c) => b.arg(c),
        None => b.arg(&NULL),
    };
    b.arg(&owi).arg(&ohi).arg(&threshold);
    unsafe { b.launch(grid_2d(owi, ohi, 1)) }.map(|_| ()).map_err(launch_failed(K))
}

/// Semantic logits `[k, plane]` → the winning class and its softmax probability per pixel.
pub fn argmax_classes<T: Element>(
    gpu: &mut Gpu,
    logits: &CudaSlice<T>,
    k: usize,
    plane: usize,
    labels: &mut CudaSlice<u8>,
    confidence: &mut CudaSlice<f32>,
) -> Result<(), CudaError> {
    const K: &str = "argmax_classes";
    let (ki, pi) = (dim(K, "classes", k)?, dim(K, "plane", plane)?);
    if k > 256 {
        return Err(shape(K, format!("{k} classes; labels are u8, so at most 256")));
    }
    expect_len(K, "logits", logits.len(), k * plane)?;
    expect_len(K, "labels", labels.len(), plane)?;
    expect_len(K, "confidence", confidence.len(), plane)?;
    let f = function::<T>(gpu, &kernels::POSTPROCESS, K)?;
    let mut b = gpu.stream().launch_builder(&f);
    b.arg(logits).arg(&ki).arg(&pi).arg(labels).arg(confidence);
    unsafe { b.launch(grid_1d(K, plane)?) }.map(|_| ()).map_err(launch_failed(K))
}

/// Labels and confidences `[h, w]` → nearest-neighbour upsampled to `ow`×`oh`.
pub fn nearest_labels(
    gpu: &mut Gpu,
    labels: &CudaSlice<u8>,
    confidence: &CudaSlice<f32>,
    (h, w): (usize, usize),
    out_labels: &mut CudaSlice<u8>,
    out_confidence: Option<&mut CudaSlice<f32>>,
    (ow, oh): (usize, usize),
) -> Result<(), CudaError> {
    const K: &str = "nearest_labels";
    let (hi, wi, owi, ohi) =
        (dim(K, "h", h)?, dim(K, "w", w)?, dim(K, "output width", ow)?, dim(K, "output height", oh)?);
    expect_len(K, "labels", labels.len(), h * w)?;
    expect_len(K, "confidence", confidence.len(), h * w)?;
    expect_len(K, "output labels", out_labels.len(), ow * oh)?;
    if let Some(c) = &out_confidence {
        expect_len(K, "output confidence", c.len(), ow * oh)?;
    }
    let f = gpu.function(&kernels::POSTPROCESS, K)?;
    let mut b = gpu.stream().launch_builder(&f);
    b.arg(labels).arg(confidence).arg(&hi).arg(&wi).arg(out_labels);
    match out_confidence {
        Some(c) => b.arg(c),
        None => b.arg(&NULL),
    };
    b.arg(&owi).arg(&ohi);
    unsafe { b.launch(grid_2d(owi, ohi, 1)) }.map(|_| ()).map_err(launch_failed(K))
}

/// NCHW channel count and plane size of a buffer of `len` values with `bias.len()` channels.
fn channels(kernel: &'static str, len: usize, c: usize, plane: usize) -> Result<(i32, i32, i64), CudaError> {
    let ci = dim(kernel, "channels", c)?;
    let pi = dim(kernel, "plane", plane)?;
    if len == 0 || !len.is_multiple_of(c * plane) {
        return Err(shape(kernel, format!("{len} values is not a whole number of [{c}, {plane}] items")));
    }
    Ok((ci, pi, len as i64))
}

/// `x ← ReLU(x + bias[c])` in place (conv1's epilogue in a residual conv unit).
pub fn bias_relu<T: Element>(
    gpu: &mut Gpu,
    x: &mut CudaSlice<T>,
    bias: &CudaSlice<f32>,
    plane: usize,
) -> Result<(), CudaError> {
    const K: &str = "bias_relu";
    let (ci, pi, n) = channels(K, x.len(), bias.len(), plane)?;
    let f = function::<T>(gpu, &kernels::DECODER, K)?;
    let mut b = gpu.stream().launch_builder(&f);
    b.arg(x).arg(bias).arg(&ci).arg(&pi).arg(&n);
    unsafe { b.launch(grid_1d(K, n as usize)?) }.map(|_| ()).map_err(launch_failed(K))
}

/// `out ← conv + bias[c] + ReLU(input)` (conv2's epilogue: the unit's output).
pub fn rcu_residual<T: Element>(
    gpu: &mut Gpu,
    out: &mut CudaSlice<T>,
    conv: &CudaSlice<T>,
    bias: &CudaSlice<f32>,
    input: &CudaSlice<T>,
    plane: usize,
) -> Result<(), CudaError> {
    const K: &str = "rcu_residual";
    let (ci, pi, n) = channels(K, conv.len(), bias.len(), plane)?;
    expect_len(K, "input", input.len(), conv.len())?;
    expect_len(K, "output", out.len(), conv.len())?;
    let f = function::<T>(gpu, &kernels::DECODER, K)?;
    let mut b = gpu.stream().launch_builder(&f);
    b.arg(out).arg(conv).arg(bias).arg(input).arg(&ci).arg(&pi).arg(&n);
    unsafe { b.launch(grid_1d(K, n as usize)?) }.map(|_| ()).map_err(launch_failed(K))
}

/// `out ← a + b`.
pub fn add<T: Element>(
    gpu: &mut Gpu,
    out: &mut CudaSlice<T>,
    a: &CudaSlice<T>,
    b_in: &CudaSlice<T>,
) -> Result<(), CudaError> {
    const K: &str = "add";
    expect_len(K, "b", b_in.len(), a.len())?;
    expect_len(K, "output", out.len(), a.len())?;
    let n = a.len() as i64;
    let f = function::<T>(gpu, &kernels::DECODER, K)?;
    let mut b = gpu.stream().launch_builder(&f);
    b.arg(out).arg(a).arg(b_in).arg(&n);
    unsafe { b.launch(grid_1d(K, a.len())?) }.map(|_| ()).map_err(launch_failed(K))
}

/// Bilinear resampling of `nc` planes, optionally adding `addend` (shaped like the output).
#[allow(clippy::too_many_arguments)]
pub fn upsample_bilinear<T: Element>(
    gpu: &mut Gpu,
    input: &CudaSlice<T>,
    nc: usize,
    (ih, iw): (usize, usize),
    out: &mut CudaSlice<T>,
    (oh, ow): (usize, usize),
    align_corners: bool,
    addend: Option<&CudaSlice<T>>,
) -> Result<(), CudaError> {
    const K: &str = "upsample_bilinear";
    let nci = dim(K, "planes", nc)?;
    if nc > 65_535 {
        return Err(shape(K, format!("{nc} planes; at most 65535 per launch")));
    }
    let (ihi, iwi, ohi, owi) = (dim(K, "ih", ih)?, dim(K, "iw", iw)?, dim(K, "oh", oh)?, dim(K, "ow", ow)?);
    expect_len(K, "input", input.len(), nc * ih * iw)?;
    expect_len(K, "output", out.len(), nc * oh * ow)?;
    if let Some(a) = addend {
        expect_len(K, "addend", a.len(), nc * oh * ow)?;
    }
    let ac = align_corners as i32;
    let f = function::<T>(gpu, &kernels::DECODER, K)?;
    let mut b = gpu.stream().launch_builder(&f);
    b.arg(input).arg(&nci).arg(&ihi).arg(&iwi).arg(out).arg(&ohi).arg(&owi).arg(&ac);
    match addend {
        Some(a) => b.arg(a),
        None => b.arg(&NULL),
    };
    unsafe { b.launch(grid_2d(owi, ohi, nc as u32)) }.map(|_| ()).map_err(launch_failed(K))
}

/// One TPAVI block on the device: its weights uploaded once (W_z with BN folded), and the fp32
/// scratch for the per-group matrices, for groups of `t` frames of `hw` positions.
pub struct TpaviBlock {
    c: usize,
    t: usize,
    hw: usize,
    steps: Vec<GemmStep>,
    bufs: HashMap<TpaviBuf, CudaSlice<f32>>,
    ln_gamma: CudaSlice<f32>,
    ln_beta: CudaSlice<f32>,
}

/// Channels the apply kernel is built for (every official TPAVI block).
pub const TPAVI_CHANNELS: usize = 256;

impl TpaviBlock {
    pub fn upload(gpu: &mut Gpu, w: &TpaviWeights, t: usize, hw: usize) -> Result<Self, CudaError> {
        const K: &str = "tpavi";
        if w.c != TPAVI_CHANNELS {
            return Err(shape(K, format!("{} channels; the kernel is built for {TPAVI_CHANNELS}", w.c)));
        }
        dim(K, "positions", t * hw)?;
        let (c, cp, d) = (w.c, w.cp, w.d);
        let sizes = [
            (&w.align_w, c * d, "align_channel.weight"),
            (&w.theta_w, cp * c, "theta.weight"),
            (&w.phi_w, cp * c, "phi.weight"),
            (&w.g_w, cp * c, "g.weight"),
            (&w.wz_w, c * cp, "W_z.0.weight"),
        ];
        for (v, n, name) in sizes {
            expect_len(K, name, v.len(), n)?;
        }
        for (v, n, name) in [(&w.theta_b, cp, "theta.bias"), (&w.phi_b, cp, "phi.bias"), (&w.g_b, cp, "g.bias")] {
            expect_len(K, name, v.len(), n)?;
        }
        for (v, name) in [
            (&w.wz_b, "W_z.0.bias"),
            (&w.bn_gamma, "W_z.1.weight"),
            (&w.bn_beta, "W_z.1.bias"),
            (&w.bn_mean, "W_z.1.running_mean"),
            (&w.bn_var, "W_z.1.running_var"),
            (&w.ln_gamma, "norm_layer.weight"),
            (&w.ln_beta, "norm_layer.bias"),
        ] {
            expect_len(K, name, v.len(), c)?;
        }
        if let Some(b) = &w.align_b {
            expect_len(K, "align_channel.bias", b.len(), c)?;
        }
        let (wz_w, wz_b) = w.folded_wz();
        let stream = gpu.stream().clone();
        let up = |v: &[f32]| stream.clone_htod(v).map_err(launch_failed("tpavi upload"));
        let mut bufs = HashMap::new();
        for (k, v) in [
            (TpaviBuf::AlignW, &w.align_w),
            (TpaviBuf::PhiW, &w.phi_w),
            (TpaviBuf::PhiB, &w.phi_b),
            (TpaviBuf::GW, &w.g_w),
            (TpaviBuf::GB, &w.g_b),
            (TpaviBuf::ThetaW, &w.theta_w),
            (TpaviBuf::ThetaB, &w.theta_b),
            (TpaviBuf::WzW, &wz_w),
            (TpaviBuf::WzB, &wz_b),
        ] {
            bufs.insert(k, up(v)?);
        }
        if let Some(b) = &w.align_b {
            bufs.insert(TpaviBuf::AlignB, up(b)?);
        }
        let steps = tpavi_steps(t, hw, c, cp, d, w.align_b.is_some());
        let zeros = |n: usize| stream.alloc_zeros::<f32>(n).map_err(launch_failed("tpavi alloc"));
        bufs.insert(TpaviBuf::Audio, zeros(t * d)?);
        bufs.insert(TpaviBuf::Sums, zeros(t * c)?);
        for s in &steps {
            bufs.insert(s.out, zeros(s.m * s.n)?);
        }
        Ok(TpaviBlock { c, t, hw, steps, bufs, ln_gamma: up(&w.ln_gamma)?, ln_beta: up(&w.ln_beta)? })
    }

    /// `v` `[T, hw, C]` channels-last and the group's audio embeddings `[T, D]` (host) → `out`.
    pub fn run<T: Element>(
        &mut self,
        gpu: &mut Gpu,
        v: &CudaSlice<T>,
        audio: &[f32],
        out: &mut CudaSlice<T>,
    ) -> Result<(), CudaError> {
        const K: &str = "tpavi";
        let n_pos = self.t * self.hw;
        expect_len(K, "features", v.len(), n_pos * self.c)?;
        expect_len(K, "output", out.len(), n_pos * self.c)?;
        let stream = gpu.stream().clone();
        {
            let dst = self.bufs.get_mut(&TpaviBuf::Audio).ok_or_else(|| shape(K, "audio buffer missing"))?;
            expect_len(K, "audio", audio.len(), dst.len())?;
            stream.memcpy_htod(audio, dst).map_err(launch_failed("tpavi audio upload"))?;
        }

        let (hw, c) = (dim(K, "hw", self.hw)?, dim(K, "channels", self.c)?);
        let f = function::<T>(gpu, &kernels::TPAVI, "tpavi_frame_sum")?;
        let sums = self.bufs.get_mut(&TpaviBuf::Sums).ok_or_else(|| shape(K, "sums buffer missing"))?;
        let mut b = stream.launch_builder(&f);
        b.arg(v).arg(&hw).arg(&c).arg(sums);
        let cfg = LaunchConfig {
            grid_dim: ((self.c as u32).div_ceil(32), self.t as u32, 1),
            block_dim: (32, 8, 1),
            shared_mem_bytes: 0,
        };
        unsafe { b.launch(cfg) }.map_err(launch_failed("tpavi_frame_sum"))?;

        let gemm = gpu.function(&kernels::TPAVI, "tpavi_small_gemm")?;
        for s in &self.steps {
            let mut dst = self.bufs.remove(&s.out).ok_or_else(|| shape(K, format!("{:?} buffer missing", s.out)))?;
            let result = (|| {
                let a = self.bufs.get(&s.a).ok_or_else(|| shape(K, format!("{:?} buffer missing", s.a)))?;
                let bm = self.bufs.get(&s.b).ok_or_else(|| shape(K, format!("{:?} buffer missing", s.b)))?;
                let (sam, sak, sbk, sbn) = (s.sam as i64, s.sak as i64, s.sbk as i64, s.sbn as i64);
                let (m, n, k) = (s.m as i32, s.n as i32, s.k as i32);
                let mut b = stream.launch_builder(&gemm);
                b.arg(a).arg(&sam).arg(&sak).arg(bm).arg(&sbk).arg(&sbn);
                match s.bias {
                    Some(key) => b.arg(self.bufs.get(&key).ok_or_else(|| shape(K, format!("{key:?} buffer missing")))?),
                    None => b.arg(&NULL),
                };
                b.arg(&s.bias_scale).arg(&s.alpha).arg(&s.diag).arg(&mut dst).arg(&m).arg(&n).arg(&k);
                unsafe { b.launch(grid_1d(K, s.m * s.n)?) }.map(|_| ()).map_err(launch_failed("tpavi_small_gemm"))
            })();
            self.bufs.insert(s.out, dst);
            result?;
        }

        let f = function::<T>(gpu, &kernels::TPAVI, "tpavi_apply")?;
        let weff = self.bufs.get(&TpaviBuf::Weff).ok_or_else(|| shape(K, "Weff buffer missing"))?;
        let cvec = self.bufs.get(&TpaviBuf::Cvec).ok_or_else(|| shape(K, "cvec buffer missing"))?;
        let (n_i, eps) = (dim(K, "positions", n_pos)?, TPAVI_LN_EPS);
        let mut b = stream.launch_builder(&f);
        b.arg(v).arg(weff).arg(cvec).arg(&self.ln_gamma).arg(&self.ln_beta).arg(out).arg(&n_i).arg(&eps);
        let cfg =
            LaunchConfig { grid_dim: ((n_pos as u32).div_ceil(32), 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
        unsafe { b.launch(cfg) }.map(|_| ()).map_err(launch_failed("tpavi_apply"))
    }
}
