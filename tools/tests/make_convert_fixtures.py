#!/usr/bin/env python3
"""Checkpoint fixtures for tests/convert.rs: runs avseg_tools.fixtures.convert (see there).

    python tools/tests/make_convert_fixtures.py --out DIR
    python -m avseg_tools.fixtures.convert --out DIR          (the same)

Kept at this path because tests/convert.rs runs it; needs the tools installed (pip install -e tools).
"""

from avseg_tools.fixtures.convert import main

if __name__ == "__main__":
    main()
