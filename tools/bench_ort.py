#!/usr/bin/env python3
"""`avseg bench --vs-onnxruntime` runs this path (tools/ on PYTHONPATH): see avseg_tools.bench_ort.

    python -m avseg_tools.bench_ort --model models/tiny-tpavi --logmel logmel.npy --frames frames.npy
"""

from avseg_tools.bench_ort import main

if __name__ == "__main__":
    main()
