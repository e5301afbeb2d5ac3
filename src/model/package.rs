//! Loading and validating a model package folder.
//!
//! Validation happens once, at load, so that a bad package fails before any frame is decoded:
//! every manifest field is range-checked, every graph file must exist inside the folder and parse
//! as ONNX, and each graph's declared inputs and outputs must agree with the manifest.

use std::path::{Component, Path, PathBuf};

use tract_onnx::pb;

use super::onnx_summary;

use super::manifest::{Family, GraphSpec, Manifest, OutputSpec, FORMAT, MANIFEST_FILE, SCHEMA_VERSION};
use super::PackageError;
use crate::frontend::audio::{MEL_BANDS, PATCH_FRAMES};

/// A validated package: its manifest plus what was learnt from the ONNX files.
#[derive(Clone, Debug)]
pub struct ModelPackage {
    dir: PathBuf,
    manifest: Manifest,
    graphs: Vec<GraphInfo>,
}

/// Declared signature of one ONNX graph.
#[derive(Clone, Debug)]
pub struct GraphInfo {
    /// `audio_encoder` or `segmenter`.
    pub role: &'static str,
    /// The ONNX file.
    pub path: PathBuf,
    /// The graph's inputs, in the manifest's order.
    pub inputs: Vec<TensorDecl>,
    /// The graph's outputs, in the manifest's order.
    pub outputs: Vec<TensorDecl>,
    /// Elements held in initializers (weights).
    pub parameters: u64,
    /// The ONNX default-domain opset version the graph imports.
    pub opset: i64,
}

/// A graph input or output as the ONNX file declares it.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorDecl {
    /// The tensor's name in the graph.
    pub name: String,
    /// Its declared dimensions.
    pub dims: Vec<Dim>,
}

/// One declared dimension: fixed, or symbolic (a batch axis left open by the exporter).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Dim {
    /// A fixed size.
    Fixed(usize),
    /// A named (or, if empty, anonymous) symbolic size.
    Symbolic(String),
}

impl std::fmt::Display for Dim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dim::Fixed(n) => write!(f, "{n}"),
            Dim::Symbolic(s) if s.is_empty() => write!(f, "?"),
            Dim::Symbolic(s) => write!(f, "{s}"),
        }
    }
}

impl TensorDecl {
    /// The dimensions as `[5,3,160,160]`, with symbolic ones by name (`?` when unnamed).
    pub fn shape_string(&self) -> String {
        let dims: Vec<String> = self.dims.iter().map(|d| d.to_string()).collect();
        format!("[{}]", dims.join(","))
    }
}

impl ModelPackage {
    /// Reads `dir/avseg.json` and the graphs it names, validating everything.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self, PackageError> {
        let dir = dir.as_ref().to_path_buf();
        if !dir.is_dir() {
            return Err(PackageError::NotAPackage { path: dir });
        }
        let manifest_path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&manifest_path).map_err(|e| PackageError::Read {
            path: manifest_path.clone(),
            detail: e.to_string(),
        })?;
        let manifest = parse_manifest(&manifest_path, &text)?;
        validate_manifest(&manifest_path, &manifest)?;

        let mut graphs = Vec::new();
        if let Some(spec) = &manifest.graphs.audio_encoder {
            graphs.push(read_graph(&dir, "audio_encoder", spec)?);
        }
        graphs.push(read_graph(&dir, "segmenter", &manifest.graphs.segmenter)?);
        let package = ModelPackage { dir, manifest, graphs };
        package.check_signatures()?;
        Ok(package)
    }

    /// The package folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The validated manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The declared signatures of the package's graphs (audio encoder first, if any).
    pub fn graphs(&self) -> &[GraphInfo] {
        &self.graphs
    }

    /// The audio encoder graph, if the package has one.
    pub fn audio_encoder(&self) -> Option<&GraphInfo> {
        self.graphs.iter().find(|g| g.role == "audio_encoder")
    }

    /// The segmenter graph.
    pub fn segmenter(&self) -> &GraphInfo {
        self.graphs.iter().find(|g| g.role == "segmenter").expect("validated at load")
    }

    /// Weight elements over all graphs.
    pub fn parameters(&self) -> u64 {
        self.graphs.iter().map(|g| g.parameters).sum()
    }

    /// Frames per segmenter call (T).
    pub fn frames_per_clip(&self) -> usize {
        self.manifest.frames_per_clip
    }

    /// Shape of the segmenter's audio input for one call: embeddings `[T, D]`, or log-mel
    /// `[T, 1, 96, 64]` when the package has no separate audio encoder.
    pub fn segmenter_audio_shape(&self) -> Vec<usize> {
        let t = self.manifest.frames_per_clip;
        if self.manifest.graphs.audio_encoder.is_some() {
            vec![t, self.manifest.audio.embedding_dim]
        } else {
            vec![t, 1, PATCH_FRAMES, MEL_BANDS]
        }
    }

    /// Shape of the segmenter's frame input for one call: `[T, 3, H, W]`.
    pub fn frames_shape(&self) -> Vec<usize> {
        let v = &self.manifest.vision;
        vec![self.manifest.frames_per_clip, 3, v.height as usize, v.width as usize]
    }

    /// Checks each graph's declared inputs/outputs against what the manifest implies.
    fn check_signatures(&self) -> Result<(), PackageError> {
        let m = &self.manifest;
        let t = m.frames_per_clip;
        let logmel = vec![Expect::Batch(t), Expect::Is(1), Expect::Is(PATCH_FRAMES), Expect::Is(MEL_BANDS)];
        if let Some(enc) = self.audio_encoder() {
            expect_decl(enc, "graphs.audio_encoder.inputs[0]", &enc.inputs[0], &logmel)?;
            let emb = vec![Expect::Batch(t), Expect::Is(m.audio.embedding_dim)];
            expect_decl(enc, "graphs.audio_encoder.outputs[0]", &enc.outputs[0], &emb)?;
        }
        let seg = self.segmenter();
        if seg.inputs.len() != 2 {
            return Err(PackageError::Graph {
                path: seg.path.clone(),
                field: "graphs.segmenter.inputs".into(),
                detail: format!("segmenter must take 2 inputs (frames, audio); manifest lists {}", seg.inputs.len()),
            });
        }
        let (h, w) = (m.vision.height as usize, m.vision.width as usize);
        let frames = vec![Expect::Is(t), Expect::Is(3), Expect::Is(h), Expect::Is(w)];
        expect_decl(seg, "graphs.segmenter.inputs[0]", &seg.inputs[0], &frames)?;
        let audio: Vec<Expect> = self.segmenter_audio_shape().into_iter().map(Expect::Is).collect();
        expect_decl(seg, "graphs.segmenter.inputs[1]", &seg.inputs[1], &audio)?;
        let k = m.output.channels();
        let logits = vec![Expect::Is(t), Expect::Is(k), Expect::Any, Expect::Any];
        expect_decl(seg, "graphs.segmenter.outputs[0]", &seg.outputs[0], &logits)?;
        Ok(())
    }
}

/// Parses the manifest, naming the offending field on failure.
pub fn parse_manifest(path: &Path, text: &str) -> Result<Manifest, PackageError> {
    let de = &mut serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner();
        PackageError::Field {
            path: path.to_path_buf(),
            field: if field == "." { "(top level)".into() } else { field },
            detail: format!("{inner}"),
        }
    })
}

fn field_err(path: &Path, field: &str, detail: impl Into<String>) -> PackageError {
    PackageError::Field { path: path.to_path_buf(), field: field.to_string(), detail: detail.into() }
}

/// Range checks that serde's types cannot express.
pub fn validate_manifest(path: &Path, m: &Manifest) -> Result<(), PackageError> {
    if m.format != FORMAT {
        return Err(field_err(path, "format", format!("is {:?}; expected {FORMAT:?}", m.format)));
    }
    if m.schema_version != SCHEMA_VERSION {
        return Err(field_err(
            path,
            "schema_version",
            format!("is {}; this avseg reads schema {SCHEMA_VERSION}", m.schema_version),
        ));
    }
    if m.name.trim().is_empty() {
        return Err(field_err(path, "name", "is empty"));
    }
    if !(1..=64).contains(&m.frames_per_clip) {
        return Err(field_err(path, "frames_per_clip", format!("is {}; must be 1..=64", m.frames_per_clip)));
    }
    if m.family == Family::Tpavi && m.frames_per_clip % 5 != 0 {
        // The official TPAVI reshapes by a hard-coded 5: T = 5 (S4/MS3) or 10 (AVSS, two groups).
        return Err(field_err(
            path,
            "frames_per_clip",
            format!("is {}; TPAVI groups frames by 5, so it must be a multiple of 5", m.frames_per_clip),
        ));
    }
    let v = &m.vision;
    for (name, val) in [("vision.width", v.width), ("vision.height", v.height)] {
        if !(16..=4096).contains(&val) {
            return Err(field_err(path, name, format!("is {val}; must be 16..=4096")));
        }
    }
    for c in 0..3 {
        if !v.mean[c].is_finite() {
            return Err(field_err(path, &format!("vision.mean[{c}]"), "is not finite"));
        }
        if !(v.std[c].is_finite() && v.std[c] > 0.0) {
            return Err(field_err(path, &format!("vision.std[{c}]"), format!("is {}; must be > 0", v.std[c])));
        }
    }
    if !(1..=4096).contains(&m.audio.embedding_dim) {
        return Err(field_err(path, "audio.embedding_dim", format!("is {}; must be 1..=4096", m.audio.embedding_dim)));
    }
    match &m.output {
        OutputSpec::Binary { threshold } => {
            if !(threshold.is_finite() && *threshold > 0.0 && *threshold < 1.0) {
                return Err(field_err(path, "output.threshold", format!("is {threshold}; must be in (0, 1)")));
            }
        }
        OutputSpec::Semantic { labels, palette } => {
            if labels.len() < 2 || labels.len() > 256 {
                return Err(field_err(path, "output.labels", format!("has {} entries; must be 2..=256", labels.len())));
            }
            if palette.len() != labels.len() {
                return Err(field_err(
                    path,
                    "output.palette",
                    format!("has {} colours for {} labels", palette.len(), labels.len()),
                ));
            }
        }
    }
    if let Some(enc) = &m.graphs.audio_encoder {
        check_graph_spec(path, "graphs.audio_encoder", enc, 1)?;
    }
    check_graph_spec(path, "graphs.segmenter", &m.graphs.segmenter, 2)?;
    Ok(())
}

fn check_graph_spec(path: &Path, field: &str, g: &GraphSpec, inputs: usize) -> Result<(), PackageError> {
    let rel = Path::new(&g.file);
    // Packages are copied between machines; a graph must live inside its own folder.
    let escapes = rel.is_absolute() || rel.components().any(|c| matches!(c, Component::ParentDir));
    if g.file.is_empty() || escapes {
        return Err(field_err(path, &format!("{field}.file"), format!("{:?} must be a path inside the package", g.file)));
    }
    if g.inputs.len() != inputs {
        return Err(field_err(
            path,
            &format!("{field}.inputs"),
            format!("lists {} inputs; expected {inputs}", g.inputs.len()),
        ));
    }
    if g.outputs.is_empty() {
        return Err(field_err(path, &format!("{field}.outputs"), "is empty"));
    }
    Ok(())
}

fn read_graph(dir: &Path, role: &'static str, spec: &GraphSpec) -> Result<GraphInfo, PackageError> {
    let path = dir.join(&spec.file);
    if !path.is_file() {
        return Err(PackageError::Graph {
            path: path.clone(),
            field: format!("graphs.{role}.file"),
            detail: "file not found".into(),
        });
    }
    let unreadable = |detail: String| PackageError::Graph {
        path: path.clone(),
        field: format!("graphs.{role}.file"),
        detail: format!("not a readable ONNX model ({detail})"),
    };
    let proto = onnx_summary::decode_file(&path).map_err(unreadable)?;
    let graph = proto.graph.as_ref().ok_or_else(|| PackageError::Graph {
        path: path.clone(),
        field: format!("graphs.{role}.file"),
        detail: "ONNX file has no graph".into(),
    })?;
    if graph.node.is_empty() {
        return Err(PackageError::Graph {
            path: path.clone(),
            field: format!("graphs.{role}.file"),
            detail: "ONNX graph has no nodes (not a model?)".into(),
        });
    }
    let initializers: std::collections::HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let declared_inputs: Vec<TensorDecl> =
        graph.input.iter().filter(|i| !initializers.contains(i.name.as_str())).map(decl).collect();
    let declared_outputs: Vec<TensorDecl> = graph.output.iter().map(decl).collect();

    let pick = |names: &[String], decls: &[TensorDecl], kind: &str| -> Result<Vec<TensorDecl>, PackageError> {
        names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                decls.iter().find(|d| &d.name == name).cloned().ok_or_else(|| {
                    let have: Vec<&str> = decls.iter().map(|d| d.name.as_str()).collect();
                    PackageError::Graph {
                        path: path.clone(),
                        field: format!("graphs.{role}.{kind}[{i}]"),
                        detail: format!("graph has no {} named {name:?} (it has {have:?})", &kind[..kind.len() - 1]),
                    }
                })
            })
            .collect()
    };
    let inputs = pick(&spec.inputs, &declared_inputs, "inputs")?;
    let outputs = pick(&spec.outputs, &declared_outputs, "outputs")?;
    if declared_inputs.len() != inputs.len() {
        let extra: Vec<&str> =
            declared_inputs.iter().map(|d| d.name.as_str()).filter(|n| !spec.inputs.iter().any(|s| s == n)).collect();
        return Err(PackageError::Graph {
            path: path.clone(),
            field: format!("graphs.{role}.inputs"),
            detail: format!("graph has inputs the manifest does not feed: {extra:?}"),
        });
    }
    let parameters = graph.initializer.iter().map(|t| t.dims.iter().map(|&d| d.max(0) as u64).product::<u64>()).sum();
    let opset = proto.opset_import.iter().filter(|o| o.domain.is_empty() || o.domain == "ai.onnx").map(|o| o.version).max().unwrap_or(0);
    Ok(GraphInfo { role, path, inputs, outputs, parameters, opset })
}

fn decl(v: &pb::ValueInfoProto) -> TensorDecl {
    use pb::tensor_shape_proto::dimension::Value;
    use pb::type_proto::Value as TypeValue;
    let dims = match v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(TypeValue::TensorType(t)) => t
            .shape
            .as_ref()
            .map(|s| {
                s.dim
                    .iter()
                    .map(|d| match &d.value {
                        Some(Value::DimValue(n)) if *n >= 0 => Dim::Fixed(*n as usize),
                        Some(Value::DimParam(p)) => Dim::Symbolic(p.clone()),
                        _ => Dim::Symbolic(String::new()),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    TensorDecl { name: v.name.clone(), dims }
}

/// What one declared dimension must be.
enum Expect {
    /// Exactly this size.
    Is(usize),
    /// This size, or symbolic (an open batch axis the runtime pins at load).
    Batch(usize),
    /// Anything (e.g. output resolution, which the runtime reads from the result).
    Any,
}

fn expect_decl(g: &GraphInfo, field: &str, d: &TensorDecl, want: &[Expect]) -> Result<(), PackageError> {
    let wanted = want
        .iter()
        .map(|e| match e {
            Expect::Is(n) => n.to_string(),
            Expect::Batch(n) => format!("{n}|N"),
            Expect::Any => "*".into(),
        })
        .collect::<Vec<_>>()
        .join(",");
    let mismatch = || PackageError::Graph {
        path: g.path.clone(),
        field: field.to_string(),
        detail: format!("{:?} is declared {} but the manifest implies [{wanted}]", d.name, d.shape_string()),
    };
    if d.dims.len() != want.len() {
        return Err(mismatch());
    }
    for (dim, e) in d.dims.iter().zip(want) {
        let ok = match (e, dim) {
            (Expect::Any, _) => true,
            (Expect::Is(n), Dim::Fixed(m)) | (Expect::Batch(n), Dim::Fixed(m)) => n == m,
            (Expect::Batch(_), Dim::Symbolic(_)) => true,
            (Expect::Is(_), Dim::Symbolic(_)) => false,
        };
        if !ok {
            return Err(mismatch());
        }
    }
    Ok(())
}
