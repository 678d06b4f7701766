"""Coqui model-zoo VITS voices rebuilt with random weights, from the configs as users have them (needs torch + TTS).

``tests/zoo/`` holds config files copied from public copies of downloaded zoo voices (byte for byte: the downloader's
absolute paths of other machines, bare ``Infinity`` tokens, ``test_sentences`` split into characters):

* ``vctk_vits.config.json`` + ``vctk_vits.speaker_ids.json``: ``tts_models/en/vctk/vits`` (abkarim/TTS
  ``py_files/models/tts_models--en--vctk--vits/``, the same in knowledgetechnologyuhh/nicol_tts): espeak ``en``
  phonemes, 109 speakers, the first named ``"ED\\n"``; checkpoint ``model_file.pth``.
* ``your_tts.config.json`` + ``your_tts.language_ids.json``: ``tts_models/multilingual/multi-dataset/your_tts``
  (michellechan1123/ANIMA ``models/tts_models--multilingual--multi-dataset--your_tts/``): 16 kHz, characters with
  ``multilingual_cleaners``, 10 text-encoder layers, 512-dim d-vectors from a ``speakers.json`` recorded as a Windows
  path, languages from the datasets (``language_ids_file`` null), the speaker-consistency loss's encoder on.
  ``your_tts.speaker_clips.json`` is its ``speakers.json`` without the embeddings (38 clips, 6 names, three ending in
  a newline, two differing only by it); the embeddings are drawn here.
* ``thorsten_vits.config.json``: ``tts_models/de/thorsten/vits`` (same ANIMA repository), phonemized with ``gruut``.

Two are built from what is known of them without a copy of their config: ``ljspeech`` is the VCTK config with its
speakers off (the same release and recipe: espeak phonemes, one speaker); ``css10`` is a Neon ``vits-neon`` character
voice: ``multilingual_cleaners``, a speaker embedding of one row named twice (``{"de": 0, "hokuspokus": 0}``), a
language embedding of one language, side files recorded in a Hugging Face cache, checkpoint ``model_file.pth.tar``.

``small=True`` keeps every setting but the widths (channels), so that a voice builds and exports in seconds; the layer
counts, kernel sizes, upsampling, sample rate, text settings, speakers and languages stay as published.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
from tiny_vits import lively, torch

ZOO = Path(__file__).resolve().parent / "zoo"
VOICES = ("ljspeech", "vctk", "your_tts", "css10", "thorsten")
CHECKPOINT = {"css10": "model_file.pth.tar"}  # the others: model_file.pth
# widths of a small voice (layers, kernels, rates unchanged)
SMALL = {"hidden_channels": 32, "hidden_channels_ffn_text_encoder": 64, "upsample_initial_channel_decoder": 64,
         "speaker_embedding_channels": 16, "embedded_language_dim": 4}
CSS10_SPEAKERS = {"de": 0, "hokuspokus": 0}
CSS10_LANGUAGES = {"de": 0}
CSS10_CACHE = "/root/.cache/huggingface/hub/models--neongeckocom--tts-vits-css10-de/snapshots/9b3587ba721e/"


def _read(name: str) -> dict:
    return json.loads((ZOO / name).read_text(encoding="utf-8"))  # Python's json reads bare Infinity


def _both(config: dict, key: str, value) -> None:
    """Set a field where the downloader writes it: at the top level and in model_args."""
    config[key] = value
    config["model_args"][key] = value


def raw_config(voice: str) -> tuple[dict, dict[str, str]]:
    """The config as the user's config.json holds it, and the side files to put beside it (name -> JSON text)."""
    if voice in ("vctk", "ljspeech", "css10"):
        config = _read("vctk_vits.config.json")
        side = {"speaker_ids.json": (ZOO / "vctk_vits.speaker_ids.json").read_text(encoding="utf-8")}
        if voice == "ljspeech":
            side = {}
            _both(config, "use_speaker_embedding", False)
            _both(config, "num_speakers", 0)
            _both(config, "speakers_file", None)
        elif voice == "css10":
            config.update(use_phonemes=False, phonemizer=None, phoneme_language=None,
                          text_cleaner="multilingual_cleaners")
            config["characters"] = {
                "characters_class": "TTS.tts.models.vits.VitsCharacters", "vocab_dict": None, "pad": "<PAD>",
                "eos": "<EOS>", "bos": "<BOS>", "blank": "<BLNK>",
                "characters": "abcdefghijklmnopqrstuvwxyzßäöüABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÜ",
                "punctuations": "!'(),-.:;? ", "phonemes": None, "is_unique": True, "is_sorted": True}
            _both(config, "num_speakers", 1)
            _both(config, "speakers_file", CSS10_CACHE + "speaker_ids.json")
            config["model_args"].update(use_language_embedding=True, language_ids_file=CSS10_CACHE + "language_ids.json")
            config["use_language_embedding"] = True
            side = {"speaker_ids.json": json.dumps(CSS10_SPEAKERS), "language_ids.json": json.dumps(CSS10_LANGUAGES)}
        return config, side
    if voice == "your_tts":
        config = _read("your_tts.config.json")
        clips = _read("your_tts.speaker_clips.json")
        rng = np.random.default_rng(512)
        centres = {name: rng.standard_normal(512) for name in sorted(set(clips.values()))}
        embeddings = {clip: {"name": name, "embedding": [round(float(v), 6) for v in
                                                         (centres[name] + 0.3 * rng.standard_normal(512)) / 22.6]}
                      for clip, name in clips.items()}
        side = {"speakers.json": json.dumps(embeddings),
                "language_ids.json": (ZOO / "your_tts.language_ids.json").read_text(encoding="utf-8")}
        return config, side
    if voice == "thorsten":
        return _read("thorsten_vits.config.json"), {}
    raise KeyError(voice)


def build_zoo_voice(voice: str, folder: Path, *, small: bool = True, seed: int = 0) -> tuple[Path, Path]:
    """Write ``folder/config.json``, its side files and a random checkpoint under the zoo's file name."""
    from exporter.checkpoint import for_inference
    from exporter.tts_compat import ensure_tts_importable

    ensure_tts_importable()
    from TTS.config import load_config
    from TTS.tts.models.vits import Vits

    config, side = raw_config(voice)
    if small:
        config["model_args"].update(SMALL)
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in side.items():
        (folder / name).write_text(text, encoding="utf-8")
    config_path = folder / "config.json"
    config_path.write_text(json.dumps(config, indent=4), encoding="utf-8")  # Infinity stays a bare token
    checkpoint = folder / CHECKPOINT.get(voice, "model_file.pth")
    # the model is built as the exporter will build it; the file keeps the foreign paths
    loaded = load_config(str(config_path))
    if voice == "thorsten":  # TTS cannot build a gruut voice without gruut: the checkpoint of its espeak twin
        loaded.phonemizer, loaded.phoneme_language = "espeak", "de"
    for_inference(loaded, config_path)
    torch.manual_seed(seed)
    model = lively(Vits(copy.deepcopy(loaded)))
    torch.save({"model": model.state_dict()}, checkpoint)
    return config_path, checkpoint
