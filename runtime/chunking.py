"""Which latent frames to decode for each chunk of a sentence, so that the joined chunks are the sentence.

Everything after the durations is convolutional: the flow (coupling layers built of WaveNet
convolutions) and the HiFi-GAN decoder (a convolution, then per stage a transposed convolution
and parallel residual blocks, then a convolution). A chunk of output samples therefore depends on
a bounded window of latent frames, and decoding that window alone gives exactly the samples the
whole sentence gives there, provided the window reaches that far on each side (its *receptive
field*). The decoder piece of a voice crops its tensors between stages (``crop_starts`` /
``crop_ends``): the context that the rest of the network no longer needs is dropped as early as
possible, so the audio-rate stages compute almost nothing twice.

The flow and the HiFi-GAN are two pieces (``split_chain``): the flow works at the frame rate, so its
output for a whole sentence is small and is computed a large block at a time (its 32 frames of
context each side paid once a block), while the HiFi-GAN, whose audio-rate tensors grow with a
chunk, decodes small chunks of it with its own 11 frames of context.

This module is pure: from the voice's architecture (read from its sidecar, written from the
checkpoint's own config) it works out the layers, their receptive field, the chunk schedule and,
for each chunk, the window and every crop. Intervals are half-open ``[start, end)``, in
samples at the rate of the point where they are taken (latent frames at rate 1, audio at the hop
length).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass


class ChunkingError(ValueError):
    """An architecture or chunk setting that cannot be used; the message says what to change."""


@dataclass(frozen=True)
class Conv:
    """A stack of same-length convolutions (and pointwise ops): ``half`` samples each side."""

    half: int


@dataclass(frozen=True)
class Upsample:
    """A transposed convolution (kernel ``kernel``, stride ``stride``, padding ``pad`` each side)."""

    kernel: int
    stride: int
    pad: int


@dataclass(frozen=True)
class Crop:
    """A point where the decoder piece crops its tensor to what the rest of the network needs."""

    name: str


Layer = Conv | Upsample | Crop


def _ints(value, what: str) -> list[int]:
    if not isinstance(value, list) or not value or not all(isinstance(v, int) and v > 0 for v in value):
        raise ChunkingError(f"streaming architecture: {what} must be a non-empty list of positive integers, "
                            f"not {value!r}")
    return value


def layers(arch: dict) -> list[Layer]:
    """The chain from latent frames to audio samples, in execution order, with its crop points.

    ``arch`` holds the voice's own hyper-parameters (Coqui's ``VitsArgs`` names in short):
    ``flow`` {couplings, layers, kernel_size, dilation_rate} and ``decoder`` {conv_pre_kernel,
    upsample_rates, upsample_kernel_sizes, resblock_type, resblock_kernel_sizes,
    resblock_dilation_sizes, conv_post_kernel}.
    """
    try:
        flow, dec = arch["flow"], arch["decoder"]
        couplings, wn_layers = int(flow["couplings"]), int(flow["layers"])
        kernel, rate = int(flow["kernel_size"]), int(flow["dilation_rate"])
        rates = _ints(dec["upsample_rates"], "upsample_rates")
        up_kernels = _ints(dec["upsample_kernel_sizes"], "upsample_kernel_sizes")
        res_kernels = _ints(dec["resblock_kernel_sizes"], "resblock_kernel_sizes")
        dilations = [_ints(d, "resblock_dilation_sizes") for d in dec["resblock_dilation_sizes"]]
        res_type = str(dec["resblock_type"])
        pre, post = int(dec["conv_pre_kernel"]), int(dec["conv_post_kernel"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ChunkingError(f"streaming architecture is missing or has a bad field: {exc}") from exc
    if len(rates) != len(up_kernels) or len(res_kernels) != len(dilations):
        raise ChunkingError("streaming architecture: upsample rates/kernels or resblock kernels/dilations differ in length")
    if res_type not in ("1", "2"):
        raise ChunkingError(f"streaming architecture: resblock_type {res_type!r} is not '1' or '2'")
    for k in (kernel, pre, post, *res_kernels):
        if k % 2 == 0:
            raise ChunkingError(f"streaming architecture: even kernel {k} has no centre")

    chain: list[Layer] = []
    # Flow (run in reverse): each coupling's WaveNet has ``layers`` convolutions, dilation rate**i.
    coupling_half = sum((kernel - 1) // 2 * rate**i for i in range(wn_layers))
    for c in range(couplings):
        chain += [Conv(coupling_half), Crop(f"flow.{c}")]
    chain.append(Conv((pre - 1) // 2))  # conv_pre
    for i, (stride, k) in enumerate(zip(rates, up_kernels)):
        pad = (k - stride) // 2
        if k - 2 * pad != stride:
            raise ChunkingError(f"streaming architecture: upsampler {i} (kernel {k}, stride {stride}) does not "
                                "give exactly stride x its input length; this voice cannot be decoded in chunks")
        # ResBlock1: per dilation d a conv with d then one with 1; ResBlock2: one conv per dilation.
        if res_type == "1":
            branch = [(k_r - 1) // 2 * sum(d + 1 for d in dil) for k_r, dil in zip(res_kernels, dilations)]
        else:
            branch = [(k_r - 1) // 2 * sum(dil[:2]) for k_r, dil in zip(res_kernels, dilations)]
        chain += [Crop(f"ups.{i}"), Upsample(k, stride, pad), Conv(max(branch))]  # parallel blocks, averaged
    chain.append(Conv((post - 1) // 2))  # conv_post
    return chain


def split_chain(chain: list[Layer]) -> tuple[list[Layer], list[Layer]]:
    """The flow's part and the HiFi-GAN's part of the chain: the voice runs them as two pieces, cut at the
    flow's output (the last flow crop point), which works at the frame rate and is cheap to hold for a
    whole sentence."""
    cut = max(k for k, layer in enumerate(chain) if isinstance(layer, Crop) and layer.name.startswith("flow."))
    return chain[:cut], chain[cut + 1:]


def crop_names(chain: list[Layer]) -> list[str]:
    return [layer.name for layer in chain if isinstance(layer, Crop)]


def hop_length(chain: list[Layer]) -> int:
    return math.prod(layer.stride for layer in chain if isinstance(layer, Upsample))


@dataclass(frozen=True)
class ChunkPlan:
    """How to decode output frames ``[start, end)`` of a sentence of ``frames`` latent frames."""

    start: int
    end: int
    window: tuple[int, int]  # latent frames fed to the decoder piece
    crop_starts: tuple[int, ...]  # per crop point, relative to the tensor arriving there
    crop_ends: tuple[int, ...]
    trim: tuple[int, int]  # samples of the piece's output that are this chunk's audio
    kept: tuple[tuple[int, int], ...] = ()  # per crop point, what is kept, in samples of the whole sentence


def _needed(chain: list[Layer], frames: int, start: int, end: int) -> list[tuple[int, int]]:
    """Walking back from output samples [start*hop, end*hop): the interval each layer's input needs
    (index i: input of chain[i]), clipped to the sentence (zero padding there is the whole sentence's too)."""
    hop = hop_length(chain)
    rate = hop
    lo, hi = start * hop, end * hop
    needs: list[tuple[int, int]] = [(0, 0)] * len(chain)
    for i in range(len(chain) - 1, -1, -1):
        layer = chain[i]
        if isinstance(layer, Conv):
            lo, hi = lo - layer.half, hi + layer.half
        elif isinstance(layer, Upsample):
            # y[n] = sum over x[m] with n = m*stride - pad + j, 0 <= j < kernel
            rate //= layer.stride
            lo = -((-(lo + layer.pad - layer.kernel + 1)) // layer.stride)
            hi = (hi - 1 + layer.pad) // layer.stride + 1
        lo, hi = max(lo, 0), min(hi, frames * rate)
        needs[i] = (lo, hi)
    return needs


def plan_chunk(chain: list[Layer], frames: int, start: int, end: int) -> ChunkPlan:
    """The window and crops that decode output frames ``[start, end)`` exactly."""
    if not 0 <= start < end <= frames:
        raise ChunkingError(f"chunk [{start}, {end}) is not inside a sentence of {frames} frames")
    needs = _needed(chain, frames, start, end)
    w0, w1 = needs[0]
    lo, hi = w0, w1  # what the tensor covers now, absolute, at the current rate
    starts, ends, kept = [], [], []
    for layer, (n0, n1) in zip(chain, needs):
        if isinstance(layer, Upsample):
            lo, hi = lo * layer.stride, hi * layer.stride
        elif isinstance(layer, Crop):
            n0, n1 = max(n0, lo), min(n1, hi)
            starts.append(n0 - lo)
            ends.append(n1 - lo)
            kept.append((n0, n1))
            lo, hi = n0, n1
    hop = hop_length(chain)
    return ChunkPlan(start, end, (w0, w1), tuple(starts), tuple(ends), (start * hop - lo, end * hop - lo), tuple(kept))


def context(chain: list[Layer]) -> int:
    """Latent frames of context each side that a chunk in the middle of a long sentence needs."""
    frames = 10_000
    w0, w1 = _needed(chain, frames, frames // 2, frames // 2 + 1)[0]
    return max(frames // 2 - w0, w1 - frames // 2 - 1)


@dataclass(frozen=True)
class Schedule:
    """Chunk sizes in latent frames: a small first chunk, each next one ``growth`` times larger, up
    to ``max_frames``; a last remainder shorter than ``first_frames`` joins the chunk before it.
    (``Pacer`` sizes chunks by the audio the listener has in hand, within the same bounds.)"""

    first_frames: int = 8
    growth: float = 8.0
    max_frames: int = 128

    def __post_init__(self):
        if not (isinstance(self.first_frames, int) and 1 <= self.first_frames <= 100_000):
            raise ChunkingError(f"first chunk must be 1 to 100000 frames, not {self.first_frames!r}")
        if not (isinstance(self.max_frames, int) and self.first_frames <= self.max_frames <= 100_000):
            raise ChunkingError(f"largest chunk must be between the first chunk ({self.first_frames}) and 100000 "
                                f"frames, not {self.max_frames!r}")
        if not (isinstance(self.growth, (int, float)) and 1.0 <= self.growth <= 16.0):
            raise ChunkingError(f"chunk growth must be between 1 and 16, not {self.growth!r}")

    def chunks(self, frames: int) -> list[tuple[int, int]]:
        return [(a, b) for a, b, _ in self.bounds(frames)]

    def bounds(self, frames: int):
        """``(start, end, last)`` of each chunk of a sentence of ``frames`` frames."""
        start, size = 0, float(self.first_frames)
        while start < frames:
            end = _end(start, int(size), frames, self.first_frames)
            yield start, end, end == frames
            start, size = end, min(size * self.growth, self.max_frames)

    def record(self, frames: int, seconds: float) -> None:
        """A fixed schedule does not listen to how long chunks take."""


def _end(start: int, size: int, frames: int, smallest: int) -> int:
    end = min(frames, start + size)
    return frames if frames - end < smallest else end  # no tiny last chunk


class Pacer:
    """Chunk sizes from the audio the listener has in hand, for one stream of sentences.

    While nothing is playing, the chunk is ``first_frames`` (first audio soon). From then on the
    listener is assumed to play in real time from the first chunk: each chunk is as large as half the
    audio still in hand pays for at the decode speed measured on the previous chunk (overhead
    included, so small chunks make it cautious), at most ``growth`` times the previous chunk and
    ``max_frames`` (memory). Fewer, larger chunks decode less context twice; a later sentence that
    starts while earlier audio is still playing starts with large chunks. Chunk sizes never change
    the audio, only when it is ready. ``clock`` is for tests.
    """

    HEADROOM = 0.5  # the share of the audio in hand a chunk may take to decode

    def __init__(self, schedule: Schedule, frame_seconds: float, clock=None):
        self.schedule = schedule
        self.frame_seconds = frame_seconds
        self.clock = clock or time.monotonic
        self.started: float | None = None  # when the first chunk was ready
        self.produced = 0.0  # seconds of audio made
        self.per_frame: float | None = None  # seconds to decode a frame, last measured
        self.previous = 0

    def in_hand(self) -> float:
        """Seconds of audio made and not yet played."""
        return 0.0 if self.started is None else self.produced - (self.clock() - self.started)

    def size(self) -> int:
        s = self.schedule
        if self.started is None or self.per_frame is None:
            return s.first_frames
        cap = min(s.max_frames, max(s.first_frames, int(self.previous * s.growth)))
        in_hand = self.in_hand()
        if in_hand <= 0:  # falling behind: small chunks would only add overhead
            return cap
        return max(s.first_frames, min(cap, int(in_hand * self.HEADROOM / self.per_frame)))

    def bounds(self, frames: int):
        start = 0
        while start < frames:
            end = _end(start, self.size(), frames, self.schedule.first_frames)
            yield start, end, end == frames
            start = end

    def record(self, frames: int, seconds: float) -> None:
        """A chunk of ``frames`` frames took ``seconds`` to decode and is ready now."""
        if self.started is None:
            self.started = self.clock()
        self.per_frame = seconds / max(frames, 1)
        self.previous = frames
        self.produced += frames * self.frame_seconds


# Streaming: a first chunk of 8 frames (93 ms at 22 kHz) is ready ~5 ms after the frontend on a 2-core x86;
# then the Pacer sizes chunks by the audio in hand (up to 8x the previous one). Whole sentences are decoded
# in chunks all the same. At most 128 frames a chunk: the vocoder's audio-rate tensors are what grows with a
# chunk (peak RSS of a 400-character piece: 310 MB at 512 frames a chunk, ~195 MB at 128), and on the real
# voice 128-frame chunks decode a 10-second sentence ~10% faster than its whole graph does in one pass (the
# tensors stay in cache; the vocoder's context is 11 frames), 64-frame chunks 5% slower.
STREAM = Schedule(first_frames=8, growth=8.0, max_frames=128)
WHOLE = Schedule(first_frames=128, growth=1.0, max_frames=128)
