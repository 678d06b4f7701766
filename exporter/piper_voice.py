"""``python -m exporter piper-voice DIR --out NAME.onnx``: a model of a voice folder as a Piper voice (NAME.onnx and
NAME.onnx.json in Piper's own config schema), for the tools Pi owners already run: piper-tts, Home Assistant's Piper
add-on, wyoming-piper.

Our graph takes what Piper's takes (``input``, ``input_lengths``, ``scales``, and ``sid`` for several speakers) and
returns the audio first, so any of a folder's models (fp32 or int8) runs in Piper as it is; only the config is
Piper's. Which config:

* a voice imported from Piper (``import-piper``, then ``export``) carries Piper's original config in its sidecar
  (``piper``): it is written as it came, so Piper phonemizes and numbers phonemes exactly as it did for the original;
* a Coqui voice whose tokenizer Piper's ``phoneme_id_map`` can express gets a config built from ours: espeak-ng
  phonemes, one character a symbol, one id each (Piper's ``^ _ p1 _ ... pN _ $``, its blank, bos and eos mapped to
  no id where the voice has none);
* anything else is refused with what Piper cannot express (characters instead of phonemes, multi-character
  phonemes, languages, d-vectors).

Piper phonemizes with its own espeak-ng build, so its ids can differ from our runtime's on some sentences (espeak-ng's
data version); fed the same ids, it speaks the same audio.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from exporter.errors import ExportError
from exporter.io import atomic_open, atomic_write_bytes
from runtime import contract

PAD, BOS, EOS = "_", "^", "$"  # Piper's (piper/const.py): fixed, whatever the voice's own symbols are
PIPER_KEY = "piper"  # the sidecar's copy of an imported voice's original Piper config
PIPER_CONFIG = "piper.onnx.json"  # that config, as import-piper leaves it beside the checkpoint's config.json


def original_config(checkpoint_config: Path) -> dict | None:
    """The Piper config ``import-piper`` kept beside a checkpoint's ``config.json``, if any."""
    path = Path(checkpoint_config).with_name(PIPER_CONFIG)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ExportError(f"{path} is not valid JSON ({exc}): re-run import-piper, or delete it") from exc


def _sidecar(voice_dir: Path) -> dict:
    path = contract.sidecar_path(Path(voice_dir) / contract.MODEL_FILE)
    if not path.is_file():
        raise ExportError(f"{voice_dir} is not an exported voice folder (needs {contract.MODEL_FILE} and its .json)")
    return json.loads(path.read_text(encoding="utf-8"))


def _specials(tok: dict) -> set[str]:
    """The tokenizer's blank, bos, eos and pad symbols (Piper names the first three its own way)."""
    return {tok[k]["symbol"] for k in ("blank", "bos", "eos", "pad") if tok.get(k)}


def cannot_express(sidecar: dict) -> str | None:
    """Why Piper's config cannot say how this voice's tokenizer makes ids; None when it can."""
    tok = sidecar["tokenizer"]
    phonemizer = tok.get("phonemizer") or {}
    if sidecar.get("languages"):
        return "it has several languages; a Piper voice has one"
    if sidecar.get("d_vector_dim"):
        return "its speakers are d-vectors; Piper has speaker ids only"
    if tok["type"] != "phonemes":
        return ("it reads characters through Coqui's text cleaners; Piper's 'text' phoneme type reads raw text "
                "without them")
    if not str(phonemizer.get("name", "")).startswith("espeak"):
        return f"its phonemizer is {phonemizer.get('name')!r}; Piper phonemizes with espeak-ng only"
    if tok["add_blank"] and not tok.get("blank"):
        return "it adds a blank between symbols but names none"
    ordinary = [s for s in tok["vocab"] if s not in _specials(tok)]
    multi = sorted({s for s in ordinary if len(s) != 1})
    if multi:
        return f"its symbols {multi[:5]} are several characters long; Piper maps one character to an id"
    taken = sorted({s for s in ordinary if s in (PAD, BOS, EOS)})
    if taken:
        return f"it uses {taken} as phonemes; Piper reserves them for blank, bos and eos"
    return None


def piper_layout(sidecar: dict) -> bool:
    """Whether the voice's ids are Piper's own layout, ``^ _ p1 _ ... pN _ $`` (a blank between symbols, bos and eos
    around them): what tools that hard-code it (sherpa-onnx's Piper frontend) reproduce."""
    tok = sidecar["tokenizer"]
    return cannot_express(sidecar) is None and bool(tok["add_blank"] and tok["use_eos_bos"] and tok.get("bos")
                                                    and tok.get("eos"))


def config_from_tokenizer(sidecar: dict, name: str) -> dict:
    """Piper's config for a Coqui voice (``cannot_express`` is None): each symbol's id as TTS assigns it (a repeated
    symbol takes its last index), the specials under Piper's names. Piper always writes ``^ _ p1 _ ... pN _ $``; a
    voice without bos/eos (Coqui's default) or without blanks maps those names to no id at all (piper-tts extends
    the ids by an empty list), which gives exactly Coqui's ``_ p1 _ ... pN _``."""
    why = cannot_express(sidecar)
    if why:
        raise ExportError(f"Piper cannot speak this voice as exported: {why}")
    tok = sidecar["tokenizer"]
    ids: dict[str, int] = {}
    for index, symbol in enumerate(tok["vocab"]):
        ids[symbol] = index  # the last index wins, as in TTS
    id_map = {PAD: [tok["blank"]["id"]] if tok["add_blank"] else [],
              BOS: [tok["bos"]["id"]] if tok["use_eos_bos"] and tok.get("bos") else [],
              EOS: [tok["eos"]["id"]] if tok["use_eos_bos"] and tok.get("eos") else []}
    specials = _specials(tok)
    id_map.update({symbol: [index] for symbol, index in ids.items() if symbol not in specials})
    speakers = sidecar.get("speakers") or {}
    return {
        "audio": {"sample_rate": sidecar["audio"]["sample_rate"]},
        "espeak": {"voice": tok["phonemizer"].get("language") or "en-us"},
        "phoneme_type": "espeak",
        "num_symbols": len(tok["vocab"]),
        "num_speakers": max(len(speakers), 1),
        "speaker_id_map": {speaker: int(i) for speaker, i in speakers.items()} if len(speakers) > 1 else {},
        "inference": dict(sidecar["inference"]),
        "phoneme_id_map": id_map,
        "language": {"code": tok["phonemizer"].get("language") or ""},
        "dataset": name,
        "vits_edge": {"made_from": "the exported voice's tokenizer"},
    }


def piper_config(sidecar: dict, name: str) -> dict:
    """The original Piper config an imported voice kept, else one built from the tokenizer (its dataset: ``name``)."""
    if isinstance(sidecar.get(PIPER_KEY), dict):
        return dict(sidecar[PIPER_KEY])
    return config_from_tokenizer(sidecar, name)


def default_model(sidecar: dict) -> str:
    """The model a folder speaks on every CPU: its default if that runs everywhere (weight storage), else fp32."""
    default = sidecar.get(contract.DEFAULT_KEY) or {}
    if default.get("model") and default.get("int8_class") is None:
        return default["model"]
    return contract.MODEL_FILE


def sherpa_tokens(id_map: dict[str, int]) -> str:
    """tokens.txt as sherpa-onnx reads it (csrc/piper-phonemize-lexicon.cc, ReadTokens): ``symbol id`` a line, a
    space as a bare id; one character a symbol."""
    return "".join(f"{symbol} {i}\n" if symbol != " " else f" {i}\n"
                   for symbol, i in sorted(id_map.items(), key=lambda kv: kv[1]) if symbol.strip() or symbol == " ")


def write_piper_voice(voice_dir: Path, out: Path, model: str | None = None) -> tuple[Path, Path, Path]:
    """``out`` (a copy of the folder's ``model``), ``out``.json in Piper's schema, and NAME.tokens.txt for
    sherpa-onnx (which reads the model's metadata and these tokens); returns the three paths."""
    voice_dir, out = Path(voice_dir), Path(out)
    sidecar = _sidecar(voice_dir)
    name = model or default_model(sidecar)
    src = voice_dir / name
    if not src.is_file():
        known = ", ".join(p.name for p in contract.voice_models(voice_dir) if p.is_file())
        raise ExportError(f"{src} not found: give one of this folder's models with --model ({known})")
    if out.suffix != ".onnx":
        raise ExportError(f"--out {out}: a Piper voice is NAME.onnx (its config goes beside it, NAME.onnx.json)")
    config = piper_config(sidecar, out.name.removesuffix(".onnx"))
    config_path = out.with_name(out.name + ".json")
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(out) as f, open(src, "rb") as source:
        shutil.copyfileobj(source, f)
    atomic_write_bytes(config_path, (json.dumps(config, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
    tokens = out.with_name(out.name.removesuffix(".onnx") + ".tokens.txt")
    first_ids = {symbol: ids[0] for symbol, ids in config["phoneme_id_map"].items() if ids}
    atomic_write_bytes(tokens, sherpa_tokens(first_ids).encode("utf-8"))
    return out, config_path, tokens
