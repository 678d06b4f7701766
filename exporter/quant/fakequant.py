"""A QDQ graph run in torch with onnxruntime's int8 arithmetic simulated, to be trained (exporter/quant/finetune.py).

The student is not a re-implementation of the decoder: it is the very QDQ graph that ``build`` wrote
(the vocoder piece cut from it), executed node by node, so every quantized tensor, every shared scale and
every op between them is the one onnxruntime runs. Each ``QuantizeLinear``/``DequantizeLinear`` pair
becomes fake quantization, as onnxruntime computes it:

* activations: ``q = clamp(round_half_even(x / s) + zp, 0, 255)``, ``x^ = (q - zp) * s`` (unsigned, asymmetric);
  ``s`` and ``zp`` are learned (LSQ+: ``log s`` and a real-valued zero point, both through a
  straight-through rounding), a scale shared by several tensors (onnxruntime gives a Reshape the scale of
  its input) is one parameter;
* weights: signed symmetric int8 per output channel, ``s_w = max|w| / 127`` as onnxruntime's quantizer
  derives it, the rounding straight-through; the fp32 weights are what is trained;
* biases: int32 at ``s_in * s_w``, as the quantizer stores them for QLinearConv.

``write_back`` puts the trained integers and scales into the same initializers of the whole QDQ model: the
file keeps its nodes, and the runtime needs nothing new. Teacher mode runs the same graph with no
quantization and the original fp32 weights: the fp32 vocoder, tensor for tensor.
"""

from __future__ import annotations

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import helper, numpy_helper

QUANTIZED_SUFFIX = "_quantized"


def _round(x: torch.Tensor) -> torch.Tensor:
    """Round half to even (onnxruntime's and torch's rule) with a straight-through gradient."""
    return x + (torch.round(x) - x).detach()


def _attr(node, name, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


class FakeQuantGraph(torch.nn.Module):
    """``model`` (a QDQ ONNX piece) as a torch module; ``fp32`` maps weight names (without ``_quantized``) to
    the fp32 weights they were quantized from (the model in the polyphase form ``build`` quantized)."""

    def __init__(self, model: onnx.ModelProto, fp32: dict[str, np.ndarray]):
        super().__init__()
        graph = model.graph
        self.nodes = list(graph.node)
        self.inputs = [i.name for i in graph.input]
        self.outputs = [o.name for o in graph.output]
        inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        producer = {o: n for n in self.nodes for o in n.output}

        def dq_of_initializer(tensor):
            node = producer.get(tensor)
            if node is not None and node.op_type == "DequantizeLinear" and node.input[0] in inits:
                return node
            return None

        self.weights = torch.nn.ParameterDict()  # trained (fp32 values, quantized in the forward)
        self.teacher: dict[str, torch.Tensor] = {}  # the original fp32 weights (teacher mode)
        self.act_log_scale = torch.nn.ParameterDict()
        self.act_zero_point = torch.nn.ParameterDict()
        self.constants: dict[str, torch.Tensor] = {}
        # int8 conv node -> (weight name, its scale's name, (bias name, its scale's name) or None, input scale name)
        self.conv_params: dict[str, tuple] = {}
        self._keys: dict[str, str] = {}
        skip = set()

        def key(name):  # ParameterDict keys may not contain "."
            return self._keys.setdefault(name, f"p{len(self._keys)}")

        for node in self.nodes:
            if node.op_type == "Conv":
                w_dq = dq_of_initializer(node.input[1])
                if w_dq is None:
                    continue
                b_dq = dq_of_initializer(node.input[2]) if len(node.input) > 2 and node.input[2] else None
                base_w = w_dq.input[0][:-len(QUANTIZED_SUFFIX)]
                in_dq = producer.get(node.input[0])
                # a float input (its pair left out by a plan's keep_fp32): onnxruntime dequantizes the weights and
                # the int32 bias (at the scale it was stored with) and convolves in fp32
                in_scale = in_dq.input[1] if in_dq is not None and in_dq.op_type == "DequantizeLinear" else None
                self._add_weight(key(base_w), fp32.get(base_w, self._dequantize(inits, w_dq)))
                skip.add(w_dq.name)
                bias = None
                if b_dq is not None:
                    base_b = b_dq.input[0][:-len(QUANTIZED_SUFFIX)]
                    self._add_weight(key(base_b), fp32.get(base_b, self._dequantize(inits, b_dq)))
                    skip.add(b_dq.name)
                    bias = (base_b, b_dq.input[1])
                self.conv_params[node.name] = (base_w, w_dq.input[1], bias, in_scale)
            elif node.op_type == "QuantizeLinear":
                scale, zp = node.input[1], node.input[2]
                if key(scale) not in self.act_log_scale:
                    self.act_log_scale[key(scale)] = torch.nn.Parameter(
                        torch.tensor(float(np.log(inits[scale])), dtype=torch.float32))
                    self.act_zero_point[key(scale)] = torch.nn.Parameter(
                        torch.tensor(float(inits[zp]), dtype=torch.float32))
                    if inits[zp].dtype != np.uint8:
                        raise ValueError(f"{node.name}: activations must be uint8 (build() writes them so)")
        for name, value in inits.items():
            self.constants[name] = torch.from_numpy(np.array(value))
        for node in self.nodes:  # Constant nodes are constants: made once, moved with the rest
            if node.op_type == "Constant":
                self.constants[node.output[0]] = torch.from_numpy(np.array(numpy_helper.to_array(_attr(node, "value"))))
                skip.add(node.name)
        self.skip = skip
        self.zero_point_names = {n.input[1]: n.input[2] for n in self.nodes if n.op_type == "QuantizeLinear"}

    def to_device(self, device) -> FakeQuantGraph:
        """Parameters, constants and the teacher's weights on ``device`` (a GPU where torch sees one)."""
        self.to(device)
        self.constants = {k: v.to(device) for k, v in self.constants.items()}
        self.teacher = {k: v.to(device) for k, v in self.teacher.items()}
        return self

    def _add_weight(self, k: str, value: np.ndarray) -> None:
        self.weights[k] = torch.nn.Parameter(torch.from_numpy(np.array(value, dtype=np.float32)))
        self.teacher[k] = self.weights[k].detach().clone()

    @staticmethod
    def _dequantize(inits, dq) -> np.ndarray:
        q, s = inits[dq.input[0]].astype(np.float32), inits[dq.input[1]]
        axis = _attr(dq, "axis", 1)
        shape = [1] * q.ndim
        if np.ndim(s):
            shape[axis] = -1
        return q * np.reshape(s, shape)

    # -- quantization as onnxruntime computes it ------------------------------------------------------
    def scale(self, name: str) -> torch.Tensor:
        return torch.exp(self.act_log_scale[self._keys[name]])

    def zero_point(self, name: str) -> torch.Tensor:
        return torch.clamp(_round(self.act_zero_point[self._keys[name]]), 0, 255)

    def quantize(self, x: torch.Tensor, scale: str) -> torch.Tensor:
        """Integers in a float tensor (gradients straight through the rounding, LSQ's for the scale)."""
        return torch.clamp(_round(x / self.scale(scale)) + self.zero_point(scale), 0, 255)

    def dequantize(self, q: torch.Tensor, scale: str) -> torch.Tensor:
        return (q - self.zero_point(scale)) * self.scale(scale)

    def weight(self, name: str, quantized: bool) -> torch.Tensor:
        w = self.weights[self._keys[name]]
        if not quantized:
            return w
        return self.weight_step(name) * torch.clamp(_round(w / self.weight_step(name)), -127, 127)

    def weight_step(self, name: str) -> torch.Tensor:
        w = self.weights[self._keys[name]].detach()
        step = w.abs().reshape(w.shape[0], -1).max(dim=1).values / 127.0
        step = torch.where(step == 0, torch.ones_like(step), step)
        return step.reshape(-1, *([1] * (w.ndim - 1)))

    # -- the graph ----------------------------------------------------------------------------------
    def forward(self, feeds: dict[str, torch.Tensor], *, quantized: bool = True, record: set[str] | None = None,
                teacher: bool = False) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The graph's first output, and the float tensors named in ``record`` (the inputs of quantization)."""
        env: dict[str, torch.Tensor] = dict(self.constants)
        env.update(feeds)
        seen = {}
        for node in self.nodes:
            if node.name in self.skip:
                continue
            out = self._run(node, env, quantized, teacher)
            for name, value in zip(node.output, out if isinstance(out, tuple) else (out,)):
                env[name] = value
                if record is not None and name in record:
                    seen[name] = value
        return env[self.outputs[0]], seen

    def _run(self, node, env, quantized: bool, teacher: bool):
        op, x = node.op_type, [env.get(i) if i else None for i in node.input]
        if op == "QuantizeLinear":
            if node.input[0] in self.constants:  # a constant (the frame mask): quantize as stored
                return self._const_quantize(node, x)
            return self.quantize(x[0], node.input[1]) if quantized else x[0]
        if op == "DequantizeLinear":
            if node.input[1] in self.zero_point_names:
                return self.dequantize(x[0], node.input[1]) if quantized else x[0]
            return self._const_dequantize(node, x)
        if op == "Conv":
            return self._conv(node, x, quantized, teacher)
        if op == "ConvTranspose":  # an upsampler left in floating point (a stage of the plan not in int8)
            pads = _attr(node, "pads", [0, 0])
            return F.conv_transpose1d(x[0], x[1], x[2] if len(x) > 2 else None, stride=_attr(node, "strides", [1])[0],
                                      padding=pads[0], output_padding=_attr(node, "output_padding", [0])[0],
                                      groups=_attr(node, "group", 1), dilation=_attr(node, "dilations", [1])[0])
        if op == "Add":
            return x[0] + x[1]
        if op == "Mul":
            return x[0] * x[1]
        if op == "Div":
            return x[0] / x[1]
        if op == "LeakyRelu":
            return F.leaky_relu(x[0], _attr(node, "alpha", 0.01))
        if op == "Tanh":
            return torch.tanh(x[0])
        if op == "Identity":
            return x[0]
        if op == "Cast":
            return x[0].to(torch.float32) if _attr(node, "to") == onnx.TensorProto.FLOAT else x[0]
        if op == "Reshape":
            shape = [int(v) for v in x[1]]
            shape = [x[0].shape[i] if v == 0 else v for i, v in enumerate(shape)]
            return x[0].reshape(shape)
        if op == "Transpose":
            return x[0].permute(*_attr(node, "perm"))
        if op == "Unsqueeze":
            out = x[0]
            for axis in sorted(int(a) for a in x[1]):
                out = out.unsqueeze(axis)
            return out
        if op == "Gather":
            return torch.index_select(x[0], _attr(node, "axis", 0), x[1].reshape(-1).long()).reshape(
                *x[0].shape[:_attr(node, "axis", 0)], *x[1].shape, *x[0].shape[_attr(node, "axis", 0) + 1:])
        if op == "Slice":
            starts, ends, axes = (int(v) for v in x[1]), (int(v) for v in x[2]), [int(v) for v in x[3]]
            out = x[0]
            for axis, start, end in zip(axes, starts, ends):
                length = out.shape[axis]
                start, end = max(0, min(start, length)), max(0, min(end, length))
                out = out.narrow(axis, start, max(0, end - start))
            return out
        raise ValueError(f"{node.name}: op {op} is not simulated (exporter/quant/fakequant.py)")

    @staticmethod
    def _const_quantize(node, x):
        s, zp = x[1], x[2].to(torch.float32)
        return torch.clamp(torch.round(x[0] / s) + zp, 0, 255)

    def _const_dequantize(self, node, x):
        q, s = x[0].to(torch.float32), x[1].to(torch.float32)
        zp = x[2].to(torch.float32) if len(x) > 2 and x[2] is not None else torch.zeros((), device=q.device)
        if s.ndim:
            shape = [1] * q.ndim
            shape[_attr(node, "axis", 1)] = -1
            s, zp = s.reshape(shape), zp.reshape(shape) if zp.ndim else zp
        return (q - zp) * s

    def _conv(self, node, x, quantized: bool, teacher: bool):
        params = self.conv_params.get(node.name)
        if params is None:
            w, b = x[1], x[2] if len(x) > 2 else None
        else:
            base_w, _, bias, in_scale = params
            if teacher:
                w = self.teacher[self._keys[base_w]]
                b = self.teacher[self._keys[bias[0]]] if bias else None
            else:
                w = self.weight(base_w, quantized)
                b = self.weights[self._keys[bias[0]]] if bias else None
                if b is not None and quantized:
                    step = self._bias_step(base_w, bias, in_scale)
                    b = _round(b / step) * step
        pads = _attr(node, "pads", [0, 0])
        if pads[0] != pads[-1]:
            x0 = F.pad(x[0], (pads[0], pads[-1]))
            pad = 0
        else:
            x0, pad = x[0], pads[0]
        return F.conv1d(x0, w, b, stride=_attr(node, "strides", [1])[0], padding=pad,
                        dilation=_attr(node, "dilations", [1])[0], groups=_attr(node, "group", 1))

    def _bias_step(self, base_w: str, bias: tuple, in_scale: str | None) -> torch.Tensor:
        """An int32 bias's step: input scale x weight step, or, on a float input, the scale it is stored with."""
        if in_scale is None:
            return self.constants[bias[1]].to(torch.float32).reshape(-1)
        return self.scale(in_scale) * self.weight_step(base_w).reshape(-1)

    # -- back into the ONNX file -----------------------------------------------------------------------
    @torch.no_grad()
    def write_back(self, model: onnx.ModelProto) -> int:
        """The trained weights (as int8/int32 with their scales) and activation scales and zero points into
        ``model``'s initializers of the same names (the whole QDQ model the piece was cut from). Returns how
        many initializers changed."""
        inits = {t.name: t for t in model.graph.initializer}
        new: dict[str, np.ndarray] = {}
        self.to_device("cpu")
        for base_w, w_scale, bias, in_scale in self.conv_params.values():
            step = self.weight_step(base_w)
            w = self.weights[self._keys[base_w]]
            new[base_w + QUANTIZED_SUFFIX] = torch.clamp(torch.round(w / step), -127, 127).numpy().astype(np.int8)
            new[w_scale] = step.reshape(-1).numpy().astype(np.float32)
            if bias:
                b_step = self._bias_step(base_w, bias, in_scale).numpy().astype(np.float32)
                b = self.weights[self._keys[bias[0]]].numpy()
                new[bias[0] + QUANTIZED_SUFFIX] = np.round(b / b_step).astype(np.int32)
                new[bias[1]] = b_step
        for scale, zp in self.zero_point_names.items():
            if scale in self._keys:
                new[scale] = np.asarray(self.scale(scale).numpy(), dtype=np.float32).reshape(
                    numpy_helper.to_array(inits[scale]).shape)
                new[zp] = np.asarray(self.zero_point(scale).numpy(), dtype=np.uint8).reshape(
                    numpy_helper.to_array(inits[zp]).shape)
        for name, value in new.items():
            if name not in inits:
                raise ValueError(f"{name} is not in the model the piece was cut from")
            old = inits[name]
            if tuple(old.dims) != value.shape or numpy_helper.to_array(old).dtype != value.dtype:
                raise ValueError(f"{name}: {value.dtype}{value.shape} does not fit {tuple(old.dims)}")
            old.CopyFrom(numpy_helper.from_array(value, name))
        return len(new)
