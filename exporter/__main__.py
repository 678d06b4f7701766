"""``python -m exporter {export,quantize,variants,split,text-model,import-piper,piper-voice}``
(also ``vits-edge-export``).

Each command imports what it needs when it runs: export needs torch and TTS, the others onnx, and either takes
seconds to import, which ``--help`` and a mistyped command should not wait for.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from exporter.errors import ExportError
from exporter.pi.emulation import CannotEmulate
from exporter.quant.plans import ALL_PRESETS, DEFAULT_PRESET, TARGETS
from runtime import contract
from runtime.files import EXIT_CANNOT_WRITE, FULL, WriteError
from runtime.signals import Interrupted, interruptible

logger = logging.getLogger("exporter")
EXIT_CANNOT_EMULATE = 77  # as make arm-check: the machine cannot do it, nothing is wrong with the voice


def _cmd_export(args: argparse.Namespace) -> None:
    from exporter.export import export_voice

    report = export_voice(args.config, args.checkpoint, args.out, force=args.force, text_models=not args.no_text_model)
    print(report.table())
    if args.quantize:
        args.voice_dir, args.preset, args.target = args.out, args.quantize, None
        _cmd_quantize(args)


def _cmd_text_model(args: argparse.Namespace) -> None:
    from exporter.quant.variants import check_voice_dir
    from exporter.text_model import add

    check_voice_dir(args.voice_dir)
    if not (args.voice_dir / args.model).is_file():
        raise ExportError(f"{args.voice_dir / args.model} not found: give a model of this voice folder with --model")
    record = add(args.voice_dir, args.model)
    if "unavailable" in record:
        raise ExportError(f"no text model for this voice: {record['unavailable']}")
    print(f"wrote {args.voice_dir / record['file']}: inputs {', '.join(record['inputs'])}; ids identical to the "
          f"runtime's on {record['verified']['texts']} texts in {len(record['verified']['languages'])} language(s); "
          f"needs onnxruntime-extensions")


def _cmd_import_piper(args: argparse.Namespace) -> None:
    from exporter.piper_import import import_piper

    out = import_piper(args.voice, args.out_dir, force=args.force)
    print(f"wrote {out / 'config.json'} and {out / 'model.pth'}")


def _cmd_piper_voice(args: argparse.Namespace) -> None:
    from exporter.piper_voice import write_piper_voice

    model, config, tokens = write_piper_voice(args.voice_dir, args.out, args.model)
    print(f"wrote {model} and {config}: a Piper voice (piper-tts, Home Assistant's Piper add-on, wyoming-piper; "
          f"`piper -m {model} -f out.wav` speaks it), and {tokens} for sherpa-onnx")


def _cmd_split(args: argparse.Namespace) -> None:
    from exporter import pieces

    if args.path.is_dir():
        if args.out is not None:
            raise ExportError("a voice folder is split in place: drop --out (it is for a Piper VOICE.onnx)")
        for name in pieces.split_folder(args.path):
            print(f"{args.path / name}: streaming pieces written and checked")
        return
    if args.out is None:
        raise ExportError(f"{args.path} is a file: give --out DIR, the folder to write the voice and its pieces to")
    out = pieces.split_piper(args.path, args.out, force=args.force)
    print(f"wrote {out} ({args.path.name}, its .onnx.json with a streaming section, and pieces/)")


def _cmd_quantize(args: argparse.Namespace) -> None:
    from exporter.quant.quantize import FinetuneConfig, quantize_voice

    finetune = None
    adversarial = getattr(args, "finetune_adversarial", None)
    if getattr(args, "finetune_steps", None) or getattr(args, "finetune", False) or adversarial is not None:
        finetune = FinetuneConfig(**({"steps": args.finetune_steps} if args.finetune_steps else {}),
                                  **({"adversarial": adversarial} if adversarial is not None else {}))
    out = quantize_voice(args.voice_dir, args.preset, target=args.target, finetune=finetune)
    sidecar = json.loads(contract.sidecar_path(args.voice_dir / contract.MODEL_FILE).read_text(encoding="utf-8"))
    measured = sidecar["variants"][out.name]["measured"]
    print(f"{out}: {measured['size_mb']} MB ({measured['size_vs_fp32']:.0%} of fp32), "
          f"{measured['speed_vs_fp32']}x fp32 speed, same length {measured['same_length']}/{measured['sentences']}")


def _cmd_variants(args: argparse.Namespace) -> None:
    from exporter.quant import report
    from exporter.quant.variants import check_voice_dir

    check_voice_dir(args.voice_dir)
    header, rows, note = report.columns(args.voice_dir)
    print((report.markdown if args.markdown else report.text)(header, rows))
    print(f"\n{note}")
    if args.search:
        table = report.search_table(args.voice_dir)
        print("\n" + (table or "(no auto search recorded in this folder)"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vits-edge-export", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show debug logs")
    sub = parser.add_subparsers(dest="command", required=True)

    exp = sub.add_parser("export", help="export a Coqui VITS checkpoint to a verified ONNX voice folder")
    exp.add_argument("--config", type=Path, required=True, help="Coqui config.json")
    exp.add_argument("--checkpoint", type=Path, required=True, help="Coqui model.pth")
    exp.add_argument("--out", type=Path, required=True, help="output folder (model.onnx + model.onnx.json)")
    exp.add_argument("--force", action="store_true", help="replace an existing output folder")
    exp.add_argument("--quantize", metavar="PRESET", choices=ALL_PRESETS, help="also write model.PRESET.onnx")
    exp.add_argument("--no-text-model", action="store_true",
                     help="do not write model.text.onnx (a character voice's string-in model, needs "
                          "onnxruntime-extensions to run)")
    exp.set_defaults(func=_cmd_export)

    txt = sub.add_parser("text-model", help="write MODEL.text.onnx: a character voice that takes a string and "
                                            "returns audio, run by any onnxruntime with onnxruntime-extensions")
    txt.add_argument("voice_dir", type=Path, help="exported voice folder")
    txt.add_argument("--model", default="model.onnx", help="which model of the folder (e.g. model.auto.onnx)")
    txt.set_defaults(func=_cmd_text_model)

    qua = sub.add_parser("quantize", help="write an int8 variant model.PRESET.onnx into an exported voice folder")
    qua.add_argument("voice_dir", type=Path, help="exported voice folder (model.onnx + model.onnx.json)")
    qua.add_argument("--preset", choices=ALL_PRESETS, default=DEFAULT_PRESET,
                     help=f"default: {DEFAULT_PRESET}; finetuned trains the int8 vocoder against fp32 (up to ~30 min on "
                     "2 cores; stop it any time, the same command resumes); fp16: the convolutions in fp16 arithmetic "
                     "for a Raspberry Pi 5 (judged on audio made on an emulated Pi 5 when this CPU has no fp16 "
                     "arithmetic)")
    qua.add_argument("--finetune", action="store_true", help="auto: let the decoder stages try int8 fine-tuned "
                     "against fp32 too (slower to make: each plan that holds it is trained)")
    qua.add_argument("--finetune-steps", type=int, metavar="N", help="training steps of the finetuned preset and of "
                     "auto --finetune (default: FinetuneConfig.steps)")
    qua.add_argument("--finetune-adversarial", type=float, metavar="W", help="weight of the adversarial term in "
                     "fine-tuning: a HiFi-GAN discriminator learned from scratch against the fp32 voice's audio "
                     "(0: none; default: FinetuneConfig.adversarial)")
    qua.add_argument("--target", choices=TARGETS, help="CPU the variant is for (default: this machine); pi4 and pi5: "
                     "auto chooses by the Pi's speed estimated under emulation (QEMU), not this machine's timings")
    qua.set_defaults(func=_cmd_quantize)

    var = sub.add_parser("variants", help="the models of a voice folder: size, speed, and how the quality budget "
                         "judged each; which one it speaks by default here")
    var.add_argument("voice_dir", type=Path, help="exported voice folder")
    var.add_argument("--markdown", action="store_true", help="a markdown table")
    var.add_argument("--search", action="store_true", help="also every plan auto tried, and why it kept or dropped it")
    var.set_defaults(func=_cmd_variants)

    spl = sub.add_parser("split", help="write the streaming pieces of a voice folder (every model in it), or of a "
                         "Piper VOICE.onnx into a new folder")
    spl.add_argument("path", type=Path, help="exported voice folder, or a Piper VOICE.onnx with its .onnx.json")
    spl.add_argument("--out", type=Path, help="output folder, for a Piper VOICE.onnx")
    spl.add_argument("--force", action="store_true", help="replace an existing output folder")
    spl.set_defaults(func=_cmd_split)

    imp = sub.add_parser("import-piper", help="turn a Piper VOICE.onnx (+ .onnx.json) into a Coqui checkpoint")
    imp.add_argument("voice", type=Path, help="Piper VOICE.onnx; VOICE.onnx.json must sit beside it")
    imp.add_argument("out_dir", type=Path, help="output folder (config.json + model.pth)")
    imp.add_argument("--force", action="store_true", help="replace an existing output folder")
    imp.set_defaults(func=_cmd_import_piper)

    pip = sub.add_parser("piper-voice", help="write a model of a voice folder as a Piper voice: NAME.onnx and "
                         "NAME.onnx.json in Piper's config schema")
    pip.add_argument("voice_dir", type=Path, help="exported voice folder")
    pip.add_argument("--model", help="which model of the folder (default: the one it speaks on every CPU, e.g. "
                     "model.auto.onnx)")
    pip.add_argument("--out", type=Path, required=True, help="the Piper voice to write, NAME.onnx")
    pip.set_defaults(func=_cmd_piper_voice)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with interruptible():  # Ctrl-C and SIGTERM unwind: temporaries are removed, nothing half-written stays
            return _run(args)
    except Interrupted as exc:
        print(f"stopped by {exc.name}: nothing was left half-written; the same command starts again "
              "(fine-tuning goes on from its last checkpoint)", file=sys.stderr)
        return exc.exit_code


def _run(args) -> int:
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not args.debug:
        for noisy in ("TTS", "trainer", "coqpit", "fsspec", "faster_whisper"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
    try:
        args.func(args)
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except CannotEmulate as exc:  # a Pi target without QEMU: skipped, as `make arm-check` is
        print(f"error: cannot emulate a Raspberry Pi here: {exc}", file=sys.stderr)
        return EXIT_CANNOT_EMULATE
    except OSError as exc:
        if isinstance(exc, WriteError) or exc.errno in FULL:  # (a full disk under a command's own temporary name)
            named = exc.filename if isinstance(exc, WriteError) else None  # (not a temporary name)
            where = next(p for p in (named, *(getattr(args, a, None) for a in ("out", "voice_dir", "path", "out_dir")))
                         if p is not None)
            print(f"error: {WriteError.of(exc, where)}; nothing was left half-written", file=sys.stderr)
            return EXIT_CANNOT_WRITE
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
