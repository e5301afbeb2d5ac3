//! The on-disk cache of rewritten CPU graphs, so that a second load of a package skips ONNX
//! parsing, typing, avseg's rewrite and tract's declutter.
//!
//! What is cached: each graph after [`super::cpu::rewrite`] and tract's declutter, with the
//! package's input shapes pinned, written as an NNEF tar by `tract-nnef`. avseg's operators and the
//! one decluttered tract operator without an NNEF form of its own (exact GELU) are registered in an
//! `avseg` NNEF registry here: each is written as its integer and float parameters plus its weight
//! tensors, and rebuilt by its own constructor on load. Loading the cache then only reads the
//! tensors and runs tract's optimiser.
//!
//! Layout: `ROOT/GRAPH-KEY.nnef.tar`. GRAPH is a 64-bit FNV-1a of the ONNX file's canonical path;
//! KEY hashes everything the cached form depends on: the ONNX file's size and modification time,
//! the input shapes, tract's version, and the source text of avseg's CPU operators and of this
//! module (so any change to the rewrite invalidates old entries without a version to bump). A
//! new entry replaces the graph's older ones, so the cache holds one entry per graph file, and the
//! least recently used entries are removed while the cache exceeds `AVSEG_GRAPH_CACHE_MAX_MB`
//! (default 4096: a converted TPAVI-R50 package takes about 520 MB). ROOT is
//! `$AVSEG_GRAPH_CACHE`, else `$XDG_CACHE_HOME/avseg/graphs`, else `~/.cache/avseg/graphs`;
//! `AVSEG_GRAPH_CACHE=off` turns the cache off. ONNX files under [`MIN_CACHED_BYTES`] are not
//! cached (programs that name a cache directory in `BackendOptions` get every graph cached).
//! Files are written to a temporary name and renamed. Any failure to read or write an entry is
//! logged and the graph is loaded from its ONNX file as without a cache.
//!
//! Integrity: beside each entry, `GRAPH-KEY.nnef.tar.sum` holds the entry's XXH3-128 checksum and
//! the manifest checksum of the ONNX file it was made from (`unchecked` when that was not checked).
//! A load that checks checksums hashes the entry while tract parses it (no second read) and takes
//! it only when both match, so a bit flipped in a cached entry cannot reach the masks.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tract_nnef::internal::*;
use tract_nnef::ser::{array, invocation, numeric};
use tract_onnx::tract_core::ops::nn::gelu_exact::GeluExact;
use tract_onnx::WithOnnx;

use super::cpu::binary::{AvBinary, BinKind};
use super::cpu::conv::{AvConv, Clamp, ConvGeometry, Layout};
use super::cpu::gather_sum::AvGatherSum;
use super::cpu::matmul::{AvMatMul, BatchAxis, Bias};
use super::cpu::maxpool::AvMaxPool;
use super::cpu::resize::{AvResize, LinearAxis};
use super::cpu::tpavi::AvTpavi;
use super::Fnv1a;
use crate::model::integrity::{self, checksum_file, ChecksumReader};

/// Everything whose change alters the cached form: avseg's operators, the rewrite, this module.
const SOURCES: &[&str] = &[
    include_str!("cpu/binary.rs"),
    include_str!("cpu/conv.rs"),
    include_str!("cpu/depthwise.rs"),
    include_str!("cpu/gather_sum.rs"),
    include_str!("cpu/im2col.rs"),
    include_str!("cpu/matmul.rs"),
    include_str!("cpu/mod.rs"),
    include_str!("cpu/resize.rs"),
    include_str!("cpu/rewrite.rs"),
    include_str!("cpu/tpavi.rs"),
    include_str!("cpu/winograd.rs"),
    include_str!("graph_cache.rs"),
];
const TRACT_VERSION: &str = "tract-0.23.9";

/// ONNX files below this size are not cached by the environment's cache: they load faster from
/// ONNX (the bundled default model's segmenter, 2.3 MB: 46 ms from ONNX, 60 ms from the cache).
pub const MIN_CACHED_BYTES: u64 = 32 << 20;

/// A cache directory.
#[derive(Clone, Debug)]
pub struct GraphCache {
    root: PathBuf,
    /// Smaller ONNX files are loaded without the cache.
    min_bytes: u64,
}

impl GraphCache {
    /// A cache at `root` that takes every graph.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into(), min_bytes: 0 }
    }

    /// The cache the environment selects; `None` when it is turned off or no location can be
    /// derived (no HOME).
    pub fn from_env() -> Option<Self> {
        let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
        let root = match var("AVSEG_GRAPH_CACHE") {
            Some(v) if v.as_os_str() == "off" => None,
            Some(v) => Some(v),
            None => var("XDG_CACHE_HOME").map(|p| p.join("avseg/graphs")).or_else(|| var("HOME").map(|p| p.join(".cache/avseg/graphs"))),
        };
        root.map(|root| Self { root, min_bytes: MIN_CACHED_BYTES })
    }

    /// Where the cached form of `onnx` with `input_shapes` lives; `None` when the file cannot be
    /// described (it does not exist) or is too small to be worth caching.
    pub fn entry(&self, onnx: &Path, input_shapes: &[Vec<usize>]) -> Option<PathBuf> {
        let canonical = onnx.canonicalize().ok()?;
        let meta = std::fs::metadata(&canonical).ok()?;
        if meta.len() < self.min_bytes {
            return None;
        }
        let mtime = meta.modified().ok()?.duration_since(std::time::UNIX_EPOCH).ok()?;
        let mut graph = Fnv1a::new();
        graph.write(canonical.as_os_str().as_encoded_bytes());
        let mut key = Fnv1a::new();
        key.write(&meta.len().to_le_bytes());
        key.write(&mtime.as_nanos().to_le_bytes());
        for shape in input_shapes {
            key.write(format!("{shape:?};").as_bytes());
        }
        key.write(TRACT_VERSION.as_bytes());
        for s in SOURCES {
            key.write(s.as_bytes());
        }
        Some(self.root.join(format!("{:016x}-{:016x}.nnef.tar", graph.finish(), key.finish())))
    }

    /// The cached graph at `entry`, if present and readable. With `verify`, the entry's bytes are
    /// checksummed as they are parsed and compared with the checksum written beside it when it was
    /// stored, and `source` (the manifest's checksum of the ONNX file, if it records one) must be
    /// the one the entry was made from: a damaged entry, or one made from an unchecked file, is not
    /// trusted but rebuilt from the ONNX file (which the caller then checks).
    pub fn load(&self, entry: &Path, verify: bool, source: Option<&str>) -> Option<TypedModel> {
        if !entry.is_file() {
            return None;
        }
        let loaded = if verify { load_verified(entry, source) } else { nnef().model_for_path(entry) };
        match loaded {
            Ok(model) => {
                // Recency for the size cap: a used entry is kept over unused ones.
                if let Ok(f) = std::fs::File::options().append(true).open(entry) {
                    let _ = f.set_modified(std::time::SystemTime::now());
                }
                Some(model)
            }
            Err(e) => {
                log::warn!("{}: unreadable graph cache entry, loading the ONNX file instead ({e:#})", entry.display());
                None
            }
        }
    }

    /// Writes `model` at `entry`, and beside it the entry's checksum and `source`, the checksum of
    /// the ONNX file it was made from when that was checked; removes the graph's other entries.
    pub fn store(&self, entry: &Path, model: &TypedModel, source: Option<&str>) {
        if let Err(e) = self.try_store(entry, model, source) {
            log::warn!("{}: could not write the graph cache ({e:#})", entry.display());
        }
    }

    fn try_store(&self, entry: &Path, model: &TypedModel, source: Option<&str>) -> TractResult<()> {
        std::fs::create_dir_all(&self.root)?;
        let name = entry.file_name().and_then(|n| n.to_str()).context("entry name")?;
        // Unique per process and call: concurrent writers of one entry never share a file.
        static WRITES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = entry.with_extension(format!("tmp{}-{n}", std::process::id()));
        let file = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        let written = nnef().write_to_tar(model, file).and_then(|mut w| Ok(std::io::Write::flush(&mut w)?));
        // The checksum goes in place first: a reader that sees the entry also sees its checksum.
        let summed = written.and_then(|_| {
            let (_, sum) = checksum_file(&tmp)?;
            let sum_tmp = sum_path(&tmp);
            std::fs::write(&sum_tmp, format!("{sum}\n{}\n", source.unwrap_or(UNCHECKED)))?;
            Ok(std::fs::rename(&sum_tmp, sum_path(entry))?)
        });
        if let Err(e) = summed {
            let _ = std::fs::remove_file(&tmp);
            let _ = std::fs::remove_file(sum_path(&tmp));
            return Err(e);
        }
        std::fs::rename(&tmp, entry)?;
        log::info!("{}: cached the rewritten graph", entry.display());
        // Older entries of the same graph (another key) are superseded; then the size cap.
        let graph = &name[..16];
        let mut others = Vec::new();
        for e in std::fs::read_dir(&self.root)?.flatten() {
            let other = e.file_name().to_string_lossy().into_owned();
            if other.ends_with(".nnef.tar.sum") && other.starts_with(graph) && other[..other.len() - 4] != *name {
                let _ = std::fs::remove_file(e.path());
            }
            if !other.ends_with(".nnef.tar") || other == name {
                continue;
            }
            if other.starts_with(graph) {
                let _ = std::fs::remove_file(e.path());
            } else if let Ok(meta) = e.metadata() {
                others.push((meta.modified().unwrap_or(std::time::UNIX_EPOCH), meta.len(), e.path()));
            }
        }
        let cap = std::env::var("AVSEG_GRAPH_CACHE_MAX_MB").ok().and_then(|v| v.parse::<u64>().ok()).unwrap_or(4096) << 20;
        let mut total: u64 = others.iter().map(|o| o.1).sum::<u64>() + std::fs::metadata(entry)?.len();
        others.sort();
        for (_, len, path) in others {
            if total <= cap {
                break;
            }
            if std::fs::remove_file(&path).is_ok() {
                let _ = std::fs::remove_file(sum_path(&path));
                total -= len;
            }
        }
        Ok(())
    }
}

/// Where the checksum of the entry (or temporary file) at `path` is kept.
fn sum_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".sum");
    name.into()
}

/// The source line of an entry made from an ONNX file whose checksum was not checked.
const UNCHECKED: &str = "unchecked";

/// Parses the entry while checksumming it, and translates it only when its checksum matches and
/// it was made from the ONNX file `source` names.
fn load_verified(entry: &Path, source: Option<&str>) -> TractResult<TypedModel> {
    let sums = std::fs::read_to_string(sum_path(entry)).context("the entry's checksum file")?;
    let mut lines = sums.lines();
    let (recorded, made_from) = (lines.next().unwrap_or(""), lines.next().unwrap_or(UNCHECKED));
    if let Some(source) = source {
        ensure!(made_from == source, "made from {made_from}, not from the manifest's {source}");
    }
    let mut reader = ChecksumReader::new(std::fs::File::open(entry)?);
    let proto = nnef().proto_model_for_read(&mut reader)?;
    let actual = reader.finish()?.finish();
    ensure!(actual == recorded, "{}", integrity::checksum_mismatch(&actual, recorded));
    nnef().model_for_proto_model(&proto)
}

/// tract's NNEF framework with the ONNX extensions and avseg's registry.
pub fn nnef() -> tract_nnef::framework::Nnef {
    tract_nnef::nnef().with_onnx().with_registry(registry())
}

/// The `avseg` NNEF registry: avseg's operators, and exact GELU.
fn registry() -> Registry {
    let mut r = Registry::new("avseg");
    r.register_unit_element_wise("avseg_gelu_exact", &GeluExact {});
    register::<AvConv>(&mut r);
    register::<AvResize>(&mut r);
    register::<AvMaxPool>(&mut r);
    register::<AvBinary>(&mut r);
    register::<AvMatMul>(&mut r);
    register::<AvGatherSum>(&mut r);
    register::<AvTpavi>(&mut r);
    r
}

/// An avseg operator as integers, floats and weight tensors.
trait Cached: TypedOp + Sized {
    const NAME: &'static str;
    fn encode(&self) -> (Vec<i64>, Vec<f32>, Vec<Arc<Tensor>>);
    fn decode(ints: &[i64], floats: &[f32], tensors: &[Arc<Tensor>]) -> TractResult<Self>;
}

fn register<T: Cached>(r: &mut Registry) {
    r.register_primitive(
        T::NAME,
        &[
            TypeName::Any.tensor().array().named("inputs"),
            TypeName::Integer.array().named("ints"),
            TypeName::Scalar.tensor().named("floats"),
            TypeName::Scalar.tensor().array().named("tensors"),
        ],
        &[("output", TypeName::Scalar.tensor())],
        load::<T>,
    );
    r.register_dumper(dump::<T>);
}

fn dump<T: Cached>(ast: &mut IntoAst, node: &TypedNode, op: &T) -> TractResult<Option<Arc<RValue>>> {
    let inputs: Vec<RValue> = node.inputs.iter().map(|i| (*ast.mapping[i]).clone()).collect();
    let (ints, floats, tensors) = op.encode();
    let floats = ast.konst_variable(format!("{}.floats", node.name), &tensor1(&floats).into_arc_tensor())?;
    let mut weights = Vec::with_capacity(tensors.len());
    for (i, t) in tensors.iter().enumerate() {
        weights.push((*ast.konst_variable(format!("{}.t{i}", node.name), t)?).clone());
    }
    Ok(Some(invocation(
        T::NAME,
        &[],
        &[
            ("inputs", array(inputs)),
            ("ints", array(ints.iter().map(|&i| numeric(i)).collect::<Vec<_>>())),
            ("floats", (*floats).clone()),
            ("tensors", array(weights)),
        ],
    )))
}

fn load<T: Cached>(builder: &mut ModelBuilder, invocation: &ResolvedInvocation) -> TractResult<Value> {
    let inputs: TVec<OutletId> = invocation.named_arg_as(builder, "inputs")?;
    let ints: TVec<i64> = invocation.named_arg_as(builder, "ints")?;
    let floats: Arc<Tensor> = invocation.named_arg_as(builder, "floats")?;
    let tensors: TVec<Arc<Tensor>> = invocation.named_arg_as(builder, "tensors")?;
    let floats = floats.cast_to::<f32>()?;
    let op = T::decode(&ints, floats.try_as_plain_ram()?.as_slice::<f32>()?, &tensors)?;
    builder.wire(op, &inputs)
}

fn f32_tensor(v: &[f32]) -> Arc<Tensor> {
    tensor1(v).into_arc_tensor()
}

fn f32_values(t: &Tensor) -> TractResult<Vec<f32>> {
    Ok(t.cast_to::<f32>()?.try_as_plain_ram()?.as_slice::<f32>()?.to_vec())
}

/// Reads `ints` front to back.
struct Ints<'a>(&'a [i64]);

impl Ints<'_> {
    fn next(&mut self) -> TractResult<usize> {
        let (&first, rest) = self.0.split_first().context("graph cache: too few integer parameters")?;
        self.0 = rest;
        usize::try_from(first).map_err(|_| format_err!("graph cache: negative parameter {first}"))
    }
    fn shape(&mut self) -> TractResult<Vec<usize>> {
        let rank = self.next()?;
        (0..rank).map(|_| self.next()).collect()
    }
}

impl Ints<'_> {
    /// A [`ConvGeometry`] as [`geometry_ints`] wrote it.
    fn geometry(&mut self) -> TractResult<ConvGeometry> {
        Ok(ConvGeometry {
            n: self.next()?,
            c_in: self.next()?,
            c_out: self.next()?,
            groups: self.next()?,
            kh: self.next()?,
            kw: self.next()?,
            stride_h: self.next()?,
            stride_w: self.next()?,
            dil_h: self.next()?,
            dil_w: self.next()?,
            pad_top: self.next()?,
            pad_left: self.next()?,
            in_h: self.next()?,
            in_w: self.next()?,
            out_h: self.next()?,
            out_w: self.next()?,
        })
    }
}

/// A convolution's or a pooling's geometry as integers, in [`Ints::geometry`]'s order.
fn geometry_ints(g: &ConvGeometry) -> Vec<i64> {
    [g.n, g.c_in, g.c_out, g.groups, g.kh, g.kw, g.stride_h, g.stride_w, g.dil_h, g.dil_w, g.pad_top, g.pad_left, g.in_h, g.in_w, g.out_h, g.out_w]
        .iter()
        .map(|&v| v as i64)
        .collect()
}

fn push_shape(v: &mut Vec<i64>, shape: &[usize]) {
    v.push(shape.len() as i64);
    v.extend(shape.iter().map(|&d| d as i64));
}

fn layout_code(l: Layout) -> i64 {
    match l {
        Layout::Nchw => 0,
        Layout::Nhwc => 1,
    }
}

fn layout(code: usize) -> TractResult<Layout> {
    match code {
        0 => Ok(Layout::Nchw),
        1 => Ok(Layout::Nhwc),
        c => bail!("graph cache: layout {c}"),
    }
}

impl Cached for AvConv {
    const NAME: &'static str = "avseg_conv";
    fn encode(&self) -> (Vec<i64>, Vec<f32>, Vec<Arc<Tensor>>) {
        let mut ints = geometry_ints(&self.geo);
        ints.extend([layout_code(self.input), layout_code(self.output)]);
        (ints, vec![self.clamp.lo, self.clamp.hi], vec![f32_tensor(&self.weights), f32_tensor(&self.bias)])
    }
    fn decode(ints: &[i64], floats: &[f32], tensors: &[Arc<Tensor>]) -> TractResult<Self> {
        let mut i = Ints(ints);
        let geo = i.geometry()?;
        let (input, output) = (layout(i.next()?)?, layout(i.next()?)?);
        ensure!(floats.len() == 2 && tensors.len() == 2, "graph cache: avseg_conv parameters");
        let (weights, bias) = (f32_values(&tensors[0])?, f32_values(&tensors[1])?);
        ensure!(weights.len() == geo.c_out * geo.patch_len() && bias.len() == geo.c_out, "graph cache: avseg_conv weights");
        let mut op = AvConv::new(geo, weights, bias, Clamp { lo: floats[0], hi: floats[1] });
        op.input = input;
        op.output = output;
        Ok(op)
    }
}

impl Cached for AvMaxPool {
    const NAME: &'static str = "avseg_max_pool";
    fn encode(&self) -> (Vec<i64>, Vec<f32>, Vec<Arc<Tensor>>) {
        (geometry_ints(&self.geo), vec![], vec![])
    }
    fn decode(ints: &[i64], _: &[f32], _: &[Arc<Tensor>]) -> TractResult<Self> {
        let geo = Ints(ints).geometry()?;
        let g = &geo;
        let one_group_per_channel = g.c_in >= 1 && g.c_out == g.c_in && g.groups == g.c_in;
        ensure!(g.pools_cleanly() && one_group_per_channel, "graph cache: avseg_max_pool geometry");
        Ok(AvMaxPool { geo })
    }
}

impl Cached for AvResize {
    const NAME: &'static str = "avseg_resize";
    fn encode(&self) -> (Vec<i64>, Vec<f32>, Vec<Arc<Tensor>>) {
        let mut ints = vec![self.n as i64, self.c as i64];
        let mut floats = Vec::new();
        for axis in [&self.rows, &self.cols] {
            ints.extend([axis.len_in as i64, axis.taps.len() as i64]);
            ints.extend(axis.taps.iter().flat_map(|t| [t[0] as i64, t[1] as i64]));
            floats.extend(axis.weights.iter().flatten());
        }
        (ints, floats, vec![])
    }
    fn decode(ints: &[i64], floats: &[f32], _: &[Arc<Tensor>]) -> TractResult<Self> {
        let mut i = Ints(ints);
        let (n, c) = (i.next()?, i.next()?);
        let mut f = floats;
        let mut axis = || -> TractResult<LinearAxis> {
            let (len_in, len_out) = (i.next()?, i.next()?);
            let taps = (0..len_out).map(|_| Ok([i.next()? as u32, i.next()? as u32])).collect::<TractResult<Vec<_>>>()?;
            ensure!(f.len() >= 2 * len_out, "graph cache: avseg_resize weights");
            let weights = f[..2 * len_out].chunks_exact(2).map(|w| [w[0], w[1]]).collect();
            f = &f[2 * len_out..];
            ensure!(taps.iter().flatten().all(|&t| (t as usize) < len_in), "graph cache: avseg_resize taps");
            Ok(LinearAxis::new(len_in, taps, weights))
        };
        let rows = axis()?;
        let cols = axis()?;
        Ok(AvResize { n, c, rows: Arc::new(rows), cols: Arc::new(cols) })
    }
}

const BIN_KINDS: [BinKind; 6] = [BinKind::Add, BinKind::Sub, BinKind::Mul, BinKind::Div, BinKind::Max, BinKind::Min];

impl Cached for AvBinary {
    const NAME: &'static str = "avseg_binary";
    fn encode(&self) -> (Vec<i64>, Vec<f32>, Vec<Arc<Tensor>>) {
        let mut ints = vec![BIN_KINDS.iter().position(|k| *k == self.kind).unwrap() as i64];
        push_shape(&mut ints, self.a_shape());
        push_shape(&mut ints, self.b_shape());
        (ints, vec![], vec![])
    }
    fn decode(ints: &[i64], _: &[f32], _: &[Arc<Tensor>]) -> TractResult<Self> {
        let mut i = Ints(ints);
        let kind = *BIN_KINDS.get(i.next()?).context("graph cache: avseg_binary kind")?;
        let (a, b) = (i.shape()?, i.shape()?);
        AvBinary::plan(kind, &a, &b).context("graph cache: avseg_binary shapes do not broadcast")
    }
}

impl Cached for AvMatMul {
    const NAME: &'static str = "avseg_matmul";
    fn encode(&self) -> (Vec<i64>, Vec<f32>, Vec<Arc<Tensor>>) {
        let mut ints: Vec<i64> = [
            self.m, self.n, self.k, self.a_strides.0, self.a_strides.1, self.b_strides.0, self.b_strides.1, self.out_strides.0,
            self.out_strides.1, self.batch.len(),
        ]
        .iter()
        .map(|&v| v as i64)
        .collect();
        for ax in &self.batch {
            ints.extend([ax.len, ax.a, ax.b, ax.out].map(|v| v as i64));
        }
        let (bias_kind, bias) = match &self.bias {
            Bias::None => (0, vec![]),
            Bias::Rows(v) => (1, vec![f32_tensor(v)]),
            Bias::Cols(v) => (2, vec![f32_tensor(v)]),
        };
        ints.push(bias_kind);
        push_shape(&mut ints, &self.a_shape);
        push_shape(&mut ints, &self.b_shape);
        push_shape(&mut ints, &self.out_shape);
        (ints, vec![self.clamp.lo, self.clamp.hi], bias)
    }
    fn decode(ints: &[i64], floats: &[f32], tensors: &[Arc<Tensor>]) -> TractResult<Self> {
        let mut i = Ints(ints);
        let (m, n, k) = (i.next()?, i.next()?, i.next()?);
        let a_strides = (i.next()?, i.next()?);
        let b_strides = (i.next()?, i.next()?);
        let out_strides = (i.next()?, i.next()?);
        let batch = (0..i.next()?)
            .map(|_| Ok(BatchAxis { len: i.next()?, a: i.next()?, b: i.next()?, out: i.next()? }))
            .collect::<TractResult<Vec<_>>>()?;
        let bias = match (i.next()?, tensors) {
            (0, []) => Bias::None,
            (1, [t]) => Bias::Rows(Arc::new(f32_values(t)?)),
            (2, [t]) => Bias::Cols(Arc::new(f32_values(t)?)),
            _ => bail!("graph cache: avseg_matmul bias"),
        };
        let (a_shape, b_shape, out_shape) = (i.shape()?, i.shape()?, i.shape()?);
        ensure!(floats.len() == 2, "graph cache: avseg_matmul clamp");
        let op = AvMatMul {
            m,
            n,
            k,
            a_strides,
            b_strides,
            out_strides,
            batch,
            bias,
            clamp: Clamp { lo: floats[0], hi: floats[1] },
            a_shape,
            b_shape,
            out_shape,
        };
        op.check_bounds()?;
        Ok(op)
    }
}

impl Cached for AvGatherSum {
    const NAME: &'static str = "avseg_gather_sum";
    fn encode(&self) -> (Vec<i64>, Vec<f32>, Vec<Arc<Tensor>>) {
        let mut ints: Vec<i64> =
            [self.rows, self.row_len, self.points, self.corners, self.batch, self.depth].iter().map(|&v| v as i64).collect();
        push_shape(&mut ints, &self.out_shape);
        (ints, vec![], vec![])
    }
    fn decode(ints: &[i64], _: &[f32], _: &[Arc<Tensor>]) -> TractResult<Self> {
        let mut i = Ints(ints);
        let op = AvGatherSum {
            rows: i.next()?,
            row_len: i.next()?,
            points: i.next()?,
            corners: i.next()?,
            batch: i.next()?,
            depth: i.next()?,
            out_shape: i.shape()?,
        };
        ensure!(
            op.depth > 0 && op.row_len == op.corners * op.depth && op.out_shape.iter().product::<usize>() == op.batch * op.depth,
            "graph cache: avseg_gather_sum shapes"
        );
        Ok(op)
    }
}

impl Cached for AvTpavi {
    const NAME: &'static str = "avseg_tpavi";
    fn encode(&self) -> (Vec<i64>, Vec<f32>, Vec<Arc<Tensor>>) {
        let ints = [self.t, self.c, self.cp, self.h, self.w, self.groups].iter().map(|&v| v as i64).collect();
        let tensors = [&self.theta_wt, &self.theta_b, &self.g_w, &self.g_b, &self.wz_t, &self.wz_b, &self.gamma, &self.beta]
            .iter()
            .map(|v| f32_tensor(v))
            .collect();
        (ints, vec![self.inv_n, self.eps], tensors)
    }
    fn decode(ints: &[i64], floats: &[f32], tensors: &[Arc<Tensor>]) -> TractResult<Self> {
        let mut i = Ints(ints);
        ensure!(floats.len() == 2 && tensors.len() == 8, "graph cache: avseg_tpavi parameters");
        let t = |k: usize| -> TractResult<Arc<Vec<f32>>> { Ok(Arc::new(f32_values(&tensors[k])?)) };
        let op = AvTpavi {
            t: i.next()?,
            c: i.next()?,
            cp: i.next()?,
            h: i.next()?,
            w: i.next()?,
            groups: i.next()?,
            theta_wt: t(0)?,
            theta_b: t(1)?,
            g_w: t(2)?,
            g_b: t(3)?,
            inv_n: floats[0],
            wz_t: t(4)?,
            wz_b: t(5)?,
            gamma: t(6)?,
            beta: t(7)?,
            eps: floats[1],
        };
        op.check()?;
        Ok(op)
    }
}
