"""The device side is slim, provably: only onnxruntime, numpy and the standard library."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys

import pytest

from tests_helpers import REPO

ALLOWED = {"numpy", "onnxruntime", "runtime"}
# what an extra's code may import: runtime/serve/, the `server` extra (and `zeroconf`, which wyoming imports);
# runtime/batch/cluster.py, the `cluster` extra (the rest of runtime/batch runs without it: tests/test_batch_ray.py)
EXTRAS = {"serve": {"wyoming"}, "batch/cluster.py": {"ray"}}


def test_runtime_imports_only_stdlib_numpy_onnxruntime():
    """The device runtime needs nothing else; an extra's folder only what its extra installs, and nothing
    outside that folder imports it."""
    offenders = []
    for path in (REPO / "runtime").rglob("*.py"):
        relative = path.relative_to(REPO / "runtime")
        folder = relative.parts[0]
        allowed = ALLOWED.union(*(names for part, names in EXTRAS.items()
                                  if relative.as_posix() == part or relative.parts[0] == part))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            for name in names:
                top = name.split(".")[0]
                if top not in allowed and top not in sys.stdlib_module_names:
                    offenders.append(f"{path.relative_to(REPO)}: {name}")
                extra = name.split(".")[1] if name.startswith("runtime.") and name.count(".") else None
                if extra in EXTRAS and folder != extra:
                    offenders.append(f"{path.relative_to(REPO)}: {name} (the {extra} extra's code)")
    assert not offenders


@pytest.fixture(scope="module")
def slim_venv(tmp_path_factory):
    """The project's wheel in a fresh venv with only onnxruntime and numpy, as on a Raspberry Pi."""
    root = tmp_path_factory.mktemp("slim")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(root / "dist"), str(REPO)], check=True, timeout=600)
    wheel = next((root / "dist").glob("vits_edge-*.whl"))
    subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True, timeout=600)
    py = root / "venv" / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheel)], check=True,
                   timeout=600)
    return py


def test_wheel_installs_with_only_onnxruntime_and_numpy(slim_venv):
    listing = subprocess.run([str(slim_venv), "-m", "pip", "list", "--format=json"], capture_output=True, text=True,
                             check=True).stdout
    installed = {p["name"].lower().replace("_", "-") for p in json.loads(listing)}
    assert {"onnxruntime", "numpy", "vits-edge"} <= installed
    assert not installed & {"torch", "coqui-tts", "onnx", "librosa", "scipy", "inflect"}


def test_synthesize_runs_in_slim_venv(slim_venv, exported, tmp_path):
    out = tmp_path / "slim.wav"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.run([str(slim_venv), "-m", "runtime.synthesize", "-m", str(exported("char")),
                           "Spoken on the device side.", "--output", str(out)],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert out.stat().st_size > 1000
    script = subprocess.run([str(slim_venv.parent / "vits-edge-synthesize"), "--help"], capture_output=True, text=True)
    assert script.returncode == 0 and "--output-raw" in script.stdout


def test_server_without_its_extra_says_how_to_install_it(slim_venv, exported, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    for argv in ([str(slim_venv), "-m", "runtime.serve"], [str(slim_venv.parent / "vits-edge-serve")]):
        proc = subprocess.run([*argv, "--voice", str(exported("char"))], capture_output=True, text=True,
                              cwd=tmp_path, env=env, timeout=120)
        assert proc.returncode == 2 and "pip install 'vits-edge[server]'" in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_device_benchmark_runs_in_slim_venv_on_the_real_voice(slim_venv, real_voice_quantized, tmp_path):
    """What a Pi owner runs after `pip install vits-edge`: `vits-edge-bench VOICE_DIR`, with onnxruntime and numpy
    only."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    out = tmp_path / "bench"
    proc = subprocess.run([str(slim_venv.parent / "vits-edge-bench"), str(real_voice_quantized), "--threads", "1",
                           "--rounds", "1", "--model", "model.onnx", "--model", "model.auto.onnx", "--out", str(out)],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    data = json.loads((out / "results.json").read_text())
    assert [m["model"] for m in data["models"]] == ["model.onnx", "model.auto.onnx"]
    assert all(0 < m["rtf"]["1"] < 2 and m["peak_rss_mb"] > 50 for m in data["models"])
    assert "| model.auto.onnx |" in (out / "report.md").read_text()
