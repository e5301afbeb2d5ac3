"""Front-end speed, avseg against the reference implementations, in one run.

1. Runs the criterion benches (`cargo bench --bench audio --bench vision`) and reads each median
   from target/criterion/<group>/<name>/new/estimates.json.
2. Times the same work with the reference tools: the official VGGish log-mel algorithm in numpy
   (with resampy for 48 kHz), and OpenCV / PIL resizing plus numpy normalisation.
3. Prints each pair with the ratio reference / avseg (above 1 means avseg is faster).

Run from the repository root, in the venv of tools/requirements.txt plus `resampy`:
    avseg-bench-frontend [--skip-cargo]   (or: .venv/bin/python -m avseg_tools.bench_frontend)
Medians only: the machine is shared and noisy.
"""
import argparse
import json
import os
import subprocess
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from avseg_tools import REPO as ROOT
from avseg_tools import bench_ref_audio as ref_audio
from avseg_tools import bench_ref_vision as ref_vision


def criterion_median_ms(target: Path, *parts: str) -> float:
    est = json.loads((target / "criterion" / Path(*parts) / "new" / "estimates.json").read_text())
    return est["median"]["point_estimate"] / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--skip-cargo", action="store_true", help="reuse the last criterion results")
    args = ap.parse_args()
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    if not args.skip_cargo:
        subprocess.run(
            ["cargo", "bench", "--bench", "audio", "--bench", "vision", "--",
             "--warm-up-time", "1", "--measurement-time", "3"],
            cwd=ROOT, check=True)

    rows = []
    # Audio: same signals as benches/audio.rs.
    mono16 = ref_audio.signal(16000, 1, 5.0)[:, 0] / 32768.0
    stereo48 = ref_audio.signal(48000, 2, 5.0)
    np_16k = ref_audio.median_ms(lambda: ref_audio.examples(mono16), 50)
    np_48k = ref_audio.median_ms(
        lambda: ref_audio.examples(ref_audio.resampy.resample(np.mean(stereo48 / 32768.0, axis=1), 48000, 16000)), 20)
    rows.append(("log-mel, 5 s 16 kHz mono", criterion_median_ms(target, "logmel_5s_16k_mono"), "numpy", np_16k))
    rows.append(("log-mel, 5 s 48 kHz stereo incl. mix + resample",
                 criterion_median_ms(target, "logmel_5s_48k_stereo_mix_resample"), "numpy + resampy", np_48k))

    # Vision: the same 1920x1080 card as benches/vision.rs.
    img = np.asarray(Image.open(ROOT / "tests/data/resize/card_1920x1080.png").convert("RGB"))
    pil = Image.fromarray(img)
    cv2.setNumThreads(1)
    cv_ms = ref_vision.median_us(ref_vision.run_cv2, img, 300) / 1e3
    pil_ms = ref_vision.median_us(ref_vision.run_pil, pil, 100) / 1e3
    group = "preprocess_1920x1080_to_224_nchw"
    rows.append(("1920x1080 -> 224 NCHW, OpenCV-style bilinear",
                 criterion_median_ms(target, group, "bilinear_opencv"), "cv2 INTER_LINEAR (1 thread) + numpy", cv_ms))
    rows.append(("1920x1080 -> 224 NCHW, PIL-style bilinear",
                 criterion_median_ms(target, group, "bilinear_pil"), "PIL BILINEAR + numpy", pil_ms))

    print()
    print(f"{'work':50s} {'avseg ms':>10s}  {'reference':38s} {'ref ms':>9s} {'ref/avseg':>9s}")
    for name, ours, ref_name, ref in rows:
        print(f"{name:50s} {ours:10.3f}  {ref_name:38s} {ref:9.3f} {ref / ours:9.2f}")


if __name__ == "__main__":
    main()
