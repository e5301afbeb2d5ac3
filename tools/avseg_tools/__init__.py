"""avseg's Python tools: ONNX Runtime reference checks, fixture and sample builders, benchmarks.

Each tool is a module with a `main()`, run as `python -m avseg_tools.<module>` or through its
console script (tools/pyproject.toml). `REPO` is the repository root: the tools write and read
repository files (tests/data, models), so install them editable (`pip install -e tools`).
"""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
