"""fp16 arithmetic for the convolutions: each chosen Conv computes in fp16 between two Casts.

onnxruntime's CPU provider has fp16 Conv kernels (MLAS, NHWC) on Arm64 cores with fp16 vector arithmetic (a
Raspberry Pi 5's Cortex-A76; not a Pi 4's A72, nor x86, where onnxruntime inserts Casts back to fp32 and runs the
fp32 kernel). Only the convolutions are converted, each an island ``Cast(fp16) -> Conv -> Cast(fp32)``, because
that is where fp16 pays. Counted on an emulated A76 (exporter/pi), a 128-channel, 4096-sample, 3-tap convolution
took 26.7 M cycles in fp32 and 14.0 M as an fp16 island (its two Casts vectorized, 0.4 M each), but an Add took
0.25 M in fp32 and 7.3 M in fp16 (a scalar loop with a conversion per element): converting the residual Adds as
well, as whole-graph converters do (onnxconverter-common's, onnxruntime.transformers.float16), gave the voice
1.02x fp32 on the A76 instead of the islands' 1.6x. LeakyRelu and the Adds stay fp32. (Those converters also
retype the outer values that a blocked ``If`` branch reads, which makes a graph onnxruntime refuses.) On a core
without fp16 arithmetic (the A72, x86) onnxruntime folds each island back into an fp32 Conv.

The sound of fp16 arithmetic is the A76's, not this machine's: there the products and sums are fp16 vector
instructions (the counts show them), here fp32. It is judged on audio made under emulation (exporter/pi/counts.run_on).
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
from onnx import helper, numpy_helper


def compute_fp16(model: onnx.ModelProto, node_filter) -> int:
    """Make each Conv for which ``node_filter(node)`` holds compute in fp16 (its weights and bias stored fp16, its
    input cast to fp16, its output back to fp32). Returns how many."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    users = Counter(name for node in graph.node for name in node.input)
    new_nodes, done = [], 0
    for node in graph.node:
        params = node.input[1:]
        if (node.op_type != "Conv" or not node_filter(node)
                or not all(p in inits and inits[p].data_type == onnx.TensorProto.FLOAT and users[p] == 1
                           for p in params)):
            new_nodes.append(node)
            continue
        for p in params:  # weight, bias: stored fp16 (each read by this Conv alone)
            tensor = inits[p]
            graph.initializer.remove(tensor)
            graph.initializer.append(numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float16), p))
        x, y = node.input[0], node.output[0]
        new_nodes.append(helper.make_node("Cast", [x], [f"{y}_in_fp16"], name=f"{node.name}/to_fp16",
                                          to=onnx.TensorProto.FLOAT16))
        node.input[0] = f"{y}_in_fp16"
        node.output[0] = f"{y}_fp16"
        new_nodes.append(node)
        new_nodes.append(helper.make_node("Cast", [f"{y}_fp16"], [y], name=f"{node.name}/to_fp32",
                                          to=onnx.TensorProto.FLOAT))
        done += 1
    del graph.node[:]
    graph.node.extend(new_nodes)
    return done
