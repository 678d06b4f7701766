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
  and a last rung of the decoder stages' ladders in ``auto --finetune``;
* ``fp16``: the convolutions computed in fp16 (half.py), for cores with fp16 arithmetic (a Raspberry Pi 5): the
  ``fp16`` preset, judged on audio made on an emulated Pi 5.

The upsamplers of a decoder stage computed in int8 or fp16 become polyphase Convs (polyphase.py).

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
(upsamplers as Convs), ``half`` (fp16 arithmetic),
``build`` (a plan applied to the graph), ``sensitivity`` (a stage's tensors ranked by their share of its int8
error), ``budget`` (the rules and the measurements
a variant is judged by against fp32), ``judge`` (a trial: measured, listened to, reported), ``search``
(``auto``), ``fakequant`` and ``finetune`` (the fine-tuned rung), ``variants`` (the sidecar's record, the folder's
default, the streaming pieces).
"""

from __future__ import annotations

# Only the plans' names here: the command line reads them at start, and what makes a variant (quantize.py) imports
# onnx, which takes seconds.
from exporter.quant.plans import ALL_PRESETS, DEFAULT_PRESET, FINETUNED, PRESETS, QuantConfig, machine_target, preset

__all__ = ["ALL_PRESETS", "DEFAULT_PRESET", "FINETUNED", "PRESETS", "QuantConfig", "machine_target", "preset"]
