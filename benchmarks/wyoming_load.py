"""``python -m benchmarks.wyoming_load``: many Wyoming clients at once against ``python -m runtime.serve``.

    python -m benchmarks.wyoming_load --voice build/demo/voice --clients 8 --seconds 120 --out build/bench-load

Starts the server on loopback (zero noise, so every response's length is known: the runtime's own
length for that text), then ``--clients`` clients, each with the ``wyoming`` library's TCP client and a
fresh connection per request, as Home Assistant makes them, alternating streaming (``synthesize-start``,
one ``synthesize-chunk`` per sentence, the compatibility ``synthesize``, ``synthesize-stop``) and plain
``synthesize`` requests, until ``--seconds`` have passed (a request under way is finished; at most
``--max-requests`` in all). Checks every response: the events in order, one audio format, and the number
of samples. Samples the server's RSS twice a second. Writes OUT/report.md and OUT/results.json: failed
and wrong-length requests, time to first audio (p50/p95) per mode, and RSS after warm-up against the peak.

``--soak`` (an hour: ``--clients 8 --seconds 3600 --soak``) samples the server every 10 s instead: RSS, open file
descriptors (``/proc/PID/fd``: sockets apart, since each client's connection is one) and threads
(``/proc/PID/status``), and judges them after ``--warmup-s`` (300): RSS grows by at most ``--rss-growth``
(5%), the descriptors other than sockets and the threads stay constant, the sockets never exceed the listener
and two per client (a client's next connection may open before the server has closed its last), and no request
fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from benchmarks import sysinfo
from benchmarks.results import publish
from runtime.sentences import split_sentences
from runtime.serve.catalog import entry
from runtime.voice import Voice
from benchmarks.run import SENTENCES, read_sentences
from benchmarks.wyoming_servers import ServerProcess

WARMUP_SHARE = 0.25  # RSS is "after warm-up" from this share of the run on


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.wyoming_load", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--voice", type=Path, required=True, help="voice folder (its default int8 variant is served)")
    p.add_argument("--out", type=Path, required=True, help="report folder")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--seconds", type=float, default=120.0, help="start requests for this long")
    p.add_argument("--max-requests", type=int, default=10_000)
    p.add_argument("--threads", type=int, default=2, help="the server's onnxruntime threads")
    p.add_argument("--workers", type=int, default=1, help="the server's --workers")
    p.add_argument("--soak", action="store_true", help="a long run: sample RSS, descriptors and threads every "
                   "--sample-s seconds and judge them after --warmup-s")
    p.add_argument("--warmup-s", type=float, default=300.0, help="--soak: judge the samples from this time on")
    p.add_argument("--sample-s", type=float, default=10.0, help="--soak: seconds between samples")
    p.add_argument("--rss-growth", type=float, default=0.05, help="--soak: how much RSS may grow after the warm-up")
    p.add_argument("--docs", action="store_true", help="also write the report to docs/measured/wyoming-load.md "
                   "(wyoming-soak.md with --soak; the documentation's table: commit it)")
    return p


def texts() -> list[str]:
    """Home Assistant-sized texts: a sentence, two, and a paragraph of the dev sentences."""
    sentences = read_sentences(SENTENCES)
    return [sentences[0], " ".join(sentences[1:3]), "Turning on the kitchen lights.", " ".join(sentences[3:7])]


def expected_samples(voice: Path, items: list[str]) -> dict[str, int]:
    model = Voice.load(entry(voice).model)
    return {t: sum(len(c.audio) for c in model.synthesize(t, noise_scale=0, noise_w=0)) for t in items}


async def one_request(port: int, text: str, streaming: bool) -> dict:
    from wyoming.audio import AudioChunk, AudioStart
    from wyoming.client import AsyncTcpClient
    from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop  # the server extra's

    result = {"mode": "streaming" if streaming else "non_streaming", "text": text, "ok": False}
    start = time.perf_counter()
    try:
        async with AsyncTcpClient("127.0.0.1", port, connect_timeout=30, read_timeout=120) as client:
            if streaming:
                await client.write_event(SynthesizeStart().event())
                for sentence in split_sentences(text):
                    await client.write_event(SynthesizeChunk(text=sentence + " ").event())
                await client.write_event(Synthesize(text=text).event())
                await client.write_event(SynthesizeStop().event())
            else:
                await client.write_event(Synthesize(text=text).event())
            end = "synthesize-stopped" if streaming else "audio-stop"
            samples, formats, cycles, open_cycle = 0, set(), 0, False
            while True:
                event = await client.read_event()
                if event is None:
                    result["error"] = "connection closed before " + end
                    break
                if event.type == "error":
                    result["error"] = f"server error: {event.data}"
                    break
                if event.type == "audio-start":
                    if open_cycle:
                        result["error"] = "audio-start inside an audio cycle"
                        break
                    open_cycle = True
                    start_event = AudioStart.from_event(event)
                    formats.add((start_event.rate, start_event.width, start_event.channels))
                elif event.type == "audio-chunk":
                    chunk = AudioChunk.from_event(event)
                    formats.add((chunk.rate, chunk.width, chunk.channels))
                    if "first_audio_s" not in result:
                        result["first_audio_s"] = time.perf_counter() - start
                    samples += len(chunk.audio) // 2
                elif event.type == "audio-stop":
                    open_cycle, cycles = False, cycles + 1
                if event.type == end:
                    result.update(ok=len(formats) == 1 and not open_cycle, samples=samples, cycles=cycles)
                    if len(formats) != 1:
                        result["error"] = f"audio formats in one response: {sorted(formats)}"
                    break
    except (OSError, asyncio.TimeoutError) as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
    result["total_s"] = time.perf_counter() - start
    return result


def process_sample(pid: int) -> dict | None:
    """The server's RSS (MB), threads, and open descriptors: sockets and the rest."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        targets = []
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                targets.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
            except OSError:  # closed while listed
                pass
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    sockets = sum(t.startswith("socket:") for t in targets)
    return {"rss_mb": int(fields["VmRSS"].split()[0]) / 1024, "threads": int(fields["Threads"]),
            "sockets": sockets, "other_fds": len(targets) - sockets}


def soak_verdict(samples: list[dict], *, warmup_s: float, clients: int, rss_growth: float, failed: int) -> dict:
    """The soak's criteria on the samples taken after the warm-up."""
    late = [s for s in samples if s["at_s"] >= warmup_s]
    if not late:
        return {"passed": False, "why": [f"no sample after the {warmup_s:g} s warm-up"]}
    base = late[0]["rss_mb"]
    growth = (max(s["rss_mb"] for s in late) - base) / base
    checks = {
        f"RSS grew {100 * growth:.1f}% after the warm-up (at most {100 * rss_growth:g}%)": growth <= rss_growth,
        f"descriptors other than sockets: {sorted({s['other_fds'] for s in late})} (constant)":
            len({s["other_fds"] for s in late}) == 1,
        f"threads: {sorted({s['threads'] for s in late})} (constant)": len({s["threads"] for s in late}) == 1,
        # a client's next connection may be open before the server has closed its last one
        f"sockets at most {max(s['sockets'] for s in late)} (the listener and two per client: {1 + 2 * clients})":
            max(s["sockets"] for s in late) <= 1 + 2 * clients,
        f"{failed} failed requests": failed == 0,
    }
    return {"passed": all(checks.values()), "checks": checks, "rss_after_warmup_mb": round(base, 1),
            "rss_growth": round(growth, 4), "samples_after_warmup": len(late),
            "why": [k for k, ok in checks.items() if not ok]}


async def load(port: int, pid: int, items: list[str], clients: int, seconds: float, max_requests: int,
               sample_s: float = 0.5) -> dict:
    results: list[dict] = []
    rss: list[tuple[float, float]] = []
    samples: list[dict] = []
    t0 = time.perf_counter()
    started = 0

    async def client(k: int) -> None:
        nonlocal started
        n = 0
        while time.perf_counter() - t0 < seconds and started < max_requests:
            started += 1
            text = items[(k + n // 2) % len(items)]  # every text in both modes
            results.append({**await one_request(port, text, streaming=(k + n) % 2 == 0), "client": k,
                            "at_s": time.perf_counter() - t0})
            n += 1

    async def sample() -> None:
        while True:
            value = process_sample(pid)
            if value is not None:
                rss.append((time.perf_counter() - t0, value["rss_mb"]))
                samples.append({"at_s": round(time.perf_counter() - t0, 1), **value})
            await asyncio.sleep(sample_s)

    sampler = asyncio.create_task(sample())
    await asyncio.gather(*(client(k) for k in range(clients)))
    sampler.cancel()
    return {"results": results, "rss": rss, "samples": samples, "seconds": time.perf_counter() - t0}


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def summarize(run: dict, expected: dict[str, int], clients: int) -> dict:
    results = run["results"]
    for r in results:
        r["expected_samples"] = expected[r["text"]]
        r["length_ok"] = r.get("samples") == expected[r["text"]]
    failed = [r for r in results if not r["ok"]]
    wrong = [r for r in results if r["ok"] and not r["length_ok"]]
    by_mode = {}
    for mode in ("streaming", "non_streaming"):
        mine = [r for r in results if r["mode"] == mode and r["ok"]]
        first = [r["first_audio_s"] * 1000 for r in mine if "first_audio_s" in r]
        by_mode[mode] = {"requests": len([r for r in results if r["mode"] == mode]),
                         "first_audio_ms_p50": _pct(first, 0.5), "first_audio_ms_p95": _pct(first, 0.95),
                         "total_ms_p50": _pct([r["total_s"] * 1000 for r in mine], 0.5)}
    warm = [v for t, v in run["rss"] if t >= WARMUP_SHARE * run["seconds"]]
    after_warmup = warm[0] if warm else None
    peak = max((v for _, v in run["rss"]), default=None)
    late_peak = max(warm, default=None)
    return {"clients": clients, "seconds": round(run["seconds"], 1), "requests": len(results), "failed": len(failed),
            "wrong_length": len(wrong), "errors": sorted({r.get("error", "?") for r in failed})[:10],
            "by_mode": by_mode, "rss_mb": {"after_warmup": after_warmup, "peak_after_warmup": late_peak,
                                           "peak": peak,
                                           "growth_after_warmup": None if after_warmup is None else
                                           round(late_peak - after_warmup, 1)},
            "requests_per_client": {k: sum(r["client"] == k for r in results) for k in range(clients)}}


def report(summary: dict, facts: dict, args) -> str:
    rss = summary["rss_mb"]
    lines = [f"# Wyoming load test ({facts['date']})", "",
             f"`python -m benchmarks.wyoming_load --voice {args.voice} --clients {args.clients} --seconds "
             f"{args.seconds:g}{' --soak' if args.soak else ''}` on {facts['cpu']} ({facts['cores']} cores), server --threads {args.threads} "
             f"--workers {args.workers}; model {facts['model']}.", "",
             f"- {summary['requests']} requests from {summary['clients']} clients in {summary['seconds']} s: "
             f"**{summary['failed']} failed, {summary['wrong_length']} with a wrong length**",
             f"- requests per client: {summary['requests_per_client']}",
             f"- server RSS: {rss['after_warmup']:.0f} MB after warm-up, {rss['peak_after_warmup']:.0f} MB peak "
             f"after it (growth {rss['growth_after_warmup']} MB), {rss['peak']:.0f} MB peak", "",
             "| mode | requests | first audio p50 (ms) | p95 (ms) | total p50 (ms) |", "|---|---|---|---|---|"]
    for mode, m in summary["by_mode"].items():
        fmt = (lambda v: "-" if v is None else f"{v:.0f}")
        lines.append(f"| {mode} | {m['requests']} | {fmt(m['first_audio_ms_p50'])} | {fmt(m['first_audio_ms_p95'])} "
                     f"| {fmt(m['total_ms_p50'])} |")
    if summary["errors"]:
        lines += ["", "Errors: " + "; ".join(summary["errors"])]
    if "soak" in summary:
        soak = summary["soak"]
        lines += ["", f"Soak (samples every {args.sample_s:g} s, judged after {args.warmup_s:g} s): "
                  f"**{'passed' if soak['passed'] else 'FAILED'}**", ""]
        lines += [f"- {'ok' if ok else 'FAILED'}: {what}" for what, ok in soak.get("checks", {}).items()]
        lines += [f"- {why}" for why in soak["why"] if "checks" not in soak]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.clients < 1 or args.seconds <= 0:
        print("error: --clients must be at least 1 and --seconds positive", file=sys.stderr)
        return 2
    items = texts()
    expected = expected_samples(args.voice, items)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="vits-edge-load-") as tmp:
        server = ServerProcess.ours("--voice", args.voice, "--threads", args.threads, "--workers", args.workers,
                                    "--noise-scale", 0, "--noise-w-scale", 0, "--max-connections",
                                    max(32, 2 * args.clients), log=Path(tmp) / "server.log")
        try:
            run = asyncio.run(load(server.port, server.pid, items, args.clients, args.seconds, args.max_requests,
                                   args.sample_s if args.soak else 0.5))
            alive = server.alive()
        finally:
            log = server.stop()
    summary = summarize(run, expected, args.clients)
    summary["server_alive_at_end"] = alive
    if args.soak:
        summary["soak"] = soak_verdict(run["samples"], warmup_s=args.warmup_s, clients=args.clients,
                                       rss_growth=args.rss_growth, failed=summary["failed"])
    facts = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d"), "cpu": sysinfo.cpu_model(),
             "cores": len(os.sched_getaffinity(0)), "model": entry(args.voice).model.name}
    (args.out / "results.json").write_text(json.dumps({"facts": facts, **summary, "raw": run["results"],
                                                       "rss": run["rss"], "samples": run["samples"]}, indent=1) + "\n")
    (args.out / "report.md").write_text(report(summary, facts, args))
    (args.out / "server.log").write_text(log)
    print(report(summary, facts, args))
    if args.docs:
        print(f"published: {publish('wyoming-soak' if args.soak else 'wyoming-load', report(summary, facts, args), argv)}")
    soaked = summary["soak"]["passed"] if args.soak else True
    return 0 if summary["failed"] == 0 and summary["wrong_length"] == 0 and alive and soaked else 1


if __name__ == "__main__":
    sys.exit(main())
