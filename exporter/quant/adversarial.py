"""HiFi-GAN's discriminators, learned from scratch during fine-tuning with the fp32 teacher's audio as "real".

The built-in voice ships inference weights only (no discriminator), so fine-tuning's adversarial term starts from
a discriminator that knows nothing and learns, step by step, what tells the int8 student's audio from the fp32
teacher's: the hiss int8 adds in quiet passages is exactly such a tell. The architecture is HiFi-GAN's (Kong et
al. 2020), arranged as VITS trains its vocoder (Coqui TTS's ``VitsDiscriminator``): a multi-period discriminator
(periods 2, 3, 5, 7, 11: the audio folded into 2-D, strided convolutions along time) and a scale discriminator
(grouped 1-D convolutions on the raw audio; ``SCALES`` adds HiFi-GAN's x2 and x4 average-pooled ones),
least-squares GAN losses and feature matching on every layer. ``width`` scales every
layer's channels: 1.0 is the published discriminator (for a GPU); fine-tuning on a CPU uses a narrow one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm, weight_norm

PERIODS = (2, 3, 5, 7, 11)
SCALES = 1  # as VITS trains (Coqui's VitsDiscriminator: the periods and one scale); HiFi-GAN has 3
LEAK = 0.1


def _channels(base: int, width: float, groups: int = 1) -> int:
    """``base * width`` rounded up to a multiple of ``groups`` (at least ``groups``)."""
    return max(groups, int(round(base * width / groups)) * groups)


class _Stack(nn.Module):
    """Convolutions each followed by LeakyReLU, then a one-channel output convolution: ``convs`` and ``post``."""

    convs: nn.ModuleList
    post: nn.Module

    def scores(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The flattened scores, and every layer's output (feature matching reads them)."""
        features = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), LEAK)
            features.append(x)
        x = self.post(x)
        features.append(x)
        return x.flatten(1), features


class PeriodDiscriminator(_Stack):
    """HiFi-GAN's DiscriminatorP: the audio folded by ``period``, (5, 1) convolutions with stride 3 along time."""

    BASE = (32, 128, 512, 1024, 1024)

    def __init__(self, period: int, width: float):
        super().__init__()
        self.period = period
        sizes = [1, *(_channels(c, width) for c in self.BASE)]
        self.convs = nn.ModuleList(
            weight_norm(nn.Conv2d(c_in, c_out, (5, 1), (3 if k < 4 else 1, 1), padding=(2, 0)))
            for k, (c_in, c_out) in enumerate(zip(sizes, sizes[1:])))
        self.post = weight_norm(nn.Conv2d(sizes[-1], 1, (3, 1), 1, padding=(1, 0)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        b, c, t = x.shape
        if t % self.period:
            x = F.pad(x, (0, self.period - t % self.period), "reflect")
        return self.scores(x.view(b, c, -1, self.period))


class ScaleDiscriminator(_Stack):
    """HiFi-GAN's DiscriminatorS: grouped 1-D convolutions; the first scale uses spectral norm."""

    LAYERS = ((128, 15, 1, 1), (128, 41, 2, 4), (256, 41, 2, 16), (512, 41, 4, 16), (1024, 41, 4, 16),
              (1024, 41, 1, 16), (1024, 5, 1, 1))  # (channels, kernel, stride, groups)

    def __init__(self, width: float, spectral: bool = False):
        super().__init__()
        norm = spectral_norm if spectral else weight_norm
        convs, c_in = [], 1
        for base, kernel, stride, groups in self.LAYERS:
            # the groups narrow with the channels (each group keeps its published width): grouped convolutions'
            # backward pass is slow on a CPU (16 groups of 1 channel: 3.4 s a step at width 1/8, dense 0.1 s)
            groups = max(1, int(groups * width))
            c_out = _channels(base, width, groups)
            convs.append(norm(nn.Conv1d(c_in, c_out, kernel, stride, groups=groups, padding=kernel // 2)))
            c_in = c_out
        self.convs = nn.ModuleList(convs)
        self.post = norm(nn.Conv1d(c_in, 1, 3, 1, padding=1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return self.scores(x)


class Discriminator(nn.Module):
    """The multi-period and multi-scale discriminators together: ``forward(audio)`` gives every sub-discriminator's
    scores and feature maps."""

    def __init__(self, width: float = 1.0):
        super().__init__()
        self.periods = nn.ModuleList(PeriodDiscriminator(p, width) for p in PERIODS)
        self.scales = nn.ModuleList(ScaleDiscriminator(width, spectral=k == 0) for k in range(SCALES))

    def forward(self, audio: torch.Tensor) -> list[tuple[torch.Tensor, list[torch.Tensor]]]:
        x = audio.reshape(audio.shape[0], 1, -1)
        out = [d(x) for d in self.periods]
        for k, d in enumerate(self.scales):
            if k:
                x = F.avg_pool1d(x, 4, 2, padding=2)
            out.append(d(x))
        return out


def discriminator_loss(real: list, fake: list) -> torch.Tensor:
    """Least squares: real scored 1, fake 0."""
    return sum(((1 - r) ** 2).mean() + (f ** 2).mean() for (r, _), (f, _) in zip(real, fake))


def generator_loss(real: list, fake: list) -> tuple[torch.Tensor, torch.Tensor]:
    """The student's adversarial term (fake scored 1) and feature matching (L1 between the discriminator's feature
    maps of the teacher's audio and the student's, every layer)."""
    adversarial = sum(((1 - f) ** 2).mean() for f, _ in fake)
    matching = sum(F.l1_loss(fm, rm.detach()) for (_, rms), (_, fms) in zip(real, fake) for rm, fm in zip(rms, fms))
    return adversarial, matching
