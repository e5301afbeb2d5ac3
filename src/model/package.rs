//! Loading and validating a model package folder.
//!
//! Validation happens once, at load, so that a bad package fails before any frame is decoded:
//! every manifest field is range-checked, every graph file must exist inside the folder and parse
//! as ONNX, and each graph's declared inputs and outputs must agree with the manifest.

use std::path::{Component, Path, PathBuf};

use tract_onnx::pb;

use super::integrity::{self, FileCheck};
use super::onnx_summary;

use super::label_tree::LabelTree;
use super::manifest::{Family, GraphSpec, LabelTreeSpec, Manifest, OutputSpec, PixelRule, FORMAT, MANIFEST_FILE, SCHEMA_VERSION};
use super::PackageError;
use crate::frontend::audio::{MEL_BANDS, PATCH_FRAMES};

/// A validated package: its manifest plus what was learnt from the ONNX files.
#[derive(Clone, Debug)]
pub struct ModelPackage {
    dir: PathBuf,
    manifest: Manifest,
    graphs: Vec<GraphInfo>,
    /// Two-stage packages: the tagger's labels and the checked label tree.
    two_stage: Option<TwoStage>,
}

/// What a two-stage (`bavs`) package adds to the graphs: the tagger's labels, in the order of its
/// scores, and the label tree, checked against them and the segmenter's classes.
#[derive(Clone, Debug)]
pub struct TwoStage {
    /// The tagger's labels, in the order of its scores.
    pub audio_labels: Vec<String>,
    /// The checked label tree.
    pub tree: LabelTree,
    /// The tree file.
    pub tree_path: PathBuf,
    /// The label file.
    pub audio_labels_path: PathBuf,
    /// Which pixels the heard sounds keep (the manifest's `label_tree.pixel_rule`).
    pub pixel_rule: PixelRule,
}

/// Declared signature of one ONNX graph.
#[derive(Clone, Debug)]
pub struct GraphInfo {
    /// `audio_encoder`, `audio_tagger` or `segmenter`.
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
    /// The file's size in bytes.
    pub size: u64,
    /// What the integrity check found.
    pub check: FileCheck,
    /// The checksum the manifest records for the file, if any.
    pub checksum: Option<String>,
}

/// How [`ModelPackage::load_with`] reads a package.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PackageOptions {
    /// Hash each graph file and compare it with the checksum its manifest records (default on).
    /// Sizes are compared either way.
    pub verify_checksums: bool,
    /// The largest graph file accepted, in bytes (default [`PackageOptions::DEFAULT_MAX_GRAPH_BYTES`]).
    pub max_graph_bytes: u64,
    /// Leave recorded checksums to the backend ([`FileCheck::Deferred`]), which checks the bytes
    /// it actually loads: only the engine sets this.
    pub(crate) defer_checksums: bool,
}

impl PackageOptions {
    /// 4 GiB: twice ONNX's own 2 GB protobuf limit on one file, and above every published AVS model
    /// (PVT-v2-b5 AVSegFormer, about 0.4 GB).
    pub const DEFAULT_MAX_GRAPH_BYTES: u64 = 4 << 30;
    /// Manifests are a few kB (the 71 AVSS labels and palette take 5 kB); anything larger is not one.
    pub const MAX_MANIFEST_BYTES: u64 = 1 << 20;
}

impl Default for PackageOptions {
    fn default() -> Self {
        Self { verify_checksums: true, max_graph_bytes: Self::DEFAULT_MAX_GRAPH_BYTES, defer_checksums: false }
    }
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
    /// Reads `dir/avseg.json` and the graphs it names, validating everything and verifying each
    /// graph's recorded size and checksum.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self, PackageError> {
        Self::load_with(dir, &PackageOptions::default())
    }

    /// [`ModelPackage::load`] with explicit checks and limits.
    pub fn load_with(dir: impl AsRef<Path>, options: &PackageOptions) -> Result<Self, PackageError> {
        let dir = dir.as_ref().to_path_buf();
        if !dir.is_dir() {
            return Err(PackageError::NotAPackage { path: dir });
        }
        let manifest = read_manifest(&dir)?;
        let mut graphs = Vec::new();
        if let Some(spec) = &manifest.graphs.audio_encoder {
            graphs.push(read_graph(&dir, "audio_encoder", spec, options)?);
        }
        if let Some(spec) = &manifest.graphs.audio_tagger {
            graphs.push(read_graph(&dir, "audio_tagger", spec, options)?);
        }
        graphs.push(read_graph(&dir, "segmenter", &manifest.graphs.segmenter, options)?);
        let two_stage = match (&manifest.label_tree, &manifest.output) {
            (Some(spec), OutputSpec::Semantic { labels, .. }) => Some(read_two_stage(&dir, spec, labels)?),
            // validate_manifest allows a tree only with semantic output.
            _ => None,
        };
        let package = ModelPackage { dir, manifest, graphs, two_stage };
        package.check_signatures()?;
        Ok(package)
    }

    /// Checks every graph file of the package in `dir` against the size and checksum its manifest
    /// records, without stopping at the first damaged one and without parsing the graphs: what
    /// `avseg verify` prints. Errors only when the manifest itself is unusable.
    pub fn verify_files(dir: impl AsRef<Path>) -> Result<Vec<(String, PathBuf, FileCheck)>, PackageError> {
        let dir = dir.as_ref();
        if !dir.is_dir() {
            return Err(PackageError::NotAPackage { path: dir.to_path_buf() });
        }
        let manifest = read_manifest(dir)?;
        let specs = [
            ("audio_encoder", manifest.graphs.audio_encoder.as_ref()),
            ("audio_tagger", manifest.graphs.audio_tagger.as_ref()),
            ("segmenter", Some(&manifest.graphs.segmenter)),
        ];
        let mut out = Vec::new();
        for (role, spec) in specs {
            let Some(spec) = spec else { continue };
            let path = dir.join(&spec.file);
            let check = match std::fs::metadata(&path) {
                Ok(m) if m.is_file() => integrity::check_file(&path, m.len(), spec.size, spec.checksum.as_deref())
                    .unwrap_or_else(|e| FileCheck::Mismatch(format!("cannot read: {e}"))),
                _ => FileCheck::Mismatch("file not found".into()),
            };
            out.push((role.to_string(), path, check));
        }
        Ok(out)
    }

    /// Records that the backend checked every deferred checksum (it fails to prepare otherwise).
    pub(crate) fn checks_passed(&mut self) {
        for g in &mut self.graphs {
            if g.check == FileCheck::Deferred {
                g.check = FileCheck::Verified;
            }
        }
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

    /// The audio tagger graph of a two-stage package.
    pub fn audio_tagger(&self) -> Option<&GraphInfo> {
        self.graphs.iter().find(|g| g.role == "audio_tagger")
    }

    /// The graph that turns log-mel patches into what the rest of the model takes: the audio
    /// encoder (embeddings) or a two-stage package's tagger (tag probabilities).
    pub fn audio_graph(&self) -> Option<&GraphInfo> {
        self.audio_encoder().or(self.audio_tagger())
    }

    /// A two-stage package's tagger labels and label tree.
    pub fn two_stage(&self) -> Option<&TwoStage> {
        self.two_stage.as_ref()
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
    /// `[T, 1, 96, 64]` when the package has no separate audio encoder. (A two-stage package's
    /// segmenter takes no audio: see [`ModelPackage::segmenter_inputs`].)
    pub fn segmenter_audio_shape(&self) -> Vec<usize> {
        let t = self.manifest.frames_per_clip;
        if self.manifest.graphs.audio_encoder.is_some() {
            vec![t, self.manifest.audio.embedding_dim]
        } else {
            vec![t, 1, PATCH_FRAMES, MEL_BANDS]
        }
    }

    /// Whether the package's graphs can segment one frame per call (a stream then gives each frame
    /// its result as soon as its audio is in): its frames must be independent
    /// ([`Manifest::frames_independent`]) and every graph input must leave its frame axis open
    /// (symbolic) or be 1. `Err` says why not.
    pub fn single_frame_graphs(&self) -> Result<(), String> {
        let m = &self.manifest;
        if !m.frames_independent() {
            return Err(format!(
                "{} couples its frames in groups of {} (tpavi_group)",
                m.family.as_str(),
                m.coupled_frames()
            ));
        }
        for g in self.audio_graph().into_iter().chain([self.segmenter()]) {
            for d in &g.inputs {
                if let Some(Dim::Fixed(n)) = d.dims.first() {
                    if *n != 1 {
                        return Err(format!(
                            "{}: input {:?} is declared {}, a fixed {n} frames per call",
                            g.path.display(),
                            d.name,
                            d.shape_string()
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether a stream can run the package in sliding windows (spec §6.6): official TPAVI, whose
    /// frames meet only in the attention of groups of T frames (`tpavi_group` T, or absent, which
    /// means T). Returns T. The graphs themselves are checked when the window step is prepared
    /// (avseg's fold must recognise every TPAVI block, each averaging K over T frames). `Err` says
    /// why not.
    pub fn sliding_windows(&self) -> Result<usize, String> {
        let m = &self.manifest;
        let t = m.frames_per_clip;
        match m.family {
            Family::Tpavi if m.frames_independent() => {
                Err("its frames are independent (tpavi_group 1): stream it one frame at a time (per-frame mode)".into())
            }
            Family::Tpavi if m.coupled_frames() != t => Err(format!(
                "its attention groups of {} frames are fixed within a clip of {t}, not a window that slides",
                m.coupled_frames()
            )),
            Family::Tpavi if t < 2 => Err(format!("a window of {t} frame is one frame: use per-frame mode")),
            Family::Tpavi => Ok(t),
            _ => Err(format!("family {} has no TPAVI attention to slide", m.family.as_str())),
        }
    }

    /// The shapes of the segmenter's inputs for one call of `t` frames: frames, then the audio
    /// unless the package is two-stage.
    pub fn segmenter_inputs(&self, t: usize) -> Vec<Vec<usize>> {
        let mut shapes = vec![self.frames_shape()];
        if self.manifest.family != Family::Bavs {
            shapes.push(self.segmenter_audio_shape());
        }
        for s in &mut shapes {
            s[0] = t;
        }
        shapes
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
        if let (Some(tagger), Some(two)) = (self.audio_tagger(), &self.two_stage) {
            expect_decl(tagger, "graphs.audio_tagger.inputs[0]", &tagger.inputs[0], &logmel)?;
            // One score per audio label: a label no output covers, or an output with no label, is
            // an error here rather than a misread tag later.
            let tags = vec![Expect::Batch(t), Expect::Is(two.audio_labels.len())];
            expect_decl(tagger, "graphs.audio_tagger.outputs[0]", &tagger.outputs[0], &tags)?;
        }
        let seg = self.segmenter();
        let inputs = if m.family == Family::Bavs { 1 } else { 2 };
        if seg.inputs.len() != inputs {
            return Err(PackageError::Graph {
                path: seg.path.clone(),
                field: "graphs.segmenter.inputs".into(),
                detail: format!(
                    "segmenter must take {inputs} input(s) ({}); manifest lists {}",
                    if inputs == 1 { "frames" } else { "frames, audio" },
                    seg.inputs.len()
                ),
            });
        }
        let (h, w) = (m.vision.height as usize, m.vision.width as usize);
        // The frame axis may be left open (`N`): a graph of independent frames then also runs one
        // frame per call (`single_frame_graphs`).
        let frames = vec![Expect::Batch(t), Expect::Is(3), Expect::Is(h), Expect::Is(w)];
        expect_decl(seg, "graphs.segmenter.inputs[0]", &seg.inputs[0], &frames)?;
        if inputs == 2 {
            let mut audio: Vec<Expect> = self.segmenter_audio_shape().into_iter().map(Expect::Is).collect();
            audio[0] = Expect::Batch(t);
            expect_decl(seg, "graphs.segmenter.inputs[1]", &seg.inputs[1], &audio)?;
        }
        let k = m.output.channels();
        let logits = vec![Expect::Batch(t), Expect::Is(k), Expect::Any, Expect::Any];
        expect_decl(seg, "graphs.segmenter.outputs[0]", &seg.outputs[0], &logits)?;
        Ok(())
    }
}

/// Reads a two-stage package's label file and tree (`spec`, paths inside `dir`) and checks the
/// tree against them and the segmenter's `visual` labels. Every error names the file, and the line
/// or field.
fn read_two_stage(dir: &Path, spec: &LabelTreeSpec, visual: &[String]) -> Result<TwoStage, PackageError> {
    let audio_labels_path = dir.join(&spec.audio_labels);
    let text = std::fs::read_to_string(&audio_labels_path)
        .map_err(|e| PackageError::Read { path: audio_labels_path.clone(), detail: e.to_string() })?;
    let mut audio_labels: Vec<String> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let label = line.trim();
        let err = |detail: String| PackageError::Field { path: audio_labels_path.clone(), field: format!("line {}", i + 1), detail };
        if label.is_empty() {
            return Err(err("is empty; one label per line, no blank lines".into()));
        }
        if let Some(j) = audio_labels.iter().position(|l| l == label) {
            return Err(err(format!("repeats {label:?} of line {}", j + 1)));
        }
        audio_labels.push(label.to_string());
    }
    if audio_labels.is_empty() {
        return Err(PackageError::Field { path: audio_labels_path, field: "(file)".into(), detail: "lists no labels".into() });
    }
    let tree_path = dir.join(&spec.file);
    let tree = LabelTree::load(&tree_path, &audio_labels, visual)?;
    Ok(TwoStage { audio_labels, tree, tree_path, audio_labels_path, pixel_rule: spec.pixel_rule })
}

impl Manifest {
    /// Parses and validates manifest text; `path` names the file in errors. What
    /// [`ModelPackage::load`] does with `avseg.json` before it looks at the graphs.
    pub fn from_json(path: &Path, text: &str) -> Result<Self, PackageError> {
        let manifest = parse_manifest(path, text)?;
        validate_manifest(path, &manifest)?;
        Ok(manifest)
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
    if let Some(g) = m.tpavi_group {
        if m.family != Family::Tpavi {
            return Err(field_err(path, "tpavi_group", format!("is set, but the family is {:?}", m.family.as_str())));
        }
        if g == 0 || !m.frames_per_clip.is_multiple_of(g) {
            return Err(field_err(
                path,
                "tpavi_group",
                format!("is {g}; it must divide frames_per_clip ({})", m.frames_per_clip),
            ));
        }
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
    let two_stage = m.family == Family::Bavs;
    if two_stage {
        // The segmenter never hears the audio; the tagger and the tree decide what sounds.
        if m.graphs.audio_encoder.is_some() {
            return Err(field_err(path, "graphs.audio_encoder", "is set; a bavs package's audio goes to graphs.audio_tagger"));
        }
        let Some(tagger) = &m.graphs.audio_tagger else {
            return Err(field_err(path, "graphs.audio_tagger", "is missing; a bavs package needs an audio tagger"));
        };
        check_graph_spec(path, "graphs.audio_tagger", tagger, 1)?;
        let Some(tree) = &m.label_tree else {
            return Err(field_err(path, "label_tree", "is missing; a bavs package needs a label tree"));
        };
        for (field, file) in [("label_tree.file", &tree.file), ("label_tree.audio_labels", &tree.audio_labels)] {
            check_inside(path, field, file)?;
        }
        if let PixelRule::HeardMass { silent_ratio } = tree.pixel_rule {
            if !(silent_ratio.is_finite() && silent_ratio >= 0.0) {
                return Err(field_err(path, "label_tree.pixel_rule.silent_ratio", format!("is {silent_ratio}; a finite number at least 0 is needed")));
            }
        }
        if !matches!(m.output, OutputSpec::Semantic { .. }) {
            return Err(field_err(path, "output.kind", "is binary; a bavs segmenter has per-class logits (semantic), whose classes the label tree names"));
        }
    } else {
        if m.graphs.audio_tagger.is_some() {
            return Err(field_err(path, "graphs.audio_tagger", format!("is set, but the family is {:?} (only bavs has a tagger)", m.family.as_str())));
        }
        if m.label_tree.is_some() {
            return Err(field_err(path, "label_tree", format!("is set, but the family is {:?} (only bavs has a label tree)", m.family.as_str())));
        }
    }
    check_graph_spec(path, "graphs.segmenter", &m.graphs.segmenter, if two_stage { 1 } else { 2 })?;
    Ok(())
}

/// A file named by the manifest must live inside the package folder: packages are copied between
/// machines.
fn check_inside(path: &Path, field: &str, file: &str) -> Result<(), PackageError> {
    let rel = Path::new(file);
    let escapes = rel.is_absolute() || rel.components().any(|c| matches!(c, Component::ParentDir));
    if file.is_empty() || escapes {
        return Err(field_err(path, field, format!("{file:?} must be a path inside the package")));
    }
    Ok(())
}

fn check_graph_spec(path: &Path, field: &str, g: &GraphSpec, inputs: usize) -> Result<(), PackageError> {
    check_inside(path, &format!("{field}.file"), &g.file)?;
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

/// Reads, parses and validates `dir/avseg.json`, refusing a file too large to be a manifest
/// before reading it.
fn read_manifest(dir: &Path) -> Result<Manifest, PackageError> {
    let manifest_path = dir.join(MANIFEST_FILE);
    let read_err = |e: std::io::Error| PackageError::Read { path: manifest_path.clone(), detail: e.to_string() };
    let manifest_size = std::fs::metadata(&manifest_path).map_err(read_err)?.len();
    if manifest_size > PackageOptions::MAX_MANIFEST_BYTES {
        return Err(PackageError::TooLarge {
            path: manifest_path,
            detail: format!(
                "is {manifest_size} bytes; a manifest is at most {} (is this an avseg.json?)",
                PackageOptions::MAX_MANIFEST_BYTES
            ),
        });
    }
    let text = std::fs::read_to_string(&manifest_path).map_err(read_err)?;
    let manifest = parse_manifest(&manifest_path, &text)?;
    validate_manifest(&manifest_path, &manifest)?;
    Ok(manifest)
}

fn read_graph(dir: &Path, role: &'static str, spec: &GraphSpec, options: &PackageOptions) -> Result<GraphInfo, PackageError> {
    let path = dir.join(&spec.file);
    let size = match std::fs::metadata(&path) {
        Ok(m) if m.is_file() => m.len(),
        _ => {
            return Err(PackageError::Graph {
                path: path.clone(),
                field: format!("graphs.{role}.file"),
                detail: "file not found".into(),
            })
        }
    };
    if size > options.max_graph_bytes {
        return Err(PackageError::TooLarge {
            path: path.clone(),
            detail: format!(
                "graph file is {:.1} MB, over the limit of {:.1} MB (PackageOptions::max_graph_bytes, \
                 `--max-graph-mb` in the CLI)",
                size as f64 / 1e6,
                options.max_graph_bytes as f64 / 1e6
            ),
        });
    }
    let check = verify_graph(&path, role, spec, size, options)?;
    let unreadable = |detail: String| PackageError::Graph {
        path: path.clone(),
        field: format!("graphs.{role}.file"),
        detail: format!("not a readable ONNX model ({detail})"),
    };
    let proto = match onnx_summary::decode_file(&path) {
        Ok(proto) => proto,
        Err(detail) => {
            // A deferred checksum is checked now: a damaged file is reported as damaged, not as
            // a parse error.
            if check == FileCheck::Deferred {
                verify_graph(&path, role, spec, size, &PackageOptions { defer_checksums: false, ..options.clone() })?;
            }
            return Err(unreadable(detail));
        }
    };
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
    // An output that no node makes (and that is not an input or a weight) is a malformed graph;
    // tract 0.23 panics on it (found by fuzz/package_onnx).
    let made: std::collections::HashSet<&str> = graph
        .node
        .iter()
        .flat_map(|n| n.output.iter().map(String::as_str))
        .chain(graph.input.iter().map(|i| i.name.as_str()))
        .chain(initializers.iter().copied())
        .collect();
    if let Some(orphan) = declared_outputs.iter().find(|d| !made.contains(d.name.as_str())) {
        return Err(PackageError::Graph {
            path: path.clone(),
            field: format!("graphs.{role}.file"),
            detail: format!("graph output {:?} is made by no node: the ONNX graph is malformed", orphan.name),
        });
    }

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
    Ok(GraphInfo { role, path, inputs, outputs, parameters, opset, size, check, checksum: spec.checksum.clone() })
}

/// Compares a graph file with its recorded size and (when `verify_checksums`) checksum. Before the
/// ONNX is parsed, so that a damaged file is reported as damaged rather than as a parse error.
fn verify_graph(
    path: &Path,
    role: &str,
    spec: &GraphSpec,
    size: u64,
    options: &PackageOptions,
) -> Result<FileCheck, PackageError> {
    if let Some(recorded) = &spec.checksum {
        integrity::parse_checksum(recorded).map_err(|detail| PackageError::Field {
            path: path.parent().unwrap_or(path).join(MANIFEST_FILE),
            field: format!("graphs.{role}.checksum"),
            detail,
        })?;
    }
    let checksum = spec.checksum.as_deref().filter(|_| options.verify_checksums);
    if checksum.is_some() && options.defer_checksums {
        // Sizes here, checksums where the bytes are read.
        if let Some(recorded) = spec.size.filter(|&s| s != size) {
            return Err(PackageError::Corrupt {
                path: path.to_path_buf(),
                field: format!("graphs.{role}.size"),
                detail: integrity::size_mismatch(size, recorded),
            });
        }
        return Ok(FileCheck::Deferred);
    }
    let check = integrity::check_file(path, size, spec.size, checksum).map_err(|e| PackageError::Graph {
        path: path.to_path_buf(),
        field: format!("graphs.{role}.file"),
        detail: format!("cannot read: {e}"),
    })?;
    match &check {
        FileCheck::Mismatch(detail) => {
            let field = if spec.size.is_some_and(|s| s != size) { "size" } else { "checksum" };
            return Err(PackageError::Corrupt {
                path: path.to_path_buf(),
                field: format!("graphs.{role}.{field}"),
                detail: detail.clone(),
            });
        }
        FileCheck::NotRecorded if spec.checksum.is_none() => log::warn!(
            "{}: the manifest records no checksum for this graph (a package written before avseg recorded \
             them), so damage to the file cannot be detected; re-export the package to add one",
            path.display()
        ),
        FileCheck::NotRecorded if checksum.is_none() => return Ok(FileCheck::NotVerified),
        _ => {}
    }
    Ok(check)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn bundled(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("models").join(name)
    }

    /// The bundled packages record sizes and checksums, and they verify.
    #[test]
    fn bundled_packages_verify() {
        for name in ["default", "tiny-tpavi"] {
            let p = ModelPackage::load(bundled(name)).unwrap();
            for g in p.graphs() {
                assert_eq!(g.check, FileCheck::Verified, "{name} {}", g.role);
                assert_eq!(g.size, std::fs::metadata(&g.path).unwrap().len());
            }
            let files = ModelPackage::verify_files(bundled(name)).unwrap();
            assert_eq!(files.len(), 2);
            assert!(files.iter().all(|(_, _, c)| *c == FileCheck::Verified), "{files:?}");
        }
        let mut off = PackageOptions::default();
        off.verify_checksums = false;
        let p = ModelPackage::load_with(bundled("tiny-tpavi"), &off).unwrap();
        assert!(p.graphs().iter().all(|g| g.check == FileCheck::NotVerified));
    }

    /// Deferred checksums (the engine's mode): sizes are still compared here; a file too damaged
    /// to parse is reported as damaged, not as bad ONNX; an intact one is left to the backend.
    #[test]
    fn deferred_checksums() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["avseg.json", "audio_encoder.onnx", "segmenter.onnx"] {
            std::fs::copy(bundled("tiny-tpavi").join(f), dir.path().join(f)).unwrap();
        }
        let deferred = PackageOptions { defer_checksums: true, ..PackageOptions::default() };
        let p = ModelPackage::load_with(dir.path(), &deferred).unwrap();
        assert!(p.graphs().iter().all(|g| g.check == FileCheck::Deferred && g.checksum.is_some()));
        let graph = dir.path().join("segmenter.onnx");
        let bytes = std::fs::read(&graph).unwrap();
        std::fs::write(&graph, &bytes[..bytes.len() - 1]).unwrap();
        let e = ModelPackage::load_with(dir.path(), &deferred).unwrap_err();
        assert!(matches!(&e, PackageError::Corrupt { field, .. } if field == "graphs.segmenter.size"), "{e}");
        // The first bytes overwritten: not parseable, and the checksum says why.
        let mut garbled = bytes.clone();
        garbled[..64].fill(0xff);
        std::fs::write(&graph, &garbled).unwrap();
        let e = ModelPackage::load_with(dir.path(), &deferred).unwrap_err();
        assert!(matches!(&e, PackageError::Corrupt { field, .. } if field == "graphs.segmenter.checksum"), "{e}");
    }

    /// `tpavi_group` (added without a schema bump, so optional): the default model declares 1 and
    /// an open frame axis, so it runs one frame per call; the tiny package (no field: the official
    /// group of T) does not; a group that does not divide T, or on another family, is refused.
    #[test]
    fn tpavi_group_and_single_frame_graphs() {
        let default = ModelPackage::load(bundled("default")).unwrap();
        assert_eq!(default.manifest().tpavi_group, Some(1));
        assert!(default.manifest().frames_independent());
        assert_eq!(default.single_frame_graphs(), Ok(()));
        let tiny = ModelPackage::load(bundled("tiny-tpavi")).unwrap();
        assert_eq!((tiny.manifest().tpavi_group, tiny.manifest().coupled_frames()), (None, 5));
        let why = tiny.single_frame_graphs().unwrap_err();
        assert!(why.contains("groups of 5"), "{why}");

        let text = std::fs::read_to_string(bundled("default").join(MANIFEST_FILE)).unwrap();
        let path = Path::new("avseg.json");
        let with = |from: &str, to: &str| Manifest::from_json(path, &text.replace(from, to));
        for bad in ["\"tpavi_group\": 2", "\"tpavi_group\": 0"] {
            let e = with("\"tpavi_group\": 1", bad).unwrap_err().to_string();
            assert!(e.contains("tpavi_group") && e.contains("divide frames_per_clip (5)"), "{e}");
        }
        let e = with("\"family\": \"tpavi\"", "\"family\": \"avsegformer\"").unwrap_err().to_string();
        assert!(e.contains("tpavi_group") && e.contains("avsegformer"), "{e}");
        let m = with("  \"tpavi_group\": 1,\n", "").unwrap();
        assert_eq!((m.tpavi_group, m.frames_independent()), (None, false));

        // A group-1 package whose graph still fixes T frames per call: windows only, and why.
        let mut fixed = default.clone();
        let seg = fixed.graphs.iter_mut().find(|g| g.role == "segmenter").unwrap();
        seg.inputs[0].dims[0] = Dim::Fixed(5);
        let why = fixed.single_frame_graphs().unwrap_err();
        assert!(why.contains("segmenter.onnx") && why.contains("fixed 5 frames"), "{why}");
    }

    #[test]
    fn graph_files_over_the_size_limit_are_refused() {
        let mut small = PackageOptions::default();
        small.max_graph_bytes = 1_000_000;
        let e = ModelPackage::load_with(bundled("tiny-tpavi"), &small).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, PackageError::TooLarge { .. }) && msg.contains("segmenter.onnx"), "{msg}");
        assert!(msg.contains("1.8 MB") && msg.contains("max_graph_bytes"), "{msg}");
    }

    #[test]
    fn oversized_manifests_are_refused_unread() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(MANIFEST_FILE), vec![b' '; (PackageOptions::MAX_MANIFEST_BYTES + 1) as usize]).unwrap();
        let e = ModelPackage::load(dir.path()).unwrap_err();
        assert!(matches!(e, PackageError::TooLarge { .. }) && e.to_string().contains("avseg.json"), "{e}");
        let e = ModelPackage::verify_files(dir.path()).unwrap_err();
        assert!(matches!(e, PackageError::TooLarge { .. }), "avseg verify too: {e}");
    }
}

/// Inputs found by the fuzz targets (`fuzz/`), kept as regression tests on stable.
#[cfg(test)]
mod fuzz_regressions {
    use super::*;

    /// A copy of tiny-tpavi whose segmenter is `segmenter` (recorded size and checksum dropped).
    pub(crate) fn package_with_segmenter(dir: &Path, segmenter: &[u8]) {
        let tiny = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/tiny-tpavi");
        let mut m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(tiny.join(MANIFEST_FILE)).unwrap()).unwrap();
        let seg = m["graphs"]["segmenter"].as_object_mut().unwrap();
        seg.remove("size");
        seg.remove("checksum");
        std::fs::write(dir.join(MANIFEST_FILE), serde_json::to_string(&m).unwrap()).unwrap();
        std::fs::copy(tiny.join("audio_encoder.onnx"), dir.join("audio_encoder.onnx")).unwrap();
        std::fs::write(dir.join("segmenter.onnx"), segmenter).unwrap();
    }

    /// fuzz/package_onnx: a graph output no node makes. tract 0.23 panicked on it while parsing;
    /// validation now names it.
    #[test]
    fn a_graph_output_that_no_node_makes() {
        let bytes = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fuzz/package_onnx_orphan_output.onnx")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        package_with_segmenter(dir.path(), &bytes);
        let e = ModelPackage::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("segmenter.onnx") && e.contains("\"mask_logits\" is made by no node"), "{e}");
    }
}
