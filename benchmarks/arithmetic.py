"""The arithmetic a model does per second of audio, counted from its graph: the multiply-adds of its
convolutions, transposed convolutions and matrix products, at the shapes each node ran with (onnxruntime's
profile of a run with graph optimizations off, so that every node is the file's own and no weight is hidden
by prepacking), split into those done in int8 (ConvInteger, MatMulInteger, and QDQ nodes whose input and weight
both come through DequantizeLinear), in fp16 (a weight stored fp16 and read as such: the fp16 preset's
convolutions) and in fp32. It is the physical anchor of speed: a CPU does at most its peak
multiply-adds a cycle, so the arithmetic over that peak is the least time a model can take there."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

ARITHMETIC = {"Conv", "ConvTranspose", "MatMul", "Gemm", "ConvInteger", "MatMulInteger"}
INT8_OPS = {"ConvInteger", "MatMulInteger"}


def node_macs(op: str, inputs: list[list[int]], outputs: list[list[int]]) -> int:
    """Multiply-adds of one node run with these input and output shapes (0 for ops that do none)."""
    if op not in ARITHMETIC or len(inputs) < 2 or not outputs:
        return 0
    weight = inputs[1]
    if op == "ConvTranspose":  # every input element is spread over Cout/group x kernel outputs
        return int(np.prod(inputs[0])) * int(np.prod(weight[1:]))
    if op.startswith("Conv"):  # every output element sums Cin/group x kernel products
        return int(np.prod(outputs[0])) * int(np.prod(weight[1:]))
    return int(np.prod(outputs[0])) * int(inputs[0][-1])  # matrix products: M x N outputs of K products each


def int8_nodes(model: onnx.ModelProto) -> set[str]:
    """Nodes that multiply in int8: the integer ops, and QDQ nodes whose data and weight are both dequantized."""
    dequantized = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return {n.name for n in model.graph.node if n.op_type in INT8_OPS or
            (n.op_type in ARITHMETIC and len(n.input) > 1 and n.input[0] in dequantized and n.input[1] in dequantized)}


def fp16_nodes(model: onnx.ModelProto) -> set[str]:
    """Nodes that multiply in fp16 where the core can: an fp16 weight read directly (not through a Cast, which is
    weight storage computed in fp32)."""
    half = {t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16}
    return {n.name for n in model.graph.node if n.op_type in ARITHMETIC and len(n.input) > 1 and n.input[1] in half}


def macs(model: Path, feeds: list[dict], sample_rate: int) -> dict[str, float]:
    """fp32, fp16 and int8 multiply-adds per second of audio over ``feeds`` (one run each)."""
    graph = onnx.load(str(model), load_external_data=False)
    in_int8, in_fp16 = int8_nodes(graph), fp16_nodes(graph)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.enable_profiling = True
    with tempfile.TemporaryDirectory() as tmp:
        options.profile_file_prefix = os.path.join(tmp, "profile")
        session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        names = {i.name for i in session.get_inputs()}
        samples = sum(session.run(None, {k: v for k, v in f.items() if k in names})[0].shape[-1] for f in feeds)
        events = json.loads(Path(session.end_profiling()).read_text())
    total = {"fp32": 0, "fp16": 0, "int8": 0}
    for event in events:
        if event.get("cat") != "Node" or not event.get("name", "").endswith("_kernel_time"):
            continue
        args = event["args"]
        work = node_macs(args.get("op_name", ""), [next(iter(i.values())) for i in args.get("input_type_shape", [])],
                         [next(iter(o.values())) for o in args.get("output_type_shape", [])])
        name = event["name"].removesuffix("_kernel_time")
        total["int8" if name in in_int8 else "fp16" if name in in_fp16 else "fp32"] += work
    seconds = samples / sample_rate
    return {kind: count / seconds for kind, count in total.items()}
