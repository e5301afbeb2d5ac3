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


def semantic_logits() -> np.ndarray:
    """benches/vision.rs's semantic_logits: 101 class planes at 160x160, each peaking at its own spot."""
    k, h, w = 101, 160, 160
    c = np.arange(k, dtype=np.float32)[:, None, None]
    y = np.arange(h, dtype=np.float32)[None, :, None]
    x = np.arange(w, dtype=np.float32)[None, None, :]
    cy = (np.arange(k) * 37 % h).astype(np.float32)[:, None, None]
    cx = (np.arange(k) * 61 % w).astype(np.float32)[:, None, None]
    return (-((y - cy) ** 2 + (x - cx) ** 2) / np.float32(800.0) + (c % 7) * np.float32(0.1)).astype(np.float32)


def run_semantic(logits: np.ndarray):
    """avseg's semantic_into: arg-max class and its softmax probability per pixel at model
    resolution, then nearest-neighbour upsampling of both to 224x224."""
    m = logits.max(axis=0)
    prob = np.float32(1.0) / np.exp(logits - m).sum(axis=0)
    labels = logits.argmax(axis=0).astype(np.uint8)
    h, w = labels.shape
    ys = np.minimum(((2 * np.arange(224) + 1) * h) // 448, h - 1)
    xs = np.minimum(((2 * np.arange(224) + 1) * w) // 448, w - 1)
    return labels[ys][:, xs], prob[ys][:, xs]


def run_heard_mass(logits: np.ndarray, heard=(5, 40), silent_ratio=np.float32(0.05)):
    """avseg's heard_mass_into (benches/vision.rs, classes 5 and 40 heard): the arg-max mask as in
    run_semantic, and the heard-mass mask (kept where the heard classes' probability beats the
    background's and silent_ratio times the rest's, labelled with the best heard class), both
    upsampled to 224x224."""
    m = logits.max(axis=0)
    e = np.exp(logits - m)
    z = e.sum(axis=0)
    prob = np.float32(1.0) / z
    labels = logits.argmax(axis=0).astype(np.uint8)
    idx = np.asarray(heard)
    hm = e[idx].sum(axis=0) / z
    bg = e[0] / z
    best_heard = idx[logits[idx].argmax(axis=0)].astype(np.uint8)
    keep = (hm > bg) & (hm > silent_ratio * np.maximum(np.float32(1.0) - bg - hm, 0))
    kept_labels = np.where(keep, best_heard, 0).astype(np.uint8)
    kept_conf = np.where(keep, hm, np.float32(1.0) - hm)
    h, w = labels.shape
    ys = np.minimum(((2 * np.arange(224) + 1) * h) // 448, h - 1)
    xs = np.minimum(((2 * np.arange(224) + 1) * w) // 448, w - 1)
    return labels[ys][:, xs], prob[ys][:, xs], kept_labels[ys][:, xs], kept_conf[ys][:, xs]


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
    # benches/vision.rs semantic_mask_101x160x160_to_224x224 (numpy runs single-threaded here).
    logits = semantic_logits()
    print(f"semantic mask, 101x160x160 -> 224x224 (numpy):     {median_us(run_semantic, logits, max(runs // 10, 20)):9.1f} us")
    print(f"heard-mass masks, 101x160x160 -> 224x224 (numpy):  {median_us(run_heard_mass, logits, max(runs // 10, 20)):9.1f} us")


if __name__ == "__main__":
    main()
