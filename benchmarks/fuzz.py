"""``python -m benchmarks.fuzz``: hostile input, seeded, against the text frontend, the synthesis path and the server.

    python -m benchmarks.fuzz text --voice VOICE --count 100000 --seed 1
    python -m benchmarks.fuzz wyoming --voice VOICE --count 100000 --seed 1

``text``: every case (random code points across scripts, control characters, huge and empty texts, SSML-ish markup,
numbers, emoji, combining marks, right-to-left text, lone surrogates, known troublemakers such as '░ਝ';
``benchmarks/hostile.py``) goes through the frontend (``Voice.text_to_ids``) and the whole synthesis path
(``Voice.synthesize``), and every sample must be finite. The errors the runtime documents (``VoiceError`` and
``FrontendError``: a message that says what to do) count as handled; anything else is a crash, printed with its
seed and case number (``--case N`` runs that case alone). A long run can be stopped and taken up again:
``--out DIR`` keeps the tally (and which cases are done) in ``DIR/results.json`` every minute and when stopped, and
``--resume`` runs only the cases of ``--count`` that it does not already hold (also to extend a finished run).

``wyoming``: ``python -m runtime.serve`` on loopback; each connection sends one to six frames (valid events, in
right and wrong orders, truncated, oversized, wrong types, bad JSON, random bytes), half-closes, and reads until
the server closes (at most ``--read-timeout`` s). The server must answer or close every connection, never die,
never answer ``internal`` (a bug of ours that its catch-all caught), answer ``describe`` at the end, stop with exit
0, and its RSS (``/proc/PID/status`` VmRSS) must stay within ``--rss-mb`` of where it started.

Exit 0 when all of that held, 1 otherwise; ``--out`` keeps report.md and results.json; ``--docs`` publishes the
report as docs/measured/fuzz-text.md or fuzz-wyoming.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

import numpy as np

from benchmarks import hostile, sysinfo
from benchmarks.progress import Progress
from benchmarks.results import publish
from benchmarks.wyoming_load import one_request
from benchmarks.wyoming_servers import ServerProcess, rss_mb
from runtime.config import VoiceError
from runtime.files import atomic_open
from runtime.signals import Interrupted, interruptible
from runtime.text.errors import FrontendError
from runtime.voice import Voice

HANDLED = (VoiceError, FrontendError)  # the runtime's documented errors: a message a person can act on


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.fuzz", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="target", required=True)
    for name, what in (("text", "texts through the frontend and synthesis"), ("wyoming", "frames against the server")):
        s = sub.add_parser(name, help=f"hostile {what}")
        s.add_argument("--voice", type=Path, required=True, help="voice folder")
        s.add_argument("--count", type=int, default=1000, help="cases (texts, or frames) to try")
        s.add_argument("--seed", type=int, default=1)
        s.add_argument("--case", type=int, help="run this one case (a text, or a connection) alone, showing it")
        s.add_argument("--out", type=Path, help="write report.md and results.json here")
        s.add_argument("--docs", action="store_true", help="also publish the report under docs/measured/")
    t = sub.choices["text"]
    t.add_argument("--workers", type=int, default=1, help="processes, a voice each (the cases are the same whatever "
                   "the number)")
    t.add_argument("--resume", action="store_true", help="take up the run kept in --out: only the cases it has not "
                   "done are run, and the report counts them all")
    w = sub.choices["wyoming"]
    w.add_argument("--concurrency", type=int, default=4, help="connections at once")
    w.add_argument("--read-timeout", type=float, default=60.0, help="seconds a connection may take to be closed")
    w.add_argument("--rss-mb", type=float, default=20.0, help="how far the server's RSS may move from its start")
    return p


# -- texts ------------------------------------------------------------------------------------------------------

def try_text(voice: Voice, text: str) -> tuple[str, str | None]:
    """('ok' | 'handled' | 'crash', what happened)."""
    try:
        voice.text_to_ids(text)
        samples = 0
        for chunk in voice.synthesize(text, noise_scale=0.667, noise_w=0.8, seed=0):
            if not np.isfinite(chunk.audio).all():
                return "crash", f"non-finite samples in the audio of {chunk.text[:60]!r}"
            samples += len(chunk.audio)
        return "ok", None
    except HANDLED as exc:
        return "handled", f"{type(exc).__name__}: {exc}"[:200]
    except Exception:  # everything else is what this command looks for
        return "crash", traceback.format_exc(limit=6)


_VOICE: list[Voice] = []  # a worker's voice, loaded once


def _load_worker_voice(path: str) -> None:
    _VOICE[:] = [Voice.load(path, threads=1)]


def _start_worker(path: str) -> None:
    """A pool process: Ctrl-C and SIGTERM are the main process's to handle (it stops the pool and keeps the tally),
    and the logging is the main process's (a spawned process starts without it)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    logging.basicConfig(level=logging.ERROR)
    _load_worker_voice(path)


def _text_cases(seed: int, cases: list[int]) -> list[tuple[int, str, str, str, str | None]]:
    rows = []
    for case in cases:
        kind, text = hostile.text(seed, case)
        rows.append((case, kind, text, *try_text(_VOICE[0], text)))
    return rows


def _texts_in_workers(args, cases: list[int]):
    """What ``_text_cases`` gives, from ``args.workers`` processes (a voice each; a case is remade from its seed and
    number): 50 cases a task. A worker that dies (a crash in native code) ends the run: every case not yet done
    is a crash, each to be run alone with ``--case``."""
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool
    import multiprocessing

    blocks = [cases[k:k + 50] for k in range(0, len(cases), 50)]
    pool = ProcessPoolExecutor(args.workers, multiprocessing.get_context("spawn"), _start_worker,
                               (str(args.voice),))
    try:
        futures = {pool.submit(_text_cases, args.seed, block): block for block in blocks}
        done = set()
        for future in as_completed(futures):
            try:
                rows = future.result()
            except BrokenProcessPool:
                left = [case for f, block in futures.items() if f not in done for case in block]
                why = f"a worker process died (native code) on one of the {len(left)} cases not done"
                for case in left:
                    yield case, *hostile.text(args.seed, case), "crash", why
                return
            done.add(future)
            yield from rows
    finally:  # stopped early (Ctrl-C, a crash above): the blocks not started are dropped
        pool.shutdown(wait=True, cancel_futures=True)


def _ranges(cases) -> list[list[int]]:
    """Sorted case numbers as ``[start, stop)`` ranges (a tally of 100,000 cases stays a few lines)."""
    out: list[list[int]] = []
    for case in sorted(cases):
        if out and out[-1][1] == case:
            out[-1][1] += 1
        else:
            out.append([case, case + 1])
    return out


def _earlier(args) -> dict | None:
    """The tally kept in ``--out`` by an earlier run of the same seed and voice, for ``--resume``."""
    path = args.out / "results.json"
    if not path.is_file():
        return None
    r = json.loads(path.read_text())
    if r.get("target") != "text" or r.get("seed") != args.seed or r.get("voice", str(args.voice)) != str(args.voice):
        raise SystemExit(f"error: {path} holds a run of another target, seed or voice ({r.get('target')}, seed "
                         f"{r.get('seed')}, {r.get('voice')}): give --resume the --out of the same run, or a new --out")
    r.setdefault("done", [[0, r["cases"]]])  # a run that kept no ranges was written only when it had done them all
    return r


def run_text(args) -> dict:
    earlier = _earlier(args) if args.resume and args.case is None else None
    past = earlier or {}
    done = {case for start, stop in past.get("done", []) for case in range(start, stop)}
    cases = [args.case] if args.case is not None else [case for case in range(args.count) if case not in done]
    outcomes, kinds = Counter(past.get("outcomes", {})), Counter(past.get("kinds", {}))
    handled, crashes = Counter(past.get("handled_by_error", {})), list(past.get("crashes", []))
    seconds_before, sittings = past.get("seconds", 0.0), past.get("sittings", 1) + (1 if earlier else 0)
    if earlier:
        print(f"resuming {args.out / 'results.json'}: {len(done)} cases done, {len(cases)} to run", file=sys.stderr)
    show = Progress(every_s=30)
    show.total(len(cases))
    start = saved = time.perf_counter()

    def tally() -> dict:
        return {"target": "text", "seed": args.seed, "voice": str(args.voice), "cases": len(done),
                "seconds": round(seconds_before + time.perf_counter() - start, 1), "sittings": sittings,
                "outcomes": dict(outcomes), "kinds": dict(sorted(kinds.items())), "handled_by_error": dict(handled),
                "crashes": sorted(crashes, key=lambda c: c["case"]), "done": _ranges(done), "passed": not crashes}

    def keep() -> None:  # the tally so far, for --resume (the finished run's file is written by main)
        if args.out is not None and args.case is None:
            write_results(args.out, tally())

    if args.workers > 1 and len(cases) > 1:
        results = _texts_in_workers(args, cases)
    else:
        _load_worker_voice(str(args.voice))
        results = (row for case in cases for row in _text_cases(args.seed, [case]))
    try:
        for case, kind, text, outcome, detail in results:
            if args.case is not None:
                print(f"case {case} ({kind}): {text!r}")
            outcomes[outcome] += 1
            kinds[kind.split(":")[0]] += 1
            done.add(case)
            if outcome == "handled":
                handled[detail.split(":")[0]] += 1
            if outcome == "crash":
                crashes.append({"case": case, "kind": kind, "text": repr(text)[:300], "error": detail})
                print(f"CRASH seed {args.seed} case {case} ({kind}): {text[:120]!r}\n{detail}\n"
                      f"  reproduce: python -m benchmarks.fuzz text --voice {args.voice} --seed {args.seed} --case "
                      f"{case}", file=sys.stderr)
            show.step(f"{outcomes['crash']} crashes")
            if time.perf_counter() - saved > 60:
                keep()
                saved = time.perf_counter()
    except BaseException:  # stopped (Ctrl-C, SIGTERM as KeyboardInterrupt): what was done is kept for --resume
        keep()
        raise
    finally:
        results.close()
    return tally()


def text_report(r: dict, voice: Path) -> str:
    o = r["outcomes"]
    lines = [f"**{r['cases']} hostile texts, seed {r['seed']}: {o.get('crash', 0)} crashes**, {o.get('ok', 0)} spoken "
             f"(or skipped as nothing to say), {o.get('handled', 0)} refused with the runtime's documented errors; "
             f"{r['seconds']:.0f} s on the voice `{voice}`"
             + (f" (in {r['sittings']} sittings, by `--resume`)." if r.get("sittings", 1) > 1 else "."), "",
             "| kind of text | cases |", "|---|---|"]
    lines += [f"| {k} | {n} |" for k, n in r["kinds"].items()]
    if r["handled_by_error"]:
        lines += ["", "Refusals: " + ", ".join(f"{k} {n}" for k, n in r["handled_by_error"].items())]
    for c in r["crashes"][:20]:
        lines += ["", f"- case {c['case']} ({c['kind']}): `{c['text'][:100]}`: {c['error'].strip().splitlines()[-1]}"]
    return "\n".join(lines) + "\n"


# -- Wyoming frames ---------------------------------------------------------------------------------------------

async def one_connection(port: int, sent: bytes, leave: bool, timeout: float) -> dict:
    """Send, half-close, read every event until the server closes. 'answered', 'closed' (no event), 'left' (the
    client went away without reading) or 'hung' (neither an answer's end nor a close within ``timeout``)."""
    from wyoming.event import async_read_event

    got: list[tuple[str, str | None]] = []
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
    except (OSError, asyncio.TimeoutError) as exc:
        return {"outcome": "refused", "events": [], "error": repr(exc)}
    try:
        try:
            writer.write(sent)
            await asyncio.wait_for(writer.drain(), timeout)
            if leave:
                writer.transport.abort()
                return {"outcome": "left", "events": []}
            writer.write_eof()
        except (ConnectionError, OSError):
            pass  # the server closed on what it had read: what it answered is still there to read
        deadline = time.monotonic() + timeout
        while True:
            try:
                event = await asyncio.wait_for(async_read_event(reader), max(0.01, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                return {"outcome": "hung", "events": got}
            except (ConnectionError, OSError):
                event = None
            if event is None:
                break
            got.append((event.type, event.data.get("code") if event.type == "error" else None))
        return {"outcome": "answered" if got else "closed", "events": got}
    finally:
        writer.transport.abort()


# The most costly piece a request can hold: 400 characters (runtime.sentences.MAX_CHARS) of CJK, each spelled out by
# espeak-ng's English (about 6,600 ids on an espeak voice). onnxruntime's arena keeps the high-water mark of the
# largest piece spoken, so RSS is taken after this request: what moves after it is what the frames cost.
WARMUP = "".join(chr(0x4E00 + 7 * i) for i in range(400))


async def fuzz_server(server: ServerProcess, args, cases: list[int]) -> dict:
    rss = {"ready": rss_mb(server.pid)}
    warm = await one_request(server.port, WARMUP, streaming=False)
    rss["start"] = rss["max"] = rss_mb(server.pid)
    if not warm["ok"]:
        print(f"warning: the warm-up request failed: {warm.get('error')}", file=sys.stderr)
    outcomes, events, codes, kinds, failures = Counter(), Counter(), Counter(), Counter(), []
    frames, died = 0, False
    queue = asyncio.Queue()
    for case in cases:
        queue.put_nowait(case)
    show = Progress(every_s=30)
    show.total(len(cases))
    budget = args.count

    async def worker() -> None:
        nonlocal frames, died, budget
        while not died and not queue.empty():
            case = queue.get_nowait()
            if budget <= 0:
                return
            frame_kinds, sent, leave = hostile.connection(args.seed, case, budget)
            budget -= len(frame_kinds)
            frames += len(frame_kinds)
            kinds.update(frame_kinds)
            if args.case is not None:
                print(f"connection {case} ({', '.join(frame_kinds)}{', leaves' if leave else ''}): {sent[:2000]!r}")
            result = await one_connection(server.port, sent, leave, args.read_timeout)
            outcomes[result["outcome"]] += 1
            events.update(t for t, _ in result["events"])
            codes.update(c for t, c in result["events"] if t == "error")
            value = rss_mb(server.pid)
            if value is not None:
                rss["max"] = max(rss["max"], value)
            bad = "internal" in codes and any(c == "internal" for _, c in result["events"])
            if not server.alive():
                died = True
                bad = True
            if result["outcome"] in ("hung", "refused") or bad:
                failures.append({"case": case, "kinds": frame_kinds, "outcome": result["outcome"],
                                 "events": result["events"][-5:], "server_alive": server.alive()})
                print(f"FAILURE seed {args.seed} connection {case} ({', '.join(frame_kinds)}): {result['outcome']}, "
                      f"events {result['events'][-5:]}, server {'alive' if server.alive() else 'DEAD'}\n"
                      f"  reproduce: python -m benchmarks.fuzz wyoming --voice {args.voice} --seed {args.seed} "
                      f"--case {case}", file=sys.stderr)
            show.step(f"{frames} frames, {len(failures)} failures, RSS {value} MB")

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(max(1, args.concurrency))))
    seconds = time.perf_counter() - start
    healthy = not died and (await one_request(server.port, "Still here.", streaming=False))["ok"]
    rss["end"] = rss_mb(server.pid)
    return {"frames": frames, "connections": sum(outcomes.values()), "seconds": round(seconds, 1),
            "outcomes": dict(outcomes), "events": dict(events.most_common()), "error_codes": dict(codes.most_common()),
            "frame_kinds": dict(sorted(kinds.items())), "failures": failures, "server_died": died,
            "answers_after": healthy, "rss_mb": rss}


def run_wyoming(args) -> dict:
    # a connection is numbered; ``--count`` frames take at most that many connections (one frame or more each)
    cases = [args.case] if args.case is not None else list(range(args.count))
    with tempfile.TemporaryDirectory(prefix="vits-edge-fuzz-") as tmp:
        server = ServerProcess.ours("--voice", args.voice, "--threads", 1, "--noise-scale", 0, "--noise-w-scale", 0,
                                    "--idle-timeout", 10, "--max-connections", max(32, 4 * args.concurrency),
                                    log=Path(tmp) / "server.log")
        try:
            result = asyncio.run(fuzz_server(server, args, cases))
        finally:
            alive_before_stop = server.alive()
            log = server.stop()
            code = server.proc.returncode
    rss = result["rss_mb"]
    moved = max(abs(rss["max"] - rss["start"]), abs((rss["end"] or rss["max"]) - rss["start"]))
    traces = log.count("Traceback") + log.count("unexpected error")
    result.update(target="wyoming", seed=args.seed, exit_code=code, tracebacks_in_log=traces,
                  rss_moved_mb=round(moved, 1), rss_bound_mb=args.rss_mb)
    result["passed"] = (not result["failures"] and alive_before_stop and result["answers_after"] and code == 0
                        and traces == 0 and moved <= args.rss_mb)
    if traces:
        print("server log:\n" + log[-4000:], file=sys.stderr)
    return result


def wyoming_report(r: dict, voice: Path) -> str:
    rss, o = r["rss_mb"], r["outcomes"]
    lines = [f"**{r['frames']} mutated frames on {r['connections']} connections, seed {r['seed']}: the server "
             f"{'died' if r['server_died'] else 'never died'}, {len(r['failures'])} connections neither answered nor "
             f"closed or answered `internal`**; it answered a request after them ({r['answers_after']}) and stopped "
             f"with exit {r['exit_code']}; {r['tracebacks_in_log']} tracebacks in its log. {r['seconds']:.0f} s on "
             f"the voice `{voice}`.", "",
             f"- server RSS: {rss['ready']:.1f} MB listening, {rss['start']:.1f} MB after the warm-up (the longest piece a "
             f"request can hold: 400 CJK characters), {rss['end'] or 0:.1f} MB at the end, {rss['max']:.1f} MB "
             f"at most (moved {r['rss_moved_mb']} MB; bound {r['rss_bound_mb']:g} MB)",
             f"- connections: {', '.join(f'{k} {n}' for k, n in sorted(o.items()))}",
             f"- frames by kind: {', '.join(f'{k} {n}' for k, n in r['frame_kinds'].items())}",
             f"- answers: {', '.join(f'{k} {n}' for k, n in r['events'].items())}",
             f"- error codes: {', '.join(f'{k} {n}' for k, n in r['error_codes'].items())}"]
    for f in r["failures"][:20]:
        lines.append(f"- FAILED connection {f['case']} ({', '.join(f['kinds'])}): {f['outcome']}, {f['events']}")
    return "\n".join(lines) + "\n"


def machine_facts() -> dict:
    return {"date": time.strftime("%Y-%m-%d"), "cpu": sysinfo.cpu_model(), "cores": len(os.sched_getaffinity(0))}


def write_results(out: Path, result: dict) -> None:
    """``out/results.json``: the result with the machine's facts, whole or not at all (a run stopped while it is
    written keeps the last one, which ``--resume`` reads)."""
    out.mkdir(parents=True, exist_ok=True)
    with atomic_open(out / "results.json") as f:
        f.write((json.dumps({"facts": machine_facts(), **result}, indent=1) + "\n").encode())


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "resume", False) and args.out is None:
        print("error: --resume takes up the run kept in --out: give --out DIR", file=sys.stderr)
        return 2
    if args.count < 1:
        print("error: --count must be at least 1", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.ERROR)  # the runtime's warnings about unsayable text would be most of the run
    try:
        with interruptible():
            result = run_text(args) if args.target == "text" else run_wyoming(args)
    except Interrupted as stop:
        if args.target == "text" and args.out is not None and args.case is None:
            print(f"stopped by {stop.name}: the cases done are kept in {args.out / 'results.json'}; the same command "
                  "with --resume takes the run up", file=sys.stderr)
        return stop.exit_code
    title = "Hostile texts" if args.target == "text" else "Mutated Wyoming frames"
    body = text_report(result, args.voice) if args.target == "text" else wyoming_report(result, args.voice)
    facts = machine_facts()
    report = f"# {title} ({facts['date']}, {facts['cpu']}, {facts['cores']} cores)\n\n{body}"
    print(report)
    if args.out is not None:
        write_results(args.out, result)
        (args.out / "report.md").write_text(report)
    if args.docs and args.case is None:
        print(f"published: {publish('fuzz-' + args.target, report, argv)}")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
