"""``python -m benchmarks.wyoming``: our Wyoming server against wyoming-piper, measured by wyoming-bench.

    python -m benchmarks.wyoming --voice build/demo/voice --threads 2 --out build/bench-wyoming

The same voice (the built-in Piper voice our export came from), the same machine and cores: each
server a process of its own, pinned to the same ``--threads`` cores (wyoming-piper has no thread
flag; its onnxruntime takes every core it may run on), started alone, warmed up, then asked every
text in both modes with ``wyoming-bench``'s own measurement (``wyoming_bench.tts.client.measure_once``:
a fresh TCP connection per request, the time to the first ``audio-chunk``, the real-time factor; a
streaming request sends one ``synthesize-chunk`` per sentence), in one block, and stopped. Rounds
rotate the order; ratios (ours / wyoming-piper's) are taken within each round; the report gives
medians and ranges. Contenders: ``runtime.serve`` on the default int8 variant and on fp32, wyoming-piper
2.5.2 (piper-tts 1.8). Writes OUT/report.md and OUT/results.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from benchmarks import progress, sysinfo
from benchmarks.results import write
from benchmarks.run import SENTENCES, read_sentences
from benchmarks.streaming import LONG_SENTENCES, _piper
from benchmarks.wyoming_servers import ServerProcess
from runtime.serve.catalog import entry

MODES = ("non_streaming", "streaming")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.wyoming", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--voice", type=Path, required=True, help="exported voice folder (with model.auto.onnx)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--threads", type=int, default=2, help="cores every server is pinned to (and our --threads)")
    p.add_argument("--rounds", type=int, help="rounds (default 3, 1 with --quick)")
    p.add_argument("--quick", action="store_true", help="one long sentence and the short text, one round")
    p.add_argument("--docs", action="store_true", help="also write the report to docs/measured/wyoming.md (the "
                   "documentation's table: commit it)")
    p.add_argument("--piper-voice", default="auto", help="the Piper VOICE.onnx for wyoming-piper ('auto': the "
                   "built-in voice when the export is of it)")
    return p


def texts(quick: bool) -> list[tuple[str, str]]:
    paragraph = " ".join(read_sentences(SENTENCES)[:5])
    longs = LONG_SENTENCES[:1] if quick else LONG_SENTENCES
    items = [(f"long-{k + 1}", t) for k, t in enumerate(longs)] + [("short", "Turning on the kitchen lights.")]
    return items if quick else items + [("paragraph", paragraph)]


def contenders(voice: Path, piper: Path | None, threads: int, workdir: Path):
    cpus = sorted(os.sched_getaffinity(0))[:threads]
    specs = []
    for label, variant in (("vits-edge auto (int8)", "auto"), ("vits-edge fp32", "fp32")):
        if variant != "fp32" and not (voice / f"model.{variant}.onnx").is_file():
            continue
        specs.append((label, lambda v=variant, lab=label: ServerProcess.ours(
            "--voice", voice, "--variant", v, "--threads", threads, log=workdir / f"{lab.split()[1]}.log", cpus=cpus)))
    if piper is not None:
        specs.append(("wyoming-piper 2.5.2", lambda: ServerProcess.wyoming_piper(
            piper, workdir / "piper-data", log=workdir / "piper.log", cpus=cpus)))
    return specs


async def _measure(port: int, mode: str, text: str) -> dict:
    from wyoming_bench.tts.client import measure_once  # the test extra (wyoming-bench): its own client measures

    m = await measure_once("127.0.0.1", port, mode, text, None, None, 30.0, 300.0)
    return {"ok": m.ok, "error": m.error, "ttft_s": m.ttft_s, "total_s": m.total_s, "rtf": m.rtf,
            "audio_s": m.audio_duration_s}


def measure(args) -> dict:
    items = texts(args.quick)
    rounds = args.rounds or (1 if args.quick else 3)
    piper = _piper(args.piper_voice, args.voice)
    show = progress.Progress()
    raw: dict = {}
    notes = [] if piper is not None else ["wyoming-piper: no Piper voice for this export (--piper-voice)"]
    with tempfile.TemporaryDirectory(prefix="vits-edge-wyoming-") as tmp:
        specs = contenders(args.voice, piper, args.threads, Path(tmp))
        for r in range(rounds):
            order = specs[r % len(specs):] + specs[: r % len(specs)]
            for label, start in order:
                show.phase(f"round {r + 1}/{rounds}: {label}")
                server = start()
                try:
                    for mode in MODES:  # warm-up: the first request loads the voice (wyoming-piper loads lazily)
                        asyncio.run(_measure(server.port, mode, items[0][1]))
                    time.sleep(0.5)
                    for name, text in items:
                        for mode in MODES:
                            raw.setdefault(label, {}).setdefault(name, {}).setdefault(mode, []).append(
                                asyncio.run(_measure(server.port, mode, text)))
                finally:
                    server.stop()
    facts = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d"), "cpu": sysinfo.cpu_model(),
             "cores": len(os.sched_getaffinity(0)), "threads": args.threads,
             "onnxruntime": sysinfo.version("onnxruntime"), "wyoming": sysinfo.version("wyoming"),
             "wyoming-piper": sysinfo.version("wyoming-piper"), "wyoming-bench": sysinfo.version("wyoming-bench"),
             "model": entry(args.voice).model.name, "rounds": rounds}
    return {"facts": facts, "texts": dict(items), "raw": raw, "notes": notes,
            "summary": summarize(raw, [n for n, _ in items], rounds)}


def _stats(values: list[float]) -> dict | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def summarize(raw: dict, names: list[str], rounds: int) -> dict:
    piper = next((k for k in raw if k.startswith("wyoming-piper")), None)
    out: dict = {"contenders": {}, "ratios": {}}
    for label, per_text in raw.items():
        out["contenders"][label] = {
            name: {mode: {"ok": sum(m["ok"] for m in per_text[name][mode]),
                          "n": len(per_text[name][mode]),
                          "errors": sorted({m["error"] for m in per_text[name][mode] if m["error"]}),
                          "ttft_ms": _stats([m["ttft_s"] * 1000 if m["ttft_s"] else None for m in per_text[name][mode]]),
                          "rtf": _stats([m["rtf"] for m in per_text[name][mode]]),
                          "audio_s": _stats([m["audio_s"] for m in per_text[name][mode]])}
                   for mode in MODES} for name in names}
        if piper is None or label == piper:
            continue
        ratios = {}
        for name in names:
            for mode in MODES:
                pairs = list(zip(per_text[name][mode], raw[piper][name][mode]))[:rounds]
                ratios[f"{name}:{mode}"] = {
                    "ttft": _stats([a["ttft_s"] / b["ttft_s"] for a, b in pairs if a["ok"] and b["ok"]]),
                    "rtf": _stats([a["rtf"] / b["rtf"] for a, b in pairs if a["ok"] and b["ok"]])}
        out["ratios"][label] = ratios
    return out


def report(results: dict, args) -> str:
    f = results["facts"]
    s = results["summary"]
    lines = [f"# Wyoming servers, measured with wyoming-bench ({f['date']})", "",
             f"`python -m benchmarks.wyoming --voice {args.voice} --threads {args.threads}"
             f"{' --quick' if args.quick else ''}` on {f['cpu']} ({f['cores']} cores; every server pinned to "
             f"{f['threads']}), onnxruntime {f['onnxruntime']}, wyoming {f['wyoming']}, wyoming-piper "
             f"{f['wyoming-piper']}, wyoming-bench {f['wyoming-bench']}; {f['rounds']} round(s) in rotating order, "
             "medians (range).", "",
             "| server | text | mode | ok | first audio (ms) | real-time factor |", "|---|---|---|---|---|---|"]

    def cell(st, fmt="{:.0f}"):
        if st is None:
            return "-"
        return f"{fmt.format(st['median'])} ({fmt.format(st['min'])}-{fmt.format(st['max'])})"

    for label, per_text in s["contenders"].items():
        for name, per_mode in per_text.items():
            for mode, m in per_mode.items():
                lines.append(f"| {label} | {name} | {mode} | {m['ok']}/{m['n']} | {cell(m['ttft_ms'])} | "
                             f"{cell(m['rtf'], '{:.3f}')} |")
    lines += ["", "Ours / wyoming-piper's, within each round (first audio target on long sentences: at most 0.5; "
              "real-time factor of the int8 voice: below 1):", "",
              "| server | text:mode | first audio ratio | real-time factor ratio |", "|---|---|---|---|"]
    for label, ratios in s["ratios"].items():
        for key, r in ratios.items():
            lines.append(f"| {label} | {key} | {cell(r['ttft'], '{:.2f}')} | {cell(r['rtf'], '{:.2f}')} |")
    if results["notes"]:
        lines += ["", "Not run: " + "; ".join(results["notes"])]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    results = measure(args)
    write(args.out, results, report(results, args), "wyoming" if args.docs else None, argv)
    failed = [(label, name, mode) for label, per_text in results["summary"]["contenders"].items()
              for name, per_mode in per_text.items() for mode, m in per_mode.items() if m["ok"] < m["n"]]
    if failed:
        print(f"failed requests: {failed}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
