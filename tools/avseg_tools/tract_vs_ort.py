"""tract (the avseg binary) vs ONNX Runtime on model packages: the helpers of the family tests.

Used by tools/tests/test_tract_families.py and test_convert_families.py:

- `write_fixture_package`: a width-reduced family fixture (avseg_tools.fixtures.tpavi) as a
  package (write_package; AVSS packages are T = 10, semantic with the 71 AVSS labels and palette,
  zero patch padding, PIL-style resize);
- `check_clip`: `avseg features` + `avseg segment --save-logits` on a clip, and the logits
  compared with ORT run on the very inputs `avseg features` wrote;
- `ten_frame_clip`: the sample as a 10-frame clip, so the second TPAVI group is checked in tract.

The comparison follows Engine::run_clip: a clip of n frames runs as
ceil(n / T) windows, a short last window repeats its last frame, and only the
n real outputs are kept. So the 5-frame sample through a T = 10 package fills
frames 5..9 with copies of frame 4 (outputs dropped); group independence
makes frames 0..4 exactly the v1 result.
"""

from __future__ import annotations

import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np

from avseg_export.labels import avss_output
from avseg_export.package import manifest, write_package
from avseg_export.tpavi import build_tpavi
from avseg_export.vggish import build_vggish
from avseg_tools.ort_reference import run_package

SIZE = 224
FAMILIES = ("tpavi-r50", "tpavi-pvt", "tpavi-r50-avss", "tpavi-pvt-avss")


def write_fixture_package(fx, seed, out_dir, size=SIZE):
    audio_model, ainfo = build_vggish(fx.vggish)
    seg_model, sinfo = build_tpavi(fx.checkpoint, frames=fx.frames, height=size, width=size, **fx.export)
    avss = sinfo["num_classes"] > 1
    meta = manifest(
        name=f"fixture-{fx.family}",
        description=f"Width-reduced random {fx.family} fixture for tract/ORT checks; its masks are meaningless",
        family="tpavi",
        frames_per_clip=fx.frames, width=size, height=size,
        embedding_dim=ainfo["embedding_dim"],
        output=avss_output() if avss else {"kind": "binary", "threshold": 0.5},
        resize="bilinear_pil" if avss else "bilinear_opencv",
        patch_padding="zeros" if avss else "repeat_last",
        provenance={
            "source": "avseg_tools.fixtures.tpavi (official key layout, reduced widths)",
            "licence": "MIT OR Apache-2.0",
            "created_by": f"tools/tests/test_tract_families.py (seed {seed})",
            "trained": False,
            "parameters": ainfo["parameters"] + sinfo["parameters"],
            "metrics": {},
        },
    )
    return write_package(out_dir, meta, audio_model, seg_model)


def ten_frame_clip(sample: Path, out: Path) -> Path:
    """Sample frames 1..5 then 5..1 and the sample audio played twice: 10 frames, 10 s."""
    (out / "frames").mkdir(parents=True)
    frames = sorted((sample / "frames").iterdir(), key=lambda p: int(p.stem.rsplit("_", 1)[1]))
    for i, src in enumerate(frames + frames[::-1], start=1):
        shutil.copy(src, out / "frames" / f"frame_{i}{src.suffix}")
    with wave.open(str(sample / "audio.wav")) as w:
        params, pcm = w.getparams(), w.readframes(w.getnframes())
    with wave.open(str(out / "audio.wav"), "wb") as w:
        w.setparams(params)
        w.writeframes(pcm + pcm)
    return out


def run(cmd):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"failed: {' '.join(map(str, cmd))}\n{r.stdout}{r.stderr}")


def check_clip(avseg, pkg, clip, work, t, tol, label, backend="auto"):
    """`avseg segment --backend BACKEND` against ORT on the inputs `avseg features` wrote."""
    logmel, frames_npy, out = work / "logmel.npy", work / "frames.npy", work / "out"
    run([avseg, "features", "--model", pkg, "--audio", clip / "audio.wav", "--out", logmel,
         "--frames", clip / "frames", "--frames-out", frames_npy])
    run([avseg, "segment", "--model", pkg, "--clip", clip, "--out", out, "--save-logits", "--backend", backend])
    got = np.load(out / "logits.npy")
    frames = np.load(frames_npy).astype(np.float32)
    mel = np.load(logmel).astype(np.float32)
    n = frames.shape[0]
    if n > t or mel.shape[0] != t:
        raise RuntimeError(f"{label}: expected one window (n = {n} <= T = {t}, {t} patches), got {mel.shape[0]} patches")
    # As Engine::run_clip: complete the window by repeating the last real frame, keep n outputs.
    window = np.concatenate([frames, np.repeat(frames[-1:], t - n, axis=0)])
    _, want = run_package(pkg, mel, window)
    want = want[:n]
    if got.shape != want.shape:
        print(f"{label}: tract logits {list(got.shape)} != ORT {list(want.shape)}")
        return False
    d = np.abs(got.astype(np.float64) - want).max()
    if want.shape[1] > 1:
        agree = f"argmax agreement {100 * (got.argmax(1) == want.argmax(1)).mean():.4f} %"
    else:
        agree = f"mask agreement {100 * ((got > 0) == (want > 0)).mean():.4f} %"
    print(f"{label:<34} {backend} vs ORT: max|diff| {d:.3e} (max|ORT| {np.abs(want).max():.3g}, tol {tol:.0e}), {agree}")
    return bool(d <= tol)


def fresh(p: Path) -> Path:
    if p.exists():
        shutil.rmtree(p)
    p.mkdir(parents=True)
    return p

