//! The label trees shipped in `models/label-trees/` load against their label lists, and judge a
//! few everyday seconds the way the tree's documentation says they should.

use std::path::{Path, PathBuf};

use avseg::{LabelTree, SoundMatcher, Verdict};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/label-trees/audioset-coco")
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap().lines().map(str::to_string).collect()
}

#[test]
fn audioset_coco_tree_loads_and_judges_everyday_seconds() {
    let audio = lines(&dir().join("audio_labels.txt"));
    let visual = lines(&dir().join("visual_labels.txt"));
    assert_eq!(visual.len(), 81, "background + 80 COCO-style classes");
    let tree = LabelTree::load(&dir().join("tree.json"), &audio, &visual).unwrap();
    // Every tagger label is in the tree.
    for a in &audio {
        assert!(tree.nodes().iter().any(|n| &n.name == a), "{a} is not in the tree");
    }
    let class = |name: &str| visual.iter().position(|v| v == name).unwrap();
    let node = |name: &str| tree.nodes().iter().position(|n| n.name == name).unwrap();
    let second = |heard: &[(&str, f32)]| {
        let mut tags = vec![0.0f32; audio.len()];
        for (name, score) in heard {
            tags[audio.iter().position(|a| a == name).unwrap()] = *score;
        }
        let mut m = SoundMatcher::new(&tree);
        m.hear(&tree, &tags).unwrap();
        m
    };
    let by = |m: &SoundMatcher, c: &str| match m.judge(&tree, class(c)) {
        Verdict::Sounding(s) => Some(tree.nodes()[s.node].name.clone()),
        Verdict::Silent => None,
    };

    // A dog barks beside a silent cat.
    let m = second(&[("Bark", 0.9), ("Dog", 0.8)]);
    assert_eq!(by(&m, "dog").as_deref(), Some("Bark"));
    assert_eq!(by(&m, "cat"), None);
    // Speech and a car horn: the person and the car sound, the dog does not.
    let m = second(&[("Speech", 0.7), ("Car horn", 0.4)]);
    assert_eq!(by(&m, "person").as_deref(), Some("Speech"));
    assert_eq!(by(&m, "car").as_deref(), Some("Car horn"));
    assert_eq!(by(&m, "dog"), None);
    // Wind and a guitar have no COCO counterpart: nothing is kept, both are reported.
    let m = second(&[("Wind", 0.9), ("Guitar", 0.8), ("Music", 0.9)]);
    for c in &visual {
        assert_eq!(by(&m, c), None, "{c}");
    }
    let unmatched: Vec<usize> = m.unmatched(&tree, &[class("person"), class("dog")]).collect();
    assert!(unmatched.contains(&node("Wind")) && unmatched.contains(&node("Guitar")), "{unmatched:?}");
    // An unsure "Animal" tag keeps any animal.
    let m = second(&[("Animal", 0.8)]);
    assert_eq!(by(&m, "horse").as_deref(), Some("Animal"));
    assert_eq!(by(&m, "car"), None);
    println!("{}", tree.describe(&visual));
}

/// The AVS-Reg tree (`python -m avsreg.label_tree`): one class and one sound per stamp, categories
/// from the stamp folders. A stamp's sound keeps that stamp only, even beside a stamp of its own
/// folder; silence keeps nothing.
#[test]
fn avs_reg_tree_loads_and_keeps_only_the_sounding_stamp() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/label-trees/avs-reg");
    let audio = lines(&dir.join("audio_labels.txt"));
    let visual = lines(&dir.join("visual_labels.txt"));
    assert_eq!((audio.len(), visual.len()), (101, 101), "100 stamps, plus silence / background");
    assert_eq!(audio.last().map(String::as_str), Some("silence"));
    assert_eq!(audio[..100], visual[1..]);
    let tree = LabelTree::load(&dir.join("tree.json"), &audio, &visual).unwrap();
    let class = |name: &str| visual.iter().position(|v| v == name).unwrap();
    let mut tags = vec![0.0f32; audio.len()];
    tags[audio.iter().position(|a| a == "dog").unwrap()] = 0.9;
    let mut m = SoundMatcher::new(&tree);
    m.hear(&tree, &tags).unwrap();
    assert!(matches!(m.judge(&tree, class("dog")), Verdict::Sounding(_)));
    assert_eq!(m.judge(&tree, class("fox")), Verdict::Silent, "a dog's bark does not keep a fox");
    let dogs = tree.nodes().iter().find(|n| n.name == "animals/mammals/dogs").unwrap();
    assert_eq!(dogs.support, vec![class("dog"), class("fox")]);
    tags.fill(0.0);
    tags[100] = 1.0;
    m.hear(&tree, &tags).unwrap();
    assert!((1..visual.len()).all(|c| m.judge(&tree, c) == Verdict::Silent), "silence keeps nothing");
}
