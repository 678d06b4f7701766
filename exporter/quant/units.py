"""The units of a VITS graph that a plan treats: nodes grouped by the module that made them."""

from __future__ import annotations

STATIC_UNITS = ("flow", "decoder")  # the only units static QDQ may touch (durations: see exporter/quant/__init__.py)
DURATION_UNITS = ("text_encoder", "duration_predictor")  # they decide every output length


def node_units(model) -> dict[str, str]:
    """Node name -> unit. Decoder stages are cut at each upsampler: ``decoder.0`` holds conv_pre and the first
    stage; conv_post is ``decoder.post``. A stage is read from the module names (``ups.N``, ``resblocks.K``: the
    stage's kernels), and a node without one (a LeakyRelu, an Add, a Div, a Quantize/Dequantize pair) takes its
    inputs' stage: onnxruntime's quantizer reorders nodes (conv_pre came last in a QDQ graph), so graph order is
    not the stage."""
    units: dict[str, str] = {}
    decoder = [n for n in model.graph.node if n.name.startswith("/waveform_decoder")]
    ups = {int(n.name.split("/ups.")[1].split("/")[0]) for n in decoder if n.name.startswith("/waveform_decoder/ups.")}
    blocks = {int(n.name.split("/resblocks.")[1].split("/")[0]) for n in decoder
              if n.name.startswith("/waveform_decoder/resblocks.")}
    kernels = max(1, len(blocks) // max(1, len(ups)))
    for node in model.graph.node:
        name = node.name
        if name.startswith("/text_encoder/encoder/ffn_layers"):
            units[name] = "text_encoder_ffn"
        elif name.startswith("/text_encoder"):
            units[name] = "text_encoder"
        elif name.startswith("/duration_predictor"):
            units[name] = "duration_predictor"
        elif name.startswith("/flow"):
            units[name] = "flow"
        elif name.startswith("/waveform_decoder/ups."):  # the ConvTranspose, or its polyphase form
            units[name] = f"decoder.{int(name.split('/ups.')[1].split('/')[0])}"
        elif name.startswith("/waveform_decoder/resblocks."):
            units[name] = f"decoder.{int(name.split('/resblocks.')[1].split('/')[0]) // kernels}"
        elif name.startswith("/waveform_decoder/conv_pre"):
            units[name] = "decoder.0"
    producers = {out: n for n in model.graph.node for out in n.output}
    readers: dict[str, list] = {}
    for node in model.graph.node:
        for i in node.input:
            readers.setdefault(i, []).append(node)
    for node in decoder:  # graph order is topological: a node's producers come first
        if node.name not in units:
            stages = [units.get(producers[i].name) for i in node.input if i in producers]
            stages = [s for s in stages if s and s.startswith("decoder.")]
            if stages:
                units[node.name] = max(stages, key=lambda s: int(s.split(".")[1]))
    for node in decoder:  # constants: their reader's stage
        if node.name not in units:
            stages = [units.get(r.name) for o in node.output for r in readers.get(o, [])]
            units[node.name] = next((s for s in stages if s), "decoder.0")
    # conv_post (the most sensitive layer: it makes the waveform) and what follows it are their own unit;
    # so is the LeakyRelu feeding it.
    post = [n for n in model.graph.node if n.name.startswith("/waveform_decoder/conv_post")]
    if post:
        producers = {o: n for n in model.graph.node for o in n.output}
        feeding = producers.get(post[0].input[0])
        names = [n.name for n in model.graph.node if n.name.startswith("/waveform_decoder")]
        tail = names[names.index(post[0].name):]
        for name in tail + ([feeding.name] if feeding is not None and feeding.op_type == "LeakyRelu" else []):
            units[name] = "decoder.post"
    return units


def unit_names(model) -> list[str]:
    return list(dict.fromkeys(node_units(model).values()))
