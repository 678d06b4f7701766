"""``quantize_voice``: one int8 variant of an exported voice, by preset (``python -m exporter quantize``)."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path

from exporter.io import publish, staging
from exporter.pi import cost, estimate
from exporter.quant.budget import JUDGE_SENTENCES, Budget, Comparison, Listener, Speed, within
from exporter.quant.build import build
from exporter.quant.calibration import CALIBRATION_SENTENCES
from exporter.quant.finetune import FinetuneConfig, finetune_voice
from exporter.quant.plans import DEFAULT_PRESET, FINETUNED, FP16, preset
from exporter.quant.search import search
from exporter.quant.variants import add_pieces, check_voice_dir, make_fp16_default, record
from runtime import contract, cpu

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
    with staging(dst) as tmp:
        staged = tmp / "model.onnx"
        build(voice_dir, cfg, staged)
        if cfg.preset == FP16 and not cpu.has_fp16_arithmetic():
            measured = _on_a_pi5(voice_dir, staged, budget or Budget(), report)
        else:
            measured = Comparison(voice_dir, CALIBRATION_SENTENCES).measure(staged).to_dict()
            measured.update(timed_on=cpu.describe())
        measured.update(seconds=round(time.perf_counter() - start, 1))
        publish(staged, dst)
    record(voice_dir, dst.name, {"config": asdict(cfg), "measured": measured})
    if cfg.preset == FP16:  # the default on a Pi 5 only when judged on its audio, listeners and all
        make_fp16_default(voice_dir, dst.name if measured.get("within_budget") else None)
    logging.getLogger(__name__).info("wrote %s: %s", dst, measured)
    add_pieces(voice_dir, dst.name)
    return dst


def _on_a_pi5(voice_dir: Path, model: Path, budget: Budget, report) -> dict:
    """The fp16 preset measured where its arithmetic exists: this machine runs fp16 Convs in fp32, so its audio
    would say nothing. The sound is judged on audio made on an emulated Cortex-A76 (a Pi 5), by the budget's
    measures and its listeners (at zero noise: emulated audio is made without noise, so fp32's and the Pi's are
    the same draw), its speed over fp32 estimated there from counted instructions at one thread (CannotEmulate
    without QEMU)."""
    # the budget's judged sentences (29 s of audio): fp16 arithmetic is slow under QEMU (a software helper per
    # lane), about 90 s of a core per second of audio
    comparison = Comparison(voice_dir, JUDGE_SENTENCES)
    core = cost.A76
    report(f"fp16: this CPU has no fp16 arithmetic; judging the audio of an emulated {core.board} ({core.name}): "
           "about half an hour on 2 cores")
    emulated = estimate.EmulatedVoice(model, comparison.voice, comparison.ids, cpu=core.name, log=report)
    measured = comparison.measure(model, emulated, timed=False)
    feeds = estimate.zero_noise_feeds(comparison.voice, estimate.TEXTS[:1])
    fp32, fp16 = (estimate.one_thread(m, feeds, core, comparison.voice.sample_rate, log=report).seconds()
                  for m in (voice_dir / contract.MODEL_FILE, model))
    measured.speed = Speed.estimated(fp32 / fp16)
    out = measured.to_dict()
    ok, verdict = within(measured, budget)
    listener = Listener(comparison.threads)
    if listener.available:
        report(f"fp16: listening to fp32's and the {core.board}'s audio of {len(comparison.ids)} sentences at zero "
               "noise (Whisper, DNSMOS, DistillMOS)")
        texts, rate = list(comparison.sentences), comparison.voice.sample_rate
        reference = listener.score(texts, comparison.reference, rate)
        scores = listener.score(texts, [emulated.ids_to_audio(ids) for ids in comparison.ids], rate)
        heard_ok, heard_verdict = Listener.verdict(reference, scores, budget)
        # not "heard": that is at the default noise, the variants table's columns beside fp32's
        out.update(heard_at_zero_noise={"fp16": scores, "fp32": reference})
        ok, verdict = ok and heard_ok, f"{verdict}; {heard_verdict}"
    if listener.notes:
        verdict += "; " + "; ".join(listener.notes)
    report(f"fp16: {'inside' if ok else 'OUTSIDE'} the budget on the {core.board}'s audio: {verdict}")
    out.update(within_budget=ok, verdict=verdict,
               heard_on=f"{core.board} ({core.name}, emulated; onnxruntime {emulated.onnxruntime})",
               timed_on={"cpu": f"{core.board} ({core.name}, emulation estimate, one thread)", "arch": "aarch64",
                         "int8_class": cpu.DOT})
    return out
