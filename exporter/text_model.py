"""``model.text.onnx``: a character voice as one file that takes a string and returns audio.

The text frontend graph (exporter/text_graph.py) is merged in front of the voice's model (``onnx.compose``): inputs
``text`` (and ``language``, where the voice has languages or its cleaner depends on one), ``scales`` and the speaker
inputs as in ``model.onnx``; outputs as ``model.onnx``, and ``token_ids``. Any onnxruntime binding (C, C#, Java, JavaScript, Python)
runs it with the onnxruntime-extensions library registered, and nothing else: no Python, no tokenizer.

Written only when the graph's ids are the runtime frontend's (which export already holds to TTS's tokenizer) on the
export's check sentences and a few hundred generated strings, in every language, and its audio is the model's. A
voice whose frontend cannot be a graph (phonemes, ``english_cleaners``) gets none, and the export says why.
"""

from __future__ import annotations

import json
import logging
import random
import unicodedata
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from exporter.errors import ExportError
from exporter.io import atomic_write_bytes
from exporter.text_graph import BY_LANGUAGE, text_graph, unsupported
from exporter.verify import FRONTEND_TEXTS, VERIFY_SENTENCES, quiet_vocabulary, snr_db
from runtime import contract
from runtime.text import tokenizer_from_spec

logger = logging.getLogger(__name__)

LIMITS = ("text after a NUL character is dropped (onnxruntime-extensions' string operators read C strings); "
          "Unicode tables (NFC, lower case, whitespace) of Unicode {unicode}")
TOKEN_IDS = "token_ids"  # an output of the text model: the ids the text became
# languages a language-dependent cleaner is checked in when the voice itself has none
CLEANER_LANGUAGES = (None, "en", "fr", "pt-BR", "it", "ca", "el", "de")


def text_model_name(model_name: str) -> str:
    """``model.onnx`` -> ``model.text.onnx``; ``model.auto.onnx`` -> ``model.auto.text.onnx``."""
    return model_name.removesuffix(".onnx") + contract.TEXT_MODEL_SUFFIX


def extensions_library() -> str | None:
    """onnxruntime-extensions' operator library, when the package (the export extra) is installed."""
    try:
        from onnxruntime_extensions import get_library_path
    except ImportError:
        return None
    return get_library_path()


def session(model: bytes, library: str):
    options = ort.SessionOptions()
    options.register_custom_ops_library(library)
    options.log_severity_level = 3  # "the initializer 'language' is also a graph input": it is its default
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def probe_texts(vocab: list[str], count: int = 300, seed: int = 0) -> list[str]:
    """Strings that exercise every step of a cleaner: the voice's own characters in both cases, decomposed and
    compatibility forms, Greek sigma, Turkish I, the symbols replace_symbols rewrites, every kind of whitespace,
    characters no vocabulary has. Never a NUL (see LIMITS)."""
    rng = random.Random(seed)
    own = [s for s in vocab if len(s) == 1 and s.isprintable()]
    odd = ["e\u0301", "n\u0303", "u\u0308\u0301", "a\u0330\u0301", "A\u030a", "\u212b", "\u037e", "\u0387", "\ufb01",
           "\u0130", "I", "\u03a3", "\u03c3\u03a3", "\u1f08", "\u1100\u1161\u11a8", "\u00df", "\u1e9e", "\u0141",
           "\u0152", "\u0401", "\u00c9COLE", *";:-&'<>()[]\"!?.,", "\t", "\n", "\u00a0", "\u3000", "\u2003", "\x1c",
           "\x85", "  ", "\U0001f600", "\u4e2d\u6587", "3", "1,000", "Dr."]
    texts = ["", " ", "\n\t ", "\u00a0"]
    for _ in range(count):
        pieces = []
        for _ in range(rng.randrange(1, 24)):
            roll = rng.random()
            piece = rng.choice(odd) if roll < 0.25 or not own else rng.choice(own)
            pieces.append(piece.upper() if 0.25 <= roll < 0.4 else piece)
            if rng.random() < 0.2:
                pieces.append(rng.choice([" ", " ", "  ", "\t", "\n", "\u00a0"]))
        texts.append("".join(pieces))
    return texts


def _verify(spec: dict, languages: dict, text_only: bytes, merged: bytes, voice_model: bytes, library: str) -> dict:
    """ids of the text graph == the runtime frontend's on every probe, in every language; the merged model's audio
    == the voice model's at zero noise. Returns what was checked; raises ExportError with the first difference."""
    tokenizer = tokenizer_from_spec(spec)
    front = session(text_only, library)
    # an input with a default is an overridable initializer to onnxruntime, not in get_inputs()
    takes_language = "language" in {i.name for i in front.get_overridable_initializers()}
    names = list(languages) or (list(CLEANER_LANGUAGES) if spec.get("cleaner") in BY_LANGUAGE else [None])
    texts = list(VERIFY_SENTENCES + FRONTEND_TEXTS) + probe_texts(spec["vocab"])
    for language in names:
        for text in texts:
            feeds = {"text": np.array([text], dtype=object)}
            if takes_language:
                feeds["language"] = np.array([language or ""], dtype=object)
            got = front.run(["input"], feeds)[0].reshape(-1).tolist()
            with quiet_vocabulary():
                want = tokenizer.text_to_ids(text, language or (next(iter(languages)) if languages else None))
            if got != want:
                raise ExportError(f"the text graph's ids differ from the runtime's for {text!r}"
                                  f"{f' in {language}' if language else ''}: please report this with your config")
    whole, voice = session(merged, library), session(voice_model, library)
    inputs = {i.name: i for i in voice.get_inputs()}
    worst = float("inf")
    for text in VERIFY_SENTENCES:
        language = next(iter(languages), None)
        with quiet_vocabulary():
            ids = tokenizer.text_to_ids(text, language)
        feeds = {contract.INPUT: np.array([ids], np.int64), contract.INPUT_LENGTHS: np.array([len(ids)], np.int64),
                 contract.SCALES: np.array([0.0, 1.0, 0.0], np.float32)}
        extra = {contract.SID: np.zeros(1, np.int64),
                 contract.LANGID: np.array([languages[language] if language else 0], np.int64)}
        if contract.SPEAKER_EMBEDDING in inputs:
            extra[contract.SPEAKER_EMBEDDING] = np.zeros((1, int(inputs[contract.SPEAKER_EMBEDDING].shape[1])),
                                                         np.float32)
        feeds.update({k: v for k, v in extra.items() if k in inputs})
        reference = voice.run([contract.OUTPUT], feeds)[0]
        text_feeds = {"text": np.array([text], dtype=object), contract.SCALES: feeds[contract.SCALES]}
        text_feeds.update({k: v for k, v in feeds.items() if k in (contract.SID, contract.SPEAKER_EMBEDDING)})
        audio = whole.run([contract.OUTPUT], text_feeds)[0]
        if audio.shape != reference.shape:
            raise ExportError(f"the text model made {audio.shape[-1]} samples for {text!r}, the voice "
                              f"{reference.shape[-1]}: please report this with your config")
        worst = min(worst, snr_db(reference.reshape(-1), audio.reshape(-1)))
    return {"texts": len(texts), "languages": [n or "" for n in names], "ids": "identical to the runtime's",
            "audio_snr_db": "identical" if worst == float("inf") else round(float(worst), 1)}


def build(voice_dir: Path, model_name: str, sidecar: dict) -> tuple[bytes | None, dict]:
    """The text model of ``voice_dir/model_name`` and its sidecar record, or (None, {"unavailable": why})."""
    spec = sidecar["tokenizer"]
    reason = unsupported(spec)
    if reason is None and extensions_library() is None:
        reason = "onnxruntime-extensions is not installed (pip install onnxruntime-extensions)"
    if reason:
        return None, {"unavailable": reason}
    logger.info("building %s and checking its ids and audio", text_model_name(model_name))
    voice = onnx.load(str(Path(voice_dir) / model_name))
    inputs = {i.name for i in voice.graph.input}
    languages = sidecar.get("languages") or {} if contract.LANGID in inputs else {}
    opset = next(o.version for o in voice.opset_import if o.domain in ("", "ai.onnx"))
    text = text_graph(spec, languages, opset=opset, ir_version=voice.ir_version)
    io_map = [(o.name, o.name) for o in text.graph.output]
    merged = onnx.compose.merge_models(text, voice, io_map=io_map, doc_string="text in, audio out (vits-edge)")
    # the ids the text became, for a caller who wants to see them (alignment, debugging)
    merged.graph.node.append(onnx.helper.make_node("Identity", [contract.INPUT], [TOKEN_IDS], name="text/token_ids"))
    merged.graph.output.append(onnx.helper.make_tensor_value_info(TOKEN_IDS, onnx.TensorProto.INT64, [1, "tokens"]))
    del merged.metadata_props[:]
    merged.metadata_props.extend(voice.metadata_props)
    data, text_only = merged.SerializeToString(), text.SerializeToString()
    verified = _verify(spec, languages, text_only, data, voice.SerializeToString(), extensions_library())
    record = {"file": text_model_name(model_name), "inputs": [i.name for i in merged.graph.input],
              "requires": "onnxruntime-extensions (its library registered: ai.onnx.contrib string operators)",
              "limits": LIMITS.format(unicode=unicodedata.unidata_version), "verified": verified}
    return data, record


def add(voice_dir: Path, model_name: str = contract.MODEL_FILE) -> dict:
    """Write ``voice_dir``'s text model of ``model_name`` and record it in the sidecar (``text_models``); a voice
    that cannot have one gets the reason recorded and logged. Returns the record."""
    voice_dir = Path(voice_dir)
    sidecar_path = contract.sidecar_path(voice_dir / contract.MODEL_FILE)
    sidecar = json.loads(sidecar_path.read_text(encoding="utf-8"))
    data, record = build(voice_dir, model_name, sidecar)
    if data is None:
        logger.debug("no %s: %s", text_model_name(model_name), record["unavailable"])
    else:
        atomic_write_bytes(voice_dir / record["file"], data)
    sidecar.setdefault("text_models", {})[model_name] = record
    atomic_write_bytes(sidecar_path, (json.dumps(sidecar, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
    return record
