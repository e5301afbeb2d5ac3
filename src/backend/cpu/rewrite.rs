//! The load-time rewrite that puts avseg's operators into a typed tract graph.
//!
//! Runs on the typed graph after constant propagation and before tract's declutter (which would
//! turn 1×1 convolutions into einsums and split their bias off): every float NCHW convolution with
//! constant weights becomes an [`AvConv`], absorbing a following ReLU / ReLU6 (`Max`, `Min` with a
//! constant), every linear ONNX Resize over the last two axes becomes an [`AvResize`], and every 2-D
//! max pooling an [`AvMaxPool`]. Any node
//! that does not fit is left to tract, and the report says how many were taken.

use std::sync::Arc;

use tract_onnx::prelude::*;
use anyhow::Context;
use tract_onnx::tract_core::internal::{bail, ensure};
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat, MaxPool, PoolSpec};
use tract_onnx::tract_core::ops::nn::DataFormat;
use tract_onnx_opl::resize::{CoordTransform, Resize as OnnxResize};
use tract_onnx::tract_core::ops::nn::resize::Interpolator;

use tract_onnx::tract_core::ops::array::Gather;
use tract_onnx::tract_core::ops::change_axes::AxisOp;
use tract_onnx::tract_core::ops::einsum::EinSum;
use tract_onnx::tract_core::ops::nn::{Reduce, Reducer};

use super::binary::{AvBinary, BinKind};
use super::gather_sum::AvGatherSum;
use super::matmul::{strides, AvMatMul, BatchAxis, Bias};
use super::tpavi::AvTpavi;
use super::conv::{AvConv, Clamp, ConvGeometry, ConvKind, Layout};
use super::maxpool::AvMaxPool;
use super::resize::{AvResize, LinearAxis};

/// What [`rewrite`] replaced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RewriteReport {
    /// Convolutions now run by avseg's kernels.
    pub convs: usize,
    /// ReLU / ReLU6 nodes folded into those convolutions.
    pub clamps: usize,
    /// Resize nodes now run by avseg's kernel.
    pub resizes: usize,
    /// Max pooling nodes now run by avseg's kernel.
    pub pools: usize,
    /// Convolution, Resize and max pooling nodes left to tract.
    pub left_to_tract: usize,
    /// Broadcasting element-wise nodes now run by avseg's kernel.
    pub binaries: usize,
    /// Tensors between a pointwise and a depthwise convolution kept in NHWC.
    pub nhwc_links: usize,
    /// TPAVI blocks now one [`AvTpavi`] each (the fold of spec §6.6).
    pub tpavi_blocks: usize,
    /// Matrix products (ONNX MatMul, Gemm) now run by [`AvMatMul`].
    pub matmuls: usize,
    /// Bias adds and clamps folded into those products.
    pub matmul_epilogues: usize,
    /// Gather → multiply → sum chains (deformable attention sampling) now one [`AvGatherSum`].
    pub gather_sums: usize,
}

/// Rewrites `model` in place. `model` must be typed, with concrete input shapes, and its constants
/// propagated (`TypedModel::prop_consts`).
pub fn rewrite(model: &mut TypedModel) -> TractResult<RewriteReport> {
    let mut report = RewriteReport::default();
    // TPAVI blocks first: they are matched by the exporter's node names, before the other passes
    // replace the nodes they are made of.
    for id in model.eval_order()? {
        match tpavi_patch(model, id) {
            Ok(Some(patch)) => {
                patch.apply(model)?;
                report.tpavi_blocks += 1;
            }
            Ok(None) => {}
            Err(e) => log::debug!("TPAVI block at {}: left to tract ({e:#})", model.node(id).name),
        }
    }
    for id in model.eval_order()? {
        let node = model.node(id);
        if node.op_as::<Conv>().is_some() {
            match conv_patch(model, id)? {
                Some((patch, clamps)) => {
                    patch.apply(model)?;
                    report.convs += 1;
                    report.clamps += clamps;
                }
                None => report.left_to_tract += 1,
            }
        } else if node.op_as::<MaxPool>().is_some() {
            match maxpool_patch(model, id)? {
                Some(patch) => {
                    patch.apply(model)?;
                    report.pools += 1;
                }
                None => report.left_to_tract += 1,
            }
        } else if node.op_as::<OnnxResize>().is_some() {
            match resize_patch(model, id)? {
                Some(patch) => {
                    patch.apply(model)?;
                    report.resizes += 1;
                }
                None => report.left_to_tract += 1,
            }
        }
    }
    for id in model.eval_order()? {
        if let Some(patch) = gather_sum_patch(model, id)? {
            patch.apply(model)?;
            report.gather_sums += 1;
        }
    }
    for id in model.eval_order()? {
        if let Some((patch, fused)) = matmul_patch(model, id)? {
            patch.apply(model)?;
            report.matmuls += 1;
            report.matmul_epilogues += fused;
        }
    }
    for id in model.eval_order()? {
        if let Some(patch) = binary_patch(model, id)? {
            patch.apply(model)?;
            report.binaries += 1;
        }
    }
    report.nhwc_links = choose_layouts(model)?;
    Ok(report)
}

/// Switches the tensors between a pointwise and a depthwise [`AvConv`] to NHWC when no other node
/// reads them: the depthwise kernel then needs no transposes, and the pointwise GEMM only changes
/// strides. So does a depthwise convolution's input made by an im2col convolution of one group
/// (MobileNet and EfficientNet stems): its GEMM writes NHWC through strides too. Returns how many
/// tensors were switched.
fn choose_layouts(model: &mut TypedModel) -> TractResult<usize> {
    let kind = |model: &TypedModel, id: usize| model.node(id).op_as::<AvConv>().map(|c| c.geo.kind());
    let writes_nhwc = |model: &TypedModel, id: usize| {
        model.node(id).op_as::<AvConv>().is_some_and(|c| match c.geo.kind() {
            ConvKind::Pointwise => true,
            ConvKind::Im2col => c.geo.groups == 1,
            _ => false,
        })
    };
    // The outlet's only reader, when nothing else (not even the model's outputs) reads it.
    let sole_reader = |model: &TypedModel, outlet: OutletId| -> TractResult<Option<usize>> {
        let succ = model.outlet_successors(outlet);
        Ok((succ.len() == 1 && !model.output_outlets()?.contains(&outlet)).then(|| succ[0].node))
    };
    let mut links = 0;
    for id in model.eval_order()? {
        if kind(model, id) != Some(ConvKind::Depthwise) {
            continue;
        }
        let producer = model.node(id).inputs[0];
        if producer.slot == 0
            && writes_nhwc(model, producer.node)
            && sole_reader(model, producer)? == Some(id)
        {
            set_layout(model, producer.node, None, Some(Layout::Nhwc))?;
            set_layout(model, id, Some(Layout::Nhwc), None)?;
            links += 1;
        }
        if let Some(reader) = sole_reader(model, OutletId::new(id, 0))? {
            if kind(model, reader) == Some(ConvKind::Pointwise) {
                set_layout(model, id, None, Some(Layout::Nhwc))?;
                set_layout(model, reader, Some(Layout::Nhwc), None)?;
                links += 1;
            }
        }
    }
    Ok(links)
}

fn set_layout(model: &mut TypedModel, id: usize, input: Option<Layout>, output: Option<Layout>) -> TractResult<()> {
    let node = model.node_mut(id);
    let Some(op) = node.op_as_mut::<AvConv>() else { tract_onnx::tract_core::internal::bail!("node {id} is not an AvConv") };
    if let Some(l) = input {
        op.input = l;
    }
    if let Some(l) = output {
        op.output = l;
    }
    let shape = op.output_shape();
    model.set_outlet_fact(OutletId::new(id, 0), f32::fact(shape))
}

fn concrete(fact: &TypedFact) -> Option<Vec<usize>> {
    fact.shape.as_concrete().map(|s| s.to_vec())
}

/// A constant tensor's values as f32, when the outlet is constant.
fn const_f32(model: &TypedModel, outlet: OutletId) -> TractResult<Option<Vec<f32>>> {
    let Some(k) = model.outlet_fact(outlet)?.konst.clone() else { return Ok(None) };
    if !k.datum_type().is_float() {
        return Ok(None);
    }
    let k = k.cast_to::<f32>()?;
    Ok(Some(k.try_as_plain_ram()?.as_slice::<f32>()?.to_vec()))
}

fn conv_patch(model: &TypedModel, id: usize) -> TractResult<Option<(TypedModelPatch, usize)>> {
    let node = model.node(id);
    let conv = node.op_as::<Conv>().unwrap();
    let spec = &conv.pool_spec;
    if conv.q_params.is_some()
        || spec.data_format != DataFormat::NCHW
        || conv.kernel_fmt != KernelFormat::OIHW
        || spec.kernel_shape.len() != 2
        || !(2..=3).contains(&node.inputs.len())
    {
        return Ok(None);
    }
    let input = model.outlet_fact(node.inputs[0])?;
    let Some(ishape) = concrete(input) else { return Ok(None) };
    if input.datum_type != f32::datum_type() || ishape.len() != 4 {
        return Ok(None);
    }
    let Some(weights) = const_f32(model, node.inputs[1])? else { return Ok(None) };
    let (n, c_in, in_h, in_w) = (ishape[0], ishape[1], ishape[2], ishape[3]);
    let (c_out, groups) = (spec.output_channels, conv.group);
    let (kh, kw) = (spec.kernel_shape[0], spec.kernel_shape[1]);
    if groups == 0 || c_in != spec.input_channels || c_in % groups != 0 || c_out % groups != 0 {
        return Ok(None);
    }
    if weights.len() != c_out * (c_in / groups) * kh * kw {
        return Ok(None);
    }
    let bias = match node.inputs.get(2) {
        None => vec![0.0; c_out],
        Some(&b) => match const_f32(model, b)? {
            Some(v) if v.len() == c_out => v,
            Some(v) if v.len() == 1 => vec![v[0]; c_out],
            _ => return Ok(None),
        },
    };
    let geo = window_geometry(spec, [n, c_in, c_out, groups], [in_h, in_w]);
    if geo.out_h == 0 || geo.out_w == 0 || concrete(&node.outputs[0].fact) != Some(vec![n, c_out, geo.out_h, geo.out_w]) {
        return Ok(None);
    }

    // Fold a following Max(x, c) / Min(x, c) chain with scalar constants: ReLU, ReLU6, Clip.
    // max(min(x, hi), lo) and min(max(x, lo), hi) differ only when lo > hi; keep tract's order then.
    let Some(chain) = clamp_chain(model, OutletId::new(id, 0), ClampOps::Tract)? else { return Ok(None) };

    let op = AvConv::new(geo, weights, bias, chain.clamp);
    let mut patch = TypedModelPatch::new(format!("avseg conv {}", node.name));
    let x = patch.tap_model(model, node.inputs[0])?;
    let y = patch.wire_node(&node.name, op, &[x])?[0];
    patch.shunt_outside(model, chain.last, y)?;
    Ok(Some((patch, chain.nodes.len())))
}

/// The concrete geometry of a 2-D window (a convolution's or a pooling's) from tract's `spec`,
/// for `[n, c_in, c_out, groups]` and an input of `[in_h, in_w]`.
fn window_geometry(spec: &PoolSpec, [n, c_in, c_out, groups]: [usize; 4], [in_h, in_w]: [usize; 2]) -> ConvGeometry {
    let padding = spec.computed_padding(&[in_h, in_w]);
    ConvGeometry {
        n,
        c_in,
        c_out,
        groups,
        kh: spec.kernel_shape[0],
        kw: spec.kernel_shape[1],
        stride_h: spec.stride(0),
        stride_w: spec.stride(1),
        dil_h: spec.dilation(0),
        dil_w: spec.dilation(1),
        pad_top: padding[0].pad_before,
        pad_left: padding[1].pad_before,
        in_h,
        in_w,
        out_h: padding[0].convoluted,
        out_w: padding[1].convoluted,
    }
}

/// A 2-D NCHW f32 max pooling without index output, as [`AvMaxPool`].
fn maxpool_patch(model: &TypedModel, id: usize) -> TractResult<Option<TypedModelPatch>> {
    let node = model.node(id);
    let pool = node.op_as::<MaxPool>().unwrap();
    let spec = &pool.pool_spec;
    if pool.with_index_outputs.is_some() || spec.data_format != DataFormat::NCHW || spec.kernel_shape.len() != 2 {
        return Ok(None);
    }
    let input = model.outlet_fact(node.inputs[0])?;
    let Some(ishape) = concrete(input) else { return Ok(None) };
    if input.datum_type != f32::datum_type() || ishape.len() != 4 {
        return Ok(None);
    }
    let (n, c, in_h, in_w) = (ishape[0], ishape[1], ishape[2], ishape[3]);
    // One group per channel: the window walks each plane alone, as a depthwise convolution's.
    let geo = window_geometry(spec, [n, c, c, c], [in_h, in_w]);
    if !geo.pools_cleanly() || geo.out_h == 0 || geo.out_w == 0 || concrete(&node.outputs[0].fact) != Some(vec![n, c, geo.out_h, geo.out_w]) {
        return Ok(None);
    }
    let mut patch = TypedModelPatch::new(format!("avseg max pool {}", node.name));
    let x = patch.tap_model(model, node.inputs[0])?;
    let y = patch.wire_node(&node.name, AvMaxPool { geo }, &[x])?[0];
    patch.shunt_outside(model, OutletId::new(id, 0), y)?;
    Ok(Some(patch))
}

/// The Max/Min-against-a-constant nodes that follow one another after `outlet` ([`clamp_successor`]).
pub(crate) struct ClampChain {
    /// Their bounds combined: the largest lower bound and the smallest upper bound.
    pub clamp: Clamp,
    /// The chain's nodes, in order (none when nothing clamps `outlet`).
    pub nodes: Vec<usize>,
    /// The chain's last outlet (`outlet` itself when it is empty).
    pub last: OutletId,
}

/// The clamp chain after `outlet`, or None when its bounds cross (lo > hi), where applying them
/// as one clamp (max, then min) would not be what the nodes compute.
pub(crate) fn clamp_chain(model: &TypedModel, outlet: OutletId, ops: ClampOps) -> TractResult<Option<ClampChain>> {
    let mut chain = ClampChain { clamp: Clamp::NONE, nodes: Vec::new(), last: outlet };
    while let Some((next, bound)) = clamp_successor(model, chain.last, ops)? {
        match bound {
            Bound::Lo(v) => chain.clamp.lo = chain.clamp.lo.max(v),
            Bound::Hi(v) => chain.clamp.hi = chain.clamp.hi.min(v),
        }
        chain.nodes.push(next);
        chain.last = OutletId::new(next, 0);
    }
    Ok((chain.clamp.lo <= chain.clamp.hi).then_some(chain))
}

enum Bound {
    Lo(f32),
    Hi(f32),
}

/// Which operators [`clamp_successor`] recognises as the clamp.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClampOps {
    /// tract's Max and Min only: what the CPU rewrite folds (it runs before any avseg element-wise
    /// operator exists, and its folding is measured and tested on that).
    Tract,
    /// tract's, and avseg's `AvBinary` Max and Min, which the rewrite has put in their place by
    /// the time the CUDA planner reads the graph.
    TractOrAvseg,
}

/// The single consumer of `outlet` when it is a Max or Min (of `ops`) against one constant value,
/// with `outlet`'s shape: its node and the bound it sets.
fn clamp_successor(model: &TypedModel, outlet: OutletId, ops: ClampOps) -> TractResult<Option<(usize, Bound)>> {
    let succ = model.outlet_successors(outlet);
    if succ.len() != 1 || model.output_outlets()?.contains(&outlet) {
        return Ok(None);
    }
    let next = model.node(succ[0].node);
    let kind = if let Some(b) = next.op_as::<TypedBinOp>() {
        if b.1.is_some() {
            return Ok(None);
        }
        BinKind::from_name(b.0.name().as_ref())
    } else if ops == ClampOps::TractOrAvseg {
        next.op_as::<AvBinary>().map(|b| b.kind)
    } else {
        None
    };
    if next.inputs.len() != 2 || next.outputs.len() != 1 || next.outputs[0].fact.shape != model.outlet_fact(outlet)?.shape {
        return Ok(None);
    }
    let other = next.inputs[1 - succ[0].slot];
    let Some(values) = const_f32(model, other)? else { return Ok(None) };
    let Some(&v) = values.first() else { return Ok(None) };
    if values.iter().any(|x| *x != v) || v.is_nan() {
        return Ok(None);
    }
    Ok(match kind {
        Some(BinKind::Max) => Some((next.id, Bound::Lo(v))),
        Some(BinKind::Min) => Some((next.id, Bound::Hi(v))),
        _ => None,
    })
}

/// Element-wise nodes smaller than this are left to tract: their cost is the call, not the loop.
const MIN_BINARY_LEN: usize = 4096;
/// Inner rows shorter than this are left to tract.
const MIN_BINARY_ROW: usize = 16;

fn binary_patch(model: &TypedModel, id: usize) -> TractResult<Option<TypedModelPatch>> {
    let node = model.node(id);
    let Some(bin) = node.op_as::<TypedBinOp>() else { return Ok(None) };
    let Some(kind) = BinKind::from_name(bin.0.name()) else { return Ok(None) };
    if node.inputs.len() != 2 || bin.1.is_some() {
        return Ok(None);
    }
    let (fa, fb) = (model.outlet_fact(node.inputs[0])?, model.outlet_fact(node.inputs[1])?);
    let (Some(sa), Some(sb), Some(so)) = (concrete(fa), concrete(fb), concrete(&node.outputs[0].fact)) else { return Ok(None) };
    if fa.datum_type != f32::datum_type() || fb.datum_type != f32::datum_type() || node.outputs[0].fact.datum_type != f32::datum_type() {
        return Ok(None);
    }
    // tract fuses a product into the reduction that consumes it (an einsum, never materialising
    // the product): leave those to it.
    let feeds_reduction = model.outlet_successors(OutletId::new(id, 0)).iter().any(|s| model.node(s.node).op().name().starts_with("Reduce"));
    if feeds_reduction {
        return Ok(None);
    }
    // Only image tensors (rank 4: the TPAVI blocks' LayerNorm and residuals, the decoders' adds).
    // On the rank-3 token tensors of transformers tract's declutter moves axes and fuses products
    // into matrix products, and was measured faster than this kernel (AVSegFormer-R50: 4.8 s per
    // clip without it, 6.2 s with it).
    if so.len() != 4 {
        return Ok(None);
    }
    let Some(op) = AvBinary::plan(kind, &sa, &sb) else { return Ok(None) };
    // Short rows spend their time on row starts, not arithmetic: tract's own kernels (after its
    // declutter has moved axes) do better there.
    if op.out_len() < MIN_BINARY_LEN || op.row_len() < MIN_BINARY_ROW || so.iter().product::<usize>() != op.out_len() {
        return Ok(None);
    }
    let mut patch = TypedModelPatch::new(format!("avseg binary {}", node.name));
    let a = patch.tap_model(model, node.inputs[0])?;
    let b = patch.tap_model(model, node.inputs[1])?;
    let y = patch.wire_node(&node.name, op, &[a, b])?[0];
    patch.shunt_outside(model, OutletId::new(id, 0), y)?;
    Ok(Some(patch))
}

/// `ReduceSum(Gather(table, idx) reshaped · weights)` over the gathered rows' axis, as
/// [`AvGatherSum`] describes it. Every intermediate tensor must have this chain as its only reader.
fn gather_sum_patch(model: &TypedModel, id: usize) -> TractResult<Option<TypedModelPatch>> {
    let node = model.node(id);
    let Some(reduce) = node.op_as::<Reduce>() else { return Ok(None) };
    if reduce.reducer != Reducer::Sum || reduce.axes.len() != 1 || node.inputs.len() != 1 {
        return Ok(None);
    }
    let outputs = model.output_outlets()?.to_vec();
    let private = |outlet: OutletId| model.outlet_successors(outlet).len() == 1 && !outputs.contains(&outlet);
    let mul = model.node(node.inputs[0].node);
    let Some(bin) = mul.op_as::<TypedBinOp>() else { return Ok(None) };
    if bin.0.name() != "Mul" || bin.1.is_some() || mul.inputs.len() != 2 || !private(node.inputs[0]) {
        return Ok(None);
    }
    let Some(x) = concrete(&mul.outputs[0].fact) else { return Ok(None) };
    let rank = x.len();
    if rank < 3 || reduce.axes[0] != rank - 2 || mul.outputs[0].fact.datum_type != f32::datum_type() {
        return Ok(None);
    }
    // One operand comes from a Gather through reshapes only; the other holds the weights.
    let gathered_from = |mut outlet: OutletId| -> Option<usize> {
        loop {
            if !private(outlet) {
                return None;
            }
            let n = model.node(outlet.node);
            if n.op_is::<Gather>() {
                return Some(n.id);
            }
            if !n.op_is::<AxisOp>() || n.inputs.len() != 1 {
                return None;
            }
            outlet = n.inputs[0];
        }
    };
    let Some((gather_id, w_slot)) = (0..2).find_map(|slot| gathered_from(mul.inputs[slot]).map(|g| (g, 1 - slot))) else {
        return Ok(None);
    };
    let gather = model.node(gather_id);
    if gather.op_as::<Gather>().unwrap().axis != 0 || gather.inputs.len() != 2 {
        return Ok(None);
    }
    let (table_f, idx_f, w_f) =
        (model.outlet_fact(gather.inputs[0])?, model.outlet_fact(gather.inputs[1])?, model.outlet_fact(mul.inputs[w_slot])?);
    let (Some(t), Some(ix), Some(w)) = (concrete(table_f), concrete(idx_f), concrete(w_f)) else { return Ok(None) };
    if table_f.datum_type != f32::datum_type() || w_f.datum_type != f32::datum_type() || t.len() != 2 || ix.is_empty() {
        return Ok(None);
    }
    if !matches!(idx_f.datum_type, DatumType::I64 | DatumType::I32) {
        return Ok(None);
    }
    let (rows, row_len) = (t[0], t[1]);
    let points = *ix.last().unwrap();
    let batch: usize = ix[..ix.len() - 1].iter().product();
    // The reshaped operand is [B…, P·s, D]: the same memory as the gathered [B…, P, E].
    let depth = x[rank - 1];
    if depth == 0 || row_len % depth != 0 || x[..rank - 2].iter().product::<usize>() != batch {
        return Ok(None);
    }
    let corners = row_len / depth;
    if x[rank - 2] != points * corners {
        return Ok(None);
    }
    // The weights: one per corner, broadcast along D.
    let mut want_w = x.clone();
    want_w[rank - 1] = 1;
    if w != want_w {
        return Ok(None);
    }
    let Some(out_shape) = concrete(&node.outputs[0].fact) else { return Ok(None) };
    let op = AvGatherSum { rows, row_len, points, corners, batch, depth, out_shape };
    let mut patch = TypedModelPatch::new(format!("avseg gather-sum {}", node.name));
    let table = patch.tap_model(model, gather.inputs[0])?;
    let idx = patch.tap_model(model, gather.inputs[1])?;
    let weights = patch.tap_model(model, mul.inputs[w_slot])?;
    let y = patch.wire_node(&node.name, op, &[table, idx, weights])?[0];
    patch.shunt_outside(model, OutletId::new(id, 0), y)?;
    Ok(Some(patch))
}

/// Where one einsum axis sits in an operand or the output: its position, length and element
/// stride there.
#[derive(Clone, Copy, Debug)]
struct AxisAt {
    pos: usize,
    len: usize,
    stride: usize,
}

/// One einsum axis as a matrix product reads it: where it sits in `a`, `b` and the output.
#[derive(Clone, Copy, Debug)]
struct ProductAxis {
    a: Option<AxisAt>,
    b: Option<AxisAt>,
    out: Option<AxisAt>,
}

/// A two-operand f32 einsum's concrete shapes and its axes (each at most once per side): None
/// for any other node.
fn einsum_axes(model: &TypedModel, node: &TypedNode) -> TractResult<Option<([Vec<usize>; 3], Vec<ProductAxis>)>> {
    let Some(einsum) = node.op_as::<EinSum>() else { return Ok(None) };
    if einsum.q_params.is_some() || einsum.operating_dt != f32::datum_type() || node.inputs.len() != 2 {
        return Ok(None);
    }
    let (fa, fb) = (model.outlet_fact(node.inputs[0])?, model.outlet_fact(node.inputs[1])?);
    let (Some(sa), Some(sb), Some(so)) = (concrete(fa), concrete(fb), concrete(&node.outputs[0].fact)) else { return Ok(None) };
    if fa.datum_type != f32::datum_type() || fb.datum_type != f32::datum_type() || node.outputs[0].fact.datum_type != f32::datum_type() {
        return Ok(None);
    }
    let (ta, tb, to) = (strides(&sa), strides(&sb), strides(&so));
    let at = |p: &[usize], shape: &[usize], st: &[usize]| p.first().map(|&pos| AxisAt { pos, len: shape[pos], stride: st[pos] });
    let mut axes = Vec::new();
    for axis in einsum.axes.iter_all_axes() {
        let (ia, ib, io) = (&axis.inputs[0], &axis.inputs[1], &axis.outputs[0]);
        if ia.len() > 1 || ib.len() > 1 || io.len() > 1 {
            return Ok(None);
        }
        axes.push(ProductAxis { a: at(ia, &sa, &ta), b: at(ib, &sb, &tb), out: at(io, &so, &to) });
    }
    Ok(Some(([sa, sb, so], axes)))
}

/// The batched matrix product of einsum axes (one summed axis `k`, at most one row axis `m` only
/// in `a`, at most one column axis `n` only in `b`, the others batch axes of the output), with the
/// output positions of its row and column axes; None when the axes do not make one.
fn product_of_axes(axes: &[ProductAxis], shapes: [Vec<usize>; 3]) -> Option<(AvMatMul, Option<usize>, Option<usize>)> {
    let [sa, sb, so] = shapes;
    let (mut m, mut n, mut k): (Option<(AxisAt, AxisAt)>, Option<(AxisAt, AxisAt)>, Option<(AxisAt, AxisAt)>) = (None, None, None);
    let mut batch = Vec::new();
    for axis in axes {
        match (axis.a, axis.b, axis.out) {
            (Some(a), Some(b), None) if k.is_none() && a.len == b.len => k = Some((a, b)),
            // Of several axes only in `a` (or only in `b`), the innermost is the row (column) axis
            // and the others are batch axes, which `merge_batches` folds back into it where the
            // strides allow (`amk,kn->amn`: one product of a·m rows).
            (Some(a), None, Some(o)) if a.len == o.len && m.is_none_or(|(qa, _)| a.stride < qa.stride) => {
                if let Some((qa, qo)) = m.replace((a, o)) {
                    batch.push(BatchAxis { len: qo.len, a: qa.stride, b: 0, out: qo.stride });
                }
            }
            (None, Some(b), Some(o)) if b.len == o.len && n.is_none_or(|(qb, _)| b.stride < qb.stride) => {
                if let Some((qb, qo)) = n.replace((b, o)) {
                    batch.push(BatchAxis { len: qo.len, a: 0, b: qb.stride, out: qo.stride });
                }
            }
            (pa, pb, Some(o)) => {
                // A batch axis: an operand without it, or with length 1, is broadcast along it.
                let along = |p: Option<AxisAt>| -> Option<usize> {
                    match p {
                        None => Some(0),
                        Some(p) if p.len == o.len => Some(p.stride),
                        Some(p) if p.len == 1 => Some(0),
                        Some(_) => None,
                    }
                };
                batch.push(BatchAxis { len: o.len, a: along(pa)?, b: along(pb)?, out: o.stride });
            }
            // Axes of length 1 that only one side has are harmless; anything else is not a product.
            (Some(a), None, None) if a.len == 1 => {}
            (None, Some(b), None) if b.len == 1 => {}
            _ => return None,
        }
    }
    let (ka, kb) = k?;
    let (m_len, a_rs, out_rs) = m.map_or((1, 0, 0), |(a, o)| (a.len, a.stride, o.stride));
    let (n_len, b_cs, out_cs) = n.map_or((1, 0, 0), |(b, o)| (b.len, b.stride, o.stride));
    if ka.len == 0 || m_len * n_len == 0 {
        return None;
    }
    let mut op = AvMatMul {
        m: m_len,
        n: n_len,
        k: ka.len,
        a_strides: (a_rs, ka.stride),
        b_strides: (kb.stride, b_cs),
        out_strides: (out_rs, out_cs),
        batch,
        bias: Bias::None,
        clamp: Clamp::NONE,
        a_shape: sa,
        b_shape: sb,
        out_shape: so,
    };
    op.merge_batches();
    Some((op, m.map(|(_, o)| o.pos), n.map(|(_, o)| o.pos)))
}

/// The batched matrix product an einsum node computes (see [`matmul_patch`]), without its bias or
/// clamp, with the output axes of its rows and columns: None when the einsum is not one. Also the
/// CUDA runner's reading of the einsums the CPU rewrite leaves to tract.
pub(crate) fn einsum_as_matmul(model: &TypedModel, node: &TypedNode) -> TractResult<Option<(AvMatMul, Option<usize>, Option<usize>)>> {
    let Some((shapes, axes)) = einsum_axes(model, node)? else { return Ok(None) };
    Ok(product_of_axes(&axes, shapes))
}

/// How a constant operand is to be stored for [`einsum_as_matmul_permuting_constant`]'s product:
/// axis `j` of the stored tensor is axis `perm[j]` of the graph's constant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PermutedConstant {
    /// Which einsum input (0 or 1) is the constant.
    pub operand: usize,
    pub perm: Vec<usize>,
}

/// An einsum that sums over several axes, one operand a constant: VGGish's first fully connected
/// layer at ten frames, `mkba,nbak->mn`, where tract keeps the flatten inside the product and the
/// summed axes run (k, b, a) in the activations but (b, a, k) in the weights, so no one stride
/// walks both. When the activations' summed axes form one block (a single stride walks them), the
/// constant stored with its other axes first and its summed axes last, in the activations' order,
/// makes it one product with a single summed axis of their combined length. Returns that product
/// (its shapes and strides those of the stored constant) and the permutation to store the constant
/// with; None for any other einsum.
pub(crate) fn einsum_as_matmul_permuting_constant(model: &TypedModel, node: &TypedNode) -> TractResult<Option<(AvMatMul, PermutedConstant)>> {
    let Some((shapes, axes)) = einsum_axes(model, node)? else { return Ok(None) };
    let is_const = |i: usize| model.outlet_fact(node.inputs[i]).map(|f| f.konst.is_some());
    let operand = match (is_const(0)?, is_const(1)?) {
        (false, true) => 1,
        (true, false) => 0,
        _ => return Ok(None),
    };
    let side = |ax: &ProductAxis, i: usize| if i == 0 { ax.a } else { ax.b };
    let mut summed: Vec<(AxisAt, AxisAt)> = Vec::new(); // (in the activations, in the constant)
    for ax in &axes {
        if let (Some(a), Some(b), None) = (ax.a, ax.b, ax.out) {
            if a.len != b.len {
                return Ok(None);
            }
            summed.push(if operand == 1 { (a, b) } else { (b, a) });
        }
    }
    if summed.len() < 2 {
        return Ok(None);
    }
    // The activations' summed axes, outermost first, must tile one block.
    summed.sort_by(|x, y| y.0.stride.cmp(&x.0.stride));
    if summed.windows(2).any(|w| w[0].0.stride != w[1].0.stride * w[1].0.len) {
        return Ok(None);
    }
    let const_shape = &shapes[operand];
    let summed_pos: Vec<usize> = summed.iter().map(|(_, c)| c.pos).collect();
    let perm: Vec<usize> = (0..const_shape.len()).filter(|p| !summed_pos.contains(p)).chain(summed_pos.iter().copied()).collect();
    let stored_shape: Vec<usize> = perm.iter().map(|&p| const_shape[p]).collect();
    let stored_strides = strides(&stored_shape);
    // Stride, in the stored constant, of the graph constant's axis `p`.
    let stride_of = |p: usize| stored_strides[perm.iter().position(|&q| q == p).unwrap_or(0)];
    let k_len: usize = summed.iter().map(|(x, _)| x.len).product();
    let x_inner = summed[summed.len() - 1].0;
    let merged_x = AxisAt { pos: x_inner.pos, len: k_len, stride: x_inner.stride };
    let merged_c = AxisAt { pos: const_shape.len() - 1, len: k_len, stride: 1 };
    let mut merged = vec![if operand == 1 {
        ProductAxis { a: Some(merged_x), b: Some(merged_c), out: None }
    } else {
        ProductAxis { a: Some(merged_c), b: Some(merged_x), out: None }
    }];
    for ax in &axes {
        if ax.a.is_some() && ax.b.is_some() && ax.out.is_none() {
            continue;
        }
        let mut ax = *ax;
        let c = side(&ax, operand).map(|c| AxisAt { stride: stride_of(c.pos), ..c });
        if operand == 1 {
            ax.b = c;
        } else {
            ax.a = c;
        }
        merged.push(ax);
    }
    let mut shapes = shapes;
    shapes[operand] = stored_shape;
    Ok(product_of_axes(&merged, shapes).map(|(op, _, _)| (op, PermutedConstant { operand, perm })))
}

/// A two-operand f32 einsum that is a batched matrix product (one summed axis `k`, at most one
/// row axis `m` only in `a`, at most one column axis `n` only in `b`, every other axis a batch axis
/// of the output), with a following constant bias add and clamp chain folded in.
fn matmul_patch(model: &TypedModel, id: usize) -> TractResult<Option<(TypedModelPatch, usize)>> {
    let node = model.node(id);
    let Some((mut op, axis_m, axis_n)) = einsum_as_matmul(model, node)? else { return Ok(None) };
    let so = op.out_shape.clone();
    // A constant operand against a few rows or columns (VGGish's fully connected layers on five
    // frames) is a memory-bound pass over the weights. The gemm crate would re-pack them on every
    // call (measured 47 ms against tract's 20 ms per clip, tract packing once at load, for about
    // 1 s of load time): take these only where the few-row kernel reads the weights in place.
    let b_const = model.outlet_fact(node.inputs[1])?.konst.is_some();
    let a_const = model.outlet_fact(node.inputs[0])?.konst.is_some();
    if (b_const && op.m < MIN_PRODUCT_SIDE && op.skinny().is_none()) || (a_const && op.n < MIN_PRODUCT_SIDE) {
        return Ok(None);
    }

    // A following Add of a constant that varies along the rows or the columns only.
    let mut last = OutletId::new(id, 0);
    let mut fused = 0;
    if let Some((add, values, along)) = bias_successor(model, last, &so)? {
        let bias = match along {
            None => Some(Bias::Cols(Arc::new(vec![values[0]; op.n]))),
            Some(ax) if Some(ax) == axis_n && op.n == so[ax] => Some(Bias::Cols(Arc::new(values))),
            Some(ax) if Some(ax) == axis_m && op.m == so[ax] => Some(Bias::Rows(Arc::new(values))),
            _ => None,
        };
        if let Some(bias) = bias {
            op.bias = bias;
            last = OutletId::new(add, 0);
            fused += 1;
        }
    }
    let Some(chain) = clamp_chain(model, last, ClampOps::Tract)? else { return Ok(None) };
    op.clamp.lo = op.clamp.lo.max(chain.clamp.lo);
    op.clamp.hi = op.clamp.hi.min(chain.clamp.hi);
    if op.clamp.lo > op.clamp.hi {
        return Ok(None);
    }
    let last = chain.last;
    fused += chain.nodes.len();
    let mut patch = TypedModelPatch::new(format!("avseg matmul {}", node.name));
    let a = patch.tap_model(model, node.inputs[0])?;
    let b = patch.tap_model(model, node.inputs[1])?;
    let y = patch.wire_node(&node.name, op, &[a, b])?[0];
    patch.shunt_outside(model, last, y)?;
    Ok(Some((patch, fused)))
}

/// Below this many rows against constant weights (or columns against a constant left side), a
/// product stays with tract.
const MIN_PRODUCT_SIDE: usize = 64;

/// The single consumer of `outlet` when it adds a constant of the same rank that is 1 along every
/// axis but at most one: the Add's id, the constant's values, and that axis (None for a scalar).
fn bias_successor(model: &TypedModel, outlet: OutletId, shape: &[usize]) -> TractResult<Option<(usize, Vec<f32>, Option<usize>)>> {
    let succ = model.outlet_successors(outlet);
    if succ.len() != 1 || model.output_outlets()?.contains(&outlet) {
        return Ok(None);
    }
    let next = model.node(succ[0].node);
    let Some(bin) = next.op_as::<TypedBinOp>() else { return Ok(None) };
    if bin.0.name() != "Add" || bin.1.is_some() || next.inputs.len() != 2 || concrete(&next.outputs[0].fact).as_deref() != Some(shape) {
        return Ok(None);
    }
    let other = next.inputs[1 - succ[0].slot];
    let Some(cshape) = concrete(model.outlet_fact(other)?) else { return Ok(None) };
    let Some(values) = const_f32(model, other)? else { return Ok(None) };
    if cshape.len() != shape.len() {
        return Ok(None);
    }
    let varying: Vec<usize> = (0..shape.len()).filter(|&i| cshape[i] != 1).collect();
    match varying[..] {
        [] => Ok(Some((next.id, values, None))),
        [ax] if cshape[ax] == shape[ax] => Ok(Some((next.id, values, Some(ax)))),
        _ => Ok(None),
    }
}

/// A TPAVI block as avseg's exporter writes it (`tools/avseg_export/tpavi.py`, node names
/// `tpavi_bK.*`), from the NCHW → NHWC move of its input to the NHWC → NCHW move of its output,
/// replaced by one [`AvTpavi`]. The node at `id` must be the output move; every weight is read
/// from the constant operand of the node that uses it, and every shape is checked, so a graph
/// that differs in any way stays with tract (the error says where).
fn tpavi_patch(model: &TypedModel, id: usize) -> TractResult<Option<TypedModelPatch>> {
    let out = model.node(id);
    let Some(p) = out.name.strip_suffix(".nchw.MoveAxis-0") else { return Ok(None) };
    let node = |suffix: &str| model.node_by_name(format!("{p}{suffix}"));
    // The constant operand of a two-input node, and where the other operand comes from.
    let konst = |suffix: &str| -> TractResult<(Vec<usize>, Vec<f32>)> {
        let n = node(suffix)?;
        ensure!(n.inputs.len() == 2, "{}: not a binary node", n.name);
        for &i in &n.inputs {
            if let (Some(shape), Some(values)) = (concrete(model.outlet_fact(i)?), const_f32(model, i)?) {
                return Ok((shape, values));
            }
        }
        bail!("{}: no constant operand", n.name)
    };
    let op_is = |suffix: &str, want: &str| -> TractResult<()> {
        let n = node(suffix)?;
        let name = match n.op_as::<TypedBinOp>() {
            Some(b) => b.0.name().to_string(),
            None => n.op().name().to_string(),
        };
        ensure!(name == want, "{}: {name}, expected {want}", n.name);
        Ok(())
    };
    // The position of the summed axis in an einsum's weight operand (input 1).
    let k_in_weights = |suffix: &str| -> TractResult<usize> {
        let n = node(suffix)?;
        let e = n.op_as::<EinSum>().with_context(|| format!("{}: not an einsum", n.name))?;
        let k = e.axes.iter_all_axes().find(|a| a.inputs[0].len() == 1 && a.inputs[1].len() == 1 && a.outputs[0].is_empty());
        k.map(|a| a.inputs[1][0]).with_context(|| format!("{}: no summed axis", n.name))
    };
    let entry = node(".nhwc.MoveAxis-0")?;
    let v = entry.inputs[0];
    let Some(vs) = concrete(model.outlet_fact(v)?) else { return Ok(None) };
    ensure!(vs.len() == 4 && concrete(&out.outputs[0].fact).as_deref() == Some(&vs[..]), "input and output shapes differ");
    let (t, c, h, w) = (vs[0], vs[1], vs[2], vs[3]);
    let phi = OutletId::new(node(".phi")?.id, 0);
    let phi_shape = concrete(model.outlet_fact(phi)?).context("φ shape")?;
    ensure!(phi_shape.len() == 2 && phi_shape[0] == t, "φ shape {phi_shape:?}");
    let cp = phi_shape[1];
    for (s, want) in [(".theta", "Add"), (".g", "Add"), (".W_z", "Add"), (".K", "Mul"), (".residual", "Add")] {
        op_is(s, want)?;
    }
    for (s, want) in [(".normalized_scaled", "Mul"), (".y_internal", "Add"), (".var_eps", "Add")] {
        op_is(&format!(".norm_layer{s}"), want)?;
    }
    let (theta_shape, theta_wt) = konst(".theta.mm")?;
    ensure!(theta_shape == [c, cp] && k_in_weights(".theta.mm")? == 0, "θ weights {theta_shape:?}");
    let (g_shape, g_w) = konst(".g.ab")?;
    ensure!(g_shape == [cp, c] && k_in_weights(".g.ab")? == 1, "g weights {g_shape:?}");
    let (wz_shape, wz_t) = konst(".W_z.mm")?;
    ensure!(wz_shape == [cp, c] && k_in_weights(".W_z.mm")? == 0, "W_z weights {wz_shape:?}");
    let vector = |suffix: &str, len: usize| -> TractResult<Vec<f32>> {
        let (_, v) = konst(suffix)?;
        ensure!(v.len() == len, "{p}{suffix}: {} values, expected {len}", v.len());
        Ok(v)
    };
    // K is [groups, C', C'], or [C', C'] for one group (tract drops the unit axis).
    let k_shape = concrete(&node(".K")?.outputs[0].fact).context("K shape")?;
    let groups = match k_shape[..] {
        [g, a, b] if g > 0 && t % g == 0 && [a, b] == [cp, cp] => g,
        [a, b] if [a, b] == [cp, cp] => 1,
        _ => bail!("K shape {k_shape:?}"),
    };
    let op = AvTpavi {
        t,
        c,
        cp,
        h,
        w,
        groups,
        theta_wt: Arc::new(theta_wt),
        theta_b: Arc::new(vector(".theta", cp)?),
        g_w: Arc::new(g_w),
        g_b: Arc::new(vector(".g", cp)?),
        inv_n: vector(".K", 1)?[0],
        wz_t: Arc::new(wz_t),
        wz_b: Arc::new(vector(".W_z", c)?),
        gamma: Arc::new(vector(".norm_layer.normalized_scaled", c)?),
        beta: Arc::new(vector(".norm_layer.y_internal", c)?),
        eps: vector(".norm_layer.var_eps", 1)?[0],
    };
    op.check()?;
    let mut patch = TypedModelPatch::new(format!("avseg TPAVI {p}"));
    let x = patch.tap_model(model, v)?;
    let f = patch.tap_model(model, phi)?;
    let y = patch.wire_node(format!("{p}.folded"), op, &[x, f])?[0];
    patch.shunt_outside(model, OutletId::new(id, 0), y)?;
    Ok(Some(patch))
}

fn resize_patch(model: &TypedModel, id: usize) -> TractResult<Option<TypedModelPatch>> {
    let node = model.node(id);
    let op = node.op_as::<OnnxResize>().unwrap();
    let CoordTransform::Plain(coord) = &op.coord_transformer else { return Ok(None) };
    if op.interpolator != Interpolator::Linear || op.antialias || op.axes.is_some() {
        return Ok(None);
    }
    let input = model.outlet_fact(node.inputs[0])?;
    let (Some(ishape), Some(oshape)) = (concrete(input), concrete(&node.outputs[0].fact)) else { return Ok(None) };
    if input.datum_type != f32::datum_type() || ishape.len() != 4 || ishape[..2] != oshape[..2] {
        return Ok(None);
    }
    // The coordinate mapping uses the `scales` input when there is one (ONNX), else out / in.
    let mut scales = [oshape[2] as f32 / ishape[2] as f32, oshape[3] as f32 / ishape[3] as f32];
    if let Some(ix) = op.optional_scales_input {
        match node.inputs.get(ix).map(|&o| const_f32(model, o)).transpose()?.flatten() {
            Some(s) if s.len() == 4 => scales = [s[2], s[3]],
            Some(s) if s.is_empty() => {}
            _ => return Ok(None),
        }
    }
    let (Ok(rows), Ok(cols)) = (
        LinearAxis::plan(coord, scales[0], ishape[2], oshape[2]),
        LinearAxis::plan(coord, scales[1], ishape[3], oshape[3]),
    ) else {
        return Ok(None);
    };
    let av = AvResize { n: ishape[0], c: ishape[1], rows: Arc::new(rows), cols: Arc::new(cols) };
    let mut patch = TypedModelPatch::new(format!("avseg resize {}", node.name));
    let x = patch.tap_model(model, node.inputs[0])?;
    let y = patch.wire_node(&node.name, av, &[x])?[0];
    patch.shunt_outside(model, OutletId::new(id, 0), y)?;
    Ok(Some(patch))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bundled default model's segmenter: every convolution and resize is taken, the
    /// ReLU6 / ReLU nodes after them are folded, and the expand → depthwise → project chains of the
    /// encoder keep NHWC between them.
    /// The bundled default model's audio encoder (VGGish's layout): its convolutions and its four
    /// 2×2 max pools are avseg's.
    #[test]
    fn the_default_audio_encoders_pools_are_rewritten() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/default/audio_encoder.onnx");
        let mut model = tract_onnx::onnx().model_for_path(&path).unwrap();
        model.set_input_fact(0, InferenceFact::dt_shape(f32::datum_type(), &[5usize, 1, 96, 64][..])).unwrap();
        let mut typed = model.into_typed().unwrap();
        typed.prop_consts().unwrap();
        let report = rewrite(&mut typed).unwrap();
        assert_eq!((report.convs, report.pools, report.left_to_tract), (6, 4, 0), "{report:?}");
        let pools = typed.nodes().iter().filter(|n| n.op_is::<AvMaxPool>()).count();
        assert_eq!(pools, 4);
        let optimized = typed.into_optimized().unwrap();
        assert_eq!(optimized.output_fact(0).unwrap().shape.as_concrete().unwrap(), &[5, 128]);
    }

    #[test]
    fn the_default_segmenter_is_rewritten_whole() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/default/segmenter.onnx");
        let mut model = tract_onnx::onnx().model_for_path(&path).unwrap();
        model.set_input_fact(0, InferenceFact::dt_shape(f32::datum_type(), &[5usize, 3, 160, 160][..])).unwrap();
        model.set_input_fact(1, InferenceFact::dt_shape(f32::datum_type(), &[5usize, 128][..])).unwrap();
        let mut typed = model.into_typed().unwrap();
        typed.prop_consts().unwrap();
        let report = rewrite(&mut typed).unwrap();
        // Stage 11 (its sound-source veto inside the graph): the TPAVI model's 78 convolutions and
        // 5 resizes, the veto's second decoder and class head (33 convolutions, 10 resizes) and
        // the 4 resizes that upsample its class maximum; max pooling for the window tests and
        // the maxima over the tagger's labels and the classes (6).
        assert_eq!((report.convs, report.resizes, report.pools, report.left_to_tract), (111, 19, 6, 0), "{report:?}");
        assert!(report.clamps >= 70, "{report:?}");
        // 16 depthwise convolutions: 15 with an expand before, the first with the stem before, and
        // all with a project after.
        assert_eq!(report.nhwc_links, 32, "{report:?}");
        // The four TPAVI blocks (attention groups of one frame) as their fold.
        assert_eq!(report.tpavi_blocks, 4, "{report:?}");
        // The rewritten graph still optimises and its output shape is unchanged.
        let optimized = typed.into_optimized().unwrap();
        assert_eq!(optimized.output_fact(0).unwrap().shape.as_concrete().unwrap(), &[5, 1, 160, 160]);
    }
}



