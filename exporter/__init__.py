"""vits-edge exporter: Coqui VITS checkpoint -> verified ONNX voice (build machine only)."""

import runtime  # noqa: F401  (first: it switches onnxruntime's telemetry off before onnxruntime is imported)
