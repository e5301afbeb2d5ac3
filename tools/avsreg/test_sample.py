"""The bundled sample (`models/sample`) is exactly what `avseg-make-sample` writes from the pinned
AVS-Reg sources: frames, masks, audio, recipe and licence, byte for byte."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_committed_sample_regenerates(avsreg_sources, tmp_path):
    subprocess.run([sys.executable, "-m", "avseg_tools.make_sample", "--out", str(tmp_path)], check=True,
                   stdout=subprocess.DEVNULL)
    committed = sorted(p.relative_to(REPO / "models/sample") for p in (REPO / "models/sample").rglob("*")
                       if p.is_file() and p.parts[-2] != "preview")
    made = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert made == committed
    for rel in committed:
        assert (tmp_path / rel).read_bytes() == (REPO / "models/sample" / rel).read_bytes(), rel
