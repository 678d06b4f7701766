"""Load a Coqui VITS voice (config.json + model.pth) safely and strictly."""

from __future__ import annotations

import json
import logging
import pickle
from dataclasses import dataclass
from pathlib import Path

from exporter.errors import ExportError

logger = logging.getLogger(__name__)

# Parameters a checkpoint may carry that inference never uses.
_TRAINING_ONLY = ("disc.", "speaker_encoder.")


@dataclass
class LoadedVoice:
    model: "object"  # TTS.tts.models.vits.Vits, in eval mode
    config: "object"  # its VitsConfig
    speakers: dict[str, int]
    languages: dict[str, int]


def _require_file(path: Path, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{what} {path} not found.")
    return path


def load_config(config_path: Path):
    """TTS's ``load_config``, with errors that say which file and what to do."""
    from exporter.tts_compat import ensure_tts_importable

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
            local = config_path.parent / path.name
            if not local.is_file():
                raise ExportError(f"{config_path}: its {field} {name} does not exist, and there is no {path.name} "
                                  f"beside the config: put the voice's {path.name} ({holds}) in {config_path.parent}")
            logger.info("%s: %s %s is not on this machine; using %s, beside the config", config_path, field, name, local)
            resolved.append(str(local))
        value = resolved[0] if isinstance(recorded, str) else resolved
        for owner in owners:
            setattr(owner, field, value)


def _names(manager, count: int) -> dict[str, int]:
    """name -> id from a TTS speaker/language manager, or plain numbers when it has no names."""
    mapping = dict(getattr(manager, "name_to_id", None) or {})
    if len(mapping) != count:
        mapping = {str(i): i for i in range(count)}
    return {str(k): int(v) for k, v in sorted(mapping.items(), key=lambda kv: kv[1])}


def load_voice(config_path: Path, checkpoint_path: Path) -> LoadedVoice:
    """Build Coqui's ``Vits`` from the config and load the checkpoint into it, strictly."""
    import torch

    config = load_config(config_path)
    state = read_state_dict(checkpoint_path)
    from TTS.tts.models.vits import Vits

    if config.model_args.use_d_vector_file:
        raise ExportError(f"{config_path}: voices conditioned on external d-vectors (use_d_vector_file) are not supported.")
    config.model_args.init_discriminator = False  # inference never needs it; saves ~47 M params
    resolve_side_files(config, Path(config_path))
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
    languages = _names(model.language_manager, emb_l.num_embeddings) if emb_l is not None else {}
    return LoadedVoice(model, config, speakers, languages)
