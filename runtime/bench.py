"""``vits-edge-bench VOICE_DIR`` (``python -m runtime.bench``): every model of a voice folder, on this machine.

    vits-edge-bench ~/voice                            # every model at 1..N threads (N: this machine's cores)
    vits-edge-bench ~/voice --threads 1,4 --out bench  # bench/results.json and bench/report.md
    vits-edge-bench ~/voice --compare results.json     # beside the build machine's or the Pi estimates

For each model: its real-time factor at each thread count (seconds of computing per second of audio, five
built-in sentences at the voice's default noise, median of rounds), the first audio of a 10-second sentence
streamed (text in, first chunk out), its load time, its peak memory and its file size; and this CPU, with its int8
and fp16 capabilities. Each model runs in a process of its own, so its peak memory is its own. It needs only what the
runtime needs (onnxruntime, numpy, espeak-ng for phoneme voices): it is what to run on the device itself.

Timings on a shared or busy machine move by tens of percent; compare models measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import onnxruntime

from runtime import contract, cpu
from runtime import results as res
from runtime.files import atomic_open
from runtime.voice import Voice

SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "A rainbow is a division of white light into many beautiful colors.",
    "Is this the right way to the station, or should we turn back?",
    "Every morning he walks his dog along the river before work.",
)
# A sentence of about ten seconds: how long until its first audio, streamed (also what benchmarks.pi estimates).
FIRST_AUDIO_TEXT = ("When the storm had finally passed, the neighbours came out into the street to clear away the "
                    "fallen branches, check on the old couple at the corner, and share whatever they had left in "
                    "their kitchens.")
EXIT_ERROR = 1


class BenchError(Exception):
    """A voice folder or model the benchmark cannot run: the message says which file and what to do."""


def models_of(voice_dir: Path) -> list[Path]:
    """The folder's models (model.onnx and its variants), checked to exist: a clear error otherwise."""
    voice_dir = Path(voice_dir)
    sidecar = contract.sidecar_path(voice_dir / contract.MODEL_FILE)
    if not voice_dir.is_dir():
        raise BenchError(f"{voice_dir} is not a folder: give a voice folder (model.onnx + model.onnx.json)")
    if not sidecar.is_file():
        raise BenchError(f"{voice_dir} has no {sidecar.name}: not a voice folder exported by vits-edge")
    models = [m for m in contract.voice_models(voice_dir) if m.is_file()]
    if not models:
        raise BenchError(f"{voice_dir} has no model (model.onnx or model.*.onnx) to benchmark")
    return models


def thread_counts(spec: str | None) -> list[int]:
    """``"1,2,4"`` or None (1, 2, 4, ... up to this machine's cores, and the cores themselves)."""
    if spec:
        try:
            counts = sorted({int(x) for x in spec.split(",") if x.strip()})
        except ValueError:
            raise BenchError(f"--threads {spec!r}: give thread counts such as 1,2,4") from None
        if not counts or counts[0] < 1:
            raise BenchError(f"--threads {spec!r}: thread counts start at 1")
        return counts
    cores = os.cpu_count() or 1
    return sorted({1 << k for k in range(cores.bit_length()) if 1 << k <= cores} | {cores})


# -- one model, in its own process ------------------------------------------------------------------
def measure_model(model: Path, threads: list[int], rounds: int, first_repeats: int = 3) -> dict:
    """Load time, real-time factor and streamed first audio at each thread count, and this process's peak memory."""
    variant = contract.variant_name(model.name)
    start = time.perf_counter()
    voice = Voice.load(model.parent, variant=variant, threads=threads[-1])
    load_s = time.perf_counter() - start
    ids = [voice.text_to_ids(s) for s in SENTENCES]
    out = {"model": model.name, "variant": variant, "bytes": model.stat().st_size, "load_s": load_s,
           "rtf": {}, "rtf_per_round": {}, "first_audio_s": {}}
    for n in threads:
        if n != threads[-1]:
            voice = Voice.load(model.parent, variant=variant, threads=n)
        voice.ids_to_audio(ids[0])  # warm-up: the first run allocates
        per_round = []
        for _ in range(rounds):
            computing, audio = 0.0, 0
            for x in ids:
                t0 = time.perf_counter()
                samples = voice.ids_to_audio(x)
                computing += time.perf_counter() - t0
                audio += len(samples)
            per_round.append(computing / (audio / voice.sample_rate))
        firsts = []
        for _ in range(first_repeats):
            t0 = time.perf_counter()
            chunks = voice.stream(FIRST_AUDIO_TEXT)
            next(chunks)
            firsts.append(time.perf_counter() - t0)
            chunks.close()  # the rest of the sentence is not made
        out["rtf"][str(n)] = statistics.median(per_round)
        out["rtf_per_round"][str(n)] = per_round
        out["first_audio_s"][str(n)] = statistics.median(firsts)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return out


def _worker(argv: list[str]) -> int:
    model, threads, rounds = Path(argv[0]), [int(x) for x in argv[1].split(",")], int(argv[2])
    print(json.dumps(measure_model(model, threads, rounds)))
    return 0


def run_model(model: Path, threads: list[int], rounds: int, timeout_s: float = 3600) -> dict:
    """``measure_model`` in a fresh process (its peak memory is this model's alone)."""
    argv = [sys.executable, "-m", "runtime.bench", "--worker", str(model), ",".join(map(str, threads)), str(rounds)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise BenchError(f"{model} could not be run: {last}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- the report ---------------------------------------------------------------------------------------
def machine() -> dict:
    names = cpu.features()
    return {"cpu": cpu.model(), "arch": platform.machine(), "cores": os.cpu_count(), "cpu_features": names,
            "int8_class": cpu.int8_class(names), "fp16_arithmetic": cpu.has_fp16_arithmetic(names),
            "python": platform.python_version(), "onnxruntime": onnxruntime.__version__}


def markdown(data: dict, compared: list[dict] = ()) -> str:
    m, threads = data["machine"], data["threads"]
    lines = [f"# {Path(data['voice']).name}: every model on {m['cpu']}", "",
             f"{m['arch']}, {m['cores']} cores, {m['int8_class']}, "
             f"{'fp16 arithmetic' if m['fp16_arithmetic'] else 'no fp16 arithmetic'}; onnxruntime {m['onnxruntime']}; "
             f"{data['date']}; `{data['command']}`", "",
             "| model | MB | load s | " + " | ".join(f"RTF {n} thr" for n in threads)
             + f" | first audio, {threads[-1]} thr (ms) | peak RSS MB |",
             "|---|---|---|" + "---|" * len(threads) + "---|---|"]
    for r in data["models"]:
        rtf = " | ".join(f"{r['rtf'][str(n)]:.3f}" for n in threads)
        lines.append(f"| {r['model']} | {r['bytes'] / 1e6:.1f} | {r['load_s']:.2f} | {rtf} | "
                     f"{1000 * r['first_audio_s'][str(threads[-1])]:.0f} | {r['peak_rss_mb']:.0f} |")
    lines += ["", f"RTF: seconds of computing per second of audio (under 1 is faster than real time), median of "
              f"{data['rounds']} rounds over {len(SENTENCES)} sentences at the voice's default noise. First audio: "
              f"text in, first streamed chunk out, for a sentence of about ten seconds. Peak RSS: the model's own "
              "process."]
    for other in compared:
        lines += ["", f"## Beside {other['source']}", "",
                  "| model | threads | RTF here | RTF there | first audio here (ms) | there (ms) | where |",
                  "|---|---|---|---|---|---|---|"]
        here = {(r["model"], r["threads"]): r for r in res.rows(data)}
        for r in res.rows(other):
            mine = here.get((r["model"], r["threads"]))
            fmt = lambda v, k=1.0, f="{:.3f}": "-" if v is None else f.format(v * k)  # noqa: E731
            lines.append(f"| {r['model']} | {r['threads']} | {fmt(mine and mine['rtf'])} | {fmt(r['rtf'])} | "
                         f"{fmt(mine and mine['first_audio_s'], 1000, '{:.0f}')} | "
                         f"{fmt(r['first_audio_s'], 1000, '{:.0f}')} | {r['where']}"
                         f"{' (emulation estimate)' if r['estimate'] else ''} |")
    return "\n".join(lines) + "\n"


def _write(path: Path, text: str) -> None:
    with atomic_open(path) as f:
        f.write(text.encode("utf-8"))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vits-edge-bench", description=__doc__.split("\n\n")[0],
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("voice", type=Path, help="a voice folder (model.onnx + model.onnx.json, and any model.*.onnx)")
    p.add_argument("--threads", help="thread counts, e.g. 1,2,4 (default: 1, 2, 4 ... up to this machine's cores)")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds over the sentences (default: %(default)s)")
    p.add_argument("--model", action="append", default=[], help="only this model of the folder (repeatable)")
    p.add_argument("--out", type=Path, default=Path("vits-edge-bench"),
                   help="results.json and report.md go here (default: %(default)s)")
    p.add_argument("--compare", type=Path, action="append", default=[], metavar="FILE",
                   help="a results.json of benchmarks.run (the build machine) or benchmarks.pi (the Pi estimates), "
                        "or of this command elsewhere, to set beside (repeatable)")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        return _worker(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        if args.rounds < 1:
            raise BenchError("--rounds must be at least 1")
        models = models_of(args.voice)
        if args.model:
            unknown = sorted(set(args.model) - {m.name for m in models})
            if unknown:
                raise BenchError(f"--model {', '.join(unknown)}: not in {args.voice} "
                                 f"(it has {', '.join(m.name for m in models)})")
            models = [m for m in models if m.name in args.model]
        threads = thread_counts(args.threads)
        compared = [res.load(path) for path in args.compare]
        measured = []
        for model in models:
            print(f"vits-edge-bench: {model.name} at {', '.join(map(str, threads))} thread(s)", file=sys.stderr,
                  flush=True)
            measured.append(run_model(model, threads, args.rounds))
    except (BenchError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    data = {"schema": res.SCHEMA, "kind": res.DEVICE, "voice": str(args.voice), "threads": threads,
            "rounds": args.rounds, "sentences": list(SENTENCES), "first_audio_text": FIRST_AUDIO_TEXT,
            "machine": machine(), "models": measured,
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "command": "vits-edge-bench " + " ".join(argv)}
    report = markdown(data, compared)
    args.out.mkdir(parents=True, exist_ok=True)
    _write(args.out / "results.json", json.dumps(data, indent=1) + "\n")
    _write(args.out / "report.md", report)
    print(report)
    print(f"wrote {args.out / 'results.json'} and {args.out / 'report.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
