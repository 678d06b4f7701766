"""Device-side footprint: installed size, import time, first audio and memory, whatever the input.

    python -m benchmarks.runtime_footprint --voice build/demo/voice
    python -m benchmarks.runtime_footprint --voice build/demo/voice --inputs sentence paragraphs:50 line:100000

* installed size: the project's wheel in a fresh venv with only onnxruntime and numpy
  (pip and setuptools excluded);
* import time: ``python -c "from runtime.voice import Voice"`` in that venv (median of 5);
* ``python -m runtime.synthesize --output-raw`` in that venv, each input in its own process: time to
  the first audio bytes, total time, and the process's peak RSS. Inputs: ``sentence`` (one
  sentence), ``paragraphs:N`` (N paragraphs of five sentences), ``line:N`` (one line of N
  characters without punctuation, which the runtime speaks in pieces of at most 400 characters).

The model is the one the folder speaks by default (``--variant`` chooses another). Prints a markdown table
(``--json`` the raw numbers); ``--docs`` also writes it to docs/measured/footprint.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.results import publish
from runtime.config import resolve

REPO = Path(__file__).resolve().parent.parent
PARAGRAPH = (
    "The kettle began to whistle just as the rain started. Please turn left at the second traffic light. "
    "She measured the window twice before ordering the curtains. A small robot rolled across the kitchen "
    "floor. The library closes at nine o'clock on weekdays."
)


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def slim_venv(root: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(root / "dist"), str(REPO)], check=True)
    subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True)
    py = root / "venv" / "bin" / "python"
    wheel = next((root / "dist").glob("vits_edge-*.whl"))
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheel)], check=True)
    return py


def installed_mb(py: Path) -> float:
    site = next((py.parent.parent / "lib").glob("python3*/site-packages"))
    skip = ("pip", "setuptools", "_distutils_hack", "distutils-precedence.pth")
    return sum(_dir_bytes(p) if p.is_dir() else p.stat().st_size
               for p in site.iterdir() if not p.name.startswith(skip)) / 1e6


def import_seconds(py: Path, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([str(py), "-c", "from runtime.voice import Voice"], check=True, cwd=tempfile.gettempdir())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


LINE_WORDS = ("the quick brown fox jumps over the lazy dog while a small bird sings in the old tree and the "
              "river runs past the mill toward the quiet town").split()


def text_for(spec: str) -> str:
    """``sentence``, ``paragraphs:N`` or ``line:N`` -> the text."""
    kind, _, count = spec.partition(":")
    if kind == "sentence":
        return PARAGRAPH.split(". ")[0] + "."
    if kind == "paragraphs":
        return "\n\n".join([PARAGRAPH] * int(count or 1))
    if kind == "line":
        words, size = [], 0
        while size < int(count):
            words.append(LINE_WORDS[len(words) % len(LINE_WORDS)])
            size += len(words[-1]) + 1
        return " ".join(words)[: int(count)]
    raise ValueError(f"unknown input {spec!r}: sentence, paragraphs:N or line:N")


def stream(py: Path, voice: Path, spec: str, threads: int, variant: str | None = None) -> dict:
    text = text_for(spec)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as f:
        f.write(text)
        text_file = f.name
    start = time.perf_counter()
    proc = subprocess.Popen([str(py), "-m", "runtime.synthesize", "-m", str(voice), "--text-file", text_file,
                             "--output-raw", "--threads", str(threads), *(["--variant", variant] if variant else [])],
                            stdout=subprocess.PIPE, cwd=tempfile.gettempdir())
    first = proc.stdout.read(2)
    first_audio = time.perf_counter() - start
    total_bytes = len(first) + sum(len(b) for b in iter(lambda: proc.stdout.read(1 << 16), b""))
    _, status, usage = os.wait4(proc.pid, 0)
    os.unlink(text_file)
    if status != 0:
        raise RuntimeError(f"synthesize failed with status {status}")
    return {"input": spec, "characters": len(text),
            "first_audio_s": round(first_audio, 3), "total_s": round(time.perf_counter() - start, 2),
            "audio_s": round(total_bytes / 2 / 22050, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--voice", type=Path, required=True)
    parser.add_argument("--inputs", nargs="+", default=["sentence", "paragraphs:1", "paragraphs:50", "line:100000"],
                        help="sentence, paragraphs:N, line:N (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variant", help="which model of the voice folder (default: the one it speaks by default)")
    parser.add_argument("--json", type=Path, help="also write the raw numbers here")
    parser.add_argument("--docs", action="store_true", help="also write the table to docs/measured/footprint.md "
                        "(the documentation's table: commit it)")
    args = parser.parse_args(argv)
    model = resolve(args.voice, args.variant)[0].name
    with tempfile.TemporaryDirectory() as tmp:
        py = slim_venv(Path(tmp))
        result = {"model": model, "threads": args.threads, "installed_mb": round(installed_mb(py), 1),
                  "import_s": round(import_seconds(py), 3),
                  "streaming": [stream(py, args.voice.resolve(), spec, args.threads, args.variant)
                                for spec in args.inputs]}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    table = report(result)
    print(table)
    if args.docs:
        print(f"published: {publish('footprint', table, argv)}")
    return 0


def report(result: dict) -> str:
    """The footprint as a markdown table: one row a measure, each input in its own process."""
    lines = ["# The runtime's footprint", "",
             f"`python -m runtime.synthesize --output-raw` speaking `{result['model']}` with {result['threads']} "
             "threads, in a fresh venv holding only the wheel, onnxruntime and numpy; each input in its own process.",
             "", "| | |", "|---|---|",
             f"| installed (wheel + onnxruntime + numpy, without pip) | {result['installed_mb']:.1f} MB |",
             f"| `from runtime.voice import Voice` | {result['import_s']:.2f} s |"]
    for row in result["streaming"]:
        lines.append(f"| {row['input']} ({row['audio_s']:.0f} s of audio): first audio from process start, "
                     f"voice loading included | {row['first_audio_s']:.2f} s |")
        lines.append(f"| {row['input']}: peak RSS | {row['peak_rss_mb']:.0f} MB |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
