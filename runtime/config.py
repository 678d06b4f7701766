"""What a voice folder says about itself: its settings (ours or Piper's ``.onnx.json``) and its files."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from runtime import chunking, contract


class VoiceError(ValueError):
    """A voice that cannot be loaded or used as asked; the message says what to do."""


@dataclass
class SynthesisConfig:
    """Per-call settings; ``None`` means the voice's default. ``seed`` makes the noise repeatable."""

    speaker: str | int | None = None
    language: str | None = None
    length_scale: float | None = None
    noise_scale: float | None = None
    noise_w: float | None = None
    seed: int | None = None
    speaker_embedding: object = None  # a d-vector voice's caller-given d-vector (array-like), instead of a speaker


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


def resolve(path: Path) -> tuple[Path, Path]:
    """A voice folder or a ``.onnx`` file -> (model path, sidecar path)."""
    path = Path(path)
    if path.is_dir():
        model = path / contract.MODEL_FILE
        if not model.exists():
            candidates = sorted(p for p in path.glob("*.onnx") if contract.sidecar_path(p).exists())
            if len(candidates) != 1:
                raise FileNotFoundError(f"{path}: no {contract.MODEL_FILE} (or single VOICE.onnx with its .onnx.json) in this folder")
            model = candidates[0]
    else:
        model = path
    if not model.exists():
        raise FileNotFoundError(f"voice model {model} not found")
    sidecar = contract.sidecar_path(model)
    if not sidecar.exists():
        # a quantized sibling (model.int8.onnx) shares the folder's model.onnx.json
        shared = model.parent / (contract.MODEL_FILE + ".json")
        if not shared.exists():
            raise FileNotFoundError(f"voice config {sidecar} not found: the .onnx.json must sit beside the model")
        sidecar = shared
    return model, sidecar


def read_sidecar(sidecar: Path) -> VoiceConfig:
    try:
        data = json.loads(Path(sidecar).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise VoiceError(f"voice config {sidecar} is not valid JSON: {exc}") from exc
    return VoiceConfig.from_dict(data, where=str(sidecar))
