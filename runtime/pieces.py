"""A voice run in two pieces: the frontend decides the durations, the decoder makes audio in chunks.

The frontend piece (text encoder, duration predictor) gives, for each token, the prior's mean and
log standard deviation and the number of frames it lasts. Here the prior is expanded to frames
and sampled once for the whole sentence (and the duration predictor's noise drawn: both come from
one numpy generator, so a seed repeats a synthesis) (``np.repeat`` is exactly the graph's 0/1 alignment
matrix product), and the decoder piece (flow and HiFi-GAN) turns windows of it into audio, chunk
by chunk, as ``runtime.chunking`` plans them. At zero noise the joined chunks are the samples the
whole graph gives; with noise, the draw comes from numpy instead of onnxruntime's generator.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from runtime import chunking, contract


@dataclass
class Encoded:
    """The frontend's answer for one utterance."""

    means: np.ndarray  # [1, channels, tokens]
    log_scales: np.ndarray  # [1, channels, tokens]
    durations: np.ndarray  # int64 [tokens]: frames of each token

    @property
    def frames(self) -> int:
        """Frames of audio the sentence lasts (at least one, as in the whole graph)."""
        return max(int(self.durations.sum()), 1)


class Pieces:
    """The frontend and decoder sessions of one model, and the chunk plan of its architecture."""

    def __init__(self, frontend: ort.InferenceSession, decoder: ort.InferenceSession, architecture: dict):
        self.frontend = frontend
        self.decoder = decoder
        self.chain = chunking.layers(architecture)
        self.hop_length = chunking.hop_length(self.chain)
        self.input_names = {i.name for i in frontend.get_inputs()}
        noise = [i for i in frontend.get_inputs() if i.name == contract.DURATION_NOISE]
        self._noise_channels = int(noise[0].shape[1]) if noise else 0
        self._decoder_inputs = {i.name for i in decoder.get_inputs()}
        expected = {contract.LATENTS, contract.CROP_STARTS, contract.CROP_ENDS}
        if not expected <= self._decoder_inputs:
            raise ValueError(f"decoder piece lacks the inputs {sorted(expected - self._decoder_inputs)}")
        crops = next(i for i in decoder.get_inputs() if i.name == contract.CROP_STARTS).shape[0]
        if isinstance(crops, int) and crops != len(chunking.crop_names(self.chain)):
            raise ValueError(f"decoder piece has {crops} crop points, its architecture "
                             f"{len(chunking.crop_names(self.chain))}: the sidecar does not belong to these pieces")

    @classmethod
    def load(cls, folder: Path, record: dict, architecture: dict, *, options: ort.SessionOptions,
             providers: list[str]) -> Pieces:
        sessions = [ort.InferenceSession(str(Path(folder) / record[name]), sess_options=options, providers=providers)
                    for name in contract.PIECES]
        return cls(*sessions, architecture)

    # -- the frontend -------------------------------------------------------------------------------
    def encode(self, feeds: dict[str, np.ndarray], rng: np.random.Generator | None = None) -> Encoded:
        """Durations and the prior of one utterance; the duration predictor's noise is drawn here (``rng``)."""
        feeds = {k: v for k, v in feeds.items() if k in self.input_names}
        if self._noise_channels:
            rng = rng or np.random.default_rng()
            tokens = feeds[contract.INPUT].shape[1]
            feeds[contract.DURATION_NOISE] = rng.standard_normal((1, self._noise_channels, tokens), dtype=np.float32)
        means, log_scales, durations = self.frontend.run(
            [contract.MEANS, contract.LOG_SCALES, contract.DURATIONS], feeds)
        return Encoded(means, log_scales, np.rint(durations.reshape(-1)).astype(np.int64))

    @staticmethod
    def latents(encoded: Encoded, noise_scale: float, rng: np.random.Generator | None = None) -> np.ndarray:
        """The prior sampled at every frame: ``mean + N(0, 1) * exp(log_scale) * noise_scale``."""
        durations = encoded.durations
        if durations.sum() == 0:  # the graph makes one frame of silence; so do we
            return np.zeros((1, encoded.means.shape[1], 1), dtype=np.float32)
        z = np.repeat(encoded.means, durations, axis=2)
        if noise_scale:
            rng = rng or np.random.default_rng()
            noise = rng.standard_normal(z.shape, dtype=np.float32)
            z = z + noise * np.exp(np.repeat(encoded.log_scales, durations, axis=2)) * np.float32(noise_scale)
        return np.ascontiguousarray(z, dtype=np.float32)

    # -- the decoder --------------------------------------------------------------------------------
    def decode(self, latents: np.ndarray, start: int, end: int, sid: int | None = None,
               context_shrink: int = 0) -> np.ndarray:
        """Audio samples of frames ``[start, end)`` of the sentence whose prior is ``latents``."""
        plan = chunking.plan_chunk(self.chain, latents.shape[2], start, end, context_shrink=context_shrink)
        w0, w1 = plan.window
        feeds = {contract.LATENTS: latents[:, :, w0:w1],
                 contract.CROP_STARTS: np.asarray(plan.crop_starts, dtype=np.int64),
                 contract.CROP_ENDS: np.asarray(plan.crop_ends, dtype=np.int64)}
        if contract.SID in self._decoder_inputs:
            feeds[contract.SID] = np.asarray([0 if sid is None else sid], dtype=np.int64)
        audio = self.decoder.run([contract.OUTPUT], feeds)[0].reshape(-1)
        t0, t1 = plan.trim
        return audio[t0:t1]

    def stream(self, latents: np.ndarray, chunker: chunking.Schedule | chunking.Pacer, sid: int | None = None
               ) -> Iterator[tuple[int, np.ndarray, bool]]:
        """``(sample offset, audio, last)`` for each chunk, in order, each as soon as it is made; ``chunker`` (a
        fixed Schedule or a Pacer) sizes the chunks and is told how long each took."""
        for start, end, last in chunker.bounds(latents.shape[2]):
            began = time.perf_counter()
            audio = self.decode(latents, start, end, sid)
            chunker.record(end - start, time.perf_counter() - began)
            yield start * self.hop_length, audio, last
