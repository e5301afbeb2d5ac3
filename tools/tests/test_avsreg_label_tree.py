"""`models/label-trees/avs-reg` is exactly what `python -m avsreg.label_tree` writes from the pinned
stamp list, and its classes follow the audio pre-training's vocabulary order."""

from pathlib import Path

from avsreg import label_tree

REPO = Path(__file__).resolve().parents[2]


def test_committed_tree_regenerates(tmp_path):
    label_tree.write(tmp_path)
    for f in sorted((REPO / "models/label-trees/avs-reg").iterdir()):
        assert (tmp_path / f.name).read_bytes() == f.read_bytes(), f.name


def test_classes_follow_the_stamp_vocabulary():
    """`train_default.train.stamp_vocab` numbers the stamps by `sorted()` of their paths (str
    order); the class maps number them by byte order, then 1-based. The two orders agree."""
    import json

    paths = label_tree.stamp_paths()
    assert paths == sorted(s["path"] for s in json.loads(label_tree.LOCK.read_text())["stamps"])
    index = label_tree.class_index(paths)
    assert [index[p] for p in paths] == list(range(1, len(paths) + 1))
    assert label_tree.visual_labels(paths)[1:] == label_tree.audio_labels(paths)[:-1]
