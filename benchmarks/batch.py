"""``python -m benchmarks.batch``: items per second of a batch job, on this machine's processes and on Ray.

    python -m benchmarks.batch --voice build/demo/voice --out build/bench-batch
    python -m benchmarks.batch --voice build/demo/voice --quick --out build/bench-batch-quick

Each contender is the batch command as a user runs it (``python -m runtime.batch``, its own process, a fresh
output folder) on the same items: the benchmark's sentences, repeated to ``--items``. Contenders: the local process
pool with 1 and 2 workers of one thread and 1 worker of two threads, and Ray (a local instance started by the job)
with 1 and 2 actors of one thread. Per run: the job's own rate (items over the time from its first item sent to
its last recorded, which includes loading the voice in every worker) and the whole command's (start to exit:
Python, onnxruntime, Ray's start). Rounds rotate the order; the report gives medians and ranges, and each
contender's speed over the one-worker process pool's in the same round (how throughput scales with workers).
Writes OUT/report.md and OUT/results.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from benchmarks import progress, sysinfo
from benchmarks.results import stats, write
from benchmarks.run import SENTENCES, read_sentences
from runtime.config import resolve

logger = logging.getLogger("benchmarks")
REPO = Path(__file__).resolve().parents[1]
CONTENDERS = {  # key: (label, backend, workers, threads)
    "local-1": ("process pool, 1 worker x 1 thread", "local", 1, 1),
    "local-2": ("process pool, 2 workers x 1 thread", "local", 2, 1),
    "local-1x2": ("process pool, 1 worker x 2 threads", "local", 1, 2),
    "ray-1": ("Ray, 1 actor x 1 thread", "ray", 1, 1),
    "ray-2": ("Ray, 2 actors x 1 thread", "ray", 2, 1),
}
BASELINE = "local-1"
QUICK = ("local-1", "local-2", "ray-2")
_DONE = re.compile(r"(\d+) spoken, (\d+) failed or bad, in ([\d.]+) s")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.batch", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--voice", type=Path, required=True, help="voice folder (its model.onnx) or a model file")
    p.add_argument("--out", type=Path, required=True, help="report folder (report.md, results.json)")
    p.add_argument("--items", type=int, help="items a run (default 200, or 12 with --quick)")
    p.add_argument("--rounds", type=int, help="rounds (default 3, or 1 with --quick)")
    p.add_argument("--contenders", help=f"keys separated by commas (default: all; --quick: {','.join(QUICK)}): "
                                        f"{', '.join(CONTENDERS)}")
    p.add_argument("--batch-size", type=int, default=8, help="items sent to a worker at a time (the job's default)")
    p.add_argument("--variant", help="which model of the voice folder (default: the folder's own default, as the "
                   "batch command chooses it)")
    p.add_argument("--quick", action="store_true", help="a smoke run: few items, one round")
    p.add_argument("--docs", action="store_true", help="also write the report to docs/measured/batch.md (the "
                   "documentation's table: commit it)")
    p.add_argument("--debug", action="store_true", help="show debug logs")
    return p


def run_job(key: str, items: Path, voice: Path, out: Path, batch_size: int, variant: str | None = None) -> dict:
    """One contender, one run: the command's wall time and the job's own, from its last line."""
    _, backend, workers, threads = CONTENDERS[key]
    cmd = [sys.executable, "-m", "runtime.batch", str(items), "--voice", str(voice), "--out", str(out),
           "--backend", backend, "--workers", str(workers), "--threads", str(threads), "--batch-size", str(batch_size)]
    cmd += ["--variant", variant] if variant else []
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - start
    done = _DONE.search(proc.stderr)
    if proc.returncode != 0 or done is None or int(done.group(2)):
        return {"ok": False, "note": f"exit {proc.returncode}: " + (proc.stderr.strip().splitlines() or [""])[-1]}
    spoken, job_s = int(done.group(1)), float(done.group(3))
    audio = sum(json.loads(line)["seconds"] for line in (out / "manifest.jsonl").read_text().splitlines())
    return {"ok": True, "items": spoken, "wall_s": round(wall, 2), "job_s": job_s,
            "items_per_s": round(spoken / job_s, 3), "items_per_s_wall": round(spoken / wall, 3),
            "audio_s": round(audio, 1), "realtime": round(audio / job_s, 1)}


def measure(args) -> dict:
    count = args.items or (12 if args.quick else 200)
    rounds = args.rounds or (1 if args.quick else 3)
    keys = args.contenders.split(",") if args.contenders else list(QUICK if args.quick else CONTENDERS)
    unknown = [k for k in keys if k not in CONTENDERS]
    if unknown:
        raise SystemExit(f"unknown contender(s) {', '.join(unknown)}: choose from {', '.join(CONTENDERS)}")
    sentences = read_sentences(SENTENCES)
    show = progress.Progress()
    show.total(rounds * len(keys))
    runs: dict[str, list[dict]] = {k: [] for k in keys}
    speedups: dict[str, list[float]] = {k: [] for k in keys}
    with tempfile.TemporaryDirectory(prefix="vits-edge-bench-batch-") as tmp:
        items = Path(tmp) / "items.jsonl"
        items.write_text("".join(json.dumps({"id": f"item-{k:05d}", "text": sentences[k % len(sentences)]}) + "\n"
                                 for k in range(count)), encoding="utf-8")
        for r in range(rounds):
            order = keys[r % len(keys):] + keys[:r % len(keys)]  # rotate: no contender always first
            this_round = {}
            for key in order:
                show.step(f"round {r + 1}/{rounds}: {CONTENDERS[key][0]}")
                this_round[key] = run_job(key, items, args.voice, Path(tmp) / f"out-{r}-{key}", args.batch_size,
                                          args.variant)
                runs[key].append(this_round[key])
            base = this_round.get(BASELINE)
            for key, row in this_round.items():
                if row["ok"] and base and base["ok"]:
                    speedups[key].append(row["items_per_s"] / base["items_per_s"])
    show.done()
    summary = {}
    for key in keys:
        good = [row for row in runs[key] if row["ok"]]
        summary[key] = {"label": CONTENDERS[key][0], "runs": len(runs[key]), "failed": len(runs[key]) - len(good),
                        "notes": sorted({row["note"] for row in runs[key] if not row["ok"]}),
                        "items_per_s": stats([row["items_per_s"] for row in good]),
                        "items_per_s_wall": stats([row["items_per_s_wall"] for row in good]),
                        "startup_s": stats([row["wall_s"] - row["job_s"] for row in good]),
                        "realtime": stats([row["realtime"] for row in good]),
                        "vs_one_worker": stats(speedups[key])}
    info = sysinfo.machine()
    return {"when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": info,
            "machine_line": sysinfo.describe(info), "revision": sysinfo.git_revision(REPO), "voice": str(args.voice),
            "model": resolve(args.voice, args.variant)[0].name,
            "items": count, "rounds": rounds, "batch_size": args.batch_size, "runs": runs, "summary": summary}


def report(results: dict) -> str:
    def cell(s, fmt="{:.2f}"):
        return "-" if s is None else f"{fmt.format(s['median'])} ({fmt.format(s['min'])}-{fmt.format(s['max'])})"

    lines = ["# Batch synthesis: items per second", "",
             f"Machine: {results['machine_line']}; revision {results['revision']}; {results['when']}", "",
             (f"Voice {results['voice']} ({results.get('model', 'model.onnx')}); {results['items']} items a run "
              "(the benchmark's sentences, repeated), "
              f"{results['rounds']} round(s), batches of {results['batch_size']}; medians (min-max)."), "",
             ("| contender | items/s (job) | vs 1 worker, same round | items/s (whole command) | start-up s | "
              "x real time |"), "|---|---|---|---|---|---|"]
    for s in results["summary"].values():
        if s["items_per_s"] is None:
            lines.append(f"| {s['label']} | failed: {'; '.join(s['notes'])} | | | | |")
            continue
        lines.append(f"| {s['label']} | {cell(s['items_per_s'])} | {cell(s['vs_one_worker'])} | "
                     f"{cell(s['items_per_s_wall'])} | {cell(s['startup_s'], '{:.1f}')} | "
                     f"{cell(s['realtime'], '{:.1f}')} |")
    lines += ["", ("items/s (job): items over the job's time from the first item sent to the last recorded (every "
                   "worker loading the voice included); whole command: start to exit (Python, onnxruntime, Ray's "
                   "start).")]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    results = measure(args)
    write(args.out, results, report(results), "batch" if args.docs else None, argv)
    return 0 if all(s["failed"] == 0 for s in results["summary"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
