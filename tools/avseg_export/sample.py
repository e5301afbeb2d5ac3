"""The bundled sample clip: frames cut from a CC0 photo, synthesized audio.

Kept in the package (not only in make_sample.py) because make_tiny_model.py
calibrates the random model on the same frames, so the bundled model gives a
non-trivial mask on the bundled clip.
"""

from __future__ import annotations

import os
import wave

import numpy as np

PHOTO_PACKAGE = "scikit-image"
PHOTO_FILE = "skimage/data/chelsea.png"
FRAME_W, FRAME_H = 400, 300
N_FRAMES = 5
AUDIO_RATE = 44100
AUDIO_SECONDS = 5.0
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def photo_path() -> str:
    import skimage

    return os.path.join(os.path.dirname(skimage.__file__), "data", "chelsea.png")


def photo_version() -> str:
    import skimage

    return skimage.__version__


def sample_frames() -> list[np.ndarray]:
    """Five 400x300 RGB crops panning left to right across the 451x300 photo.

    Pure integer crops (no resampling), so the pixels do not depend on any
    image library's interpolation code.
    """
    from PIL import Image

    with Image.open(photo_path()) as im:
        rgb = np.asarray(im.convert("RGB"))
    h, w, _ = rgb.shape
    if h < FRAME_H or w < FRAME_W:
        raise ValueError(f"photo is {w}x{h}, smaller than {FRAME_W}x{FRAME_H}")
    span = w - FRAME_W
    frames = []
    for i in range(N_FRAMES):
        x0 = (span * i) // (N_FRAMES - 1)
        y0 = (h - FRAME_H) // 2
        frames.append(np.ascontiguousarray(rgb[y0:y0 + FRAME_H, x0:x0 + FRAME_W]))
    return frames


def frames_to_tensor(frames, width: int, height: int) -> np.ndarray:
    """[T,3,H,W] float32 the way the S4/MS3 loaders do it: cv2 bilinear squash, ImageNet norm."""
    import cv2

    out = []
    for f in frames:
        r = cv2.resize(f, (width, height), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255.0
        r = (r - np.array(IMAGENET_MEAN, np.float32)) / np.array(IMAGENET_STD, np.float32)
        out.append(r.transpose(2, 0, 1))
    return np.ascontiguousarray(np.stack(out).astype(np.float32))


def synth_audio(seed: int = 0) -> np.ndarray:
    """5 s stereo int16 at 44.1 kHz: three meow-like harmonic glides over a soft hum.

    Each call with the same seed returns the same samples.
    """
    rng = np.random.default_rng(seed)
    n = int(round(AUDIO_RATE * AUDIO_SECONDS))
    t = np.arange(n, dtype=np.float64) / AUDIO_RATE
    sig = np.zeros(n)
    # Three calls, each a rising-then-falling pitch glide with 6 Hz vibrato.
    for start, dur, f0 in ((0.30, 1.10, 520.0), (1.90, 0.90, 600.0), (3.30, 1.40, 480.0)):
        m = (t >= start) & (t < start + dur)
        u = (t[m] - start) / dur
        f = f0 * (1.0 + 0.35 * np.sin(np.pi * u)) * (1.0 + 0.02 * np.sin(2 * np.pi * 6.0 * (t[m] - start)))
        phase = 2 * np.pi * np.cumsum(f) / AUDIO_RATE
        env = np.sin(np.pi * u) ** 2
        voice = sum(np.sin(k * phase) / k for k in range(1, 7))
        sig[m] += 0.35 * env * voice
    sig += 0.05 * np.sin(2 * np.pi * 110.0 * t)          # steady low hum
    sig += 0.01 * rng.standard_normal(n)                  # a little background noise
    left = sig
    right = 0.8 * sig + 0.004 * rng.standard_normal(n)
    stereo = np.stack([left, right], axis=1)
    return np.clip(np.round(stereo * 32767.0), -32768, 32767).astype("<i2")


def write_wav(path, samples: np.ndarray, rate: int = AUDIO_RATE):
    with wave.open(str(path), "wb") as w:
        w.setnchannels(samples.shape[1])
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.ascontiguousarray(samples).tobytes())
