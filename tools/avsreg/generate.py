#!/usr/bin/env python3
"""AVS-Reg: a deterministic AVSBench-style (S4 + MS3 layouts) data set built from registry media.

Sources (installed by tools/avsreg/install_sources.sh, pinned in tools/avsreg/sources.lock.json):
  * Debian tuxpaint-stamps-default: photo cut-outs with alpha (exact masks), each with its own
    recorded sound (Ogg Vorbis).  GPL-2: never commit anything generated from them.
  * Debian espeak-ng (male speech for the fireman cut-outs) and fluidsynth + timgm6mb-soundfont
    (guitar / trumpet melodies for image-only instrument cut-outs).
  * PyPI scikit-image / scikit-learn wheels: CC0 / public-domain / CC-BY-2.0 background photos.

Usage:
  generate.py --seed 0 --out DIR [--s4 N] [--ms3 N] [--negatives N] [--splits train,val,test]
  generate.py --variety --seed 0 --out DIR ...   # issue 15 recipe (version 3; tools/avsreg/unseen_split.md)
  generate.py --repin            # rewrite sources.lock.json from the installed sources (explicit)
  generate.py --repin-variety    # rewrite only its variety_backgrounds pins

Determinism (see tools/avsreg/README.md): PCG32 seeded by SplitMix64, sorted pinned source lists,
integer resizing and compositing, own PNG/WAV writers (no time/text chunks, canonical 44-byte WAV
header), sox -R -G, f64 audio with exactly rounded reductions (math.fsum).  The same seed gives a
byte-identical tree on the same pinned tool set; manifest.json also records a decoded-content hash
of every file, which is independent of the zlib build.
"""
import argparse
import csv
import hashlib
import io
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from avsreg import label_tree

GEN_VERSION = "2"
HERE = Path(__file__).resolve().parent
LOCK = HERE / "sources.lock.json"
STAMPS = Path("/usr/share/tuxpaint/stamps")
SF2 = Path("/usr/share/sounds/sf2/TimGM6mb.sf2")
SIZE = 224
SR = 16000
NSAMP = 5 * SR
SPLITS = ("train", "val", "test")
SPLIT_WEIGHTS = {"train": 70, "val": 15, "test": 15}
TARGET_RMS = 0.1                  # -20 dBFS per active track
PEAK_MAX = 0.8912509381337456     # -1 dBFS
RAMP = 160                        # 10 ms gate ramps


def sources_root():
    d = os.environ.get("AVSREG_SOURCES")
    if d:
        return Path(d)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "avseg" / "avsreg-sources"


# ----------------------------------------------------------------------------------------------
# PRNG: SplitMix64 (seeding) -> PCG32 (PCG-XSH-RR 64/32, O'Neill 2014).  Never a language default.
M64 = (1 << 64) - 1


class SplitMix64:
    def __init__(self, seed):
        self.s = seed & M64

    def next(self):
        self.s = (self.s + 0x9E3779B97F4A7C15) & M64
        z = self.s
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        return z ^ (z >> 31)


class PCG32:
    MUL = 6364136223846793005

    def __init__(self, initstate, initseq):
        self.inc = ((initseq << 1) | 1) & M64
        self.state = 0
        self.u32()
        self.state = (self.state + initstate) & M64
        self.u32()

    def u32(self):
        old = self.state
        self.state = (old * self.MUL + self.inc) & M64
        xs = (((old >> 18) ^ old) >> 27) & 0xFFFFFFFF
        rot = old >> 59
        return ((xs >> rot) | (xs << ((-rot) & 31))) & 0xFFFFFFFF

    def uniform(self, a=0.0, b=1.0):
        """53-bit float in [0,1) from two draws, mapped to [a,b)."""
        x = ((self.u32() >> 5) * 67108864 + (self.u32() >> 6)) / 9007199254740992.0
        return a + (b - a) * x

    def below(self, n):
        """Unbiased integer in [0,n) (rejection of the low remainder)."""
        assert 0 < n < (1 << 32)
        threshold = ((1 << 32) - n) % n
        while True:
            r = self.u32()
            if r >= threshold:
                return r % n


def fnv1a64(s):
    h = 0xCBF29CE484222325
    for b in s.encode():
        h = ((h ^ b) * 0x100000001B3) & M64
    return h


def clip_rng(global_seed, key):
    sm = SplitMix64(global_seed ^ fnv1a64(key))
    return PCG32(sm.next(), sm.next())


def stable_hash(key):
    """Seed-independent 64-bit hash used by the held-out split rules."""
    return int.from_bytes(hashlib.sha256(("avsreg/" + key).encode()).digest()[:8], "big")


def bucket_split(key):
    b = stable_hash(key) % 100
    return "train" if b < 70 else ("val" if b < 85 else "test")


def fround(x):
    return int(math.floor(x + 0.5))


# ----------------------------------------------------------------------------------------------
# Source pool definition

# S4 category for stamps that map onto an AVSBench S4 class (docs/spec/assets.md §4.1); others are reg_<stamp>.
S4_CATEGORY = {
    "dog": "dog_barking", "lion": "lions_roaring", "horse": "horse_clip-clop",
    "violin": "playing_violin", "firetruck": "ambulance_siren", "saw": "chainsawing_trees",
    "fox": "coyote_howling", "guitar_classical": "playing_acoustic_guitar",
    "fireman200b": "male_speech", "fireman240a": "male_speech",
}
LICENCES = {
    "tuxpaint-stamps-default": "GPL-2 (Debian copyright, Files: *)",
    "espeak-ng": "GPL-3+ (synthesiser and voice data; outputs treated as GPL-3)",
    "fluidsynth+timgm6mb-soundfont": "fluidsynth LGPL-2.1+; TimGM6mb.sf2 GPL-2 (renders treated as GPL-2)",
}
# Backgrounds: permissively licensed photos from PyPI wheels (path inside $AVSREG_SOURCES).
BACKGROUNDS = [
    ("pypi/skimage/brick.png", "CC0 (skimage.data.brick docstring)"),
    ("pypi/skimage/clock_motion.png", "public domain (skimage.data.clock docstring, Stefan van der Walt)"),
    ("pypi/skimage/coffee.png", "CC0 (skimage.data.coffee docstring, Rachel Michetti)"),
    ("pypi/skimage/coins.png", "no known copyright restrictions (skimage.data.coins docstring, Brooklyn Museum)"),
    ("pypi/skimage/grass.png", "CC0 (skimage.data.grass docstring)"),
    ("pypi/skimage/gravel.png", "CC0 (skimage.data.gravel docstring)"),
    ("pypi/skimage/hubble_deep_field.jpg", "public domain (NASA; skimage.data.hubble_deep_field docstring)"),
    ("pypi/skimage/rocket.jpg", "public domain (SpaceX; skimage.data.rocket docstring)"),
    ("pypi/sklearn/china.jpg", "CC-BY-2.0 (sklearn/datasets/images/README.txt; attribution required)"),
    ("pypi/sklearn/flower.jpg", "CC-BY-2.0 (sklearn/datasets/images/README.txt; attribution required)"),
]
# --variety (issue 15): background sources, each assigned to exactly one split.  The test split
# ("unseen") uses photo sources that neither train nor val saw; see tools/avsreg/unseen_split.md.
# Reserved for independent evaluation and never used here: Debian plasma-workspace-wallpapers and
# mate-backgrounds.
VARIETY_GEN_VERSION = "3"
VARIETY_SOURCE_SPLIT = {
    "deb:tuxpaint-data": "train",            # 19 photos (Tux Paint templates)
    "deb:ukui-wallpapers": "train",          # 12 artwork wallpapers
    "pypi:scikit-image": "train",            # 12 photos
    "pypi:scikit-learn": "train",            # 2 photos
    "proc:fbm": "train", "proc:gradient": "train", "proc:stripes": "train", "proc:blotches": "train",
    "deb:lomiri-wallpapers": "val",          # 1 artwork
    "deb:lomiri-wallpapers-20.04": "val",    # 4 photos / artwork
    "proc:marble": "val",
    "deb:lomiri-wallpapers-16.04": "test",   # 15 photos
}
# Photos of the default recipe's held-out pools stay out of --variety training: its validation
# photos (grass, the Hubble field) join the --variety val split, and its test photos (brick,
# rocket) are left out, so that a model trained on --variety data has never seen the default
# recipe's val or test backgrounds (nor the bundled sample's, grass) and can still be compared on
# them.
VARIETY_PHOTO_SPLIT = {"pypi/skimage/grass.png": "val", "pypi/skimage/hubble_deep_field.jpg": "val"}
VARIETY_LEFT_OUT = ("pypi/skimage/brick.png", "pypi/skimage/rocket.jpg")


def variety_split(path, source):
    """The --variety split of one photo: its source's, unless overridden above."""
    return VARIETY_PHOTO_SPLIT.get(path, VARIETY_SOURCE_SPLIT[source])


_TUX = "GPL-2+ (tuxpaint-data Debian copyright, Files: *)"
_UKUI = "CC-BY-SA-3.0 (ukui-wallpapers Debian copyright, Files: *)"
_LOM = "{} (lomiri-wallpapers Debian copyright, Files: {})"
VARIETY_PHOTOS = (
    [(p, "pypi:scikit-image" if "/skimage/" in p else "pypi:scikit-learn", lic) for p, lic in BACKGROUNDS]
    + [("pypi/skimage/astronaut.png", "pypi:scikit-image", "public domain (NASA; skimage.data.astronaut docstring)"),
       ("pypi/skimage/camera.png", "pypi:scikit-image", "CC0 (Lav Varshney; skimage.data.camera docstring)"),
       ("pypi/skimage/ihc.png", "pypi:scikit-image",
        "no known copyright restrictions (skimage.data.immunohistochemistry docstring)"),
       ("pypi/skimage/retina.jpg", "pypi:scikit-image", "CC0-1.0 (skimage.data.retina docstring)")]
    + [(f"deb/tuxpaint-data/{n}.jpg", "deb:tuxpaint-data", _TUX) for n in (
        "burnt_bark", "cliff", "corn_maze", "jellyfish", "lighthouse", "mossy_bark", "mossy_log", "mudstone",
        "ocean_splash", "ocean_waves", "redwoods_above", "rocks", "sheep", "spiders_web", "sun_behind_clouds",
        "sun_behind_leaves", "trees_above", "trees_at_dusk", "wool_mill_machine")]
    + [(f"deb/ukui-wallpapers/{n}", "deb:ukui-wallpapers", _UKUI) for n in (
        "2004default.jpg", "calla.png", "city.png", "desert.png", "firstgeneration.jpg", "fluent-color.png",
        "focal-ubuntukylin.png", "goldfish.png", "rhythm.jpg", "rollpaper.png", "string.jpg", "the-mouse.jpg")]
    + [("deb/lomiri-wallpapers/warty-final-ubuntu.png", "deb:lomiri-wallpapers",
        _LOM.format("CC-BY-SA-3.0", "warty-final-ubuntu.png"))]
    + [(f"deb/lomiri-wallpapers-20.04/{n}.jpg", "deb:lomiri-wallpapers-20.04",
        _LOM.format("CC-BY-SA-3.0", f"20.04/{n}.jpg")) for n in (
        "Fossa_by_Jasper_Roks", "Infinite-Sea_by_Aury88", "Kleiber_by_Lukas_Baubkus",
        "Painting-Colors_by__herobrine7gamer")]
    + [(f"deb/lomiri-wallpapers-16.04/{n}.jpg", "deb:lomiri-wallpapers-16.04",
        _LOM.format(lic, f"16.04/{n}.jpg")) for n, lic in (
        ("Bridge_by_Sander_Klootwijk", "CC-BY-SA-4.0"), ("Dragonfly_by_Bolly", "CC-BY-SA-4.0"),
        ("Picture_0B_by_freespace", "CC-BY-4.0"), ("Picture_1A_by_freespace", "CC-BY-4.0"),
        ("Wine_by_Jakkub_Mede", "CC-BY-4.0"), ("aitzgorri_by_Aitzol_Berasategi", "CC-BY-4.0"),
        ("analogpattern_by_Peter_Nerlich", "CC-BY-SA-4.0"), ("free_by_Peter_Nerlich", "CC-BY-SA-4.0"),
        ("friends_by_Aitzol_Berasategi", "CC-BY-4.0"), ("greentock_by_Peter_Nerlich", "CC-BY-SA-4.0"),
        ("life_by_Aitzol_Berasategi", "CC-BY-4.0"), ("picosdeeuropa_by_Aitzol_Berasategi", "CC-BY-4.0"),
        ("seeding_by_Clements_Engelhardt", "CC0-1.0"), ("sunset_by_Aitzol_Berasategi", "CC-BY-4.0"),
        ("umang_by_Abhishek_Mudgal", "CC-BY-4.0"))]
)
VARIETY_WORK_LONG = 1024     # photos are box-downscaled once at load by an integer factor to <= ~2x this
PROC_SIZE = 320              # procedural backgrounds are made at PROC_SIZE^2, then cropped like photos
# Image-only cut-outs given synthetic sounds.
SPEECH_STAMPS = ["people/fireman200b.png", "people/fireman240a.png"]
SPEECH_VOICES = ["en-gb", "en-us"]
SPEECH_TEXT = [
    "Stand back please, the ladder is coming down now.",
    "Hello everyone, today I will show you how the hose works.",
    "Keep calm and walk slowly towards the exit.",
]
MIDI_STAMPS = {  # stamp -> GM program (0-based)
    "hobbies/music/string/guitar_classical.png": 24,
    "hobbies/music/string/guitar_electric.png": 27,
    "hobbies/music/brass/trumpet.png": 56,
}
MELODIES = [  # (note, beats) at 120 bpm
    [(60, 1), (64, 1), (67, 1), (72, 1), (67, 1), (64, 1), (60, 2)],
    [(57, 1), (60, 1), (64, 2), (62, 1), (60, 1), (59, 2)],
    [(55, 0.5), (59, 0.5), (62, 0.5), (67, 0.5), (66, 1), (64, 1), (62, 2)],
]
MIN_LONG_SIDE = 64


def sha256_file(p):
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for blk in iter(lambda: f.read(1 << 20), b""):
            h.update(blk)
    return h.hexdigest()


def run(cmd):
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def tool_versions():
    def out(cmd):
        try:
            r = subprocess.run(cmd, capture_output=True, text=True)
            return (r.stdout or r.stderr).strip().splitlines()[0]
        except OSError:
            return None

    def deb(pkg):
        r = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True, text=True)
        return r.stdout.strip() or None

    import PIL
    return {
        "debian_packages": {p: deb(p) for p in ["tuxpaint-stamps-default", "sox", "libsox-fmt-all",
                                                "espeak-ng", "fluidsynth", "timgm6mb-soundfont"]},
        "sox": out(["sox", "--version"]),
        "espeak-ng": out(["espeak-ng", "--version"]),
        "fluidsynth": out(["fluidsynth", "--version"]),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "pillow (decoding only)": PIL.__version__,
        "zlib (PNG writer)": zlib.ZLIB_RUNTIME_VERSION,
    }


# ----------------------------------------------------------------------------------------------
# Decoding of sources (pinned by file hash and by decoded-content hash)

def load_rgba(path):
    im = Image.open(path)
    im.load()
    a = np.asarray(im.convert("RGBA"), dtype=np.uint8)
    ys, xs = np.nonzero(a[:, :, 3] > 0)
    return np.ascontiguousarray(a[ys.min():ys.max() + 1, xs.min():xs.max() + 1])


def load_rgb(path):
    im = Image.open(path)
    im.load()
    return np.ascontiguousarray(np.asarray(im.convert("RGB"), dtype=np.uint8))


def read_wav_s16(path):
    data = Path(path).read_bytes()
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE", path
    pos, fmt, pcm = 12, None, None
    while pos + 8 <= len(data):
        cid, n = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
        body = data[pos + 8:pos + 8 + n]
        if cid == b"fmt ":
            fmt = struct.unpack("<HHIIHH", body[:16])
        elif cid == b"data":
            pcm = body
        pos += 8 + n + (n & 1)
    assert fmt and fmt[0] in (1, 0xFFFE) and fmt[1] == 1 and fmt[2] == SR and fmt[5] == 16, (path, fmt)
    return np.frombuffer(pcm, dtype="<i2").astype(np.int16)


def to16k(src, dst):
    run(["sox", "-R", "-G", str(src), "-r", str(SR), "-c", "1", "-b", "16", "-e", "signed-integer", str(dst)])


def midi_bytes(program, melody):
    """Format-0 SMF, one track, 480 ticks/beat, 120 bpm, channel 0."""
    def vlq(n):
        out = [n & 0x7F]
        n >>= 7
        while n:
            out.append(0x80 | (n & 0x7F))
            n >>= 7
        return bytes(reversed(out))
    ev = bytearray(b"\x00\xff\x51\x03\x07\xa1\x20" + b"\x00" + bytes([0xC0, program]))
    for note, beats in melody:
        ev += b"\x00" + bytes([0x90, note, 96])
        ev += vlq(int(beats * 480)) + bytes([0x80, note, 64])
    ev += b"\x00\xff\x2f\x00"
    return b"MThd" + struct.pack(">IHHH", 6, 0, 1, 480) + b"MTrk" + struct.pack(">I", len(ev)) + bytes(ev)


def render_sound(sound, tmp):
    """Returns int16 mono 16 kHz samples of a sound id; synthesises espeak/fluidsynth sounds."""
    kind = sound["kind"]
    out = tmp / (hashlib.sha256(sound["id"].encode()).hexdigest()[:16] + ".wav")
    if kind == "ogg":
        to16k(STAMPS / sound["path"], out)
    elif kind == "espeak":
        raw = tmp / "espeak_raw.wav"
        run(["espeak-ng", "-v", sound["voice"], "-s", "150", "-w", str(raw), sound["text"]])
        to16k(raw, out)
    elif kind == "midi":
        mid, raw = tmp / "tune.mid", tmp / "fluid_raw.wav"
        mid.write_bytes(midi_bytes(sound["program"], MELODIES[sound["melody"]]))
        run(["fluidsynth", "-ni", "-q", "-g", "1.0", "-F", str(raw), "-r", str(SR), str(SF2), str(mid)])
        to16k(raw, out)
    else:
        raise ValueError(kind)
    return read_wav_s16(out)


def build_inventory():
    """The candidate pool, sorted by path (byte order).  Used by --repin only."""
    stamps = []
    for png in sorted(STAMPS.rglob("*.png"), key=lambda p: str(p).encode()):
        rel = png.relative_to(STAMPS).as_posix()
        if rel.startswith(("symbols/alphabets/german/", "symbols/math/")):
            continue
        ogg = png.with_suffix(".ogg")
        if ogg.exists():
            sounds = [{"id": "ogg:" + ogg.relative_to(STAMPS).as_posix(), "kind": "ogg",
                       "path": ogg.relative_to(STAMPS).as_posix(), "package": "tuxpaint-stamps-default"}]
        elif rel in SPEECH_STAMPS:
            sounds = [{"id": f"espeak:{v}:{i}", "kind": "espeak", "voice": v, "text": t, "package": "espeak-ng"}
                      for v in SPEECH_VOICES for i, t in enumerate(SPEECH_TEXT)]
        elif rel in MIDI_STAMPS:
            sounds = [{"id": f"midi:{MIDI_STAMPS[rel]}:{m}", "kind": "midi", "program": MIDI_STAMPS[rel],
                       "melody": m, "package": "fluidsynth+timgm6mb-soundfont"} for m in range(len(MELODIES))]
        else:
            continue
        stamps.append({"path": rel, "sounds": sounds})
    return stamps


def repin():
    root = sources_root()
    tmp = Path(tempfile.mkdtemp(prefix="avsreg_pin_"))
    try:
        stamps, sounds = [], {}
        for s in build_inventory():
            p = STAMPS / s["path"]
            rgba = load_rgba(p)
            if max(rgba.shape[:2]) < MIN_LONG_SIDE:
                continue
            stamps.append({"path": s["path"], "sha256": sha256_file(p),
                           "pixels_sha256": hashlib.sha256(rgba.tobytes()).hexdigest(),
                           "size": [int(rgba.shape[1]), int(rgba.shape[0])],
                           "licence": LICENCES["tuxpaint-stamps-default"],
                           "sounds": [x["id"] for x in s["sounds"]]})
            for snd in s["sounds"]:
                if snd["id"] in sounds:
                    continue
                pcm = render_sound(snd, tmp)
                entry = dict(snd)
                if snd["kind"] == "ogg":
                    entry["sha256"] = sha256_file(STAMPS / snd["path"])
                entry["pcm16k_sha256"] = hashlib.sha256(pcm.tobytes()).hexdigest()
                entry["samples"] = int(pcm.size)
                entry["licence"] = LICENCES[snd["package"]]
                sounds[snd["id"]] = entry
        bgs = []
        for rel, lic in BACKGROUNDS:
            p = root / rel
            rgb = load_rgb(p)
            bgs.append({"path": rel, "sha256": sha256_file(p),
                        "pixels_sha256": hashlib.sha256(rgb.tobytes()).hexdigest(),
                        "size": [int(rgb.shape[1]), int(rgb.shape[0])], "licence": lic})
        lock = {"format": "avsreg-sources-lock", "version": 1,
                "tools": tool_versions(),
                "stamps": stamps, "sounds": [sounds[k] for k in sorted(sounds)], "backgrounds": bgs,
                "variety_backgrounds": variety_pins()}
        LOCK.write_text(json.dumps(lock, indent=1, sort_keys=True) + "\n")
        print(f"wrote {LOCK}: {len(stamps)} stamps, {len(sounds)} sounds, {len(bgs)} backgrounds")
    finally:
        shutil.rmtree(tmp)


def variety_pins():
    """Pins of the --variety photos (file + decoded pixels), with source, split and licence."""
    root = sources_root()
    out = []
    for rel, src, lic in sorted(VARIETY_PHOTOS, key=lambda t: t[0].encode()):
        if rel in VARIETY_LEFT_OUT:
            continue
        p = root / rel
        rgb = load_rgb(p)
        pkg = src.split(":", 1)[1]
        ver = (root / "deb" / pkg / "VERSION").read_text().strip() if src.startswith("deb:") else \
            {"scikit-image": "0.26.0", "scikit-learn": "1.9.1"}[pkg]
        out.append({"path": rel, "sha256": sha256_file(p),
                    "pixels_sha256": hashlib.sha256(rgb.tobytes()).hexdigest(),
                    "size": [int(rgb.shape[1]), int(rgb.shape[0])], "licence": lic,
                    "source": src, "source_version": ver, "split": variety_split(rel, src)})
    return out


def repin_variety():
    """Adds/rewrites only the `variety_backgrounds` pins; every other pin stays byte-identical."""
    lock = json.loads(LOCK.read_text())
    lock["variety_backgrounds"] = variety_pins()
    LOCK.write_text(json.dumps(lock, indent=1, sort_keys=True) + "\n")
    print(f"wrote {LOCK}: {len(lock['variety_backgrounds'])} variety backgrounds")


# ----------------------------------------------------------------------------------------------
# Integer image operations

WBITS = 14
WONE = 1 << WBITS


def resize_weights(src, dst):
    """Antialiased triangle (bilinear) filter, weights quantised to 14 bits summing to exactly 2^14."""
    scale = src / dst
    support = max(1.0, scale)
    rows = []
    for i in range(dst):
        c = (i + 0.5) * scale
        lo, hi = int(math.floor(c - support)), int(math.ceil(c + support))
        acc = {}
        for j in range(lo, hi + 1):
            w = 1.0 - abs((j + 0.5 - c) / support)
            if w > 0.0:
                jj = min(max(j, 0), src - 1)
                acc[jj] = acc.get(jj, 0.0) + w
        tot = math.fsum(acc.values())
        idx = sorted(acc)
        q = [int(math.floor(acc[j] / tot * WONE + 0.5)) for j in idx]
        k = max(range(len(q)), key=lambda t: (q[t], -t))
        q[k] += WONE - sum(q)
        rows.append((idx, q))
    K = max(len(r[0]) for r in rows)
    I = np.zeros((dst, K), np.int64)
    W = np.zeros((dst, K), np.int64)
    for i, (idx, q) in enumerate(rows):
        I[i, :len(idx)] = idx
        W[i, :len(q)] = q
    return I, W


_WCACHE = {}


def _wts(src, dst):
    if (src, dst) not in _WCACHE:
        _WCACHE[(src, dst)] = resize_weights(src, dst)
    return _WCACHE[(src, dst)]


def resize_int(a, h, w):
    """a: (H,W,C) int64 -> (h,w,C) int64, separable integer filter, rounding shifts."""
    I, W = _wts(a.shape[0], h)
    t = (a[I] * W[:, :, None, None]).sum(axis=1)
    t = (t + (WONE >> 1)) >> WBITS
    I, W = _wts(a.shape[1], w)
    t = (t[:, I] * W[None, :, :, None]).sum(axis=2)
    return (t + (WONE >> 1)) >> WBITS


def resize_premult(rgba, h, w):
    """RGBA uint8 -> (premultiplied RGB in 0..65025, alpha 0..255), both int64 (h,w,·)."""
    a = rgba.astype(np.int64)
    pm = np.concatenate([a[:, :, :3] * a[:, :, 3:4], a[:, :, 3:4]], axis=2)
    r = resize_int(pm, h, w)
    alpha = np.clip(r[:, :, 3], 0, 255)
    return np.clip(r[:, :, :3], 0, 255 * 255), alpha


# ----------------------------------------------------------------------------------------------
# Writers

def _chunk(t, body):
    return struct.pack(">I", len(body)) + t + body + struct.pack(">I", zlib.crc32(t + body) & 0xFFFFFFFF)


def png_bytes(a):
    """8-bit grey (H,W) or RGB (H,W,3); IHDR/IDAT/IEND only; Paeth filter for RGB, none for grey."""
    a = np.ascontiguousarray(a, dtype=np.uint8)
    h, w = a.shape[:2]
    if a.ndim == 2:
        ctype, rows = 0, a.reshape(h, w)
        filt = np.concatenate([np.zeros((h, 1), np.uint8), rows], axis=1)
    else:
        ctype = 2
        x = a.reshape(h, w * 3).astype(np.int16)
        left = np.zeros_like(x); left[:, 3:] = x[:, :-3]
        up = np.zeros_like(x); up[1:] = x[:-1]
        ul = np.zeros_like(x); ul[1:, 3:] = x[:-1, :-3]
        p = left + up - ul
        pa, pb, pc = np.abs(p - left), np.abs(p - up), np.abs(p - ul)
        pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, ul))
        f = ((x - pred) & 0xFF).astype(np.uint8)
        filt = np.concatenate([np.full((h, 1), 4, np.uint8), f], axis=1)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, ctype, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr)
            + _chunk(b"IDAT", zlib.compress(filt.tobytes(), 6)) + _chunk(b"IEND", b""))


def wav_bytes(pcm):
    pcm = np.asarray(pcm, dtype="<i2")
    n = pcm.size * 2
    hdr = (b"RIFF" + struct.pack("<I", 36 + n) + b"WAVE" + b"fmt " +
           struct.pack("<IHHIIHH", 16, 1, 1, SR, SR * 2, 2, 16) + b"data" + struct.pack("<I", n))
    assert len(hdr) == 44
    return hdr + pcm.tobytes()


# ----------------------------------------------------------------------------------------------
# The generator

class Pool:
    def __init__(self, verify=True, variety=False):
        if not LOCK.exists():
            sys.exit(f"error: {LOCK} missing; run with --repin once the sources are installed")
        lock = json.loads(LOCK.read_text())
        self.lock = lock
        root = sources_root()
        self.tmp = Path(tempfile.mkdtemp(prefix="avsreg_"))
        errs = []
        self.stamps = []
        for s in lock["stamps"]:
            p = STAMPS / s["path"]
            if not p.exists():
                errs.append(f"missing {p}")
                continue
            if verify and sha256_file(p) != s["sha256"]:
                errs.append(f"hash mismatch {p}")
            self.stamps.append(dict(s))
        self.sounds = {s["id"]: s for s in lock["sounds"]}
        for s in lock["sounds"]:
            if s["kind"] == "ogg":
                p = STAMPS / s["path"]
                if not p.exists():
                    errs.append(f"missing {p}")
                elif verify and sha256_file(p) != s["sha256"]:
                    errs.append(f"hash mismatch {p}")
        self.backgrounds = []
        for b in lock["backgrounds"]:
            p = root / b["path"]
            if not p.exists():
                errs.append(f"missing {p} (run tools/avsreg/install_sources.sh)")
                continue
            if verify and sha256_file(p) != b["sha256"]:
                errs.append(f"hash mismatch {p}")
            self.backgrounds.append(dict(b))
        self.variety = variety
        if variety:
            self.vbackgrounds = []
            if "variety_backgrounds" not in lock:
                errs.append("sources.lock.json has no variety_backgrounds (avsreg-generate --repin-variety)")
            for b in lock.get("variety_backgrounds", []):
                p = root / b["path"]
                if not p.exists():
                    errs.append(f"missing {p} (run tools/avsreg/install_sources.sh)")
                    continue
                if verify and sha256_file(p) != b["sha256"]:
                    errs.append(f"hash mismatch {p}")
                e = dict(b)
                e["orig_size"] = b["size"]
                e["box"] = box_factor(*b["size"])
                e["size"] = [b["size"][0] // e["box"], b["size"][1] // e["box"]]
                self.vbackgrounds.append(e)
        if errs:
            sys.exit("error: AVS-Reg sources differ from tools/avsreg/sources.lock.json "
                     "(install with tools/avsreg/install_sources.sh, or --repin deliberately):\n  "
                     + "\n  ".join(errs[:20]) + (f"\n  ... {len(errs) - 20} more" if len(errs) > 20 else ""))
        self.sorted_stamps = sorted(self.stamps, key=lambda s: s["path"].encode())
        self._img, self._pcm = {}, {}
        # Held-out background pools: rank by a seed-independent hash of the path; 15 % test, 15 % val.
        ranked = sorted(self.backgrounds, key=lambda b: (stable_hash("bg/" + b["path"]), b["path"]))
        n = len(ranked)
        nt = nv = max(1, int(math.floor(0.15 * n + 0.5)))
        self.bg_split = {}
        for i, b in enumerate(ranked):
            self.bg_split[b["path"]] = "test" if i < nt else ("val" if i < nt + nv else "train")
        self.bg_pool = {sp: sorted([b for b in self.backgrounds if self.bg_split[b["path"]] == sp],
                                   key=lambda b: b["path"].encode()) for sp in SPLITS}
        # Held-out trajectory classes: (start cell x, y, end cell x, y) on a 4x4 grid in normalised
        # feasible coordinates -> 256 classes, each assigned to one split by a stable hash.
        self.traj = {sp: [c for c in range(256) if bucket_split(f"traj/{c}") == sp] for sp in SPLITS}
        if variety:
            # Held out by source: every photo and procedural family of a source lies in its split.
            self.bg_split = {b["path"]: b["split"] for b in self.vbackgrounds}
            self.bg_pool = {sp: sorted([b for b in self.vbackgrounds if b["split"] == sp],
                                       key=lambda b: b["path"].encode()) for sp in SPLITS}
            self.proc_pool = {sp: sorted(k.split(":", 1)[1] for k, v in VARIETY_SOURCE_SPLIT.items()
                                         if k.startswith("proc:") and v == sp) for sp in SPLITS}
            for b in self.vbackgrounds:
                assert variety_split(b["path"], b["source"]) == b["split"], b["path"]
                assert b["path"] not in VARIETY_LEFT_OUT, b["path"]

    def image(self, kind, rel):
        key = (kind, rel)
        if key not in self._img:
            if kind == "stamp":
                a = load_rgba(STAMPS / rel)
                want = next(s for s in self.stamps if s["path"] == rel)["pixels_sha256"]
            else:
                a = load_rgb(sources_root() / rel)
                pins = self.vbackgrounds if self.variety else self.backgrounds
                pin = next(b for b in pins if b["path"] == rel)
                want = pin["pixels_sha256"]
            if hashlib.sha256(a.tobytes()).hexdigest() != want:
                sys.exit(f"error: decoded pixels of {rel} differ from the pin (image decoder changed?)")
            if kind != "stamp" and self.variety:
                a = box_downscale(a, pin["box"])
            self._img[key] = a
        return self._img[key]

    def pcm(self, sid):
        if sid not in self._pcm:
            snd = self.sounds[sid]
            p = render_sound(snd, self.tmp)
            if hashlib.sha256(p.tobytes()).hexdigest() != snd["pcm16k_sha256"]:
                sys.exit(f"error: 16 kHz conversion of {sid} differs from the pin (sox/espeak-ng/fluidsynth changed?)")
            x = p.astype(np.float64) / 32768.0
            # trim leading/trailing dead air: samples below -40 dB re the source's peak
            thr = max(32, int(np.max(np.abs(p.astype(np.int32)))) // 100)
            nz = np.nonzero(np.abs(p.astype(np.int32)) > thr)[0]
            x = x[nz[0]:nz[-1] + 1] if nz.size else x
            self._pcm[sid] = x
        return self._pcm[sid]

    def close(self):
        shutil.rmtree(self.tmp, ignore_errors=True)


def stamp_group(path):
    return path.rsplit("/", 1)[0]


def stamp_name(path):
    return path.rsplit("/", 1)[1].rsplit(".", 1)[0]


def s4_category(path):
    n = stamp_name(path)
    return S4_CATEGORY.get(n, "reg_" + n.lower().replace("-", "_"))


def draw_objects(rng, pool, n, need_distinct_from=()):
    """Draws n stamps with pairwise distinct groups (folder), a sound each, scale, flip, drift."""
    stamps = pool.sorted_stamps
    chosen, groups = [], {stamp_group(p) for p in need_distinct_from}
    while len(chosen) < n:
        s = stamps[rng.below(len(stamps))]
        if stamp_group(s["path"]) in groups:
            continue
        groups.add(stamp_group(s["path"]))
        chosen.append(s)
    objs = []
    for s in chosen:
        objs.append({"stamp": s["path"], "sound": s["sounds"][rng.below(len(s["sounds"]))]})
    return objs


def draw_size(rng, o, lo, hi):
    """An object's size draws, in this order: long side U(lo, hi) of the frame, a drift of up to
    +-10 % over the five frames, and a flip. Both recipes draw them alike, so both keep this order."""
    o["long_side"] = rng.uniform(lo, hi) * SIZE
    o["drift"] = rng.uniform(0.9, 1.1)
    o["flip"] = rng.below(2)


def object_dims(pool, o):
    """Each frame's [w, h] of the stamp, from its drawn long side and drift (no random draws)."""
    w0, h0 = next(s for s in pool.stamps if s["path"] == o["stamp"])["size"]
    dims = []
    for t in range(5):
        L = o["long_side"] * (1.0 + (o["drift"] - 1.0) * t / 4)
        f = L / max(w0, h0)
        dims.append([max(1, fround(w0 * f)), max(1, fround(h0 * f))])
    return dims


def draw_trajectory(rng, pool, split, o, off_frame):
    """A held-out trajectory class of `split` (start and end 4x4 cells), a position in each cell,
    and the five boxes along the line between them. `off_frame`: the share of the stamp that may
    leave the frame on each side (0: boxes stay inside)."""
    c = pool.traj[split][rng.below(len(pool.traj[split]))]
    cells = [(c >> 6) & 3, (c >> 4) & 3, (c >> 2) & 3, c & 3]
    u = [(cell + rng.uniform()) / 4.0 for cell in cells]
    o["trajectory_class"] = c
    o["u_start"], o["u_end"] = u[:2], u[2:]
    o["boxes"] = []
    for t in range(5):
        w, h = o["dims"][t]
        mx, my = fround(off_frame * w), fround(off_frame * h)
        ux = o["u_start"][0] + (o["u_end"][0] - o["u_start"][0]) * t / 4
        uy = o["u_start"][1] + (o["u_end"][1] - o["u_start"][1]) * t / 4
        o["boxes"].append([fround(ux * (SIZE - w + 2 * mx)) - mx, fround(uy * (SIZE - h + 2 * my)) - my, w, h])


def place_objects(rng, pool, split, objs, lo, hi):
    """Scale/flip/drift and held-out trajectories; rejects overlapping boxes (+4 px) in any frame."""
    for _attempt in range(1000):
        for o in objs:
            draw_size(rng, o, lo, hi)
            o["dims"] = object_dims(pool, o)
        for _try in range(100):
            for o in objs:
                draw_trajectory(rng, pool, split, o, 0.0)
            ok = True
            for t in range(5):
                for i in range(len(objs)):
                    for j in range(i + 1, len(objs)):
                        a, b = objs[i]["boxes"][t], objs[j]["boxes"][t]
                        if (a[0] < b[0] + b[2] + 4 and b[0] < a[0] + a[2] + 4 and
                                a[1] < b[1] + b[3] + 4 and b[1] < a[1] + a[3] + 4):
                            ok = False
            if ok:
                return
    raise RuntimeError("placement failed")


def draw_background(rng, pool, split):
    bgs = pool.bg_pool[split]
    b = bgs[rng.below(len(bgs))]
    W, H = b["size"]
    c = rng.uniform(0.6, 1.0)
    cw, ch = fround(W * c), fround(H * c)
    u0 = [rng.uniform(), rng.uniform()]
    u1 = [rng.uniform(), rng.uniform()]
    flip = rng.below(2)
    crops = []
    for t in range(5):
        ux = u0[0] + (u1[0] - u0[0]) * t / 4
        uy = u0[1] + (u1[1] - u0[1]) * t / 4
        crops.append([fround(ux * (W - cw)), fround(uy * (H - ch)), cw, ch])
    return {"path": b["path"], "flip": flip, "crops": crops}


def draw_background_augment(rng, pool, split):
    """A photometric rewrite of the background (and maybe a second background blended in), for
    training clips: with only ~6 training photos the model learnt their textures, and on held-out
    backgrounds it lost whole objects (AVS-Reg test: 23 % of single-object frames on brick.png).
    The cut-outs themselves are never touched: their look is what ties them to their sound."""
    aug = {}
    order = [0, 1, 2]
    for i in (2, 1):                     # Fisher-Yates on the three channels
        j = rng.below(i + 1)
        order[i], order[j] = order[j], order[i]
    aug["channels"] = order
    aug["invert"] = int(rng.uniform() < 0.25)
    aug["gray"] = int(rng.uniform() < 0.2)
    aug["contrast"] = rng.uniform(0.5, 1.5)
    aug["brightness"] = fround(rng.uniform(-50, 50))
    if rng.uniform() < 0.4:
        bgs = pool.bg_pool[split]
        b = bgs[rng.below(len(bgs))]
        W, H = b["size"]
        c = rng.uniform(0.3, 1.0)
        cw, ch = fround(min(W, H) * c), fround(min(W, H) * c)
        aug["blend"] = {"path": b["path"], "crop": [fround(rng.uniform() * (W - cw)), fround(rng.uniform() * (H - ch)),
                                                    cw, ch], "weight": rng.uniform(0.3, 0.7)}
    return aug


def blend_layer(pool, aug):
    """The blended-in photo of `aug` at SIZE x SIZE (int64), or None. Static over the clip."""
    b = aug.get("blend")
    if not b:
        return None
    img = pool.image("bg", b["path"])
    x, y, w, h = b["crop"]
    return np.clip(resize_int(img[y:y + h, x:x + w].astype(np.int64), SIZE, SIZE), 0, 255)


def augment_background(frame, aug, blend):
    """frame: int64 [SIZE,SIZE,3] in 0..255 -> the same, rewritten by `aug` (integer maths);
    `blend` is blend_layer()'s image."""
    f = frame[:, :, aug["channels"]]
    if blend is not None:
        wq = fround(aug["blend"]["weight"] * 256)
        f = (f * (256 - wq) + blend * wq + 128) // 256
    if aug["gray"]:
        g = (f[:, :, 0] * 77 + f[:, :, 1] * 150 + f[:, :, 2] * 29 + 128) // 256
        f = np.repeat(g[:, :, None], 3, axis=2)
    if aug["invert"]:
        f = 255 - f
    cq = fround(aug["contrast"] * 256)
    f = ((f - 128) * cq + 128 * 256 + aug["brightness"] * 256 + 128) // 256
    return np.clip(f, 0, 255)


def render_frames(pool, rec):
    bgimg = pool.image("bg", rec["background"]["path"])
    if rec["background"]["flip"]:
        bgimg = bgimg[:, ::-1]
    aug = rec["background"].get("augment")
    blend = blend_layer(pool, aug) if aug else None
    frames, masks, class_maps = [], [], []
    classes = label_tree.class_index([s["path"] for s in pool.sorted_stamps])
    for t in range(5):
        x, y, w, h = rec["background"]["crops"][t]
        frame = resize_int(bgimg[y:y + h, x:x + w].astype(np.int64), SIZE, SIZE)
        frame = np.clip(frame, 0, 255)
        if aug:
            frame = augment_background(frame, aug, blend)
        mask = np.zeros((SIZE, SIZE), bool)
        # Every visible object's class, sounding or not; later stamps cover earlier ones, as drawn.
        cls = np.zeros((SIZE, SIZE), np.uint8)
        for o in rec["objects"]:
            st = pool.image("stamp", o["stamp"])
            if o["flip"]:
                st = st[:, ::-1]
            bx, by, bw, bh = o["boxes"][t]
            pm, al = resize_premult(st, bh, bw)
            region = frame[by:by + bh, bx:bx + bw]
            frame[by:by + bh, bx:bx + bw] = np.clip(
                (pm + (255 - al[:, :, None]) * region + 127) // 255, 0, 255)
            if o["active"][t]:
                mask[by:by + bh, bx:bx + bw] |= al > 127
            cls[by:by + bh, bx:bx + bw][al > 127] = classes[o["stamp"]]
        frames.append(frame.astype(np.uint8))
        masks.append(np.where(mask, 255, 0).astype(np.uint8))
        class_maps.append(cls)
    return frames, masks, class_maps


def sec_rms(y, t):
    seg = y[t * SR:(t + 1) * SR]
    return math.sqrt(math.fsum((seg * seg).tolist()) / SR)


def make_track(rng, pool, sid, active, pre_gate=None):
    """Loop the trimmed source with U(0,0.25) s gaps from a random phase; gate per second.

    A sound must be audible in every second it is declared active: the (phase, gaps) draw is
    repeated (up to 50 times, in order) until every active second's RMS is >= 1/4 of the loudest
    active second's (-12 dB); otherwise the most even of the draws is kept."""
    x = pool.pcm(sid)
    on = [t for t in range(5) if active[t]]
    best = None
    for attempt in range(50):
        phase = rng.below(x.size)
        parts, n = [x[phase:]], x.size - phase
        gaps = []
        while n < NSAMP:
            g = rng.below(int(0.25 * SR) + 1)
            gaps.append(g)
            parts += [np.zeros(g), x]
            n += g + x.size
        y = np.concatenate(parts)[:NSAMP]
        r = [sec_rms(y, t) for t in on]
        ratio = min(r) / max(r) if max(r) > 0 else 0.0
        if best is None or ratio > best[0]:
            best = (ratio, y, phase, gaps, attempt)
        if ratio >= 0.25:
            break
    ratio, y, phase, gaps, attempt = best
    if pre_gate is not None:             # --variety: the room acts on the looped sound, before its gate
        y = pre_gate(y)
    gate = np.zeros(NSAMP)
    for t in on:
        gate[t * SR:(t + 1) * SR] = 1.0
    ramp = np.arange(RAMP, dtype=np.float64) / RAMP
    for t in range(1, 5):
        if active[t] and not active[t - 1]:
            gate[t * SR:t * SR + RAMP] = ramp
        if active[t - 1] and not active[t]:
            gate[t * SR - RAMP:t * SR] = 1.0 - np.arange(1, RAMP + 1, dtype=np.float64) / RAMP
    y = y * gate
    return y, {"phase": int(phase), "gaps": gaps, "loop_draws": attempt + 1,
               "min_to_max_second_rms": ratio}


def mix_audio(rng, pool, rec):
    tracks = []
    for src in rec["sources"]:
        y, info = make_track(rng, pool, src["sound"], src["active"])
        on = [t for t in range(5) if src["active"][t]]
        seg = np.concatenate([y[t * SR:(t + 1) * SR] for t in on])
        rms = math.sqrt(math.fsum((seg * seg).tolist()) / seg.size)
        assert rms > 0.0, (rec, src)
        gain = rng.uniform(0.708, 1.413)            # +-3 dB around -20 dBFS
        src.update(info, rms_before=rms, gain=gain)
        tracks.append(y * (TARGET_RMS * gain / rms))
    mix = np.zeros(NSAMP)
    for y in tracks:
        mix = mix + y
    peak = float(np.max(np.abs(mix))) if tracks else 0.0
    if peak > PEAK_MAX:
        mix = mix * (PEAK_MAX / peak)
    rec["audio_peak_before_limit"] = peak
    return np.clip(np.rint(mix * 32768.0), -32768, 32767).astype("<i2")


def draw_clip_objects(rng, pool, kind, split, rec, variety):
    """A clip's objects: which stamps, which of them sound in each second, an off-screen source,
    where they go, and the recipe fields that describe them (sources, mix key, negative kind,
    category). Both recipes draw them the same way, in the same order of random draws; --variety
    places objects more freely (place_objects_variety, wider sizes) and may make a silent object
    one of a sounding object's own stamp folder."""
    place, ranges = ((place_objects_variety, ((0.2, 0.8), (0.15, 0.55))) if variety
                     else (place_objects, ((0.35, 0.65), (0.25, 0.45))))
    if kind == "s4":
        objs = draw_objects(rng, pool, 1)
        place(rng, pool, split, objs, *ranges[0])
        objs[0]["active"] = [1] * 5
        rec["sources"] = [{"stamp": objs[0]["stamp"], "sound": objs[0]["sound"], "active": [1] * 5,
                           "on_screen": True}]
        rec["category"] = s4_category(objs[0]["stamp"])
    else:
        sub = kind
        for _ in range(10000):
            n = 1 if sub.startswith("s4neg") else 2 + rng.below(2)
            objs = draw_objects(rng, pool, n)
            for o in objs:
                o["active"] = [0] * 5
            off = None
            if sub == "ms3_distractor":
                k = 1 if n == 2 else 1 + rng.below(2)
                for o in objs[:k]:
                    o["active"] = [1] * 5
            elif sub == "ms3_switching":
                sw = 1 + rng.below(4)
                overlap = rng.below(2)
                objs[0]["active"] = [1 if (t < sw or (overlap and t == sw)) else 0 for t in range(5)]
                objs[1]["active"] = [1 if t >= sw else 0 for t in range(5)]
                rec["switch_second"], rec["overlap"] = sw, overlap
            elif sub.endswith("offscreen"):
                off = draw_objects(rng, pool, 1, need_distinct_from=[o["stamp"] for o in objs])[0]
            if variety:
                # Silent distractor of a sounding object's own category (same stamp folder), p 0.5.
                silent = [i for i, o in enumerate(objs) if not any(o["active"])]
                loud = [o for o in objs if any(o["active"])]
                if sub.startswith("ms3") and silent and loud and rng.uniform() < 0.5:
                    like = loud[rng.below(len(loud))]["stamp"]
                    d = same_folder_stamp(rng, pool, like, {o["stamp"] for o in objs})
                    if d:
                        d["active"] = [0] * 5
                        objs[silent[-1]] = d
            mixkey = "mix/" + "|".join([
                "vis=" + ",".join(sorted(o["stamp"] for o in objs)),
                "snd=" + ",".join(sorted(o["stamp"] for o in objs if any(o["active"]))),
                "off=" + (off["stamp"] if off else "")])
            if bucket_split(mixkey) == split:
                break
        else:
            raise RuntimeError("no held-out mix found")
        rec["mix_key"] = mixkey
        place(rng, pool, split, objs, *(ranges[0] if n == 1 else ranges[1]))
        rec["sources"] = [{"stamp": o["stamp"], "sound": o["sound"], "active": o["active"], "on_screen": True}
                          for o in objs if any(o["active"])]
        if off:
            rec["sources"].append({"stamp": off["stamp"], "sound": off["sound"], "active": [1] * 5,
                                   "on_screen": False})
        rec["negative"] = "silence" if sub.endswith("silence") else ("offscreen" if off else None)
        rec["category"] = "negative" if sub.startswith("s4neg") else None
    return objs


def build_clip(pool, seed, kind, split, index, bg_augment=0.0):
    key = f"{kind}/{split}/{index}"
    rng = clip_rng(seed, key)
    rec = {"kind": kind, "split": split, "index": index, "rng_key": key,
           "clip_seed_rule": "PCG32(SplitMix64(seed ^ fnv1a64(rng_key)) x2)"}
    rec["background"] = draw_background(rng, pool, split)
    if bg_augment > 0 and split == "train":
        # Its own stream, so the clip's objects, motion and sound are those of the plain clip.
        arng = clip_rng(seed, "bg-augment/" + key)
        if arng.uniform() < bg_augment:
            rec["background"]["augment"] = draw_background_augment(arng, pool, split)
    objs = draw_clip_objects(rng, pool, kind, split, rec, variety=False)
    rec["objects"] = objs
    frames, masks, class_maps = render_frames(pool, rec)
    if kind.endswith("silence"):
        pcm = np.zeros(NSAMP, "<i2")
    else:
        pcm = mix_audio(rng, pool, rec)
    rec["sounding_per_second"] = [[o["stamp"] for o in objs if o["active"][t]] for t in range(5)]
    for o in objs:
        o.pop("dims", None)
    return rec, frames, masks, class_maps, pcm


# ----------------------------------------------------------------------------------------------
# --variety (issue 15): more backgrounds, per-object variation, noise beds.  Everything below is
# used only with --variety; the default recipe (version 2) never calls it.

def box_factor(w, h):
    """Integer box-downscale factor of a photo: its long side ends in [VARIETY_WORK_LONG, 2x)."""
    return max(1, max(w, h) // VARIETY_WORK_LONG)


def box_downscale(a, k):
    """uint8 (H,W,3) -> mean of k x k boxes, rounded half up (integer); the ragged edge is dropped."""
    if k == 1:
        return a
    h, w = a.shape[0] // k, a.shape[1] // k
    s = a[:h * k, :w * k].reshape(h, k, w, k, 3).sum(axis=(1, 3), dtype=np.int64)
    return ((s + (k * k) // 2) // (k * k)).astype(np.uint8)


GOLD64 = 0x9E3779B97F4A7C15


def hash_u64(seed, n):
    """n 64-bit values: the SplitMix64 finaliser of seed + (i+1)*golden, i = 0..n-1 (vectorised)."""
    with np.errstate(over="ignore"):
        x = (np.arange(1, n + 1, dtype=np.uint64) * np.uint64(GOLD64)) + np.uint64(seed & M64)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def sub_seed(seed, tag):
    return (seed ^ fnv1a64(tag)) & M64


def hash_u8(seed, shape):
    n = int(np.prod(shape))
    return (hash_u64(seed, n) >> np.uint64(56)).astype(np.int64).reshape(shape)


def hash_unit(seed, n):
    """n floats uniform in [-1, 1): the top 53 bits, exactly."""
    return (hash_u64(seed, n) >> np.uint64(11)).astype(np.float64) / 4503599627370496.0 - 1.0


def value_noise(seed, size, cell):
    """Integer bilinear value noise, 0..255 (int64 [size,size]), lattice spacing `cell` px."""
    g = size // cell + 2
    lat = hash_u8(seed, (g, g))
    idx = np.arange(size)
    i0, f = idx // cell, (idx % cell) * 256 // cell
    a = lat[i0][:, i0] * (256 - f)[None, :] + lat[i0][:, i0 + 1] * f[None, :]
    b = lat[i0 + 1][:, i0] * (256 - f)[None, :] + lat[i0 + 1][:, i0 + 1] * f[None, :]
    return (a * (256 - f)[:, None] + b * f[:, None] + (1 << 15)) >> 16


def fbm(seed, size, base_cell, octaves, persistence):
    """Sum of value-noise octaves (cell halves, weight *= persistence/256), stretched to 0..255."""
    acc = np.zeros((size, size), np.int64)
    w, cell = 256, base_cell
    for o in range(octaves):
        acc += value_noise(sub_seed(seed, f"oct{o}"), size, max(2, cell)) * w
        w = w * persistence // 256
        cell //= 2
    lo, hi = int(acc.min()), int(acc.max())
    return (acc - lo) * 255 // max(1, hi - lo)


def palette_map(t, cols):
    """t: int 0..255 -> RGB by integer lerp through len(cols) >= 2 evenly spaced colours."""
    cols = np.asarray(cols, np.int64)
    n = len(cols) - 1
    pos = t * n                           # 0 .. 255 n
    i = np.minimum(pos // 255, n - 1)
    f = pos - i * 255                     # 0..255
    return (cols[i] * (255 - f)[..., None] + cols[i + 1] * f[..., None] + 127) // 255


def draw_procedural(rng):
    """The parameters of one procedural background (all integers); drawn from the clip's PRNG."""
    spec = {"seed": (rng.u32() << 32) | rng.u32(),
            "colours": [[rng.below(256) for _ in range(3)] for _ in range(2 + rng.below(3))],
            "dir": [rng.below(17) - 8, rng.below(17) - 8], "period": 8 + rng.below(57),
            "cell": 16 << rng.below(4), "octaves": 3 + rng.below(3), "persistence": 96 + rng.below(96),
            "checker": rng.below(2), "blotches": 12 + rng.below(40), "amp": 16 + rng.below(112)}
    if spec["dir"] == [0, 0]:
        spec["dir"] = [1, 0]
    return spec


def procedural_image(family, spec):
    """uint8 [PROC_SIZE, PROC_SIZE, 3], integer maths only."""
    n, seed, cols = PROC_SIZE, spec["seed"], spec["colours"]
    y, x = np.mgrid[0:n, 0:n].astype(np.int64)
    dx, dy = spec["dir"]
    noise = fbm(sub_seed(seed, "fbm"), n, spec["cell"], spec["octaves"], spec["persistence"])
    if family == "fbm":
        img = palette_map(noise, cols)
    elif family == "gradient":
        t = x * dx + y * dy
        t = (t - t.min()) * 255 // max(1, int(t.max() - t.min()))
        img = palette_map(t, cols) + (noise[..., None] - 128) // 16
    elif family == "stripes":
        k = len(cols)
        band = (x * dx + y * dy + 8 * n) // (spec["period"] * 4)
        if spec["checker"]:
            band = band + (x * -dy + y * dx + 8 * n) // (spec["period"] * 4)
        img = np.asarray(cols, np.int64)[band % k]
        img = img * (192 + noise[..., None] // 4) // 256          # shading 0.75..1.0
    elif family == "marble":
        t = (x * dx + y * dy) * 16 + noise * spec["amp"]
        p = spec["period"] * 64
        tri = np.abs(t % (2 * p) - p) * 255 // p                  # triangle wave 0..255
        img = palette_map(tri, cols)
    elif family == "blotches":
        h = hash_u64(sub_seed(seed, "blotches"), spec["blotches"] * 6).astype(object)
        img = np.zeros((n, n, 3), np.int64) + np.asarray(cols[0], np.int64)
        for b in range(spec["blotches"]):
            v = [int(h[b * 6 + j] >> 40) for j in range(6)]       # 24-bit draws
            cx, cy = v[0] % n, v[1] % n
            rx, ry = 6 + v[2] % (n // 4), 6 + v[3] % (n // 4)
            inside = (x - cx) ** 2 * ry * ry + (y - cy) ** 2 * rx * rx <= rx * rx * ry * ry
            c = [(v[4] >> (8 * j)) & 255 for j in range(3)] if v[5] % 3 else cols[v[5] % len(cols)]
            img[inside] = c
        small = resize_int(img, n // 4, n // 4)                   # soften the edges
        img = resize_int(small, n, n)
    else:
        raise ValueError(family)
    return np.clip(img, 0, 255).astype(np.uint8)


PI = 3.141592653589793


def _sin_scalar(x):
    return float(sin_series(np.array([x]))[0])


def sin_series(x):
    """sin on [-pi, pi] with +,*,- only (bit-reproducible): fold to [-pi/2, pi/2], Taylor to x^13."""
    x = np.where(x > PI / 2, PI - x, np.where(x < -PI / 2, -PI - x, x))
    x2 = x * x
    term, acc = x, x
    for k in range(1, 7):
        term = term * x2 / float((2 * k) * (2 * k + 1)) * -1.0
        acc = acc + term
    return acc


def colour_jitter_matrix(hue_deg):
    """Rotation of RGB about the grey axis by hue_deg (Rodrigues), in 1/4096 integer units."""
    th = hue_deg * PI / 180.0
    s = _sin_scalar(th)
    c = _sin_scalar(PI / 2 - abs(th))
    k = 0.5773502691896258            # 1/sqrt(3)
    a, b = (1.0 - c) / 3.0, s * k
    m = [[c + a, a - b, a + b], [a + b, c + a, a - b], [a - b, a + b, c + a]]
    return np.array([[fround(v * 4096) for v in row] for row in m], np.int64)


def jitter_stamp(rgba, j):
    """Mild colour jitter of a cut-out's RGB (hue, saturation, contrast, brightness); alpha untouched."""
    a = rgba.astype(np.int64)
    rgb = a[:, :, :3]
    rgb = np.clip((rgb @ colour_jitter_matrix(j["hue_deg"]).T + 2048) >> 12, 0, 255)
    yl = (rgb[:, :, 0:1] * 77 + rgb[:, :, 1:2] * 150 + rgb[:, :, 2:3] * 29 + 128) >> 8
    sq = fround(j["saturation"] * 256)
    rgb = yl + ((rgb - yl) * sq + 128) // 256
    cq = fround(j["contrast"] * 256)
    rgb = ((rgb - 128) * cq + 128 * 256 + j["brightness"] * 256 + 128) // 256
    out = np.concatenate([np.clip(rgb, 0, 255), a[:, :, 3:4]], axis=2)
    return out.astype(np.uint8)


def draw_background_variety(rng, pool, split):
    """A photo of the split's sources, or (train/val, p 0.3) a procedural background of one of the
    split's procedural families; cropped (50-100 %), panned and flipped like the default recipe."""
    procs, photos = pool.proc_pool[split], pool.bg_pool[split]
    use_proc = bool(procs) and (not photos or rng.uniform() < 0.3)
    bg = {}
    if use_proc:
        fam = procs[rng.below(len(procs))]
        bg["path"] = "proc:" + fam
        bg["source"] = "proc:" + fam
        bg["procedural"] = draw_procedural(rng)
        W = H = PROC_SIZE
    else:
        b = photos[rng.below(len(photos))]
        bg["path"], bg["source"] = b["path"], b["source"]
        W, H = b["size"]
        bg["box_factor"] = b["box"]
    c = rng.uniform(0.5, 1.0)
    cw, ch = fround(W * c), fround(H * c)
    if not use_proc:                       # keep the aspect near square for wide wallpapers
        cw = min(cw, fround(ch * 1.6))
    u0 = [rng.uniform(), rng.uniform()]
    u1 = [rng.uniform(), rng.uniform()]
    bg["flip"] = rng.below(2)
    bg["crops"] = []
    for t in range(5):
        ux = u0[0] + (u1[0] - u0[0]) * t / 4
        uy = u0[1] + (u1[1] - u0[1]) * t / 4
        bg["crops"].append([fround(ux * (W - cw)), fround(uy * (H - ch)), cw, ch])
    return bg


def background_image(pool, bg):
    if "procedural" in bg:
        return procedural_image(bg["path"].split(":", 1)[1], bg["procedural"])
    return pool.image("bg", bg["path"])


OFF_FRAME = 0.25      # up to this fraction of a stamp's width/height may lie outside the frame
MIN_VISIBLE = 0.5     # every object keeps >= half of its own alpha pixels visible in every frame


def stamp_alpha(pool, o, t):
    """Alpha > 127 of object o at frame t (its own box size), the GT shape of the cut-out."""
    st = pool.image("stamp", o["stamp"])
    if o["flip"]:
        st = st[:, ::-1]
    w, h = o["dims"][t] if "dims" in o else o["boxes"][t][2:]
    _, al = resize_premult(st, h, w)
    return al > 127


def clip_box(x, y, w, h):
    """Frame and stamp slices of a box that may lie partly outside the frame."""
    x0, y0, x1, y1 = max(0, x), max(0, y), min(SIZE, x + w), min(SIZE, y + h)
    if x0 >= x1 or y0 >= y1:
        return None
    return (slice(y0, y1), slice(x0, x1)), (slice(y0 - y, y1 - y), slice(x0 - x, x1 - x))


def front_map(alphas, boxes):
    """Index of the front-most object (later drawn wins) per pixel, -1 where none."""
    front = np.full((SIZE, SIZE), -1, np.int64)
    for i, (al, (x, y, w, h)) in enumerate(zip(alphas, boxes)):
        cb = clip_box(x, y, w, h)
        if cb is None:
            continue
        (fy, fx), (sy, sx) = cb
        front[fy, fx][al[sy, sx]] = i
    return front


def place_objects_variety(rng, pool, split, objs, lo, hi):
    """Scale U(lo,hi), +-10 % drift, flip, a mild colour jitter, held-out trajectory classes over
    positions that may leave OFF_FRAME of the stamp outside; objects may overlap (the later drawn
    occludes) as long as each keeps MIN_VISIBLE of its alpha pixels in view in every frame."""
    for _attempt in range(200):
        for o in objs:
            draw_size(rng, o, lo, hi)
            o["jitter"] = {"hue_deg": rng.uniform(-8.0, 8.0), "saturation": rng.uniform(0.8, 1.2),
                           "contrast": rng.uniform(0.88, 1.12), "brightness": fround(rng.uniform(-12, 12))}
            o["dims"] = object_dims(pool, o)
        alphas = [[stamp_alpha(pool, o, t) for t in range(5)] for o in objs]
        own = [[int(a.sum()) for a in al] for al in alphas]
        for _try in range(30):
            for o in objs:
                draw_trajectory(rng, pool, split, o, OFF_FRAME)
            ok = True
            for t in range(5):
                front = front_map([al[t] for al in alphas], [o["boxes"][t] for o in objs])
                counts = np.bincount(front[front >= 0], minlength=len(objs))
                if any(counts[i] < MIN_VISIBLE * own[i][t] or counts[i] == 0 for i in range(len(objs))):
                    ok = False
                    break
            if ok:
                return
    raise RuntimeError("placement failed")


def render_frames_variety(pool, rec):
    """Frames, GT masks (visible pixels of the objects sounding in second t: where the front-most
    object is a sounding one) and class maps (the front-most object's class)."""
    bgimg = background_image(pool, rec["background"])
    if rec["background"]["flip"]:
        bgimg = bgimg[:, ::-1]
    aug = rec["background"].get("augment")
    blend = blend_layer(pool, aug) if aug else None
    classes = label_tree.class_index([s["path"] for s in pool.sorted_stamps])
    stamps = []
    for o in rec["objects"]:
        st = jitter_stamp(pool.image("stamp", o["stamp"]), o["jitter"])
        stamps.append(st[:, ::-1] if o["flip"] else st)
    frames, masks, class_maps = [], [], []
    for t in range(5):
        x, y, w, h = rec["background"]["crops"][t]
        frame = np.clip(resize_int(bgimg[y:y + h, x:x + w].astype(np.int64), SIZE, SIZE), 0, 255)
        if aug:
            frame = augment_background(frame, aug, blend)
        alphas = []
        for o, st in zip(rec["objects"], stamps):
            bx, by, bw, bh = o["boxes"][t]
            pm, al = resize_premult(st, bh, bw)
            alphas.append(al > 127)
            cb = clip_box(bx, by, bw, bh)
            if cb is None:
                continue
            (fy, fx), (sy, sx) = cb
            region = frame[fy, fx]
            frame[fy, fx] = np.clip((pm[sy, sx] + (255 - al[sy, sx][:, :, None]) * region + 127) // 255, 0, 255)
        front = front_map(alphas, [o["boxes"][t] for o in rec["objects"]])
        sounding = np.array([bool(o["active"][t]) for o in rec["objects"]] + [False])
        lut = np.array([classes[o["stamp"]] for o in rec["objects"]] + [0], np.uint8)
        masks.append(np.where(sounding[front], 255, 0).astype(np.uint8))
        class_maps.append(lut[front])
        frames.append(frame.astype(np.uint8))
    return frames, masks, class_maps


# Amplitude of -d dB, d = 0..30 (literal constants: no pow).
DB_AMP = [1.0, 0.8912509381337456, 0.7943282347242815, 0.7079457843841379, 0.6309573444801932,
          0.5623413251903491, 0.5011872336272722, 0.44668359215096315, 0.3981071705534972,
          0.35481338923357547, 0.31622776601683794, 0.28183829312644537, 0.251188643150958,
          0.22387211385683395, 0.19952623149688797, 0.1778279410038923, 0.15848931924611134,
          0.14125375446227545, 0.12589254117941673, 0.11220184543019636, 0.1, 0.08912509381337455,
          0.07943282347242814, 0.0707945784384138, 0.06309573444801933, 0.05623413251903491,
          0.05011872336272722, 0.0446683592150963, 0.039810717055349734, 0.03548133892335755,
          0.03162277660168379]
SQRT2 = 1.4142135623730951
BED_KINDS = ["pink", "brown", "hum", "room"]


def voss_noise(seed, weights):
    """Voss-McCartney style noise: octave k holds a uniform value for 2^k samples (random phase);
    octaves summed with `weights`.  Equal weights ~ pink (1/f), rising weights ~ brown (1/f^2)."""
    acc = np.zeros(NSAMP)
    for k, wk in enumerate(weights):
        hold = 1 << k
        m = NSAMP // hold + 2
        v = hash_unit(sub_seed(seed, f"voss{k}"), m)
        off = int(hash_u64(sub_seed(seed, f"off{k}"), 1)[0] % np.uint64(hold))
        acc = acc + np.repeat(v, hold)[off:off + NSAMP] * wk
    return acc


def hum_wave(f0, amps, phases):
    """Mains hum: harmonics h*f0 (integer Hz) with exact integer phase indices, sin from sin_series."""
    n = np.arange(NSAMP, dtype=np.int64)
    acc = np.zeros(NSAMP)
    for h, (a, ph) in enumerate(zip(amps, phases), start=1):
        k = (n * (h * f0) + ph) % SR                    # phase index in [0, SR)
        x = (k - SR // 2).astype(np.float64) * (2.0 * PI / SR)   # in [-pi, pi)
        acc = acc + sin_series(x) * a
    return acc


def make_bed(bed):
    """Unnormalised bed signal of a recipe's `bed` entry (deterministic: exact f64 ops only)."""
    seed = bed["seed"]
    if bed["kind"] == "pink":
        return voss_noise(seed, [1.0] * 13)
    if bed["kind"] == "brown":
        w, ws = 1.0, []
        for _ in range(13):
            ws.append(w)
            w = w * SQRT2
        return voss_noise(seed, ws)
    hum = hum_wave(bed["f0"], bed["amps"], bed["phases"])
    if bed["kind"] == "hum":
        return hum + voss_noise(seed, [1.0] * 13) * 0.05
    # room tone: low rumble (brown) with a faint hum
    w, ws = 1.0, []
    for _ in range(13):
        ws.append(w)
        w = w * SQRT2
    return voss_noise(seed, ws) + hum * 2.0


def draw_bed(rng, p):
    if rng.uniform() >= p:
        return None
    bed = {"kind": BED_KINDS[rng.below(len(BED_KINDS))], "seed": (rng.u32() << 32) | rng.u32(),
           "snr_db": 3 + rng.below(26)}
    if bed["kind"] in ("hum", "room"):
        bed["f0"] = (50, 60)[rng.below(2)]
        bed["amps"] = [1.0, rng.uniform(0.1, 0.6), rng.uniform(0.05, 0.4), rng.uniform(0.0, 0.2)]
        bed["phases"] = [rng.below(SR) for _ in range(4)]
    return bed


def bed_track(bed):
    """The bed scaled to TARGET_RMS at -snr_db (the level of one active source is TARGET_RMS)."""
    y = make_bed(bed)
    rms = math.sqrt(math.fsum((y * y).tolist()) / NSAMP)
    bed["scale"] = TARGET_RMS * DB_AMP[bed["snr_db"]] / rms
    return y * bed["scale"]


COMB_DELAYS = [1116, 1188, 1277, 1356]     # samples at 16 kHz (Schroeder-style parallel combs)


def comb(x, d, g):
    """y[n] = x[n] + g*y[n-d], vectorised per block of d samples (same f64 ops as a sample loop)."""
    y = x.copy()
    for s in range(d, x.size, d):
        e = min(s + d, x.size)
        y[s:e] = x[s:e] + g * y[s - d:e - d]
    return y


def reverb(y, rv):
    """Reverb-like tail: dry + wet * mean of 4 feedback combs (delays x room size), DC-normalised."""
    wet = np.zeros(y.size)
    for d0 in COMB_DELAYS:
        d = max(1, fround(d0 * rv["size"]))
        wet = wet + comb(y, d, rv["feedback"]) * (1.0 - rv["feedback"])
    return y * (1.0 - rv["wet"]) + wet * (rv["wet"] / 4.0)


def mix_audio_variety(rng, pool, rec, bed_p):
    """Sources as in the default recipe (loop, gate, -20 dBFS +-3 dB), each through the clip's room
    (p 0.5) before its gate, plus a noise bed (p bed_p) at snr_db below one source; then the limiter."""
    rv = None
    if rng.uniform() < 0.5:
        rv = {"size": rng.uniform(0.5, 1.2), "feedback": rng.uniform(0.5, 0.8), "wet": rng.uniform(0.1, 0.4)}
    rec["room"] = rv
    tracks = []
    for src in rec["sources"]:
        y, info = make_track(rng, pool, src["sound"], src["active"],
                             pre_gate=(lambda z: reverb(z, rv)) if rv else None)
        on = [t for t in range(5) if src["active"][t]]
        seg = np.concatenate([y[t * SR:(t + 1) * SR] for t in on])
        rms = math.sqrt(math.fsum((seg * seg).tolist()) / seg.size)
        assert rms > 0.0, (rec, src)
        gain = rng.uniform(0.708, 1.413)
        src.update(info, rms_before=rms, gain=gain)
        tracks.append(y * (TARGET_RMS * gain / rms))
    bed = draw_bed(rng, bed_p)
    rec["bed"] = bed
    mix = np.zeros(NSAMP)
    for y in tracks:
        mix = mix + y
    if bed:
        mix = mix + bed_track(bed)
    peak = float(np.max(np.abs(mix)))
    rec["audio_peak_before_limit"] = peak
    rec["limit_gain"] = 1.0
    if peak > PEAK_MAX:
        rec["limit_gain"] = PEAK_MAX / peak
        mix = mix * rec["limit_gain"]
    return np.clip(np.rint(mix * 32768.0), -32768, 32767).astype("<i2")


def same_folder_stamp(rng, pool, like, avoid):
    """A different stamp from the folder of `like` (None if the folder has no other)."""
    cands = [s for s in pool.sorted_stamps if stamp_group(s["path"]) == stamp_group(like)
             and s["path"] not in avoid]
    if not cands:
        return None
    s = cands[rng.below(len(cands))]
    return {"stamp": s["path"], "sound": s["sounds"][rng.below(len(s["sounds"]))], "same_category_as": like}


def build_clip_variety(pool, seed, kind, split, index, bg_augment=0.0):
    key = f"{kind}/{split}/{index}"
    rng = clip_rng(seed, "variety/" + key)
    rec = {"kind": kind, "split": split, "index": index, "rng_key": "variety/" + key, "recipe": "variety",
           "clip_seed_rule": "PCG32(SplitMix64(seed ^ fnv1a64(rng_key)) x2)"}
    rec["background"] = draw_background_variety(rng, pool, split)
    if bg_augment > 0 and split == "train":
        arng = clip_rng(seed, "bg-augment/variety/" + key)
        if arng.uniform() < bg_augment:
            rec["background"]["augment"] = draw_background_augment(arng, pool, split)
    objs = draw_clip_objects(rng, pool, kind, split, rec, variety=True)
    rec["objects"] = objs
    frames, masks, class_maps = render_frames_variety(pool, rec)
    if kind.endswith("silence"):
        # No source: exact zeros, or (p 0.5) a noise bed alone at a level drawn as for other clips.
        bed = draw_bed(rng, 0.5)
        rec["bed"], rec["room"], rec["limit_gain"] = bed, None, 1.0
        mix = np.zeros(NSAMP)
        if bed:
            mix = mix + bed_track(bed)
        rec["audio_peak_before_limit"] = float(np.max(np.abs(mix)))
        if rec["audio_peak_before_limit"] > PEAK_MAX:
            rec["limit_gain"] = PEAK_MAX / rec["audio_peak_before_limit"]
            mix = mix * rec["limit_gain"]
        pcm = np.clip(np.rint(mix * 32768.0), -32768, 32767).astype("<i2")
    else:
        pcm = mix_audio_variety(rng, pool, rec, 0.75)
    rec["sounding_per_second"] = [[o["stamp"] for o in objs if o["active"][t]] for t in range(5)]
    for o in objs:
        o.pop("dims", None)
    return rec, frames, masks, class_maps, pcm


def split_counts(total, splits):
    """Largest-remainder split of `total` clips over the listed splits with weights 70/15/15."""
    wsum = sum(SPLIT_WEIGHTS[s] for s in splits)
    exact = [(total * SPLIT_WEIGHTS[s], s) for s in splits]
    base = {s: e // wsum for e, s in exact}
    rem = total - sum(base.values())
    order = sorted(exact, key=lambda es: (-(es[0] % wsum), SPLITS.index(es[1])))
    for e, s in order[:rem]:
        base[s] += 1
    return base


NEG_KINDS = ["s4neg_silence", "ms3neg_offscreen", "ms3neg_silence", "s4neg_offscreen"]


def plan(args, splits):
    jobs = []
    for split, n in split_counts(args.s4, splits).items():
        jobs += [("s4", split, i) for i in range(n)]
    for split, n in split_counts(args.ms3, splits).items():
        jobs += [("ms3_distractor" if i % 2 == 0 else "ms3_switching", split, i) for i in range(n)]
    for split, n in split_counts(args.negatives, splits).items():
        off = {"train": 0, "val": 3, "test": 2}[split]   # small sets still cover all four kinds
        jobs += [(NEG_KINDS[(i + off) % 4], split, i) for i in range(n)]
    return jobs


def clip_name(kind, split, index):
    short = {"s4": "s4", "ms3_distractor": "ms3", "ms3_switching": "ms3",
             "s4neg_silence": "neg", "s4neg_offscreen": "neg", "ms3neg_silence": "neg",
             "ms3neg_offscreen": "neg"}[kind]
    return f"avsreg_{short}_{split}_{index:05d}"


def generate(args):
    splits = [s for s in args.splits.split(",") if s]
    assert all(s in SPLITS for s in splits), splits
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        sys.exit(f"error: {out} exists and is not empty")
    pool = Pool(variety=args.variety)
    out.mkdir(parents=True, exist_ok=True)
    s4_rows, ms3_rows = [], []
    files = {}

    def put(rel, data, content):
        p = out / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        files[rel] = {"sha256": hashlib.sha256(data).hexdigest(),
                      "content_sha256": hashlib.sha256(content).hexdigest()}

    jobs = plan(args, splits)
    try:
        for n_done, (kind, split, index) in enumerate(jobs):
            name = clip_name(kind, split, index)
            build = build_clip_variety if args.variety else build_clip
            rec, frames, masks, class_maps, pcm = build(pool, args.seed, kind, split, index, args.bg_augment)
            rec["name"] = name
            layout = "s4" if kind.startswith("s4") else "ms3"
            rec["layout"] = layout
            if layout == "s4":
                cat = rec["category"]
                put(f"s4_data/audio_wav/{split}/{cat}/{name}.wav", wav_bytes(pcm), pcm.tobytes())
                for t in range(5):
                    put(f"s4_data/visual_frames/{split}/{cat}/{name}/{name}_{t + 1}.png",
                        png_bytes(frames[t]), frames[t].tobytes())
                    put(f"s4_data/gt_masks/{split}/{cat}/{name}/{name}_{t + 1}.png",
                        png_bytes(masks[t]), masks[t].tobytes())
                    put(f"s4_data/class_maps/{split}/{cat}/{name}/{name}_{t + 1}.png",
                        png_bytes(class_maps[t]), class_maps[t].tobytes())
                s4_rows.append((name, 0, cat, split))
            else:
                put(f"ms3_data/audio_wav/{split}/{name}.wav", wav_bytes(pcm), pcm.tobytes())
                for t in range(5):
                    put(f"ms3_data/visual_frames/{name}/{name}.mp4_{t + 1}.png",
                        png_bytes(frames[t]), frames[t].tobytes())
                    put(f"ms3_data/gt_masks/{split}/{name}/{name}_{t + 1}.png",
                        png_bytes(masks[t]), masks[t].tobytes())
                    put(f"ms3_data/class_maps/{split}/{name}/{name}_{t + 1}.png",
                        png_bytes(class_maps[t]), class_maps[t].tobytes())
                ms3_rows.append((name, split))
            rj = (json.dumps(rec, indent=1, sort_keys=True) + "\n").encode()
            put(f"clips/{name}.json", rj, rj)
            if args.progress and (n_done + 1) % 50 == 0:
                print(f"  {n_done + 1}/{len(jobs)} clips", file=sys.stderr)

        def csv_bytes(header, rows):
            s = io.StringIO()
            w = csv.writer(s, lineterminator="\n")
            w.writerow(header)
            w.writerows(sorted(rows, key=lambda r: (SPLITS.index(r[-1]), r[0])))
            return s.getvalue().encode()

        b = csv_bytes(["name", "start", "category", "split"], s4_rows)
        put("s4_meta_data.csv", b, b)
        b = csv_bytes(["name", "split"], ms3_rows)
        put("ms3_meta_data.csv", b, b)
        # The class maps' values: line i names class i (avsreg.label_tree).
        b = "".join(f"{c}\n" for c in label_tree.visual_labels([s["path"] for s in pool.sorted_stamps])).encode()
        put("classes.txt", b, b)
        lock = pool.lock
        manifest = {
            "format": "avsreg-manifest", "generator_version": GEN_VERSION,
            "generator_sha256": sha256_file(Path(__file__)),
            "sources_lock_sha256": sha256_file(LOCK),
            "seed": args.seed, "splits": splits, "bg_augment": args.bg_augment,
            "counts": {"s4": args.s4, "ms3": args.ms3, "negatives": args.negatives,
                       "clips": len(jobs), "s4_rows": len(s4_rows), "ms3_rows": len(ms3_rows)},
            "split_rule": {
                "backgrounds": {sp: [b["path"] for b in pool.bg_pool[sp]] for sp in SPLITS},
                "trajectory_classes": {sp: len(pool.traj[sp]) for sp in SPLITS},
                "mix_rule": "multi-object/off-screen clips: sha256('avsreg/mix/'+mix_key) % 100 -> "
                            "<70 train, <85 val, else test; must equal the clip's split",
            },
            "tools": tool_versions(),
            "licences": {
                "generated_data": "derived from GPL-2 Tux Paint stamps and GPL speech/soundfont renders: "
                                  "never commit or redistribute; regenerate from the seed",
                **{k: v for k, v in LICENCES.items()},
                **{b["path"]: b["licence"] for b in lock["backgrounds"]},
            },
            "sources": {
                "stamps": [{k: s[k] for k in ("path", "sha256", "pixels_sha256", "licence")} for s in lock["stamps"]],
                "sounds": [{k: s[k] for k in s if k not in ("text",)} for s in lock["sounds"]],
                "backgrounds": lock["backgrounds"],
            },
            "files": {k: files[k] for k in sorted(files)},
        }
        if args.variety:
            manifest["generator_version"] = VARIETY_GEN_VERSION
            manifest["recipe"] = "variety"
            manifest["split_rule"]["backgrounds"] = {
                sp: [b["path"] for b in pool.bg_pool[sp]] + ["proc:" + f for f in pool.proc_pool[sp]]
                for sp in SPLITS}
            manifest["split_rule"]["background_sources"] = {k: VARIETY_SOURCE_SPLIT[k]
                                                            for k in sorted(VARIETY_SOURCE_SPLIT)}
            manifest["split_rule"]["photo_overrides"] = dict(sorted(VARIETY_PHOTO_SPLIT.items()))
            manifest["split_rule"]["left_out"] = list(VARIETY_LEFT_OUT)
            manifest["split_rule"]["reserved_never_used"] = ["debian:plasma-workspace-wallpapers",
                                                             "debian:mate-backgrounds"]
            manifest["licences"].update({b["path"]: b["licence"] for b in lock["variety_backgrounds"]})
            manifest["sources"]["variety_backgrounds"] = lock["variety_backgrounds"]
        (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    finally:
        pool.close()
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out")
    ap.add_argument("--s4", type=int, default=420)
    ap.add_argument("--ms3", type=int, default=120)
    ap.add_argument("--negatives", type=int, default=60)
    ap.add_argument("--splits", default="train,val,test")
    ap.add_argument("--repin", action="store_true", help="rewrite sources.lock.json from installed sources")
    ap.add_argument("--check-sources", action="store_true",
                    help="exit 0 if every pinned source is installed with the pinned hash")
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--bg-augment", type=float, default=0.0, metavar="P",
                    help="train split only: with probability P a clip's background is photometrically "
                         "rewritten (channel order, inversion, grey, contrast, brightness, a second "
                         "background blended in); recorded in the clip recipe. Val/test never change")
    ap.add_argument("--variety", action="store_true",
                    help="issue 15 recipe (generator version 3): many photo and procedural backgrounds, "
                         "each source held out in one split; wider scale, positions partly off-frame, "
                         "partial occlusion, mild colour jitter; noise/hum/room-tone beds at a random SNR "
                         "and reverb; same-category silent distractors in MS3 clips")
    ap.add_argument("--repin-variety", action="store_true",
                    help="rewrite only the variety_backgrounds pins of sources.lock.json")
    args = ap.parse_args()
    if args.repin_variety:
        repin_variety()
        return
    if not 0.0 <= args.bg_augment <= 1.0:
        ap.error(f"--bg-augment {args.bg_augment}: must be a probability in [0, 1]")
    if args.repin:
        repin()
        return
    if args.check_sources:
        Pool(variety=args.variety).close()
        print("AVS-Reg sources match tools/avsreg/sources.lock.json")
        return
    if not args.out:
        ap.error("--out is required")
    if not 0 <= args.seed < (1 << 64):
        ap.error("--seed must be in [0, 2^64)")
    generate(args)


if __name__ == "__main__":
    main()
