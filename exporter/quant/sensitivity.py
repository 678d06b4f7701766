"""Which quantized tensors of a unit make its int8 error: each activation's Quantize/Dequantize pair left out in
turn, ranked by how much of the error leaving it in fp32 gives back.

A decoder stage is a coarse unit: in the real voice ``decoder.2`` in QDQ fails the budget while most of its
tensors quantize harmlessly. The ranking runs the very file onnxruntime would run (the stage in QDQ) with one
pair bypassed at a time ("all but one": what each tensor costs in the company of the others), on calibration
sentences at zero noise, by log-mel distance to fp32: about a second a tensor. ``auto`` then listens to only the
few plans that keep the worst tensors in fp32 (search.py), and the ranking goes into the sidecar.

Bypassing a pair makes every reader of that tensor read its fp32 value: a convolution reading it computes in
fp32 (on its stored int8 weights, dequantized), an Add or LeakyRelu reading it computes in fp32 and onnxruntime
quantizes again where the next int8 node needs it. The speed that costs is measured as every plan's is.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from exporter.quality import logmel_distance_db
from exporter.quant.budget import _session as session
from exporter.quant.calibration import CALIBRATION_SENTENCES
from exporter.quant.units import node_units
from runtime.config import FP32
from runtime.voice import SynthesisConfig, Voice

RANK_SENTENCES = CALIBRATION_SENTENCES[:3]  # never judged (the budget's sentences are JUDGE_SENTENCES)
RECORDED = 12  # tensors of each ranking the sidecar keeps


def _consumers(model: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    return readers


def quantized_tensors(model: onnx.ModelProto, unit: str) -> list[str]:
    """The activations of ``unit`` that pass through a QuantizeLinear/DequantizeLinear pair, in graph order: those
    read (through the pair) by a node of the unit (or of its sub-units)."""
    units = node_units(model)
    initializers = {t.name for t in model.graph.initializer}
    readers = _consumers(model)
    found = []
    for node in model.graph.node:
        if node.op_type != "QuantizeLinear" or node.input[0] in initializers:
            continue
        dqs = [n for n in readers.get(node.output[0], []) if n.op_type == "DequantizeLinear"]
        users = [u for dq in dqs for u in readers.get(dq.output[0], [])]
        if any(units.get(u.name, "") == unit or units.get(u.name, "").startswith(unit + ".") for u in users):
            found.append(node.input[0])
    return list(dict.fromkeys(found))


def bypass(model: onnx.ModelProto, tensors: Iterable[str]) -> int:
    """Leave ``tensors`` in fp32: every reader of their DequantizeLinear output reads the tensor itself, and the
    pair goes (in place). Returns how many pairs were removed. A name with no pair is an error: the plan was made
    for another graph."""
    tensors = set(tensors)
    readers = _consumers(model)
    drop, rename = [], {}
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear" and node.input[0] in tensors:
            dqs = [n for n in readers.get(node.output[0], []) if n.op_type == "DequantizeLinear"]
            if len(dqs) != len(readers.get(node.output[0], [])):
                continue  # read quantized by something else (an integer op): not ours to remove
            drop.append(node)
            drop.extend(dqs)
            rename.update({dq.output[0]: node.input[0] for dq in dqs})
    missing = tensors - {n.input[0] for n in drop if n.op_type == "QuantizeLinear"}
    if missing:
        raise ValueError(f"no Quantize/Dequantize pair on {', '.join(sorted(missing))}")
    graph_outputs = {o.name for o in model.graph.output}
    if graph_outputs & set(rename):
        raise ValueError("a graph output is a dequantized tensor: cannot bypass it")
    for node in model.graph.node:
        for k, name in enumerate(node.input):
            if name in rename:
                node.input[k] = rename[name]
    for node in drop:
        model.graph.node.remove(node)
    dropped = {name for node in drop for name in node.input}  # the pairs' scales and zero points
    used = {name for node in model.graph.node for name in node.input}
    for init in [t for t in model.graph.initializer if t.name in dropped and t.name not in used]:
        model.graph.initializer.remove(init)
    return sum(1 for n in drop if n.op_type == "QuantizeLinear")


@dataclass
class Ranking:
    """A unit's tensors by what leaving each in fp32 gives back (dB of log-mel), largest first."""

    unit: str
    option: str
    error_db: float  # the unit quantized whole (log-mel distance to fp32, median over RANK_SENTENCES)
    gains: list[tuple[str, float]]

    def top(self, count: int) -> tuple[str, ...]:
        return tuple(name for name, _ in self.gains[:count])

    def to_dict(self) -> dict:
        return {"unit": self.unit, "option": self.option, "error_db": round(self.error_db, 4),
                "tensors": len(self.gains), "sentences": len(RANK_SENTENCES),
                "top": [[name, round(gain, 4)] for name, gain in self.gains[:RECORDED]]}


class Ranker:
    """fp32's audio on the ranking sentences once; then any QDQ model's distance to it."""

    def __init__(self, voice_dir: Path, threads: int = 2):
        self.voice_dir, self.threads = Path(voice_dir), threads
        self.voice = Voice.load(voice_dir, variant=FP32, threads=threads)
        self.zero = SynthesisConfig(noise_scale=0.0, noise_w=0.0)
        self.ids = [self.voice.text_to_ids(s) for s in RANK_SENTENCES]
        self.reference = [self.voice.ids_to_audio(i, self.zero) for i in self.ids]

    def error_db(self, model: onnx.ModelProto) -> float:
        voice = Voice.from_session(session(model, self.threads), self.voice.config)  # as every trial runs
        distances = []
        for ids, reference in zip(self.ids, self.reference):
            audio = voice.ids_to_audio(ids, self.zero)
            if len(audio) == len(reference):
                distances.append(logmel_distance_db(reference, audio, self.voice.sample_rate))
        if not distances:
            raise ValueError("the quantized model changed every ranking sentence's length: nothing to compare")
        return float(np.median(distances))

    def rank(self, qdq_model: Path, unit: str, option: str, report=print) -> Ranking:
        """Each of ``unit``'s quantized tensors in ``qdq_model`` left in fp32 alone (the rest quantized)."""
        model = onnx.load(str(qdq_model))
        tensors = quantized_tensors(model, unit)
        whole = self.error_db(model)
        report(f"  ranking {unit}={option}'s {len(tensors)} quantized tensors (log-mel {whole:.3f} dB whole, "
               f"{len(RANK_SENTENCES)} sentences)")
        gains = []
        for name in tensors:
            trial = onnx.ModelProto()
            trial.CopyFrom(model)
            bypass(trial, [name])
            gains.append((name, whole - self.error_db(trial)))
        gains.sort(key=lambda g: -g[1])
        return Ranking(unit, option, whole, gains)
