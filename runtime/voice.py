"""``Voice``: an exported (or Piper) VITS voice that turns text into audio with onnxruntime."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from runtime import contract
from runtime.sentences import iter_sentences
from runtime.text import piper_tokenizer, tokenizer_from_spec
from runtime.wav import atomic_wav, to_pcm16

logger = logging.getLogger(__name__)


class VoiceError(ValueError):
    """A voice that cannot be loaded or used as asked; the message says what to do."""


@dataclass
class SynthesisConfig:
    """Per-call settings; ``None`` means the voice's default."""

    speaker: str | int | None = None
    language: str | None = None
    length_scale: float | None = None
    noise_scale: float | None = None
    noise_w: float | None = None


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
    source: str = contract.FORMAT  # "vits-edge" or "piper"

    @classmethod
    def from_dict(cls, data: dict, *, where: str = "sidecar") -> VoiceConfig:
        if not isinstance(data, dict):
            raise VoiceError(f"{where}: expected a JSON object")
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
                )
            except (KeyError, TypeError, ValueError) as exc:
                raise VoiceError(f"{where} is missing or has a bad field: {exc}") from exc
        raise VoiceError(f"{where} is neither a vits-edge sidecar (\"format\": \"vits-edge\") nor a Piper voice config")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class AudioChunk:
    """One sentence of audio: float32 samples in [-1, 1]."""

    text: str
    audio: np.ndarray
    sample_rate: int

    @property
    def seconds(self) -> float:
        return len(self.audio) / self.sample_rate

    def pcm16(self) -> bytes:
        return to_pcm16(self.audio)


def _resolve(path: Path) -> tuple[Path, Path]:
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


class Voice:
    """Text -> ids -> audio, one sentence at a time."""

    def __init__(self, session: ort.InferenceSession, config: VoiceConfig, *, espeak_data: str | None = None):
        self.session = session
        self.config = config
        self.input_names = {i.name for i in session.get_inputs()}
        self.output_names = [o.name for o in session.get_outputs()]
        if config.source == "piper":
            self.tokenizer = piper_tokenizer(config.tokenizer, espeak_data=espeak_data)
        else:
            self.tokenizer = tokenizer_from_spec(config.tokenizer, espeak_data=espeak_data)

    @classmethod
    def load(cls, path: str | os.PathLike, *, threads: int | None = None, providers: list[str] | None = None,
             session_options: ort.SessionOptions | None = None, espeak_data: str | None = None) -> Voice:
        """Load a voice folder, or a ``.onnx`` file with its ``.onnx.json`` beside it."""
        model, sidecar = _resolve(Path(path))
        try:
            data = json.loads(sidecar.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise VoiceError(f"voice config {sidecar} is not valid JSON: {exc}") from exc
        config = VoiceConfig.from_dict(data, where=str(sidecar))
        options = session_options
        if options is None:
            options = ort.SessionOptions()
            # Every sentence has new shapes, so memory patterns are never reused; with them on,
            # peak RSS climbed from 198 to 274 MB over 50 paragraphs, without them it stays ~218 MB.
            options.enable_mem_pattern = False
        if threads:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        try:
            session = ort.InferenceSession(str(model), sess_options=options,
                                           providers=providers or ["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for corrupt files
            raise VoiceError(f"voice model {model} could not be loaded by onnxruntime: {exc}") from exc
        return cls(session, config, espeak_data=espeak_data)

    @classmethod
    def from_session(cls, session: ort.InferenceSession, config: VoiceConfig | dict, **kwargs) -> Voice:
        """Use an onnxruntime session you built yourself (providers, options, a model in memory)."""
        if isinstance(config, dict):
            config = VoiceConfig.from_dict(config)
        return cls(session, config, **kwargs)

    # -- settings ---------------------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    def speaker_id(self, speaker: str | int | None) -> int | None:
        speakers = self.config.speakers
        if contract.SID not in self.input_names:
            if speaker not in (None, 0, "0"):
                raise VoiceError("this voice has a single speaker; do not pass a speaker")
            return None
        if speaker is None:
            return 0
        if str(speaker) in speakers:
            return speakers[str(speaker)]
        if isinstance(speaker, int) or str(speaker).isdigit():
            if int(speaker) in speakers.values() or (not speakers and int(speaker) >= 0):
                return int(speaker)
        valid = ", ".join(f"{name} ({sid})" for name, sid in speakers.items())
        raise VoiceError(f"unknown speaker {speaker!r}; this voice has: {valid}")

    def language_id(self, language: str | None) -> tuple[str | None, int | None]:
        languages = self.config.languages
        if contract.LANGID not in self.input_names:
            return language, None
        if language is None:
            language = next(iter(languages))
        if language not in languages:
            raise VoiceError(f"unknown language {language!r}; this voice has: {', '.join(languages)}")
        return language, languages[language]

    # -- the two inner steps ----------------------------------------------------------------------
    def text_to_ids(self, text: str, language: str | None = None) -> list[int]:
        return self.tokenizer.text_to_ids(text, language=language)

    def ids_to_audio(self, ids: list[int], syn: SynthesisConfig | None = None) -> np.ndarray:
        """Run the model on one utterance's ids; returns float32 samples."""
        syn = syn or SynthesisConfig()
        if not ids:
            return np.zeros(0, dtype=np.float32)
        c = self.config
        scales = np.array([
            c.noise_scale if syn.noise_scale is None else syn.noise_scale,
            c.length_scale if syn.length_scale is None else syn.length_scale,
            c.noise_w if syn.noise_w is None else syn.noise_w,
        ], dtype=np.float32)
        feeds = {
            contract.INPUT: np.asarray([ids], dtype=np.int64),
            contract.INPUT_LENGTHS: np.asarray([len(ids)], dtype=np.int64),
            contract.SCALES: scales,
        }
        sid = self.speaker_id(syn.speaker)
        if sid is not None:
            feeds[contract.SID] = np.asarray([sid], dtype=np.int64)
        _, langid = self.language_id(syn.language)
        if langid is not None:
            feeds[contract.LANGID] = np.asarray([langid], dtype=np.int64)
        outputs = self.session.run(None, feeds)
        audio = outputs[0].reshape(-1)
        if len(outputs) > 1 and contract.OUTPUT_LENGTHS in self.output_names:
            audio = audio[: int(outputs[1].reshape(-1)[0])]
        return audio.astype(np.float32, copy=False)

    # -- text to audio ----------------------------------------------------------------------------
    def synthesize(self, text: str | Iterable[str], speaker: str | int | None = None,
                   length_scale: float | None = None, noise_scale: float | None = None,
                   noise_w: float | None = None, language: str | None = None) -> Iterator[AudioChunk]:
        """Yield one ``AudioChunk`` per sentence, each as soon as it is ready.

        ``text`` may be a string or an iterable of lines (a file, stdin): only the current
        sentence is held in memory.
        """
        syn = SynthesisConfig(speaker, language, length_scale, noise_scale, noise_w)
        self.speaker_id(speaker)  # fail on a bad speaker before any work
        language, _ = self.language_id(language)
        lines = text.splitlines() if isinstance(text, str) else text
        for sentence in iter_sentences(lines):
            ids = self.text_to_ids(sentence, language=language)
            if not ids:
                logger.warning("nothing this voice can say in %r; skipped", sentence)
                continue
            yield AudioChunk(sentence, self.ids_to_audio(ids, syn), self.sample_rate)

    def synthesize_wav(self, text: str | Iterable[str], path: str | os.PathLike, **kwargs) -> Path:
        """Write all of ``text`` to a 16-bit mono WAV, sentence by sentence, atomically."""
        path = Path(path)
        with atomic_wav(path, self.sample_rate) as wav:
            spoken = 0
            for chunk in self.synthesize(text, **kwargs):
                wav.writeframes(chunk.pcm16())
                spoken += 1
            if spoken == 0:
                raise VoiceError("no text to speak: the text is empty or has nothing this voice can say")
        return path
