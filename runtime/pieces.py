"""A voice run in three pieces: the frontend decides the durations, the flow and the vocoder make audio.

The frontend piece (text encoder, duration predictor) gives, for each token, the prior's mean and
log standard deviation and the number of frames it lasts. Here the prior is expanded to frames
and sampled once for the whole sentence (``np.repeat`` is exactly the graph's 0/1 alignment
matrix product; the duration predictor's noise is drawn here too: one numpy generator, so a seed
repeats a synthesis). The flow piece turns windows of that sample into ``z`` a large block at a
time (it works at the frame rate: a sentence of ``z`` is small, and its 32 frames of context are
paid once a block; a small first block, for the first chunk); the vocoder piece (HiFi-GAN) turns windows of ``z`` into audio, chunk by chunk,
as ``runtime.chunking`` plans them (its audio-rate tensors grow with a chunk; its context is 11
frames). At zero noise the joined chunks are the samples the whole graph gives.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from runtime import chunking, contract

# z is made in blocks on a fixed grid: the first 32 frames (enough for a first chunk of up to 21 frames,
# with the vocoder's 11 of context), then 1024 frames at a time (12 s of audio; 1.5 MB a tensor). Fixed,
# so that where chunks fall never changes the audio, even for a flow with dynamic int8, whose activation
# ranges are measured on each block.
FLOW_FIRST, FLOW_BLOCK = 32, 1024


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
    """The frontend, flow and vocoder sessions of one model, and the chunk plans of its architecture."""

    def __init__(self, frontend: ort.InferenceSession, flow: ort.InferenceSession, vocoder: ort.InferenceSession,
                 architecture: dict):
        self.frontend, self.flow, self.vocoder = frontend, flow, vocoder
        self.chain = chunking.layers(architecture)
        self.flow_chain, self.vocoder_chain = chunking.split_chain(self.chain)
        self.hop_length = chunking.hop_length(self.chain)
        self.frontend_inputs = {i.name for i in frontend.get_inputs()}
        # what the whole graph would take: a speaker may condition only the flow and the vocoder
        self.input_names = self.frontend_inputs | {i.name for s in (flow, vocoder) for i in s.get_inputs()
                                                   if i.name in contract.SPEAKER_INPUTS}
        noise = [i for i in frontend.get_inputs() if i.name == contract.DURATION_NOISE]
        self._noise_channels = int(noise[0].shape[1]) if noise else 0
        for session, source, part in ((flow, contract.LATENTS, self.flow_chain), (vocoder, contract.Z, self.vocoder_chain)):
            inputs = {i.name: i for i in session.get_inputs()}
            missing = {source, contract.CROP_STARTS, contract.CROP_ENDS} - set(inputs)
            if missing:
                raise ValueError(f"a streaming piece lacks the inputs {sorted(missing)}")
            crops = inputs[contract.CROP_STARTS].shape[0]
            if isinstance(crops, int) and crops != len(chunking.crop_names(part)):
                raise ValueError(f"a streaming piece has {crops} crop points, its architecture "
                                 f"{len(chunking.crop_names(part))}: the sidecar does not belong to these pieces")
        self._speaker_inputs = {name: [i.name for i in s.get_inputs() if i.name in contract.SPEAKER_INPUTS]
                                for name, s in (("flow", flow), ("vocoder", vocoder))}

    @classmethod
    def load(cls, folder: Path, record: dict, architecture: dict, *, options: ort.SessionOptions,
             providers: list[str]) -> Pieces:
        sessions = [ort.InferenceSession(str(Path(folder) / record[name]), sess_options=options, providers=providers)
                    for name in contract.PIECES]
        return cls(*sessions, architecture)

    # -- the frontend -------------------------------------------------------------------------------
    def encode(self, feeds: dict[str, np.ndarray], rng: np.random.Generator | None = None) -> Encoded:
        """Durations and the prior of one utterance; the duration predictor's noise is drawn here (``rng``)."""
        feeds = {k: v for k, v in feeds.items() if k in self.frontend_inputs}
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

    # -- the flow and the vocoder ---------------------------------------------------------------------
    def _run(self, session, piece: str, chain, source: np.ndarray, name: str, start: int, end: int,
             speaker: dict | None) -> np.ndarray:
        plan = chunking.plan_chunk(chain, source.shape[2], start, end)
        w0, w1 = plan.window
        feeds = {name: source[:, :, w0:w1], contract.CROP_STARTS: np.asarray(plan.crop_starts, dtype=np.int64),
                 contract.CROP_ENDS: np.asarray(plan.crop_ends, dtype=np.int64)}
        for key in self._speaker_inputs[piece]:
            if not speaker or key not in speaker:
                raise ValueError(f"this voice's {piece} needs the speaker ({', '.join(self._speaker_inputs[piece])})")
            feeds[key] = speaker[key]
        out = session.run(None, feeds)[0]
        t0, t1 = plan.trim
        return out[:, :, t0:t1] if piece == "flow" else out.reshape(-1)[t0:t1]

    # ``speaker``: the speaker inputs the whole graph was fed (``contract.SPEAKER_INPUTS``: ``sid``, and a
    # d-vector voice's ``speaker_embedding``); None for a single-speaker voice.
    def flow_frames(self, latents: np.ndarray, start: int, end: int, speaker: dict | None = None) -> np.ndarray:
        """``z`` for frames ``[start, end)`` of the sentence whose prior sample is ``latents``."""
        return self._run(self.flow, "flow", self.flow_chain, latents, contract.LATENTS, start, end, speaker)

    def vocode(self, z: np.ndarray, start: int, end: int, speaker: dict | None = None) -> np.ndarray:
        """Audio samples of frames ``[start, end)`` of the sentence whose flow output is ``z``."""
        return self._run(self.vocoder, "vocoder", self.vocoder_chain, z, contract.Z, start, end, speaker)

    def decode(self, latents: np.ndarray, start: int, end: int, speaker: dict | None = None) -> np.ndarray:
        """Audio of frames ``[start, end)`` from the prior sample alone (the flow run on what the chunk needs)."""
        frames = latents.shape[2]
        need = chunking.plan_chunk(self.vocoder_chain, frames, start, end).window
        z = np.zeros((1, latents.shape[1], frames), dtype=np.float32)  # only [need) is read
        z[:, :, need[0]:need[1]] = self.flow_frames(latents, *need, speaker)
        return self.vocode(z, start, end, speaker)

    def stream(self, latents: np.ndarray, chunker: chunking.Schedule | chunking.Pacer, speaker: dict | None = None
               ) -> Iterator[tuple[int, np.ndarray, bool]]:
        """``(sample offset, audio, last)`` for each chunk, in order, each as soon as it is made; ``chunker`` (a
        fixed Schedule or a Pacer) sizes the chunks and is told how long each took, the flow's share included.
        ``z`` is made as the chunks need it, block by block (FLOW_FIRST, then FLOW_BLOCK frames)."""
        frames = latents.shape[2]
        z = np.empty((1, latents.shape[1], frames), dtype=np.float32)
        made = 0
        for start, end, last in chunker.bounds(frames):
            began = time.perf_counter()
            need = chunking.plan_chunk(self.vocoder_chain, frames, start, end).window[1]
            while need > made:
                upto = min(frames, FLOW_FIRST if made == 0 else made + FLOW_BLOCK)
                z[:, :, made:upto] = self.flow_frames(latents, made, upto, speaker)
                made = upto
            audio = self.vocode(z, start, end, speaker)
            chunker.record(end - start, time.perf_counter() - began)
            yield start * self.hop_length, audio, last
