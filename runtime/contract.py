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
# float32 [batch, d_vector_dim], only for d-vector voices: the speaker's d-vector where sid is -1 (a named speaker's
# is a table inside the graph, picked by sid >= 0)
SPEAKER_EMBEDDING = "speaker_embedding"
LANGID = "langid"  # int64 [batch], only for voices with languages
SPEAKER_INPUTS = (SID, SPEAKER_EMBEDDING)
OUTPUT = "output"  # float32 [batch, 1, samples]
OUTPUT_LENGTHS = "output_lengths"  # int64 [batch]: valid samples of each item

# Streaming pieces: the voice cut where the durations are known and again after the flow (see
# runtime/pieces.py, runtime/chunking.py and exporter/split.py). The frontend takes the graph inputs above
# (and DURATION_NOISE); the flow takes LATENTS, its crops and the speaker (SID, SPEAKER_EMBEDDING) and gives Z; the
# vocoder (HiFi-GAN) takes Z, its crops and the speaker and gives OUTPUT.
MEANS = "means"  # float32 [1, channels, tokens]: the prior's mean for each token
LOG_SCALES = "log_scales"  # float32 [1, channels, tokens]: the prior's log standard deviation
DURATION_NOISE = "duration_noise"  # float32 [1, channels, tokens]: N(0, 1) for the duration predictor (scaled in it)
DURATIONS = "durations"  # float32 [1, 1, tokens]: frames of each token (whole numbers, length scale applied)
LATENTS = "latents"  # float32 [1, channels, frames]: a window of the sentence's prior sample
Z = "z"  # float32 [1, channels, frames]: the flow's output, the vocoder's input
CROP_STARTS = "crop_starts"  # int64 [crop points]: where the decoder piece crops each tensor (chunking.ChunkPlan)
CROP_ENDS = "crop_ends"  # int64 [crop points]

MODEL_FILE = "model.onnx"
TEXT_MODEL_SUFFIX = ".text.onnx"  # model.text.onnx: text in, audio out (a character voice's frontend in the graph)
PIECES_DIR = "pieces"  # beside the models: pieces/<model stem>.<piece>.onnx
PIECES = ("frontend", "flow", "vocoder")
METADATA_KEY = "vits_edge"  # metadata_props key holding the whole sidecar as JSON
# The sidecar's record of the folder's default model: {"model": "model.auto.onnx", "int8_class": "int8 dot-product"
# or null when the plan computes nothing in int8}, written when a variant judged to sound the same is made
# (runtime.config.default_model reads it)
DEFAULT_KEY = "default"
# ... and, beside it, the model that speaks instead on CPUs with fp16 arithmetic: {"fp16_arithmetic":
# "model.fp16.onnx"}, written when the fp16 preset is judged to sound the same on an emulated Pi 5's audio
FP16_DEFAULT = "fp16_arithmetic"
FP32 = "fp32"  # the variant name of a folder's model.onnx


def piece_name(model_name: str, piece: str) -> str:
    """``model.auto.onnx``, ``vocoder`` -> ``pieces/model.auto.vocoder.onnx`` (relative to the voice folder)."""
    stem = model_name.removesuffix(".onnx")
    return f"{PIECES_DIR}/{stem}.{piece}.onnx"


def variant_name(model_name: str) -> str:
    """``model.onnx`` -> ``fp32``, ``model.auto.onnx`` -> ``auto``: how ``--variant`` names a folder's models."""
    if model_name == MODEL_FILE:
        return FP32
    return model_name.removeprefix("model.").removesuffix(".onnx")


def variant_file(variant: str) -> str:
    """``fp32`` -> ``model.onnx``, ``auto`` -> ``model.auto.onnx``."""
    return MODEL_FILE if variant == FP32 else f"model.{variant}.onnx"


def voice_models(voice_dir: Path) -> list[Path]:
    """``model.onnx`` and its variants ``model.*.onnx`` (they share its sidecar); not the text-in models."""
    voice_dir = Path(voice_dir)
    variants = sorted(p for p in voice_dir.glob("model.*.onnx") if not p.name.endswith(TEXT_MODEL_SUFFIX))
    return [voice_dir / MODEL_FILE, *variants]


def sidecar_path(onnx_path: Path) -> Path:
    """``model.onnx`` -> ``model.onnx.json`` (Piper's convention)."""
    onnx_path = Path(onnx_path)
    return onnx_path.with_name(onnx_path.name + ".json")
