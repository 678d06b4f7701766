"""Load a Coqui VITS voice (config.json + model.pth) safely and strictly.

torch and TTS are imported where they are used: they take seconds, and TTS only after ``ensure_tts_importable``
has stood in for the packages it insists on and never uses (exporter/tts_compat.py).
"""

from __future__ import annotations

import json
import logging
import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from exporter.errors import ExportError
from exporter.tts_compat import ensure_tts_importable
from runtime.text.cleaners import CLEANERS
from runtime.text.tokenizer import SUPPORTED_PHONEMIZERS

logger = logging.getLogger(__name__)

# Parameters a checkpoint may carry that inference never uses.
_TRAINING_ONLY = ("disc.", "speaker_encoder.")


@dataclass
class LoadedVoice:
    model: object  # TTS.tts.models.vits.Vits, in eval mode
    config: object  # its VitsConfig
    speakers: dict[str, int]
    languages: dict[str, int]
    # a d-vector voice: each named speaker's d-vector (the mean of its clips', as TTS picks it by name), row = id
    d_vectors: object | None = None  # numpy float32 [speakers, d_vector_dim]


def _require_file(path: Path, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{what} {path} not found.")
    return path


def load_config(config_path: Path):
    """TTS's ``load_config``, with errors that say which file and what to do."""
    ensure_tts_importable()
    from TTS.config import load_config as tts_load_config

    config_path = _require_file(config_path, "config")
    try:
        raw = json.loads(config_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ExportError(f"{config_path} is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict) or raw.get("model", "").lower() != "vits":
        found = raw.get("model") if isinstance(raw, dict) else type(raw).__name__
        raise ExportError(f"{config_path} is not a Coqui VITS config (its \"model\" is {found!r}, expected \"vits\").")
    try:
        return tts_load_config(str(config_path))
    except Exception as exc:  # coqpit raises many types on bad fields
        raise ExportError(f"{config_path}: TTS could not read this config: {exc}") from exc


def read_state_dict(checkpoint_path: Path) -> dict:
    """Read a checkpoint's tensors without ever executing pickled code."""
    import torch

    checkpoint_path = _require_file(checkpoint_path, "checkpoint")
    try:
        state = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ExportError(
            f"{checkpoint_path} contains pickled Python objects, not only tensors, and was refused "
            "(torch.load(weights_only=True)); loading it could run arbitrary code. If you trust it, "
            "re-save it as {'model': model.state_dict()} and try again."
        ) from exc
    except FileNotFoundError:
        raise
    except Exception as exc:  # torch raises RuntimeError, EOFError, IndexError... on non-checkpoints
        raise ExportError(f"{checkpoint_path} is not a readable PyTorch checkpoint: {exc}") from exc
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ExportError(f"{checkpoint_path} holds no state dict (expected {{'model': state_dict}}).")
    return state


# The files a config names beside its checkpoint: (field, what it holds, when TTS reads it).
_SIDE_FILES = (
    ("speakers_file", "speaker names and ids", lambda c: c.model_args.use_speaker_embedding and not c.speakers),
    ("speaker_file", "speaker names and ids", lambda c: c.model_args.use_speaker_embedding and not c.speakers),
    ("language_ids_file", "language names and ids", lambda c: c.model_args.use_language_embedding),
    ("d_vector_file", "speakers' d-vectors", lambda c: c.model_args.use_d_vector_file),
)


def resolve_side_files(config, config_path: Path) -> None:
    """Configs saved by Coqui's downloader record the side files (``speaker_ids.json``, ``language_ids.json``,
    ``speakers.json``) by absolute paths of the machine that saved them. A recorded path that does not exist is
    looked for beside the config, by its file name; the file used is logged. A file the voice needs and that is
    found nowhere is an error naming it."""
    for field, holds, needed in _SIDE_FILES:
        owners = [o for o in (config, config.model_args) if getattr(o, field, None)]
        if not owners or not needed(config):
            continue
        recorded = getattr(owners[0], field)
        paths = [recorded] if isinstance(recorded, str) else list(recorded)
        resolved = []
        for name in paths:
            path = Path(name)
            if path.is_file():
                resolved.append(str(path))
                continue
            base = re.split(r"[\\/]", name)[-1]  # a Windows path's file name too (C:\Users\...\speakers.json)
            local = config_path.parent / base
            if not local.is_file():
                raise ExportError(f"{config_path}: its {field} {name} does not exist, and there is no {base} "
                                  f"beside the config: put the voice's {base} ({holds}) in {config_path.parent}")
            logger.info("%s: %s %s is not on this machine; using %s, beside the config", config_path, field, name, local)
            resolved.append(str(local))
        value = resolved[0] if isinstance(recorded, str) else resolved
        for owner in owners:
            setattr(owner, field, value)


def _names(manager, count: int) -> dict[str, int]:
    """name -> id from a TTS speaker/language manager, or plain numbers when it has no names. Two names may
    share an id (css10's ``speaker_ids.json``); an id beyond the embedding table is an error TTS would hit."""
    mapping = {str(k): int(v) for k, v in (getattr(manager, "name_to_id", None) or {}).items()}
    if not mapping:
        return {str(i): i for i in range(count)}
    outside = {k: v for k, v in mapping.items() if not 0 <= v < count}
    if outside:
        name, ident = next(iter(outside.items()))
        raise ExportError(f"the voice names {len(outside)} speaker(s) or language(s) beyond its {count} embeddings "
                          f"(first: {name!r} = {ident}): the config's side files do not belong to this checkpoint")
    return dict(sorted(mapping.items(), key=lambda kv: kv[1]))


def _d_vectors(model, config_path: Path):
    """Names and mean d-vectors of a d-vector voice's speakers (``SpeakerManager.get_mean_embedding``, which
    TTS's ``synthesize`` uses for a speaker name), checked against the model's ``d_vector_dim``."""
    manager = model.speaker_manager
    names = sorted(getattr(manager, "name_to_id", None) or {}, key=manager.name_to_id.get) if manager else []
    if not names:
        raise ExportError(f"{config_path}: a d-vector voice (use_d_vector_file) needs its d_vector_file "
                          "(speakers.json: each clip's name and embedding); none was read")
    table = np.stack([np.asarray(manager.get_mean_embedding(name), dtype=np.float32) for name in names])
    dim = int(model.embedded_speaker_dim)
    if table.ndim != 2 or table.shape[1] != dim:
        raise ExportError(f"{config_path}: the d-vectors in its d_vector_file have {table.shape[-1]} values, the "
                          f"model expects d_vector_dim = {dim}")
    if not np.all(np.isfinite(table)) or np.any(np.linalg.norm(table, axis=1) == 0):
        raise ExportError(f"{config_path}: its d_vector_file holds a zero or non-finite d-vector")
    return {name: i for i, name in enumerate(names)}, table


def check_text_settings(config, config_path: Path) -> None:
    """Refuse, before TTS builds anything, a voice whose text the runtime cannot turn into the same ids: a
    phonemizer other than espeak (gruut, a language-specific one, multi_phonemizer) or a cleaner it lacks."""
    if config.use_phonemes:
        name = config.phonemizer
        if not name:
            from TTS.tts.utils.text.phonemizers import get_default_phonemizer

            try:
                name = get_default_phonemizer(config.phoneme_language)
            except ValueError:  # a language TTS phonemizes with a package of its own (ja-jp, zh-cn, ko-kr...)
                name = f"the default phonemizer for {config.phoneme_language!r}"
        if name not in SUPPORTED_PHONEMIZERS:
            raise ExportError(
                f"{config_path}: this voice is phonemized with {name!r}, which the vits-edge runtime does not have (it "
                f"phonemizes with {', '.join(sorted(SUPPORTED_PHONEMIZERS))} only): its ids would be wrong, so it is "
                "not exported. Voices phonemized with espeak-ng, and character voices, can be.")
    cleaner = config.text_cleaner
    if cleaner and cleaner not in CLEANERS:
        raise ExportError(f"{config_path}: this voice's text cleaner {cleaner!r} is not in the vits-edge runtime "
                          f"(it has {', '.join(sorted(CLEANERS))}): its ids would be wrong, so it is not exported")


def for_inference(config, config_path: Path) -> None:
    """The config as inference needs it, checked: no discriminator (~47 M parameters inference never uses), no
    speaker encoder of YourTTS's speaker-consistency loss (``model_se.pth``, often not downloaded and recorded on
    the machine that trained it: TTS would load it for nothing, or fail), text settings the runtime reproduces,
    side files found."""
    config.model_args.init_discriminator = False
    config.model_args.use_speaker_encoder_as_loss = False
    config.model_args.speaker_encoder_model_path = config.model_args.speaker_encoder_config_path = ""
    check_text_settings(config, config_path)
    resolve_side_files(config, config_path)


def load_voice(config_path: Path, checkpoint_path: Path) -> LoadedVoice:
    """Build Coqui's ``Vits`` from the config and load the checkpoint into it, strictly."""
    import torch

    config = load_config(config_path)
    state = read_state_dict(checkpoint_path)
    from TTS.tts.models.vits import Vits

    for_inference(config, Path(config_path))
    try:
        model = Vits(config)
    except Exception as exc:
        raise ExportError(f"{config_path}: TTS could not build a VITS model from this config: {exc}") from exc
    expected = model.state_dict()
    state = {k: v for k, v in state.items() if not k.startswith(_TRAINING_ONLY)}
    for name, tensor in state.items():
        if name in expected and tuple(tensor.shape) != tuple(expected[name].shape):
            raise ExportError(
                f"config {config_path} does not match checkpoint {checkpoint_path}: tensor {name} has shape "
                f"{tuple(tensor.shape)} in the checkpoint but {tuple(expected[name].shape)} in the model the "
                "config describes."
            )
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        detail = f"first missing tensor: {missing[0]}" if missing else f"first unexpected tensor: {unexpected[0]}"
        raise ExportError(
            f"config {config_path} does not match checkpoint {checkpoint_path}: {len(missing)} tensors missing, "
            f"{len(unexpected)} unexpected ({detail})."
        )
    with torch.no_grad():
        model.load_state_dict(state, strict=True)
    model.eval()
    emb_g, emb_l = getattr(model, "emb_g", None), getattr(model, "emb_l", None)
    speakers = _names(model.speaker_manager, emb_g.num_embeddings) if emb_g is not None else {}
    d_vectors = None
    if model.args.use_d_vector_file:
        speakers, d_vectors = _d_vectors(model, Path(config_path))
    languages = _names(model.language_manager, emb_l.num_embeddings) if emb_l is not None else {}
    return LoadedVoice(model, config, speakers, languages, d_vectors)
