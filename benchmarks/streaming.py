"""``python -m benchmarks.streaming``: how soon the voice starts, streamed and whole, ours and the peers'.

    python -m benchmarks.streaming --voice build/demo/voice --threads 2 --out build/bench-stream
    python -m benchmarks.streaming --voice build/demo/voice --quick --out build/bench-stream-quick

Texts: long sentences of 10 s of audio or more, and a five-sentence paragraph. Contenders, each in
its own process, each from text with its own frontend: our runtime on ``model.onnx`` and on the
default int8 variant, streamed (its pieces, chunks as they are decoded), whole sentences from the
pieces, and whole sentences from the whole graph (the runtime before streaming: the baseline);
piper-tts (whole sentences); streaming-vits (streamed, calibrated on this machine as its README
says). Within a round each contender speaks every text in one block; the order rotates from round
to round, with half a second of idle before each block (as a device waits for a request; without
it the previous process's spinning threads slowed the next one's first text); the ratios the
targets are about are taken inside each round (a streamed model against its own whole-graph
synthesis of the same text), and the report gives their medians and ranges.

Then, at zero noise, how exact the joined chunks are: against the whole graph (60 dB SNR), and for
an int8 variant, whose chunks cannot equal its whole sentence sample for sample (exporter/pieces.py
says why), no farther from fp32's audio than the variant's own whole sentence is (log-mel).
Writes OUT/report.md and OUT/results.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from benchmarks import progress, sysinfo
from benchmarks.contenders import BUILTIN_PIPER, find_piper_voice, ids_to_symbols, read_sidecar
from benchmarks.results import write
from benchmarks.run import SENTENCES, read_sentences
from benchmarks.worker import Worker, WorkerError
from exporter.pieces import MIN_SNR_DB, fp32_distances, int8_agreement
from exporter.verify import snr_db
from runtime import contract
from runtime.config import FP32
from runtime.voice import SynthesisConfig, Voice

logger = logging.getLogger("benchmarks")

LONG_SENTENCES = (
    "The old lighthouse keeper climbed the winding stairs every evening, carrying a lantern and a small "
    "notebook in which he recorded the ships that passed, the color of the sky, and the direction of the "
    "wind over the harbor.",
    "When the orchestra finally returned to the stage after a long intermission, the conductor raised his "
    "baton, waited for the last whispers in the hall to fade, and began the slow movement that everyone "
    "had come to hear.",
    "Before the storm reached the valley, the farmers hurried to bring the sheep down from the upper "
    "pastures, close the heavy wooden gates, and stack the hay inside the barn where the wind could not "
    "scatter it.",
)
PARAGRAPH_SENTENCES = 5
DEFAULT_VARIANT = "model.auto.onnx"  # the default int8 preset (exporter.quant.DEFAULT_PRESET)
IDLE_S = 0.5


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.streaming", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--voice", type=Path, required=True, help="exported voice folder with its streaming pieces")
    p.add_argument("--out", type=Path, required=True, help="report folder (report.md, results.json)")
    p.add_argument("--threads", type=int, default=2, help="threads for every contender (default: %(default)s)")
    p.add_argument("--rounds", type=int, help="timed rounds (default 5, or 1 with --quick)")
    p.add_argument("--quick", action="store_true", help="one long sentence and the paragraph, one round, "
                   "streaming-vits uncalibrated: a smoke run")
    p.add_argument("--variant", default=DEFAULT_VARIANT, help="the int8 model to stream beside model.onnx "
                   "(default: %(default)s; 'none' for fp32 only)")
    p.add_argument("--piper-voice", default="auto", help="the Piper VOICE.onnx the voice came from, for piper-tts "
                   "and streaming-vits ('auto': the built-in voice when it is this one; 'none')")
    p.add_argument("--no-calibrate", action="store_true", help="run streaming-vits with its default schedule")
    p.add_argument("--docs", action="store_true", help="also write the report to docs/measured/streaming.md (the "
                   "documentation's table: commit it)")
    p.add_argument("--debug", action="store_true", help="show debug logs")
    return p


def texts(quick: bool) -> list[tuple[str, str]]:
    paragraph = " ".join(read_sentences(SENTENCES)[:PARAGRAPH_SENTENCES])
    longs = LONG_SENTENCES[:1] if quick else LONG_SENTENCES
    return [(f"long-{k + 1}", text) for k, text in enumerate(longs)] + [("paragraph", paragraph)]


def contenders(voice: Path, variant: str | None, piper: Path | None, threads: int, calibrate: bool,
               workdir: Path) -> tuple[list[dict], list[str]]:
    """Worker specs, in report order, and notes on what could not run."""
    specs, notes = [], []
    models = [contract.MODEL_FILE] + ([variant] if variant else [])
    labels = {"stream": "streamed", "whole": "whole sentences, pieces", "graph": "whole sentences, whole graph"}
    for name in models:
        if not (voice / name).is_file():
            notes.append(f"{name}: not in {voice} (make it with python -m exporter quantize)")
            continue
        for mode in ("stream", "whole", "graph"):
            specs.append({"key": f"{name}:{mode}", "label": f"vits-edge {name} {labels[mode]}", "kind": "ours",
                          "model": str(voice / name), "mode": mode})
    if piper is None:
        notes.append("piper-tts and streaming-vits: no Piper voice (--piper-voice)")
    else:
        config = str(piper) + ".json"
        if importlib.util.find_spec("piper"):
            specs.append({"key": "piper-tts", "label": "piper-tts 1.8 (whole sentences)", "kind": "piper-stream",
                          "model": str(piper), "config": config})
        else:
            notes.append("piper-tts: not installed")
        if importlib.util.find_spec("streaming_vits"):
            specs.append({"key": "streaming-vits", "label": "streaming-vits 0.4.2 (streamed"
                          + (", calibrated here)" if calibrate else ", default schedule)"),
                          "kind": "streaming-vits", "model": str(piper), "config": config, "calibrate": calibrate})
        else:
            notes.append("streaming-vits: not installed (pip install streaming-vits)")
    for spec in specs:
        spec.update(threads=threads, log=str(workdir / f"{spec['key'].replace(':', '-')}.log"), ids=[], symbols=[],
                    paragraph="", paragraph_sentences=0)
    return specs, notes


def measure(args) -> dict:
    started, t0 = datetime.now(timezone.utc), time.perf_counter()
    voice = args.voice
    sidecar = read_sidecar(voice)
    if not (sidecar.get("streaming") or {}).get("pieces"):
        raise SystemExit(f"error: {voice} has no streaming pieces: python -m exporter split {voice}")
    variant = None if args.variant == "none" else args.variant
    rounds = args.rounds or (1 if args.quick else 5)
    items = texts(args.quick)
    piper = _piper(args.piper_voice, voice)
    show = progress.Progress()
    with tempfile.TemporaryDirectory(prefix="vits-edge-stream-") as tmp:
        specs, notes = contenders(voice, variant, piper, args.threads, not (args.quick or args.no_calibrate),
                                  Path(tmp))
        workers: dict[str, Worker] = {}
        rows = {s["key"]: {"key": s["key"], "label": s["label"], "status": "ok"} for s in specs}
        try:
            for spec in specs:
                show.phase(f"loading {spec['key']}" + (" (calibrating it)" if spec.get("calibrate") else ""))
                try:
                    workers[spec["key"]] = Worker(spec, timeout_s=1800)
                    rows[spec["key"]]["load_s"] = round(workers[spec["key"]].ready["load_s"], 2)
                except (WorkerError, OSError) as exc:
                    rows[spec["key"]].update(status="failed", note=str(exc))
            raw = {key: {name: [] for name, _ in items} for key in workers}
            for key, worker in workers.items():  # warm-up: one text each
                show.step(f"warm-up {key}")
                worker.ask("speak", text=items[0][1])
            for r in range(rounds):
                keys = list(workers)
                keys = keys[r % len(keys):] + keys[: r % len(keys)]
                for key in keys:  # one contender at a time speaks every text (see benchmarks.run)
                    # A device waits idle for a request: the previous contender's onnxruntime pools, which spin
                    # for a while after a run, must not take this one's cores at its first text.
                    time.sleep(IDLE_S)
                    for name, text in items:
                        show.step(f"round {r + 1}/{rounds}: {key}, {name}")
                        try:
                            raw[key][name].append(workers[key].ask("speak", text=text))
                        except WorkerError as exc:
                            rows[key].update(status="failed", note=str(exc))
        finally:
            for worker in workers.values():
                worker.close()
    show.phase("exactness at zero noise")
    exact = exactness(voice, [contract.MODEL_FILE] + ([variant] if variant and (voice / variant).is_file() else []),
                      [text for name, text in items if name.startswith("long")], args.threads)
    show.done()
    return {"started": started.isoformat(timespec="seconds"), "seconds": round(time.perf_counter() - t0, 1),
            "command": "python -m benchmarks.streaming " + " ".join(sys.argv[1:]), "system": sysinfo.machine(),
            "revision": sysinfo.git_revision(Path(__file__).resolve().parent.parent),
            "voice": str(voice), "threads": args.threads, "rounds": rounds, "texts": dict(items), "notes": notes,
            "rows": rows, "raw": raw, "exactness": exact, "summary": summarize(raw, items, variant)}


def _piper(option: str, voice: Path) -> Path | None:
    if option == "none":
        return None
    if option == "auto" and importlib.util.find_spec(BUILTIN_PIPER) is None:
        return None
    v = Voice.load(voice, variant=FP32, threads=1)
    ids = v.text_to_ids("Hello there.")
    path, why = find_piper_voice(option, voice, ids, ids_to_symbols(ids, read_sidecar(voice)["tokenizer"]))
    if path is None:
        logger.warning("no Piper voice: %s", why)
    return path


def _snr(reference: np.ndarray, test: np.ndarray) -> float:
    return float(snr_db(reference, test)) if len(reference) == len(test) else float("-inf")


def exactness(voice: Path, models: list[str], sentences: list[str], threads: int) -> dict:
    """Joined chunks (the runtime's default schedule) against the whole graph, zero noise; for an int8
    variant also both against fp32's whole sentence (log-mel): the chunks must be no farther from fp32
    than the variant's own whole sentence is (exporter.pieces.int8_agreement, the export's check too)."""
    zero = SynthesisConfig(noise_scale=0.0, noise_w=0.0)
    fp32 = Voice.load(voice / contract.MODEL_FILE, threads=threads, streaming=False)
    out = {}
    for name in models:
        pieces = Voice.load(voice / name, threads=threads)
        whole = Voice.load(voice / name, threads=threads, streaming=False)
        joined, mel = [], []
        for text in sentences:
            ids = whole.text_to_ids(text)
            reference = whole.ids_to_audio(ids, zero)
            stream = np.concatenate([a for _, a, _ in pieces.ids_to_stream(ids, zero)])
            joined.append(_snr(reference, stream))
            if name != contract.MODEL_FILE and len(stream) == len(reference):
                ref32 = fp32.ids_to_audio(ids, zero)
                mel.append(fp32_distances(ref32, reference, stream, whole.sample_rate))
        row = {"joined_vs_whole_snr_db": [round(x, 1) for x in joined]}
        exact = min(joined) >= MIN_SNR_DB
        if mel:
            row.update(int8_agreement(mel))
            row["ok"] = exact or (row["ok"] and len(mel) == len(joined))
        else:
            row["ok"] = exact
        out[name] = row
    return out


def _median_range(values: list[float]) -> dict | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def summarize(raw: dict, items, variant: str | None) -> dict:
    """Per contender and text: median TTFA/total; per streamed model: the target ratios, round by round."""
    summary: dict = {"contenders": {}, "ratios": {}}
    for key, per_text in raw.items():
        summary["contenders"][key] = {name: {"ttfa_s": _median_range([r["ttfa_s"] for r in runs]),
                                             "total_s": _median_range([r["total_s"] for r in runs]),
                                             "audio_s": runs[0]["samples"] / 22050 if runs else None}
                                      for name, runs in per_text.items()}
    for model in [contract.MODEL_FILE] + ([variant] if variant else []):
        stream, graph, whole = (raw.get(f"{model}:{m}") for m in ("stream", "graph", "whole"))
        if not stream or not graph:
            continue
        ratios = {}
        for name, _ in items:
            pairs = list(zip(stream[name], graph[name]))
            ratios[name] = {
                "first_audio_share": _median_range([s["ttfa_s"] / g["total_s"] for s, g in pairs]),
                "throughput": _median_range([s["total_s"] / g["total_s"] for s, g in pairs]),
                "first_audio_speedup": _median_range([g["ttfa_s"] / s["ttfa_s"] for s, g in pairs]),
            }
            if whole:
                ratios[name]["pieces_whole_vs_graph"] = _median_range(
                    [w["total_s"] / g["total_s"] for w, g in zip(whole[name], graph[name])])
            sv = raw.get("streaming-vits")
            if sv and sv.get(name):
                ratios[name]["vs_streaming_vits_ttfa"] = _median_range(
                    [s["ttfa_s"] / v["ttfa_s"] for s, v in zip(stream[name], sv[name])])
        summary["ratios"][model] = ratios
    return summary


def report(results: dict) -> str:
    s = results["system"]
    lines = [f"# Streaming: time to first audio ({results['started']}, {results.get('revision')})", "",
             f"`{results['command']}`", "",
             f"{sysinfo.describe(s)}; {results['threads']} threads, {results['rounds']} rounds, onnxruntime "
             f"{s['versions'].get('onnxruntime', '?')}; voice `{results['voice']}`.", ""]
    names = list(results["texts"])
    lines += ["## Time to first audio and total, per contender (median of rounds, ms)", "",
              "| contender | " + " | ".join(f"{n} first / total" for n in names) + " |",
              "|---|" + "---|" * len(names)]
    for key, row in results["rows"].items():
        per = results["summary"]["contenders"].get(key)
        if per is None:
            lines.append(f"| {row['label']} | " + " | ".join("failed" for _ in names) + " |")
            continue
        cells = []
        for n in names:
            t = per[n]
            cells.append("-" if t["ttfa_s"] is None else f"{t['ttfa_s']['median'] * 1000:.0f} / "
                         f"{t['total_s']['median'] * 1000:.0f} ({t['audio_s']:.1f} s audio)")
        lines.append(f"| {row['label']} | " + " | ".join(cells) + " |")
    lines += ["", "## Streamed against whole-sentence synthesis of the same model (ratios within each round)", "",
              "| model | text | first audio / whole time (target <= 20%) | streamed total / whole (<= 1.10) | "
              "whole from pieces / whole graph | first audio vs streaming-vits |", "|---|---|---|---|---|---|"]

    def cell(r, pct=False):
        if r is None:
            return "-"
        fmt = (lambda v: f"{v:.1%}") if pct else (lambda v: f"{v:.2f}")
        return f"{fmt(r['median'])} ({fmt(r['min'])}-{fmt(r['max'])})"

    for model, per_text in results["summary"]["ratios"].items():
        for name, r in per_text.items():
            lines.append(f"| {model} | {name} | {cell(r['first_audio_share'], True)} | {cell(r['throughput'])} | "
                         f"{cell(r.get('pieces_whole_vs_graph'))} | {cell(r.get('vs_streaming_vits_ttfa'))} |")
    lines += ["", "## Exactness at zero noise (per long sentence)", "",
              "| model | joined chunks vs whole graph, SNR dB (>= 60) | log-mel dB from fp32: whole / joined (int8: "
              "joined <= whole + 0.05) | agrees |", "|---|---|---|---|"]
    for model, e in results["exactness"].items():
        mel = (f"{e['logmel_vs_fp32_whole_db']} / {e['logmel_vs_fp32_chunked_db']}"
               if "logmel_vs_fp32_whole_db" in e else "-")
        lines.append(f"| {model} | {e['joined_vs_whole_snr_db']} | {mel} | {'yes' if e['ok'] else 'NO'} |")
    if results["notes"]:
        lines += ["", "Not run: " + "; ".join(results["notes"])]
    failed = [f"{r['label']}: {r.get('note')}" for r in results["rows"].values() if r["status"] != "ok"]
    if failed:
        lines += ["", "Failed: " + "; ".join(failed)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    results = measure(args)
    write(args.out, results, report(results), "streaming" if args.docs else None, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
