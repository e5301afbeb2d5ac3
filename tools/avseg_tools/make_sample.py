#!/usr/bin/env python3
"""Write the bundled sample clip: a barking dog beside a silent tiger, with ground-truth masks.

    avseg-make-sample --out models/sample

The clip is made the way AVS-Reg makes its clips (tools/avsreg/generate.py: the same pinned
sources, integer resizing and compositing), from one fixed recipe written out below rather than
drawn at random:
  * background: scikit-image's CC0 `grass.png`, a 384x384 crop panning 24 px to the right over
    the five frames, resized to 224x224. AVS-Reg puts this photo in its validation pool, so the
    default model never trained on it;
  * the sounding object: Tux Paint's `animals/mammals/dogs/dog.png` stamp (GPL-2), long side
    100 px, walking 16 px to the right on the left of the frame; the audio is its own recording,
    `dog.ogg` (GPL-2), looped over the five seconds;
  * the silent distractor: the `animals/mammals/cats/tiger.png` stamp (GPL-2), long side 100 px,
    still, on the right, never heard.

Written files (all under --out):
  frames/sample_{1..5}.png             224x224 RGB
  audio.wav                            5.0 s, 44.1 kHz, stereo, s16 (the 16 kHz mix resampled by
                                       sox, so that the runtime's resampler is exercised)
  gt_masks/sample_{1..5}.png           the dog's visible pixels (alpha > 127), 0/255 grey
  distractor_masks/sample_{1..5}.png   the tiger's visible pixels, 0/255 grey
  other_sounds/tiger.wav               the tiger's own recording (16 kHz mono, 5 s), to swap in
                                       for audio.wav: the mask should move to the tiger
  recipe.json                          this recipe, every source file with its sha256 and licence
  LICENSE                              GPL-2 (the stamps and the recording are GPL-2)

`avseg segment --gt DIR --gt-silent DIR` scores a model on it. Deterministic: rerunning gives
byte-identical files with the pinned sources (tools/avsreg/install_sources.sh) and sox.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from avsreg import generate as G

BACKGROUND = "pypi/skimage/grass.png"
BACKGROUND_LICENCE = "CC0 (skimage.data.grass docstring)"
CROP = 384                      # square crop of the 512x512 photo
CROP_X0, CROP_X1, CROP_Y = 40, 64, 70
SOUNDING = {"stamp": "animals/mammals/dogs/dog.png", "sound": "ogg:animals/mammals/dogs/dog.ogg",
            "long_side": 100, "x": (8, 24), "y": 96, "flip": 0}
SILENT = {"stamp": "animals/mammals/cats/tiger.png", "long_side": 100, "x": (120, 120), "y": 70, "flip": 1}
SILENT_SOUND = "ogg:animals/mammals/cats/tiger.ogg"   # not in the clip; other_sounds/tiger.wav
SEED = 0                        # the loop phase and gaps of the dog's recording
OUT_RATE = 44100
GPL2 = Path("/usr/share/common-licenses/GPL-2")


def placed(pool, obj, t):
    """The stamp of `obj` at frame t: (premultiplied RGB, alpha, x, y)."""
    st = pool.image("stamp", obj["stamp"])
    if obj["flip"]:
        st = st[:, ::-1]
    h0, w0 = st.shape[:2]
    f = obj["long_side"] / max(w0, h0)
    w, h = max(1, G.fround(w0 * f)), max(1, G.fround(h0 * f))
    x = G.fround(obj["x"][0] + (obj["x"][1] - obj["x"][0]) * t / 4)
    pm, al = G.resize_premult(st, h, w)
    return pm, al, x, obj["y"]


def render(pool):
    bg = pool.image("bg", BACKGROUND)
    if bg.ndim == 2:
        bg = np.repeat(bg[:, :, None], 3, axis=2)
    frames, sounding, silent = [], [], []
    for t in range(5):
        x0 = G.fround(CROP_X0 + (CROP_X1 - CROP_X0) * t / 4)
        frame = np.clip(G.resize_int(bg[CROP_Y:CROP_Y + CROP, x0:x0 + CROP].astype(np.int64), G.SIZE, G.SIZE), 0, 255)
        masks = []
        for obj in (SILENT, SOUNDING):          # the dog is drawn last, in front
            pm, al, x, y = placed(pool, obj, t)
            h, w = al.shape
            region = frame[y:y + h, x:x + w]
            frame[y:y + h, x:x + w] = np.clip((pm + (255 - al[:, :, None]) * region + 127) // 255, 0, 255)
            m = np.zeros((G.SIZE, G.SIZE), bool)
            m[y:y + h, x:x + w] = al > 127
            masks.append(m)
        silent_mask, sounding_mask = masks
        silent_mask &= ~sounding_mask            # visible pixels only
        assert not (silent_mask & sounding_mask).any()
        frames.append(frame.astype(np.uint8))
        sounding.append(np.where(sounding_mask, 255, 0).astype(np.uint8))
        silent.append(np.where(silent_mask, 255, 0).astype(np.uint8))
    return frames, sounding, silent


def track_pcm(pool, rng_key: str, sound: str):
    """One sound over the five seconds as 16 kHz PCM: the generator's loudness (TARGET_RMS) and
    peak limit (PEAK_MAX), so the sample's tracks sit where AVS-Reg's do."""
    rng = G.clip_rng(SEED, rng_key)
    y, info = G.make_track(rng, pool, sound, [1] * 5)
    rms = (np.sum(y * y) / y.size) ** 0.5
    y = y * (G.TARGET_RMS / rms)
    peak = float(np.max(np.abs(y)))
    if peak > G.PEAK_MAX:
        y = y * (G.PEAK_MAX / peak)
    return np.clip(np.rint(y * 32768.0), -32768, 32767).astype("<i2"), info


def audio(pool, tmp: Path) -> tuple[Path, dict]:
    pcm, info = track_pcm(pool, "sample/dog", SOUNDING["sound"])
    src = tmp / "mix16k.wav"
    src.write_bytes(G.wav_bytes(pcm))
    dst = tmp / "audio.wav"
    subprocess.run(["sox", "-R", "-G", str(src), "-r", str(OUT_RATE), "-c", "2", "-b", "16",
                    "-e", "signed-integer", str(dst)], check=True)
    return dst, info


def tiger_audio(pool) -> bytes:
    """The tiger's own recording over the five seconds (16 kHz mono): give it to the sample's
    frames instead of the bark and the mask should move from the dog to the tiger."""
    pcm, _ = track_pcm(pool, "sample/tiger", SILENT_SOUND)
    return G.wav_bytes(pcm)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="models/sample")
    args = ap.parse_args()

    pool = G.Pool()
    out = Path(args.out)
    written = []
    try:
        frames, sounding, silent = render(pool)
        for sub, imgs in (("frames", frames), ("gt_masks", sounding), ("distractor_masks", silent)):
            (out / sub).mkdir(parents=True, exist_ok=True)
            for t, img in enumerate(imgs, start=1):
                p = out / sub / f"sample_{t}.png"
                p.write_bytes(G.png_bytes(img))
                written.append(p)
        with tempfile.TemporaryDirectory() as d:
            wav, loop = audio(pool, Path(d))
            shutil.copyfile(wav, out / "audio.wav")
        written.append(out / "audio.wav")
        (out / "other_sounds").mkdir(exist_ok=True)
        (out / "other_sounds" / "tiger.wav").write_bytes(tiger_audio(pool))
        written.append(out / "other_sounds" / "tiger.wav")
    finally:
        pool.close()
    shutil.copyfile(GPL2, out / "LICENSE")
    stamps = {s["path"]: s for s in pool.stamps}
    sounds = pool.sounds
    recipe = {
        "what": "the bundled sample: a barking dog (sounding) beside a silent tiger (distractor)",
        "made_by": "avseg-make-sample (tools/avseg_tools/make_sample.py)",
        "background": {"path": BACKGROUND, "licence": BACKGROUND_LICENCE,
                       "sha256": next(b for b in pool.backgrounds if b["path"] == BACKGROUND)["sha256"],
                       "crop": {"size": CROP, "x": [CROP_X0, CROP_X1], "y": CROP_Y}, "frame_size": G.SIZE},
        "sounding": dict(SOUNDING, sha256=stamps[SOUNDING["stamp"]]["sha256"],
                         sound_sha256=sounds[SOUNDING["sound"]]["sha256"], licence=stamps[SOUNDING["stamp"]]["licence"],
                         loop=loop, package="tuxpaint-stamps-default 2022.06.04-1"),
        "silent": dict(SILENT, sha256=stamps[SILENT["stamp"]]["sha256"], licence=stamps[SILENT["stamp"]]["licence"],
                       package="tuxpaint-stamps-default 2022.06.04-1"),
        "audio": {"rms_dbfs": -20.0, "rate": OUT_RATE, "channels": 2, "resampled_by": "sox -R -G"},
        "other_sounds": {"tiger.wav": {"sound": SILENT_SOUND, "sound_sha256": sounds[SILENT_SOUND]["sha256"],
                                       "rate": G.SR, "channels": 1, "rms_dbfs": -20.0}},
        "masks": "gt_masks: the dog's visible pixels; distractor_masks: the tiger's visible pixels (alpha > 127)",
    }
    (out / "recipe.json").write_text(json.dumps(recipe, indent=1, sort_keys=True) + "\n")
    written += [out / "recipe.json", out / "LICENSE"]
    for p in written:
        print(f"{hashlib.sha256(p.read_bytes()).hexdigest()[:16]}  {p.stat().st_size:>8}  {p}")


if __name__ == "__main__":
    main()
