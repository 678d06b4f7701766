"""vits-edge exporter: Coqui VITS checkpoint -> verified ONNX voice (build machine only)."""
