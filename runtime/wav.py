"""16-bit PCM mono WAV output, written atomically (standard library + numpy only)."""

from __future__ import annotations

import contextlib
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from runtime.files import atomic_open


def to_pcm16(audio: np.ndarray) -> bytes:
    """float samples in [-1, 1] -> little-endian int16 bytes (clipped, rounded)."""
    pcm = np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0) * 32767.0
    return np.round(pcm).astype("<i2").tobytes()


@contextlib.contextmanager
def atomic_wav(path: Path, sample_rate: int) -> Iterator[wave.Wave_write]:
    """A 16-bit mono WAV writer on a temporary file that becomes ``path`` only if the block succeeds."""
    with atomic_open(path) as f, wave.open(f, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        yield w
