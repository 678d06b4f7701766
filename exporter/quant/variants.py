"""A variant in the voice folder: its record in the sidecar, and its streaming pieces."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from exporter.errors import ExportError
from exporter.io import atomic_write_bytes
from runtime import contract

logger = logging.getLogger(__name__)


def record(voice_dir: Path, name: str, entry: dict) -> None:
    """``entry`` (how the variant was made and measured) under ``variants`` in the sidecar."""
    sidecar_path = contract.sidecar_path(Path(voice_dir) / contract.MODEL_FILE)
    sidecar = json.loads(sidecar_path.read_text(encoding="utf-8"))
    sidecar.setdefault("variants", {})[name] = entry
    atomic_write_bytes(sidecar_path, (json.dumps(sidecar, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))


def check_voice_dir(voice_dir: Path) -> None:
    src = Path(voice_dir) / contract.MODEL_FILE
    if not src.is_file() or not contract.sidecar_path(src).is_file():
        raise ExportError(f"{voice_dir} is not an exported voice folder (needs {contract.MODEL_FILE} and its .json)")


def add_pieces(voice_dir: Path, name: str) -> None:
    """The variant's streaming pieces (its own plan, cut like model.onnx); a variant whose pieces fail
    their check is kept, and spoken whole sentences at a time."""
    from exporter import pieces

    try:
        pieces.add(voice_dir, name)
    except ExportError as exc:
        logger.error("%s; %s stays usable, without streaming", exc, name)
