"""int8 variants of an exported voice: ``model.<preset>.onnx`` beside ``model.onnx``.

A variant is a *plan*: for each unit of the voice (the text encoder's embedding/attention, its
feed-forward layers, the duration predictor, the flow, each upsampling stage of the decoder) one
treatment, every unit not named staying fp32:

* ``fp16w`` / ``int8w``: weights stored in fp16 / int8 (per output channel), computed in fp32
  (folded back to fp32 at load: no cost at run time, see storage.py);
* ``dynamic``: onnxruntime's dynamic ConvInteger (activations quantized at run time);
* ``qdq``: static QDQ on the convolutions (and MatMuls), calibrated on built-in sentences;
* ``qdq+``: ``qdq`` plus the Add / LeakyRelu / Mul between them, so activations stay int8;
* ``qdq+ft``: ``qdq+``, then the plan's int8 vocoder fine-tuned against the fp32 model as teacher
  (quantization-aware, learned activation ranges; fakequant.py, finetune.py): the ``finetuned`` preset,
  and a last rung of the decoder stages' ladders in ``auto --finetune``.

The upsamplers of a decoder stage computed in int8 become polyphase Convs (polyphase.py).

What the measurements on the real voice decided (each variant records its own in the sidecar):

* The text encoder and the duration predictor decide every duration. Their int8 weights move 1.7-4.1%
  of phonemes and the shortest judged sentence by a frame (2%); error-compensating rounding (GPTQ)
  moved as many. fp16 weights move almost none (1 phoneme in 3145): ``auto`` stores them in fp16,
  and the fixed presets leave them fp32.
* onnxruntime's dynamic ConvInteger on x86 is 3x slower than fp32 with signed (per-channel)
  weights and slightly faster with unsigned per-tensor weights.
* The flow and the HiFi-GAN decoder only shape the sound, and they hold 61% of the weights and
  82% of the time: they are where int8 compute goes. int8 in the flow keeps DNSMOS; int8 in the
  decoder loses it unless chosen layer by layer (``auto``).
* In the decoder, int8 weights alone cost 0.2 dB log-mel; activations are the problem. Clipping
  the decoder's activations at the 99.9th percentile halves the damage of MinMax or 99.999;
  quantizing the residual stream (Add) costs most but is what makes int8 fast (no Q/DQ glue).
  int8 noise at the highest sample rate is heard (DNSMOS) long before log-mel shows it: one
  resblock of the last stage in int8 already costs 0.06-0.09 DNSMOS OVRL.

Where each step lives: ``units`` (the graph's units), ``plans`` (a plan, the presets, each unit's
ladder), ``calibration`` (activation ranges), ``storage`` (weight-only int8/fp16), ``polyphase``
(upsamplers as Convs), ``build`` (a plan applied to the graph), ``budget`` (how a variant is judged
against fp32), ``search`` (``auto``), ``variants`` (the sidecar's record, the streaming pieces).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from exporter.quant.plans import ALL_PRESETS, DEFAULT_PRESET, FINETUNED, PRESETS, QuantConfig, machine_target, preset

__all__ = ["ALL_PRESETS", "DEFAULT_PRESET", "FINETUNED", "PRESETS", "QuantConfig", "machine_target", "preset",
           "quantize_voice"]


def quantize_voice(voice_dir: Path, preset_name: str = DEFAULT_PRESET, *, target: str | None = None,
                   budget=None, report=print, finetune=None) -> Path:
    """Write ``voice_dir/model.<preset>.onnx`` and record how it was made (and measured) in the sidecar.
    ``finetune``: a ``FinetuneConfig``: the fine-tuned preset's training (its defaults otherwise); given to
    ``auto``, decoder stages get a fine-tuned rung (exporter/quant/search.py)."""
    from exporter.quant.budget import Comparison
    from exporter.quant.build import build
    from exporter.quant.calibration import CALIBRATION_SENTENCES
    from exporter.quant.variants import add_pieces, check_voice_dir, record
    from runtime import cpu

    voice_dir = Path(voice_dir)
    check_voice_dir(voice_dir)
    if preset_name == "auto":
        from exporter.quant.search import search

        return search(voice_dir, target=target, budget=budget, report=report, finetune=finetune)
    if preset_name == FINETUNED:
        from exporter.quant.finetune import finetune_voice

        return finetune_voice(voice_dir, target=target, budget=budget, cfg=finetune, report=report)
    cfg = preset(preset_name, target)
    dst = voice_dir / f"model.{cfg.preset}.onnx"
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=".vits-edge-quant-", dir=voice_dir) as tmp:
        staged = Path(tmp) / "model.onnx"
        build(voice_dir, cfg, staged)
        measured = Comparison(voice_dir, CALIBRATION_SENTENCES).measure(staged)
        measured.pop("_voice")
        measured.update(seconds=round(time.perf_counter() - start, 1), timed_on=cpu.describe())
        shutil.move(str(staged), dst)
    record(voice_dir, dst.name, {"config": asdict(cfg), "measured": measured})
    logging.getLogger(__name__).info("wrote %s: %s", dst, measured)
    add_pieces(voice_dir, dst.name)
    return dst
