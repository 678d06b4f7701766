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

from runtime.alignment import Timeline
from runtime.chunking import STREAM, WHOLE, ChunkingError, Schedule
from runtime.config import FP32, NothingToSay, UsageError, VoiceError, add_synthesis_flags, synthesis_from_args
from runtime.files import EXIT_CANNOT_WRITE, FULL, WriteError, atomic_open, check_folder
from runtime.signals import Interrupted, interruptible
from runtime.voice import Voice

EXIT_USAGE = 2  # bad input: empty text, text that is not UTF-8, a flag's value (UsageError, NothingToSay)
EXIT_ERROR = 1  # the voice cannot be loaded or used as asked (VoiceError), a file that is not there
# EXIT_CANNOT_WRITE (73): an output cannot be written (a full disk, a read-only or unwritable folder); nothing is
# left half-written under its name
# 130 (SIGINT), 143 (SIGTERM): stopped by the signal; an output not yet complete is not written, and no temporary
# is left beside it

logger = logging.getLogger("runtime")


class InputError(UsageError):
    """Bad text input (empty, not UTF-8): exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vits-edge-synthesize", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("text", nargs="*", help="text to speak (default: read stdin line by line)")
    p.add_argument("-m", "--model", "--voice", dest="model", required=True,
                   help="voice folder, or VOICE.onnx with VOICE.onnx.json beside it (Piper voices work too)")
    p.add_argument("--variant", help=f"which model of a voice folder: {FP32} (model.onnx), auto (model.auto.onnx), "
                                     "static, ...; default: the folder's own default (--debug says which)")
    p.add_argument("--text-file", type=Path, help="read the text from this UTF-8 file")
    out = p.add_mutually_exclusive_group()
    out.add_argument("-f", "--output", "--output-file", dest="output", type=Path, help="write a 16-bit mono WAV")
    out.add_argument("--output-raw", action="store_true", help="write 16-bit PCM to stdout as each chunk is ready")
    p.add_argument("--output-alignments", type=Path, metavar="FILE.json",
                   help="write each sentence's phoneme and word timings (seconds) to this JSON file")
    add_synthesis_flags(p)
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


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    voice = Voice.load(args.model, variant=args.variant, threads=args.threads, espeak_data=args.espeak_data)
    logger.debug("loaded %s in %.2f s", voice.model_path, time.perf_counter() - start)
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
    timings = Timeline() if args.output_alignments else None
    if timings is not None:
        check_folder(args.output_alignments)
    syn = synthesis_from_args(args)
    aligned = timings is not None
    if args.no_streaming or (not args.output_raw and not voice.streams):  # (a WAV needs no streaming pieces)
        chunks = voice.synthesize(lines, syn, alignments=aligned)
    elif args.output_raw:  # played as it comes: the first chunk early, then as large as the audio in hand allows
        chunks = voice.stream(lines, syn, schedule=schedule, alignments=aligned)
    else:  # a WAV file appears when it is complete: chunks only keep memory flat
        chunks = voice.stream(lines, syn, schedule=WHOLE, paced=False, alignments=aligned)
    if args.output_raw:
        out = sys.stdout.buffer
        for chunk in chunks:
            try:
                out.write(chunk.pcm16())
                out.flush()
            except OSError as exc:
                if exc.errno in FULL:  # stdout redirected to a file on a full disk
                    raise WriteError.of(exc, "standard output") from exc
                raise
            if timings is not None:
                timings(chunk)
            logger.debug("%.2f s of audio for %r (sample %d)", chunk.seconds, chunk.text, chunk.offset)
    else:
        output = args.output or Path("output.wav")
        voice.write_wav(chunks, output, on_chunk=timings)
        logger.info("wrote %s", output)
    if timings is not None:
        with atomic_open(args.output_alignments) as f:
            f.write((json.dumps(timings.to_dict(voice.sample_rate), indent=1, ensure_ascii=False) + "\n").encode())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        with interruptible():
            return run(args)
    except Interrupted as exc:
        return exc.exit_code
    except (UsageError, NothingToSay) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except WriteError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CANNOT_WRITE
    except (VoiceError, FileNotFoundError, ValueError) as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:  # e.g. piped into `head` or an aplay that quit
        return 0


if __name__ == "__main__":
    sys.exit(main())
