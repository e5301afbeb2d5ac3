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
  generate.py --repin            # rewrite sources.lock.json from the installed sources (explicit)

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
                "stamps": stamps, "sounds": [sounds[k] for k in sorted(sounds)], "backgrounds": bgs}
        LOCK.write_text(json.dumps(lock, indent=1, sort_keys=True) + "\n")
        print(f"wrote {LOCK}: {len(stamps)} stamps, {len(sounds)} sounds, {len(bgs)} backgrounds")
    finally:
        shutil.rmtree(tmp)


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
    def __init__(self, verify=True):
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

    def image(self, kind, rel):
        key = (kind, rel)
        if key not in self._img:
            if kind == "stamp":
                a = load_rgba(STAMPS / rel)
                want = next(s for s in self.stamps if s["path"] == rel)["pixels_sha256"]
            else:
                a = load_rgb(sources_root() / rel)
                want = next(b for b in self.backgrounds if b["path"] == rel)["pixels_sha256"]
            if hashlib.sha256(a.tobytes()).hexdigest() != want:
                sys.exit(f"error: decoded pixels of {rel} differ from the pin (image decoder changed?)")
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


def place_objects(rng, pool, split, objs, lo, hi):
    """Scale/flip/drift and held-out trajectories; rejects overlapping boxes (+4 px) in any frame."""
    for _attempt in range(1000):
        for o in objs:
            w0, h0 = next(s for s in pool.stamps if s["path"] == o["stamp"])["size"]
            o["long_side"] = rng.uniform(lo, hi) * SIZE
            o["drift"] = rng.uniform(0.9, 1.1)
            o["flip"] = rng.below(2)
            dims = []
            for t in range(5):
                L = o["long_side"] * (1.0 + (o["drift"] - 1.0) * t / 4)
                f = L / max(w0, h0)
                dims.append([max(1, fround(w0 * f)), max(1, fround(h0 * f))])
            o["dims"] = dims
        for _try in range(100):
            for o in objs:
                c = pool.traj[split][rng.below(len(pool.traj[split]))]
                cells = [(c >> 6) & 3, (c >> 4) & 3, (c >> 2) & 3, c & 3]
                u = [(cell + rng.uniform()) / 4.0 for cell in cells]
                o["trajectory_class"] = c
                o["u_start"], o["u_end"] = u[:2], u[2:]
                o["boxes"] = []
                for t in range(5):
                    w, h = o["dims"][t]
                    ux = o["u_start"][0] + (o["u_end"][0] - o["u_start"][0]) * t / 4
                    uy = o["u_start"][1] + (o["u_end"][1] - o["u_start"][1]) * t / 4
                    o["boxes"].append([fround(ux * (SIZE - w)), fround(uy * (SIZE - h)), w, h])
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


def make_track(rng, pool, sid, active):
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
    if kind == "s4":
        objs = draw_objects(rng, pool, 1)
        place_objects(rng, pool, split, objs, 0.35, 0.65)
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
            mixkey = "mix/" + "|".join([
                "vis=" + ",".join(sorted(o["stamp"] for o in objs)),
                "snd=" + ",".join(sorted(o["stamp"] for o in objs if any(o["active"]))),
                "off=" + (off["stamp"] if off else "")])
            if bucket_split(mixkey) == split:
                break
        else:
            raise RuntimeError("no held-out mix found")
        rec["mix_key"] = mixkey
        place_objects(rng, pool, split, objs, *((0.35, 0.65) if n == 1 else (0.25, 0.45)))
        rec["sources"] = [{"stamp": o["stamp"], "sound": o["sound"], "active": o["active"], "on_screen": True}
                          for o in objs if any(o["active"])]
        if off:
            rec["sources"].append({"stamp": off["stamp"], "sound": off["sound"], "active": [1] * 5,
                                   "on_screen": False})
        rec["negative"] = "silence" if sub.endswith("silence") else ("offscreen" if off else None)
        rec["category"] = "negative" if sub.startswith("s4neg") else None
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
    pool = Pool()
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
            rec, frames, masks, class_maps, pcm = build_clip(pool, args.seed, kind, split, index, args.bg_augment)
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
    args = ap.parse_args()
    if not 0.0 <= args.bg_augment <= 1.0:
        ap.error(f"--bg-augment {args.bg_augment}: must be a probability in [0, 1]")
    if args.repin:
        repin()
        return
    if args.check_sources:
        Pool().close()
        print("AVS-Reg sources match tools/avsreg/sources.lock.json")
        return
    if not args.out:
        ap.error("--out is required")
    if not 0 <= args.seed < (1 << 64):
        ap.error("--seed must be in [0, 2^64)")
    generate(args)


if __name__ == "__main__":
    main()
