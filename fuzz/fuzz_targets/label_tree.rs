//! Label tree text (two-stage packages) through the parser and validator, then one second of tag
//! scores taken from the input's tail through the matcher. Oracle: no panic; a tree that passes
//! has sorted in-range support lists and a children-first order; every verdict names a heard node
//! that supports the judged class.
#![no_main]

use std::path::Path;

use avseg_runtime::{LabelTree, SoundMatcher, Verdict};
use libfuzzer_sys::fuzz_target;

const AUDIO: [&str; 6] = ["dog_bark", "meow", "car_horn", "siren", "wind", "animal"];
const VISUAL: [&str; 5] = ["background", "dog", "cat", "car", "bus"];

fuzz_target!(|data: &[u8]| {
    // The last 6 bytes are the scores (byte / 255), the rest the tree.
    let (text, scores) = data.split_at(data.len().saturating_sub(AUDIO.len()));
    let Ok(text) = std::str::from_utf8(text) else { return };
    let audio: Vec<String> = AUDIO.iter().map(|s| s.to_string()).collect();
    let visual: Vec<String> = VISUAL.iter().map(|s| s.to_string()).collect();
    let Ok(tree) = LabelTree::parse(text, Path::new("pkg/tree.json"), &audio, &visual) else { return };
    let nodes = tree.nodes();
    for n in nodes {
        assert!(n.support.windows(2).all(|w| w[0] < w[1]) && n.support.iter().all(|&c| c < VISUAL.len()));
        assert!(n.threshold > 0.0 && n.threshold <= 1.0);
    }
    let order = tree.bottom_up();
    assert_eq!(order.len(), nodes.len());
    for (pos, &i) in order.iter().enumerate() {
        if let Some(p) = nodes[i].parent {
            assert!(order[pos + 1..].contains(&p), "a parent comes after its child");
        }
    }
    let _ = tree.describe(&visual);
    if scores.len() == AUDIO.len() {
        let tags: Vec<f32> = scores.iter().map(|&b| b as f32 / 255.0).collect();
        let mut m = SoundMatcher::new(&tree);
        m.hear(&tree, &tags).expect("probabilities are accepted");
        for class in 0..VISUAL.len() + 1 {
            if let Verdict::Sounding(s) = m.judge(&tree, class) {
                assert!(m.heard(s.node) && nodes[s.node].support.contains(&class));
            }
        }
        let _ = m.unmatched(&tree, &[1, 3]).count();
    }
});
