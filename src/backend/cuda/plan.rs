//! The CUDA runner's plan for one graph, made on the CPU and testable without a GPU: which kernel
//! runs each node, its FLOPs, and one memory plan (an arena with an offset per activation) made at
//! load so that nothing is allocated per clip.
//!
//! The planner reads the graph the CPU backend prepares ([`crate::backend::tract::decluttered_model`]
//! with avseg's kernels): avseg's rewrite has already turned the convolutions, products, resizes,
//! broadcasts and TPAVI blocks into avseg's own operators, whose parameters (geometry, fold,
//! layouts) say everything a device kernel needs. What the plan cannot place on the device is
//! listed in [`Plan::unsupported`]; a runner refuses such a plan, and `--backend auto` stays on
//! tract.
//!
//! **Memory plan.** Every activation (a node output, an input upload) is a buffer with a live range
//! [producing step, last reading step]; views (reshapes, unit axes) share their source's buffer and
//! extend its range. Buffers are placed largest first at the lowest 256-byte aligned offset that
//! overlaps no placed buffer live at the same time (first fit over intervals). The arena is the
//! largest end offset; [`Plan::peak_live_bytes`] (the most bytes live at one step) is the lower
//! bound any placement must reach. Graph outputs live to the end.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::change_axes::AxisOp;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::cnn::MaxPool;
use tract_onnx::tract_core::ops::element_wise::ElementWiseOp;
use tract_onnx::tract_core::ops::nn::Reduce;
use tract_onnx::tract_core::ops::konst::Const;
use tract_onnx::tract_core::ops::source::TypedSource;

use crate::backend::cpu::binary::{AvBinary, BinKind};
use crate::backend::cpu::conv::AvConv;
use crate::backend::cpu::gather_sum::AvGatherSum;
use crate::backend::cpu::matmul::AvMatMul;
use crate::backend::cpu::maxpool::AvMaxPool;
use crate::backend::cpu::resize::AvResize;
use crate::backend::cpu::rewrite::{clamp_chain, einsum_as_matmul, einsum_as_matmul_permuting_constant, ClampOps, PermutedConstant};
use crate::backend::cpu::tpavi::{AvTpavi, AvTpaviWindow};

/// Storage precision of weights and activations (arithmetic is fp32 either way).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    /// 4 bytes per value.
    F32,
    /// 2 bytes per value (fp16 storage, fp32 accumulation).
    F16,
}

impl Precision {
    /// Bytes per stored value.
    pub fn bytes(self) -> u64 {
        match self {
            Precision::F32 => 4,
            Precision::F16 => 2,
        }
    }
}

/// Offsets are aligned to this (cuBLASLt and vectorised loads want 256-byte aligned operands).
pub const ALIGN: u64 = 256;

/// How a node runs on the device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// A graph input, uploaded into its buffer.
    Upload,
    /// Shares its input's buffer: no launch.
    View,
    /// An Add folded into the launch of the convolution or resize that produces one of its
    /// operands (that step's [`Step::residual`] is the other): no launch of its own, and its output
    /// is the producer's buffer.
    FusedAdd,
    /// A Max or Min against one constant (a ReLU) after an Add folded into a convolution's
    /// launch: applied there too, after the residual ([`Step::residual_clamp`]); no launch of its
    /// own, and its output is the producer's buffer.
    FusedClamp,
    /// A dense convolution as a GEMM (1×1) or implicit GEMM (k×k) with the bias and clamp in the
    /// epilogue.
    ConvGemm {
        /// Kernel height.
        kh: usize,
        /// Kernel width.
        kw: usize,
    },
    /// A depthwise convolution in avseg's own kernel.
    Depthwise {
        /// Kernel height.
        kh: usize,
        /// Kernel width.
        kw: usize,
    },
    /// A matrix product (cuBLASLt), bias and clamp in the epilogue.
    Gemm,
    /// The TPAVI fold (spec §6.6): per group the C×C matrix, then the per-position product and
    /// channel LayerNorm (`kernels/tpavi.cu`).
    TpaviFold {
        /// Attention groups per call (one K each).
        groups: usize,
    },
    /// Bilinear resize (`kernels/decoder.cu`, `upsample_bilinear`).
    Resize,
    /// A broadcast elementwise operation (`kernels/decoder.cu`, `add`, and its kin).
    Elementwise,
    /// A gathered weighted sum (deformable attention's sampling) in avseg's own kernel.
    GatherSum,
    /// A transposition of axes (layout moves the rewrite left).
    Transpose,
    /// A reduction over axes (sums and means the rewrite left).
    Reduce,
    /// Max pooling (ResNet's stem, VGGish) in avseg's own kernel: tract's `MaxPool` or the CPU
    /// rewrite's `AvMaxPool`.
    MaxPool {
        /// Window height.
        kh: usize,
        /// Window width.
        kw: usize,
    },
}

impl Kernel {
    /// A short name for tables.
    pub fn name(&self) -> String {
        match self {
            Kernel::Upload => "upload".into(),
            Kernel::View => "view".into(),
            Kernel::FusedAdd => "add (fused)".into(),
            Kernel::FusedClamp => "clamp (fused)".into(),
            Kernel::ConvGemm { kh, kw } if *kh == 1 && *kw == 1 => "gemm 1x1 conv".into(),
            Kernel::ConvGemm { kh, kw } => format!("implicit-gemm {kh}x{kw} conv"),
            Kernel::Depthwise { kh, kw } => format!("depthwise {kh}x{kw}"),
            Kernel::Gemm => "gemm".into(),
            Kernel::TpaviFold { groups } => format!("tpavi fold ({groups} group{})", if *groups == 1 { "" } else { "s" }),
            Kernel::Resize => "bilinear resize".into(),
            Kernel::Elementwise => "elementwise".into(),
            Kernel::GatherSum => "gather-sum".into(),
            Kernel::Transpose => "transpose".into(),
            Kernel::MaxPool { kh, kw } => format!("max-pool {kh}x{kw}"),
            Kernel::Reduce => "reduce".into(),
        }
    }
}

/// One node of the plan, in execution order.
#[derive(Clone, Debug)]
pub struct Step {
    /// The node's name in the graph.
    pub node: String,
    /// What runs it.
    pub kernel: Kernel,
    /// Floating-point operations (a multiply-add is 2).
    pub flops: u64,
    /// The buffer the step writes (a view's is its source's).
    pub output: usize,
    /// The buffers the step reads.
    pub inputs: Vec<usize>,
    /// A buffer of the output's shape the step adds to its result last: the other operand of a
    /// following Add folded into this launch ([`Kernel::FusedAdd`]).
    pub residual: Option<usize>,
    /// Bounds (max with the first, then min with the second) applied after the residual: the
    /// clamp nodes after a folded Add ([`Kernel::FusedClamp`]), as ResNet's ReLU after its
    /// bottleneck sum.
    pub residual_clamp: Option<(f32, f32)>,
    /// A [`Kernel::Gemm`] step's product, as the planner read it from its node
    /// ([`device_product`]), so that the runner builds its launch from the same reading.
    pub(crate) product: Option<(AvMatMul, Option<PermutedConstant>)>,
}

/// One activation buffer of the arena.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Buffer {
    /// Its size at the plan's precision.
    pub bytes: u64,
    /// The step that writes it first.
    pub first: usize,
    /// The step that reads it last (the step count for a graph output).
    pub last: usize,
    /// Its place in the arena.
    pub offset: u64,
}

/// A graph's device plan; see the module documentation.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Storage precision of weights and activations.
    pub precision: Precision,
    /// The nodes, in execution order.
    pub steps: Vec<Step>,
    /// The activation buffers, placed in the arena.
    pub buffers: Vec<Buffer>,
    /// Bytes of the activation arena (the largest end offset).
    pub arena_bytes: u64,
    /// The most activation bytes live at one step: the lower bound of any arena.
    pub peak_live_bytes: u64,
    /// Bytes of every activation if none shared memory.
    pub unshared_bytes: u64,
    /// Bytes of the weights (constants) at the plan's precision.
    pub weight_bytes: u64,
    /// FLOPs of one call (a multiply-add is 2).
    pub flops: u64,
    /// Nodes with no device kernel: `name (operator)`.
    pub unsupported: Vec<String>,
}

/// Plans every graph of `package` for one call of its T frames, with avseg's CPU rewrite (the
/// plan's source of operators): `(role, plan)` for the audio graph, if any, then the segmenter.
pub fn plan_package(package: &crate::model::ModelPackage, precision: Precision) -> Result<Vec<(&'static str, Plan)>, crate::Error> {
    use crate::backend::cpu::CpuKernels;
    let t = package.frames_per_clip();
    let patches = vec![t, 1, crate::frontend::audio::PATCH_FRAMES, crate::frontend::audio::MEL_BANDS];
    let graphs = package.audio_graph().map(|g| (g, vec![patches])).into_iter().chain([(package.segmenter(), package.segmenter_inputs(t))]);
    let mut plans = Vec::new();
    for (info, shapes) in graphs {
        let prepare = |e: anyhow::Error| crate::backend::BackendError::Prepare { backend: "cuda planner", path: info.path.clone(), detail: format!("{e:#}") };
        let model = crate::backend::tract::decluttered_model(&info.path, &shapes, CpuKernels::Avseg).map_err(prepare)?;
        plans.push((info.role, plan(&model, precision).map_err(prepare)?));
    }
    Ok(plans)
}

fn numel(fact: &TypedFact) -> Option<u64> {
    fact.shape.as_concrete().map(|s| s.iter().product::<usize>() as u64)
}

/// Plans `model` (a decluttered, avseg-rewritten graph with concrete shapes).
pub fn plan(model: &TypedModel, precision: Precision) -> TractResult<Plan> {
    let order = model.eval_order()?;
    let bytes = precision.bytes();
    let mut steps: Vec<Step> = Vec::new();
    let mut buffers: Vec<Buffer> = Vec::new();
    // The buffer of each node's output 0 (and of further outputs, by outlet).
    let mut buffer_of: std::collections::HashMap<OutletId, usize> = std::collections::HashMap::new();
    let mut weight_bytes = 0u64;
    let mut unsupported = Vec::new();
    let mut flops_total = 0u64;
    // Add nodes folded into the step before them, with the buffer that step writes.
    let mut fused_adds: std::collections::HashMap<usize, usize> = std::collections::HashMap::new();
    // Clamp nodes after such an Add, folded into the same step.
    let mut fused_clamps: std::collections::HashMap<usize, usize> = std::collections::HashMap::new();
    for &id in &order {
        let node = model.node(id);
        let op = node.op();
        let folded = fused_adds.get(&id).map(|&b| (b, Kernel::FusedAdd)).or(fused_clamps.get(&id).map(|&b| (b, Kernel::FusedClamp)));
        if let Some((producer, kernel)) = folded {
            let inputs: Vec<usize> = node.inputs.iter().filter_map(|o| buffer_of.get(o).copied()).collect();
            let step = steps.len();
            for &b in &inputs {
                buffers[b].last = buffers[b].last.max(step);
            }
            buffer_of.insert(OutletId::new(id, 0), producer);
            // Its additions still happen, in the producer's epilogue.
            let flops = numel(&node.outputs[0].fact).unwrap_or(0);
            flops_total += flops;
            steps.push(Step { node: node.name.clone(), kernel, flops, output: producer, inputs, residual: None, residual_clamp: None, product: None });
            continue;
        }
        if let Some(k) = op.downcast_ref::<Const>() {
            weight_bytes += k.val().len() as u64 * bytes;
            continue;
        }
        // Inputs that are weights take no activation buffer.
        let inputs: Vec<usize> = node.inputs.iter().filter_map(|o| buffer_of.get(o).copied()).collect();
        let out_fact = &node.outputs[0].fact;
        let out_numel = numel(out_fact).unwrap_or(0);
        weight_bytes += held_weights(op) * bytes;
        let mut product = None;
        let (kernel, flops) = if op.downcast_ref::<TypedSource>().is_some() {
            (Some(Kernel::Upload), 0)
        } else if let Some(c) = op.downcast_ref::<AvConv>() {
            let g = &c.geo;
            let macs = (g.n * g.c_out * g.out_h * g.out_w * (g.c_in / g.groups) * g.kh * g.kw) as u64;
            let depthwise = g.groups > 1 && g.groups == g.c_in && g.c_in == g.c_out;
            let k = if depthwise { Kernel::Depthwise { kh: g.kh, kw: g.kw } } else { Kernel::ConvGemm { kh: g.kh, kw: g.kw } };
            (Some(k), 2 * macs)
        } else if let Some(p) = device_product(model, node)? {
            let m = &p.0;
            let batch = (m.out_shape.iter().product::<usize>() / (m.m * m.n).max(1)) as u64;
            let flops = 2 * batch * (m.m * m.n * m.k) as u64;
            product = Some(p);
            (Some(Kernel::Gemm), flops)
        } else if let Some(t) = op.downcast_ref::<AvTpavi>() {
            (Some(Kernel::TpaviFold { groups: t.groups }), tpavi_flops(t.t, t.groups, t.c, t.cp, t.h * t.w))
        } else if let Some(t) = op.downcast_ref::<AvTpaviWindow>() {
            let b = &t.block;
            (Some(Kernel::TpaviFold { groups: 1 }), tpavi_flops(1, 1, b.c, b.cp, b.h * b.w) + 2 * (b.cp * b.cp) as u64)
        } else if op.downcast_ref::<AvResize>().is_some() {
            // Two lerps per output value (rows, then columns).
            (Some(Kernel::Resize), 6 * out_numel)
        } else if op.downcast_ref::<AvBinary>().is_some() || op.downcast_ref::<TypedBinOp>().is_some() || op.downcast_ref::<ElementWiseOp>().is_some() {
            (Some(Kernel::Elementwise), out_numel)
        } else if op.downcast_ref::<Reduce>().is_some() {
            let read = node.inputs.first().and_then(|&i| model.outlet_fact(i).ok()).and_then(numel).unwrap_or(0);
            (Some(Kernel::Reduce), read)
        } else if let Some(gs) = op.downcast_ref::<AvGatherSum>() {
            (Some(Kernel::GatherSum), 2 * (gs.batch * gs.points * gs.corners * gs.depth) as u64)
        } else if let Some(mp) = op.downcast_ref::<MaxPool>() {
            let k = &mp.pool_spec.kernel_shape;
            let (kh, kw) = (k.first().copied().unwrap_or(1), k.get(1).copied().unwrap_or(1));
            // One comparison per window element and output value.
            (Some(Kernel::MaxPool { kh, kw }), out_numel * (kh * kw) as u64)
        } else if let Some(mp) = op.downcast_ref::<AvMaxPool>() {
            // The CPU rewrite's max pooling: the same device kernel.
            let (kh, kw) = (mp.geo.kh, mp.geo.kw);
            (Some(Kernel::MaxPool { kh, kw }), out_numel * (kh * kw) as u64)
        } else if let Some(a) = op.downcast_ref::<AxisOp>() {
            match a {
                AxisOp::Add(_) | AxisOp::Rm(_) | AxisOp::Reshape(..) => (Some(Kernel::View), 0),
                AxisOp::Move(..) => (Some(Kernel::Transpose), 0),
            }
        } else {
            (None, 0)
        };
        let Some(kernel) = kernel else {
            unsupported.push(format!("{} ({})", node.name, op.name()));
            continue;
        };
        flops_total += flops;
        let step = steps.len();
        let output = match (&kernel, inputs.first()) {
            (Kernel::View, Some(&src)) => src,
            _ => {
                // Inputs are uploaded before the first launch, whenever their source node comes in
                // the order: their buffers are live from step 0 (a later source placed over an
                // earlier input's buffer would overwrite it at upload).
                let first = if kernel == Kernel::Upload { 0 } else { step };
                buffers.push(Buffer { bytes: out_numel * bytes, first, last: step, offset: 0 });
                buffers.len() - 1
            }
        };
        for &b in inputs.iter().chain([&output]) {
            buffers[b].last = buffers[b].last.max(step);
        }
        for i in 0..node.outputs.len() {
            buffer_of.insert(OutletId::new(id, i), output);
        }
        // The decoder's residual adds ride on the launch that produces one of their operands.
        let residual = match kernel {
            Kernel::ConvGemm { .. } | Kernel::Depthwise { .. } | Kernel::Resize => foldable_add(model, node, &buffer_of)?,
            _ => None,
        };
        let mut residual_clamp = None;
        let residual = match residual {
            Some((add, other)) => {
                fused_adds.insert(add, output);
                buffers[other].last = buffers[other].last.max(step);
                // A convolution also takes the clamps after the sum (the CPU kernels' order: max,
                // then min; bounds that cross are left as their own launches).
                if matches!(kernel, Kernel::ConvGemm { .. } | Kernel::Depthwise { .. }) {
                    if let Some(chain) = clamp_chain(model, OutletId::new(add, 0), ClampOps::TractOrAvseg)?.filter(|c| !c.nodes.is_empty()) {
                        chain.nodes.iter().for_each(|&c| {
                            fused_clamps.insert(c, output);
                        });
                        residual_clamp = Some((chain.clamp.lo, chain.clamp.hi));
                    }
                }
                Some(other)
            }
            None => None,
        };
        let inputs = inputs.into_iter().chain(residual).collect();
        steps.push(Step { node: node.name.clone(), kernel, flops, output, inputs, residual, residual_clamp, product });
    }
    // Graph outputs are read after the last step.
    let end = steps.len();
    for o in model.output_outlets()? {
        if let Some(&b) = buffer_of.get(o) {
            buffers[b].last = end;
        }
    }
    let arena_bytes = place(&mut buffers);
    let peak_live_bytes = (0..=end)
        .map(|s| buffers.iter().filter(|b| b.first <= s && s <= b.last).map(|b| b.bytes).sum::<u64>())
        .max()
        .unwrap_or(0);
    let unshared_bytes = buffers.iter().map(|b| b.bytes).sum();
    Ok(Plan { precision, steps, buffers, arena_bytes, peak_live_bytes, unshared_bytes, weight_bytes, flops: flops_total, unsupported })
}

/// The product a Gemm step runs: avseg's operator; an einsum the CPU rewrite left to tract (a
/// product it judged faster there, e.g. few rows against constant weights); or an einsum over
/// several summed axes, whose constant operand the runner then stores permuted (see
/// [`einsum_as_matmul_permuting_constant`]).
pub(crate) fn device_product(model: &TypedModel, node: &TypedNode) -> TractResult<Option<(AvMatMul, Option<PermutedConstant>)>> {
    if let Some(m) = node.op().downcast_ref::<AvMatMul>() {
        return Ok(Some((m.clone(), None)));
    }
    if let Some((m, _, _)) = einsum_as_matmul(model, node)? {
        return Ok(Some((m, None)));
    }
    Ok(einsum_as_matmul_permuting_constant(model, node)?.map(|(m, p)| (m, Some(p))))
}

/// The Add that `node`'s output goes to and nothing else, when it can be folded into `node`'s
/// launch: an f32 sum of two operands of one shape (no broadcast), the other operand already in
/// a buffer (computed before `node`, so the launch can read it), and `node`'s output not itself a
/// graph output. Returns the Add's node and the other operand's buffer.
fn foldable_add(model: &TypedModel, node: &TypedNode, buffer_of: &std::collections::HashMap<OutletId, usize>) -> TractResult<Option<(usize, usize)>> {
    let ours = OutletId::new(node.id, 0);
    if node.outputs.len() != 1 || node.outputs[0].successors.len() != 1 || model.output_outlets()?.contains(&ours) {
        return Ok(None);
    }
    let add = model.node(node.outputs[0].successors[0].node);
    let is_add = add.op().downcast_ref::<AvBinary>().is_some_and(|b| b.kind == BinKind::Add)
        || add.op().downcast_ref::<TypedBinOp>().is_some_and(|b| b.0.name() == "Add");
    if !is_add || add.inputs.len() != 2 || add.outputs.len() != 1 {
        return Ok(None);
    }
    let other = if add.inputs[0] == ours { add.inputs[1] } else { add.inputs[0] };
    if other == ours {
        return Ok(None);
    }
    let Some(&buffer) = buffer_of.get(&other) else { return Ok(None) };
    let shape = |f: &TypedFact| (f.datum_type == f32::datum_type()).then(|| f.shape.as_concrete().map(|s| s.to_vec())).flatten();
    let ours_shape = shape(&node.outputs[0].fact);
    if ours_shape.is_none() || ours_shape != shape(model.outlet_fact(other)?) || ours_shape != shape(&add.outputs[0].fact) {
        return Ok(None);
    }
    Ok(Some((add.id, buffer)))
}

/// Weight values an avseg operator holds itself (the rewrite moves constants into the operators).
fn held_weights(op: &dyn Op) -> u64 {
    let tpavi = |t: &AvTpavi| [&t.theta_wt, &t.theta_b, &t.g_w, &t.g_b, &t.wz_t, &t.wz_b, &t.gamma, &t.beta].iter().map(|v| v.len()).sum::<usize>();
    let n = if let Some(c) = op.downcast_ref::<AvConv>() {
        c.weights.len() + c.bias.len()
    } else if let Some(t) = op.downcast_ref::<AvTpavi>() {
        tpavi(t)
    } else if let Some(t) = op.downcast_ref::<AvTpaviWindow>() {
        tpavi(&t.block)
    } else {
        0
    };
    n as u64
}

/// FLOPs of one folded TPAVI block over `t` frames in `groups` groups: the spatial sums, gs, K and
/// the fold per group, then the C×C product (and LayerNorm, ~8 per value) per position.
fn tpavi_flops(t: usize, groups: usize, c: usize, cp: usize, hw: usize) -> u64 {
    let per_group = 2 * (cp * c + cp * cp + cp * cp * c + c * cp * c);
    (t * c * hw + 2 * t * cp * c + groups * per_group + t * hw * (2 * c * c + 8 * c)) as u64
}

fn align(x: u64) -> u64 {
    x.div_ceil(ALIGN) * ALIGN
}

/// First-fit placement, largest buffers first; returns the arena size.
fn place(buffers: &mut [Buffer]) -> u64 {
    let mut order: Vec<usize> = (0..buffers.len()).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(buffers[i].bytes), buffers[i].first));
    let mut placed: Vec<usize> = Vec::new();
    let mut arena = 0;
    for i in order {
        let (first, last, size) = (buffers[i].first, buffers[i].last, align(buffers[i].bytes));
        // The busy ranges of buffers live at the same time, by offset.
        let mut busy: Vec<(u64, u64)> = placed
            .iter()
            .map(|&j| &buffers[j])
            .filter(|b| b.first <= last && first <= b.last)
            .map(|b| (b.offset, b.offset + align(b.bytes)))
            .collect();
        busy.sort_unstable();
        let mut offset = 0;
        for (lo, hi) in busy {
            if offset + size <= lo {
                break;
            }
            offset = offset.max(hi);
        }
        buffers[i].offset = offset;
        arena = arena.max(offset + size);
        placed.push(i);
    }
    arena
}

impl Plan {
    /// Steps and FLOPs per kernel, most FLOPs first.
    pub fn kernel_table(&self) -> Vec<(String, usize, u64)> {
        let mut rows: Vec<(String, usize, u64)> = Vec::new();
        for s in &self.steps {
            let name = s.kernel.name();
            match rows.iter_mut().find(|r| r.0 == name) {
                Some(r) => {
                    r.1 += 1;
                    r.2 += s.flops;
                }
                None => rows.push((name, 1, s.flops)),
            }
        }
        rows.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buf(bytes: u64, first: usize, last: usize) -> Buffer {
        Buffer { bytes, first, last, offset: u64::MAX }
    }

    /// No two buffers live at the same step overlap, and the arena holds them all.
    fn check_placement(buffers: &[Buffer], arena: u64) {
        for (i, a) in buffers.iter().enumerate() {
            assert_eq!(a.offset % ALIGN, 0);
            assert!(a.offset + a.bytes <= arena);
            for b in &buffers[i + 1..] {
                let live_together = a.first <= b.last && b.first <= a.last;
                let overlap = a.offset < b.offset + align(b.bytes) && b.offset < a.offset + align(a.bytes);
                assert!(!(live_together && overlap), "{a:?} and {b:?} overlap while both live");
            }
        }
    }

    #[test]
    fn a_chain_reuses_two_buffers() {
        // x0 -> x1 -> x2 -> x3: each lives for two steps, so two slots suffice.
        let mut b: Vec<Buffer> = (0..4).map(|i| buf(1000, i, i + 1)).collect();
        let arena = place(&mut b);
        check_placement(&b, arena);
        assert_eq!(arena, 2 * align(1000));
    }

    #[test]
    fn random_live_ranges_never_overlap_and_stay_near_the_bound() {
        let mut state = 7u64;
        let mut next = |m: u64| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 33) % m
        };
        for _ in 0..50 {
            let n = 5 + next(60) as usize;
            let mut b: Vec<Buffer> = (0..n)
                .map(|_| {
                    let first = next(40) as usize;
                    buf(1 + next(100_000), first, first + next(10) as usize)
                })
                .collect();
            let arena = place(&mut b);
            check_placement(&b, arena);
            let peak = (0..60).map(|s| b.iter().filter(|x| x.first <= s && s <= x.last).map(|x| align(x.bytes)).sum::<u64>()).max().unwrap();
            assert!(arena >= peak, "below the lower bound: {arena} < {peak}");
            // First fit on these sizes stays within twice the bound.
            assert!(arena <= 2 * peak, "arena {arena} vs peak {peak}");
        }
    }

    #[test]
    fn tiny_tpavi_plans_every_node_on_the_device() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/tiny-tpavi/segmenter.onnx");
        let model = crate::backend::tract::decluttered_model(&path, &[vec![5, 3, 224, 224], vec![5, 128]], crate::backend::cpu::CpuKernels::Avseg).unwrap();
        let p = plan(&model, Precision::F32).unwrap();
        assert!(p.unsupported.is_empty(), "{:?}", p.unsupported);
        let table = p.kernel_table();
        let count = |k: &str| table.iter().find(|r| r.0.starts_with(k)).map_or(0, |r| r.1);
        assert_eq!(count("tpavi fold"), 4, "{table:?}");
        assert!(count("implicit-gemm 3x3") > 0 && count("gemm 1x1") > 0, "{table:?}");
        // The decoder's residual adds ride on the launches before them: each fused Add shares the
        // buffer of exactly one producing step, whose residual is the Add's other operand.
        let fused: Vec<&Step> = p.steps.iter().filter(|s| s.kernel == Kernel::FusedAdd).collect();
        assert!(!fused.is_empty(), "{table:?}");
        for add in &fused {
            let producers: Vec<&Step> = p.steps.iter().filter(|s| s.output == add.output && s.residual.is_some()).collect();
            assert_eq!(producers.len(), 1, "{}", add.node);
            let r = producers[0].residual.unwrap();
            assert!(add.inputs.contains(&r) && add.inputs.contains(&add.output) && r != add.output, "{}", add.node);
        }
        // ResNet's ReLU after each bottleneck sum rides along: every fused clamp shares the
        // buffer of a convolution step that carries a residual and the clamp's bounds.
        let clamps: Vec<&Step> = p.steps.iter().filter(|s| s.kernel == Kernel::FusedClamp).collect();
        assert_eq!(clamps.len(), 16, "one per bottleneck of [3, 4, 6, 3]: {table:?}");
        for c in &clamps {
            let producer = p.steps.iter().find(|s| s.output == c.output && s.residual.is_some()).unwrap();
            assert_eq!(producer.residual_clamp, Some((0.0, f32::INFINITY)), "{}", c.node);
            assert!(matches!(producer.kernel, Kernel::ConvGemm { .. }), "{}", c.node);
        }
        check_placement(&p.buffers, p.arena_bytes);
        assert!(p.arena_bytes >= p.peak_live_bytes && p.arena_bytes < p.unshared_bytes / 2, "{p:?}");
        // Both inputs are uploaded before the first launch: live from step 0, never shared.
        for (i, s) in p.steps.iter().enumerate().filter(|(_, s)| s.kernel == Kernel::Upload) {
            assert_eq!(p.buffers[s.output].first, 0, "input of step {i}");
        }
        // fp16 storage halves every buffer.
        let h = plan(&model, Precision::F16).unwrap();
        assert_eq!(h.flops, p.flops);
        assert_eq!(2 * h.weight_bytes, p.weight_bytes);
        assert!(h.arena_bytes <= p.arena_bytes / 2 + ALIGN * p.buffers.len() as u64);
    }
}
