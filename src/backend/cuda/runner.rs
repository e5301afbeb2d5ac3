//! The CUDA runner's program for one graph: the [`Plan`] turned into device memory and a list of
//! [`Launch`]es, all made at load time; a call uploads the inputs into their arena buffers, submits
//! the launches in order and downloads the outputs. Nothing is allocated per call on the device.
//!
//! The same program runs on any [`Device`]: the emulated one (`emulated.rs`) in CI, a GPU through
//! cudarc when one is present. Memory at load:
//! * one weights region: every constant the graph reads and every weight an avseg operator holds,
//!   at the plan's storage precision (biases, resize taps and the TPAVI matrices stay fp32);
//! * the activation arena of the plan, each buffer at its planned offset;
//! * one fp32 scratch region for the TPAVI fold (sums, gs, K, K·W_z, the folded matrix and
//!   vector), sized for the largest block and reused by each.
//!
//! Each node runs as `kernels/graph.cu` (convolutions, products, element-wise, transposes,
//! max-pools, linear resizes) or `kernels/tpavi.cu` (the fold, spec §6.6: per group the K matrix
//! and the folded C×C matrix by small GEMMs, then one apply kernel with the residual and the
//! channel LayerNorm).

use std::collections::HashMap;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::change_axes::AxisOp;
use tract_onnx::tract_core::ops::cnn::MaxPool;
use tract_onnx::tract_core::ops::element_wise::ElementWiseOp;
use tract_onnx::tract_core::ops::konst::Const;
use tract_onnx::tract_core::ops::nn::DataFormat;

use super::frames::{FrameStage, MaskStage};
use crate::backend::{MaskRule, RawFrame};
use super::launch::{BinaryKind, ConvParams, Device, Launch, MatMulParams, PoolParams, ResizeParams, Shape, Strided, UnaryKind, MAX_RANK};
use super::plan::{Kernel, Plan, Precision, ALIGN};
use super::CudaError;
use crate::backend::cpu::binary::{AvBinary, BinKind};
use crate::backend::cpu::conv::{AvConv, Clamp, Layout};
use crate::backend::cpu::matmul::Bias;
use crate::backend::cpu::maxpool::AvMaxPool;
use crate::backend::cpu::resize::AvResize;
use crate::backend::cpu::tpavi::AvTpavi;
use crate::tensor::Tensor as AvTensor;

/// The most graph inputs a program takes (the segmenter has two: frames and audio features); a
/// call keeps their slices on the stack.
const MAX_GRAPH_INPUTS: usize = 4;

/// Host-side image of the weights region, filled while the program is built.
struct Weights {
    precision: Precision,
    bytes: Vec<u8>,
}

impl Weights {
    fn align(&mut self) -> u64 {
        let at = (self.bytes.len() as u64).div_ceil(ALIGN) * ALIGN;
        self.bytes.resize(at as usize, 0);
        at
    }
    /// Values at the storage precision; returns their offset.
    fn stored(&mut self, v: &[f32]) -> u64 {
        let at = self.align();
        match self.precision {
            Precision::F32 => v.iter().for_each(|x| self.bytes.extend_from_slice(&x.to_ne_bytes())),
            Precision::F16 => v.iter().for_each(|x| self.bytes.extend_from_slice(&half::f16::from_f32(*x).to_bits().to_ne_bytes())),
        }
        at
    }
    /// Values kept in fp32 at any precision.
    fn f32s(&mut self, v: &[f32]) -> u64 {
        let at = self.align();
        v.iter().for_each(|x| self.bytes.extend_from_slice(&x.to_ne_bytes()));
        at
    }
    fn i32s(&mut self, v: &[i32]) -> u64 {
        let at = self.align();
        v.iter().for_each(|x| self.bytes.extend_from_slice(&x.to_ne_bytes()));
        at
    }
}

/// Where a value lives before the regions are allocated: an offset in one of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Loc {
    Weights(u64),
    Arena(u64),
    Scratch(u64),
    /// No operand (a null pointer).
    Null,
}

/// A graph input or output: its arena offset, shape and element count.
#[derive(Clone, Debug)]
pub struct Port {
    pub offset: u64,
    pub shape: Vec<usize>,
}

impl Port {
    fn len(&self) -> usize {
        self.shape.iter().product()
    }
}

/// A graph made runnable on a [`Device`]; see the module documentation.
pub struct Program {
    /// For errors: the graph's path or name.
    pub graph: String,
    pub precision: Precision,
    /// The launches of one call, in order, with device addresses.
    pub launches: Vec<Launch>,
    pub inputs: Vec<Port>,
    pub outputs: Vec<Port>,
    arena: u64,
    /// Per plan step: its node, where its output lives in the arena (None for a constant view),
    /// and the launches issued up to and including it, for tests that compare step by step.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) trace: Vec<(String, Option<u64>, usize)>,
    /// Host staging for uploads and downloads, sized at load.
    staging: Vec<u8>,
}

/// An error for `graph` about `node`.
fn plan_error(graph: &str, node: &str, detail: impl std::fmt::Display) -> CudaError {
    CudaError::Plan { graph: graph.to_string(), detail: format!("node {node}: {detail}") }
}

fn concrete(fact: &TypedFact) -> Option<Vec<usize>> {
    fact.shape.as_concrete().map(|s| s.to_vec())
}

fn contiguous_strides(shape: &[usize]) -> Vec<i64> {
    let mut st = vec![1i64; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        st[d] = st[d + 1] * shape[d + 1] as i64;
    }
    st
}

/// numpy broadcasting of `a` and `b` (contiguous) to `out`: per output axis, each input's stride
/// (0 where it is broadcast); None when they do not broadcast or `out` has too many axes.
fn broadcast(out: &[usize], a: &[usize], b: &[usize]) -> Option<Strided> {
    if out.len() > MAX_RANK || a.len() > out.len() || b.len() > out.len() {
        return None;
    }
    let mut s = Strided { rank: out.len() as i32, dims: [1; MAX_RANK], a_st: [0; MAX_RANK], b_st: [0; MAX_RANK] };
    for (shape, strides) in [(a, &mut s.a_st), (b, &mut s.b_st)] {
        let pad = out.len() - shape.len();
        let own = contiguous_strides(shape);
        for d in 0..out.len() {
            if d < pad {
                continue;
            }
            let len = shape[d - pad];
            if len == out[d] {
                strides[d] = own[d - pad];
            } else if len != 1 {
                return None;
            }
        }
    }
    for (d, &len) in out.iter().enumerate() {
        s.dims[d] = len as i64;
    }
    Some(s)
}

fn clamp_fields(c: &Clamp) -> (i32, f32, f32) {
    if c.is_none() {
        (0, 0.0, 0.0)
    } else {
        (1, c.lo, c.hi)
    }
}

fn unary_kind(name: &str) -> Option<UnaryKind> {
    Some(match name {
        "Sigmoid" => UnaryKind::Sigmoid,
        "Relu" => UnaryKind::Relu,
        "Exp" => UnaryKind::Exp,
        "Neg" => UnaryKind::Neg,
        "Abs" => UnaryKind::Abs,
        "Sqrt" => UnaryKind::Sqrt,
        "Recip" => UnaryKind::Recip,
        "Tanh" => UnaryKind::Tanh,
        "Erf" => UnaryKind::Erf,
        _ => return None,
    })
}

fn binary_kind(kind: BinKind) -> BinaryKind {
    match kind {
        BinKind::Add => BinaryKind::Add,
        BinKind::Sub => BinaryKind::Sub,
        BinKind::Mul => BinaryKind::Mul,
        BinKind::Div => BinaryKind::Div,
        BinKind::Max => BinaryKind::Max,
        BinKind::Min => BinaryKind::Min,
    }
}

fn int(v: usize, graph: &str, node: &str) -> Result<i32, CudaError> {
    i32::try_from(v).map_err(|_| plan_error(graph, node, format!("size {v} exceeds the kernels' 32-bit sizes")))
}

/// Graph constant `node` (`k`) in the weights, with its axes permuted by `perm` (empty: as it
/// is): stored on first use, then found in `stored`.
fn store_constant(weights: &mut Weights, stored: &mut HashMap<(usize, Vec<usize>), Loc>, node: usize, k: &Const, perm: &[usize]) -> TractResult<Loc> {
    if let Some(l) = stored.get(&(node, perm.to_vec())) {
        return Ok(*l);
    }
    let mut t = k.val().cast_to::<f32>()?.into_owned();
    if !perm.is_empty() {
        t = t.permute_axes(perm)?;
    }
    let l = Loc::Weights(weights.stored(t.try_as_plain_ram()?.as_slice::<f32>()?));
    stored.insert((node, perm.to_vec()), l);
    Ok(l)
}

/// A launch with its operands still as region offsets, resolved to addresses once the regions
/// are allocated.
struct Pending {
    launch: Launch,
    /// Each address field of `launch`, in its order (see [`addresses_mut`]), as a location.
    locs: Vec<Loc>,
}

/// The address fields of a launch, in a fixed order.
fn addresses_mut(l: &mut Launch) -> Vec<&mut u64> {
    match l {
        Launch::Conv2d { x, w, bias, res, y, .. } => vec![x, w, bias, res, y],
        Launch::MatMul { a, b, bias, out, .. } => vec![a, b, bias, out],
        Launch::Binary { a, b, out, .. } => vec![a, b, out],
        Launch::Unary { x, out, .. } => vec![x, out],
        Launch::Transpose { x, out, .. } => vec![x, out],
        Launch::MaxPool { x, out, .. } => vec![x, out],
        Launch::ResizeLinear { x, res, out, row_taps, row_w, col_taps, col_w, .. } => vec![x, res, out, row_taps, row_w, col_taps, col_w],
        Launch::TpaviFrameSumNchw { v, sums, .. } => vec![v, sums],
        Launch::TpaviSmallGemm { a, b, bias, out, .. } => vec![a, b, bias, out],
        Launch::TpaviWidenF16 { x, out, .. } => vec![x, out],
        Launch::TpaviApplyNchw { v, weff, cvec, gamma, beta, out, .. } => vec![v, weff, cvec, gamma, beta, out],
        Launch::PreprocessBilinear { src, dst, .. } => vec![src, dst],
        Launch::ResampleRows { src, bounds, coeffs, tmp, .. } => vec![src, bounds, coeffs, tmp],
        Launch::ResampleColumns { tmp, bounds, coeffs, dst, .. } => vec![tmp, bounds, coeffs, dst],
        Launch::MaskBinary { logits, labels, confidence, .. } => vec![logits, labels, confidence],
        Launch::ArgmaxClasses { logits, labels, confidence, .. } => vec![logits, labels, confidence],
        Launch::NearestLabels { labels, confidence, out_labels, out_confidence, .. } => vec![labels, confidence, out_labels, out_confidence],
    }
}

impl Program {
    /// Builds the program of `model` (the decluttered, avseg-rewritten graph the plan was made
    /// from) on `device`: allocates and fills its memory, and resolves every launch.
    pub fn new(graph: &str, model: &TypedModel, plan: &Plan, device: &mut dyn Device) -> Result<Program, CudaError> {
        if !plan.unsupported.is_empty() {
            return Err(CudaError::Plan { graph: graph.into(), detail: format!("no device kernel for {}", plan.unsupported.join(", ")) });
        }
        if device.precision() != plan.precision {
            return Err(CudaError::Plan { graph: graph.into(), detail: "the device and the plan differ in precision".into() });
        }
        let precision = plan.precision;
        let bytes = precision.bytes();
        let mut weights = Weights { precision, bytes: Vec::new() };
        let mut pending: Vec<Pending> = Vec::new();
        let mut scratch_bytes = 0u64;
        // Each outlet's place: an arena buffer or a constant in the weights.
        let mut place: HashMap<OutletId, Loc> = HashMap::new();
        // Graph constants in the weights, by node and the permutation of their axes (none: empty).
        let mut consts: HashMap<(usize, Vec<usize>), Loc> = HashMap::new();
        let by_name: HashMap<&str, usize> = model.nodes().iter().map(|n| (n.name.as_str(), n.id)).collect();
        let err = |node: &str, d: String| plan_error(graph, node, d);
        let mut trace = Vec::new();

        for step in &plan.steps {
            let id = *by_name.get(step.node.as_str()).ok_or_else(|| err(&step.node, "not in the graph".into()))?;
            let node = model.node(id);
            let name = node.name.as_str();
            let out_loc = Loc::Arena(plan.buffers[step.output].offset);
            let out_shape = concrete(&node.outputs[0].fact).ok_or_else(|| err(name, "symbolic output shape".into()))?;
            if node.outputs[0].fact.datum_type != f32::datum_type() {
                return Err(err(name, format!("{:?} output; the runner carries f32 tensors only", node.outputs[0].fact.datum_type)));
            }
            // A product step's reading of its node (the plan's); it may ask for a constant operand stored with
            // its axes permuted.
            let product = step.product.as_ref();
            let permuted = product.and_then(|(_, p)| p.as_ref());
            // Each input's location and shape; constants go to the weights on first use.
            let mut ins: Vec<(Loc, Vec<usize>)> = Vec::new();
            for (i, o) in node.inputs.iter().enumerate() {
                let fact = model.outlet_fact(*o).map_err(|e| err(name, format!("{e}")))?;
                let shape = concrete(fact).ok_or_else(|| err(name, "symbolic input shape".into()))?;
                let loc = if let Some(p) = permuted.filter(|p| p.operand == i) {
                    let k = model.node(o.node).op_as::<Const>().ok_or_else(|| err(name, format!("input {i} is to be stored permuted but is not a graph constant")))?;
                    store_constant(&mut weights, &mut consts, o.node, k, &p.perm).map_err(|e| err(name, format!("constant: {e}")))?
                } else if let Some(l) = place.get(o) {
                    *l
                } else if let Some(k) = model.node(o.node).op_as::<Const>() {
                    store_constant(&mut weights, &mut consts, o.node, k, &[]).map_err(|e| err(name, format!("constant: {e}")))?
                } else {
                    return Err(err(name, format!("input {o:?} has no place")));
                };
                ins.push((loc, shape));
            }
            // Each launch below reads its node's first input, a product or a TPAVI block the second
            // too: a node short of them is a malformed graph, which gets an error, not a panic.
            let reads = match &step.kernel {
                Kernel::Upload | Kernel::View | Kernel::FusedAdd | Kernel::FusedClamp => 0,
                Kernel::Gemm | Kernel::TpaviFold { .. } => 2,
                _ => 1,
            };
            if ins.len() < reads {
                return Err(err(name, format!("{} inputs; its {} kernel reads {reads}", ins.len(), step.kernel.name())));
            }
            let n_out = out_shape.iter().product::<usize>() as u64;
            // A following Add the plan folded into this launch: its other operand.
            let residual = step.residual.map_or(Loc::Null, |b| Loc::Arena(plan.buffers[b].offset));
            let op = node.op();
            let mut push = |launch: Launch, locs: Vec<Loc>| pending.push(Pending { launch, locs });
            match &step.kernel {
                Kernel::Upload => {}
                Kernel::View | Kernel::FusedAdd | Kernel::FusedClamp => {}
                Kernel::ConvGemm { .. } | Kernel::Depthwise { .. } => {
                    let c = op.downcast_ref::<AvConv>().ok_or_else(|| err(name, "conv step on another operator".into()))?;
                    let g = &c.geo;
                    let (clamp, lo, hi) = clamp_fields(&c.clamp);
                    let i = |v: usize| int(v, graph, name);
                    let p = ConvParams {
                        n: i(g.n)?,
                        c_in: i(g.c_in)?,
                        c_out: i(g.c_out)?,
                        groups: i(g.groups)?,
                        kh: i(g.kh)?,
                        kw: i(g.kw)?,
                        stride_h: i(g.stride_h)?,
                        stride_w: i(g.stride_w)?,
                        dil_h: i(g.dil_h)?,
                        dil_w: i(g.dil_w)?,
                        pad_top: i(g.pad_top)?,
                        pad_left: i(g.pad_left)?,
                        in_h: i(g.in_h)?,
                        in_w: i(g.in_w)?,
                        out_h: i(g.out_h)?,
                        out_w: i(g.out_w)?,
                        in_nhwc: (c.input == Layout::Nhwc) as i32,
                        out_nhwc: (c.output == Layout::Nhwc) as i32,
                        clamp,
                        lo,
                        hi,
                        res_clamp: step.residual_clamp.is_some() as i32,
                        res_lo: step.residual_clamp.map_or(0.0, |c| c.0),
                        res_hi: step.residual_clamp.map_or(0.0, |c| c.1),
                    };
                    let w = Loc::Weights(weights.stored(&c.weights));
                    let b = if c.bias.is_empty() { Loc::Null } else { Loc::Weights(weights.f32s(&c.bias)) };
                    let shape = Shape::linear(n_out)?;
                    push(Launch::Conv2d { shape, x: 0, w: 0, bias: 0, res: 0, y: 0, p }, vec![ins[0].0, w, b, residual, out_loc]);
                }
                Kernel::Gemm => {
                    let (mm, _) = product.ok_or_else(|| err(name, "gemm step on another operator".into()))?;
                    if mm.batch.len() > 4 || ins.len() < 2 {
                        return Err(err(name, format!("{} batch axes, {} inputs", mm.batch.len(), ins.len())));
                    }
                    let (clamp, lo, hi) = clamp_fields(&mm.clamp);
                    let mut p = MatMulParams {
                        m: int(mm.m, graph, name)?,
                        n: int(mm.n, graph, name)?,
                        k: int(mm.k, graph, name)?,
                        batch_rank: mm.batch.len() as i32,
                        a_sm: mm.a_strides.0 as i64,
                        a_sk: mm.a_strides.1 as i64,
                        b_sk: mm.b_strides.0 as i64,
                        b_sn: mm.b_strides.1 as i64,
                        o_sm: mm.out_strides.0 as i64,
                        o_sn: mm.out_strides.1 as i64,
                        batch_len: [1; 4],
                        a_bs: [0; 4],
                        b_bs: [0; 4],
                        o_bs: [0; 4],
                        bias_mode: 0,
                        clamp,
                        lo,
                        hi,
                    };
                    for (d, ax) in mm.batch.iter().enumerate() {
                        p.batch_len[d] = ax.len as i64;
                        p.a_bs[d] = ax.a as i64;
                        p.b_bs[d] = ax.b as i64;
                        p.o_bs[d] = ax.out as i64;
                    }
                    let bias = match &mm.bias {
                        Bias::None => Loc::Null,
                        Bias::Rows(v) => {
                            p.bias_mode = 1;
                            Loc::Weights(weights.f32s(v))
                        }
                        Bias::Cols(v) => {
                            p.bias_mode = 2;
                            Loc::Weights(weights.f32s(v))
                        }
                    };
                    let shape = Shape::linear(n_out)?;
                    push(Launch::MatMul { shape, a: 0, b: 0, bias: 0, out: 0, p }, vec![ins[0].0, ins[1].0, bias, out_loc]);
                }
                Kernel::Elementwise => {
                    let shape = Shape::linear(n_out)?;
                    let bin = if let Some(b) = op.downcast_ref::<AvBinary>() {
                        Some(b.kind)
                    } else if let Some(b) = op.downcast_ref::<TypedBinOp>() {
                        Some(BinKind::from_name(&b.0.name()).ok_or_else(|| err(name, format!("binary operator {} has no kernel", b.0.name())))?)
                    } else {
                        None
                    };
                    if let Some(kind) = bin {
                        if ins.len() != 2 {
                            return Err(err(name, format!("{} inputs to a binary operator", ins.len())));
                        }
                        let s = broadcast(&out_shape, &ins[0].1, &ins[1].1)
                            .ok_or_else(|| err(name, format!("shapes {:?} and {:?} do not broadcast to {:?} in {MAX_RANK} axes", ins[0].1, ins[1].1, out_shape)))?;
                        push(Launch::Binary { shape, a: 0, b: 0, out: 0, kind: binary_kind(kind), s }, vec![ins[0].0, ins[1].0, out_loc]);
                    } else if let Some(e) = op.downcast_ref::<ElementWiseOp>() {
                        let kind = unary_kind(&e.0.name()).ok_or_else(|| err(name, format!("element-wise operator {} has no kernel", e.0.name())))?;
                        push(Launch::Unary { shape, x: 0, out: 0, kind, n: n_out }, vec![ins[0].0, out_loc]);
                    } else {
                        return Err(err(name, format!("element-wise step on {}", op.name())));
                    }
                }
                Kernel::Transpose => {
                    let Some(AxisOp::Move(from, to)) = op.downcast_ref::<AxisOp>() else {
                        return Err(err(name, format!("transpose step on {}", op.name())));
                    };
                    let in_shape = &ins[0].1;
                    if in_shape.len() > MAX_RANK {
                        return Err(err(name, format!("rank {} over {MAX_RANK}", in_shape.len())));
                    }
                    let mut perm: Vec<usize> = (0..in_shape.len()).collect();
                    let moved = perm.remove(*from);
                    perm.insert(*to, moved);
                    let own = contiguous_strides(in_shape);
                    let mut s = Strided { rank: in_shape.len() as i32, dims: [1; MAX_RANK], a_st: [0; MAX_RANK], b_st: [0; MAX_RANK] };
                    for (j, &src) in perm.iter().enumerate() {
                        s.dims[j] = in_shape[src] as i64;
                        s.a_st[j] = own[src];
                    }
                    if s.dims[..perm.len()].iter().map(|&d| d as usize).collect::<Vec<_>>() != out_shape {
                        return Err(err(name, format!("moving axis {from} to {to} of {in_shape:?} does not give {out_shape:?}")));
                    }
                    push(Launch::Transpose { shape: Shape::linear(n_out)?, x: 0, out: 0, s }, vec![ins[0].0, out_loc]);
                }
                Kernel::MaxPool { .. } => {
                    let in_shape = &ins[0].1;
                    // (kernel, strides, padding before) of tract's MaxPool or the CPU rewrite's AvMaxPool.
                    let window = if let Some(mp) = op.downcast_ref::<MaxPool>() {
                        let spec = &mp.pool_spec;
                        if mp.with_index_outputs.is_some() || spec.data_format != DataFormat::NCHW || in_shape.len() != 4 || spec.kernel_shape.len() != 2 || spec.dilations().iter().any(|&d| d != 1) {
                            return Err(err(name, "max-pool other than NCHW 2-D without dilation or indices".into()));
                        }
                        let pads = spec.computed_padding(&in_shape[2..]);
                        let strides = spec.strides();
                        ([spec.kernel_shape[0], spec.kernel_shape[1]], [strides[0], strides[1]], [pads[0].pad_before, pads[1].pad_before])
                    } else if let Some(mp) = op.downcast_ref::<AvMaxPool>() {
                        let g = &mp.geo;
                        if in_shape.len() != 4 || g.dil_h != 1 || g.dil_w != 1 {
                            return Err(err(name, "max-pool other than NCHW 2-D without dilation".into()));
                        }
                        ([g.kh, g.kw], [g.stride_h, g.stride_w], [g.pad_top, g.pad_left])
                    } else {
                        return Err(err(name, "max-pool step on another operator".into()));
                    };
                    let ([kh, kw], [stride_h, stride_w], [pad_top, pad_left]) = window;
                    let i = |v: usize| int(v, graph, name);
                    let p = PoolParams {
                        nc: i(in_shape[0] * in_shape[1])?,
                        in_h: i(in_shape[2])?,
                        in_w: i(in_shape[3])?,
                        out_h: i(out_shape[2])?,
                        out_w: i(out_shape[3])?,
                        kh: i(kh)?,
                        kw: i(kw)?,
                        stride_h: i(stride_h)?,
                        stride_w: i(stride_w)?,
                        pad_top: i(pad_top)?,
                        pad_left: i(pad_left)?,
                    };
                    push(Launch::MaxPool { shape: Shape::linear(n_out)?, x: 0, out: 0, p }, vec![ins[0].0, out_loc]);
                }
                Kernel::Resize => {
                    let r = op.downcast_ref::<AvResize>().ok_or_else(|| err(name, "resize step on another operator".into()))?;
                    let taps = |t: &[[u32; 2]]| t.iter().flat_map(|p| [p[0] as i32, p[1] as i32]).collect::<Vec<i32>>();
                    let ws = |w: &[[f32; 2]]| w.iter().flat_map(|p| [p[0], p[1]]).collect::<Vec<f32>>();
                    let rt = Loc::Weights(weights.i32s(&taps(&r.rows.taps)));
                    let rw = Loc::Weights(weights.f32s(&ws(&r.rows.weights)));
                    let ct = Loc::Weights(weights.i32s(&taps(&r.cols.taps)));
                    let cw = Loc::Weights(weights.f32s(&ws(&r.cols.weights)));
                    let i = |v: usize| int(v, graph, name);
                    let p = ResizeParams {
                        nc: i(r.n * r.c)?,
                        in_h: i(r.rows.len_in)?,
                        in_w: i(r.cols.len_in)?,
                        out_h: i(r.rows.len_out())?,
                        out_w: i(r.cols.len_out())?,
                    };
                    push(
                        Launch::ResizeLinear { shape: Shape::linear(n_out)?, x: 0, res: 0, out: 0, row_taps: 0, row_w: 0, col_taps: 0, col_w: 0, p },
                        vec![ins[0].0, residual, out_loc, rt, rw, ct, cw],
                    );
                }
                Kernel::TpaviFold { .. } => {
                    let t = op.downcast_ref::<AvTpavi>().ok_or_else(|| err(name, format!("TPAVI step on {} (sliding windows run on tract)", op.name())))?;
                    t.check().map_err(|e| err(name, format!("{e}")))?;
                    let used = tpavi_launches(t, ins[0].0, ins[1].0, out_loc, &mut weights, graph, name, &mut push)?;
                    scratch_bytes = scratch_bytes.max(used);
                }
                other => return Err(err(name, format!("no launch for the {} kernel yet", other.name()))),
            }
            for o in 0..node.outputs.len() {
                place.insert(OutletId::new(id, o), out_loc);
            }
            // A view's output is its input's buffer; an Add folded into its producer's launch is
            // that launch's output buffer, which the plan gave it.
            if step.kernel == Kernel::View {
                if let Some((l, _)) = ins.first() {
                    for o in 0..node.outputs.len() {
                        place.insert(OutletId::new(id, o), *l);
                    }
                }
            }
            let at = match place.get(&OutletId::new(id, 0)) {
                Some(Loc::Arena(o)) => Some(*o),
                _ => None,
            };
            trace.push((name.to_string(), at, pending.len()));
        }

        // The ports: inputs in the graph's order (its sources may run in another), then outputs.
        let plan_err = |detail: String| CudaError::Plan { graph: graph.into(), detail };
        let port = |o: &OutletId, what: &str| -> Result<Port, CudaError> {
            let Some(Loc::Arena(offset)) = place.get(o).copied() else {
                return Err(plan_err(format!("{what} {o:?} has no buffer of its own")));
            };
            let fact = model.outlet_fact(*o).map_err(|e| plan_err(format!("{e}")))?;
            let shape = concrete(fact).ok_or_else(|| plan_err(format!("symbolic {what} shape")))?;
            Ok(Port { offset, shape })
        };
        let inputs = model.input_outlets().map_err(|e| plan_err(format!("{e}")))?.iter().map(|o| port(o, "input")).collect::<Result<Vec<_>, _>>()?;
        let outputs = model.output_outlets().map_err(|e| plan_err(format!("{e}")))?.iter().map(|o| port(o, "output")).collect::<Result<Vec<_>, _>>()?;
        if inputs.len() > MAX_GRAPH_INPUTS || outputs.is_empty() {
            return Err(plan_err(format!("{} inputs and {} outputs; the runner takes at most {MAX_GRAPH_INPUTS} inputs and at least one output", inputs.len(), outputs.len())));
        }

        // The regions, then every launch's addresses.
        let weights_base = device.alloc(weights.bytes.len().max(1))?;
        device.upload(weights_base, &weights.bytes)?;
        let arena = device.alloc(plan.arena_bytes.max(1) as usize)?;
        let scratch = device.alloc(scratch_bytes.max(1) as usize)?;
        let launches = pending
            .into_iter()
            .map(|mut p| {
                for (field, loc) in addresses_mut(&mut p.launch).into_iter().zip(&p.locs) {
                    *field = match *loc {
                        Loc::Weights(o) => weights_base + o,
                        Loc::Arena(o) => arena + o,
                        Loc::Scratch(o) => scratch + o,
                        Loc::Null => 0,
                    };
                }
                p.launch
            })
            .collect();
        let launches: Vec<Launch> = launches;
        device.prepare(&launches)?;
        let largest = inputs.iter().chain(&outputs).map(|p| p.len()).max().unwrap_or(0);
        Ok(Program { graph: graph.into(), precision, launches, inputs, outputs, arena, trace, staging: Vec::with_capacity(largest * bytes as usize) })
    }

    /// Copies `inputs` into their arena buffers.
    pub(crate) fn upload_inputs(&mut self, device: &mut dyn Device, inputs: &[&[f32]]) -> Result<(), CudaError> {
        for (i, data) in inputs.iter().enumerate() {
            self.upload_input(device, i, data)?;
        }
        Ok(())
    }

    /// Copies `data` into input `index`'s arena buffer, at the storage precision.
    pub(crate) fn upload_input(&mut self, device: &mut dyn Device, index: usize, data: &[f32]) -> Result<(), CudaError> {
        let port = self.inputs.get(index).ok_or_else(|| CudaError::Plan { graph: self.graph.clone(), detail: format!("no input #{index}") })?;
        if data.len() != port.len() {
            return Err(CudaError::Shape { kernel: "upload", detail: format!("input of {} values, the graph's {:?} holds {}", data.len(), port.shape, port.len()) });
        }
        self.staging.clear();
        match self.precision {
            Precision::F32 => data.iter().for_each(|x| self.staging.extend_from_slice(&x.to_ne_bytes())),
            Precision::F16 => data.iter().for_each(|x| self.staging.extend_from_slice(&half::f16::from_f32(*x).to_bits().to_ne_bytes())),
        }
        device.upload(self.arena + port.offset, &self.staging)
    }

    /// The arena's device address.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn arena_base(&self) -> u64 {
        self.arena
    }

    /// The device address of input `index`'s buffer (frames pre-processed on the device are
    /// written there) and of output `index`'s (masks are made from there).
    pub(crate) fn input_address(&self, index: usize) -> Option<u64> {
        self.inputs.get(index).map(|p| self.arena + p.offset)
    }

    pub(crate) fn output_address(&self, index: usize) -> Option<u64> {
        self.outputs.get(index).map(|p| self.arena + p.offset)
    }

    /// One call: `inputs` (f32, in graph order) uploaded, every launch run, the outputs
    /// downloaded into `outputs` (resized to each output's length).
    pub fn run(&mut self, device: &mut dyn Device, inputs: &[&[f32]], outputs: &mut [Vec<f32>]) -> Result<(), CudaError> {
        if inputs.len() != self.inputs.len() {
            return Err(CudaError::Plan { graph: self.graph.clone(), detail: format!("{} inputs given, the graph has {}", inputs.len(), self.inputs.len()) });
        }
        self.upload_inputs(device, inputs)?;
        self.execute(device, outputs)
    }

    /// Every launch run on the inputs already in the arena, then the outputs downloaded into
    /// `outputs` (resized to each output's length).
    pub(crate) fn execute(&mut self, device: &mut dyn Device, outputs: &mut [Vec<f32>]) -> Result<(), CudaError> {
        if outputs.len() != self.outputs.len() {
            return Err(CudaError::Plan { graph: self.graph.clone(), detail: format!("{} outputs given, the graph has {}", outputs.len(), self.outputs.len()) });
        }
        for l in &self.launches {
            device.launch(l)?;
        }
        let bytes = self.precision.bytes() as usize;
        for (port, out) in self.outputs.iter().zip(outputs.iter_mut()) {
            self.staging.resize(port.len() * bytes, 0);
            device.download(self.arena + port.offset, &mut self.staging)?;
            out.clear();
            match self.precision {
                Precision::F32 => out.extend(self.staging.chunks_exact(4).map(|c| f32::from_ne_bytes([c[0], c[1], c[2], c[3]]))),
                Precision::F16 => out.extend(self.staging.chunks_exact(2).map(|c| half::f16::from_bits(u16::from_ne_bytes([c[0], c[1]])).to_f32())),
            }
        }
        Ok(())
    }
}

/// The launches of one TPAVI block (`v` `[T, C, h, w]`, `phi` `[T, C']`, both activations) into
/// `out`; returns the scratch bytes it uses. The small GEMMs read fp32: with fp16 storage, `phi`
/// is widened into the scratch first.
#[allow(clippy::too_many_arguments)]
fn tpavi_launches(
    t: &AvTpavi, v: Loc, phi: Loc, out: Loc, weights: &mut Weights, graph: &str, name: &str, push: &mut dyn FnMut(Launch, Vec<Loc>),
) -> Result<u64, CudaError> {
    let i = |v: usize| int(v, graph, name);
    let (c, cp, hw, frames) = (t.c, t.cp, t.h * t.w, t.t);
    let per = frames / t.groups;
    let wt = Loc::Weights(weights.f32s(&t.theta_wt));
    let bt = Loc::Weights(weights.f32s(&t.theta_b));
    let gw = Loc::Weights(weights.f32s(&t.g_w));
    let gb = Loc::Weights(weights.f32s(&t.g_b));
    let wz = Loc::Weights(weights.f32s(&t.wz_t));
    let bz = Loc::Weights(weights.f32s(&t.wz_b));
    let gamma = Loc::Weights(weights.f32s(&t.gamma));
    let beta = Loc::Weights(weights.f32s(&t.beta));
    // Scratch, fp32: sums [T, C], gs [T, C'], K [C', C'], K·W_z [C', C], A [C, C], cvec [C].
    let mut at = 0u64;
    let mut take = |n: usize| {
        let o = at;
        at = (at + 4 * n as u64).div_ceil(ALIGN) * ALIGN;
        Loc::Scratch(o)
    };
    let (sums, gs, k, kwz, a, cvec) = (take(frames * c), take(frames * cp), take(cp * cp), take(cp * c), take(c * c), take(c));
    let phi32 = take(frames * cp);
    let offset = |l: Loc, by: u64| match l {
        Loc::Weights(o) => Loc::Weights(o + by),
        Loc::Arena(o) => Loc::Arena(o + by),
        Loc::Scratch(o) => Loc::Scratch(o + by),
        Loc::Null => Loc::Null,
    };
    let gemm = |m: usize, n: usize, kk: usize, sam: usize, sak: usize, sbk: usize, sbn: usize, alpha: f32, diag: f32| -> Result<Launch, CudaError> {
        Ok(Launch::TpaviSmallGemm {
            shape: Shape::linear((m * n) as u64)?,
            a: 0,
            sam: sam as i64,
            sak: sak as i64,
            b: 0,
            sbk: sbk as i64,
            sbn: sbn as i64,
            bias: 0,
            bias_scale: 1.0,
            alpha,
            diag,
            out: 0,
            m: i(m)?,
            n: i(n)?,
            k: i(kk)?,
        })
    };
    let phi = if weights.precision == Precision::F16 {
        push(Launch::TpaviWidenF16 { shape: Shape::linear((frames * cp) as u64)?, x: 0, out: 0, n: i(frames * cp)? }, vec![phi, phi32]);
        phi32
    } else {
        phi
    };
    push(Launch::TpaviFrameSumNchw { shape: Shape::linear((frames * c) as u64)?, v: 0, hw: i(hw)?, tc: i(frames * c)?, sums: 0 }, vec![v, sums]);
    // gs_t = W_g·S_t + g_b: A = S [T, C], B(k = c, j = c') = W_g[c', c].
    push(gemm(frames, cp, c, c, 1, 1, c, 1.0, 0.0)?, vec![sums, gw, gb, gs]);
    for g in 0..t.groups {
        let f0 = (g * per) as u64;
        // K = (1/N)·Σ_f φ_fᵀ gs_f: A(i, f) = φ[f, i], B(f, j) = gs[f, j].
        push(gemm(cp, cp, per, 1, cp, cp, 1, t.inv_n, 0.0)?, vec![offset(phi, 4 * f0 * cp as u64), offset(gs, 4 * f0 * cp as u64), Loc::Null, k]);
        // K·W_z [C', C], then A = I + W_θᵀ·(K·W_z) [C, C] and c = b_θ·(K·W_z) + b_z.
        push(gemm(cp, c, cp, cp, 1, c, 1, 1.0, 0.0)?, vec![k, wz, Loc::Null, kwz]);
        push(gemm(c, c, cp, cp, 1, c, 1, 1.0, 1.0)?, vec![wt, kwz, Loc::Null, a]);
        push(gemm(1, c, cp, 0, 1, c, 1, 1.0, 0.0)?, vec![bt, kwz, bz, cvec]);
        let frame_bytes = weights.precision.bytes() * (c * hw) as u64 * f0;
        push(
            Launch::TpaviApplyNchw { shape: Shape::linear((per * hw) as u64)?, v: 0, weff: 0, cvec: 0, gamma: 0, beta: 0, out: 0, frames: i(per)?, c: i(c)?, hw: i(hw)?, eps: t.eps },
            vec![offset(v, frame_bytes), a, cvec, gamma, beta, offset(out, frame_bytes)],
        );
    }
    Ok(at)
}

/// The runner of a whole package on one [`Device`]: the audio encoder's program (if any) and the
/// segmenter's, each planned for the package's T frames (or `frames_per_call`); with
/// [`crate::backend::BackendOptions::pre_post_on_device`], also the frame and mask stages.
pub struct DeviceRunner<D: Device + Send> {
    device: D,
    name: &'static str,
    audio: Option<Program>,
    segmenter: Program,
    /// Output staging, reused across calls.
    outputs: Vec<Vec<f32>>,
    frames: Option<FrameStage>,
    masks: MaskStage,
    /// The segmenter's last call's logits `[T, K, h, w]`, still in its arena: what masks are
    /// made from. None before the first call.
    logits: Option<[usize; 4]>,
    /// Plan FLOPs of one call: audio encoder, segmenter.
    flops: [u64; 2],
}

impl<D: Device + Send> DeviceRunner<D> {
    /// Plans and loads every graph of `package` on `device`.
    pub fn prepare(package: &crate::model::ModelPackage, options: &crate::backend::BackendOptions, mut device: D) -> Result<Self, crate::backend::BackendError> {
        use crate::backend::BackendError;
        if options.tpavi_window.is_some() {
            return Err(CudaError::Plan { graph: package.segmenter().path.display().to_string(), detail: "sliding TPAVI windows run on tract only so far".into() }.into());
        }
        let t = options.frames_per_call.unwrap_or(package.frames_per_clip());
        let patches = vec![t, 1, crate::frontend::audio::PATCH_FRAMES, crate::frontend::audio::MEL_BANDS];
        let mut load = |info: &crate::model::GraphInfo, shapes: Vec<Vec<usize>>| -> Result<(Program, u64), BackendError> {
            let prepare = |e: anyhow::Error| BackendError::Prepare { backend: "cuda planner", path: info.path.clone(), detail: format!("{e:#}") };
            let model = crate::backend::tract::decluttered_model(&info.path, &shapes, crate::backend::cpu::CpuKernels::Avseg).map_err(prepare)?;
            let plan = super::plan::plan(&model, device.precision()).map_err(prepare)?;
            Ok((Program::new(&info.path.display().to_string(), &model, &plan, &mut device)?, plan.flops))
        };
        let audio = package.audio_graph().map(|info| load(info, vec![patches])).transpose()?;
        let (segmenter, segmenter_flops) = load(package.segmenter(), package.segmenter_inputs(t))?;
        let flops = [audio.as_ref().map_or(0, |a| a.1), segmenter_flops];
        let audio = audio.map(|a| a.0);
        let frames = options.pre_post_on_device.then(|| FrameStage::new(&package.manifest().vision));
        if let Some(stage) = &frames {
            // The frames input must be [T, 3, H, W] at the manifest's size for the stage to fill it.
            let want = [t, 3, stage.frame_len() / 3];
            let port = &segmenter.inputs[0].shape;
            if port.len() != 4 || [port[0], port[1], port[2] * port[3]] != want {
                return Err(CudaError::Plan { graph: segmenter.graph.clone(), detail: format!("frames input {port:?} is not the manifest's frames [T, 3, H, W]; pre-processing on the device needs it") }.into());
            }
        }
        let name = device.name();
        Ok(DeviceRunner { device, name, audio, segmenter, outputs: vec![Vec::new()], frames, masks: MaskStage::default(), logits: None, flops })
    }

    /// Checks `inputs` against `program`'s ports from `first` on.
    fn check_inputs(program: &Program, role: &'static str, first: usize, inputs: &[&AvTensor]) -> Result<(), crate::backend::BackendError> {
        for (i, (port, t)) in program.inputs.iter().skip(first).zip(inputs).enumerate() {
            if t.shape() != port.shape.as_slice() {
                return Err(crate::backend::BackendError::InputShape { graph: role, input: format!("#{}", first + i), expected: port.shape.clone(), actual: t.shape().to_vec() });
            }
        }
        Ok(())
    }

    /// Runs `program` on `inputs` and writes its first output into `out` (its buffer reused).
    fn call(device: &mut D, program: &mut Program, role: &'static str, inputs: &[&AvTensor], outputs: &mut Vec<Vec<f32>>, out: &mut AvTensor) -> Result<(), crate::backend::BackendError> {
        Self::check_inputs(program, role, 0, inputs)?;
        // On the stack: a call allocates nothing once `outputs` has grown to its largest size.
        let mut slices: heapless::Vec<&[f32], MAX_GRAPH_INPUTS> = heapless::Vec::new();
        for t in inputs {
            slices.push(t.data()).map_err(|_| CudaError::Plan { graph: program.graph.clone(), detail: format!("{} inputs, the runner takes at most {MAX_GRAPH_INPUTS}", inputs.len()) })?;
        }
        outputs.resize(program.outputs.len(), Vec::new());
        program.run(device, &slices, outputs)?;
        out.reshape_for_write(&program.outputs[0].shape).copy_from_slice(&outputs[0]);
        Ok(())
    }

    /// After a segmenter call: its logits' shape kept for masks, and non-finite logits refused.
    fn segmented(&mut self, out: &AvTensor) -> Result<(), crate::backend::BackendError> {
        self.logits = match *out.shape() {
            [t, k, h, w] => Some([t, k, h, w]),
            _ => None,
        };
        // Logits with a NaN or infinity are the graph's failure, not masks.
        if let Some((index, value)) = out.first_non_finite() {
            self.logits = None;
            return Err(crate::backend::BackendError::Output { graph: "segmenter", output: "#0".into(), detail: format!("has a non-finite value ({value}) at index {index}") });
        }
        Ok(())
    }
}

impl<D: Device + Send> crate::backend::Runner for DeviceRunner<D> {
    fn backend_name(&self) -> &'static str {
        self.name
    }

    fn encode_audio_into(&mut self, logmel: &AvTensor, out: &mut AvTensor) -> Result<bool, crate::backend::BackendError> {
        let Some(program) = self.audio.as_mut() else { return Ok(false) };
        Self::call(&mut self.device, program, "audio_encoder", &[logmel], &mut self.outputs, out)?;
        Ok(true)
    }

    fn segment_into(&mut self, frames: &AvTensor, audio: &AvTensor, out: &mut AvTensor) -> Result<(), crate::backend::BackendError> {
        self.logits = None;
        // A two-stage package's segmenter sees the frames alone.
        let inputs: &[&AvTensor] = if self.segmenter.inputs.len() == 1 { &[frames] } else { &[frames, audio] };
        Self::call(&mut self.device, &mut self.segmenter, "segmenter", inputs, &mut self.outputs, out)?;
        self.segmented(out)
    }

    fn pre_post_on_device(&self) -> bool {
        self.frames.is_some()
    }

    fn device_report(&self) -> Option<crate::backend::DeviceReport> {
        let memory = self.device.memory();
        Some(crate::backend::DeviceReport {
            audio_encoder_flops: self.flops[0],
            segmenter_flops: self.flops[1],
            memory_bytes: memory.now,
            peak_memory_bytes: memory.peak,
        })
    }

    fn segment_frames_into(&mut self, frames: &[RawFrame<'_>], audio: &AvTensor, out: &mut AvTensor) -> Result<(), crate::backend::BackendError> {
        use crate::backend::BackendError;
        self.logits = None;
        let Some(stage) = self.frames.as_mut() else {
            return Err(BackendError::Run { graph: "segmenter", detail: "this runner was prepared to pre-process frames on the host".into() });
        };
        let t = self.segmenter.inputs[0].shape[0];
        if frames.len() != t {
            return Err(BackendError::InputShape { graph: "segmenter", input: "frames".into(), expected: vec![t], actual: vec![frames.len()] });
        }
        let base = self.segmenter.input_address(0).expect("the segmenter has a frames input (checked at load)");
        let frame_bytes = (stage.frame_len() * self.segmenter.precision.bytes() as usize) as u64;
        for (i, f) in frames.iter().enumerate() {
            stage.frame_into(&mut self.device, f, base + i as u64 * frame_bytes).map_err(|e| BackendError::Run { graph: "segmenter", detail: format!("frame {i}: {e}") })?;
        }
        if self.segmenter.inputs.len() > 1 {
            Self::check_inputs(&self.segmenter, "segmenter", 1, &[audio])?;
            self.segmenter.upload_input(&mut self.device, 1, audio.data())?;
        }
        self.outputs.resize(self.segmenter.outputs.len(), Vec::new());
        self.segmenter.execute(&mut self.device, &mut self.outputs)?;
        out.reshape_for_write(&self.segmenter.outputs[0].shape).copy_from_slice(&self.outputs[0]);
        self.segmented(out)
    }

    fn frame_mask_into(&mut self, index: usize, (width, height): (u32, u32), rule: MaskRule, labels: &mut [u8], confidence: &mut [f32]) -> Result<(), crate::backend::BackendError> {
        use crate::backend::BackendError;
        let Some([t, k, h, w]) = self.logits else {
            return Err(BackendError::Run { graph: "segmenter", detail: "no logits to make a mask from: the last segmenter call failed or none was made".into() });
        };
        if index >= t {
            return Err(BackendError::Run { graph: "segmenter", detail: format!("frame {index} of a call of {t}") });
        }
        let logits = self.segmenter.output_address(0).expect("the segmenter has an output") + (index * k * h * w) as u64 * self.segmenter.precision.bytes();
        self.masks.mask_into(&mut self.device, logits, (k, h, w), (width as usize, height as usize), rule, labels, confidence)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each output index's input offsets, from the strides, against numpy's rule written out:
    /// the input index is the output's, right-aligned, with 0 on the input's unit axes.
    #[test]
    fn broadcast_strides_follow_numpy() {
        let cases: [(&[usize], &[usize], &[usize]); 4] = [
            (&[2, 3, 4], &[2, 3, 4], &[4]),
            (&[5, 1, 7, 3], &[5, 6, 7, 3], &[1, 6, 1, 1]),
            (&[1, 8, 1, 1], &[2, 8, 3, 3], &[2, 1, 3, 3]),
            (&[3], &[4, 3], &[4, 1]),
        ];
        for (a, out, b) in cases {
            // `out` is the broadcast of a and b.
            let s = broadcast(out, a, b).unwrap();
            let own = |shape: &[usize], idx: &[usize]| -> i64 {
                let pad = idx.len() - shape.len();
                let st = contiguous_strides(shape);
                (0..shape.len()).map(|d| if shape[d] == 1 { 0 } else { idx[d + pad] as i64 * st[d] }).sum()
            };
            let n: usize = out.iter().product();
            for flat in 0..n {
                let mut idx = vec![0usize; out.len()];
                let mut r = flat;
                for d in (0..out.len()).rev() {
                    idx[d] = r % out[d];
                    r /= out[d];
                }
                let ao: i64 = (0..out.len()).map(|d| idx[d] as i64 * s.a_st[d]).sum();
                let bo: i64 = (0..out.len()).map(|d| idx[d] as i64 * s.b_st[d]).sum();
                assert_eq!((ao, bo), (own(a, &idx), own(b, &idx)), "{a:?} {b:?} -> {out:?} at {idx:?}");
            }
        }
        assert!(broadcast(&[2, 3], &[2, 3], &[2]).is_none(), "3 and 2 do not broadcast");
        assert!(broadcast(&[1; 7], &[1; 7], &[1]).is_none(), "over the kernels' rank");
    }
}
