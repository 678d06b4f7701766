"""``python -m runtime.batch``: a corpus into WAVs and a manifest, every id once, resumable, surviving a killed worker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import wave
from pathlib import Path

import pytest
from conftest import REPO

TEXTS = ["The birch canoe slid on the smooth planks.", "Glue the sheet to the dark blue background.",
         "It's easy to tell the depth of a well.", "These days a chicken leg is a rare dish.",
         "Rice is often served in round bowls.", "The juice of lemons makes fine punch."]


def batch(*args, wait=True, backend: str | None = "local", **kwargs):
    """The CLI; ``backend`` None leaves it to choose (Ray when installed)."""
    cmd = [sys.executable, "-m", "runtime.batch", *map(str, args), *(["--backend", backend] if backend else [])]
    if not wait:
        return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, **{"timeout": 300, **kwargs})


def manifest(out: Path) -> list[dict]:
    path = out / "manifest.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def write_items(path: Path, count: int, extra: list[str] = ()) -> list[str]:
    lines = [json.dumps({"id": f"item-{k:04d}", "text": TEXTS[k % len(TEXTS)]}) for k in range(count)]
    path.write_text("\n".join([*lines, *extra]) + "\n")
    return [f"item-{k:04d}" for k in range(count)]


def check_wavs(out: Path, rows: list[dict]) -> None:
    for row in rows:
        with wave.open(str(out / row["path"])) as w:
            assert w.getnframes() == row["samples"] and w.getframerate() == row["sample_rate"], row["id"]
            assert abs(row["seconds"] - row["samples"] / row["sample_rate"]) < 1e-3


def test_every_item_once_bad_lines_recorded_and_a_rerun_resumes(exported, tmp_path):
    voice = exported("speakers")
    ids = write_items(tmp_path / "in.jsonl", 60, extra=[
        "{not json", json.dumps({"id": "empty", "text": "  "}), json.dumps({"id": "who", "text": "Hi.", "speaker": "zed"}),
        json.dumps({"id": "item-0001", "text": "a repeated id"}), json.dumps({"text": "no id"}),
        json.dumps({"id": "odd", "text": "x", "length_scale": -1})])
    out = tmp_path / "out"
    proc = batch(tmp_path / "in.jsonl", "--voice", voice, "--out", out, "--workers", 2)
    assert proc.returncode == 1, proc.stderr  # some items failed: said by the exit code
    rows = manifest(out)
    assert sorted(r["id"] for r in rows) == ids  # every good id once
    check_wavs(out, rows)
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    reasons = " | ".join(e["error"] for e in errors)
    assert len(errors) == 6 and "not valid JSON" in reasons and "empty text" in reasons and "zed" in reasons
    assert "already given on line 2" in reasons and 'no "id"' in reasons and "positive" in reasons
    assert "items/s" in proc.stderr and "s left" in proc.stderr
    before = (out / "manifest.jsonl").read_bytes()
    again = batch(tmp_path / "in.jsonl", "--voice", voice, "--out", out, "--workers", 2)
    assert "60 already in" in again.stderr and (out / "manifest.jsonl").read_bytes() == before


def test_a_text_file_and_a_plan_over_speakers_and_scales(exported, tmp_path):
    voice = exported("speakers")
    (tmp_path / "lines.txt").write_text("Hello there.\n\nGood night.\n")
    out = tmp_path / "out"
    proc = batch(tmp_path / "lines.txt", "--voice", voice, "--out", out, "--speakers", "all",
                 "--length-scales", "0.9,1.2", "--alignments", "--workers", 1)
    assert proc.returncode == 0, proc.stderr
    rows = manifest(out)
    assert len(rows) == 2 * 3 * 2  # lines 1 and 3 (ids from line numbers) x 3 speakers x 2 length scales
    assert {r["id"] for r in rows} >= {"1~spk=alice~ls=0.9", "3~spk=carol~ls=1.2"}
    assert {(r["speaker"], r["length_scale"]) for r in rows if r["id"].startswith("1~")} == {
        (s, ls) for s in ("alice", "bob", "carol") for ls in (0.9, 1.2)}
    slow = next(r for r in rows if r["id"] == "1~spk=bob~ls=1.2")
    fast = next(r for r in rows if r["id"] == "1~spk=bob~ls=0.9")
    assert slow["samples"] > fast["samples"] and slow["alignments"][0]["words"]
    check_wavs(out, rows)


def processes(marker: bytes, parent: int | None = None) -> list[int]:
    """Processes whose command line holds ``marker`` (children of ``parent`` when given), from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if marker in cmdline and (parent is None or int(stat.rsplit(")", 1)[1].split()[1]) == parent):
                found.append(int(entry.name))
    return found


def _workers(pid: int) -> list[int]:
    """The job's worker processes (children running multiprocessing's spawn_main)."""
    return processes(b"spawn_main", parent=pid)


def _wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the worker processes in /proc")
def test_a_killed_worker_and_an_interrupted_job_lose_and_double_nothing(exported, tmp_path):
    voice = exported("speakers")
    ids = write_items(tmp_path / "in.jsonl", 400)
    reference = tmp_path / "reference"
    proc = batch(tmp_path / "in.jsonl", "--voice", voice, "--out", reference, "--workers", 2, "--batch-size", 2)
    assert proc.returncode == 0, proc.stderr

    # a worker killed mid-job: a new pool takes the items not in the manifest
    out = tmp_path / "killed"
    job = batch(tmp_path / "in.jsonl", "--voice", voice, "--out", out, "--workers", 2, "--batch-size", 2, wait=False)
    try:
        _wait_for(lambda: len(manifest(out)) >= 20, 120, "the first items")
        os.kill(_wait_for(lambda: _workers(job.pid), 30, "a worker")[0], signal.SIGKILL)
        _, stderr = job.communicate(timeout=300)
    finally:
        job.kill()
    assert job.returncode == 0 and "a worker process died" in stderr, stderr
    rows = manifest(out)
    assert sorted(r["id"] for r in rows) == ids  # none lost, none twice
    check_wavs(out, rows)

    # the whole job interrupted (the driver and its workers killed), then run again: the uninterrupted result
    out = tmp_path / "resumed"
    job = batch(tmp_path / "in.jsonl", "--voice", voice, "--out", out, "--workers", 2, "--batch-size", 2, wait=False,
                start_new_session=True)
    try:
        _wait_for(lambda: len(manifest(out)) >= 50, 120, "the first items")
        os.killpg(job.pid, signal.SIGKILL)
        job.wait(timeout=30)
    finally:
        job.kill()
    proc = batch(tmp_path / "in.jsonl", "--voice", voice, "--out", out, "--workers", 2, "--batch-size", 2)
    assert proc.returncode == 0, proc.stderr
    rows = manifest(out)
    assert sorted(r["id"] for r in rows) == ids
    by_id = {r["id"]: r for r in manifest(reference)}
    for row in rows:  # noise comes from each id: the same audio as the uninterrupted run
        assert (out / row["path"]).read_bytes() == (reference / by_id[row["id"]]["path"]).read_bytes(), row["id"]


def broken_voice(voice: Path, folder: Path) -> Path:
    """A copy of ``voice`` whose model files are cut short (a half-copied voice)."""
    import shutil

    shutil.copytree(voice, folder)
    for model in folder.rglob("*.onnx"):
        model.write_bytes(model.read_bytes()[:1000])
    return folder


@pytest.mark.parametrize("backend", ["local", "ray"])
def test_a_voice_no_worker_can_load_stops_the_job_with_the_reason(exported, tmp_path, backend):
    if backend == "ray":
        pytest.importorskip("ray")
    voice = broken_voice(exported("char"), tmp_path / "broken")
    (tmp_path / "in.txt").write_text("Hello.\nBye.\n")
    proc = batch(tmp_path / "in.txt", "--voice", voice, "--out", tmp_path / "out", "--workers", 2, backend=backend,
                 timeout=240)
    assert proc.returncode == 2, proc.stderr
    assert "could not load the voices" in proc.stderr and "could not be loaded" in proc.stderr
    assert len(proc.stderr.splitlines()) < 20 and not manifest(tmp_path / "out")  # the reason, not pages of traceback
