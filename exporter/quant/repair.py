"""Range repairs of a decoder stage before its int8 build: rewrites of the fp32 model that compute the same audio
but give the stage's quantized tensors narrower ranges, and a correction of what int8 shifts.

A HiFi-GAN stage is a residual stream: the upsampler writes it, each ResBlock convolution reads it through a
LeakyReLU and adds its output back, the stage's ResBlocks are summed and divided by their count, and the next
upsampler (or ``conv_post``) reads the result through a LeakyReLU. Every op between a writer and a reader acts on
each channel alone, and LeakyReLU is positively homogeneous (``leaky(x / s) = leaky(x) / s`` for ``s > 0``), so a
channel of the stream can be rescaled or split exactly in fp32 by changing only the writers' output channels and
the readers' input channels (``Stream``):

* ``smooth``: SmoothQuant's migration through LeakyReLU. Channel ``c`` of the stream is divided by
  ``s_c = a_c^alpha / w_c^(1 - alpha)`` (``a_c``: the channel's range relative to its tensor's, the largest over
  the stream's tensors; ``w_c``: the readers' largest weight on it, relative to each reader's largest), which
  moves activation outliers into the readers' per-channel int8 weights.
* ``split``: outlier channel splitting. The ``k`` channels with the widest range are written twice at half value
  and read twice with the same weights: a per-tensor scale is set by fewer outliers, at the cost of ``k``
  channels more in every convolution of the stage.
* ``correct_biases`` (on the built QDQ file): each int8 convolution's mean output shift against fp32, measured on
  calibration sentences in the simulation of onnxruntime's int8 arithmetic (exporter/quant/fakequant.py), taken
  out of its bias, one convolution at a time in graph order (each sees the ones before it corrected).

What each buys on the built-in voice is measured by ``python -m benchmarks.sensitivity --repair ...``
(docs/int8.md, "What each lever bought").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

from exporter.quant import polyphase
from exporter.quant.units import node_units
from exporter.split import split as cut
from runtime import chunking, contract
from runtime.config import FP32
from runtime.voice import Voice

CHANNEL_WISE = ("LeakyRelu", "Add", "Div", "Mul")
PERCENTILE = 99.9  # the decoder's calibration percentile (plans.QuantConfig.percentiles)


def _attr(node, name, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


@dataclass
class Stream:
    """A decoder stage's residual stream: the tensors that carry its channels, the nodes that write them (their
    output channels) and read them (their input channels), and how many channels it has."""

    unit: str
    tensors: list[str]
    writers: list[str]
    readers: list[str]
    channels: int


def _scalar(model: onnx.ModelProto, name: str) -> bool:
    for t in model.graph.initializer:
        if t.name == name:
            return numpy_helper.to_array(t).size == 1
    for n in model.graph.node:
        if n.op_type == "Constant" and n.output[0] == name:
            return numpy_helper.to_array(_attr(n, "value")).size == 1
    return False


def stream(model: onnx.ModelProto, unit: str) -> Stream:
    """The residual stream of decoder stage ``unit`` (``decoder.N``) in the fp32 model (upsamplers as
    ConvTranspose). ValueError where a node that is not a writer, a reader or channel-wise touches it."""
    units = node_units(model)
    nodes = [n for n in model.graph.node if units.get(n.name) == unit]
    ups = next((n for n in nodes if n.op_type == "ConvTranspose"), None)
    if ups is None or _attr(ups, "group", 1) != 1:
        raise ValueError(f"{unit}: no upsampler (ConvTranspose without groups) starts it: not a HiFi-GAN stage")
    producers = {o: n for n in model.graph.node for o in n.output}
    readers_of: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for name in n.input:
            readers_of.setdefault(name, []).append(n)
    tensors, writers, readers = [ups.output[0]], [ups.name], []
    todo, adds = [ups.output[0]], []
    while todo:
        tensor = todo.pop()
        for node in readers_of.get(tensor, []):
            if node.op_type in ("Conv", "ConvTranspose") and node.input[0] == tensor:
                if _attr(node, "group", 1) != 1:
                    raise ValueError(f"{node.name}: a grouped convolution reads the stream")
                if node.name not in readers:
                    readers.append(node.name)
                continue
            if node.op_type not in CHANNEL_WISE:
                raise ValueError(f"{node.name} ({node.op_type}) reads {unit}'s stream: cannot rescale it")
            if node.op_type in ("Div", "Mul") and not _scalar(model, node.input[1]):
                raise ValueError(f"{node.name} scales the stream by a tensor, not a number")
            if node.op_type == "Add":
                other = node.input[1] if node.input[0] == tensor else node.input[0]
                writer = producers.get(other)
                if other not in tensors and writer is not None and writer.op_type == "Conv":
                    if len(readers_of.get(other, [])) != 1:
                        raise ValueError(f"{writer.name}'s output is read by more than the stream's Add")
                    writers.append(writer.name)
                    tensors.append(other)
                else:
                    adds.append((node, other))  # another stream tensor (a ResBlock's output), checked below
            if node.output[0] not in tensors:
                tensors.append(node.output[0])
                todo.append(node.output[0])
    for node, other in adds:
        if other not in tensors:
            raise ValueError(f"{node.name} adds {other} to the stream: neither the stream nor a convolution's output")
    inits = {t.name: t for t in model.graph.initializer}
    channels = int(inits[ups.input[1]].dims[1])
    return Stream(unit, tensors, writers, readers, channels)


def _weights(model: onnx.ModelProto, node: onnx.NodeProto) -> tuple[onnx.TensorProto, onnx.TensorProto | None]:
    inits = {t.name: t for t in model.graph.initializer}
    users = sum(name == node.input[1] for n in model.graph.node for name in n.input)
    if node.input[1] not in inits or users != 1:
        raise ValueError(f"{node.name}: its weights are not its own initializer")
    bias = inits.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    return inits[node.input[1]], bias


def _rewrite(model: onnx.ModelProto, s: Stream, write, read) -> None:
    """``write(w, axis)`` / ``read(w, axis)`` give a writer's / reader's new weights (channel axis given);
    ``write(b, 0)`` its bias."""
    by_name = {n.name: n for n in model.graph.node}
    for name in s.writers:
        node = by_name[name]
        w, b = _weights(model, node)
        axis = 1 if node.op_type == "ConvTranspose" else 0
        w.CopyFrom(numpy_helper.from_array(write(numpy_helper.to_array(w), axis).astype(np.float32), w.name))
        if b is not None:
            b.CopyFrom(numpy_helper.from_array(write(numpy_helper.to_array(b), 0).astype(np.float32), b.name))
    for name in s.readers:
        node = by_name[name]
        w, _ = _weights(model, node)
        axis = 0 if node.op_type == "ConvTranspose" else 1
        w.CopyFrom(numpy_helper.from_array(read(numpy_helper.to_array(w), axis).astype(np.float32), w.name))
    del model.graph.value_info[:]  # channel counts may have changed: let shape inference find them again


def _along(v: np.ndarray, axis: int, ndim: int) -> np.ndarray:
    shape = [1] * ndim
    shape[axis] = -1
    return v.reshape(shape)


def scale(model: onnx.ModelProto, s: Stream, factors: np.ndarray) -> None:
    """Divide the stream's channel ``c`` by ``factors[c]`` (> 0), exactly: writers' outputs divided, readers'
    input weights multiplied."""
    factors = np.asarray(factors, dtype=np.float64)
    if factors.shape != (s.channels,) or not np.all(factors > 0):
        raise ValueError(f"{s.unit}: {s.channels} positive factors are needed")
    _rewrite(model, s, lambda w, axis: w / _along(factors, axis, w.ndim),
             lambda w, axis: w * _along(factors, axis, w.ndim))


def split(model: onnx.ModelProto, s: Stream, channels: list[int]) -> None:
    """Write each of ``channels`` twice at half value (appended after the stream's channels) and read both copies
    with the channel's weights: the same sums, ``len(channels)`` channels more."""
    idx = np.asarray(channels, dtype=np.int64)

    def write(w, axis):
        halved = w.copy()
        halved[(slice(None),) * axis + (idx,)] *= 0.5
        return np.concatenate([halved, np.take(halved, idx, axis=axis)], axis=axis)

    _rewrite(model, s, write, lambda w, axis: np.concatenate([w, np.take(w, idx, axis=axis)], axis=axis))
    s.channels += len(idx)


def channel_ranges(model: onnx.ModelProto, s: Stream, feeds: list[dict]) -> np.ndarray:
    """``[tensor, channel]``: each stream tensor's per-channel ``PERCENTILE`` of |x| over ``feeds``, relative to
    the tensor's own (what sets its per-tensor int8 scale)."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    for name in s.tensors:
        probe.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    values = [[] for _ in s.tensors]
    for feed in feeds:
        for k, out in enumerate(session.run(s.tensors, feed)):
            values[k].append(np.abs(out[0]))
    out = np.zeros((len(s.tensors), s.channels))
    for k, chunks in enumerate(values):
        a = np.concatenate(chunks, axis=-1)
        out[k] = np.percentile(a, PERCENTILE, axis=1) / max(np.percentile(a, PERCENTILE), 1e-12)
    return out


def reader_ranges(model: onnx.ModelProto, s: Stream) -> np.ndarray:
    """``[channel]``: the readers' largest |weight| on each stream channel, relative to each reader's largest."""
    by_name = {n.name: n for n in model.graph.node}
    out = np.zeros(s.channels)
    for name in s.readers:
        node = by_name[name]
        w = np.abs(numpy_helper.to_array(_weights(model, node)[0]))
        axis = 0 if node.op_type == "ConvTranspose" else 1
        per = np.moveaxis(w, axis, 0).reshape(s.channels, -1).max(axis=1)
        out = np.maximum(out, per / max(per.max(), 1e-12))
    return out


def smooth_factors(ranges: np.ndarray, weights: np.ndarray, alpha: float) -> np.ndarray:
    """SmoothQuant's ``s_c = a_c^alpha / w_c^(1-alpha)``, normalised to a geometric mean of 1."""
    a = np.maximum(ranges.max(axis=0), 1e-6)
    w = np.maximum(weights, 1e-6)
    f = a ** alpha / w ** (1 - alpha)
    return f / np.exp(np.log(f).mean())


def widest(ranges: np.ndarray, k: int) -> list[int]:
    """The ``k`` channels with the widest range over the stream's tensors."""
    return [int(c) for c in np.argsort(-ranges.max(axis=0))[:k]]


def repaired_model(voice_dir: Path, unit: str, repair: str, feeds: list[dict]) -> onnx.ModelProto:
    """``voice_dir/model.onnx`` with ``repair`` (``smooth:ALPHA`` or ``split:K``) on ``unit``'s stream."""
    check(repair)
    model = onnx.load(str(Path(voice_dir) / contract.MODEL_FILE))
    apply(model, unit, repair, feeds)
    return model


def check(repair: str) -> None:
    if repair.partition(":")[0] not in ("smooth", "split"):
        raise ValueError(f"unknown repair {repair!r}: smooth:ALPHA, split:K (bias correction: correct_biases)")


def apply(model: onnx.ModelProto, unit: str, repair: str, feeds: list[dict]) -> None:
    """``repair`` on ``unit``'s stream of the fp32 ``model``, in place (its ranges measured on ``feeds``)."""
    check(repair)
    kind, _, value = repair.partition(":")
    s = stream(model, unit)
    ranges = channel_ranges(model, s, feeds)
    if kind == "smooth":
        scale(model, s, smooth_factors(ranges, reader_ranges(model, s), float(value or 0.5)))
    else:
        split(model, s, widest(ranges, int(value or 2)))


def correct_biases(voice_dir: Path, qdq_model: onnx.ModelProto, unit: str, latents: list[np.ndarray]) -> int:
    """Take each int8 convolution's mean output shift (per channel, against fp32, over ``latents``: flow outputs
    ``z``) out of its bias, in ``qdq_model`` (changed in place), convolutions of ``unit`` in graph order.
    Returns how many convolutions were corrected."""
    import torch  # heavy, and only here: the other repairs are numpy

    from exporter.quant.fakequant import QUANTIZED_SUFFIX, FakeQuantGraph

    architecture = Voice.load(voice_dir, variant=FP32).config.streaming.get("architecture")
    vocoder = cut(qdq_model, architecture)[2]
    fp32_model = onnx.load(str(Path(voice_dir) / contract.MODEL_FILE))
    polyphase.rewrite(fp32_model, lambda node: True)
    fp32 = {t.name: numpy_helper.to_array(t) for t in fp32_model.graph.initializer}
    graph = FakeQuantGraph(vocoder, fp32)
    units = node_units(qdq_model)
    convs = [n for n in vocoder.graph.node if n.name in graph.conv_params and graph.conv_params[n.name][2]
             and units.get(n.name) == unit]
    outputs = {n.output[0] for n in convs}
    crops = len(chunking.crop_names(chunking.split_chain(chunking.layers(architecture))[1]))
    feeds = [{contract.Z: torch.from_numpy(z), contract.CROP_STARTS: torch.zeros(crops, dtype=torch.int64),
              contract.CROP_ENDS: torch.full((crops,), 1 << 40, dtype=torch.int64)} for z in latents]
    feeds = [{k: v for k, v in f.items() if k in graph.inputs} for f in feeds]
    with torch.no_grad():
        teacher = [graph(f, quantized=False, teacher=True, record=outputs)[1] for f in feeds]
        for node in convs:
            name = node.output[0]
            shift = None
            for f, t in zip(feeds, teacher):
                _, got = graph(f, record={name})
                d = (got[name] - t[name]).sum(dim=(0, 2))
                shift = d if shift is None else shift + d
            frames = sum(t[name].shape[0] * t[name].shape[2] for t in teacher)
            bias = graph.weights[graph._keys[graph.conv_params[node.name][2][0]]]
            bias -= shift / frames
    # only the corrected int32 biases change: every other initializer keeps its bytes
    inits = {t.name: t for t in qdq_model.graph.initializer}
    for node in convs:
        name, step = graph.conv_params[node.name][2]
        value = graph.weights[graph._keys[name]].detach().numpy() / numpy_helper.to_array(inits[step])
        stored = inits[name + QUANTIZED_SUFFIX]
        stored.CopyFrom(numpy_helper.from_array(np.round(value).astype(np.int32), stored.name))
    return len(convs)
