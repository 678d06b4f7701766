"""Progress on stderr: one updating line on a terminal, a line every few seconds in a log (CI)."""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, stream=sys.stderr, every_s: float = 5.0):
        self.stream = stream
        self.tty = stream.isatty()
        self.every_s = every_s
        self.start = self.last = time.perf_counter()
        self.steps = self.done_steps = 0

    def _elapsed(self) -> str:
        return f"{time.perf_counter() - self.start:6.1f}s"

    def _write(self, text: str, *, transient: bool) -> None:
        if self.tty and transient:
            self.stream.write("\r\033[K" + text[:150])
        else:
            self.stream.write(("\r\033[K" if self.tty else "") + text + "\n")
        self.stream.flush()

    def total(self, steps: int) -> None:
        self.steps, self.done_steps = steps, 0

    def phase(self, text: str) -> None:
        self._write(f"[{self._elapsed()}] {text}", transient=False)

    def step(self, text: str) -> None:
        self.done_steps += 1
        now = time.perf_counter()
        if not self.tty and now - self.last < self.every_s:
            return
        self.last = now
        percent = f"{100 * self.done_steps / self.steps:3.0f}% " if self.steps else ""
        self._write(f"[{self._elapsed()}] {percent}{text}", transient=True)

    def done(self) -> None:
        self._write(f"[{self._elapsed()}] done", transient=False)
