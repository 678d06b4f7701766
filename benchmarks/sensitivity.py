"""``python -m benchmarks.sensitivity``: where a decoder stage's int8 error is, and what keeping its worst tensors in
fp32 costs in speed.

    python -m benchmarks.sensitivity --voice build/demo/voice --unit decoder.2 --keep 0,2,4,8 --out build/sensitivity

For each ``--unit``: the stage in qdq+ (its whole int8 form), its quantized tensors ranked as ``auto`` ranks them
(exporter/quant/sensitivity.py: each tensor's Quantize/Dequantize pair left out in turn, by the log-mel error it gives
back on calibration sentences), then the stage with its worst ``--keep`` tensors in fp32: closeness to fp32 on the
budget's sentences at zero noise (log-mel, MCD: the budget's first rules; listening is left to ``auto``) and speed
over fp32, estimated for a Raspberry Pi 5 from the instructions its core executes under emulation (``--target
pi4`` for a Pi 4), or timed here (``--target here``). Works on a copy of the voice's model: the folder is not
changed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx

from benchmarks import results
from exporter.pi import estimate
from exporter.pi.emulation import CannotEmulate
from exporter.quant import repair
from exporter.quant.budget import JUDGE_SENTENCES, Budget, within
from exporter.quant.build import build
from exporter.quant.calibration import CALIBRATION_SENTENCES, _calibration_feeds
from exporter.quant.judge import Judge
from exporter.quant.plans import QuantConfig
from exporter.quant.sensitivity import Ranker
from runtime import contract
from runtime.config import FP32
from runtime.voice import SynthesisConfig, Voice

EXIT_SKIPPED = 77


def repaired_voice(voice: Path, unit: str, lever: str, feeds: list[dict], folder: Path) -> Path:
    """A voice folder whose model.onnx has ``lever``'s exact fp32 rewrites (smooth, split) on ``unit``'s stream;
    ``voice`` itself where there are none."""
    rewrites = [r for r in lever.split("+") if r.split(":")[0] in ("smooth", "split")]
    if not rewrites:
        return voice
    folder.mkdir(parents=True)
    for name in (contract.MODEL_FILE + ".json", "pieces"):
        if (voice / name).exists():
            (folder / name).symlink_to((voice / name).resolve())
    model = onnx.load(str(voice / contract.MODEL_FILE))
    for rewrite in rewrites:  # each measures its ranges on the model the ones before it left
        repair.apply(model, unit, rewrite, feeds)
    onnx.save(model, str(folder / contract.MODEL_FILE))
    return folder


def measure(voice: Path, units: list[str], keeps: list[int], repairs: list[str], target: str, listen: bool,
            log) -> list[dict]:
    ranker = Ranker(voice, threads=1)
    budget = Budget()
    judge = Judge(voice, budget, threads=1 if target != "here" else 2, listen=listen, report=log)
    pi = estimate.PiSpeed(voice, target, log=lambda line: None) if target != "here" else None
    feeds = _calibration_feeds(voice, 4)
    latents = bias_latents(voice) if any("bias" in r.split("+") for r in repairs) else []
    out = []
    with tempfile.TemporaryDirectory(prefix="vits-edge-sensitivity-") as tmp:
        tmp = Path(tmp)
        for unit in units:
            for n, lever in enumerate(repairs):
                source = repaired_voice(voice, unit, lever, feeds, tmp / f"{unit}-{n}")
                ranges = tmp / f"{unit}-{n}-ranges.json"

                def made(cfg: QuantConfig, path: Path) -> Path:
                    build(source, cfg, path, ranges)
                    if "bias" in lever.split("+"):
                        model = onnx.load(str(path))
                        repair.correct_biases(source, model, unit, latents)
                        onnx.save(model, str(path))
                    return path

                whole = made(QuantConfig("sensitivity", ((unit, "qdq+"),)), tmp / "whole.onnx")
                ranking = ranker.rank(whole, unit, "qdq+", report=log)
                rows = []
                for keep in keeps:
                    if keep > len(ranking.gains):
                        break
                    cfg = QuantConfig("sensitivity", ((unit, "qdq+"),), keep_fp32=ranking.top(keep))
                    path = made(cfg, tmp / f"keep{keep}.onnx")
                    m = judge.comparison.measure(path, timed=False)
                    speed = float(pi(path) if pi is not None else judge.speed(path, cfg, final=True).value)
                    row = {"repair": lever, "keep": keep, "kept": list(ranking.top(keep)), "logmel_db": m.logmel_db,
                           "mcd_db": m.mcd_db, "speed_vs_fp32": speed, "size_vs_fp32": m.size_vs_fp32,
                           "sound": within(m, budget)[0]}
                    if judge.reference is not None:
                        heard = judge.listen(path)
                        row["heard"] = heard
                        row["heard_vs_fp32"] = {k: round(heard[k] - judge.reference[k], 3)
                                                for k in ("ovrl", "p808", "distillmos", "wer") if k in heard}
                        row["heard_ok"], row["verdict"] = judge.listener.verdict(judge.reference, heard, budget)
                    rows.append(row)
                    log(f"  {unit}, {lever}, {keep} kept fp32: log-mel {m.logmel_db} dB, MCD {m.mcd_db} dB, "
                        f"{speed:.3f}x fp32" + (f", heard {row['heard_vs_fp32']}" if "heard" in row else ""))
                out.append({"unit": unit, "repair": lever,
                            "ranking": {**ranking.to_dict(), "all": [[n, g] for n, g in ranking.gains]}, "rows": rows})
    return out


def bias_latents(voice: Path) -> list[np.ndarray]:
    """Flow outputs of the calibration sentences at zero noise: what bias correction measures on."""
    v = Voice.load(voice, variant=FP32)
    out = []
    for text in CALIBRATION_SENTENCES[:4]:
        encoded = v.pieces.encode(v.feeds(v.text_to_ids(text), SynthesisConfig(noise_scale=0.0, noise_w=0.0)))
        latents = v.pieces.latents(encoded, 0.0)
        out.append(v.pieces.flow_frames(latents, 0, latents.shape[2]))
    return out


def report(units: list[dict], target: str) -> str:
    budget = Budget()
    where = {"pi5": "a Raspberry Pi 5 (emulation estimate)", "pi4": "a Raspberry Pi 4 (emulation estimate)",
             "here": "this machine (timed)"}[target]
    lines = ["# Where a decoder stage's int8 error is, and what each lever buys", "",
             f"Each stage in qdq+ after a range repair (none; `bias`: bias correction; `smooth:A`: SmoothQuant "
             f"migration through LeakyReLU with alpha A; `split:K`: the K widest stream channels split; exporter/"
             f"quant/repair.py), its quantized tensors ranked by the log-mel error leaving each in fp32 gives back "
             f"(all the others quantized; on calibration sentences), then the stage with its worst tensors kept in "
             f"fp32: closeness to fp32 on the budget's {len(JUDGE_SENTENCES)} sentences at zero noise (the budget: "
             f"log-mel {budget.max_logmel_db} dB, MCD {budget.max_mcd_db} dB), what the budget's listeners hear "
             f"against fp32 (DNSMOS OVRL and P.808, DistillMOS: {budget.mos_tolerance} allowed below; WER), and speed "
             f"over fp32 on {where}."]
    for unit in dict.fromkeys(u["unit"] for u in units):
        these = [u for u in units if u["unit"] == unit]
        r = these[0]["ranking"]
        lines += ["", f"## {unit}: {r['tensors']} quantized tensors", "",
                  "| repair | tensors kept fp32 | log-mel dB | MCD dB | OVRL | P.808 | DistillMOS | WER | "
                  "speed vs fp32 | size vs fp32 | budget |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for u in these:
            for row in u["rows"]:
                h = row.get("heard_vs_fp32", {})
                cell = lambda k, f: f.format(h[k]) if k in h else "-"  # noqa: E731
                verdict = ("inside" if row["sound"] and row.get("heard_ok")
                           else "closeness only" if row["sound"] and "heard_ok" not in row else "outside")
                lines.append(f"| {u['repair']} | {row['keep']} | {row['logmel_db']:.2f} | {row['mcd_db']:.2f} | "
                             f"{cell('ovrl', '{:+.2f}')} | {cell('p808', '{:+.2f}')} | {cell('distillmos', '{:+.2f}')} | "
                             f"{cell('wer', '{:+.1%}')} | {row['speed_vs_fp32']:.3f}x | {row['size_vs_fp32']:.2f} | "
                             f"{verdict} |")
        for u in these:
            r = u["ranking"]
            lines += ["", f"The worst tensors after `{u['repair']}` ({r['error_db']:.2f} dB log-mel whole; dB each "
                          f"gives back, on the ranking sentences):", ""]
            lines += [f"- `{name}` {gain:+.3f}" for name, gain in r["all"][:4]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.sensitivity", description=__doc__.split("\n\n")[0])
    p.add_argument("--voice", type=Path, required=True, help="exported voice folder")
    p.add_argument("--unit", action="append", help="decoder stage(s) to rank (default: decoder.2)")
    p.add_argument("--keep", default="0,2,4,8", help="tensors kept fp32, tried in turn (default: %(default)s)")
    p.add_argument("--repair", default="none",
                   help="range repairs, each measured alone, '+' to combine: none, bias, smooth:ALPHA, split:K "
                        "(default: %(default)s)")
    p.add_argument("--no-listen", action="store_true", help="closeness and speed only (listening: ~1 min a row)")
    p.add_argument("--target", choices=("pi5", "pi4", "here"), default="pi5",
                   help="whose speed: a Pi's emulation estimate (as root, qemu-user and gcc) or this machine's")
    p.add_argument("--out", type=Path, default=Path("build/sensitivity"), help="results.json and report.md")
    p.add_argument("--docs", action="store_true", help="also write the report to docs/measured/sensitivity.md")
    args = p.parse_args(argv)
    keeps = sorted({int(k) for k in args.keep.split(",") if k.strip()})

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        units = measure(args.voice, args.unit or ["decoder.2"], keeps, args.repair.split(","), args.target,
                        not args.no_listen, log)
    except CannotEmulate as exc:
        print(f"cannot emulate aarch64 here: {exc} (use --target here)", file=sys.stderr)
        return EXIT_SKIPPED
    data = {"schema": results.SCHEMA, "voice": str(args.voice), "target": args.target, "units": units}
    results.write(args.out, data, report(units, args.target), docs="sensitivity" if args.docs else None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
