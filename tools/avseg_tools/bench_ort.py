#!/usr/bin/env python3
"""Median per-clip latency of a package's graphs under ONNX Runtime, for `avseg bench --vs-onnxruntime`.

    python -m avseg_tools.bench_ort --model models/tiny-tpavi --logmel logmel.npy --frames frames.npy \\
        --threads 2 --runs 7

Inputs are the exact model inputs avseg computed (`[windows*T, 1, 96, 64]` log-mel patches and
`[n, 3, H, W]` frames). A clip runs as avseg runs it: consecutive windows of T frames, the last
completed by repeating its last frame; per window the audio encoder (a two-stage package's tagger), then the segmenter. One
untimed warm-up clip, then `--runs` timed ones. Prints `median_ms X` (the line avseg parses), the
per-graph medians `audio_encoder_median_ms` / `segmenter_median_ms` (summed over a clip's windows),
the individual times, the sessions' load time `load_ms` and the process's peak RSS `peak_rss_kb`. Front end and post-processing are not included: they are avseg's own code.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort


def session(path: Path, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, type=Path)
    ap.add_argument("--logmel", required=True, type=Path)
    ap.add_argument("--frames", required=True, type=Path)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()

    load_start = time.perf_counter()
    manifest = json.loads((a.model / "avseg.json").read_text())
    t = int(manifest["frames_per_clip"])
    graphs = manifest["graphs"]
    # A two-stage (bavs) package's audio graph is its tagger, and its segmenter sees frames only.
    enc_spec = graphs.get("audio_encoder") or graphs.get("audio_tagger")
    enc = session(a.model / enc_spec["file"], a.threads) if enc_spec else None
    seg_spec = graphs["segmenter"]
    seg = session(a.model / seg_spec["file"], a.threads)
    seg_inputs = seg_spec["inputs"]
    load_ms = (time.perf_counter() - load_start) * 1e3

    logmel = np.load(a.logmel).astype(np.float32)
    frames = np.load(a.frames).astype(np.float32)
    n = frames.shape[0]
    windows = -(-n // t)
    batches = []
    for w in range(windows):
        idx = [min(w * t + i, n - 1) for i in range(t)]
        batches.append((np.ascontiguousarray(logmel[w * t:(w + 1) * t]), np.ascontiguousarray(frames[idx])))

    def run_clip() -> tuple[float, float]:
        t_enc = t_seg = 0.0
        for lm, fr in batches:
            t0 = time.perf_counter()
            audio = enc.run(None, {enc_spec["inputs"][0]: lm})[0] if enc else lm
            t1 = time.perf_counter()
            feeds = {seg_inputs[0]: fr}
            if len(seg_inputs) > 1:
                feeds[seg_inputs[1]] = audio
            seg.run(None, feeds)
            t_enc += t1 - t0
            t_seg += time.perf_counter() - t1
        return t_enc * 1e3, t_seg * 1e3

    run_clip()
    times, enc_ms, seg_ms = [], [], []
    for _ in range(max(1, a.runs)):
        start = time.perf_counter()
        e, s = run_clip()
        times.append((time.perf_counter() - start) * 1e3)
        enc_ms.append(e)
        seg_ms.append(s)
    print("runs_ms " + " ".join(f"{x:.1f}" for x in times))
    print(f"median_ms {statistics.median(times):.3f}")
    if enc:
        print(f"audio_encoder_median_ms {statistics.median(enc_ms):.3f}")
    print(f"segmenter_median_ms {statistics.median(seg_ms):.3f}")
    print(f"load_ms {load_ms:.1f}")
    # Peak resident memory of this process (kB on Linux): Python, numpy and ONNX Runtime together,
    # as avseg's figure is its whole CLI process.
    print(f"peak_rss_kb {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}")


if __name__ == "__main__":
    main()
