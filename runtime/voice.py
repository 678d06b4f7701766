"""``Voice``: an exported (or Piper) VITS voice that turns text into audio with onnxruntime.

A voice exported with its streaming pieces (``pieces/``, see runtime/pieces.py) is run as two
sessions, the frontend, the flow and the vocoder, and its audio comes in chunks as they are decoded
(``Voice.stream``); ``Voice.synthesize`` joins each sentence's chunks. A voice without them (an
older export, a Piper voice not split) runs its whole graph, one sentence at a time.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnxruntime as ort

from runtime import chunking, contract
from runtime.alignment import Alignment, align
from runtime.chunking import STREAM, WHOLE
from runtime.config import NothingToSay, SynthesisConfig, VoiceConfig, VoiceError, read_sidecar, resolve
from runtime.pieces import Encoded, Pieces
from runtime.sentences import bounded_by_ids, iter_sentences
from runtime.text import piper_tokenizer, tokenizer_from_spec
from runtime.wav import atomic_wav, to_pcm16

__all__ = ["STREAM", "WHOLE", "AudioChunk", "NothingToSay", "Resolved", "SynthesisConfig", "Voice", "VoiceConfig",
           "VoiceError"]

logger = logging.getLogger(__name__)


_ARENA: list[bool] = []


def _shared_arena() -> bool:
    """Register, once per process, the CPU arena that sessions asking for ``use_env_allocators`` share."""
    if not _ARENA:
        try:
            info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
            ort.create_and_register_allocator(info, ort.OrtArenaCfg(0, -1, -1, -1))
            _ARENA.append(True)
        except Exception as exc:  # an older onnxruntime, or one registered by the application: not ours to share
            logger.debug("no shared onnxruntime arena: %s", exc)
            _ARENA.append(False)
    return _ARENA[0]


@dataclass
class AudioChunk:
    """Audio of one sentence, or of a piece of it when streaming: float32 samples in [-1, 1]."""

    text: str  # the sentence
    audio: np.ndarray
    sample_rate: int
    sentence: int = 0  # which sentence of the call (0, 1, ...)
    offset: int = 0  # position of the first sample in its sentence
    final: bool = True  # the sentence's last chunk
    alignment: Alignment | None = None  # the sentence's timings (on its first chunk), when asked for

    @property
    def seconds(self) -> float:
        return len(self.audio) / self.sample_rate

    def pcm16(self) -> bytes:
        return to_pcm16(self.audio)


@dataclass(frozen=True)
class Resolved:
    """A SynthesisConfig resolved against one voice, once a call: every default filled in (``syn``), and the
    graph inputs it becomes (the scales, the speaker's inputs, the language id), and the call's noise generator
    (from ``seed``, else the voice's)."""

    syn: SynthesisConfig  # no None left but for speaker (a single-speaker voice), seed and speaker_embedding
    scales: np.ndarray  # float32 [3]: noise_scale, length_scale, noise_w (contract.SCALES)
    speaker: dict[str, np.ndarray]  # contract.SPEAKER_INPUTS the voice takes; empty for a single speaker
    langid: np.ndarray | None
    rng: np.random.Generator

    def feeds(self, ids: list[int]) -> dict[str, np.ndarray]:
        """The whole graph's (or the frontend's) inputs for one utterance's ids."""
        feeds = {contract.INPUT: np.asarray([ids], dtype=np.int64),
                 contract.INPUT_LENGTHS: np.asarray([len(ids)], dtype=np.int64),
                 contract.SCALES: self.scales, **self.speaker}
        if self.langid is not None:
            feeds[contract.LANGID] = self.langid
        return feeds


class Voice:
    """Text -> sentences -> ids -> audio (in chunks when the voice has its streaming pieces).

    Every synthesis takes a ``SynthesisConfig`` (``syn_config=``; ``None`` fields are the voice's defaults) and,
    as conveniences, its fields as keywords (``speaker="bob", length_scale=1.1``), which override it."""

    def __init__(self, session: ort.InferenceSession | None, config: VoiceConfig, *, pieces: Pieces | None = None,
                 espeak_data: str | None = None):
        if session is None and pieces is None:
            raise VoiceError("a Voice needs an onnxruntime session of the whole model or its streaming pieces")
        self.session = session
        self.pieces = pieces
        self.config = config
        self.model_path: Path | None = None  # the file it speaks (Voice.load sets it)
        self.input_names = pieces.input_names if pieces else {i.name for i in session.get_inputs()}
        self.output_names = [] if session is None else [o.name for o in session.get_outputs()]
        if config.source == "piper":
            self.tokenizer = piper_tokenizer(config.tokenizer, espeak_data=espeak_data)
        else:
            self.tokenizer = tokenizer_from_spec(config.tokenizer, espeak_data=espeak_data)
        self._rng = np.random.default_rng()
        # every speaker by its exact name and by its label (VoiceConfig.speaker_labels)
        self._speaker_names = {**config.speaker_labels(), **config.speakers}
        self._warned_whole = False

    @classmethod
    def load(cls, path: str | os.PathLike, *, variant: str | None = None, threads: int | None = None,
             providers: list[str] | None = None, session_options: ort.SessionOptions | None = None,
             espeak_data: str | None = None, streaming: bool = True) -> Voice:
        """Load a voice folder, or a ``.onnx`` file with its ``.onnx.json`` beside it.

        A folder speaks its default model (``runtime.config.default_model``: the variant ``quantize`` made its
        default, where this CPU is of the class it was planned for, else ``model.onnx``), or the one ``variant``
        names (``"fp32"``, ``"auto"``, ``"static"``...); ``voice.model_path`` says which. With ``streaming`` (the
        default) a model that has streaming pieces is run in pieces (and its whole graph is not loaded);
        ``streaming=False`` runs the whole graph.
        """
        model, sidecar, why = resolve(Path(path), variant)
        logger.debug("speaking %s (%s)", model, why)
        config = read_sidecar(sidecar)
        options = session_options
        if options is None:
            options = ort.SessionOptions()
            # Every sentence has new shapes, so memory patterns are never reused; with them on,
            # peak RSS climbed from 198 to 274 MB over 50 paragraphs, without them it stays ~218 MB.
            options.enable_mem_pattern = False
        if threads:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        providers = providers or ["CPUExecutionProvider"]
        record = config.pieces(model.name) if streaming else None
        if record is not None:
            missing = [record[p] for p in contract.PIECES if not (model.parent / record[p]).is_file()]
            if missing:
                logger.warning("%s lists streaming pieces that are not there (%s): speaking whole sentences; "
                               "re-create them with `python -m exporter split %s`", sidecar, ", ".join(missing),
                               model.parent)
                record = None
        if record is not None:
            if session_options is None:
                # Two sessions take turns: each pool stops spinning when its run returns, or the idle one
                # spins on the cores the other needs (first audio 29% of the sentence's time instead of 20%).
                options.add_session_config_entry("session.force_spinning_stop", "1")
                # ... and they share one memory arena, so the pieces' peaks do not add
                # up: a 400-character piece peaked at 193 MB RSS instead of 211.
                if _shared_arena():
                    options.add_session_config_entry("session.use_env_allocators", "1")
            try:
                pieces = Pieces.load(model.parent, record, config.architecture(), options=options, providers=providers)
            except VoiceError:
                raise
            except Exception as exc:  # onnxruntime raises its own exception types for corrupt files
                raise VoiceError(f"the streaming pieces of {model} could not be loaded ({exc}); re-create them "
                                 f"with `python -m exporter split {model.parent}`") from exc
            voice = cls(None, config, pieces=pieces, espeak_data=espeak_data)
        else:
            try:
                session = ort.InferenceSession(str(model), sess_options=options, providers=providers)
            except Exception as exc:  # onnxruntime raises its own exception types for corrupt files
                raise VoiceError(f"voice model {model} could not be loaded by onnxruntime: {exc}") from exc
            voice = cls(session, config, espeak_data=espeak_data)
        voice.model_path = model
        return voice

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

    @property
    def streams(self) -> bool:
        """Whether audio comes in chunks of a sentence (the voice has its streaming pieces)."""
        return self.pieces is not None

    def speaker_id(self, speaker: str | int | None) -> int | None:
        """The id of a speaker given by name or id; 0 for a multi-speaker voice's default, None for a single-speaker
        voice. A name matches as written or as its label (``VoiceConfig.speaker_labels``: VCTK's speaker_ids.json
        has a name ending in a newline)."""
        speakers = self.config.speakers
        if contract.SID not in self.input_names:
            if speaker not in (None, 0, "0"):
                raise VoiceError("this voice has a single speaker; do not pass a speaker")
            return None
        if speaker is None:
            return 0
        if str(speaker) in self._speaker_names:
            return self._speaker_names[str(speaker)]
        if isinstance(speaker, int) or str(speaker).isdigit():
            if int(speaker) in speakers.values() or (not speakers and int(speaker) >= 0):
                return int(speaker)
        valid = ", ".join(f"{name} ({sid})" for name, sid in self.config.speaker_labels().items())
        raise VoiceError(f"unknown speaker {speaker!r}; this voice has: {valid}")

    @property
    def d_vector_dim(self) -> int:
        """The length of the speaker embedding a d-vector voice accepts (``speaker_embedding=``); 0 for others."""
        return self.config.d_vector_dim if contract.SPEAKER_EMBEDDING in self.input_names else 0

    def _speaker_inputs(self, syn: SynthesisConfig) -> dict[str, np.ndarray]:
        """The speaker inputs (``contract.SPEAKER_INPUTS``) for ``syn``: a speaker's id, or a d-vector voice's
        caller-given embedding (sid -1); empty for a single-speaker voice."""
        embedding = syn.speaker_embedding
        if embedding is not None:
            if not self.d_vector_dim:
                raise VoiceError("this voice takes no speaker embedding (only d-vector voices such as YourTTS do); "
                                 "choose a speaker by name")
            if syn.speaker is not None:
                raise VoiceError("give a speaker or a speaker embedding, not both")
            try:
                vector = np.asarray(embedding, dtype=np.float32).reshape(-1)
            except (TypeError, ValueError) as exc:
                raise VoiceError(f"the speaker embedding must be {self.d_vector_dim} numbers: {exc}") from exc
            if vector.size != self.d_vector_dim or not np.all(np.isfinite(vector)) or not np.any(vector):
                raise VoiceError(f"the speaker embedding must be {self.d_vector_dim} finite numbers, not all zero "
                                 f"(got {vector.size})")
            return {contract.SID: np.asarray([-1], dtype=np.int64), contract.SPEAKER_EMBEDDING: vector[None, :]}
        sid = self.speaker_id(syn.speaker)
        if sid is None:
            return {}
        feeds = {contract.SID: np.asarray([sid], dtype=np.int64)}
        if self.d_vector_dim:
            feeds[contract.SPEAKER_EMBEDDING] = np.zeros((1, self.d_vector_dim), dtype=np.float32)  # unread: sid >= 0
        return feeds

    def language_id(self, language: str | None) -> tuple[str | None, int | None]:
        languages = self.config.languages
        if contract.LANGID not in self.input_names:
            return language, None
        if language is None:
            language = next(iter(languages))
        if language not in languages:
            raise VoiceError(f"unknown language {language!r}; this voice has: {', '.join(languages)}")
        return language, languages[language]

    def resolve(self, syn_config: SynthesisConfig | None = None, **settings) -> Resolved:
        """``syn_config`` (with ``settings`` on top) against this voice: its defaults filled in, the speaker and
        language checked (a VoiceError says what this voice has), and the graph inputs they become."""
        if syn_config is not None and not isinstance(syn_config, SynthesisConfig):
            raise TypeError(f"syn_config must be a SynthesisConfig, not {type(syn_config).__name__} (speaker, "
                            f"scales and seed are keywords: speaker=..., length_scale=...)")
        syn = SynthesisConfig.of(syn_config, **settings)
        c = self.config
        speaker = self._speaker_inputs(syn)
        language, langid = self.language_id(syn.language)
        syn = replace(syn, language=language, **{  # a scale of 0 is a value, not "unset"
            name: getattr(c, name) if getattr(syn, name) is None else getattr(syn, name) for name in syn.SCALES})
        scales = np.array([syn.noise_scale, syn.length_scale, syn.noise_w], dtype=np.float32)
        rng = self._rng if syn.seed is None else np.random.default_rng(syn.seed)
        return Resolved(syn, scales, speaker, None if langid is None else np.asarray([langid], dtype=np.int64), rng)

    # -- the inner steps --------------------------------------------------------------------------
    def text_to_ids(self, text: str, language: str | None = None) -> list[int]:
        return self.tokenizer.text_to_ids(text, language=language)

    def feeds(self, ids: list[int], syn_config: SynthesisConfig | None = None) -> dict[str, np.ndarray]:
        """The graph's inputs for one utterance's ids (the exporter calibrates and checks pieces with them)."""
        return self.resolve(syn_config).feeds(ids)

    def ids_to_audio(self, ids: list[int], syn_config: SynthesisConfig | None = None) -> np.ndarray:
        """Run the model on one utterance's ids; returns float32 samples."""
        return self._audio(ids, self.resolve(syn_config))

    def ids_to_stream(self, ids: list[int], syn_config: SynthesisConfig | None = None,
                      chunker: chunking.Schedule | chunking.Pacer = STREAM) -> Iterator[tuple[int, np.ndarray, bool]]:
        """``(sample offset, audio, last)`` chunks of one utterance, each as soon as it is decoded, sized by
        ``chunker`` (a fixed ``Schedule``, or a ``Pacer``). A voice without streaming pieces gives the whole
        utterance as one chunk (and says so once)."""
        return self._chunks_of(ids, self.resolve(syn_config), chunker)

    def _audio(self, ids: list[int], call: Resolved) -> np.ndarray:
        if not ids:
            return np.zeros(0, dtype=np.float32)
        if self.pieces is not None:
            parts = [audio for _, audio, _ in self._chunks_of(ids, call, WHOLE)]
            return np.concatenate(parts).astype(np.float32, copy=False)
        outputs = self.session.run(None, call.feeds(ids))
        audio = outputs[0].reshape(-1)
        if len(outputs) > 1 and contract.OUTPUT_LENGTHS in self.output_names:
            audio = audio[: int(outputs[1].reshape(-1)[0])]
        return audio.astype(np.float32, copy=False)

    def _chunks_of(self, ids: list[int], call: Resolved, chunker, encoded: Encoded | None = None
                   ) -> Iterator[tuple[int, np.ndarray, bool]]:
        if not ids:
            return
        if self.pieces is None:
            self._say_whole()
            yield 0, self._audio(ids, call), True
            return
        if encoded is None:
            encoded = self.pieces.encode(call.feeds(ids), call.rng)
        latents = self.pieces.latents(encoded, float(call.scales[0]), call.rng)
        yield from self.pieces.stream(latents, chunker, call.speaker)

    def _say_whole(self) -> None:
        if not self._warned_whole:
            logger.warning("this voice has no streaming pieces: each sentence comes whole (make them with "
                           "`python -m exporter split VOICE`)")
            self._warned_whole = True

    def alignment(self, sentence: str, ids: list[int], encoded: Encoded, language: str | None = None) -> Alignment:
        frames = encoded.durations.tolist()
        # words as written when the phonemes have as many, else as the cleaners left them ("3:30" -> "three thirty")
        return align(ids, frames, self.tokenizer.symbols(), self.pieces.hop_length, self.sample_rate,
                     encoded.frames * self.pieces.hop_length, [sentence.split(), self.tokenizer.words(sentence, language)])

    # -- text to audio ----------------------------------------------------------------------------
    def stream(self, text: str | Iterable[str], syn_config: SynthesisConfig | None = None, *,
               schedule: chunking.Schedule = STREAM, paced: bool = True, alignments: bool = False,
               **settings) -> Iterator[AudioChunk]:
        """Yield audio as it is made: chunks of each sentence, each knowing its sentence and sample offset.

        ``syn_config`` (and ``settings``, its fields as keywords: ``speaker``, ``language``, ``length_scale``,
        ``noise_scale``, ``noise_w``, ``seed``, ``speaker_embedding``) say how to speak. The first chunk is
        ``schedule.first_frames`` long; then (``paced``) each chunk is as large as the audio already made pays for,
        assuming it is played as it comes (``chunking.Pacer``), within the schedule's growth and largest chunk;
        ``paced=False`` follows the schedule as it is. With ``alignments`` the first chunk of every sentence carries
        the sentence's phoneme and word timings. ``text`` may be a string or an iterable of lines (a file, stdin):
        only the current sentence is held in memory. A voice without streaming pieces gives whole sentences (and
        says so once)."""
        call = self.resolve(syn_config, **settings)  # a bad speaker or language fails here, before any work
        chunker = schedule
        if paced and self.pieces is not None:
            chunker = chunking.Pacer(schedule, self.pieces.hop_length / self.sample_rate)
        return self._chunks(text, call, chunker, alignments, whole_ok=False)

    def _chunks(self, text, call: Resolved, chunker, alignments: bool, whole_ok: bool) -> Iterator[AudioChunk]:
        if alignments and self.pieces is None:
            raise VoiceError("phoneme timings need the voice's streaming pieces, which this voice lacks: re-export "
                             "it, or run `python -m exporter split VOICE` on it")
        language = call.syn.language
        lines = text.splitlines() if isinstance(text, str) else text
        def ids_of(text: str) -> list[int]:
            return self.text_to_ids(text, language=language)

        pieces = (bounded for sentence in iter_sentences(lines) for bounded in bounded_by_ids(sentence, ids_of))
        for index, (sentence, ids) in enumerate(pieces):
            if not ids:
                logger.warning("nothing this voice can say in %r; skipped", sentence)
                continue
            timing = None
            if self.pieces is None:
                if not whole_ok:
                    self._say_whole()
                parts = iter([(0, self._audio(ids, call), True)])
            else:
                encoded = self.pieces.encode(call.feeds(ids), call.rng)
                if alignments:
                    timing = self.alignment(sentence, ids, encoded, language)
                parts = self._chunks_of(ids, call, chunker, encoded)
            for offset, audio, last in parts:
                yield AudioChunk(sentence, audio.astype(np.float32, copy=False), self.sample_rate, index, offset,
                                 last, timing if offset == 0 else None)

    def synthesize(self, text: str | Iterable[str], syn_config: SynthesisConfig | None = None, *,
                   alignments: bool = False, **settings) -> Iterator[AudioChunk]:
        """Yield one ``AudioChunk`` per sentence, each as soon as it is ready (see ``stream`` for the rest)."""
        chunks = self._chunks(text, self.resolve(syn_config, **settings), WHOLE, alignments, whole_ok=True)
        return self._sentences(chunks)

    @staticmethod
    def _sentences(chunks: Iterator[AudioChunk]) -> Iterator[AudioChunk]:
        sentence: list[AudioChunk] = []
        for chunk in chunks:
            sentence.append(chunk)
            if chunk.final:
                first = sentence[0]
                audio = first.audio if len(sentence) == 1 else np.concatenate([c.audio for c in sentence])
                yield AudioChunk(first.text, audio, first.sample_rate, first.sentence, 0, True, first.alignment)
                sentence = []

    def synthesize_wav(self, text: str | Iterable[str], path: str | os.PathLike,
                       syn_config: SynthesisConfig | None = None, *, stream: bool = True, alignments: bool = False,
                       on_chunk=None, **settings) -> Path:
        """Write all of ``text`` to a 16-bit mono WAV, chunk by chunk as each is made (``stream=False``:
        sentence by sentence), atomically: the file appears complete or not at all. A file is read when it
        is complete, so its chunks are WHOLE's (fixed: memory stays flat, nothing is decoded twice)."""
        if stream and self.streams:
            chunks = self.stream(text, syn_config, schedule=WHOLE, paced=False, alignments=alignments, **settings)
        else:
            chunks = self.synthesize(text, syn_config, alignments=alignments, **settings)
        return self.write_wav(chunks, path, on_chunk=on_chunk)

    def write_wav(self, chunks: Iterable[AudioChunk], path: str | os.PathLike, *, on_chunk=None) -> Path:
        """Write ``chunks`` (from ``stream`` or ``synthesize``) to a WAV as they come; ``on_chunk`` is called
        with each one written (for timings, progress). Nothing to write is ``NothingToSay``, and no file."""
        path = Path(path)
        with atomic_wav(path, self.sample_rate) as wav:
            spoken = 0
            for chunk in chunks:
                wav.writeframes(chunk.pcm16())
                spoken += 1
                if on_chunk is not None:
                    on_chunk(chunk)
            if spoken == 0:
                raise NothingToSay("no text to speak: the text is empty or has nothing this voice can say")
        return path
