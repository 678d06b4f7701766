"""SIGKILL a writer at its durable-write points, many times, cheaply: ``python tests/kill_trials.py SPEC.json``.

The points are runtime.files.fault_point's (``VITS_EDGE_KILL_AT=N``: the Nth point of any name). This process
imports the writer's modules once and forks a child for every run, so a trial costs the writer's own work and not
Python's start; it never runs onnxruntime or torch itself (a fork of a process whose thread pools exist is not
safe): only its children do. First a clean child counts the points a whole run passes and keeps the outputs as
the reference; then, for each trial, a child killed at a seeded choice of point (every point once before any
twice), the outputs checked (no file under a final name torn: each is the old one or the reference), and every
``rerun_every`` trials a child that runs the writer to the end (it completes, no temporary is left, the outputs
are the reference's) and, for a voice folder, a child that loads it and speaks. Trials follow each other on the
same folder, as a card sees kills and reruns. Prints one JSON line: points, trials, failures.

Writers: ``atomic_dir`` (alone, with ``--force``), ``synthesize`` (``--output`` and ``--output-alignments``), ``batch`` (WAVs, manifest, errors file; the
process pool replaced by one in-process worker, so a kill at a WAV's point kills the job), ``split`` and
``quantize`` (a voice folder, in place) and ``export`` (``--force`` over an older voice).
"""

from __future__ import annotations

import importlib
import json
import os
import random
import shutil
import sys
import traceback
import wave
from pathlib import Path

import onnx

from runtime import files

TEXT_OLD, TEXT_NEW = "An older text.", "Hello there. A second sentence, a little longer."


def child(fn, kill_at: int | None = None) -> tuple[int, int]:
    """Run ``fn`` in a forked child (killed at point ``kill_at``, or counting points): (exit status or -signal,
    points it passed)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        os.close(read)
        code = 1
        try:
            files._reached.clear()
            os.environ["VITS_EDGE_KILL_AT"] = str(kill_at or 0)  # 0: count, never kill
            code = fn() or 0
        except BaseException:  # noqa: BLE001 (said on stderr, exit 1)
            traceback.print_exc()
        os.write(write, str(files._reached.get("*", 0)).encode())
        os._exit(code)
    os.close(write)
    with os.fdopen(read) as r:
        passed = r.read()
    _, status = os.waitpid(pid, 0)
    return (-os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)), int(passed or 0)


def leftovers(folder: Path) -> list[str]:
    return [str(p) for p in Path(folder).rglob("*") if p.name.endswith((".partial", ".old"))]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(Path(folder).rglob("*"))
            if p.is_file() and not p.name.startswith(".")}


def complete_wav(path: Path) -> bool:
    try:
        with wave.open(str(path)) as w:
            return w.getnframes() * w.getsampwidth() + 44 == path.stat().st_size
    except (wave.Error, EOFError):
        return False


class Writer:
    """A writer under trial: ``setup`` once, ``run`` in a child, ``check`` the outputs after a kill."""

    voice_folder = False  # a voice folder: loaded and spoken after kills and reruns
    speaks_after_kill = True
    preload: tuple[str, ...] = ("runtime.voice",)  # imported here once, not in every child

    def __init__(self, spec: dict, work: Path):
        self.spec, self.work, self.out = spec, work, work / "out"

    def setup(self) -> None:
        pass

    def reset(self) -> None:
        """The outputs as they stand before a run (kept across trials unless a writer wants a fresh start)."""

    def normal(self, snap: dict[str, bytes]) -> dict[str, bytes]:
        """A snapshot as the reference is compared with it."""
        return snap

    def check(self, reference: dict[str, bytes]) -> list[str]:
        """What is wrong under final names after a kill: each file complete (the reference's bytes, or a
        previous complete version)."""
        return []

    def speak(self) -> int:
        from runtime.voice import Voice

        voice = Voice.load(self.out)
        pcm = b"".join(c.pcm16() for c in voice.synthesize(TEXT_NEW, seed=1))
        return 0 if len(pcm) > 0 else 3


class Synthesize(Writer):
    def run(self, text=TEXT_NEW):
        from runtime import synthesize

        self.out.mkdir(exist_ok=True)
        return synthesize.main(["-m", self.spec["voice"], text, "--seed", "1", "--output", str(self.out / "a.wav"),
                                "--output-alignments", str(self.out / "a.json")])

    def setup(self):
        if child(lambda: self.run(TEXT_OLD))[0] != 0:
            raise RuntimeError("the older outputs could not be made")
        self.old = snapshot(self.out)

    def reset(self):
        for name, data in self.old.items():
            (self.out / name).write_bytes(data)

    def check(self, reference):
        now = snapshot(self.out)
        return [f"{name} is torn" for name, data in now.items() if data not in (reference[name], self.old[name])]


class Batch(Writer):
    preload = ("runtime.voice", "runtime.batch.__main__")

    def normal(self, snap):
        rows = sorted(snap.pop("manifest.jsonl", b"").splitlines())
        return {**snap, "manifest.jsonl": b"\n".join(rows)}

    def run(self):
        from runtime.batch import __main__ as batch, jobs, local

        def inline(items, *, voices, out, threads, alignments, variant, **_):
            speaker = jobs.Speaker(voices, threads, out, alignments, variant)
            for item in items:
                yield speaker(item)

        local.run = inline
        lines = "".join(json.dumps({"id": f"i{k}", "text": f"Item number {k}."}) + "\n" for k in range(4))
        (self.work / "in.jsonl").write_text(lines + "{bad line\n")
        return batch.main([str(self.work / "in.jsonl"), "--voice", self.spec["voice"], "--out", str(self.out),
                           "--backend", "local"]) - 1  # 1: the bad line was recorded, as asked

    def check(self, reference):
        problems = []
        path = self.out / "manifest.jsonl"
        data = path.read_bytes() if path.is_file() else b""
        rows = [json.loads(line) for line in data[: data.rfind(b"\n") + 1].decode().splitlines()]
        ids = [row["id"] for row in rows]
        if len(ids) != len(set(ids)):
            problems.append(f"an id twice in the manifest: {ids}")
        for row in rows:
            if (self.out / row["path"]).read_bytes() != reference[row["path"]]:
                problems.append(f"{row['path']} is in the manifest but not complete")
        for wav in self.out.rglob("*.wav"):
            if not complete_wav(wav):
                problems.append(f"{wav} is torn")
        errors = self.out / "errors.jsonl"
        if errors.is_file() and errors.read_bytes() != reference["errors.jsonl"]:
            problems.append("errors.jsonl is torn")
        return problems

    def after_rerun(self):
        shutil.rmtree(self.out)  # the next trials start a fresh job (a finished one would have nothing to do)


class VoiceFolder(Writer):
    voice_folder = True

    def check(self, reference):
        problems = []
        for path in sorted(self.out.rglob("*")):
            if path.name.startswith(".") or not path.is_file():
                continue
            try:
                if path.suffix == ".json":
                    json.loads(path.read_text())
                elif path.suffix == ".onnx":
                    onnx.load(str(path))
            except Exception as exc:  # noqa: BLE001
                problems.append(f"{path} is torn: {exc}")
        return problems


class Split(VoiceFolder):
    preload = ("runtime.voice", "exporter.pieces")

    def setup(self):
        shutil.copytree(self.spec["voice"], self.out)

    def run(self):
        from exporter import pieces

        pieces.split_folder(self.out)


class Quantize(VoiceFolder):
    preload = ("runtime.voice", "exporter.quant.quantize")

    def setup(self):
        shutil.copytree(self.spec["voice"], self.out)

    def run(self):
        from exporter.quant.quantize import quantize_voice

        quantize_voice(self.out, "dynamic", report=lambda line: None)


class Export(VoiceFolder):
    preload = ("runtime.voice", "exporter.export")
    speaks_after_kill = False  # killed between --force's two renames, the older voice waits in .NAME.old

    def setup(self):
        shutil.copytree(self.spec["voice"], self.out)  # the older voice that --force replaces

    def run(self):
        from exporter.export import export_voice

        export_voice(Path(self.spec["config"]), Path(self.spec["checkpoint"]), self.out, force=True)


class AtomicDir(Writer):
    """exporter.io.atomic_dir alone (what export, import-piper and split of a Piper voice write through), with
    --force over an older folder: its own points and an atomic file's inside it, at no model's cost."""

    def run(self, version=b"new"):
        from exporter.io import atomic_dir, atomic_write_bytes

        with atomic_dir(self.out, force=True) as tmp:
            (tmp / "model.onnx").write_bytes(version * 1000)
            (tmp / "pieces").mkdir()
            atomic_write_bytes(tmp / "pieces" / "a.onnx", version * 10)

    def setup(self):
        if child(lambda: self.run(b"old"))[0] != 0:
            raise RuntimeError("the older folder could not be made")
        self.old = snapshot(self.out)

    def reset(self):
        shutil.rmtree(self.out, ignore_errors=True)
        shutil.rmtree(self.out.with_name(".out.old"), ignore_errors=True)
        child(lambda: self.run(b"old"))

    def check(self, reference):
        now = snapshot(self.out) if self.out.is_dir() else snapshot(self.out.with_name(".out.old"))
        return [] if now in (reference, self.old) else [f"a mixed or torn folder: {now}"]


WRITERS = {"atomic_dir": AtomicDir, "synthesize": Synthesize, "batch": Batch, "split": Split, "quantize": Quantize, "export": Export}


def main(spec: dict) -> dict:
    work = Path(spec["work"])
    writer = WRITERS[spec["writer"]](spec, work)
    for module in writer.preload:
        importlib.import_module(module)
    writer.setup()
    if writer.voice_folder and spec.get("points"):  # its point count given: no clean run to count them
        points, reference = spec["points"], {}
    else:
        status, points = child(writer.run)
        if status != 0:
            return {"points": points, "trials": [], "failures": [f"a clean run failed ({status})"]}
        reference = snapshot(writer.out)
        getattr(writer, "after_rerun", lambda: None)()
    order = list(range(1, points + 1))
    random.Random(spec["seed"]).shuffle(order)
    trials, failures = [], []
    for k in range(spec["trials"]):
        at = order[k % len(order)]
        writer.reset()
        status, _ = child(writer.run, kill_at=at)
        problems = writer.check(reference) if status == -9 else []
        if status == 0 or problems or (k + 1) % spec["rerun_every"] == 0 or k + 1 == spec["trials"]:
            if status != 0:  # (a resumed batch job may end before its point: that run is the rerun)
                status, _ = child(writer.run)
            if status != 0:
                problems.append(f"the rerun failed ({status})")
            problems += [f"left behind: {p}" for p in leftovers(writer.out)]
            now = writer.normal(snapshot(writer.out))
            if not writer.voice_folder and now != writer.normal(dict(reference)):
                problems.append(f"the rerun's outputs differ from the reference: {sorted(set(now) ^ set(reference))}")
            if writer.voice_folder and child(writer.speak)[0] != 0:
                problems.append("the voice folder does not speak after the rerun")
            getattr(writer, "after_rerun", lambda: None)()
        elif writer.voice_folder and writer.speaks_after_kill and child(writer.speak)[0] != 0:
            problems.append(f"the voice folder does not speak after a kill at point {at}")
        trials.append(at)
        failures += [f"trial {k} (killed at point {at}): {p}" for p in problems]
    return {"points": points, "trials": trials, "failures": failures}


if __name__ == "__main__":
    print(json.dumps(main(json.loads(Path(sys.argv[1]).read_text()))))
