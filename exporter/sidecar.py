"""The voice's sidecar JSON and the ONNX ``metadata_props`` that let a bare model explain itself."""

from __future__ import annotations

import json
from importlib import metadata

from exporter.piper_voice import piper_layout
from runtime import contract


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "unknown"


def tokenizer_spec(model, config) -> dict:
    """Everything needed to reproduce ``model.tokenizer.text_to_ids`` without TTS."""
    tok = model.tokenizer
    chars = tok.characters
    cleaner = config.text_cleaner if isinstance(config.text_cleaner, str) else None
    phonemizer = None
    if tok.use_phonemes:
        ph = tok.phonemizer
        phonemizer = {"name": ph.name(), "language": getattr(ph, "_language", None) or getattr(ph, "language", None)}
        punctuator = getattr(ph, "_punctuator", None)
        if punctuator is not None:  # BasePhonemizer keeps these private; the runtime restores punctuation the same way
            phonemizer["punctuations"] = punctuator.puncs
            phonemizer["keep_puncs"] = bool(getattr(ph, "_keep_puncs", True))

    def special(symbol, ident):
        return {"symbol": symbol, "id": int(ident)} if symbol else None

    return {
        "type": "phonemes" if tok.use_phonemes else "characters",
        "characters_class": type(chars).__module__ + "." + type(chars).__name__,
        "vocab": list(chars.vocab),  # index = id; where a symbol repeats, its last index wins (as in TTS)
        "characters": getattr(chars, "characters", None),
        "punctuations": getattr(chars, "punctuations", None),
        "pad": special(chars.pad, chars.pad_id) if chars.pad else None,
        "blank": special(chars.blank, chars.blank_id) if chars.blank else None,
        "bos": special(chars.bos, chars.bos_id) if chars.bos else None,
        "eos": special(chars.eos, chars.eos_id) if chars.eos else None,
        "add_blank": bool(tok.add_blank),
        "use_eos_bos": bool(tok.use_eos_bos),
        "cleaner": cleaner,
        "phonemizer": phonemizer,
    }


def build_sidecar(loaded, *, num_parameters: int, spec) -> dict:
    model, config = loaded.model, loaded.config
    args = model.args
    return {
        "format": contract.FORMAT,
        "schema_version": contract.SCHEMA_VERSION,
        "model": {"family": "vits", "source": "coqui", "num_parameters": num_parameters, "opset": spec.opset},
        "audio": {"sample_rate": int(config.audio.sample_rate)},
        "inference": {
            "noise_scale": float(args.inference_noise_scale),
            "length_scale": float(args.length_scale),
            "noise_w": float(args.inference_noise_scale_dp),
        },
        "inputs": {"names": spec.input_names, "min_tokens": 1},
        "tokenizer": tokenizer_spec(model, config),
        "speakers": loaded.speakers,
        "languages": loaded.languages,
        # a d-vector voice: the speakers above are rows of a table in the graph; sid -1 takes a caller's d-vector
        "d_vector_dim": spec.d_vector_dim,
        "exported_with": {
            "vits-edge": _version("vits-edge"),
            "coqui-tts": _version("coqui-tts"),
            "torch": _version("torch"),
            "onnx": _version("onnx"),
        },
    }


def metadata_props(sidecar: dict) -> dict[str, str]:
    """Key facts as ONNX metadata, including the keys sherpa-onnx reads for Coqui VITS models."""
    tok = sidecar["tokenizer"]

    def ident(key: str) -> str:
        return str(tok[key]["id"]) if tok.get(key) else "0"

    phon = tok.get("phonemizer") or {}
    # sherpa-onnx's Coqui frontend appends a ',' token before eos (csrc/piper-phonemize-lexicon.cc,
    # CoquiPhonemesToIds: "a longer pause"), so every length differs from ours; its Piper frontend makes exactly
    # our ids (^ _ p1 _ ... pN _ $) for a tokenizer Piper's layout can express: such voices are tagged Piper.
    piper_tagged = piper_layout(sidecar)
    props = {
        # sherpa-onnx (csrc/offline-tts-vits-model.cc) reads these for VITS models
        "model_type": "vits",
        "comment": "piper" if piper_tagged else "coqui",
        **({"voice": phon.get("language") or "", "has_espeak": "1"} if piper_tagged else {}),
        "sample_rate": str(sidecar["audio"]["sample_rate"]),
        "n_speakers": str(len(sidecar["speakers"])),
        "add_blank": str(int(tok["add_blank"])),
        "use_eos_bos": str(int(tok["use_eos_bos"])),
        "blank_id": ident("blank"),
        "bos_id": ident("bos"),
        "eos_id": ident("eos"),
        "pad_id": ident("pad"),
        "punctuation": " ".join(tok.get("punctuations") or ""),
        "language": phon.get("language") or "",
        "frontend": "characters" if tok["type"] == "characters" else "",
        # ours
        "vits_edge_schema_version": str(sidecar["schema_version"]),
        contract.METADATA_KEY: json.dumps(sidecar, ensure_ascii=False, sort_keys=True),
    }
    return props
