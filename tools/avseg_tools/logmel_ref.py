"""The official VGGish log-mel (written from docs/spec/audio.md §2, numpy float64): 16 kHz mono
samples -> `[P, 1, 96, 64]` patches of 0.96 s. Shared by the audio benchmark and the tiny
two-stage package's generator.
"""
import numpy as np

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
