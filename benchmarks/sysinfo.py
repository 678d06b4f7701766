"""What the run had: machine, CPU features that matter for int8, library versions, installed sizes."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import time
from importlib import metadata
from pathlib import Path

from runtime import cpu

_VERSIONS = ("vits-edge", "onnxruntime", "torch", "numpy", "coqui-tts", "piper-tts", "sherpa-onnx", "faster-whisper",
             "ctranslate2", "speechmos", "streaming-vits")

# The CPU's model, its int8 features and class live with the runtime (runtime/cpu.py): the sidecar records them too.
cpu_features = cpu.features
cpu_model = cpu.model


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages: other work on the machine skews timings."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _process_cpu_s(pid: int) -> float:
    """CPU seconds of a live process and its waited-for children (Linux /proc/PID/stat)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")  # utime stime cutime cstime


class OtherWork:
    """How much CPU other processes used while we measured (Linux): the run's own noise floor.

    Busy time of the whole machine (/proc/stat) minus our CPU time (this process, its finished
    children, and the live worker processes ``pids()`` names), as a share of all cores.
    """

    def __init__(self, pids=lambda: ()):
        self.pids = pids
        self.start = self._snapshot()

    def _snapshot(self):
        try:
            with open("/proc/stat", encoding="ascii") as f:
                fields = [int(x) for x in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        busy = (sum(fields[:3]) + sum(fields[5:8])) / os.sysconf("SC_CLK_TCK")  # user nice system irq softirq steal
        own = sum(os.times()[:4]) + sum(_process_cpu_s(pid) for pid in self.pids())
        return busy, own, time.monotonic()

    def share(self) -> float | None:
        end = self._snapshot()
        if self.start is None or end is None:
            return None
        busy, own, wall = (e - s for e, s in zip(end, self.start))
        return max(0.0, (busy - own) / (wall * (os.cpu_count() or 1))) if wall > 0 else None


def machine() -> dict:
    return {
        "cpu": cpu_model(),
        "arch": platform.machine(),
        "cores": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "cpu_features": cpu_features(),
        "int8_class": cpu.int8_class(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": {name: version(name) for name in _VERSIONS},
    }


def git_revision(repo: Path) -> str | None:
    """``git describe --always --dirty`` of the checkout the benchmark ran from, if it is one."""
    try:
        out = subprocess.run(["git", "-C", str(repo), "describe", "--always", "--dirty"], capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def describe(info: dict) -> str:
    """One line a person can read: "AMD EPYC, x86_64, 2 cores, 23.4 GiB, AVX2 AVX512-VNNI (int8 dot-product)"."""
    names = info.get("cpu_features") or []
    features = " ".join(names) or "no int8 features"
    return (f"{info.get('cpu')}, {info.get('arch')}, {info.get('cores')} cores, {info.get('memory_gib')} GiB, "
            f"{features} ({info.get('int8_class') or cpu.int8_class(names)})")


# -- installed size -------------------------------------------------------------------------------
def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirements(dist: metadata.Distribution) -> list[str]:
    """Names of the distributions ``dist`` needs without extras, on this platform."""
    try:
        from packaging.requirements import Requirement
    except ImportError:  # pragma: no cover - packaging is everywhere pip is
        Requirement = None
    names = []
    for line in dist.requires or []:
        if Requirement is not None:
            req = Requirement(line)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            names.append(req.name)
        elif "extra ==" not in line:
            names.append(re.split(r"[\s;<>=!~\[(]", line, maxsplit=1)[0])
    return names


def _dist_bytes(dist: metadata.Distribution) -> int:
    total = 0
    for file in dist.files or []:
        try:
            total += dist.locate_file(file).stat().st_size
        except OSError:
            pass
    return total


def installed_size(roots: list[str]) -> dict:
    """Bytes on disk of ``roots`` and everything they pull in (what ``pip install`` would bring).

    Walks the installed distributions' requirements (markers evaluated, extras ignored) and sums
    the files each one's RECORD lists. A root that is not installed is reported as missing.
    """
    seen: dict[str, int] = {}
    missing: list[str] = []
    stack = list(roots)
    while stack:
        name = _canonical(stack.pop())
        if name in seen or name in missing:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            missing.append(name)
            continue
        seen[name] = _dist_bytes(dist)
        stack.extend(_requirements(dist))
    return {"bytes": sum(seen.values()), "packages": dict(sorted(seen.items(), key=lambda kv: -kv[1])),
            "missing": missing}


def apt_size(packages: list[str]) -> int | None:
    """Installed bytes of Debian packages (e.g. espeak-ng), or None without dpkg."""
    if not shutil.which("dpkg-query"):
        return None
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f", "${Installed-Size}\\n", *packages],
                             capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    sizes = [int(x) for x in out.split() if x.isdigit()]
    return sum(sizes) * 1024 if sizes else None
