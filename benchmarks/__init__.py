"""Benchmarks of PyTorch, ONNX fp32 and int8 voices (speed, memory, size, quality)."""

import runtime  # noqa: F401  (first: it switches onnxruntime's telemetry off before onnxruntime is imported)
