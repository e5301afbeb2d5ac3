"""avseg-train-soup (tools/train_default/soup.py): the mean, the record, and what it refuses.

Numpy only (no PyTorch), so CI runs it.
"""

import json

import numpy as np
import pytest

from avseg_export.weights import read_safetensors, write_safetensors
from train_default import soup

ARGS = {"size": 224, "channels": 32, "audio_dim": 64, "head_mid": 16, "head_last": 8, "audio_width": 8,
        "audio_hidden": 32, "tpavi_group": 1, "lr": 3e-4}


def run_folder(path, tensors, args=ARGS):
    path.mkdir()
    write_safetensors(path / "checkpoint.safetensors", tensors)
    (path / "train_record.json").write_text(json.dumps({"args": args, "log": [{"it": 1}]}))
    return path


def members(tmp_path, n=3, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        t = {"a.weight": rng.standard_normal((4, 3)).astype(np.float32),
             "bn.running_var": rng.random(4).astype(np.float32) + 0.5,
             "steps": np.array([7], np.int64)}
        out.append((run_folder(tmp_path / f"run{i}", t), t))
    return out


def test_the_soup_is_the_mean_of_every_float_tensor_and_keeps_equal_integers(tmp_path):
    ms = members(tmp_path)
    soup.main([a for p, _ in ms for a in ("--member", str(p))] + ["--out", str(tmp_path / "S")])
    got = read_safetensors(tmp_path / "S" / "checkpoint.safetensors")
    for key in ("a.weight", "bn.running_var"):
        # The naive reference: a float64 mean written out term by term.
        want = (ms[0][1][key].astype(np.float64) + ms[1][1][key] + ms[2][1][key]) / 3
        np.testing.assert_allclose(got[key], want, rtol=0, atol=1e-7)
        assert not np.allclose(got[key], ms[0][1][key])
    assert got["steps"].tolist() == [7]
    record = json.loads((tmp_path / "S" / "train_record.json").read_text())
    assert record["args"] == ARGS
    assert [m["path"] for m in record["soup"]["members"]] == [str(p) for p, _ in ms]
    assert all(len(m["checkpoint_sha256"]) == 64 and m["record"]["log"] for m in record["soup"]["members"])


def test_a_bare_checkpoint_can_join_a_folder_member(tmp_path):
    (p0, t0), (_, t1) = members(tmp_path, n=2)
    bare = tmp_path / "stage9.safetensors"
    write_safetensors(bare, t1)
    soup.main(["--member", str(bare), "--member", str(p0), "--out", str(tmp_path / "S")])
    got = read_safetensors(tmp_path / "S" / "checkpoint.safetensors")
    np.testing.assert_allclose(got["a.weight"], (t0["a.weight"].astype(np.float64) + t1["a.weight"]) / 2, atol=1e-7)
    assert json.loads((tmp_path / "S" / "train_record.json").read_text())["args"] == ARGS


@pytest.mark.parametrize("change, message", [
    (lambda t: t.pop("bn.running_var"), "keys differ"),
    (lambda t: t.update({"a.weight": np.zeros((3, 4), np.float32)}), r"a\.weight is float32\[3, 4\]"),
    (lambda t: t.update({"steps": np.array([8], np.int64)}), "integer tensor steps differs"),
])
def test_members_that_are_not_one_model_are_refused_naming_the_file(tmp_path, change, message):
    (p0, _), (_, t1) = members(tmp_path, n=2)
    change(t1)
    odd = run_folder(tmp_path / "odd", t1)
    with pytest.raises(SystemExit, match=message) as e:
        soup.main(["--member", str(p0), "--member", str(odd), "--out", str(tmp_path / "S")])
    assert str(odd) in str(e.value)
    assert not (tmp_path / "S").exists()


def test_bad_member_lists_are_refused(tmp_path, capsys):
    (p0, t0), (p1, _) = members(tmp_path, n=2)
    with pytest.raises(SystemExit, match="2"):
        soup.main(["--member", str(p0), "--out", str(tmp_path / "S")])
    assert "at least two" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        soup.main(["--member", str(p0), "--member", str(p0), "--out", str(tmp_path / "S")])
    assert "named twice" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="no such run folder"):
        soup.main(["--member", str(p0), "--member", str(tmp_path / "nope"), "--out", str(tmp_path / "S")])
    bare = tmp_path / "bare.safetensors"
    write_safetensors(bare, t0)
    with pytest.raises(SystemExit, match="none of the members is a run folder"):
        soup.main(["--member", str(bare), "--member", str(p1 / "checkpoint.safetensors"), "--out", str(tmp_path / "S")])
    other = run_folder(tmp_path / "wide", t0, dict(ARGS, channels=64))
    with pytest.raises(SystemExit, match=r"architecture arguments \['channels'\]"):
        soup.main(["--member", str(p0), "--member", str(other), "--out", str(tmp_path / "S")])
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "checkpoint.safetensors").write_bytes(b"\x01\x00")
    with pytest.raises(SystemExit, match="not a readable safetensors checkpoint"):
        soup.main(["--member", str(p0), "--member", str(tmp_path / "junk"), "--out", str(tmp_path / "S")])
