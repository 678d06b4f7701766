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
    """Write config.json + model.pth of a random tiny VITS; zero-initialised layers get small noise."""
    torch.manual_seed(seed)
    config = tiny_config(**kwargs)
    model = Vits(config)
    with torch.no_grad():
        for param in model.parameters():
            if torch.count_nonzero(param) == 0:
                param.normal_(0.0, 0.05)
    folder.mkdir(parents=True, exist_ok=True)
    config.save_json(str(folder / "config.json"))
    torch.save({"model": model.state_dict()}, folder / "model.pth")
    return folder / "config.json", folder / "model.pth"
