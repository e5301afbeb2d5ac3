"""avseg-train's hard off-screen twins (`--offscreen-hard`, `--hard-by`) on a synthetic cache.

Needs the training venv (PyTorch): `.venv-train/bin/python -m pytest tools/tests/test_hard_twins.py`.
CI's venv has no PyTorch, so there the module is skipped, like the training tools themselves.
"""

from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
train = pytest.importorskip("train_default.train")

T = train.T
VOCAB = {f"s{k}.png": k for k in range(5)}


class FakeCache(SimpleNamespace):
    def __len__(self):
        return len(self.clips)


def fake_cache(features: dict[int, np.ndarray], sounds: list[list[int]], kinds: list[str],
               stamps: list[list[int]]) -> FakeCache:
    """Clip i shows `stamps[i]` and sounds `sounds[i]` in every second; an S4 clip's single
    stamp fills the left half of each frame with `features[stamp]` (1/16 map, 4x4)."""
    n, c = len(kinds), len(next(iter(features.values())))
    taps = [None, None, np.zeros((n, T, c, 4, 4), np.float16), None]
    masks = np.zeros((n, T, 224, 224), np.uint8)
    labels = np.zeros((n, T, len(VOCAB)), np.float32)
    logmel = np.zeros((n, T, 96, 64), np.float32)
    for i in range(n):
        for k in sounds[i]:
            labels[i, :, k] = 1
            logmel[i, :, k, :] = 1.0            # the fake encoder below reads row k as "stamp k sounds"
        if kinds[i] == "s4":
            s = stamps[i][0]
            taps[2][i, :, :, :, :2] = features[s][None, :, None, None]
            masks[i, :, :, :112] = 1
    clips = [{"kind": k, "stamps": [f"s{s}.png" for s in st]} for k, st in zip(kinds, stamps)]
    return FakeCache(taps=taps, masks=masks, labels=labels, logmel=logmel, clips=clips, meta={"root": "fake"})


FEATS = {0: np.array([1.0, 0, 0, 0]), 1: np.array([0.9, 0.1, 0, 0]), 2: np.array([0, 0, 1.0, 0]),
         3: np.array([0, 0, 0, 1.0])}          # stamp 4 never appears in an S4 clip


def test_look_alike_ranks_similar_stamps_and_leaves_unseen_ones_at_zero():
    kinds = ["s4", "s4", "s4", "s4"]
    stamps = [[0], [1], [2], [3]]
    c = fake_cache(FEATS, [[0], [1], [2], [3]], kinds, stamps)
    table = train.stamp_look_alike(c, VOCAB)
    assert table.shape == (5, 5)
    assert table[0, 1] > 0.9                      # near-identical features, after centring
    assert table[0, 1] > table[0, 2] and table[0, 1] > table[0, 3]
    assert np.all(table[4] == 0) and np.all(table[:, 4] == 0)
    np.testing.assert_allclose(np.diag(table)[:4], 1.0, atol=1e-9)


def test_hard_pick_is_valid_and_the_most_alike_of_the_pool():
    # Clip 0 shows stamp 0. Candidate sounds: stamp 1 (looks like 0), 2, 3, silence, and 0 itself.
    kinds = ["s4", "s4", "s4", "s4", "s4neg_silence", "s4"]
    stamps = [[0], [1], [2], [3], [2], [0]]
    sounds = [[0], [1], [2], [3], [], [0]]
    c = fake_cache(FEATS, sounds, kinds, stamps)
    table = train.stamp_look_alike(c, VOCAB)
    for seed in range(20):
        o = train.offscreen_audio(c, 0, np.random.default_rng(seed), VOCAB, look_alike=table, pool=8)
        assert o in (1, 2, 3)                     # never silent, never a visible stamp's sound
        # The pool the same draws give (valid clips, in order, up to 8): the pick is its most alike.
        rng, pool = np.random.default_rng(seed), []
        while len(pool) < 8:
            d = int(rng.integers(len(c)))
            if d in (1, 2, 3):
                pool.append(d)
        assert o == max(pool, key=lambda d: table[stamps[d][0], 0])
        assert o == 1 or 1 not in pool
    # Without the table the pick is the first valid draw, as before the option existed.
    plain = {train.offscreen_audio(c, 0, np.random.default_rng(s), VOCAB) for s in range(20)}
    assert plain == {1, 2, 3}


def test_sound_alike_uses_the_encoders_embeddings_where_each_stamp_sounds():
    class RowEncoder(torch.nn.Module):
        """Embedding = which log-mel rows are lit, mixed so that stamps 0 and 3 sound alike."""
        def forward(self, x):
            rows = x[:, 0, :5, 0]                  # [N, 5]
            mix = torch.eye(5)
            mix[3] = torch.tensor([0.95, 0, 0, 0.05, 0])
            return rows @ mix
    kinds = ["s4", "s4", "s4", "s4"]
    stamps = [[0], [1], [2], [3]]
    c = fake_cache(FEATS, [[0], [1], [2], [3]], kinds, stamps)
    enc = RowEncoder()
    table = train.stamp_sound_alike(c, VOCAB, enc)
    assert table[0, 3] > 0.9 and table[0, 3] > table[0, 1] and table[0, 3] > table[0, 2]
    assert np.all(table[4] == 0)
    assert enc.training                            # the encoder's mode is restored
