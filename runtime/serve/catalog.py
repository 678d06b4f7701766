"""The voices a server offers, read from their sidecars at start-up (no model is loaded to describe them).

``--voice PATH`` names a voice folder (the model it speaks by default: ``runtime.config.default_model``, or the
one ``--variant`` names where the folder has it), a model file in one (``model.static.onnx``) or a Piper
``VOICE.onnx`` with its ``.onnx.json``; ``--data-dir DIR`` offers every voice folder and Piper voice under DIR.
A voice is named by its folder (ours) or file stem (Piper's, as wyoming-piper names them: ``en_US-joe-medium``).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from runtime import contract
from runtime.config import FP32, VoiceConfig, VoiceError, resolve

logger = logging.getLogger(__name__)


@dataclass
class VoiceEntry:
    name: str
    model: Path  # the file that is run (its streaming pieces beside it, when it has them)
    config: VoiceConfig
    description: str
    languages: list[str]
    speakers: list[str] = field(default_factory=list)
    attribution: tuple[str, str] = ("vits-edge", "https://github.com/coqui-ai/TTS")
    size_bytes: int = 0  # what loading it costs, roughly: the files it runs
    why: str = ""  # why this model of its folder (the folder's default, --variant)


_CLEANER_LANGUAGES = {"english_cleaners": "en", "basic_turkish_cleaners": "tr", "portuguese_cleaners": "pt",
                      "chinese_mandarin_cleaners": "zh"}


def _language_code(code: str) -> str:
    """espeak's ``en-us`` and Piper's ``en_US`` as Piper (and Home Assistant's Wyoming voices) write it."""
    parts = code.replace("-", "_").split("_")
    return "_".join([parts[0].lower()] + [p.upper() for p in parts[1:]])


def entry(path: Path, *, variant: str | None = None, name: str | None = None) -> VoiceEntry:
    """One voice, from a folder or a model file; a VoiceError says what is wrong with it. ``variant`` applies to the
    folders that have it (the others speak ``model.onnx``, with a warning), never to a file given by name."""
    path = Path(path)
    chosen = variant if path.is_dir() else None
    if chosen not in (None, FP32) and (path / contract.MODEL_FILE).is_file() \
            and not (path / contract.variant_file(chosen)).is_file():
        logger.warning("%s has no variant %s: serving its %s", path, chosen, contract.MODEL_FILE)
        chosen = FP32
    try:
        model, sidecar_path, why = resolve(path, chosen)
        data = json.loads(sidecar_path.read_text(encoding="utf-8"))
        config = VoiceConfig.from_dict(data, where=str(sidecar_path))
    except (OSError, ValueError) as exc:
        raise VoiceError(f"{path} is not a voice this server can offer: {exc}") from exc
    record = config.pieces(model.name)
    files = [model] if record is None else [model.parent / record[p] for p in contract.PIECES]
    size = sum(f.stat().st_size for f in files if f.is_file())
    if config.source == "piper":
        name = name or model.name.removesuffix(".onnx")
        lang = (data.get("language") or {}).get("code") or (data.get("espeak") or {}).get("voice") or "en"
        languages = [_language_code(lang)]
        description = f"{name} (Piper voice{', ' + data['dataset'] if data.get('dataset') else ''})"
        attribution = ("rhasspy", "https://github.com/rhasspy/piper")
    else:
        name = name or model.parent.name
        phonemizer = (config.tokenizer.get("phonemizer") or {}).get("language")
        # a character voice says its language only through its cleaner (english_cleaners: English)
        cleaner = _CLEANER_LANGUAGES.get(config.tokenizer.get("cleaner") or "")
        languages = [_language_code(code) for code in config.languages] or (
            [_language_code(phonemizer or cleaner)] if phonemizer or cleaner else [])
        if not languages:
            logger.warning("%s does not say its language: Home Assistant will not offer it", model)
        kind = "fp32" if model.name == contract.MODEL_FILE else model.name.removeprefix("model.").removesuffix(".onnx")
        description = f"{name} (Coqui VITS, {kind}{', streaming' if record else ''})"
        attribution = ("vits-edge", "https://github.com/coqui-ai/TTS")
    labels = config.speaker_labels()  # names as a person types them (no trailing newline)
    return VoiceEntry(name, model, config, description, languages, sorted(labels, key=labels.get),
                      attribution, size, why)


def scan(data_dir: Path, *, variant: str | None = None) -> list[VoiceEntry]:
    """Every voice folder (``model.onnx`` + sidecar) and Piper voice (``X.onnx`` + ``X.onnx.json``) under
    ``data_dir``; one that cannot be read is skipped with a warning naming it."""
    found = []
    for root, dirs, files in os.walk(data_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "pieces")
        here = Path(root)
        if contract.MODEL_FILE in files and contract.MODEL_FILE + ".json" in files:
            candidates = [here]
            dirs[:] = []
        else:
            candidates = [here / f for f in sorted(files) if f.endswith(".onnx") and f + ".json" in files]
        for candidate in candidates:
            try:
                found.append(entry(candidate, variant=variant))
            except VoiceError as exc:
                logger.warning("skipped: %s", exc)
    return found


def build(voices: list[str], data_dirs: list[str], *, variant: str | None = None) -> dict[str, VoiceEntry]:
    """The catalog, by name; the first ``--voice`` is the default. Two voices of one name: the first wins,
    with a warning."""
    entries = [entry(Path(v), variant=variant) for v in voices]
    for folder in data_dirs:
        if not Path(folder).is_dir():
            raise VoiceError(f"--data-dir {folder} is not a folder")
        entries += scan(Path(folder), variant=variant)
    catalog: dict[str, VoiceEntry] = {}
    for e in entries:
        if e.name in catalog:
            if catalog[e.name].model != e.model:
                logger.warning("two voices named %s: serving %s, not %s", e.name, catalog[e.name].model, e.model)
            continue
        catalog[e.name] = e
        logger.info("voice %s: %s (%s)", e.name, e.model, e.why)
    if not catalog:
        raise VoiceError("no voices to serve: give --voice DIR (an exported voice folder or a Piper .onnx) "
                         "or --data-dir DIR (a folder of them)")
    return catalog
