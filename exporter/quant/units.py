"""The units of a VITS graph that a plan treats: nodes grouped by the module that made them."""

from __future__ import annotations

STATIC_UNITS = ("flow", "decoder")  # the only units static QDQ may touch (durations: see exporter/quant/__init__.py)
DURATION_UNITS = ("text_encoder", "duration_predictor")  # they decide every output length


def node_units(model) -> dict[str, str]:
    """Node name -> unit. Decoder stages are cut at each upsampler (graph order is topological):
    ``decoder.0`` holds conv_pre and the first stage; conv_post is ``decoder.post``."""
    units, stage = {}, 0
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
        elif name.startswith("/waveform_decoder"):
            if name.startswith("/waveform_decoder/ups."):  # the ConvTranspose, or its polyphase form
                stage = int(name.split("/ups.")[1].split("/")[0])
            units[name] = f"decoder.{stage}"
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
