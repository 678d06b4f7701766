"""int8 variants of an exported voice: ``model.<preset>.onnx`` beside ``model.onnx``.

What the measurements on the real voice decided (``python -m exporter quantize`` records its own):

* The text encoder and the duration predictor decide every duration; any change to their
  arithmetic moves some ``ceil`` across a frame boundary. Their int8 compute, and even int8
  weight storage, changed the length of 18 of 25 dev sentences. fp16 storage is exact enough for
  the embedding and the attention layers (25/25 lengths), not for the feed-forward layers or the
  duration predictor (23/25), which stay fp32.
* onnxruntime's dynamic ConvInteger on x86 is 3x slower than fp32 with signed (per-channel)
  weights and slightly faster with unsigned per-tensor weights.
* The flow and the HiFi-GAN decoder only shape the sound, and they hold 61% of the weights and
  82% of the time: they are where int8 compute goes. int8 in the flow keeps DNSMOS (3.32/4.09
  against 3.28/4.07 for fp32, 5 sentences) though its SNR is only 5-7 dB; int8 in the decoder
  loses it (dynamic 3.15/3.43, static QDQ 2.71/2.90).
* In the decoder, int8 weights alone cost 0.2 dB log-mel; activations are the problem. Percentile
  calibration halves the damage of MinMax (decoder convs only: 1.9 vs 3.5 dB log-mel); quantizing
  the residual stream (Add) costs most (3.0-3.3 dB) but is what makes int8 fast (no Q/DQ glue);
  convs of the first two stages only: 0.56 dB, 1.10x. The last stage and conv_post are the most
  sensitive single layers (0.6-1.2 dB each).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import platform
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from exporter.errors import ExportError
from exporter.io import atomic_write_bytes
from runtime import contract

logger = logging.getLogger(__name__)

DURATION_MODULES = ("/text_encoder/encoder/ffn_layers", "/duration_predictor")
FP16_SAFE_MODULES = ("/text_encoder/emb", "/text_encoder/encoder/attn_layers", "/text_encoder/proj")
SOUND_MODULES = ("/flow", "/waveform_decoder")


@dataclass(frozen=True)
class QuantConfig:
    """How one variant is made; recorded verbatim in the sidecar."""

    preset: str
    method: str  # "dynamic" (ConvInteger, activations quantized at run time) or "static" (QDQ, calibrated)
    int8_modules: tuple[str, ...] = SOUND_MODULES  # node-name prefixes whose Convs compute in int8
    fp16_weight_modules: tuple[str, ...] = FP16_SAFE_MODULES  # weights stored fp16, computed fp32
    weight_type: str = "uint8"
    per_channel: bool = False
    reduce_range: bool = False
    op_types: tuple[str, ...] = ("Conv",)
    calibration_sentences: int = 0
    calibration_method: str = "minmax"
    target: str = "x86"


def machine_target() -> str:
    return "arm64" if platform.machine().lower() in ("aarch64", "arm64") else "x86"


def preset(name: str, target: str | None = None) -> QuantConfig:
    target = target or machine_target()
    if name == "dynamic":
        # x86: unsigned per-tensor weights are the only fast ConvInteger path (signed: 3x slower).
        # Only the flow: dynamic int8 in the decoder cost 0.6 DNSMOS P.808 on the real voice.
        return QuantConfig("dynamic", "dynamic", int8_modules=("/flow",), weight_type="uint8", per_channel=False,
                           target=target)
    if name == "static":
        # QDQ: signed symmetric per-channel weights, unsigned activations (VNNI / ARM dot-product path);
        # Add and LeakyRelu join so activations stay int8 between convolutions.
        return QuantConfig("static", "static", weight_type="int8", per_channel=True,
                           op_types=("Conv", "Add", "LeakyRelu", "Mul"), calibration_sentences=16,
                           calibration_method="percentile", target=target)
    raise ExportError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")


PRESETS = ("dynamic", "static")
DEFAULT_PRESET = "dynamic"

CALIBRATION_SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "She sells sea shells by the sea shore, and the shells she sells are surely seashells.",
    "How much wood would a woodchuck chuck if a woodchuck could chuck wood?",
    "Please call Stella and ask her to bring these things with her from the store.",
    "Six spoons of fresh snow peas, five thick slabs of blue cheese, and maybe a snack for her brother.",
    "We also need a small plastic snake and a big toy frog for the kids.",
    "A rainbow is a division of white light into many beautiful colors.",
    "Yesterday, at half past seven, the orchestra played a quiet piece by an unknown composer.",
    "Is this the right way to the station, or should we turn back?",
    "Wow! That was absolutely incredible.",
    "Numbers like 1,234 and dates like March 3rd, 2021 should be read clearly.",
    "The committee will meet again on Thursday to discuss the budget.",
    "Hmm, I am not sure that is what she meant.",
    "Every morning he walks his dog along the river before work.",
    "Thunder rolled across the valley as the storm approached the village.",
    "Could you spell your name for me, please?",
)


def _nodes(model, prefixes, op_types) -> list[str]:
    return [n.name for n in model.graph.node if n.name.startswith(prefixes) and n.op_type in op_types]


def _calibration_feeds(voice_dir: Path, count: int) -> list[dict]:
    """The calibration sentences as ONE utterance: onnxruntime's histogram calibrators (percentile,
    entropy) stack every tensor across feeds and fail when frame counts differ between sentences."""
    from runtime.voice import Voice

    voice = Voice.load(voice_dir)
    from exporter.verify import onnx_feeds

    ids = [i for text in CALIBRATION_SENTENCES[:count] for i in voice.text_to_ids(text)]
    return [onnx_feeds([ids], [0.0, voice.config.length_scale, 0.0],
                       sid=0 if contract.SID in voice.input_names else None,
                       langid=0 if contract.LANGID in voice.input_names else None)]


class _Reader:
    def __init__(self, feeds):
        self._it = iter(feeds)

    def get_next(self):
        return next(self._it, None)


def _quantize_int8(src: Path, dst: Path, cfg: QuantConfig, voice_dir: Path) -> None:
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

    model = onnx.load(str(src))
    nodes = _nodes(model, cfg.int8_modules, cfg.op_types)
    weight_type = QuantType.QInt8 if cfg.weight_type == "int8" else QuantType.QUInt8
    if cfg.method == "dynamic":
        quantize_dynamic(str(src), str(dst), op_types_to_quantize=list(cfg.op_types), nodes_to_quantize=nodes,
                         weight_type=weight_type, per_channel=cfg.per_channel, reduce_range=cfg.reduce_range)
        return
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[cfg.calibration_method]
    reader = _Reader(_calibration_feeds(voice_dir, cfg.calibration_sentences))
    with contextlib.redirect_stdout(io.StringIO()) as chatter:  # the calibrators print progress
        quantize_static(str(src), str(dst), reader, quant_format=QuantFormat.QDQ, op_types_to_quantize=list(cfg.op_types),
                        nodes_to_quantize=nodes, per_channel=cfg.per_channel, reduce_range=cfg.reduce_range,
                        activation_type=QuantType.QUInt8, weight_type=weight_type, calibrate_method=method,
                        extra_options={"WeightSymmetric": True, "ActivationSymmetric": False})
    logger.debug("calibration: %s", chatter.getvalue())


def _measure(voice_dir: Path, variant: Path, sentences: tuple[str, ...]) -> dict:
    """Zero-noise fidelity and speed against model.onnx on the calibration text (one process, alternating)."""
    import onnxruntime as ort

    from exporter.verify import snr_db
    from runtime.voice import SynthesisConfig, Voice

    voice = Voice.load(voice_dir)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.enable_mem_pattern = False
    fp32 = Voice.from_session(ort.InferenceSession(str(voice_dir / contract.MODEL_FILE), options), voice.config)
    int8 = Voice.from_session(ort.InferenceSession(str(variant), options), voice.config)
    zero = SynthesisConfig(noise_scale=0.0, noise_w=0.0)
    ids = [voice.text_to_ids(s) for s in sentences]
    same, snrs, times = 0, [], {"fp32": 0.0, "int8": 0.0}
    for item in ids:
        outs = {}
        for name, v in (("fp32", fp32), ("int8", int8)):
            start = time.perf_counter()
            outs[name] = v.ids_to_audio(item, zero)
            times[name] += time.perf_counter() - start
        if len(outs["fp32"]) == len(outs["int8"]):
            same += 1
            snrs.append(snr_db(outs["fp32"], outs["int8"]))
    return {"sentences": len(ids), "same_length": same, "median_snr_db": round(float(np.median(snrs)), 1) if snrs else None,
            "speed_vs_fp32": round(times["fp32"] / times["int8"], 2), "threads": 2}


def quantize_voice(voice_dir: Path, preset_name: str = DEFAULT_PRESET, *, target: str | None = None) -> Path:
    """Write ``voice_dir/model.<preset>.onnx`` and record how it was made in the sidecar."""
    import onnx

    from exporter.weight_only import store_weights_fp16

    voice_dir = Path(voice_dir)
    src = voice_dir / contract.MODEL_FILE
    sidecar_path = contract.sidecar_path(src)
    if not src.is_file() or not sidecar_path.is_file():
        raise ExportError(f"{voice_dir} is not an exported voice folder (needs {contract.MODEL_FILE} and its .json)")
    cfg = preset(preset_name, target)
    dst = voice_dir / f"model.{cfg.preset}.onnx"
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vits-edge-quant-", dir=voice_dir) as tmp:
        tmp = Path(tmp)
        staged = tmp / "model.onnx"
        _quantize_int8(src, staged, cfg, voice_dir)
        model = onnx.load(str(staged))
        store_weights_fp16(model, lambda node: node.name.startswith(cfg.fp16_weight_modules))
        onnx.save(model, str(staged))
        measured = _measure(voice_dir, staged, CALIBRATION_SENTENCES)
        measured.update(size_mb=round(staged.stat().st_size / 1e6, 2),
                        size_vs_fp32=round(staged.stat().st_size / src.stat().st_size, 3),
                        seconds=round(time.perf_counter() - start, 1))
        shutil.move(str(staged), dst)
    sidecar = json.loads(sidecar_path.read_text(encoding="utf-8"))
    sidecar.setdefault("variants", {})[dst.name] = {"config": asdict(cfg), "measured": measured}
    atomic_write_bytes(sidecar_path, (json.dumps(sidecar, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
    logger.info("wrote %s: %s", dst, measured)
    return dst
