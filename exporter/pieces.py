"""Write a voice's streaming pieces beside it, check them against the whole graph, record them.

For each model of a voice folder (``model.onnx`` and every int8 variant) ``pieces/<stem>.frontend.onnx``,
``.flow.onnx`` and ``.vocoder.onnx`` (exporter/split.py makes them). A piece that computes what another
model's does (int8 plans leave the text encoder and duration predictor fp32) shares that file. The
sidecar's ``streaming`` section says which pieces exist, what they need and what the check measured;
the runtime reads it (runtime/config.py).

The check: at zero noise, on the export's verification sentences, the pieces decoded in small chunks
(many boundaries) against the whole graph of the same model: same length always; at least 60 dB SNR
where the flow and vocoder compute in floating point. An int8 model cannot be held to that: *dynamic*
int8 measures each activation's range on the tensor it is given, so a chunk is quantized with its own
ranges; static int8 computes the same integers for a chunk as for the sentence, but a float rounding
before a quantization (a chunk's convolution sums in another order, or an fp32 flow feeds an int8
vocoder) can flip an int8 step, which the layers after it amplify (measured on the real voice: 6.7 dB
SNR for a dynamic flow, 58.5 dB for an fp32 flow before a static decoder, identical for static
throughout). There the chunked audio must be as close to the fp32 model's as the variant's own
whole-sentence audio is: ``int8_agreement``, log-mel distance within 0.05 dB, the benchmark's criterion too.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from exporter.errors import ExportError
from exporter.io import atomic_dir, atomic_write_bytes
from exporter.quality import logmel_distance_db
from exporter.split import architecture_from_graph, split
from exporter.verify import VERIFY_SENTENCES, quiet_vocabulary, snr_db
from runtime import chunking, contract
from runtime.pieces import Pieces
from runtime.voice import SynthesisConfig, Voice

logger = logging.getLogger(__name__)

CHECK_SCHEDULE = chunking.Schedule(first_frames=3, growth=2.0, max_frames=24)  # many boundaries per sentence
MIN_SNR_DB = 60.0
INT8_LOGMEL_SLACK_DB = 0.05
INT8_OPS = ("DynamicQuantizeLinear", "ConvInteger", "MatMulInteger", "QuantizeLinear", "DequantizeLinear",
            "QLinearConv", "QLinearMatMul")


def int8_agreement(pairs: list[tuple[float, float]]) -> dict:
    """Per sentence (log-mel dB of the whole-sentence int8 audio from fp32's, of the chunked int8 audio
    from fp32's): the chunks agree with the whole sentence when, sentence by sentence at the median,
    they are no farther from fp32 than the whole sentence is (within ``INT8_LOGMEL_SLACK_DB``)."""
    whole_db, chunked_db = (float(np.median([p[k] for p in pairs])) for k in (0, 1))
    excess = float(np.median([chunked - whole for whole, chunked in pairs]))
    return {"logmel_vs_fp32_whole_db": round(whole_db, 3), "logmel_vs_fp32_chunked_db": round(chunked_db, 3),
            "chunked_excess_db": round(excess, 3), "ok": excess <= INT8_LOGMEL_SLACK_DB}


def fp32_distances(ref32: np.ndarray, whole: np.ndarray, chunked: np.ndarray, sample_rate: int) -> tuple[float, float]:
    """Log-mel dB of an int8 variant's whole sentence and of its chunks from fp32's audio, over their common
    length: the budget lets a variant's sentence differ from fp32's by a frame or so (exporter/quant/budget.py),
    and chunks and whole are trimmed alike, so the comparison between them is fair."""
    n = min(len(ref32), len(whole), len(chunked))
    return (logmel_distance_db(ref32[:n], whole[:n], sample_rate), logmel_distance_db(ref32[:n], chunked[:n], sample_rate))


def streaming_section(architecture: dict) -> dict:
    chain = chunking.layers(architecture)
    return {"architecture": architecture, "receptive_field_frames": chunking.context(chain),
            "hop_length": chunking.hop_length(chain), "crop_points": chunking.crop_names(chain), "pieces": {}}


def _voice(model: Path, sidecar: dict):
    """The whole graph of ``model``, run as the runtime runs it (for ids and reference audio)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return Voice.from_session(ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"]), sidecar)


def check(folder: Path, model_name: str, sidecar: dict, record: dict, texts=None) -> dict:
    """Chunked pieces against the whole graph of ``model_name``; raises ExportError if they disagree."""
    folder = Path(folder)
    whole = _voice(folder / model_name, sidecar)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.add_session_config_entry("session.force_spinning_stop", "1")
    pieces = Pieces.load(folder, record, sidecar["streaming"]["architecture"], options=options,
                         providers=["CPUExecutionProvider"])
    ops = {n.op_type for piece in ("flow", "vocoder")
           for n in onnx.load(str(folder / record[piece]), load_external_data=False).graph.node}
    int8 = bool(ops & set(INT8_OPS))
    fp32 = _voice(folder / contract.MODEL_FILE, sidecar) if int8 and model_name != contract.MODEL_FILE else None
    language = next(iter(whole.config.languages), None)
    worst, worst_diff, mel = float("inf"), 0.0, []
    for text in texts or VERIFY_SENTENCES:
        with quiet_vocabulary():
            ids = whole.text_to_ids(text, language) or [0]
        syn = SynthesisConfig(noise_scale=0.0, noise_w=0.0, language=language)
        reference = whole.ids_to_audio(ids, syn)
        call = whole.resolve(syn)
        latents = pieces.latents(pieces.encode(call.feeds(ids)), 0.0)
        audio = np.concatenate([a for _, a, _ in pieces.stream(latents, CHECK_SCHEDULE, call.speaker)])
        if len(audio) != len(reference):
            raise ExportError(f"streaming pieces of {model_name}: {len(audio)} samples for {text!r}, the whole graph "
                              f"{len(reference)}; please report this with your voice")
        worst = min(worst, snr_db(reference, audio))
        worst_diff = max(worst_diff, float(np.abs(reference - audio).max()))
        if fp32 is not None:
            mel.append(fp32_distances(fp32.ids_to_audio(ids, syn), reference, audio, whole.sample_rate))
    result = {"sentences": len(texts or VERIFY_SENTENCES), "chunks": "first 3 frames, doubling to 24",
              "min_snr_db": round(float(worst), 1) if np.isfinite(worst) else "identical",
              "max_abs_diff": float(f"{worst_diff:.3g}"), "int8": int8}
    if worst >= MIN_SNR_DB:
        return result
    if not mel:
        raise ExportError(f"streaming pieces of {model_name}: chunked audio is only {worst:.1f} dB SNR from the whole "
                          f"graph (need >= {MIN_SNR_DB:.0f} dB); please report this with your voice")
    agreement = int8_agreement(mel)
    result.update({k: v for k, v in agreement.items() if k != "ok"})
    if not agreement["ok"]:
        raise ExportError(f"streaming pieces of {model_name}: chunked audio is {agreement['logmel_vs_fp32_chunked_db']}"
                          f" dB log-mel from fp32, the whole sentence {agreement['logmel_vs_fp32_whole_db']} dB (median): "
                          f"the int8 plan does not stream here; please report this with your voice")
    return result


def fingerprint(model) -> str:
    """What a graph computes, not how a tool serialized it: its nodes in any order and its weights' values
    (onnxruntime's quantizer re-sorts nodes and re-encodes the initializers of the parts it leaves alone)."""
    digest = hashlib.sha256()
    graph = model.graph
    for node in sorted(n.SerializeToString(deterministic=True) for n in graph.node):
        digest.update(node)
    for tensor in sorted(graph.initializer, key=lambda t: t.name):
        array = numpy_helper.to_array(tensor)
        digest.update(f"{tensor.name}:{array.dtype}:{array.shape}".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    for value in [*graph.input, *graph.output]:
        digest.update(value.SerializeToString(deterministic=True))
    return digest.hexdigest()


def write(folder: Path, model_name: str, sidecar: dict) -> dict:
    """Cut ``folder/model_name`` into pieces under ``folder/pieces/``, check them; return their record."""
    folder = Path(folder)
    section = sidecar["streaming"]
    made = dict(zip(contract.PIECES, split(onnx.load(str(folder / model_name)), section["architecture"])))
    (folder / contract.PIECES_DIR).mkdir(exist_ok=True)
    record = {}
    for piece, model in made.items():
        mine = fingerprint(model)
        same = [r[piece] for name, r in section["pieces"].items() if name != model_name and piece in r
                and (folder / r[piece]).is_file() and fingerprint(onnx.load(str(folder / r[piece]))) == mine]
        record[piece] = same[0] if same else contract.piece_name(model_name, piece)
        if not same:
            atomic_write_bytes(folder / record[piece], model.SerializeToString())
    record["inputs"] = {piece: [i.name for i in model.graph.input] for piece, model in made.items()}
    record["outputs"] = {piece: [o.name for o in model.graph.output] for piece, model in made.items()}
    record["verified"] = check(folder, model_name, sidecar, record)
    return record


def add(voice_dir: Path, model_name: str, sidecar_path: Path | None = None) -> dict | None:
    """Pieces for one model of a voice folder, recorded in its sidecar; None (with a warning) when the
    voice cannot stream (it is then spoken whole sentences at a time, as before)."""
    voice_dir = Path(voice_dir)
    sidecar_path = sidecar_path or contract.sidecar_path(voice_dir / contract.MODEL_FILE)
    sidecar = json.loads(sidecar_path.read_text(encoding="utf-8"))
    if "architecture" not in (sidecar.get("streaming") or {}):
        logger.warning("%s has no streaming architecture (%s): %s is spoken whole sentences at a time",
                       sidecar_path, (sidecar.get("streaming") or {}).get("unsupported", "an older export"), model_name)
        return None
    sidecar["streaming"].setdefault("pieces", {})
    try:
        record = write(voice_dir, model_name, sidecar)
    except ExportError:
        _remove_unshared(voice_dir, model_name, sidecar)
        raise
    sidecar["streaming"]["pieces"][model_name] = record
    atomic_write_bytes(sidecar_path, (json.dumps(sidecar, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
    return record


def _remove_unshared(voice_dir: Path, model_name: str, sidecar: dict) -> None:
    kept = {r[p] for name, r in sidecar["streaming"]["pieces"].items() if name != model_name for p in contract.PIECES}
    for piece in contract.PIECES:
        path = contract.piece_name(model_name, piece)
        if path not in kept:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(voice_dir / path)


def split_folder(voice_dir: Path) -> list[str]:
    """(Re)make the pieces of every model in an exported voice folder; an older export gets the
    architecture read from its graph."""
    voice_dir = Path(voice_dir)
    sidecar_path = contract.sidecar_path(voice_dir / contract.MODEL_FILE)
    if not sidecar_path.is_file():
        raise ExportError(f"{voice_dir} is not an exported voice folder (needs {contract.MODEL_FILE} and its .json); "
                          "for a Piper voice give its VOICE.onnx and an output folder")
    sidecar = json.loads(sidecar_path.read_text(encoding="utf-8"))
    if "architecture" not in (sidecar.get("streaming") or {}):
        arch = architecture_from_graph(onnx.load(str(voice_dir / contract.MODEL_FILE), load_external_data=False))
        sidecar["streaming"] = streaming_section(arch)
        atomic_write_bytes(sidecar_path, (json.dumps(sidecar, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
    models = [p.name for p in contract.voice_models(voice_dir)]
    for name in models:
        add(voice_dir, name)
    records = json.loads(sidecar_path.read_text(encoding="utf-8"))["streaming"]["pieces"].values()
    kept = {Path(r[p]).name for r in records for p in contract.PIECES}
    for stale in (voice_dir / contract.PIECES_DIR).glob("*.onnx"):  # pieces of an older layout
        if stale.name not in kept:
            stale.unlink()
    return models


def split_piper(voice: Path, out_dir: Path, *, force: bool = False) -> Path:
    """A Piper ``VOICE.onnx`` (+ ``.onnx.json``) -> ``out_dir`` holding both, unchanged but for a
    ``streaming`` section in the json (piper-tts ignores it), and the pieces."""
    voice = Path(voice)
    config = contract.sidecar_path(voice)
    if not voice.is_file() or not config.is_file():
        raise ExportError(f"{voice} and {config.name} beside it are needed (a Piper voice)")
    data = json.loads(config.read_text(encoding="utf-8"))
    if "phoneme_id_map" not in data:
        raise ExportError(f"{config} is not a Piper voice config (no phoneme_id_map)")
    arch = architecture_from_graph(onnx.load(str(voice), load_external_data=False))
    with atomic_dir(Path(out_dir), force=force) as tmp:
        shutil.copyfile(voice, tmp / voice.name)
        data["streaming"] = streaming_section(arch)
        (tmp / config.name).write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        add(tmp, voice.name, tmp / config.name)
    return Path(out_dir)
