"""A variant in the voice folder: its record in the sidecar, and its streaming pieces."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

from exporter import pieces
from exporter.errors import ExportError
from exporter.io import atomic_write_bytes
from exporter.quant.plans import COMPUTE, QuantConfig
from runtime import contract

logger = logging.getLogger(__name__)


def _update_sidecar(voice_dir: Path, change) -> None:
    sidecar_path = contract.sidecar_path(Path(voice_dir) / contract.MODEL_FILE)
    sidecar = json.loads(sidecar_path.read_text(encoding="utf-8"))
    change(sidecar)
    atomic_write_bytes(sidecar_path, (json.dumps(sidecar, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))


def record(voice_dir: Path, name: str, entry: dict) -> None:
    """``entry`` (how the variant was made and measured) under ``variants`` in the sidecar."""
    _update_sidecar(voice_dir, lambda sidecar: sidecar.setdefault("variants", {}).__setitem__(name, entry))


def make_default(voice_dir: Path, name: str, cfg: QuantConfig, timed_on: dict) -> None:
    """Make ``name`` (a variant judged inside the budget: ``auto``'s, or the fine-tuned one) the model the folder
    speaks when none is asked for (runtime.config.default_model). A plan that computes in int8 was chosen by
    timings on one CPU class, and is the default only on CPUs of that class; weight storage alone runs fp32's
    kernels, and is the default everywhere."""
    computes = any(option in COMPUTE for _, option in cfg.plan)
    entry = {"model": name, "int8_class": timed_on["int8_class"] if computes else None}
    _update_default(voice_dir, lambda default: default.update(entry))
    logger.info("%s is now the default of %s%s", name, voice_dir,
                f" on {entry['int8_class']} CPUs" if entry["int8_class"] else "")


def make_fp16_default(voice_dir: Path, name: str | None) -> None:
    """Make ``name`` (the fp16 preset's file, judged inside the budget on the audio of an emulated Pi 5) the model
    the folder speaks on CPUs with fp16 arithmetic (the Pi 5's class), ahead of the int8 default: by the Pi 5's
    estimate it is the faster of the two (docs/device.md). Elsewhere its Convs run in fp32 behind Casts.
    ``None``: no fp16 default (a remade file that was not judged inside the budget)."""
    def change(default: dict) -> None:
        default.pop(contract.FP16_DEFAULT, None)
        if name:
            default[contract.FP16_DEFAULT] = name
    _update_default(voice_dir, change)
    if name:
        logger.info("%s is now the default of %s on CPUs with fp16 arithmetic", name, voice_dir)


def _update_default(voice_dir: Path, change: Callable[[dict], None]) -> None:
    """The sidecar's default record, changed in place by ``change``, its other fields kept: an int8 default and an
    fp16 one live side by side."""
    def update(sidecar: dict) -> None:
        sidecar[contract.DEFAULT_KEY] = default = dict(sidecar.get(contract.DEFAULT_KEY) or {})
        change(default)
    _update_sidecar(voice_dir, update)


def check_voice_dir(voice_dir: Path) -> None:
    src = Path(voice_dir) / contract.MODEL_FILE
    if not src.is_file() or not contract.sidecar_path(src).is_file():
        raise ExportError(f"{voice_dir} is not an exported voice folder (needs {contract.MODEL_FILE} and its .json)")


def add_pieces(voice_dir: Path, name: str) -> None:
    """The variant's streaming pieces (its own plan, cut like model.onnx); a variant whose pieces fail
    their check is kept, and spoken whole sentences at a time."""
    try:
        pieces.add(voice_dir, name)
    except ExportError as exc:
        logger.error("%s; %s stays usable, without streaming", exc, name)
