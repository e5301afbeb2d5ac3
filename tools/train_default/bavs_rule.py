"""The two-stage package's choice rule and label plumbing, without torch, so that the CI venv
tests them (tools/tests/test_bavs_rule.py): the threshold rule of tools/avsreg/unseen_split.md
(issue 16, item 2), which audio label keeps which visual class, and the label palette.
`avseg-bavs-package` (bavs_package.py) uses them."""

from __future__ import annotations

import colorsys

import numpy as np

THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5)
OFFSCREEN_TARGET = 0.98


def palette(n: int) -> list[list[int]]:
    """Background black, then hues spaced by the golden ratio: neighbours in the list differ."""
    out = [[0, 0, 0]]
    for i in range(1, n):
        r, g, b = colorsys.hsv_to_rgb((i * 0.6180339887) % 1.0, 0.75, 0.95)
        out.append([round(r * 255), round(g * 255), round(b * 255)])
    return out


def leaf_classes(tree: dict, audio_labels: list[str], visual_labels: list[str]) -> np.ndarray:
    """For each audio label, the visual class it keeps (-1: none). The package tool replays the
    runtime's tree walk only for trees whose sounds sit on one-class leaves of their own name (as
    in the AVS-Reg tree), so it refuses any other: a sound on a folder, or on a leaf of another
    name."""
    keeps = np.full(len(audio_labels), -1)
    for node in tree["nodes"]:
        if node["name"] in audio_labels:
            if node.get("visual") != [node["name"]] or node["name"] not in visual_labels:
                raise SystemExit(f"tree node {node['name']!r} has a sound but is not a one-class leaf of its name")
            keeps[audio_labels.index(node["name"])] = visual_labels.index(node["name"])
    return keeps


def choose(sweep: list[dict]) -> dict:
    """The rule of tools/avsreg/unseen_split.md (issue 16), item 2."""
    ok = [s for s in sweep if s["offscreen_empty"] >= OFFSCREEN_TARGET]
    if ok:
        return max(ok, key=lambda s: ((s["s4_j_fg"] + s["ms3_j_fg"]) / 2, s["threshold"]))
    return max(sweep, key=lambda s: (s["offscreen_empty"], s["threshold"]))
