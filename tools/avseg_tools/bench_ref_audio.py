"""Times the official VGGish log-mel algorithm (written here from docs/spec/audio.md §2, numpy float64) on the
same kind of signals as benches/audio.rs, in one run:

* 5 s of 16 kHz mono (log-mel + patches only);
* 5 s of 48 kHz stereo: channel mean + resampy kaiser_best to 16 kHz + log-mel + patches.

Run: .venv/bin/python -m avseg_tools.bench_ref_audio  (needs numpy and resampy)
Prints median wall times in milliseconds.
"""
import statistics
import time

import numpy as np
import resampy

from avseg_tools.logmel_ref import RATE, examples


def signal(rate, channels, seconds):
    rng = np.random.default_rng(0)
    t = np.arange(int(rate * seconds)) / rate
    cols = [0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * (2000 + 100 * c) * t)
            + 0.1 * (rng.random(t.size) - 0.5) for c in range(channels)]
    x = np.stack(cols, axis=1)
    return (np.clip(np.round(x * 32768), -32768, 32767).astype(np.int16))


def median_ms(fn, reps):
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main():
    mono16 = signal(16000, 1, 5.0)[:, 0] / 32768.0
    stereo48 = signal(48000, 2, 5.0)

    def path_16k():
        return examples(mono16)

    def path_48k():
        x = np.mean(stereo48 / 32768.0, axis=1)
        return examples(resampy.resample(x, 48000, RATE))

    assert path_16k().shape == (5, 1, 96, 64)
    assert path_48k().shape == (5, 1, 96, 64)
    print(f"numpy log-mel 5 s 16 kHz mono:                     median {median_ms(path_16k, 50):.3f} ms")
    print(f"numpy+resampy 5 s 48 kHz stereo (mean+resample+lm): median {median_ms(path_48k, 20):.3f} ms")


if __name__ == "__main__":
    main()
