"""Activation ranges for static QDQ: percentile calibration on built-in sentences, cached per voice."""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from pathlib import Path

import onnx
from onnxruntime.quantization.calibrate import PercentileCalibrater, TensorsData, save_tensors_data

from exporter.quant import polyphase
from exporter.quant.plans import QuantConfig
from exporter.quant.units import STATIC_UNITS, node_units
from runtime import contract
from runtime.config import FP32
from runtime.voice import Voice

CALIBRATION_OPS = ("Conv", "MatMul", "Add", "LeakyRelu", "Mul")  # one calibration serves every plan

CALIBRATION_SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "She sells sea shells by the sea shore, and the shells she sells are surely seashells.",
    "How much wood would a woodchuck chuck if a woodchuck could chuck wood?",
    "Please call Stella and ask her to bring these things with her from the store.",
    "Six spoons of fresh snow peas, five thick slabs of blue cheese, and maybe a snack for her brother.",
    "We also need a small plastic snake and a big toy frog for the kids.",
    "A rainbow is a division of white light into many beautiful colors.",
    "Yesterday, at half past seven, the orchestra played a quiet piece by an unknown composer.",
    "Is this the right way to the station, or should we turn back?",
    "Wow! That was absolutely incredible.",
    "Numbers like 1,234 and dates like March 3rd, 2021 should be read clearly.",
    "The committee will meet again on Thursday to discuss the budget.",
    "Hmm, I am not sure that is what she meant.",
    "Every morning he walks his dog along the river before work.",
    "Thunder rolled across the valley as the storm approached the village.",
    "Could you spell your name for me, please?",
)


@contextlib.contextmanager
def quiet_quantizer():
    """onnxruntime's quantizer logs on the root logger (a pre-processing hint, a line per tensor it
    skips) and prints calibration progress: none of it is news to our user."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


def _calibration_feeds(voice_dir: Path, count: int) -> list[dict]:
    """One feed per calibration sentence, at zero noise and the voice's length scale."""
    voice = Voice.load(voice_dir, variant=FP32)
    call = voice.resolve(noise_scale=0.0, noise_w=0.0)  # the first speaker and language
    return [call.feeds(voice.text_to_ids(text)) for text in CALIBRATION_SENTENCES[:count]]


class _Reader:
    def __init__(self, feeds):
        self._it = iter(feeds)

    def get_next(self):
        return next(self._it, None)


def calibrate(voice_dir: Path, cfg: QuantConfig, cache: Path) -> None:
    """Activation ranges of every tensor that static QDQ may quantize (those of the units in
    STATIC_UNITS), saved to ``cache`` once and reused by every plan built from it (auto builds dozens)."""
    if cache.is_file():
        return
    feeds = _calibration_feeds(voice_dir, cfg.calibration_sentences)
    with tempfile.TemporaryDirectory(prefix="vits-edge-cal-") as tmp, quiet_quantizer():
        # Calibrated in the polyphase form, so that every plan finds the ranges of its tensors (the
        # upsamplers' outputs have the same values in both forms).
        model = onnx.load(str(Path(voice_dir) / contract.MODEL_FILE))
        polyphase.rewrite(model, lambda node: True)
        src = Path(tmp) / "polyphase.onnx"
        onnx.save(model, str(src))
        units = node_units(model)
        keep = {t for n in model.graph.node if units.get(n.name, "").startswith(STATIC_UNITS)
                for t in (*n.input, *n.output)}

        class Calibrater(PercentileCalibrater):  # only what can be quantized: a third of the tensors
            def select_tensors_to_calibrate(self, model):
                tensors, value_infos = super().select_tensors_to_calibrate(model)
                return tensors & keep, value_infos

        calibrator = Calibrater(src, list(CALIBRATION_OPS), str(Path(tmp) / "aug.onnx"), symmetric=True,
                                percentile=dict(cfg.percentiles)[""])
        calibrator.augment_graph()
        calibrator.create_inference_session()
        # One sentence at a time: the histograms merge across calls, while collecting several feeds at
        # once stacks their tensors (frame counts differ: it fails) and holds them all in memory.
        for feed in feeds:
            calibrator.collect_data(_Reader([feed]))
        unit_of = {out: units.get(n.name, "") for n in model.graph.node for out in n.output}
        ranges = _percentile_ranges(calibrator.collector, calibrator.compute_data(), unit_of, cfg.percentiles)
        save_tensors_data(ranges, cache)


def _percentile_ranges(collector, ranges, unit_of: dict[str, str], percentiles: tuple[tuple[str, float], ...]):
    """Each tensor clipped at the percentile of the unit that makes it (one histogram pass)."""
    by_percentile = {}
    for pct in {p for _, p in percentiles}:
        collector.percentile = pct
        by_percentile[pct] = collector.compute_collection_result()

    def percentile(tensor: str) -> float:
        unit = unit_of.get(tensor, "")
        return next(p for prefix, p in percentiles if unit == prefix or unit.startswith(prefix))

    return TensorsData(ranges.calibration_method, {name: by_percentile[percentile(name)][name] for name in ranges.data})
