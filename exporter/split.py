"""Cut a whole VITS graph into the three pieces streaming needs (see runtime/pieces.py).

The first cut is where the durations are known: the *frontend* keeps everything up to the prior's
per-token mean and log standard deviation and the ``Ceil`` that gives each token its frames; the
*flow* takes the prior sample ``z_p`` to ``z``, and the *vocoder* (HiFi-GAN) ``z`` to audio. Between
the frontend and the flow, the alignment matrix product and the prior's noise move to the runtime
(an ``np.repeat`` and one draw per sentence), so that every chunk of a sentence sees the same sample.
The flow and the vocoder are cut apart because they want chunks of different sizes: the flow works
at the frame rate (a whole sentence of ``z`` is small) and needs 32 frames of context each side,
the vocoder's audio-rate tensors grow with a chunk and it needs 11 (runtime/chunking.py).

The cut works on any monolithic graph of this family: our export, every int8 variant of it (so a
variant's plan applies to its pieces: they are its own nodes), and Piper's ``VOICE.onnx``. It finds
its way by structure, not by names the tracer happened to give:

* the prior's noise is the ``RandomNormalLike`` that the durations do not depend on; the ``Add``
  after it makes ``z_p``; the mean and log-scale before the alignment products are found by walking
  back from that ``Add`` past the ``MatMul`` whose other side depends on the ``Ceil``;
* the flow and the vocoder are what ``output`` needs once ``z_p`` is given, cut at the last flow
  coupling's output; the only other thing they read that depends on the durations is the frame
  mask, all ones for one utterance: it becomes a constant of shape ``[1, 1, 1]`` (broadcast), so
  tensors can be cropped anywhere;
* crops (``runtime.chunking``) go after each coupling layer of the flow (the ``Concat`` that ends it)
  and on the input of each upsampler; where a variant quantized that tensor, the crop goes between its
  ``QuantizeLinear`` and ``DequantizeLinear``, on uint8, leaving onnxruntime's int8 fusions intact.
"""

from __future__ import annotations

import re
from collections import defaultdict, deque
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from exporter.errors import ExportError
from exporter.specialize import drop_full_masks, sample_feeds
from runtime import chunking, contract

_COUPLING_END = re.compile(r"^/flow/flows\.(\d+)/Concat$")
_UPSAMPLER = re.compile(r"^/(?:waveform_decoder|dec)/ups\.(\d+)/")


class _Graph:
    """Producers, consumers and ancestry of one ONNX graph."""

    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.graph = model.graph
        self.producer = {out: node for node in self.graph.node for out in node.output}
        self.consumers: dict[str, list] = defaultdict(list)
        for node in self.graph.node:
            for name in node.input:
                self.consumers[name].append(node)
        self.initializers = {t.name: t for t in self.graph.initializer}
        self.inputs = {i.name: i for i in self.graph.input}

    def descendants(self, tensor: str) -> set[str]:
        seen, todo = {tensor}, deque([tensor])
        while todo:
            for node in self.consumers[todo.popleft()]:
                for out in node.output:
                    if out not in seen:
                        seen.add(out)
                        todo.append(out)
        return seen

    def needed(self, outputs, stop=(), frontier=lambda tensor: False):
        """Nodes that compute ``outputs`` (in graph order), the graph inputs they read, and the tensors where
        ``frontier`` stopped the walk."""
        nodes, inputs, edge, seen = set(), [], [], set(stop)
        todo = deque(outputs)
        while todo:
            tensor = todo.popleft()
            if tensor in seen or tensor in self.initializers or not tensor:
                continue
            seen.add(tensor)
            if tensor in self.inputs:
                inputs.append(tensor)
            elif frontier(tensor):
                edge.append(tensor)
            else:
                node = self.producer[tensor]
                nodes.add(id(node))
                todo.extend(node.input)
        return [n for n in self.graph.node if id(n) in nodes], inputs, edge

    def only(self, nodes, what: str):
        if len(nodes) != 1:
            raise ExportError(f"cannot split this voice for streaming: expected one {what}, found {len(nodes)}")
        return nodes[0]


@dataclass
class Cut:
    """The tensors where a whole graph is cut."""

    means: str
    log_scales: str
    durations: str
    prior_sample: str  # z_p
    frame_mask: str
    duration_noise: str | None  # the stochastic duration predictor's draw (None: a deterministic one)


def find_cut(g: _Graph) -> Cut:
    ceil = g.only([n for n in g.graph.node if n.op_type == "Ceil"], "Ceil (the durations)")
    durations = ceil.output[0]
    from_durations = g.descendants(durations)
    draws = [n for n in g.graph.node if n.op_type in ("RandomNormalLike", "RandomNormal")]
    noise = g.only([n for n in draws if durations not in g.descendants(n.output[0])], "prior noise (RandomNormalLike)")
    timing = [n for n in draws if durations in g.descendants(n.output[0])]
    if len(timing) > 1:
        raise ExportError(f"cannot split this voice for streaming: {len(timing)} random draws decide its durations")
    noisy = g.descendants(noise.output[0])
    # z_p = mean + noise * exp(log_scale) * noise_scale
    first = g.only(g.consumers[noise.output[0]], "use of the prior noise")
    exp = g.producer.get(next((t for t in first.input if t != noise.output[0]), ""))
    if first.op_type != "Mul" or exp is None or exp.op_type != "Exp":
        raise ExportError("cannot split this voice for streaming: the prior noise is not scaled by an Exp")
    node = first
    while node.op_type != "Add":
        node = g.only(g.consumers[node.output[0]], "use of the prior noise")
    prior_sample = node.output[0]
    expanded_mean = g.only([t for t in node.input if t not in noisy], "prior mean")

    def per_token(expanded: str) -> str:
        node = g.producer[expanded]
        while node.op_type != "MatMul":
            if node.op_type != "Transpose":
                raise ExportError(f"cannot split this voice for streaming: unexpected {node.op_type} in the prior")
            node = g.producer[node.input[0]]
        tensor = g.only([t for t in node.input if t not in from_durations], "per-token prior")
        while g.producer[tensor].op_type == "Transpose":
            tensor = g.producer[tensor].input[0]
        return tensor

    means, log_scales = per_token(expanded_mean), per_token(exp.input[0])
    below = g.descendants(prior_sample)
    _, _, mask = g.needed([contract.OUTPUT], stop={prior_sample},
                          frontier=lambda t: t in from_durations and t not in below)
    return Cut(means, log_scales, durations, prior_sample, g.only(mask, "frame mask"),
               timing[0].output[0] if timing else None)


def _crop_tensors(g: _Graph, nodes, names: list[str], signal: set[str]) -> list[str]:
    """The tensor to crop at each crop point of ``runtime.chunking``, among the flow's and vocoder's nodes
    (``signal``: the tensors that depend on the latents, as opposed to weights and their Q/DQ)."""
    ends = [n for n in nodes if _COUPLING_END.match(n.name)
            and any(not c.name.startswith(n.name.rsplit("/", 1)[0] + "/") for c in g.consumers[n.output[0]])]
    couplings = sum(name.startswith("flow.") for name in names)
    if len(ends) != couplings:
        raise ExportError(f"cannot split this voice for streaming: the architecture has {couplings} flow "
                          f"couplings, the graph {len(ends)}")
    groups: dict[int, list] = defaultdict(list)
    for n in nodes:
        match = _UPSAMPLER.match(n.name)
        if match:
            groups[int(match.group(1))].append(n)
    tensors = []
    for name in names:
        kind, index = name.split(".")
        if kind == "flow":
            tensors.append(ends[int(index)].output[0])
            continue
        group = groups.get(int(index), [])
        inside = {out for n in group for out in n.output}
        tensor = g.only(list(dict.fromkeys(t for n in group for t in n.input if t in signal and t not in inside)),
                        f"input of upsampler {index}")
        dq = g.producer.get(tensor)
        if dq is not None and dq.op_type == "DequantizeLinear":
            q = g.producer.get(dq.input[0])
            if q is not None and q.op_type == "QuantizeLinear":
                tensor = dq.input[0]  # crop the uint8 tensor: the int8 fusions on both sides stay
        tensors.append(tensor)
    return tensors


def noise_channels(model: onnx.ModelProto, tensor: str) -> int:
    """Channels of the duration predictor's noise ``[batch, channels, tokens]``: run the whole graph once on two
    tokens with that tensor made an output (its shape is computed in the graph, not declared)."""
    probe = onnx.ModelProto.FromString(model.SerializeToString())
    probe.graph.output.append(helper.make_tensor_value_info(tensor, TensorProto.FLOAT, None))
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    return int(session.run([tensor], sample_feeds(session, 2))[0].shape[1])


def _model(template: onnx.ModelProto, nodes, inputs, outputs, initializers, piece: str) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, f"vits-edge {piece}", inputs, outputs, initializer=initializers)
    domains = {n.domain or "" for n in nodes}
    opsets = [o for o in template.opset_import if (o.domain or "") in domains or (o.domain or "") == ""]
    model = helper.make_model(graph, opset_imports=opsets, ir_version=template.ir_version, producer_name="vits-edge")
    model.metadata_props.add(key="vits_edge_piece", value=piece)
    return model


def split(model: onnx.ModelProto, architecture: dict) -> tuple[onnx.ModelProto, onnx.ModelProto, onnx.ModelProto]:
    """``(frontend, flow, vocoder)`` pieces of a whole graph (ours, a variant of it, or Piper's)."""
    g = _Graph(model)
    cut = find_cut(g)
    try:
        chain = chunking.layers(architecture)
    except chunking.ChunkingError as exc:
        raise ExportError(f"cannot split this voice for streaming: {exc}") from exc
    used = lambda nodes: [g.initializers[name] for name in dict.fromkeys(i for n in nodes for i in n.input)
                          if name in g.initializers]

    # frontend: graph inputs (+ the duration predictor's noise) -> means, log_scales, durations
    stop = {cut.duration_noise} if cut.duration_noise else set()
    nodes, inputs, _ = g.needed([cut.means, cut.log_scales, cut.durations], stop=stop)
    nodes = [onnx.NodeProto.FromString(n.SerializeToString()) for n in nodes]
    frontend_inputs = [i for name, i in g.inputs.items() if name in inputs]
    if cut.duration_noise:
        for n in nodes:
            n.input[:] = [contract.DURATION_NOISE if t == cut.duration_noise else t for t in n.input]
        frontend_inputs.append(helper.make_tensor_value_info(
            contract.DURATION_NOISE, TensorProto.FLOAT, [1, noise_channels(model, cut.duration_noise), None]))
    renames = ((cut.means, contract.MEANS), (cut.log_scales, contract.LOG_SCALES), (cut.durations, contract.DURATIONS))
    nodes += [helper.make_node("Identity", [old], [new], name=f"/pieces/{new}") for old, new in renames]
    frontend = _model(model, nodes, frontend_inputs,
                      [helper.make_tensor_value_info(new, TensorProto.FLOAT, [1, None, None]) for _, new in renames],
                      used(nodes), "frontend")
    drop_full_masks(frontend)  # one unpadded utterance at a time: its token mask is all ones

    # the flow (latents -> z) and the HiFi-GAN (z -> audio): the frame mask a constant, crops inserted
    everything, inputs, _ = g.needed([contract.OUTPUT], stop={cut.prior_sample, cut.frame_mask})
    if set(inputs) - set(contract.SPEAKER_INPUTS):
        raise ExportError(f"cannot split this voice for streaming: its decoder reads {sorted(inputs)}")
    names = chunking.crop_names(chain)
    crops = dict(zip(names, _crop_tensors(g, everything, names, g.descendants(cut.prior_sample))))
    flow_chain, vocoder_chain = chunking.split_chain(chain)
    boundary = crops[names[len(chunking.crop_names(flow_chain))]]  # the last coupling's output: z
    pieces = []
    for piece, (source, target, output), part in (
            ("flow", (cut.prior_sample, contract.LATENTS, boundary), flow_chain),
            ("vocoder", (boundary, contract.Z, contract.OUTPUT), vocoder_chain)):
        nodes, inputs, _ = g.needed([output], stop={source, cut.frame_mask})
        nodes = [onnx.NodeProto.FromString(n.SerializeToString()) for n in nodes]  # edits stay in the piece
        for n in nodes:
            n.input[:] = [target if t == source else t for t in n.input]
        part_names = chunking.crop_names(part)
        extra = [numpy_helper.from_array(np.ones((1, 1, 1), np.float32), cut.frame_mask),
                 numpy_helper.from_array(np.array([2], np.int64), "/pieces/time_axis")]
        for k, name in enumerate(part_names):
            extra.append(_insert_crop(g, nodes, name, crops[name], k))
        if output != contract.OUTPUT:
            nodes.append(helper.make_node("Identity", [output], [contract.Z], name=f"/pieces/{contract.Z}"))
        declared = [helper.make_tensor_value_info(target, TensorProto.FLOAT, [1, None, None])]
        declared += [g.inputs[name] for name in inputs]
        declared += [helper.make_tensor_value_info(name, TensorProto.INT64, [len(part_names)])
                     for name in (contract.CROP_STARTS, contract.CROP_ENDS)]
        out = (helper.make_tensor_value_info(contract.OUTPUT, TensorProto.FLOAT, [1, 1, None]) if output == contract.OUTPUT
               else helper.make_tensor_value_info(contract.Z, TensorProto.FLOAT, [1, None, None]))
        pieces.append(_model(model, nodes, declared, [out], used(nodes) + extra, piece))
    return frontend, *pieces


def _insert_crop(g: _Graph, nodes: list, name: str, tensor: str, k: int):
    """``tensor`` -> Slice(tensor, crop_starts[k], crop_ends[k], axis 2) for every node reading it; returns the
    index initializer."""
    cropped = f"/pieces/crop_{name}"
    for n in nodes:
        n.input[:] = [cropped if t == tensor else t for t in n.input]
    index = f"{cropped}/index"
    new = [helper.make_node("Gather", [contract.CROP_STARTS, index], [f"{cropped}/start"], name=f"{cropped}/start", axis=0),
           helper.make_node("Gather", [contract.CROP_ENDS, index], [f"{cropped}/end"], name=f"{cropped}/end", axis=0),
           helper.make_node("Slice", [tensor, f"{cropped}/start", f"{cropped}/end", "/pieces/time_axis"], [cropped],
                            name=cropped)]
    producer = g.producer[tensor]
    at = next(i for i, n in enumerate(nodes) if n.name == producer.name and list(n.output) == list(producer.output))
    nodes[at + 1:at + 1] = new
    return numpy_helper.from_array(np.array([k], np.int64), index)


# -- the architecture, from the checkpoint's config and from the graph -------------------------------
_FLOW_CONV = re.compile(r"^/flow/flows\.(\d+)/enc/in_layers\.(\d+)/Conv$")
_DEC_CONV = re.compile(r"^/(?:waveform_decoder|dec)/(conv_pre|conv_post)/Conv$")
_RES_CONV = re.compile(r"^/(?:waveform_decoder|dec)/resblocks\.(\d+)/(convs|convs1|convs2)\.(\d+)/Conv$")


def architecture_from_vits(vits) -> dict:
    """What the receptive field depends on, from a Coqui ``Vits`` model and its ``VitsArgs``."""
    args = vits.args
    if getattr(args, "encoder_sample_rate", None):
        raise ExportError("cannot split this voice for streaming: it interpolates the latents to another rate "
                          "(encoder_sample_rate); it is spoken whole-sentence")
    dec = vits.waveform_decoder
    res_type = str(args.resblock_type_decoder)
    # ResBlock2 has a convolution for each of the first two dilations only (Coqui's hifigan_generator.py): the
    # rest of a list (YourTTS's [1, 3, 5]) is unused, and the graph has none
    used = 2 if res_type == "2" else None
    return {
        "flow": {"couplings": int(vits.flow.num_flows), "layers": int(args.num_layers_flow),
                 "kernel_size": int(args.kernel_size_flow), "dilation_rate": int(args.dilation_rate_flow)},
        "decoder": {
            "conv_pre_kernel": int(dec.conv_pre.kernel_size[0]),
            "upsample_rates": [int(r) for r in args.upsample_rates_decoder],
            "upsample_kernel_sizes": [int(k) for k in args.upsample_kernel_sizes_decoder],
            "resblock_type": res_type,
            "resblock_kernel_sizes": [int(k) for k in args.resblock_kernel_sizes_decoder],
            "resblock_dilation_sizes": [[int(d) for d in ds[:used]] for ds in args.resblock_dilation_sizes_decoder],
            "conv_post_kernel": int(dec.conv_post.kernel_size[0]),
        },
    }


def _attrs(node) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def architecture_from_graph(model: onnx.ModelProto) -> dict:
    """The same facts read from a whole fp32 graph's convolutions (Piper voices carry no Coqui config)."""
    flow: dict[int, dict[int, dict]] = defaultdict(dict)
    res: dict[int, dict[str, dict[int, dict]]] = defaultdict(lambda: defaultdict(dict))
    ends, ups = {}, {}
    for node in model.graph.node:
        if node.op_type == "ConvTranspose" and _UPSAMPLER.match(node.name):
            ups[int(_UPSAMPLER.match(node.name).group(1))] = _attrs(node)
        if node.op_type != "Conv":
            continue
        if m := _FLOW_CONV.match(node.name):
            flow[int(m.group(1))][int(m.group(2))] = _attrs(node)
        elif m := _DEC_CONV.match(node.name):
            ends[m.group(1)] = _attrs(node)
        elif m := _RES_CONV.match(node.name):
            res[int(m.group(1))][m.group(2)][int(m.group(3))] = _attrs(node)
    if not flow or not ups or set(ends) != {"conv_pre", "conv_post"} or not res:
        raise ExportError("cannot split this voice for streaming: its graph does not have the named flow and "
                          "decoder convolutions of a VITS voice (re-export it with `python -m exporter export`)")
    layers = [flow[c] for c in sorted(flow)]
    first = layers[0]
    kernel = first[0]["kernel_shape"][0]
    rate = first[1]["dilations"][0] if len(first) > 1 else 1
    for coupling in layers:
        for i, attrs in coupling.items():
            if attrs["kernel_shape"][0] != kernel or attrs["dilations"][0] != rate**i or len(coupling) != len(first):
                raise ExportError("cannot split this voice for streaming: its flow's convolutions are not uniform")
    per_stage = len(res) // len(ups)
    kind = "1" if any("convs1" in res[j] for j in range(per_stage)) else "2"
    key = "convs1" if kind == "1" else "convs"
    stage = [res[j][key] for j in range(per_stage)]
    return {
        "flow": {"couplings": len(layers), "layers": len(first), "kernel_size": int(kernel), "dilation_rate": int(rate)},
        "decoder": {
            "conv_pre_kernel": int(ends["conv_pre"]["kernel_shape"][0]),
            "upsample_rates": [int(ups[i]["strides"][0]) for i in sorted(ups)],
            "upsample_kernel_sizes": [int(ups[i]["kernel_shape"][0]) for i in sorted(ups)],
            "resblock_type": kind,
            "resblock_kernel_sizes": [int(convs[0]["kernel_shape"][0]) for convs in stage],
            "resblock_dilation_sizes": [[int(convs[k]["dilations"][0]) for k in sorted(convs)] for convs in stage],
            "conv_post_kernel": int(ends["conv_post"]["kernel_shape"][0]),
        },
    }


def receptive_field(architecture: dict) -> int:
    """Latent frames of context on each side of a chunk (for the sidecar and the export's report)."""
    return chunking.context(chunking.layers(architecture))
