"""What a batch job is made of, whatever runs it: its items, their WAV paths, the manifest that records each item
once, the errors file, and the synthesis of one item (the same function on a local process or a Ray actor)."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import json
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from runtime.alignment import Timeline
from runtime.config import SynthesisConfig, VoiceError
from runtime.files import AtomicFile, WriteError, fault_point, fsync_path, make_dirs
from runtime.signals import deferred
from runtime.voice import Voice

SCALES = SynthesisConfig.SCALES
SETTINGS = ("speaker", "language", *SCALES)  # what an item may set of its SynthesisConfig
ITEM_FIELDS = ("id", "text", "voice", *SETTINGS)
MANIFEST, ERRORS, WAVS = "manifest.jsonl", "errors.jsonl", "wavs"
SHARD_SIZE = 1000  # items per folder of WAVs: a folder stays listable on any file system
_UNSAFE = re.compile(r"[^A-Za-z0-9._~=+-]+")  # what every file system takes in a name


class JobError(ValueError):
    """The job cannot start (bad arguments, an unreadable input or voice): exit code 2, nothing written."""


@dataclass
class Item:
    """One item of a job. It travels to the workers as the flat dict ``plan_items`` makes (JSON, for Ray) and is
    rebuilt there by ``from_row``."""

    id: str
    text: str
    index: int  # position in the expanded job: decides the shard, so a re-run writes where the first run did
    voice: str | None = None
    syn: SynthesisConfig = field(default_factory=SynthesisConfig)

    @classmethod
    def from_row(cls, row: dict) -> Item:
        return cls(row["id"], row["text"], row["index"], row.get("voice"),
                   SynthesisConfig(**{k: row.get(k) for k in SETTINGS}))

    def wav_path(self) -> str:
        """Relative to the output folder: ``wavs/00003/<safe id>.wav`` (1000 items a folder)."""
        safe = _UNSAFE.sub("_", self.id)[:120] or "_"
        if safe != self.id:  # two ids that clean to the same name must not share a file
            safe += "-" + format(hash_id(self.id), "x")[:8]
        return f"{WAVS}/{self.index // SHARD_SIZE:05d}/{safe}.wav"


def hash_id(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


@dataclass
class Plan:
    """Expand every item over speakers and scale grids (dataset generation): ``speakers`` ("all" or names),
    and for each scale a list of values; an item's own value wins over the grid, and the grid over the job's
    ``defaults`` (the synthesis flags of the command line), which fill what is left."""

    speakers: list | str | None = None
    length_scale: list[float] = field(default_factory=list)
    noise_scale: list[float] = field(default_factory=list)
    noise_w: list[float] = field(default_factory=list)
    defaults: SynthesisConfig = field(default_factory=SynthesisConfig)

    def expand(self, item: dict, voice_speakers: list[str]) -> list[dict]:
        speakers = [item.get("speaker")]
        if item.get("speaker") is None and self.speakers:
            speakers = voice_speakers if self.speakers == "all" else list(self.speakers)
        grids = [[item[name]] if item.get(name) is not None else (getattr(self, name) or [None]) for name in SCALES]
        out = []
        for speaker, *scales in itertools.product(speakers, *grids):
            suffix = [] if speaker is None or item.get("speaker") is not None else [f"spk={speaker}"]
            suffix += [f"{short}={value:g}" for short, name, value in zip(("ls", "ns", "nw"), SCALES, scales)
                       if value is not None and item.get(name) is None]
            expanded = {**item, "speaker": speaker, **dict(zip(SCALES, scales)),
                        "id": item["id"] if not suffix else f"{item['id']}~{'~'.join(suffix)}"}
            for name in SETTINGS:
                if expanded.get(name) is None:
                    expanded[name] = getattr(self.defaults, name)
            out.append(expanded)
        return out


def _number(value, name: str):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number, not {value!r}")
    return float(value)


def parse_line(line: str, number: int, jsonl: bool) -> dict:
    """One input line -> an item dict; ValueError with the reason for a bad one."""
    if not jsonl:
        return {"id": str(number), "text": line.rstrip("\n")}
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON: {exc.msg} (column {exc.colno})") from exc
    if not isinstance(data, dict):
        raise ValueError(f"not a JSON object but {type(data).__name__}")
    unknown = sorted(set(data) - set(ITEM_FIELDS))
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(unknown)} (fields: {', '.join(ITEM_FIELDS)})")
    if "id" not in data or not isinstance(data["id"], (str, int)) or isinstance(data["id"], bool):
        raise ValueError("no \"id\" (a string or a number)")
    if not isinstance(data.get("text"), str):
        raise ValueError("no \"text\" string")
    item = {"id": str(data["id"]), "text": data["text"]}
    for name in ("voice", "language"):
        if data.get(name) is not None and not isinstance(data[name], str):
            raise ValueError(f"{name} must be a string")
        item[name] = data.get(name)
    speaker = data.get("speaker")
    if speaker is not None and (isinstance(speaker, bool) or not isinstance(speaker, (str, int))):
        raise ValueError("speaker must be a name or an id")
    item["speaker"] = speaker
    for name in SCALES:
        item[name] = _number(data.get(name), name)
    return item


def read_input(path: Path) -> tuple[list[tuple[int, dict]], list[dict]]:
    """(line number, item) for every good line and an error record for every bad one. A ``.jsonl``/``.json``
    file holds JSON objects; anything else is plain text, one item a line, ids from line numbers (blank lines
    skipped)."""
    jsonl = path.suffix.lower() in (".jsonl", ".json", ".ndjson")
    items, errors = [], []
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    items.append((number, parse_line(line, number, jsonl)))
                except ValueError as exc:
                    errors.append({"line": number, "error": str(exc), "input": line.rstrip("\n")[:200]})
    except FileNotFoundError as exc:
        raise JobError(f"input file {path} not found") from exc
    except UnicodeDecodeError as exc:
        raise JobError(f"{path} is not UTF-8 text: convert it with iconv") from exc
    return items, errors


class Manifest:
    """``manifest.jsonl``: one line per finished item, appended as each finishes (fsynced at most a second apart
    and at the end); the commit record of a WAV, written after the WAV is complete and durable. A re-run reads the
    ids in it and skips them; a torn last line (a kill while writing) is cut off first, and a line that does not
    fit on the disk is taken back at once; a SIGTERM or SIGINT waits for the line being written. Only the driver
    writes it."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / MANIFEST
        self.done: set[str] = set()
        self.failed = False
        try:
            if self.path.is_file():
                data = self.path.read_bytes()
                if data and not data.endswith(b"\n"):
                    data = data[: data.rfind(b"\n") + 1]
                    os.truncate(self.path, len(data))
                for line in data.decode("utf-8").splitlines():
                    if line.strip():
                        self.done.add(json.loads(line)["id"])
            created = not self.path.exists()
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            if created:
                fsync_path(self.path.parent)
        except OSError as exc:
            raise WriteError.of(exc, self.path) from exc
        self._size = os.fstat(self._fd).st_size
        self._synced = time.monotonic()

    def add(self, row: dict) -> bool:
        """Record ``row``; False (nothing written) when its id is already recorded (a retried task)."""
        if row["id"] in self.done:
            return False
        line = memoryview((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))
        fault_point("append")
        with deferred():  # a SIGTERM or SIGINT (the job stops) comes after the whole line, never in its middle
            try:
                while line:
                    line = line[os.write(self._fd, line):]
                if time.monotonic() - self._synced > 1.0:
                    os.fsync(self._fd)
                    self._synced = time.monotonic()
            except OSError as exc:
                self.failed = True
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, self._size)  # no torn line, and the space it took back
                raise WriteError.of(exc, self.path) from exc
            self._size = os.fstat(self._fd).st_size
            self.done.add(row["id"])
        return True

    def close(self) -> None:
        try:
            os.fsync(self._fd)
        except OSError as exc:
            if not self.failed:
                raise WriteError.of(exc, self.path) from exc
        finally:
            os.close(self._fd)


class ErrorLog:
    """``errors.jsonl``: bad input lines and items that could not be spoken, with the reason; rewritten by each
    run (a re-run retries the failed items), whole: it replaces the last run's when the job ends (``close``), or is
    dropped when it cannot be written."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / ERRORS
        self.count = 0
        self.failed = False
        self._out = AtomicFile(self.path)

    def add(self, record: dict) -> None:
        with deferred():  # a whole record, whatever signal comes
            try:
                self._out.file.write((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
            except OSError as exc:
                self.failed = True
                raise WriteError.of(exc, self.path) from exc
            self.count += 1

    def close(self) -> None:
        if self.failed:
            self.abort()
        else:
            self._out.commit()

    def abort(self) -> None:
        """Drop this run's record: the last run's stays."""
        self._out.abort()


def shape(workers: int | None, threads: int | None, node_cpus: list[int]) -> tuple[int, int]:
    """``(workers, threads per worker)`` from what was asked and the cores of each node: unless told, a worker a
    core with one thread (whole items keep every core busy with no threads waiting on each other; on 2 cores two
    workers and one worker of two threads measured within the noise: benchmarks/batch.py); given only workers,
    each takes its share of the cores."""
    if threads is None:
        threads = 1 if workers is None else max(1, min(max(node_cpus), sum(node_cpus) // workers))
    if workers is None:
        workers = max(1, sum(cpus // threads for cpus in node_cpus))
    return workers, threads


class Progress:
    """Items per second and the time left, on stderr at most every ``every`` seconds."""

    def __init__(self, total: int, already: int, write, every: float = 2.0):
        self.total, self.done, self.failed, self.write, self.every = total, 0, 0, write, every
        self.already = already
        self.start = self._last = time.monotonic()

    def tick(self, ok: bool, force: bool = False) -> None:
        self.done += 1
        self.failed += not ok
        now = time.monotonic()
        if force or now - self._last >= self.every or self.done == self.total:
            self._last = now
            rate = self.done / max(now - self.start, 1e-9)
            left = (self.total - self.done) / rate if rate else float("inf")
            self.write(f"{self.done}/{self.total} items ({self.already} done before), {rate:.2f} items/s, "
                       f"{self.failed} failed, about {left:.0f} s left")

    @property
    def rate(self) -> float:
        return self.done / max(time.monotonic() - self.start, 1e-9)


# -- the work of one item, in a worker (a local process or a Ray actor) ------------------------------------------
FATAL = "fatal"  # a result row's key when its worker could not load the voices: the driver stops the job
UNWRITABLE = "unwritable"  # ... when its WAV could not be written (a full disk): the driver stops the job too


class Speaker:
    """The voices of a job, loaded once per worker (a local process or a Ray actor), and the synthesis of one item
    into its WAV. A worker that cannot load the voices says why with every batch (``{FATAL: reason}``) instead of
    dying: a dead worker is replaced and its batch sent again, which would never end."""

    def __init__(self, voices: dict[str, str], threads: int, out: str, alignments: bool = False,
                 variant: str | None = None):
        self.failed = None
        try:
            self.voices = {name: Voice.load(path, variant=variant, threads=threads) for name, path in voices.items()}
        except Exception as exc:  # noqa: BLE001 (said to the driver, which stops the job with it)
            self.failed = f"{type(exc).__name__}: {exc}"
        self.default = next(iter(voices))
        self.out, self.alignments = Path(out), alignments

    def batch(self, items: list[dict]) -> list[dict]:
        """A result row for each item, or one ``{FATAL: reason}`` row when the voices could not be loaded."""
        if self.failed is not None:
            return [{FATAL: self.failed}]
        return [self(item) for item in items]

    def __call__(self, item: dict) -> dict:
        """A manifest row for ``item`` (its WAV written atomically), or ``{"id", "error"}``: never raises for a
        bad item, so one bad item never stops a worker. A WAV that cannot be written is no fault of the item's
        (``UNWRITABLE``: its errno and path, for the driver's message)."""
        try:
            return self._speak(Item.from_row(item))
        except WriteError as exc:
            return {"id": item["id"], "error": str(exc), UNWRITABLE: [exc.errno, Item.from_row(item).wav_path()]}
        except (VoiceError, ValueError, OSError) as exc:
            return {"id": item["id"], "error": f"{type(exc).__name__}: {exc}"}

    def _speak(self, item: Item) -> dict:
        name = item.voice or self.default
        voice = self.voices.get(name)
        if voice is None:
            raise VoiceError(f"unknown voice {name!r} (this job has: {', '.join(self.voices)})")
        if not item.text.strip():
            raise VoiceError("empty text")
        path = self.out / item.wav_path()
        try:
            make_dirs(path.parent)
        except OSError as exc:
            raise WriteError.of(exc, path) from exc
        # noise drawn from the id: a retried or resumed item is the same audio as in an uninterrupted run
        syn = dataclasses.replace(item.syn, seed=hash_id(item.id) % 2**31)
        used = voice.resolve(syn).syn  # what was used, where the item left it to the voice
        timeline = Timeline()
        chunks = voice.synthesize(item.text, syn, alignments=self.alignments and voice.streams)
        voice.write_wav(chunks, path, on_chunk=timeline)
        row = {"id": item.id, "path": item.wav_path(), "seconds": round(timeline.samples / voice.sample_rate, 4),
               "samples": timeline.samples, "sample_rate": voice.sample_rate, "text": item.text, "voice": name,
               "speaker": item.syn.speaker, "language": item.syn.language, **{k: getattr(used, k) for k in SCALES}}
        if self.alignments:
            row["alignments"] = timeline.sentences
        return row
