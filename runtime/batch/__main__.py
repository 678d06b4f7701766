"""``python -m runtime.batch``: speak a whole corpus into WAV files and a manifest (also ``vits-edge-batch``).

    python -m runtime.batch lines.txt --voice my-voice --out corpus/
    python -m runtime.batch items.jsonl --voice my-voice --out corpus/ --speakers all --length-scales 0.9,1,1.1

Input: a ``.jsonl`` file, one JSON object a line (``id``, ``text``, and optionally ``voice``, ``speaker``,
``language``, ``length_scale``, ``noise_scale``, ``noise_w``), or a text file, one item a line (ids from line
numbers). ``--speakers`` and the scale grids expand every item (ids get ``~spk=NAME~ls=0.9`` suffixes).

Output, under ``--out``: ``wavs/NNNNN/ID.wav`` (1000 items a folder, each file written atomically),
``manifest.jsonl`` (id, path, seconds, sample rate, text, voice, speaker, language, scales, and the phoneme and
word timings with ``--alignments``) and ``errors.jsonl`` (bad lines and items that could not be spoken, with the
reason). A re-run skips the ids already in the manifest: a killed job resumes without gaps or duplicates, and an
item's noise comes from its id, so the result is the uninterrupted run's.

Where: on Ray Data when Ray is installed (the ``cluster`` extra): a local instance, or the cluster at
``--address``; else (or with ``--backend local``) on this machine's processes.

Exit status: 0 every item spoken, 1 some failed (see errors.jsonl), 2 the job could not start, 73 its output
could not be written (a full disk, a read-only or unwritable folder: the same command resumes once it can be),
130 stopped by SIGINT (Ctrl-C), 143 stopped by SIGTERM: the items in flight are abandoned (no half WAV is left),
the manifest keeps every item spoken before, and the same command resumes.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
from pathlib import Path

from runtime.batch import cluster, local
from runtime.batch.jobs import FATAL, UNWRITABLE, ErrorLog, JobError, Manifest, Plan, Progress, read_input, shape
from runtime.config import UsageError, VoiceError, add_synthesis_flags, read_sidecar, resolve, synthesis_from_args
from runtime.files import EXIT_CANNOT_WRITE, WriteError, make_dirs
from runtime.signals import Interrupted, deferred, interruptible, take_back

EXIT_FAILED, EXIT_USAGE = 1, 2
logger = logging.getLogger("runtime.batch")


def _floats(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, not {text!r}") from exc
    if not values or any(not v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive numbers, not {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vits-edge-batch", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", type=Path, help="items: a .jsonl file, or a text file (one item a line)")
    p.add_argument("--voice", action="append", required=True, metavar="[NAME=]PATH",
                   help="a voice folder; repeat for several (an item's \"voice\" names one; the first is the default)")
    p.add_argument("--out", type=Path, required=True, help="output folder (made if missing; a re-run resumes)")
    p.add_argument("--variant", help="which model of each voice folder: fp32 (model.onnx), auto (model.auto.onnx), "
                                     "...; default: the folder's own default")
    add_synthesis_flags(p, ("speaker", "language", "length_scale", "noise_scale", "noise_w"),
                        helps={"speaker": "speaker of the items that name none (no id suffix; --speakers expands)"})
    p.add_argument("--speakers", help="expand every item over these speakers: 'all' or names/ids separated by commas")
    p.add_argument("--length-scales", type=_floats, default=[], help="expand over these length scales (0.9,1,1.1)")
    p.add_argument("--noise-scales", type=_floats, default=[], help="expand over these noise scales")
    p.add_argument("--noise-ws", type=_floats, default=[], help="expand over these duration noise scales")
    p.add_argument("--alignments", action="store_true", help="record each item's phoneme and word timings")
    p.add_argument("--backend", choices=("auto", "ray", "local"), default="auto",
                   help="ray: Ray Data (the `cluster` extra); local: this machine's processes; auto (default): ray "
                        "when it is installed")
    p.add_argument("--address", help="join this Ray cluster (`auto`, or HOST:PORT from `ray start --head`); "
                                     "without it Ray starts on this machine")
    p.add_argument("--workers", type=int, help="worker processes or Ray actors (default: cores / threads)")
    p.add_argument("--threads", type=int,
                   help="onnxruntime threads per worker (default 1, or the cores shared out when --workers is given)")
    p.add_argument("--batch-size", type=int, default=8, help="items sent to a worker at a time")
    p.add_argument("--debug", action="store_true")
    return p


def voice_paths(specs: list[str]) -> dict[str, str]:
    voices = {}
    for spec in specs:
        name, _, path = spec.rpartition("=") if "=" in spec else (None, "", spec)
        path = Path(path)
        if not path.exists():
            raise JobError(f"voice {path} not found")
        name = name or path.resolve().name
        if name in voices:
            raise JobError(f"two voices are named {name!r}: name them with --voice NAME=PATH")
        voices[name] = str(path.resolve())
    return voices


def plan_items(args, voices: dict[str, str]) -> tuple[list[dict], list[dict]]:
    """The job's items (expanded by the plan, each with its index) and the bad input lines."""
    lines, errors = read_input(args.input)
    for flag, grid in (("speaker", "speakers"), ("length_scale", "length_scales"), ("noise_scale", "noise_scales"),
                       ("noise_w", "noise_ws")):
        if getattr(args, flag) is not None and getattr(args, grid):
            raise JobError(f"--{flag.replace('_', '-')} and --{grid.replace('_', '-')} say the same thing: give one")
    try:
        defaults = synthesis_from_args(args)
    except UsageError as exc:
        raise JobError(str(exc)) from exc
    speakers = []
    if args.speakers == "all":
        try:
            speakers = list(read_sidecar(resolve(Path(next(iter(voices.values()))))[1]).speaker_labels())
        except (OSError, VoiceError) as exc:
            raise JobError(f"--speakers all: {exc}") from exc
        if not speakers:
            raise JobError("--speakers all: the voice has a single speaker")
    plan = Plan("all" if args.speakers == "all" else [s for s in (args.speakers or "").split(",") if s] or None,
                args.length_scales, args.noise_scales, args.noise_ws, defaults)
    items, seen = [], {}
    for number, item in lines:
        for expanded in plan.expand(item, speakers):
            if expanded["id"] in seen:
                errors.append({"line": number, "id": expanded["id"],
                               "error": f"id {expanded['id']!r} already given on line {seen[expanded['id']]}"})
                continue
            seen[expanded["id"]] = number
            items.append({**expanded, "index": len(items)})
    return items, errors


def choose_backend(asked: str, address: str | None) -> str:
    if asked == "local":
        if address:
            raise JobError("--address joins a Ray cluster: it needs --backend ray (or auto)")
        return "local"
    if cluster.available():
        return "ray"
    if asked == "ray" or address:
        raise JobError("Ray is not installed: pip install 'vits-edge[cluster]' (or run with --backend local)")
    logger.warning("note: Ray is not installed (pip install 'vits-edge[cluster]' to run on Ray or a cluster): "
                   "running on this machine's processes")
    return "local"


def run(args: argparse.Namespace) -> int:
    voices = voice_paths(args.voice)
    if args.batch_size < 1 or any(n is not None and n < 1 for n in (args.threads, args.workers)):
        raise JobError("--threads, --workers and --batch-size must be at least 1")
    backend = choose_backend(args.backend, args.address)
    items, bad_lines = plan_items(args, voices)
    try:  # which model of each voice the workers will speak (they load them the same way)
        models = {name: resolve(Path(path), args.variant)[0].name for name, path in voices.items()}
    except (OSError, ValueError) as exc:
        raise JobError(f"{exc}") from exc
    try:
        make_dirs(args.out)
    except OSError as exc:
        raise WriteError.of(exc, args.out) from exc
    manifest = Manifest(args.out)
    todo = [item for item in items if item["id"] not in manifest.done]
    job = {"voices": voices, "out": str(args.out.resolve()), "alignments": args.alignments,
           "variant": args.variant, "batch_size": args.batch_size}
    if backend == "ray" and todo:  # nothing left to speak: no Ray to start
        ray = cluster.connect(args.address)
        take_back()  # ray.init's own SIGTERM handler exits at once: the job stops as on this machine instead
        nodes = cluster.node_cpus(ray)
        workers, threads = shape(args.workers, args.threads, nodes)
        rows = cluster.run(todo, **job, workers=workers, threads=threads, ray=ray)
        where = f"Ray actors on {len(nodes)} node(s)"
    else:
        workers, threads = shape(args.workers, args.threads, [os.cpu_count() or 1])
        rows = local.run(todo, **job, workers=workers, threads=threads)
        where = "local worker processes"
    errors = None
    try:
        # rewritten once the job can start: a failed start keeps the last run's record; a signal while its
        # temporary is made comes once ``errors`` holds it
        with deferred():
            errors = ErrorLog(args.out)
    except BaseException:
        if errors is not None:  # (a signal while it was made)
            errors.abort()
        manifest.close()
        raise
    logger.warning("%d items, %d already in %s, %d to speak (%d %s x %d threads; %s)", len(items),
                   len(items) - len(todo), manifest.path, len(todo), workers, where, threads,
                   ", ".join(f"{name}: {model}" for name, model in models.items()))
    progress = Progress(len(todo), len(items) - len(todo), lambda line: print(line, file=sys.stderr, flush=True))
    start = time.monotonic()
    try:
        for record in bad_lines:
            errors.add(record)
        for row in rows:
            if FATAL in row:
                hint = " (on a cluster, every node needs the voices at the same path)" if backend == "ray" else ""
                raise JobError(f"a worker could not load the voices: {row[FATAL]}{hint}")
            if UNWRITABLE in row:  # a full disk: every item after it would fail the same way
                number, path = row[UNWRITABLE]
                raise WriteError(number, os.strerror(number), args.out / path)
            if "error" in row:
                errors.add(row)
                progress.tick(False)
            elif manifest.add(row):
                progress.tick(True)
    except BaseException:
        with contextlib.suppress(Exception):  # the workers stopped first: nothing is written after the manifest
            rows.close()
        with contextlib.suppress(OSError):  # what stopped the job is the error to report
            manifest.close()
        with contextlib.suppress(OSError):
            errors.close()
        raise
    manifest.close()
    errors.close()
    print(f"{progress.done - progress.failed} spoken, {errors.count} failed or bad, in {time.monotonic() - start:.1f} s "
          f"({progress.rate:.2f} items/s); manifest: {manifest.path}", file=sys.stderr)
    return EXIT_FAILED if errors.count else 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING, format="%(message)s")
    try:
        with interruptible():
            return run(args)
    except JobError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except WriteError as exc:
        print(f"error: {exc}; the items spoken so far are in the manifest: the same command resumes",
              file=sys.stderr)
        return EXIT_CANNOT_WRITE
    except Interrupted as exc:
        print(f"stopped by {exc.name}: the items spoken so far are in the manifest; run the same command again to "
              "resume", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
