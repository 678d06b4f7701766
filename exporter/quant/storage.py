"""Weight-only storage: smaller weights in the file, the original fp32 arithmetic at run time.

A weight is stored as int8 (symmetric, per output channel) with ``Cast`` + ``Mul`` by its scales, or
as fp16 with a ``Cast``. Both are plain ops on constants, so onnxruntime's constant folding turns them
back into one fp32 initializer when the session loads: the file shrinks, the kernels and their speed
are those of fp32. (A ``DequantizeLinear`` would say the same thing, but onnxruntime never folds it:
it keeps Q/DQ nodes for its int8 fusions, so such a weight was dequantized on every call, ~5% of the
text encoder's time, and made the weight non-constant for the kernel's pre-packing.)
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
from onnx import helper, numpy_helper

# op type -> (weight input index, axis of the output channels)
_WEIGHT_AXIS = {"Conv": (1, 0), "ConvTranspose": (1, 1), "MatMul": (1, 1), "Gather": (0, 0), "Gemm": (1, 1)}
MIN_ELEMENTS = 1024  # small tensors (biases, norms) are not worth two nodes


def quantize_per_channel(w: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per channel along ``axis``: ``w ~ q * scale`` with ``scale`` broadcastable to ``w``."""
    reduce = tuple(i for i in range(w.ndim) if i != axis)
    scale = np.abs(w).max(axis=reduce, keepdims=True) / 127.0
    scale = np.where(scale == 0, 1.0, scale).astype(np.float32)
    q = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
    return q, scale


def store_weights_fp16(model: onnx.ModelProto, node_filter) -> int:
    """Rewrite matching nodes' fp32 weight initializers as fp16 + Cast. Returns how many."""
    return _rewrite(model, node_filter, "fp16")


def store_weights_int8(model: onnx.ModelProto, node_filter) -> int:
    """Rewrite matching nodes' fp32 weight initializers as int8 + Cast + Mul(scale). Returns how many."""
    return _rewrite(model, node_filter, "int8")


def _rewrite(model: onnx.ModelProto, node_filter, kind: str) -> int:
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    users = Counter(name for node in graph.node for name in node.input)
    new_nodes, done = [], 0
    for node in graph.node:
        spec = _WEIGHT_AXIS.get(node.op_type)
        if spec and node_filter(node) and len(node.input) > spec[0]:
            index, axis = spec
            name = node.input[index]
            tensor = inits.get(name)
            if (tensor is not None and tensor.data_type == onnx.TensorProto.FLOAT and users.get(name) == 1
                    and int(np.prod(tensor.dims)) >= MIN_ELEMENTS):
                w = numpy_helper.to_array(tensor)
                graph.initializer.remove(tensor)
                cast = helper.make_node("Cast", [f"{name}_{kind}"], [name if kind == "fp16" else f"{name}_float"],
                                        name=f"{node.name}/weight_cast", to=onnx.TensorProto.FLOAT)
                new_nodes.append(cast)
                if kind == "fp16":
                    graph.initializer.append(numpy_helper.from_array(w.astype(np.float16), f"{name}_fp16"))
                else:
                    q, scale = quantize_per_channel(w, axis if w.ndim > 1 else 0)
                    graph.initializer.extend([numpy_helper.from_array(q, f"{name}_int8"),
                                              numpy_helper.from_array(scale, f"{name}_scale")])
                    new_nodes.append(helper.make_node("Mul", [f"{name}_float", f"{name}_scale"], [name],
                                                      name=f"{node.name}/weight_scale"))
                done += 1
        new_nodes.append(node)
    del graph.node[:]
    graph.node.extend(new_nodes)
    return done
