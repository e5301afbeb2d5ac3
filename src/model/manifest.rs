//! `avseg.json`: what a model package declares about itself.
//!
//! The manifest is versioned (`schema_version`) and strict: unknown fields are rejected so that a
//! typo (`"treshold"`) is an error instead of a silently ignored setting.

use serde::{Deserialize, Serialize};

use crate::frontend::audio::PatchPadding;
use crate::frontend::vision::VisionConfig;

/// The value of the `format` field; identifies the file as an avseg manifest.
pub const FORMAT: &str = "avseg-model";
/// The manifest schema this build reads.
pub const SCHEMA_VERSION: u32 = 1;
/// File name of the manifest inside a package folder.
pub const MANIFEST_FILE: &str = "avseg.json";

/// The parsed `avseg.json` of a model package.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Must be `"avseg-model"`.
    pub format: String,
    /// Must be [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The package's name, e.g. `avseg-default-tpavi-effnetlite0`.
    pub name: String,
    /// Free-text description (optional).
    #[serde(default)]
    pub description: String,
    /// The model family, which decides how frames are coupled.
    pub family: Family,
    /// Frames the segmenter takes in one call (T). TPAVI couples them through its attention.
    pub frames_per_clip: usize,
    /// TPAVI only: frames per attention group, a divisor of T (optional; absent means all T
    /// frames, as in every official model). With 1, frames never meet inside the model, so a
    /// stream can segment each one as soon as its audio is in ([`Manifest::frames_independent`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpavi_group: Option<usize>,
    /// Input size, resize filter and normalisation of the frames.
    pub vision: VisionConfig,
    /// The audio front end and embedding width.
    pub audio: AudioSpec,
    /// What the segmenter's logits mean (binary or semantic).
    pub output: OutputSpec,
    /// The ONNX graph files and their input/output names.
    pub graphs: Graphs,
    /// Where the weights came from, their licence and evaluation results.
    pub provenance: Provenance,
    /// Two-stage (`bavs`) packages only: the audio tagger's labels and the audio-visual label tree
    /// that links them to the segmenter's classes (optional field; required by that family).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_tree: Option<LabelTreeSpec>,
}

/// The manifest's `label_tree` section (two-stage packages): files inside the package, and how
/// the heard sounds choose pixels.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelTreeSpec {
    /// The tree, in the `avseg-label-tree` format ([`crate::LabelTree`]).
    pub file: String,
    /// The tagger's labels, one per line, in the order of its output scores.
    pub audio_labels: String,
    /// Which pixels the heard sounds keep (optional; [`PixelRule::ArgMax`] when absent, as every
    /// package before it was written).
    #[serde(default, skip_serializing_if = "PixelRule::is_arg_max")]
    pub pixel_rule: PixelRule,
}

/// How a two-stage package turns a frame's class probabilities and its heard sounds into a mask
/// (the manifest's `label_tree.pixel_rule`, `{"kind": "arg_max"}` or `{"kind": "heard_mass",
/// "silent_ratio": 0.05}`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum PixelRule {
    /// A pixel is kept when its most probable class is one a heard sound supports.
    #[default]
    ArgMax,
    /// A pixel is kept when the heard classes together are more probable than the background, and
    /// more than `silent_ratio` times the classes no heard sound supports; it takes its most
    /// probable heard class. An object whose pixels the segmenter splits between its own class
    /// and look-alikes is kept whole, which the arg-max rule loses when a look-alike wins a pixel.
    HeardMass {
        /// How much of the silent classes' probability the heard classes must exceed (0: the
        /// silent classes do not count; larger values keep fewer pixels). Finite, at least 0.
        silent_ratio: f32,
    },
}

impl PixelRule {
    /// True for the default rule (which the manifest leaves out).
    pub fn is_arg_max(&self) -> bool {
        *self == PixelRule::ArgMax
    }
}

impl Manifest {
    /// True when no frame's result depends on another frame: AVSegFormer, and TPAVI with an
    /// attention group of 1.
    pub fn frames_independent(&self) -> bool {
        match self.family {
            Family::Avsegformer | Family::Bavs => true,
            Family::Tpavi => self.tpavi_group == Some(1),
        }
    }

    /// Frames whose results depend on each other: T for official TPAVI, 1 for independent frames.
    pub fn coupled_frames(&self) -> usize {
        match self.family {
            Family::Avsegformer | Family::Bavs => 1,
            Family::Tpavi => self.tpavi_group.unwrap_or(self.frames_per_clip),
        }
    }
}

/// Model families differ in how frames are coupled and how their checkpoints map onto graphs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Family {
    /// AVSBench baseline: TPAVI attention couples the T frames of a clip.
    Tpavi,
    /// AVSegFormer: frames are independent; each uses its own audio patch.
    Avsegformer,
    /// Two-stage (BAVS-style): an audio-agnostic semantic segmenter finds every object that could
    /// sound, an audio tagger scores each second's sounds, and the label tree keeps the objects a
    /// heard sound can come from. Frames are independent.
    Bavs,
}

impl Family {
    /// The manifest spelling: `"tpavi"` or `"avsegformer"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Tpavi => "tpavi",
            Family::Avsegformer => "avsegformer",
            Family::Bavs => "bavs",
        }
    }
}

/// The manifest's `audio` section: how audio is turned into model input.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AudioSpec {
    /// The audio pre-processing the model was trained with.
    pub frontend: AudioFrontendKind,
    /// How a clip with fewer than T audio patches is completed.
    pub patch_padding: PatchPadding,
    /// Width of one audio embedding (128 for VGGish); for a two-stage package, the tagger's
    /// scores per second (its label count).
    pub embedding_dim: usize,
}

/// The audio pre-processing a package expects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AudioFrontendKind {
    /// 16 kHz, 96×64 log-mel patches of 0.96 s, as VGGish.
    VggishLogmel,
}

/// The manifest's `output` section: how mask logits become labels.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum OutputSpec {
    /// One logit channel; foreground where sigmoid(logit) > threshold.
    Binary {
        /// Probability threshold, in (0, 1).
        threshold: f32,
    },
    /// One logit channel per class; the label is the argmax, class 0 is background.
    Semantic {
        /// Class names, one per logit channel (2..=256); index 0 is background.
        labels: Vec<String>,
        /// One RGB colour per label, for indexed mask PNGs and overlays.
        palette: Vec<[u8; 3]>,
    },
}

impl OutputSpec {
    /// Logit channels the segmenter must produce.
    pub fn channels(&self) -> usize {
        match self {
            OutputSpec::Binary { .. } => 1,
            OutputSpec::Semantic { labels, .. } => labels.len(),
        }
    }
}

/// The manifest's `graphs` section: the ONNX graphs of the package.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Graphs {
    /// Log-mel patches → embeddings. Absent when the segmenter takes log-mel itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio_encoder: Option<GraphSpec>,
    /// Two-stage packages: log-mel patches `[T, 1, 96, 64]` → each second's tag probabilities
    /// `[T, A]` (optional field; required by, and only allowed in, the `bavs` family).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio_tagger: Option<GraphSpec>,
    /// Frames + audio (embeddings, or log-mel without an encoder) → mask logits; two-stage
    /// packages: frames alone → per-class logits.
    pub segmenter: GraphSpec,
}

/// One graph in the manifest: its file and the names of its inputs and outputs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphSpec {
    /// ONNX file, relative to the package folder.
    pub file: String,
    /// Graph input names, in the order the runtime feeds them.
    pub inputs: Vec<String>,
    /// Graph output names; the first is the one the runtime reads.
    pub outputs: Vec<String>,
    /// The file's size in bytes (optional; written by the exporters since checksums were added).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// The file's checksum, `"xxh3-128:<32 hex digits>"` (optional, as `size`); loading verifies it
    /// (see [`crate::model::integrity`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
}

/// The manifest's `provenance` section: where the package came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    /// Where the weights came from (checkpoint, training run).
    pub source: String,
    /// The licence(s) of the weights.
    pub licence: String,
    /// The tool or script that made the package (optional).
    #[serde(default)]
    pub created_by: String,
    /// False for random-weight packages (test fixtures): their masks carry no meaning.
    #[serde(default)]
    pub trained: bool,
    /// Number of weight elements, if recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<u64>,
    /// Free-form evaluation results (e.g. `{"avs_reg_s4_miou": 0.74}`).
    #[serde(default)]
    pub metrics: serde_json::Map<String, serde_json::Value>,
    /// Free-form record of how a trained package was made: data, hyper-parameters, time and machine.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub training: serde_json::Map<String, serde_json::Value>,
    /// Written by `avseg convert`: converter version, family, precision and each input file's
    /// name, size and sha256, so a package can be traced back to the exact checkpoint.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub conversion: serde_json::Map<String, serde_json::Value>,
}
