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

from benchmarks import results
from exporter.pi import estimate
from exporter.pi.emulation import CannotEmulate
from exporter.quant.budget import JUDGE_SENTENCES, Budget, Comparison
from exporter.quant.build import build
from exporter.quant.plans import QuantConfig
from exporter.quant.sensitivity import Ranker

EXIT_SKIPPED = 77


def measure(voice: Path, units: list[str], keeps: list[int], target: str, log) -> list[dict]:
    ranker = Ranker(voice, threads=1)
    judged = Comparison(voice, JUDGE_SENTENCES, threads=1 if target != "here" else 2)
    pi = estimate.PiSpeed(voice, target, log=lambda line: None) if target != "here" else None
    out = []
    with tempfile.TemporaryDirectory(prefix="vits-edge-sensitivity-") as tmp:
        tmp = Path(tmp)
        for unit in units:
            whole = tmp / "whole.onnx"
            build(voice, QuantConfig("sensitivity", ((unit, "qdq+"),)), whole, tmp / "ranges.json")
            ranking = ranker.rank(whole, unit, "qdq+", report=log)
            rows = []
            for keep in keeps:
                if keep > len(ranking.gains):
                    break
                path = tmp / f"keep{keep}.onnx"
                build(voice, QuantConfig("sensitivity", ((unit, "qdq+"),), keep_fp32=ranking.top(keep)), path,
                      tmp / "ranges.json")
                m = judged.measure(path, timed=pi is None)
                rows.append({"keep": keep, "kept": list(ranking.top(keep)), "logmel_db": m.logmel_db,
                             "mcd_db": m.mcd_db, "speed_vs_fp32": float(m.speed_vs_fp32 if pi is None else pi(path))})
                log(f"  {unit}, {keep} kept fp32: log-mel {m.logmel_db} dB, MCD {m.mcd_db} dB, "
                    f"{rows[-1]['speed_vs_fp32']:.3f}x fp32")
            out.append({"unit": unit, "ranking": {**ranking.to_dict(), "all": [[n, g] for n, g in ranking.gains]},
                        "rows": rows})
    return out


def report(units: list[dict], target: str) -> str:
    budget = Budget()
    where = {"pi5": "a Raspberry Pi 5 (emulation estimate)", "pi4": "a Raspberry Pi 4 (emulation estimate)",
             "here": "this machine (timed)"}[target]
    lines = ["# Where a decoder stage's int8 error is", "",
             f"Each stage in qdq+, its quantized tensors ranked by the log-mel error leaving each in fp32 gives back "
             f"(all the others quantized; on calibration sentences), then the stage with its worst tensors kept in "
             f"fp32: closeness to fp32 on the budget's {len(JUDGE_SENTENCES)} sentences at zero noise (the budget: "
             f"log-mel {budget.max_logmel_db} dB, MCD {budget.max_mcd_db} dB; listening is left to `auto`), and "
             f"speed over fp32 on {where}."]
    for u in units:
        r = u["ranking"]
        lines += ["", f"## {u['unit']}: {r['tensors']} quantized tensors, {r['error_db']:.2f} dB log-mel whole", "",
                  "| tensors kept fp32 | log-mel dB | MCD dB | speed vs fp32 |", "|---|---|---|---|"]
        for row in u["rows"]:
            lines.append(f"| {row['keep']} | {row['logmel_db']:.2f} | {row['mcd_db']:.2f} | "
                         f"{row['speed_vs_fp32']:.3f}x |")
        lines += ["", "The worst tensors (dB of log-mel each gives back, on the ranking sentences):", ""]
        lines += [f"- `{name}` {gain:+.3f}" for name, gain in r["all"][:8]]
        rest = [g for _, g in r["all"][8:]]
        if rest:
            lines.append(f"- the other {len(rest)}: {min(rest):+.3f} to {max(rest):+.3f}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.sensitivity", description=__doc__.split("\n\n")[0])
    p.add_argument("--voice", type=Path, required=True, help="exported voice folder")
    p.add_argument("--unit", action="append", help="decoder stage(s) to rank (default: decoder.2)")
    p.add_argument("--keep", default="0,2,4,8", help="tensors kept fp32, tried in turn (default: %(default)s)")
    p.add_argument("--target", choices=("pi5", "pi4", "here"), default="pi5",
                   help="whose speed: a Pi's emulation estimate (as root, qemu-user and gcc) or this machine's")
    p.add_argument("--out", type=Path, default=Path("build/sensitivity"), help="results.json and report.md")
    p.add_argument("--docs", action="store_true", help="also write the report to docs/measured/sensitivity.md")
    args = p.parse_args(argv)
    keeps = sorted({int(k) for k in args.keep.split(",") if k.strip()})

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        units = measure(args.voice, args.unit or ["decoder.2"], keeps, args.target, log)
    except CannotEmulate as exc:
        print(f"cannot emulate aarch64 here: {exc} (use --target here)", file=sys.stderr)
        return EXIT_SKIPPED
    data = {"schema": results.SCHEMA, "voice": str(args.voice), "target": args.target, "units": units}
    results.write(args.out, data, report(units, args.target), docs="sensitivity" if args.docs else None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
