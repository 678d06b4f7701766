"""What a voice folder says about itself (its settings, ours or Piper's ``.onnx.json``, and which of its models
speaks), and the settings of one synthesis (``SynthesisConfig``), which every front door fills the same way."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from runtime import chunking, contract, cpu

logger = logging.getLogger(__name__)

FP32 = contract.FP32


class VoiceError(ValueError):
    """A voice that cannot be loaded or used as asked; the message says what to do."""


class NothingToSay(VoiceError):
    """The text is empty or has nothing the voice can say (the command-line tools exit with code 2)."""


class UsageError(ValueError):
    """A setting given wrong (a flag's value, a file it names): the command-line tools exit with code 2."""


@dataclass(frozen=True)
class SynthesisConfig:
    """The settings of one synthesis; ``None`` means the voice's default. ``seed`` makes the noise repeatable;
    ``speaker_embedding``: a d-vector voice (YourTTS) speaks as this d-vector (array-like) instead of a speaker.

    The same object travels from every front door (``Voice.stream``/``synthesize``, the CLI, the Wyoming server, the
    batch job) to the session calls; ``Voice.resolve`` fills its ``None`` fields from the voice, once a call."""

    speaker: str | int | None = None
    language: str | None = None
    length_scale: float | None = None
    noise_scale: float | None = None
    noise_w: float | None = None
    seed: int | None = None
    speaker_embedding: object = None

    SCALES: ClassVar[tuple[str, ...]] = ("length_scale", "noise_scale", "noise_w")

    def updated(self, **settings) -> SynthesisConfig:
        """A copy with the given fields set; a ``None`` leaves the field as it is (so ``--length-scale`` not given,
        or a keyword left out, never hides a value). An unknown name is a TypeError naming the valid ones."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(settings) - names)
        if unknown:
            raise TypeError(f"unknown synthesis setting(s) {', '.join(unknown)}; SynthesisConfig has: "
                            f"{', '.join(sorted(names))}")
        given = {k: v for k, v in settings.items() if v is not None}
        return dataclasses.replace(self, **given) if given else self

    @classmethod
    def of(cls, syn_config: SynthesisConfig | None = None, **settings) -> SynthesisConfig:
        """``syn_config`` (or the defaults) with the keyword conveniences of ``Voice.stream``/``synthesize`` on top."""
        return (syn_config or cls()).updated(**settings)


# Every synthesis flag, declared once: (flags, argparse options). ``add_synthesis_flags`` adds them to a parser and
# ``synthesis_from_args`` reads them back into a SynthesisConfig (flag names as in Piper where the meaning is the same).
_FLAGS: dict[str, tuple[tuple[str, ...], dict]] = {
    "speaker": (("-s", "--speaker"), {"help": "speaker name or id (see --list-speakers)"}),
    "speaker_embedding": (("--speaker-embedding",), {
        "type": Path, "metavar": "FILE",
        "help": "a d-vector voice (YourTTS) speaks as this d-vector instead of a named speaker: a .npy file, or a "
                "text/JSON file of its numbers (as many as the voice's d_vector_dim, usually 512)"}),
    "language": (("--language",), {"help": "language of a multilingual voice (see --list-languages)"}),
    "length_scale": (("--length-scale",), {"type": float, "help": "speaking rate: above 1 slower, below 1 faster"}),
    "noise_scale": (("--noise-scale",), {"type": float, "help": "audio variation"}),
    "noise_w": (("--noise-w", "--noise-w-scale"), {"type": float, "help": "phoneme duration variation"}),
    "seed": (("--seed",), {"type": int, "help": "make the noise repeatable"}),
}
ALL_FLAGS = tuple(_FLAGS)


def add_synthesis_flags(parser: argparse.ArgumentParser, names: tuple[str, ...] = ALL_FLAGS, *,
                        helps: dict[str, str] | None = None) -> None:
    """Add the flags of the SynthesisConfig fields ``names`` to ``parser`` (unset: the voice's default);
    ``helps`` rewords a flag's help where a command gives it another scope (the server's default voice)."""
    group = parser.add_argument_group("synthesis settings (unset: the voice's own defaults)")
    for name in names:
        flags, options = _FLAGS[name]
        group.add_argument(*flags, dest=name, **{**options, **({"help": helps[name]} if name in (helps or {}) else {})})


def synthesis_from_args(args: argparse.Namespace) -> SynthesisConfig:
    """The SynthesisConfig that ``add_synthesis_flags``' flags describe (a speaker embedding read from its file)."""
    given = {name: getattr(args, name) for name in _FLAGS if hasattr(args, name)}
    if given.get("speaker_embedding") is not None:
        given["speaker_embedding"] = read_embedding(given["speaker_embedding"])
    return SynthesisConfig(**given)


def read_embedding(path: Path) -> np.ndarray:
    """A d-vector from a ``.npy`` file (never unpickled) or a text file of numbers (JSON list or whitespace)."""
    path = Path(path)
    try:
        if path.suffix == ".npy":
            return np.load(path, allow_pickle=False)
        text = path.read_text(encoding="utf-8")
        values = json.loads(text) if text.lstrip().startswith("[") else text.split()
        return np.asarray(values, dtype=np.float32)
    except FileNotFoundError as exc:
        raise UsageError(f"speaker embedding file {path} not found") from exc
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path} is not a speaker embedding (a .npy file, or a text file of numbers): {exc}") from exc


@dataclass
class VoiceConfig:
    """What the runtime needs from a sidecar (ours or Piper's ``.onnx.json``)."""

    sample_rate: int
    noise_scale: float
    length_scale: float
    noise_w: float
    tokenizer: dict
    speakers: dict[str, int] = field(default_factory=dict)
    languages: dict[str, int] = field(default_factory=dict)
    d_vector_dim: int = 0  # a d-vector voice: the length of the speaker embedding it accepts
    source: str = contract.FORMAT  # "vits-edge" or "piper"
    streaming: dict = field(default_factory=dict)  # architecture + pieces per model file (exporter/pieces.py)
    default: dict = field(default_factory=dict)  # the folder's default model and the CPU class it is for (below)

    @classmethod
    def from_dict(cls, data: dict, *, where: str = "sidecar") -> VoiceConfig:
        if not isinstance(data, dict):
            raise VoiceError(f"{where}: expected a JSON object")
        streaming = data.get("streaming") or {}
        if not isinstance(streaming, dict):
            raise VoiceError(f"{where}: 'streaming' must be a JSON object")
        if data.get("format") == contract.FORMAT:
            version = data.get("schema_version")
            if not isinstance(version, int) or version > contract.SCHEMA_VERSION:
                raise VoiceError(
                    f"{where} was written by a newer vits-edge (schema {version}; this runtime reads up to "
                    f"{contract.SCHEMA_VERSION}): upgrade with pip install -U vits-edge"
                )
            try:
                inference = data["inference"]
                return cls(
                    sample_rate=int(data["audio"]["sample_rate"]),
                    noise_scale=float(inference["noise_scale"]),
                    length_scale=float(inference["length_scale"]),
                    noise_w=float(inference["noise_w"]),
                    tokenizer=dict(data["tokenizer"]),
                    speakers={str(k): int(v) for k, v in data.get("speakers", {}).items()},
                    languages={str(k): int(v) for k, v in data.get("languages", {}).items()},
                    d_vector_dim=int(data.get("d_vector_dim", 0)),
                    streaming=streaming,
                    default=dict(data.get(contract.DEFAULT_KEY) or {}),
                )
            except (KeyError, TypeError, ValueError) as exc:
                raise VoiceError(f"{where} is missing or has a bad field: {exc}") from exc
        if "phoneme_id_map" in data:  # a Piper voice's VOICE.onnx.json
            try:
                inference = data.get("inference", {})
                return cls(
                    sample_rate=int(data["audio"]["sample_rate"]),
                    noise_scale=float(inference.get("noise_scale", 0.667)),
                    length_scale=float(inference.get("length_scale", 1.0)),
                    noise_w=float(inference.get("noise_w", 0.8)),
                    tokenizer=data,
                    speakers={str(k): int(v) for k, v in (data.get("speaker_id_map") or {}).items()},
                    source="piper",
                    streaming=streaming,
                )
            except (KeyError, TypeError, ValueError) as exc:
                raise VoiceError(f"{where} is missing or has a bad field: {exc}") from exc
        raise VoiceError(f"{where} is neither a vits-edge sidecar (\"format\": \"vits-edge\") nor a Piper voice config")

    def to_dict(self) -> dict:
        return asdict(self)

    def speaker_labels(self) -> dict[str, int]:
        """Speaker names as a person types them -> id: without surrounding whitespace where that names one speaker
        (VCTK's ``"ED\\n"`` is ``ED``), else with it escaped (YourTTS has ``female-en-5`` and
        ``female-en-5\\n``: the second is ``female-en-5\\n`` written out)."""
        stripped = [name.strip() for name in self.speakers]
        labels = {}
        for name, ident in self.speakers.items():
            label = name.strip()
            if stripped.count(label) > 1 and label != name:
                label = name.encode("unicode_escape").decode("ascii")
            labels[label] = ident
        return labels

    def pieces(self, model_name: str) -> dict | None:
        """The streaming pieces of ``model_name`` (``{"frontend": path, "flow": path, "vocoder": path}``, relative to the
        folder), or None when that model was not split."""
        record = (self.streaming.get("pieces") or {}).get(model_name)
        if not isinstance(record, dict) or not all(isinstance(record.get(p), str) for p in contract.PIECES):
            return None
        return record

    def architecture(self) -> dict:
        """The streaming architecture, checked (``chunking.layers`` accepts it) or a VoiceError."""
        try:
            chunking.layers(self.streaming.get("architecture"))
        except (chunking.ChunkingError, TypeError) as exc:
            raise VoiceError(f"the voice's streaming architecture is unusable: {exc}") from exc
        return self.streaming["architecture"]


def default_model(folder: Path, config: VoiceConfig) -> tuple[str, str]:
    """Which model of a voice folder speaks when none is asked for, and why: the variant the sidecar names as the
    folder's default (``quantize`` names ``auto``'s, a plan judged to sound the same as fp32) when it is there and
    was planned for this CPU's class, else ``model.onnx``. A plan timed on one class (int8 dot-product or not)
    is never forced on a device of the other: there its int8 may be slower than fp32. On a CPU with fp16
    arithmetic (a Pi 5) the fp16 file the sidecar names for it speaks first (``contract.FP16_DEFAULT``)."""
    fp16 = config.default.get(contract.FP16_DEFAULT)
    if isinstance(fp16, str) and fp16 and cpu.has_fp16_arithmetic() and (Path(folder) / fp16).is_file():
        return fp16, "the folder's default on CPUs with fp16 arithmetic like this one"
    name = config.default.get("model")
    if not isinstance(name, str) or not name:
        return contract.MODEL_FILE, "no variant is the folder's default"
    if not (Path(folder) / name).is_file():
        return contract.MODEL_FILE, f"the folder's default, {name}, is not there"
    planned_for = config.default.get("int8_class")
    if planned_for and planned_for != cpu.int8_class():
        return contract.MODEL_FILE, (f"the folder's default, {name}, was planned for {planned_for} CPUs and this one "
                                     f"has {cpu.int8_class()}: use it anyway with --variant "
                                     f"{contract.variant_name(name)}")
    return name, "the folder's default" + (f", planned for {planned_for} CPUs like this one" if planned_for else "")


def variants(folder: Path) -> list[str]:
    """The variant names a voice folder holds (``fp32`` for model.onnx, ``auto`` for model.auto.onnx, ...)."""
    return [contract.variant_name(p.name) for p in contract.voice_models(folder) if p.is_file()]


def resolve(path: Path, variant: str | None = None) -> tuple[Path, Path, str]:
    """A voice folder or a ``.onnx`` file -> (model path, sidecar path, why that model).

    A folder speaks the model ``variant`` names (``fp32`` is ``model.onnx``, ``auto`` is ``model.auto.onnx``), or,
    without one, its default (``default_model``); a Piper voice's folder its one ``VOICE.onnx``."""
    path = Path(path)
    why = "the file given"
    if path.is_dir():
        model = path / contract.MODEL_FILE
        if model.exists():
            if variant is None:
                name, why = default_model(path, read_sidecar(contract.sidecar_path(model)))
                model = path / name
            elif variant != FP32:
                model = path / contract.variant_file(variant)
                if not model.is_file():
                    raise FileNotFoundError(f"{path} has no variant {variant!r} ({model.name}); it has: "
                                            f"{', '.join(variants(path))}")
                why = f"variant {variant}, as asked"
            else:
                why = f"variant {FP32}, as asked"
        else:
            candidates = sorted(p for p in path.glob("*.onnx") if contract.sidecar_path(p).exists())
            if len(candidates) != 1:
                raise FileNotFoundError(f"{path}: no {contract.MODEL_FILE} (or single VOICE.onnx with its .onnx.json) "
                                        "in this folder")
            if variant not in (None, FP32):
                raise FileNotFoundError(f"{path} is a Piper voice's folder: it has no variants (no --variant)")
            model = candidates[0]
            why = "the folder's one voice"
    else:
        model = path
        if variant is not None:
            raise VoiceError(f"--variant {variant} chooses a model of a voice folder: give the folder, not {path}")
    if not model.exists():
        raise FileNotFoundError(f"voice model {model} not found")
    sidecar = contract.sidecar_path(model)
    if not sidecar.exists():
        # a quantized sibling (model.int8.onnx) shares the folder's model.onnx.json
        shared = model.parent / (contract.MODEL_FILE + ".json")
        if not shared.exists():
            raise FileNotFoundError(f"voice config {sidecar} not found: the .onnx.json must sit beside the model")
        sidecar = shared
    return model, sidecar, why


def read_sidecar(sidecar: Path) -> VoiceConfig:
    try:
        data = json.loads(Path(sidecar).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise VoiceError(f"voice config {sidecar} is not valid JSON: {exc}") from exc
    return VoiceConfig.from_dict(data, where=str(sidecar))
