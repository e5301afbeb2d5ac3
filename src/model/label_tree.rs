//! The audio-visual label tree of a two-stage (BAVS-style) package: which visible object classes
//! each sound can come from.
//!
//! A BAVS package segments every *potential* sounding object from the frames alone, tags each
//! second's sounds with an audio classifier, and keeps an object only when a sound heard in that
//! second can come from its class ([`crate::post::sound_match`]). This file links the two label
//! sets. It is JSON:
//!
//! ```json
//! {
//!   "format": "avseg-label-tree",
//!   "version": 1,
//!   "default_threshold": 0.5,
//!   "parent_rule": "independent",
//!   "nodes": [
//!     { "name": "animal" },
//!     { "name": "dog_bark", "parent": "animal", "visual": ["dog"], "threshold": 0.3 },
//!     { "name": "meow", "parent": "animal", "visual": ["cat"] },
//!     { "name": "wind" }
//!   ]
//! }
//! ```
//!
//! * **Nodes.** Each node is a sound: one of the tagger's labels (it then has a score of its own),
//!   or a category above some of them (`animal`, `vehicle`). `parent` names another node; the
//!   nodes form a forest (no cycles).
//! * **Support.** A node's sound can come from its own `visual` labels and from every label its
//!   descendants' sounds can come from: `animal` above supports `dog` and `cat`. A sound whose
//!   node supports nothing (`wind`, or a tagger label missing from the tree) has no visible
//!   source: it keeps no object. Only tagger labels may list visual labels of their own; a
//!   category groups its children.
//! * **Heard.** A node is *heard* in a second when its own tagger score reaches its `threshold`
//!   (else `default_threshold`; both in (0, 1]). A category without a tagger score is never heard
//!   itself, and a child's score never lends its parent the parent's wider support: a bark keeps
//!   dogs, not every animal. A heard `animal` (the tagger unsure which animal) keeps any of them.
//! * **Parent rule.** `parent_rule: "independent"` (default) judges each node by its own score.
//!   `"needs_parent"` also requires the nearest ancestor with a tagger score to be heard, so the
//!   tagger must agree at both levels (AudioSet-style taggers score both) before a child counts;
//!   categories without a score are passed through.
//!
//! Loading checks everything against the two label sets and names the file and the field on
//! error: unknown visual labels, unknown or self parents, cycles, duplicate names, thresholds out
//! of range, and nodes that no tagger output can ever reach (a leaf that is not a tagger label,
//! or, under `"own"`, a category with visual labels but no score of its own).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::PackageError;

/// The `format` value of a label tree file.
pub const LABEL_TREE_FORMAT: &str = "avseg-label-tree";
/// The newest `version` of the file this runtime reads.
pub const LABEL_TREE_VERSION: u32 = 1;

/// Whether a node's parent must be heard for the node to count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ParentRule {
    /// Each node by its own score.
    #[default]
    Independent,
    /// A node counts only when the nearest ancestor with a tagger score is heard too.
    NeedsParent,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TreeFile {
    format: String,
    version: u32,
    #[serde(default = "default_threshold")]
    default_threshold: f32,
    #[serde(default)]
    parent_rule: ParentRule,
    nodes: Vec<NodeFile>,
}

fn default_threshold() -> f32 {
    0.5
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeFile {
    name: String,
    #[serde(default)]
    parent: Option<String>,
    #[serde(default)]
    visual: Vec<String>,
    #[serde(default)]
    threshold: Option<f32>,
}

/// One sound of the tree.
#[derive(Clone, Debug, PartialEq)]
pub struct TreeNode {
    /// The sound's name: a tagger label, or a category above some.
    pub name: String,
    /// The parent node's index.
    pub parent: Option<usize>,
    /// The tagger output that scores this node, if the tagger has its label.
    pub audio: Option<usize>,
    /// The score at which the node is heard.
    pub threshold: f32,
    /// 0 for a root, parent's + 1 below it: deeper is more specific.
    pub depth: usize,
    /// The visual classes (indices into the segmenter's labels) this sound can come from: its own
    /// and its descendants', sorted, without repeats.
    pub support: Vec<usize>,
}

/// A validated label tree; see the module documentation.
#[derive(Clone, Debug, PartialEq)]
pub struct LabelTree {
    nodes: Vec<TreeNode>,
    parent_rule: ParentRule,
    /// Node indices with every child before its parent.
    bottom_up: Vec<usize>,
    /// For each visual class, the nodes that support it.
    supporters: Vec<Vec<usize>>,
    audio_labels: usize,
}

impl LabelTree {
    /// Reads and validates the tree in `path` against the tagger's `audio_labels` and the
    /// segmenter's `visual_labels`.
    pub fn load(path: &Path, audio_labels: &[String], visual_labels: &[String]) -> Result<Self, PackageError> {
        let text = std::fs::read_to_string(path).map_err(|e| PackageError::Read { path: path.to_path_buf(), detail: e.to_string() })?;
        Self::parse(&text, path, audio_labels, visual_labels)
    }

    /// Validates the tree in `text`; `path` is the file named in errors.
    pub fn parse(text: &str, path: &Path, audio_labels: &[String], visual_labels: &[String]) -> Result<Self, PackageError> {
        let field = |field: String, detail: String| PackageError::Field { path: PathBuf::from(path), field, detail };
        let de = &mut serde_json::Deserializer::from_str(text);
        let file: TreeFile = serde_path_to_error::deserialize(de).map_err(|e| {
            let at = e.path().to_string();
            field(if at == "." { "(file)".into() } else { at }, e.inner().to_string())
        })?;
        if file.format != LABEL_TREE_FORMAT {
            return Err(field("format".into(), format!("is {:?}; a label tree says {LABEL_TREE_FORMAT:?}", file.format)));
        }
        if file.version == 0 || file.version > LABEL_TREE_VERSION {
            return Err(field(
                "version".into(),
                format!("is {}; this runtime reads versions 1..={LABEL_TREE_VERSION} (a newer avseg may read it)", file.version),
            ));
        }
        let check_threshold = |name: String, t: f32| {
            if t.is_finite() && t > 0.0 && t <= 1.0 {
                Ok(t)
            } else {
                Err(field(name, format!("is {t}; a threshold lies in (0, 1]")))
            }
        };
        let default_threshold = check_threshold("default_threshold".into(), file.default_threshold)?;
        if file.nodes.is_empty() {
            return Err(field("nodes".into(), "is empty; a tree needs at least one sound".into()));
        }
        let index_of = |name: &str, nodes: &[NodeFile]| nodes.iter().position(|n| n.name == name);

        let mut nodes = Vec::with_capacity(file.nodes.len());
        for (i, n) in file.nodes.iter().enumerate() {
            let at = |f: &str| format!("nodes[{i}].{f}");
            if n.name.trim().is_empty() {
                return Err(field(at("name"), "is empty".into()));
            }
            if let Some(first) = index_of(&n.name, &file.nodes).filter(|&j| j != i) {
                return Err(field(at("name"), format!("{:?} is also the name of nodes[{first}]", n.name)));
            }
            let parent = match &n.parent {
                None => None,
                Some(p) if *p == n.name => return Err(field(at("parent"), format!("{p:?} is the node itself"))),
                Some(p) => Some(index_of(p, &file.nodes).ok_or_else(|| field(at("parent"), format!("{p:?} is not the name of any node")))?),
            };
            let threshold = match n.threshold {
                Some(t) => check_threshold(at("threshold"), t)?,
                None => default_threshold,
            };
            let mut support = Vec::with_capacity(n.visual.len());
            for (j, v) in n.visual.iter().enumerate() {
                let class = visual_labels.iter().position(|l| l == v).ok_or_else(|| {
                    field(format!("nodes[{i}].visual[{j}]"), format!("{v:?} is not one of the segmenter's {} labels", visual_labels.len()))
                })?;
                if support.contains(&class) {
                    return Err(field(format!("nodes[{i}].visual[{j}]"), format!("{v:?} is listed twice")));
                }
                support.push(class);
            }
            let audio = audio_labels.iter().position(|l| *l == n.name);
            nodes.push(TreeNode { name: n.name.clone(), parent, audio, threshold, depth: 0, support });
        }

        // Depths, and cycles: a walk up from any node reaches a root within n steps.
        for i in 0..nodes.len() {
            let (mut at, mut depth) = (i, 0);
            while let Some(p) = nodes[at].parent {
                depth += 1;
                if depth > nodes.len() {
                    // `at` is now inside the cycle (n steps pass every node before it): walk it once.
                    let start = at;
                    let mut names = vec![nodes[start].name.as_str()];
                    let mut c = nodes[start].parent;
                    while let Some(j) = c.filter(|&j| j != start) {
                        names.push(&nodes[j].name);
                        c = nodes[j].parent;
                    }
                    return Err(field(
                        format!("nodes[{start}].parent"),
                        format!("the parents form a cycle: {} → {}", names.join(" → "), nodes[start].name),
                    ));
                }
                at = p;
            }
            nodes[i].depth = depth;
        }
        // Children before parents: deepest first.
        let mut bottom_up: Vec<usize> = (0..nodes.len()).collect();
        bottom_up.sort_by_key(|&i| std::cmp::Reverse(nodes[i].depth));
        let has_children: Vec<bool> = (0..nodes.len()).map(|i| nodes.iter().any(|n| n.parent == Some(i))).collect();
        for (i, n) in nodes.iter().enumerate() {
            if n.audio.is_none() && !has_children[i] {
                return Err(field(
                    format!("nodes[{i}].name"),
                    format!("{:?} is not one of the tagger's {} labels and has no children: no score can reach it", n.name, audio_labels.len()),
                ));
            }
            if n.audio.is_none() && !n.support.is_empty() {
                return Err(field(
                    format!("nodes[{i}].visual"),
                    format!("{:?} is a category (not a tagger label), which is never heard itself: list its visual labels under its children", n.name),
                ));
            }
        }
        // Support flows up: a parent's sound can come from whatever its children's can.
        for &i in &bottom_up {
            if let Some(p) = nodes[i].parent {
                let child = nodes[i].support.clone();
                let parent = &mut nodes[p].support;
                parent.extend(child);
            }
        }
        for n in &mut nodes {
            n.support.sort_unstable();
            n.support.dedup();
        }
        let mut supporters = vec![Vec::new(); visual_labels.len()];
        for (i, n) in nodes.iter().enumerate() {
            for &c in &n.support {
                supporters[c].push(i);
            }
        }
        Ok(LabelTree { nodes, parent_rule: file.parent_rule, bottom_up, supporters, audio_labels: audio_labels.len() })
    }

    /// The nodes, in file order.
    pub fn nodes(&self) -> &[TreeNode] {
        &self.nodes
    }

    /// Whether a node's parent must be heard for the node to count.
    pub fn parent_rule(&self) -> ParentRule {
        self.parent_rule
    }

    /// Node indices, every child before its parent.
    pub fn bottom_up(&self) -> &[usize] {
        &self.bottom_up
    }

    /// The nodes that support visual class `class` (none for an unknown class).
    pub fn supporters(&self, class: usize) -> &[usize] {
        self.supporters.get(class).map_or(&[], Vec::as_slice)
    }

    /// How many outputs the tagger has.
    pub fn audio_labels(&self) -> usize {
        self.audio_labels
    }

    /// The tree as indented text, one node per line, for `avseg info`.
    pub fn describe(&self, visual_labels: &[String]) -> String {
        let mut out = String::new();
        let roots = (0..self.nodes.len()).filter(|&i| self.nodes[i].parent.is_none());
        for r in roots {
            self.describe_node(r, visual_labels, &mut out);
        }
        out
    }

    fn describe_node(&self, i: usize, visual_labels: &[String], out: &mut String) {
        let n = &self.nodes[i];
        let names: Vec<&str> = n.support.iter().map(|&c| visual_labels.get(c).map_or("?", String::as_str)).collect();
        let score = if n.audio.is_some() { "tagger label" } else { "category" };
        out.push_str(&format!(
            "{}{} ({score}, heard at {}): {}\n",
            "  ".repeat(n.depth),
            n.name,
            n.threshold,
            if names.is_empty() { "no visible source".to_string() } else { names.join(", ") }
        ));
        for c in (0..self.nodes.len()).filter(|&c| self.nodes[c].parent == Some(i)) {
            self.describe_node(c, visual_labels, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn audio() -> Vec<String> {
        labels(&["dog_bark", "meow", "car_horn", "siren", "wind", "animal"])
    }

    fn visual() -> Vec<String> {
        labels(&["background", "dog", "cat", "car", "bus"])
    }

    fn parse(text: &str) -> Result<LabelTree, PackageError> {
        LabelTree::parse(text, Path::new("pkg/tree.json"), &audio(), &visual())
    }

    fn tree_with(nodes: &str) -> String {
        format!(r#"{{"format": "avseg-label-tree", "version": 1, "nodes": [{nodes}]}}"#)
    }

    #[test]
    fn support_flows_up_and_depths_order_the_nodes() {
        let t = parse(&tree_with(
            r#"{"name": "animal"}, {"name": "dog_bark", "parent": "animal", "visual": ["dog"]},
               {"name": "meow", "parent": "animal", "visual": ["cat"], "threshold": 0.25},
               {"name": "vehicle"}, {"name": "car_horn", "parent": "vehicle", "visual": ["car"]},
               {"name": "siren", "parent": "vehicle", "visual": ["bus", "car"]},
               {"name": "wind"}"#,
        ))
        .unwrap();
        let n = t.nodes();
        assert_eq!(n[0].support, vec![1, 2]);
        assert_eq!(n[3].support, vec![3, 4]);
        assert_eq!(n[4].support, vec![3]);
        assert_eq!(n[5].support, vec![3, 4]);
        assert!(n[6].support.is_empty());
        assert_eq!((n[0].audio, n[3].audio, n[1].audio), (Some(5), None, Some(0)));
        assert_eq!((n[1].depth, n[0].depth, n[2].threshold, n[1].threshold), (1, 0, 0.25, 0.5));
        assert_eq!(t.supporters(3), &[3, 4, 5]);
        let pos = |i: usize| t.bottom_up().iter().position(|&j| j == i).unwrap();
        assert!(pos(1) < pos(0) && pos(4) < pos(3));
        let text = t.describe(&visual());
        assert!(text.contains("animal (tagger label, heard at 0.5): dog, cat"), "{text}");
        assert!(text.contains("  car_horn (tagger label, heard at 0.5): car"), "{text}");
        assert!(text.contains("wind (tagger label, heard at 0.5): no visible source"), "{text}");
        assert!(text.contains("vehicle (category, heard at 0.5): car, bus"), "{text}");
    }

    /// Every rejected tree names the file and the field.
    #[test]
    fn errors_name_the_file_and_field() {
        let cases: &[(&str, &str, &str)] = &[
            (r#"{"name": "dog_bark", "visual": ["wolf"]}"#, "nodes[0].visual[0]", "\"wolf\" is not one of the segmenter's 5 labels"),
            (r#"{"name": "dog_bark", "visual": ["dog", "dog"]}"#, "nodes[0].visual[1]", "listed twice"),
            (r#"{"name": "dog_bark", "parent": "mammal"}"#, "nodes[0].parent", "\"mammal\" is not the name of any node"),
            (r#"{"name": "dog_bark", "parent": "dog_bark"}"#, "nodes[0].parent", "is the node itself"),
            (
                r#"{"name": "dog_bark", "parent": "meow"}, {"name": "meow", "parent": "siren"}, {"name": "siren", "parent": "dog_bark"}"#,
                "nodes[0].parent",
                "cycle: dog_bark → meow → siren → dog_bark",
            ),
            (r#"{"name": "meow"}, {"name": "meow"}"#, "nodes[1].name", "also the name of nodes[0]"),
            (
                r#"{"name": "wind", "parent": "siren"}, {"name": "siren", "parent": "meow"}, {"name": "meow", "parent": "siren"}"#,
                "nodes[1].parent",
                "cycle: siren → meow → siren",
            ),
            (r#"{"name": "purr", "visual": ["cat"]}"#, "nodes[0].name", "not one of the tagger's 6 labels and has no children"),
            (r#"{"name": "meow", "threshold": 0}"#, "nodes[0].threshold", "lies in (0, 1]"),
            (r#"{"name": "meow", "threshold": 1.5}"#, "nodes[0].threshold", "lies in (0, 1]"),
            (r#"{"name": "meow", "colour": "red"}"#, "nodes[0]", "unknown field `colour`"),
            (r#"{"name": " "}"#, "nodes[0].name", "is empty"),
        ];
        for (nodes, want_field, want) in cases {
            let e = parse(&tree_with(nodes)).unwrap_err().to_string();
            assert!(e.starts_with("pkg/tree.json: field `"), "{e}");
            assert!(e.contains(&format!("`{want_field}")), "{nodes}: {e}");
            assert!(e.contains(want), "{nodes}: {e}");
        }
        let e = parse(r#"{"format": "avseg-model", "version": 1, "nodes": []}"#).unwrap_err().to_string();
        assert!(e.contains("`format`"), "{e}");
        let e = parse(r#"{"format": "avseg-label-tree", "version": 2, "nodes": [{"name": "meow"}]}"#).unwrap_err().to_string();
        assert!(e.contains("`version`") && e.contains("versions 1..=1"), "{e}");
        let e = parse(r#"{"format": "avseg-label-tree", "version": 1, "nodes": []}"#).unwrap_err().to_string();
        assert!(e.contains("`nodes`") && e.contains("empty"), "{e}");
        let e = parse(r#"{"format": "avseg-label-tree", "version": 1, "default_threshold": -1, "nodes": [{"name": "meow"}]}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`default_threshold`"), "{e}");
        let category = r#"{"format": "avseg-label-tree", "version": 1, "parent_rule": "needs_parent",
                      "nodes": [{"name": "pets", "visual": ["dog"]}, {"name": "meow", "parent": "pets"}]}"#;
        let e = parse(category).unwrap_err().to_string();
        assert!(e.contains("`nodes[0].visual`") && e.contains("never heard itself"), "{e}");
        let e = parse(r#"{"format": "avseg-label-tree", "version": 1, "parent_rule": "max", "nodes": [{"name": "meow"}]}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`parent_rule`") && e.contains("unknown variant"), "{e}");
        let e = LabelTree::load(Path::new("/nonexistent/tree.json"), &audio(), &visual()).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/tree.json"), "{e}");
    }
}
