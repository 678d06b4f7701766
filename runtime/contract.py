"""The file contract shared by the exporter and the runtime, written down once.

An exported voice is a folder holding ``model.onnx`` (and quantized siblings such as
``model.int8.onnx``) beside one JSON sidecar, ``model.onnx.json``.  The exporter writes both;
the runtime reads them.  Nothing else passes between the two sides.
"""

from __future__ import annotations

from pathlib import Path

SCHEMA_VERSION = 1
FORMAT = "vits-edge"

# Graph inputs and outputs.
INPUT = "input"  # int64 [batch, tokens]
INPUT_LENGTHS = "input_lengths"  # int64 [batch]
SCALES = "scales"  # float32 [3]: noise_scale, length_scale, noise_scale_w
SID = "sid"  # int64 [batch], only for voices with speakers
LANGID = "langid"  # int64 [batch], only for voices with languages
OUTPUT = "output"  # float32 [batch, 1, samples]
OUTPUT_LENGTHS = "output_lengths"  # int64 [batch]: valid samples of each item

MODEL_FILE = "model.onnx"
METADATA_KEY = "vits_edge"  # metadata_props key holding the whole sidecar as JSON


def sidecar_path(onnx_path: Path) -> Path:
    """``model.onnx`` -> ``model.onnx.json`` (Piper's convention)."""
    onnx_path = Path(onnx_path)
    return onnx_path.with_name(onnx_path.name + ".json")
