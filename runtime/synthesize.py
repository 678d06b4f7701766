"""``python -m runtime.synthesize``: text to speech on the device (also ``vits-edge-synthesize``).

    python -m runtime.synthesize -m voice/ "Hello there." --output hello.wav
    echo "Hello there." | python -m runtime.synthesize -m voice/ --output-raw | aplay -r 22050 -f S16_LE -t raw -
    python -m runtime.synthesize -m voice/ "Hello there." --output hello.wav --output-alignments hello.json

Audio is written as it is made: a voice with streaming pieces gives the first chunk of a sentence
after a small part of the sentence's time, and the rest follows chunk by chunk.
"""

from __future__ import annotations

import argparse
import codecs
import json
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from runtime.chunking import STREAM, WHOLE
from runtime.files import check_folder

EXIT_USAGE = 2
EXIT_ERROR = 1

logger = logging.getLogger("runtime")


class InputError(ValueError):
    """Bad text input (empty, not UTF-8): exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vits-edge-synthesize", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("text", nargs="*", help="text to speak (default: read stdin line by line)")
    p.add_argument("-m", "--model", "--voice", dest="model", required=True,
                   help="voice folder, or VOICE.onnx with VOICE.onnx.json beside it (Piper voices work too)")
    p.add_argument("--text-file", type=Path, help="read the text from this UTF-8 file")
    out = p.add_mutually_exclusive_group()
    out.add_argument("-f", "--output", "--output-file", dest="output", type=Path, help="write a 16-bit mono WAV")
    out.add_argument("--output-raw", action="store_true", help="write 16-bit PCM to stdout as each chunk is ready")
    p.add_argument("--output-alignments", type=Path, metavar="FILE.json",
                   help="write each sentence's phoneme and word timings (seconds) to this JSON file")
    p.add_argument("-s", "--speaker", help="speaker name or id (see --list-speakers)")
    p.add_argument("--speaker-embedding", type=Path, metavar="FILE",
                   help="a d-vector voice (YourTTS) speaks as this d-vector instead of a named speaker: a .npy file, "
                        "or a text/JSON file of its numbers (as many as the voice's d_vector_dim, usually 512)")
    p.add_argument("--language", help="language of a multilingual voice (see --list-languages)")
    p.add_argument("--length-scale", type=float, help="speaking rate: > 1 slower, < 1 faster")
    p.add_argument("--noise-scale", type=float, help="audio variation")
    p.add_argument("--noise-w", "--noise-w-scale", dest="noise_w", type=float, help="duration variation")
    p.add_argument("--seed", type=int, help="make the noise repeatable")
    p.add_argument("--threads", type=int, help="onnxruntime intra-op threads")
    p.add_argument("--first-chunk", type=int, metavar="FRAMES", default=STREAM.first_frames,
                   help=f"--output-raw: frames in the first chunk (default {STREAM.first_frames}; a frame is the voice's "
                        "hop length, 256 samples for most voices); later chunks are as large as the audio already "
                        "written pays for")
    p.add_argument("--max-chunk", type=int, metavar="FRAMES", default=STREAM.max_frames,
                   help=f"largest chunk (default {STREAM.max_frames}): bounds memory")
    p.add_argument("--no-streaming", action="store_true", help="write whole sentences, not chunks as they are made")
    p.add_argument("--espeak-data", help="espeak-ng data folder (passed as --path to espeak-ng)")
    p.add_argument("--list-speakers", action="store_true", help="print the voice's speakers and exit")
    p.add_argument("--list-languages", action="store_true", help="print the voice's languages and exit")
    p.add_argument("--debug", action="store_true", help="show debug logs")
    return p


def _stdin_lines() -> Iterator[str]:
    """Lines of stdin as they arrive; non-UTF-8 bytes are a clear error, not a traceback."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    for number, raw in enumerate(sys.stdin.buffer, start=1):
        try:
            yield decoder.decode(raw)
        except UnicodeDecodeError as exc:
            raise InputError(f"stdin is not UTF-8 text (line {number}, byte {exc.start}): convert it with iconv") from exc


def _file_lines(path: Path) -> Iterator[str]:
    try:
        with open(path, encoding="utf-8") as f:
            yield from f
    except UnicodeDecodeError as exc:
        raise InputError(f"{path} is not UTF-8 text: convert it with iconv") from exc
    except FileNotFoundError as exc:
        raise InputError(f"text file {path} not found") from exc


def _nonempty(lines) -> Iterator[str]:
    """Pass lines through, but fail with InputError if there was no text at all."""
    seen = False
    for line in lines:
        seen = seen or bool(line.strip())
        yield line
    if not seen:
        raise InputError("no text to speak: give text as an argument, with --text-file, or on stdin")


class Timings:
    """Collects each sentence's phoneme and word timings, placed at its position in the output."""

    def __init__(self) -> None:
        self.sentences: list[dict] = []
        self.samples = 0

    def __call__(self, chunk) -> None:
        if chunk.alignment is not None:
            entry = chunk.alignment.to_dict(offset=self.samples / chunk.sample_rate)
            self.sentences.append({"text": chunk.text, **entry})
        self.samples += len(chunk.audio)

    def write(self, path: Path, sample_rate: int) -> None:
        from runtime.files import atomic_open

        data = {"sample_rate": sample_rate, "samples": self.samples, "seconds": round(self.samples / sample_rate, 6),
                "sentences": self.sentences}
        with atomic_open(path) as f:
            f.write((json.dumps(data, indent=1, ensure_ascii=False) + "\n").encode("utf-8"))


def read_embedding(path: Path):
    """A d-vector from a ``.npy`` file (never unpickled) or a text file of numbers (JSON list or whitespace)."""
    import numpy as np

    try:
        if path.suffix == ".npy":
            return np.load(path, allow_pickle=False)
        text = path.read_text(encoding="utf-8")
        values = json.loads(text) if text.lstrip().startswith("[") else text.split()
        return np.asarray(values, dtype=np.float32)
    except FileNotFoundError as exc:
        raise InputError(f"speaker embedding file {path} not found") from exc
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"{path} is not a speaker embedding (a .npy file, or a text file of numbers): {exc}") from exc


def run(args: argparse.Namespace) -> int:
    from runtime.chunking import ChunkingError, Schedule
    from runtime.voice import Voice

    start = time.perf_counter()
    voice = Voice.load(args.model, threads=args.threads, espeak_data=args.espeak_data)
    logger.debug("loaded %s in %.2f s", args.model, time.perf_counter() - start)
    if args.list_speakers:
        speakers = voice.config.speaker_labels() or {"(single speaker)": 0}
        for name, sid in speakers.items():
            print(f"{sid}\t{name}")
        return 0
    if args.list_languages:
        for name, langid in (voice.config.languages or {"(one language)": 0}).items():
            print(f"{langid}\t{name}")
        return 0
    if args.text and args.text_file:
        raise InputError("give text either as arguments or with --text-file, not both")
    if args.text:
        lines = [" ".join(args.text)]
    elif args.text_file:
        lines = _file_lines(args.text_file)
    else:
        lines = _stdin_lines()
    lines = _nonempty(lines)
    try:
        schedule = Schedule(first_frames=args.first_chunk, growth=STREAM.growth, max_frames=args.max_chunk)
    except ChunkingError as exc:
        raise InputError(f"{exc} (--first-chunk / --max-chunk)") from exc
    timings = Timings() if args.output_alignments else None
    if timings is not None:
        check_folder(args.output_alignments)
    kwargs = {"speaker": args.speaker, "language": args.language, "length_scale": args.length_scale,
              "noise_scale": args.noise_scale, "noise_w": args.noise_w, "alignments": timings is not None,
              "seed": args.seed,
              "speaker_embedding": read_embedding(args.speaker_embedding) if args.speaker_embedding else None}
    if args.no_streaming or (not args.output_raw and not voice.streams):  # (a WAV needs no streaming pieces)
        chunks = voice.synthesize(lines, **kwargs)
    elif args.output_raw:  # played as it comes: the first chunk early, then as large as the audio in hand allows
        chunks = voice.stream(lines, schedule=schedule, **kwargs)
    else:  # a WAV file appears when it is complete: chunks only keep memory flat
        chunks = voice.stream(lines, schedule=WHOLE, paced=False, **kwargs)
    if args.output_raw:
        out = sys.stdout.buffer
        for chunk in chunks:
            out.write(chunk.pcm16())
            out.flush()
            if timings is not None:
                timings(chunk)
            logger.debug("%.2f s of audio for %r (sample %d)", chunk.seconds, chunk.text, chunk.offset)
    else:
        output = args.output or Path("output.wav")
        voice.write_wav(chunks, output, on_chunk=timings)
        logger.info("wrote %s", output)
    if timings is not None:
        timings.write(args.output_alignments, voice.sample_rate)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    from runtime.voice import VoiceError

    try:
        return run(args)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (VoiceError, FileNotFoundError, ValueError) as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE if "no text to speak" in str(exc) else EXIT_ERROR
    except BrokenPipeError:  # e.g. piped into `head` or an aplay that quit
        return 0
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
