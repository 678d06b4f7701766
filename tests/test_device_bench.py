"""``vits-edge-bench``: every model of a voice folder on this machine, in processes of their own, and the results files
of the three benchmarks read in one place (runtime/results.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from runtime import results
from runtime.bench import SENTENCES, thread_counts
from tests_helpers import REPO

pytest.importorskip("torch")
pytest.importorskip("tiny_vits")


def bench(*argv, cwd=REPO, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "runtime.bench", *map(str, argv)], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout)


def test_every_model_is_measured_in_its_own_process_and_reported(quantized, tmp_path):
    out = tmp_path / "bench"
    proc = bench(quantized, "--threads", "1,2", "--rounds", "2", "--out", out)
    assert proc.returncode == 0, proc.stderr
    data = json.loads((out / "results.json").read_text())
    assert results.kind(data) == results.DEVICE and data["threads"] == [1, 2]
    assert [m["model"] for m in data["models"]] == ["model.onnx", "model.dynamic.onnx", "model.static.onnx"]
    for m in data["models"]:
        assert set(m["rtf"]) == set(m["first_audio_s"]) == {"1", "2"} and len(m["rtf_per_round"]["1"]) == 2
        assert all(v > 0 for v in [*m["rtf"].values(), *m["first_audio_s"].values(), m["load_s"], m["peak_rss_mb"]])
        assert m["bytes"] == (quantized / m["model"]).stat().st_size
    machine = data["machine"]
    assert machine["int8_class"] and machine["onnxruntime"] and isinstance(machine["fp16_arithmetic"], bool)
    report = (out / "report.md").read_text()
    assert report in proc.stdout
    rows = [line for line in report.splitlines() if line.startswith("| model.")]
    assert len(rows) == 3 and "| RTF 1 thr | RTF 2 thr |" in report
    assert len(data["sentences"]) == len(SENTENCES)

    # set beside a results file: here its own (a device's), read through runtime/results.py
    again = bench(quantized, "--threads", "1", "--rounds", "1", "--model", "model.onnx", "--out", tmp_path / "b2",
                  "--compare", out / "results.json")
    assert again.returncode == 0, again.stderr
    beside = (tmp_path / "b2" / "report.md").read_text()
    assert f"## Beside {out / 'results.json'}" in beside
    assert sum(line.startswith("| model.") for line in beside.split("## Beside")[1].splitlines()) == 6  # 3 models x 2


def test_bad_folders_models_and_flags_are_clear_errors(quantized, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = bench(empty, "--out", tmp_path / "o")
    assert proc.returncode == 1 and "has no model.onnx.json: not a voice folder" in proc.stderr
    proc = bench(tmp_path / "missing", "--out", tmp_path / "o")
    assert proc.returncode == 1 and "is not a folder" in proc.stderr
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.onnx.json").write_bytes((quantized / "model.onnx.json").read_bytes())
    proc = bench(broken, "--out", tmp_path / "o")
    assert proc.returncode == 1 and "has no model (model.onnx or model.*.onnx)" in proc.stderr
    (broken / "model.onnx").write_bytes(b"not an onnx file")
    proc = bench(broken, "--out", tmp_path / "o")
    assert proc.returncode == 1 and f"{broken / 'model.onnx'} could not be run" in proc.stderr, proc.stderr
    proc = bench(quantized, "--model", "model.nope.onnx", "--out", tmp_path / "o")
    assert proc.returncode == 1 and "--model model.nope.onnx: not in" in proc.stderr
    proc = bench(quantized, "--threads", "0", "--out", tmp_path / "o")
    assert proc.returncode == 1 and "thread counts start at 1" in proc.stderr
    (tmp_path / "other.json").write_text("{}")
    proc = bench(quantized, "--compare", tmp_path / "other.json", "--out", tmp_path / "o")
    assert proc.returncode == 1 and "not a results file" in proc.stderr
    assert not (tmp_path / "o").exists()  # nothing written on an error
    assert "Traceback" not in proc.stderr


def test_thread_counts_default_to_powers_of_two_and_the_cores(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 6)
    assert thread_counts(None) == [1, 2, 4, 6]
    monkeypatch.setattr("os.cpu_count", lambda: 4)
    assert thread_counts(None) == [1, 2, 4]
    assert thread_counts("4,1,2,2") == [1, 2, 4]


def test_the_pi_estimates_read_as_rows_beside_a_device():
    """benchmarks.pi's rows (keys as benchmarks/pi.py writes them) as the device benchmark sets them beside its own."""
    pi = {"schema": results.SCHEMA, "calibration": {}, "machine": {"cpu": "AMD EPYC"},
          "models": [{"model": "model.onnx", "variant": "fp32", "board": "Raspberry Pi 5",
                      "estimated_rtf": {"1": 0.28, "2": 0.15, "4": 0.08}, "first_audio_s": {"1": 0.36, "4": 0.12},
                      "x86_peak_rss_mb": 206.0},
                     {"model": "model.auto.onnx", "variant": "auto for the Raspberry Pi 5", "board": "Raspberry Pi 5",
                      "estimated_rtf": {"1": 0.22}, "first_audio_s": None}]}
    rows = results.rows(pi)
    assert rows[0] == {"model": "model.onnx", "threads": 1, "rtf": 0.28, "first_audio_s": 0.36, "peak_rss_mb": 206.0,
                       "where": "Raspberry Pi 5", "estimate": True}
    assert [r["first_audio_s"] for r in rows[:3]] == [0.36, None, 0.12]
    assert rows[3]["model"] == "auto for the Raspberry Pi 5" and rows[3]["first_audio_s"] is None
    with pytest.raises(ValueError, match="not a results file"):
        results.rows({"schema": results.SCHEMA})
