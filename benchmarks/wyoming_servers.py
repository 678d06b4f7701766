"""Wyoming servers as their users start them (a process each, on loopback), for the benchmarks and tests."""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class ServerProcess:
    """``python -m runtime.serve ARGS`` on a free loopback port (its port from the line it prints when it
    listens), or wyoming-piper (ready when its port accepts); the log goes to a file."""

    def __init__(self, argv: list[str], *, log: Path, port: int | None = None, ready_line: bool = True,
                 timeout_s: float = 120.0, cpus: list[int] | None = None):
        self.log = Path(log)
        self.argv = [str(a) for a in argv]
        if cpus is not None:  # the same cores for every server
            self.argv = ["taskset", "-c", ",".join(map(str, cpus)), *self.argv]
        with open(self.log, "wb") as log_file:
            self.proc = subprocess.Popen(self.argv, cwd=REPO, stdout=subprocess.PIPE, stderr=log_file,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.port = port
        deadline = time.monotonic() + timeout_s
        if ready_line:
            ready, _, _ = select.select([self.proc.stdout], [], [], timeout_s)
            line = self.proc.stdout.readline().decode() if ready else ""
            if "serving" not in line:
                self.stop()
                raise RuntimeError(f"{' '.join(self.argv[:4])} did not start: {line!r} {self.log.read_text()[-2000:]}")
            self.port = int(line.rsplit(":", 1)[1])
        else:
            while True:
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                    break
                except OSError:
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        self.stop()
                        raise RuntimeError(f"{' '.join(self.argv[:4])} did not start: "
                                           f"{self.log.read_text()[-2000:]}") from None
                    time.sleep(0.1)

    @classmethod
    def ours(cls, *args, log: Path, cpus: list[int] | None = None) -> ServerProcess:
        return cls([sys.executable, "-m", "runtime.serve", *args, "--uri", "tcp://127.0.0.1:0"], log=log, cpus=cpus)

    @classmethod
    def wyoming_piper(cls, piper_onnx: Path, data_dir: Path, *args, log: Path,
                      cpus: list[int] | None = None) -> ServerProcess:
        """wyoming-piper on a Piper voice file (linked into ``data_dir``: it looks there before downloading)."""
        data_dir.mkdir(parents=True, exist_ok=True)
        for src in (piper_onnx, Path(str(piper_onnx) + ".json")):
            link = data_dir / src.name
            if not link.exists():
                link.symlink_to(src.resolve())
        port = free_port()
        return cls([sys.executable, "-m", "wyoming_piper", "--voice", piper_onnx.name.removesuffix(".onnx"),
                    "--data-dir", data_dir, "--uri", f"tcp://127.0.0.1:{port}", *args], log=log, port=port,
                   ready_line=False, cpus=cpus)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.log.read_text(errors="replace")
