"""``python -m benchmarks.wyoming_load --soak``: the hour of load's criteria, and a two-minute run of it on the tiny
voice (the hour with 8 clients is run by hand: docs/wyoming.md)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from tests_helpers import REPO

from benchmarks.wyoming_load import soak_verdict


def _samples(rss, threads=8, other=4, sockets=3):
    return [{"at_s": 10.0 * i, "rss_mb": r, "threads": threads, "other_fds": other, "sockets": sockets}
            for i, r in enumerate(rss)]


def test_the_soak_judges_only_what_comes_after_the_warm_up():
    # growth during the warm-up is allowed; after it, 5% at most
    assert soak_verdict(_samples([50, 90, 100, 104, 103]), warmup_s=20, clients=4, rss_growth=0.05,
                        failed=0)["passed"]
    grown = soak_verdict(_samples([50, 90, 100, 104, 106]), warmup_s=20, clients=4, rss_growth=0.05, failed=0)
    assert not grown["passed"] and "RSS grew 6.0%" in grown["why"][0]
    leaking = _samples([100] * 5)
    leaking[-1]["other_fds"] += 1
    assert not soak_verdict(leaking, warmup_s=20, clients=4, rss_growth=0.05, failed=0)["passed"]
    threads = _samples([100] * 5)
    threads[-1]["threads"] += 1
    assert not soak_verdict(threads, warmup_s=20, clients=4, rss_growth=0.05, failed=0)["passed"]
    assert not soak_verdict(_samples([100] * 5, sockets=10), warmup_s=20, clients=4, rss_growth=0.05,
                            failed=0)["passed"]
    assert not soak_verdict(_samples([100] * 5), warmup_s=20, clients=4, rss_growth=0.05, failed=1)["passed"]
    assert not soak_verdict(_samples([100] * 2), warmup_s=60, clients=4, rss_growth=0.05, failed=0)["passed"]


def test_two_minutes_of_load_leak_nothing(exported, tmp_path):
    """4 clients for 2 minutes, sampled every 10 s, judged after 30 s: bounded in time (the run) and requests."""
    pytest.importorskip("wyoming")
    voice = exported("char")
    proc = subprocess.run([sys.executable, "-m", "benchmarks.wyoming_load", "--voice", str(voice), "--clients", "4",
                           "--seconds", "120", "--soak", "--warmup-s", "30", "--max-requests", "20000",
                           "--out", str(tmp_path)], capture_output=True, text=True, cwd=REPO, timeout=400)
    result = json.loads((tmp_path / "results.json").read_text())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert result["failed"] == 0 and result["wrong_length"] == 0 and result["soak"]["passed"], result["soak"]
    assert result["soak"]["samples_after_warmup"] >= 8 and result["requests"] >= 4
