#!/usr/bin/env python3
"""Reference timings for benches/vision.rs: 1920x1080 RGB -> 224x224 ImageNet-normalised NCHW f32.

  cv2:  cv2.resize INTER_LINEAR, then (x/255 - mean)/std and HWC -> CHW (contiguous)
  PIL:  Image.resize BILINEAR on a PIL image, then the same normalisation

Prints the median of many single-frame runs, in microseconds. cv2 is timed both with its default
thread pool and pinned to one thread (avseg's front end is single-threaded).

Usage: .venv/bin/python -m avseg_tools.bench_ref_vision [runs]
"""

import statistics
import sys
import time

import cv2
import numpy as np
from PIL import Image

from avseg_tools import REPO

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def normalise(rgb: np.ndarray) -> np.ndarray:
    x = (rgb.astype(np.float32) / np.float32(255.0) - MEAN) / STD
    return np.ascontiguousarray(x.transpose(2, 0, 1))[None]


def run_cv2(img: np.ndarray) -> np.ndarray:
    return normalise(cv2.resize(img, (224, 224), interpolation=cv2.INTER_LINEAR))


def run_pil(img: Image.Image) -> np.ndarray:
    return normalise(np.asarray(img.resize((224, 224), Image.BILINEAR)))


def median_us(fn, arg, runs: int) -> float:
    for _ in range(max(runs // 10, 3)):
        fn(arg)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn(arg)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    path = REPO / "tests/data/resize/card_1920x1080.png"
    img = np.asarray(Image.open(path).convert("RGB"))
    pil = Image.fromarray(img)
    assert run_cv2(img).shape == (1, 3, 224, 224) and run_pil(pil).dtype == np.float32
    print(f"input {img.shape[1]}x{img.shape[0]} -> 224x224 NCHW f32, median of {runs} runs")
    print(f"cv2 INTER_LINEAR + normalise (default threads: {cv2.getNumThreads()}): {median_us(run_cv2, img, runs):9.1f} us")
    cv2.setNumThreads(1)
    print(f"cv2 INTER_LINEAR + normalise (1 thread):            {median_us(run_cv2, img, runs):9.1f} us")
    print(f"PIL BILINEAR + normalise:                          {median_us(run_pil, pil, runs):9.1f} us")
    # Normalisation alone, to separate it from the resize.
    small = cv2.resize(img, (224, 224), interpolation=cv2.INTER_LINEAR)
    print(f"normalise only (224x224):                          {median_us(normalise, small, runs):9.1f} us")


if __name__ == "__main__":
    main()
