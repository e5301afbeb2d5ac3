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

RATE = 16000
WIN, HOP, NFFT = 400, 160, 512


def hz_to_mel(f):
    return 1127.0 * np.log(1.0 + f / 700.0)


def mel_weights():
    bins_mel = hz_to_mel(np.linspace(0.0, RATE / 2, NFFT // 2 + 1))
    edges = np.linspace(hz_to_mel(125.0), hz_to_mel(7500.0), 66)
    w = np.zeros((NFFT // 2 + 1, 64))
    for i in range(64):
        lo, ce, hi = edges[i:i + 3]
        w[:, i] = np.maximum(0.0, np.minimum((bins_mel - lo) / (ce - lo), (hi - bins_mel) / (hi - ce)))
    w[0, :] = 0.0
    return w


MEL = mel_weights()
WINDOW = 0.5 - 0.5 * np.cos(2 * np.pi / WIN * np.arange(WIN))


def examples(x16):
    n = 1 + (len(x16) - WIN) // HOP
    frames = np.lib.stride_tricks.as_strided(x16, (n, WIN), (x16.strides[0] * HOP, x16.strides[0]))
    mag = np.abs(np.fft.rfft(frames * WINDOW, NFFT))
    log_mel = np.log(mag @ MEL + 0.01)
    p = log_mel.shape[0] // 96
    return log_mel[:p * 96].reshape(p, 1, 96, 64).astype(np.float32)


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
