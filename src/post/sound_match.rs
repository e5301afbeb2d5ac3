//! Two-stage (BAVS-style) matching: which of a frame's candidate objects the sounds of its second
//! keep.
//!
//! Stage 1 proposes every object that *could* sound, from the frame alone. Stage 2 tags the
//! second's audio. A [`SoundMatcher`] hears one second's tag scores through the package's
//! [`LabelTree`] (thresholds and the parent rule; see that module) and then judges each
//! candidate object by its visual class:
//!
//! * **Sounding**: some heard node supports the class. The object is attributed to the most
//!   specific such node (deepest in the tree; then the higher score; then the earlier node in the
//!   file), whose name and score go with it. Two objects of one class (two dogs) are both kept, by
//!   the same sound.
//! * **Silent**: no heard node supports the class. The object is dropped from the output and kept
//!   only for callers who ask (debugging).
//!
//! A heard sound that supports no visible class this second (off-screen, or background noise
//! such as wind) keeps nothing; [`SoundMatcher::unmatched`] lists such sounds for reports.
//!
//! The matcher keeps its buffers: hearing and judging allocate nothing after construction.

use super::PostError;
use crate::model::label_tree::{LabelTree, ParentRule};

/// The sound that keeps an object.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SoundSupport {
    /// The supporting node: an index into [`LabelTree::nodes`].
    pub node: usize,
    /// That node's score this second.
    pub score: f32,
}

/// What the sounds of a second say of one candidate object.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Verdict {
    /// A heard sound can come from the object's class.
    Sounding(SoundSupport),
    /// No heard sound can come from the object's class.
    Silent,
}

/// Node scores and heard flags of the current second; see the module documentation.
#[derive(Clone, Debug)]
pub struct SoundMatcher {
    scores: Vec<f32>,
    heard: Vec<bool>,
    /// Under `needs_parent`: whether a node lets its children count (a scored node when heard,
    /// a category when its own parent lets it).
    gate: Vec<bool>,
    /// Whether some child of the node is heard (so [`SoundMatcher::unmatched`] leaves the node to
    /// it), found in one pass per second.
    child_heard: Vec<bool>,
}

impl SoundMatcher {
    /// A matcher for `tree`, having heard nothing.
    pub fn new(tree: &LabelTree) -> Self {
        let n = tree.nodes().len();
        Self { scores: vec![0.0; n], heard: vec![false; n], gate: vec![true; n], child_heard: vec![false; n] }
    }

    /// Hears one second: `tags` holds the tagger's probability for each of its labels. Fails,
    /// hearing nothing, when the count differs from the tree's tagger labels or a score is not a
    /// probability.
    pub fn hear(&mut self, tree: &LabelTree, tags: &[f32]) -> Result<(), PostError> {
        self.scores.fill(0.0);
        self.heard.fill(false);
        self.gate.fill(true);
        self.child_heard.fill(false);
        if tags.len() != tree.audio_labels() {
            return Err(PostError::TagScores {
                detail: format!("{} scores for a tagger of {} labels", tags.len(), tree.audio_labels()),
            });
        }
        if let Some((i, v)) = tags.iter().enumerate().find(|(_, v)| !(v.is_finite() && (0.0..=1.0).contains(*v))) {
            return Err(PostError::TagScores { detail: format!("score {v} of tagger output {i} is not a probability in [0, 1]") });
        }
        let nodes = tree.nodes();
        for (i, n) in nodes.iter().enumerate() {
            self.scores[i] = n.audio.map_or(0.0, |a| tags[a]);
            self.heard[i] = n.audio.is_some() && self.scores[i] >= n.threshold;
        }
        if tree.parent_rule() == ParentRule::NeedsParent {
            // Parents first (the reverse of children-first), so each node sees its parent's gate.
            for &i in tree.bottom_up().iter().rev() {
                let open = nodes[i].parent.is_none_or(|p| self.gate[p]);
                self.heard[i] &= open;
                self.gate[i] = if nodes[i].audio.is_some() { self.heard[i] } else { open };
            }
        }
        for (i, n) in nodes.iter().enumerate() {
            if let (true, Some(p)) = (self.heard[i], n.parent) {
                self.child_heard[p] = true;
            }
        }
        Ok(())
    }

    /// Node `node`'s score this second (0 for an unknown node).
    pub fn score(&self, node: usize) -> f32 {
        self.scores.get(node).copied().unwrap_or(0.0)
    }

    /// Whether node `node` is heard this second.
    pub fn heard(&self, node: usize) -> bool {
        self.heard.get(node).copied().unwrap_or(false)
    }

    /// The verdict for an object of visual class `class` (an unknown class is silent).
    pub fn judge(&self, tree: &LabelTree, class: usize) -> Verdict {
        let nodes = tree.nodes();
        let best = tree
            .supporters(class)
            .iter()
            .copied()
            .filter(|&i| self.heard[i])
            // Deepest first, then the higher score, then the earlier node: max_by keeps the last
            // of equals, so the node order is reversed for the final tie.
            .max_by(|&a, &b| {
                (nodes[a].depth, self.scores[a]).partial_cmp(&(nodes[b].depth, self.scores[b])).unwrap_or(std::cmp::Ordering::Equal).then(b.cmp(&a))
            });
        match best {
            Some(node) => Verdict::Sounding(SoundSupport { node, score: self.scores[node] }),
            None => Verdict::Silent,
        }
    }

    /// The verdict for every visual class `0..classes` into `out` (its buffer reused), class 0
    /// (background) always silent: what a frame's objects and pixels are judged by.
    pub fn judge_classes(&self, tree: &LabelTree, classes: usize, out: &mut Vec<Verdict>) {
        out.clear();
        out.extend((0..classes).map(|c| if c == 0 { Verdict::Silent } else { self.judge(tree, c) }));
    }

    /// Heard nodes that support none of the `visible` classes: sounds with no visible source this
    /// second (off-screen, or background). A node heard together with one of its children is left
    /// to the child, the more specific report.
    pub fn unmatched<'a>(&'a self, tree: &'a LabelTree, visible: &'a [usize]) -> impl Iterator<Item = usize> + 'a {
        let nodes = tree.nodes();
        (0..nodes.len()).filter(move |&i| {
            self.heard[i]
                && !nodes[i].support.iter().any(|c| visible.contains(c))
                && !self.child_heard[i]
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const AUDIO: [&str; 6] = ["dog_bark", "meow", "car_horn", "siren", "wind", "animal"];
    const VISUAL: [&str; 5] = ["background", "dog", "cat", "car", "bus"];
    const DOG: usize = 1;
    const CAT: usize = 2;
    const CAR: usize = 3;
    const BUS: usize = 4;

    fn tree(parent_rule: &str) -> LabelTree {
        let text = format!(
            r#"{{"format": "avseg-label-tree", "version": 1, "default_threshold": 0.5, "parent_rule": "{parent_rule}",
                "nodes": [
                  {{"name": "animal"}},
                  {{"name": "dog_bark", "parent": "animal", "visual": ["dog"], "threshold": 0.3}},
                  {{"name": "meow", "parent": "animal", "visual": ["cat"]}},
                  {{"name": "vehicle"}},
                  {{"name": "car_horn", "parent": "vehicle", "visual": ["car"]}},
                  {{"name": "siren", "parent": "vehicle", "visual": ["car", "bus"]}},
                  {{"name": "wind"}}
                ]}}"#
        );
        let s = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        LabelTree::parse(&text, Path::new("tree.json"), &s(&AUDIO), &s(&VISUAL)).unwrap()
    }

    /// Scores in the tagger's order: dog_bark, meow, car_horn, siren, wind, animal.
    fn heard(t: &LabelTree, tags: [f32; 6]) -> SoundMatcher {
        let mut m = SoundMatcher::new(t);
        m.hear(t, &tags).unwrap();
        m
    }

    fn name(t: &LabelTree, v: Verdict) -> Option<(&str, f32)> {
        match v {
            Verdict::Sounding(s) => Some((t.nodes()[s.node].name.as_str(), s.score)),
            Verdict::Silent => None,
        }
    }

    #[test]
    fn tree_walk_attributes_to_the_most_specific_heard_node() {
        let t = tree("independent");
        // A bark at 0.8: dog_bark is heard and keeps the dog; "animal" (0.1) is not heard, and
        // the bark lends it nothing, so the cat stays silent.
        let m = heard(&t, [0.8, 0.0, 0.0, 0.0, 0.0, 0.1]);
        assert!(m.heard(1) && !m.heard(0) && !m.heard(2));
        assert_eq!(name(&t, m.judge(&t, DOG)), Some(("dog_bark", 0.8)));
        assert_eq!(m.judge(&t, CAT), Verdict::Silent, "a bark keeps no cat");
        // Only the tagger's own "animal" output: the category keeps any animal.
        let m = heard(&t, [0.1, 0.2, 0.0, 0.0, 0.0, 0.9]);
        assert_eq!(name(&t, m.judge(&t, DOG)), Some(("animal", 0.9)));
        assert_eq!(name(&t, m.judge(&t, CAT)), Some(("animal", 0.9)));
        assert_eq!(m.judge(&t, CAR), Verdict::Silent);
        // Both: the dog goes to the more specific bark, the cat to "animal".
        let m = heard(&t, [0.6, 0.0, 0.0, 0.0, 0.0, 0.9]);
        assert_eq!(name(&t, m.judge(&t, DOG)), Some(("dog_bark", 0.6)));
        assert_eq!(name(&t, m.judge(&t, CAT)), Some(("animal", 0.9)));
    }

    #[test]
    fn thresholds_are_per_node() {
        let t = tree("independent");
        // dog_bark is heard at 0.3, meow needs the default 0.5.
        let m = heard(&t, [0.3, 0.49, 0.0, 0.0, 0.0, 0.0]);
        assert_eq!(name(&t, m.judge(&t, DOG)), Some(("dog_bark", 0.3)));
        assert_eq!(m.judge(&t, CAT), Verdict::Silent);
        let m = heard(&t, [0.29, 0.5, 0.0, 0.0, 0.0, 0.0]);
        assert_eq!(m.judge(&t, DOG), Verdict::Silent);
        assert_eq!(name(&t, m.judge(&t, CAT)), Some(("meow", 0.5)));
    }

    #[test]
    fn several_sounding_objects_each_keep_their_own_sound() {
        let t = tree("independent");
        let m = heard(&t, [0.9, 0.0, 0.7, 0.0, 0.0, 0.0]);
        assert_eq!(name(&t, m.judge(&t, DOG)), Some(("dog_bark", 0.9)));
        assert_eq!(name(&t, m.judge(&t, CAR)), Some(("car_horn", 0.7)));
        assert_eq!(m.judge(&t, CAT), Verdict::Silent);
        assert_eq!(m.judge(&t, BUS), Verdict::Silent);
    }

    #[test]
    fn a_silent_second_keeps_nothing() {
        let t = tree("independent");
        let m = heard(&t, [0.0; 6]);
        for class in 0..VISUAL.len() {
            assert_eq!(m.judge(&t, class), Verdict::Silent);
        }
        assert_eq!(m.unmatched(&t, &[DOG, CAT]).count(), 0);
    }

    #[test]
    fn an_off_screen_sound_keeps_nothing_and_is_reported() {
        let t = tree("independent");
        // A siren and wind; only a dog and a cat are visible.
        let m = heard(&t, [0.0, 0.0, 0.0, 0.95, 0.8, 0.0]);
        assert_eq!(m.judge(&t, DOG), Verdict::Silent);
        assert_eq!(m.judge(&t, CAT), Verdict::Silent);
        let names: Vec<&str> = m.unmatched(&t, &[DOG, CAT]).map(|i| t.nodes()[i].name.as_str()).collect();
        assert_eq!(names, ["siren", "wind"]);
        // With a bus in view the siren has its source.
        assert_eq!(name(&t, m.judge(&t, BUS)), Some(("siren", 0.95)));
        assert_eq!(m.unmatched(&t, &[BUS]).map(|i| t.nodes()[i].name.as_str()).collect::<Vec<_>>(), ["wind"]);
    }

    #[test]
    fn two_objects_of_one_class_are_both_kept_by_the_same_sound() {
        let t = tree("independent");
        let m = heard(&t, [0.0, 0.0, 0.6, 0.9, 0.0, 0.0]);
        // Two cars: each is judged alone, and both go to the more specific, higher-scoring sound
        // of equal depth (siren 0.9 over car_horn 0.6).
        let objects = [CAR, CAR];
        let verdicts: Vec<_> = objects.iter().map(|&c| name(&t, m.judge(&t, c))).collect();
        assert_eq!(verdicts, [Some(("siren", 0.9)), Some(("siren", 0.9))]);
    }

    #[test]
    fn needs_parent_requires_the_scored_ancestor() {
        let t = tree("needs_parent");
        // The bark alone does not count: its scored parent "animal" is not heard.
        let m = heard(&t, [0.8, 0.0, 0.0, 0.0, 0.0, 0.1]);
        assert!(!m.heard(1) && !m.heard(0));
        assert_eq!(m.judge(&t, DOG), Verdict::Silent);
        // Both levels agree: the dog goes to the bark.
        let m = heard(&t, [0.8, 0.0, 0.0, 0.0, 0.0, 0.6]);
        assert_eq!(name(&t, m.judge(&t, DOG)), Some(("dog_bark", 0.8)));
        assert_eq!(name(&t, m.judge(&t, CAT)), Some(("animal", 0.6)));
        // "vehicle" has no score: it passes its children through.
        let m = heard(&t, [0.0, 0.0, 0.0, 0.9, 0.0, 0.0]);
        assert_eq!(name(&t, m.judge(&t, BUS)), Some(("siren", 0.9)));
    }

    #[test]
    fn bad_scores_are_refused_and_hear_nothing() {
        let t = tree("independent");
        let mut m = heard(&t, [0.9, 0.9, 0.9, 0.9, 0.9, 0.9]);
        let e = m.hear(&t, &[0.5; 5]).unwrap_err().to_string();
        assert!(e.contains("5 scores for a tagger of 6 labels"), "{e}");
        assert_eq!(m.judge(&t, DOG), Verdict::Silent, "a refused second hears nothing");
        for bad in [f32::NAN, -0.1, 1.5, f32::INFINITY] {
            let e = m.hear(&t, &[0.1, 0.1, bad, 0.1, 0.1, 0.1]).unwrap_err().to_string();
            assert!(e.contains("tagger output 2"), "{e}");
        }
    }
}
