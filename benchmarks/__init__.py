"""Benchmarks of PyTorch, ONNX fp32 and int8 voices (speed, memory, size, quality)."""
