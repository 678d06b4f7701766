"""Apply a plan to ``model.onnx``: polyphase upsamplers, static QDQ, dynamic int8, weight storage."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

import onnx
from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

from exporter.quant import polyphase
from exporter.quant.calibration import calibrate, quiet_quantizer
from exporter.quant.half import compute_fp16
from exporter.quant.plans import FP16, QDQ_OPS, QuantConfig
from exporter.quant.sensitivity import bypass
from exporter.quant.storage import store_weights_fp16, store_weights_int8
from exporter.quant.units import DURATION_UNITS, node_units
from runtime import contract


def build(voice_dir: Path, cfg: QuantConfig, dst: Path, cache: Path | None = None) -> None:
    """Write the variant ``cfg`` of ``voice_dir/model.onnx`` to ``dst``."""
    with quiet_quantizer():
        _build(Path(voice_dir) / contract.MODEL_FILE, voice_dir, cfg, dst, cache)


def _build(src: Path, voice_dir: Path, cfg: QuantConfig, dst: Path, cache: Path | None) -> None:
    model = onnx.load(str(src))
    units = node_units(model)
    # Upsamplers of int8 stages become polyphase Convs (see exporter/quant/polyphase.py): int8 kernels exist
    # for them in that form, and no ConvTranspose is left between a DequantizeLinear and a
    # QuantizeLinear for onnxruntime to quantize behind our back.
    # fp16 stages too: onnxruntime has no fp16 ConvTranspose.
    polyphase.rewrite(model, lambda node: cfg.option(units.get(node.name)) in (*QDQ_OPS, FP16))
    units = node_units(model)
    option = {name: cfg.option(unit) for name, unit in units.items()}
    static = {o: [n.name for n in model.graph.node if option.get(n.name) == o and
                  (n.op_type in QDQ_OPS[o] or n.name.endswith(polyphase.SHUFFLE_SUFFIXES))]
              for o in QDQ_OPS}
    dynamic = [n.name for n in model.graph.node if option.get(n.name) == "dynamic" and n.op_type == "Conv"]
    with tempfile.TemporaryDirectory(prefix=".vits-edge-quant-", dir=dst.parent) as tmp:
        current = Path(tmp) / "fp32.onnx"
        onnx.save(model, str(current))
        if any(static.values()):
            with contextlib.ExitStack() as stack:
                if cache is None:
                    cache = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "ranges.json"
                calibrate(voice_dir, cfg, cache)
                out = Path(tmp) / "static.onnx"
                quantize_static(str(current), str(out), None, quant_format=QuantFormat.QDQ,
                                op_types_to_quantize=sorted({op for o in QDQ_OPS for op in QDQ_OPS[o]}
                                                            | {"Reshape", "Transpose"}),
                                nodes_to_quantize=[n for names in static.values() for n in names], per_channel=True,
                                activation_type=QuantType.QUInt8,
                                weight_type=QuantType.QInt8 if cfg.weight_type == "int8" else QuantType.QUInt8,
                                calibrate_method=CalibrationMethod.Percentile, calibration_cache_path=str(cache),
                                extra_options={"WeightSymmetric": True, "ActivationSymmetric": False})
                quantized = onnx.load(str(out))
                changed = (keep_float_inputs(quantized, lambda name: units.get(name, "").startswith(DURATION_UNITS))
                           + bypass(quantized, cfg.keep_fp32))
                if changed:
                    onnx.save(quantized, str(out))
                current = out
        if dynamic:
            # x86: unsigned per-tensor weights are the only fast ConvInteger path (signed per-channel: 3x slower).
            out = Path(tmp) / "dynamic.onnx"
            quantize_dynamic(str(current), str(out), op_types_to_quantize=["Conv"], nodes_to_quantize=dynamic,
                             weight_type=QuantType.QUInt8, per_channel=False)
            current = out
        model = onnx.load(str(current))
        compute_fp16(model, lambda node: option.get(node.name) == FP16)
        store_weights_fp16(model, lambda node: option.get(node.name) == "fp16w")
        store_weights_int8(model, lambda node: option.get(node.name) == "int8w")
        onnx.save(model, str(dst))


def keep_float_inputs(model, keep) -> int:
    """onnxruntime's QDQ quantizer gives every reader of a quantized tensor its DequantizeLinear output, quantized
    or not: the speaker embedding of a multi-speaker voice, read by the flow's (int8) conditioning and by the
    duration predictor's, reached the duration predictor in int8 and moved durations. Nodes for which ``keep(name)``
    read the float tensor again; returns how many inputs were restored."""
    producers = {out: node for node in model.graph.node for out in node.output}
    restored = 0
    for node in model.graph.node:
        if not keep(node.name):
            continue
        for k, name in enumerate(node.input):
            dq = producers.get(name)
            q = producers.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            if q is not None and q.op_type == "QuantizeLinear":
                node.input[k] = q.input[0]
                restored += 1
    return restored
