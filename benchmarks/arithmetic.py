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
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

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


def _gemm_model(size: int, int8: bool) -> bytes:
    """A ``size``³ matrix product with a constant weight: MatMul in fp32, or MatMulInteger (uint8 data, int8
    weight: the dynamic quantizer's pair)."""
    rng = np.random.default_rng(0)
    if int8:
        weight = numpy_helper.from_array(rng.integers(-127, 128, (size, size), dtype=np.int8), "w")
        node = helper.make_node("MatMulInteger", ["x", "w"], ["y"])
        x = helper.make_tensor_value_info("x", TensorProto.UINT8, [size, size])
        y = helper.make_tensor_value_info("y", TensorProto.INT32, [size, size])
    else:
        weight = numpy_helper.from_array(rng.standard_normal((size, size), dtype=np.float32), "w")
        node = helper.make_node("MatMul", ["x", "w"], ["y"])
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [size, size])
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [size, size])
    graph = helper.make_graph([node], "gemm", [x], [y], [weight])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()


def host_peak(threads: int, size: int = 1024, repeats: int = 7) -> dict[str, float]:
    """This machine's multiply-adds a second at ``threads`` threads through onnxruntime's own matrix kernels
    (MLAS): the best of ``repeats`` ``size``³ products in fp32 (MatMul) and in int8 (MatMulInteger). The most a
    model's convolutions and products can reach here, measured rather than read from a data sheet, whose clock a
    virtual machine does not report. fp16 nodes compute in fp32 on x86, so they count against the fp32 peak."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    peak = {}
    for kind, int8 in (("fp32", False), ("int8", True)):
        session = ort.InferenceSession(_gemm_model(size, int8), options, providers=["CPUExecutionProvider"])
        rng = np.random.default_rng(1)
        x = (rng.integers(0, 256, (size, size), dtype=np.uint8) if int8
             else rng.standard_normal((size, size), dtype=np.float32))
        session.run(None, {"x": x})  # warm-up: the weight is packed on the first run
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            session.run(None, {"x": x})
            best = min(best, time.perf_counter() - start)
        peak[kind] = size ** 3 / best
    peak["fp16"] = peak["fp32"]
    return peak


def least_seconds(macs: dict[str, float], peak: dict[str, float]) -> float:
    """Seconds ``macs`` (multiply-adds by kind) take at ``peak`` (multiply-adds a second by kind)."""
    return sum(n / peak[kind] for kind, n in macs.items() if n)


def limits(contenders: list[dict], feeds: list[dict], sample_rate: int, threads: int) -> dict:
    """How far each of our models is from this machine's limit: its multiply-adds per second of audio (counted
    from its graph on ``feeds``), the least real-time factor they allow at this machine's measured peak at
    ``threads`` threads, and the share of that peak its measured real-time factor reaches. The PyTorch fp32 row
    does the fp32 file's arithmetic (the same graph). Peers' files take other inputs and are left out."""
    peak = host_peak(threads)
    counted: dict[str, dict[str, float]] = {}
    for row in contenders:
        if not str(row.get("key", "")).startswith("ort-") or row.get("status") != "ok":
            continue
        model = next((Path(f) for f in row.get("model_files", {}) if f.endswith(".onnx")), None)
        if model is not None and model.is_file():
            counted[row["key"]] = macs(model, feeds, sample_rate)
    if "ort-fp32" in counted:
        counted["pytorch-fp32"] = counted["ort-fp32"]
    rows = {}
    for row in contenders:
        rtf = (row.get("speed") or {}).get("rtf")
        if row.get("key") not in counted or not rtf:
            continue
        work = counted[row["key"]]
        least = least_seconds(work, peak)
        rows[row["key"]] = {"macs_per_audio_s": work, "least_rtf": least, "rtf": rtf["median"],
                            "share_of_peak": least / rtf["median"]}
    return {"threads": threads, "peak_macs_per_s": peak, "rows": rows}


def markdown(limit: dict, labels: dict[str, str]) -> list[str]:
    """The benchmark report's section: each model's arithmetic and the share of this machine's peak it reaches."""
    peak, n = limit["peak_macs_per_s"], limit["threads"]
    out = ["## How far from the limit", "",
           f"Arithmetic: the graph's multiply-adds per second of audio, counted from onnxruntime's profile of a run "
           f"(fp32 + int8). This machine's peak at {n} thread{'s' if n > 1 else ''}, measured through onnxruntime's "
           f"own matrix kernels (a 1024³ MatMul and MatMulInteger, best of 7): {peak['fp32'] / 1e9:.0f} GMAC/s fp32, "
           f"{peak['int8'] / 1e9:.0f} GMAC/s int8. Least RTF: the time the arithmetic takes at that peak; of peak: "
           "least RTF over the measured RTF. The rest of the time goes to what is not a matrix product (activations, "
           "the flow, quantizing and dequantizing) and to kernels short of the peak.", "",
           "| contender | GMAC per s of audio (fp32 + int8) | least RTF at peak | RTF | of peak |",
           "|---|---|---|---|---|"]
    for key, r in limit["rows"].items():
        m = r["macs_per_audio_s"]
        out.append(f"| {labels.get(key, key)} | {(m['fp32'] + m.get('fp16', 0)) / 1e9:.2f} + {m['int8'] / 1e9:.2f} | "
                   f"{r['least_rtf']:.4f} | {r['rtf']:.3f} | {r['share_of_peak']:.0%} |")
    return out
