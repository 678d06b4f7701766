"""The results files the benchmarks write, read in one place: the device benchmark's (``vits-edge-bench``, run on
the device), the build machine's (``python -m benchmarks.run``) and the Raspberry Pi estimates (``python -m
benchmarks.pi``). ``rows`` gives each as the same rows (model, threads, real-time factor, first audio, memory), so
a measurement on a real Pi can be set beside the build machine's and beside the estimates."""

from __future__ import annotations

import json
from pathlib import Path

SCHEMA = 1
DEVICE, BENCHMARK, PI = "device", "benchmark", "pi-estimate"


def kind(data: dict) -> str:
    """Which benchmark wrote ``data``: DEVICE, BENCHMARK or PI (ValueError for anything else)."""
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise ValueError(f"not a results file of this version (schema {SCHEMA})")
    if data.get("kind") == DEVICE:
        return DEVICE
    if isinstance(data.get("contenders"), list):
        return BENCHMARK
    if isinstance(data.get("models"), list) and "calibration" in data:
        return PI
    raise ValueError("not a results file of vits-edge-bench, benchmarks.run or benchmarks.pi")


def load(path: str | Path) -> dict:
    """A results.json of any of the three benchmarks, with ``source`` (its path) added; ValueError saying what it
    is not, FileNotFoundError as usual."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        kind(data)
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from exc
    data["source"] = str(path)
    return data


def rows(data: dict) -> list[dict]:
    """Each measured (or estimated) model of ``data`` at each thread count: ``model`` (file name), ``threads``,
    ``rtf``, ``first_audio_s``, ``peak_rss_mb`` (None where not measured), ``where`` (machine or board) and
    ``estimate`` (True for emulation estimates)."""
    found = kind(data)
    machine = data.get("machine", {})
    out = []
    if found == DEVICE:
        for m in data["models"]:
            for threads, rtf in m.get("rtf", {}).items():
                out.append({"model": m["model"], "threads": int(threads), "rtf": rtf,
                            "first_audio_s": m.get("first_audio_s", {}).get(threads),
                            "peak_rss_mb": m.get("peak_rss_mb"), "where": machine.get("cpu"), "estimate": False})
    elif found == BENCHMARK:
        threads = data.get("settings", {}).get("threads")
        for c in data["contenders"]:
            onnx_files = [f for f in c.get("model_files", {}) if f.endswith(".onnx")]
            rtf = ((c.get("speed") or {}).get("rtf") or {}).get("median")
            if not str(c.get("key", "")).startswith("ort-") or not onnx_files or rtf is None:
                continue  # our runtime's rows: the ones a device runs too
            out.append({"model": Path(onnx_files[0]).name, "threads": threads, "rtf": rtf,
                        "first_audio_s": (c.get("ttfa_s") or {}).get("median"), "peak_rss_mb": c.get("peak_rss_mb"),
                        "where": machine.get("cpu"), "estimate": False})
    else:
        for m in data["models"]:
            first = m.get("first_audio_s") or {}  # the streamed first audio at 1 and 4 threads
            for threads, rtf in (m.get("estimated_rtf") or {}).items():
                out.append({"model": m["model"] if not m.get("variant", "").startswith("auto for") else m["variant"],
                            "threads": int(threads), "rtf": rtf, "first_audio_s": first.get(str(threads)),
                            "peak_rss_mb": m.get("x86_peak_rss_mb"), "where": m.get("board"), "estimate": True})
    return out
