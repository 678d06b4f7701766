"""``python -m benchmarks.fuzz``, short seeded runs on the tiny phoneme voice: hostile texts through the frontend and
synthesis (no crash), mutated Wyoming frames against a server on loopback (answered or closed, never dead)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from benchmarks import fuzz, hostile
from tests_helpers import REPO


def test_cases_are_remade_from_seed_and_number():
    assert hostile.text(1, 17) == hostile.text(1, 17) and hostile.text(1, 17) != hostile.text(2, 17)
    assert hostile.connection(1, 5, 6) == hostile.connection(1, 5, 6)
    kinds = {hostile.text(1, case)[0].split(":")[0] for case in range(300)}
    assert kinds == set(hostile.TEXT_KINDS) | {"mix"}


def test_hostile_texts_crash_nothing_and_a_stopped_run_is_taken_up(exported, tmp_path):
    """The run is stopped with SIGINT part-way (wherever it is then: before its first case, or after its last, the
    checks hold as well), keeps its tally, and ``--resume`` runs the rest: each case counted once."""
    pytest.importorskip("tiny_vits")
    voice = exported("phoneme")
    argv = ["text", "--voice", str(voice), "--count", "150", "--seed", "1", "--workers", "2", "--out", str(tmp_path)]
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.fuzz", *argv], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    time.sleep(6)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    kept = json.loads((tmp_path / "results.json").read_text())
    assert proc.returncode in (130, 0), err[-2000:]
    if proc.returncode == 130:
        assert "--resume takes the run up" in err
    assert kept["cases"] == sum(kept["kinds"].values()) == sum(n for a, b in kept["done"] for n in [b - a])

    assert fuzz.main([*argv, "--resume"]) == 0
    result = json.loads((tmp_path / "results.json").read_text())
    assert result["cases"] == 150 and result["outcomes"].get("crash", 0) == 0, result["crashes"]
    kinds = Counter(hostile.text(1, case)[0].split(":")[0] for case in range(150))
    assert result["kinds"] == dict(kinds) and sum(result["outcomes"].values()) == 150  # each case once
    assert result["done"] == [[0, 150]] and result["sittings"] == 2
    # '░ਝ' (espeak-ng's "No envelope") is among the literals every run can draw
    assert "░ਝ" in hostile.LITERALS


def test_resume_refuses_another_runs_tally(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps({"target": "text", "seed": 2, "cases": 10}))
    with pytest.raises(SystemExit, match="another target, seed or voice"):
        fuzz.main(["text", "--voice", "v", "--seed", "1", "--out", str(tmp_path), "--resume"])
    assert fuzz.main(["text", "--voice", "v", "--resume"]) == 2  # no --out: nothing to take up


def test_an_unhandled_error_is_a_crash_with_its_case():
    class Broken:
        def text_to_ids(self, text):
            raise IndexError("boom")

    outcome, detail = fuzz.try_text(Broken(), "x")
    assert outcome == "crash" and "IndexError" in detail


def test_mutated_frames_never_kill_the_server(exported, tmp_path):
    pytest.importorskip("wyoming")
    voice = exported("phoneme")
    code = fuzz.main(["wyoming", "--voice", str(voice), "--count", "2000", "--seed", "1", "--out", str(tmp_path)])
    r = json.loads((tmp_path / "results.json").read_text())
    assert r["frames"] == 2000 and not r["server_died"] and not r["failures"], r["failures"]
    assert r["outcomes"].get("hung", 0) == 0 and r["answers_after"] and r["exit_code"] == 0
    assert r["tracebacks_in_log"] == 0
    assert set(r["frame_kinds"]) == set(hostile.FRAME_KINDS)
    assert {"protocol", "too-large"} <= set(r["error_codes"]) and "internal" not in r["error_codes"]
    # after the warm-up with the costliest piece a request can hold, RSS stays within 20 MB (the command's verdict)
    assert r["rss_mb"]["start"] and r["rss_moved_mb"] <= 20.0 and code == 0, r["rss_mb"]
