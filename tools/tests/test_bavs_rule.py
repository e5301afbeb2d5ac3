"""The two-stage package's choice rule and label plumbing (train_default.bavs_rule), and the
bundled package `models/bavs-avsreg` against them: its palette is the rule's, and its tree keeps
each stamp's class for that stamp's sound and nothing for `silence`."""

import json
from pathlib import Path

import pytest

from train_default.bavs_rule import OFFSCREEN_TARGET, THRESHOLDS, choose, leaf_classes, palette

REPO = Path(__file__).resolve().parents[2]
PKG = REPO / "models/bavs-avsreg"


def row(threshold, offscreen, s4, ms3):
    return {"threshold": threshold, "offscreen_empty": offscreen, "s4_j_fg": s4, "ms3_j_fg": ms3}


def test_the_best_mean_j_wins_among_thresholds_that_reach_the_offscreen_target():
    sweep = [row(0.1, 0.99, 0.60, 0.40), row(0.2, 0.985, 0.65, 0.45), row(0.3, 0.97, 0.90, 0.90)]
    # 0.3 has the best J but leaves too many off-screen frames masked.
    assert choose(sweep)["threshold"] == 0.2


def test_a_tie_in_mean_j_goes_to_the_higher_threshold():
    sweep = [row(0.1, 1.0, 0.60, 0.40), row(0.2, 1.0, 0.40, 0.60), row(0.3, 1.0, 0.50, 0.40)]
    assert choose(sweep)["threshold"] == 0.2


def test_without_a_threshold_at_the_target_the_most_offscreen_frames_empty_win():
    below = OFFSCREEN_TARGET - 0.01
    sweep = [row(0.1, below - 0.05, 0.9, 0.9), row(0.2, below, 0.1, 0.1), row(0.3, below, 0.2, 0.2)]
    # 0.2 and 0.3 tie on off-screen frames: the higher threshold wins, whatever the J.
    assert choose(sweep)["threshold"] == 0.3


def test_the_candidates_are_the_committed_ones():
    assert THRESHOLDS == (0.1, 0.2, 0.3, 0.4, 0.5) and OFFSCREEN_TARGET == 0.98


def test_leaf_classes_maps_sounds_to_their_own_class_and_refuses_other_trees():
    visual = ["background", "dog", "cat"]
    audio = ["cat", "dog", "silence"]
    tree = {"nodes": [{"name": "animals"}, {"name": "dog", "parent": "animals", "visual": ["dog"]},
                      {"name": "cat", "parent": "animals", "visual": ["cat"]}]}
    assert leaf_classes(tree, audio, visual).tolist() == [2, 1, -1]
    # A sound on a node that keeps more than its own class, or a class the segmenter lacks.
    for bad in ({"name": "dog", "visual": ["dog", "cat"]}, {"name": "dog", "visual": ["cat"]}):
        with pytest.raises(SystemExit, match="not a one-class leaf"):
            leaf_classes({"nodes": [bad]}, audio, visual)
    with pytest.raises(SystemExit, match="not a one-class leaf"):
        leaf_classes({"nodes": [{"name": "cat", "visual": ["cat"]}]}, ["cat"], ["background", "dog"])


def test_palette_starts_black_and_gives_every_class_its_own_colour():
    p = palette(101)
    assert p[0] == [0, 0, 0] and len(p) == 101
    assert len({tuple(c) for c in p}) == 101
    assert all(0 <= v <= 255 for c in p for v in c)


def test_the_bundled_package_follows_the_rule():
    manifest = json.loads((PKG / "avseg.json").read_text())
    visual = manifest["output"]["labels"]
    assert manifest["output"]["palette"] == palette(len(visual))
    tree = json.loads((PKG / "tree.json").read_text())
    audio = (PKG / "audio_labels.txt").read_text().split()
    keeps = leaf_classes(tree, audio, visual)
    for a, k in zip(audio, keeps):
        assert (k == -1) if a == "silence" else (visual[k] == a), a
    # The threshold the package ships is the one its record chose by the rule.
    record = json.loads((PKG / "train_record.json").read_text())
    assert choose(record["val"])["threshold"] == record["chosen"]["threshold"] == tree["default_threshold"]
