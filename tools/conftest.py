"""Shared pytest fixtures for tools/tests and tools/avsreg.

Inputs a test cannot run without (the official reference tensors, the avseg binary) are
skipped when absent, except under CI (`$CI` set), where a missing input is a failure.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from avseg_tools import REPO


def missing(why: str):
    """Skip for `why`, or fail when running under CI."""
    if os.environ.get("CI"):
        pytest.fail(f"{why} (a missing input fails under CI)", pytrace=False)
    pytest.skip(why)


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """The official reference tensors: $AVSEG_REFERENCE_DIR, default tests/data/reference."""
    d = Path(os.environ.get("AVSEG_REFERENCE_DIR") or REPO / "tests" / "data" / "reference")
    if not (d / "README.md").is_file():
        missing(f"reference tensors not found at {d}")
    return d


@pytest.fixture(scope="session")
def avseg_bin() -> Path:
    """The avseg binary, from $AVSEG_BIN (tools/test.sh sets it)."""
    b = os.environ.get("AVSEG_BIN")
    if not b:
        missing("AVSEG_BIN is not set (the avseg binary these tests drive)")
    p = Path(b)
    if not (p.is_file() and os.access(p, os.X_OK)):
        pytest.fail(f"AVSEG_BIN={b}: not an executable file", pytrace=False)
    return p


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """The bundled sample clip (5 frames + audio.wav)."""
    return REPO / "models" / "sample"


@pytest.fixture(scope="session")
def avsreg_sources():
    """The pinned AVS-Reg source media (tools/avsreg/install_sources.sh installs them)."""
    r = subprocess.run([sys.executable, "-m", "avsreg.generate", "--check-sources"], capture_output=True, text=True)
    if r.returncode:
        last = (r.stderr or r.stdout).strip().splitlines()[:1]
        missing("AVS-Reg sources not installed (run tools/avsreg/install_sources.sh as root)"
                + (f": {last[0]}" if last else ""))
