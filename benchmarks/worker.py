"""One contender per process, so its load time and peak memory are its own.

The parent starts a worker with :func:`start`; the worker imports and loads its engine, then
answers requests over a pipe until told to stop. Times are taken inside the worker around the
engine call only, so the pipe never counts.
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import sys
import time
import traceback

_CONTEXT = multiprocessing.get_context("spawn")  # a fresh interpreter: nothing inherited from the parent


def _peak_rss_mb() -> float:
    """This process's peak resident memory since it started its own program.

    Linux's VmHWM belongs to the process's own address space; ``ru_maxrss`` would also count the
    parent's size at the moment it forked (it survives the exec), so it is only the fallback.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if sys.platform != "darwin" else peak / 2**20  # kB on Linux, bytes on macOS


def _redirect_output(log_path: str) -> None:
    """Libraries print; keep the parent's progress display clean and keep what they said."""
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def serve(conn, spec: dict) -> None:
    _redirect_output(spec["log"])
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(spec["threads"])
    from benchmarks.engines import ENGINES
    from benchmarks.stream_engines import STREAM_ENGINES

    try:
        engine = {**ENGINES, **STREAM_ENGINES}[spec["kind"]](spec)
        start = time.perf_counter()
        engine.import_libs()
        imported = time.perf_counter()
        engine.load()
        loaded = time.perf_counter()
    except BaseException as exc:  # report, never hang the parent
        traceback.print_exc()
        conn.send({"error": f"{type(exc).__name__}: {exc}"})
        return
    conn.send({"import_s": imported - start, "load_s": loaded - imported, "sample_rate": engine.sample_rate,
               "rss_after_load_mb": _peak_rss_mb(), "ttfa_note": engine.ttfa_note})
    while True:
        msg = conn.recv()
        op = msg["op"]
        try:
            if op == "stop":
                conn.send({"ok": True})
                return
            if op == "rss":
                reply = {"peak_rss_mb": _peak_rss_mb()}
            elif op == "synth":
                t0, c0 = time.perf_counter(), time.process_time()
                audio = engine.synth(msg["index"], msg["noise"])
                seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
                reply = {"seconds": seconds, "cpu_seconds": cpu, "samples": len(audio),
                         "audio": audio if msg.get("audio") else None}
            elif op == "first":
                t0 = time.perf_counter()
                audio = engine.first_audio()
                reply = {"seconds": time.perf_counter() - t0, "samples": len(audio)}
            elif op == "speak":
                reply = engine.speak(msg["text"])
            else:
                reply = {"error": f"unknown request {op!r}"}
        except BaseException as exc:
            traceback.print_exc()
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        conn.send(reply)


class WorkerError(RuntimeError):
    pass


def _log_tail(path: str, lines: int = 3) -> str:
    """The last lines a failed process wrote (its log lives in a folder removed after the run)."""
    try:
        text = [line for line in open(path, encoding="utf-8", errors="replace").read().splitlines() if line.strip()]
    except OSError:
        return ""
    return " | ".join(text[-lines:])


class Worker:
    """The parent's handle on one contender's process."""

    def __init__(self, spec: dict, timeout_s: float = 600.0):
        self.spec = spec
        self.timeout_s = timeout_s
        self.conn, child = _CONTEXT.Pipe()
        self.process = _CONTEXT.Process(target=serve, args=(child, spec), daemon=True, name=spec["key"])
        self.process.start()
        child.close()
        self.ready = self._receive()

    def _receive(self) -> dict:
        if not self.conn.poll(self.timeout_s):
            self.close()
            raise WorkerError(f"no answer within {self.timeout_s:.0f} s ({_log_tail(self.spec['log'])})")
        try:
            reply = self.conn.recv()
        except EOFError:
            self.process.join(5)
            raise WorkerError(f"the process died (exit code {self.process.exitcode}): "
                              f"{_log_tail(self.spec['log'])}") from None
        if "error" in reply:
            raise WorkerError(reply["error"])
        return reply

    def ask(self, op: str, **kwargs) -> dict:
        self.conn.send({"op": op, **kwargs})
        return self._receive()

    def close(self) -> None:
        if self.process.is_alive():
            try:
                self.conn.send({"op": "stop"})
                self.conn.poll(10)
            except (OSError, EOFError):
                pass
            self.process.join(10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)
        self.conn.close()


def _run_logged(log_path: str, target, args: tuple) -> None:
    _redirect_output(log_path)
    target(*args)


def run_in_process(target, *args, log: str, timeout_s: float = 600.0) -> None:
    """Run ``target(*args)`` in a fresh process (e.g. preparing the PyTorch int8 model)."""
    name = getattr(target, "__name__", str(target))
    process = _CONTEXT.Process(target=_run_logged, args=(log, target, args), daemon=True)
    process.start()
    process.join(timeout_s)
    if process.is_alive():
        process.kill()
        process.join(5)
        raise WorkerError(f"{name} took longer than {timeout_s:.0f} s: {_log_tail(log)}")
    if process.exitcode != 0:
        raise WorkerError(f"{name} failed (exit code {process.exitcode}): {_log_tail(log)}")
