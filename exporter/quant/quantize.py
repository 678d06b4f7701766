"""``quantize_voice``: one int8 variant of an exported voice, by preset (``python -m exporter quantize``)."""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from exporter.quant.budget import Comparison
from exporter.quant.build import build
from exporter.quant.calibration import CALIBRATION_SENTENCES
from exporter.quant.finetune import FinetuneConfig, finetune_voice
from exporter.quant.plans import DEFAULT_PRESET, FINETUNED, preset
from exporter.quant.search import search
from exporter.quant.variants import add_pieces, check_voice_dir, record
from runtime import cpu

__all__ = ["FinetuneConfig", "quantize_voice"]


def quantize_voice(voice_dir: Path, preset_name: str = DEFAULT_PRESET, *, target: str | None = None,
                   budget=None, report=print, finetune: FinetuneConfig | None = None) -> Path:
    """Write ``voice_dir/model.<preset>.onnx`` and record how it was made (and measured) in the sidecar.
    ``finetune``: the fine-tuned preset's training (its defaults otherwise); given to ``auto``, decoder stages get a
    fine-tuned rung (exporter/quant/search.py)."""
    voice_dir = Path(voice_dir)
    check_voice_dir(voice_dir)
    if preset_name == "auto":
        return search(voice_dir, target=target, budget=budget, report=report, finetune_cfg=finetune)
    if preset_name == FINETUNED:
        return finetune_voice(voice_dir, target=target, budget=budget, cfg=finetune, report=report)
    cfg = preset(preset_name, target)
    dst = voice_dir / f"model.{cfg.preset}.onnx"
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=".vits-edge-quant-", dir=voice_dir) as tmp:
        staged = Path(tmp) / "model.onnx"
        build(voice_dir, cfg, staged)
        measured = Comparison(voice_dir, CALIBRATION_SENTENCES).measure(staged).to_dict()
        measured.update(seconds=round(time.perf_counter() - start, 1), timed_on=cpu.describe())
        shutil.move(str(staged), dst)
    record(voice_dir, dst.name, {"config": asdict(cfg), "measured": measured})
    logging.getLogger(__name__).info("wrote %s: %s", dst, measured)
    add_pieces(voice_dir, dst.name)
    return dst
