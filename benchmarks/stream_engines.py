"""The streaming benchmark's contenders, inside their worker processes: speak a text from the text.

``speak(text)`` returns when the last sample exists and says when the first one did: the time to
first audio (TTFA) is what a listener waits for, the total what the machine spent. Each engine
starts from text with its own frontend, as its users call it. As in engines.py, each engine imports what it
runs when it loads: its process's memory is measured and must hold only that.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from benchmarks.engines import Engine, PiperEngine


class _Timed:
    """Time to the first chunk and to the last of an iterator of audio chunks."""

    def __init__(self):
        self.start = time.perf_counter()
        self.first = None
        self.samples = 0

    def add(self, samples: int) -> None:
        if self.first is None:
            self.first = time.perf_counter() - self.start
        self.samples += samples

    def result(self) -> dict:
        return {"ttfa_s": self.first, "total_s": time.perf_counter() - self.start, "samples": self.samples}


class OursEngine(Engine):
    """vits-edge's ``Voice``: ``mode`` stream (pieces, chunks as decoded), whole (pieces, whole sentences)
    or graph (the whole model.onnx graph, whole sentences: the runtime before streaming)."""

    def load(self) -> None:
        from runtime.voice import Voice

        mode = self.spec["mode"]
        self.voice = Voice.load(self.spec["model"], threads=self.threads, streaming=mode != "graph")
        if mode != "graph" and not self.voice.streams:
            raise RuntimeError(f"{self.spec['model']} has no streaming pieces (python -m exporter split VOICE)")
        self.sample_rate = self.voice.sample_rate

    def speak(self, text: str) -> dict:
        timed = _Timed()
        chunks = self.voice.stream(text) if self.spec["mode"] == "stream" else self.voice.synthesize(text)
        for chunk in chunks:
            timed.add(len(chunk.audio))
        return timed.result()


class PiperStreamEngine(PiperEngine):
    """piper-tts: ``PiperVoice.synthesize`` yields whole sentences (loaded as in benchmarks.run, with our threads)."""

    def speak(self, text: str) -> dict:
        timed = _Timed()
        for chunk in self.voice.synthesize(text):
            timed.add(len(chunk.audio_float_array))
        return timed.result()


class StreamingVitsEngine(Engine):
    """streaming-vits 0.4.2's ``StreamingTTS.stream`` on a copy of the Piper voice (it writes its split graphs
    and profile beside the model). ``calibrate``: its own ``streaming-vits calibrate`` first, as its README
    tells users to (margins and schedule for this machine), else its built-in defaults."""

    def load(self) -> None:
        from streaming_vits import engine as sv

        self.folder = Path(tempfile.mkdtemp(prefix="streaming-vits-"))
        model = self.folder / Path(self.spec["model"]).name
        shutil.copyfile(self.spec["model"], model)
        shutil.copyfile(self.spec["config"], str(model) + ".json")
        self.calibration = None
        if self.spec.get("calibrate"):
            self.calibration = self._calibrate(model)
        self.tts = sv.StreamingTTS(str(model), data_dir=self.spec.get("espeak_data"), threads=self.threads,
                                   verbose=False)
        self.sample_rate = self.tts.sample_rate

    def _calibrate(self, model: Path) -> str:
        import subprocess
        import sys

        cmd = [sys.executable, "-m", "streaming_vits.cli", "calibrate", f"--vits-model={model}",
               f"--num-threads={self.threads}"]
        if self.spec.get("espeak_data"):
            cmd.append(f"--vits-data-dir={self.spec['espeak_data']}")
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
        if proc.returncode != 0:
            raise RuntimeError(f"streaming-vits calibrate failed: {proc.stderr[-500:]}")
        return proc.stdout[-2000:]

    def speak(self, text: str) -> dict:
        timed = _Timed()
        for chunk in self.tts.stream(text):
            timed.add(len(chunk.audio))
        return timed.result()


STREAM_ENGINES = {"ours": OursEngine, "piper-stream": PiperStreamEngine, "streaming-vits": StreamingVitsEngine}
