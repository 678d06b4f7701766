"""Tiny random VITS voices built in seconds, with the real input and output names (needs torch + TTS)."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
if importlib.util.find_spec("TTS") is None:
    pytest.skip("coqui-tts is not installed (pip install 'vits-edge[export]')", allow_module_level=True)

from exporter.tts_compat import ensure_tts_importable  # noqa: E402

ensure_tts_importable()

from TTS.tts.configs.shared_configs import CharactersConfig  # noqa: E402
from TTS.tts.configs.vits_config import VitsArgs, VitsConfig  # noqa: E402
from TTS.tts.models.vits import Vits  # noqa: E402



HAS_ESPEAK = shutil.which("espeak-ng") is not None


def tiny_config(*, phonemes: bool = False, speakers: list[str] | None = None,
                languages: list[str] | None = None, discriminator: bool = False) -> VitsConfig:
    args = VitsArgs(
        hidden_channels=32,
        hidden_channels_ffn_text_encoder=64,
        num_heads_text_encoder=2,
        num_layers_text_encoder=2,
        kernel_size_text_encoder=3,
        num_layers_posterior_encoder=2,
        num_layers_flow=2,
        resblock_type_decoder="2",
        resblock_kernel_sizes_decoder=[3],
        resblock_dilation_sizes_decoder=[[1, 3]],
        upsample_rates_decoder=[8, 8],
        upsample_kernel_sizes_decoder=[16, 16],
        upsample_initial_channel_decoder=32,
        out_channels=65,
        use_sdp=True,
        init_discriminator=discriminator,
        periods_multi_period_discriminator=[2],
        use_speaker_embedding=bool(speakers),
        speaker_embedding_channels=16,
        use_language_embedding=bool(languages),
        embedded_language_dim=8,
    )
    config = VitsConfig(model_args=args, add_blank=True)
    config.audio.sample_rate = 16000
    config.audio.hop_length = 64
    config.audio.win_length = 128
    config.audio.fft_size = 128
    if phonemes:
        config.use_phonemes = True
        config.phonemizer = "espeak"
        config.phoneme_language = "en-us"
        config.text_cleaner = "phoneme_cleaners"
    else:
        config.use_phonemes = False
        config.text_cleaner = "english_cleaners"
        config.characters = CharactersConfig(
            characters_class="TTS.tts.models.vits.VitsCharacters",
            characters="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
            punctuations="!'(),-.:;? ",
            pad="<PAD>",
            blank="<BLNK>",
            phonemes=None,
            is_unique=False,
            is_sorted=True,
        )
    if speakers:
        config.speakers = list(speakers)
    if languages:
        config.languages = list(languages)
    return config


def build_voice(folder: Path, seed: int = 0, **kwargs) -> tuple[Path, Path]:
    """Write config.json + model.pth of a random tiny VITS; zero-initialised layers get small noise.

    Initialised as for training, a random voice barely uses its context: HiFi-GAN's weights (N(0, 0.01))
    shrink the signal at every convolution and the flow's couplings start near the identity, so a latent
    frame 12 frames away moved the audio by 5e-8 and a test of chunked decoding could not fail. The
    convolutions of the decoder and of the flow's WaveNets get weights of norm 1 per output channel (weight
    norm's ``g``) and the couplings' output layers weights of unit gain, so the signal keeps its scale from
    layer to layer and the audio depends on every latent frame within the receptive field."""
    torch.manual_seed(seed)
    config = tiny_config(**kwargs)
    model = lively(Vits(config))
    folder.mkdir(parents=True, exist_ok=True)
    config.save_json(str(folder / "config.json"))
    torch.save({"model": model.state_dict()}, folder / "model.pth")
    return folder / "config.json", folder / "model.pth"


def lively(model):
    """Random weights that use the whole receptive field (see build_voice); returns ``model``."""
    with torch.no_grad():
        for param in model.parameters():
            if torch.count_nonzero(param) == 0:
                param.normal_(0.0, 0.05)
        for module in [*model.waveform_decoder.modules(), *model.flow.modules()]:
            if hasattr(module, "parametrizations") and hasattr(module.parametrizations, "weight"):
                module.parametrizations.weight.original0.fill_(1.0)
        for coupling in model.flow.flows:
            coupling.post.weight.normal_(0.0, coupling.post.weight.shape[1] ** -0.5)
    return model
