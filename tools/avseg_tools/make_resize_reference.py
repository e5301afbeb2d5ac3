#!/usr/bin/env python3
"""Generate the resize reference fixtures under tests/data/resize/.

Every input image is procedural (gradients, stripes, checkerboards, discs and a patch of seeded
noise), so the fixtures are our own work and the script reproduces them bit for bit.

For each input this writes:
  <name>.png           the RGB8 input (lossless)
  <name>.cv2.png       cv2.resize(img, (W, H), interpolation=cv2.INTER_LINEAR)   (S4/MS3 frames)
  <name>.pil.png       PIL Image.resize((W, H), Image.BILINEAR)                  (AVSS frames)
and for one case the fully normalised tensor:
  <name>.cv2.norm.npy  float32 [3, H, W] = (cv2_out / 255 - mean) / std, ImageNet mean/std
plus cases.json listing every case with its target size.

Usage: .venv/bin/python -m avseg_tools.make_resize_reference [out_dir]
"""

import json
import sys
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from avseg_tools import REPO

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def procedural(width: int, height: int, seed: int) -> np.ndarray:
    """A test card with content at every spatial frequency a resizer can get wrong."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    u = x / max(width - 1, 1)
    v = y / max(height - 1, 1)
    img = np.zeros((height, width, 3), dtype=np.float32)
    # Smooth gradients: interpolation weights show up directly in the values.
    img[..., 0] = 255.0 * u
    img[..., 1] = 255.0 * v
    img[..., 2] = 255.0 * (0.5 + 0.5 * np.sin(2 * np.pi * (u + v)))
    # Vertical stripes with a period of a few pixels in the left third: aliasing-sensitive,
    # where antialiased (PIL) and plain (cv2) bilinear downscales differ most.
    third = width // 3
    stripe = ((x.astype(np.int32) // 3) % 2 == 0)
    left = x < third
    img[left & stripe] = [230.0, 40.0, 20.0]
    # Checkerboard in the bottom-right quarter with 7 px cells (not a divisor of any size used).
    cb = (((x.astype(np.int32) // 7) + (y.astype(np.int32) // 7)) % 2 == 0)
    br = (x >= width // 2) & (y >= height // 2)
    img[br & cb] = [20.0, 20.0, 240.0]
    img[br & ~cb] = [250.0, 250.0, 250.0]
    # A disc: curved hard edges at arbitrary sub-pixel positions.
    cx, cy, r = 0.62 * width, 0.3 * height, 0.18 * min(width, height)
    disc = (x - cx) ** 2 + (y - cy) ** 2 <= r * r
    img[disc] = [255.0, 200.0, 0.0]
    # Seeded noise in one patch only, so the PNGs stay small.
    ph, pw = max(height // 6, 1), max(width // 6, 1)
    y0, x0 = height // 2 - ph // 2, width // 8
    img[y0:y0 + ph, x0:x0 + pw] = rng.integers(0, 256, size=(ph, pw, 3)).astype(np.float32)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


# name, source width, source height, target width, target height, seed
CASES = [
    ("card_1920x1080", 1920, 1080, 224, 224, 1),
    ("card_640x480", 640, 480, 224, 224, 2),
    ("card_333x517", 333, 517, 224, 224, 3),
    ("card_100x75", 100, 75, 224, 224, 4),      # upscale
    ("card_224x224", 224, 224, 224, 224, 5),    # identity
    ("card_224x224_to_512", 224, 224, 512, 512, 5),  # AVSegFormer 224 -> 512 upsampling
]
NORM_CASE = "card_640x480"


def save_png(path: Path, rgb: np.ndarray) -> None:
    Image.fromarray(rgb, mode="RGB").save(path, optimize=True)


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "tests/data/resize"
    out.mkdir(parents=True, exist_ok=True)
    listing = []
    for name, w, h, tw, th, seed in CASES:
        src = procedural(w, h, seed)
        src_name = f"card_{w}x{h}.png"
        save_png(out / src_name, src)
        ocv = cv2.resize(src, (tw, th), interpolation=cv2.INTER_LINEAR)
        opil = np.asarray(Image.fromarray(src, mode="RGB").resize((tw, th), Image.BILINEAR))
        assert ocv.shape == (th, tw, 3) and opil.shape == (th, tw, 3)
        save_png(out / f"{name}.cv2.png", ocv)
        save_png(out / f"{name}.pil.png", opil)
        entry = {"name": name, "input": src_name, "width": tw, "height": th,
                 "cv2": f"{name}.cv2.png", "pil": f"{name}.pil.png"}
        if name == NORM_CASE:
            norm = ((ocv.astype(np.float32) / np.float32(255.0) - MEAN) / STD).transpose(2, 0, 1)
            norm = np.ascontiguousarray(norm, dtype=np.float32)
            np.save(out / f"{name}.cv2.norm.npy", norm)
            entry["cv2_norm"] = f"{name}.cv2.norm.npy"
        listing.append(entry)
        d = np.abs(ocv.astype(np.int16) - opil.astype(np.int16))
        print(f"{name}: {w}x{h} -> {tw}x{th}; cv2 vs PIL max {d.max()} mean {d.mean():.3f}")
    (out / "cases.json").write_text(json.dumps(listing, indent=1) + "\n")
    total = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    print(f"wrote {len(listing)} cases to {out} ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
