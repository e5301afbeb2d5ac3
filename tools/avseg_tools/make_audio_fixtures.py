"""Writes the small self-made audio fixtures in tests/data/audio/ (see the README there).

Run: .venv/bin/python -m avseg_tools.make_audio_fixtures (needs numpy and soundfile; libsndfile >= 1.1 for MP3).
The signals are synthetic tones, so the fixtures carry no third-party content.
"""

import numpy as np
import soundfile as sf

from avseg_tools import REPO

OUT = REPO / "tests" / "data" / "audio"


def tone_i16(rate, hz, amp, n):
    t = np.arange(n) / rate
    return np.round(amp * np.sin(2 * np.pi * hz * t) * 32767).astype(np.int16)


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    # int16 stereo 44.1 kHz, 2205 frames: left 440 Hz at 0.5, right 880 Hz at 0.25.
    left = tone_i16(44100, 440, 0.5, 2205)
    right = tone_i16(44100, 880, 0.25, 2205)
    sf.write(OUT / "tone_s16_stereo_44k.wav", np.stack([left, right], axis=1), 44100, subtype="PCM_16")
    # Lossless and lossy mono 16 kHz versions of a 440 Hz tone at 0.5, 0.5 s (8000 frames).
    mono = tone_i16(16000, 440, 0.5, 8000)
    sf.write(OUT / "tone_440_16k.flac", mono, 16000, format="FLAC", subtype="PCM_16")
    sf.write(OUT / "tone_440_16k.ogg", mono, 16000, format="OGG", subtype="VORBIS")
    sf.write(OUT / "tone_440_16k.mp3", mono, 16000, format="MP3", subtype="MPEG_LAYER_III")
    for p in sorted(OUT.iterdir()):
        print(p.name, p.stat().st_size)


if __name__ == "__main__":
    main()
