"""What a voice folder's variants are and how each was judged, as a person reads it: ``python -m exporter variants``.

Everything comes from the sidecar, where ``quantize`` recorded how each variant was made and what it measured
(exporter/quant/variants.py): one column a model, one row a measure, and the budget's own numbers beside them.
It needs only the runtime (a device, or a benchmark without onnx, can print it).
"""

from __future__ import annotations

import json
from pathlib import Path

from exporter.quant.plans import COMPUTE
from runtime import contract, cpu
from runtime.config import default_model, read_sidecar

JUDGED = ("auto", "finetuned")  # the presets held to the budget (the fixed ones are recipes, not judged)


def heard(scores: dict) -> str:
    """What listeners' models heard, as a person reads it."""
    parts = [f"WER {scores['wer']:.1%}"] if scores.get("wer") is not None else []
    parts += [f"DNSMOS {k.upper()} {scores[k]:.2f}" for k in ("ovrl", "p808") if k in scores]
    parts += [f"DistillMOS {scores['distillmos']:.2f}"] if "distillmos" in scores else []
    return ", ".join(parts)


def _read(voice_dir: Path) -> dict:
    return json.loads(contract.sidecar_path(Path(voice_dir) / contract.MODEL_FILE).read_text(encoding="utf-8"))


def _heard(scores: dict | None) -> tuple[str, str, str]:
    if not scores:
        return "-", "-", "-"
    wer = "-" if scores.get("wer") is None else f"{scores['wer']:.1%}"
    dnsmos = f"{scores['ovrl']:.2f} / {scores['p808']:.2f}" if "ovrl" in scores else "-"
    distill = f"{scores['distillmos']:.2f}" if "distillmos" in scores else "-"
    return wer, dnsmos, distill


def _speed(measured: dict) -> str:
    if measured.get("speed_vs_fp32") is None:
        return "-"
    if measured.get("speed_method") == "estimated":  # a Pi's emulation estimate (exporter/pi), not a timing
        board = (measured.get("timed_on") or {}).get("cpu", "another CPU").split(" (")[0]
        return f"{measured['speed_vs_fp32']:.2f}x, estimated for a {board}"
    low, high = measured.get("speed_interval") or (None, None)
    spread = f" ({low:.2f}-{high:.2f}x, {measured['speed_rounds']} rounds)" if low is not None else ""
    return f"{measured['speed_vs_fp32']:.2f}x{spread}"


def columns(voice_dir: Path) -> tuple[list[str], list[list[str]], str]:
    """(header, rows, note): the folder's models as columns (fp32 first), the measures as rows, the budget last."""
    voice_dir = Path(voice_dir)
    sidecar = _read(voice_dir)
    records = sidecar.get("variants") or {}
    models = [p.name for p in contract.voice_models(voice_dir) if p.is_file()]
    budget = next((r["budget"] for r in records.values() if r.get("budget")), None)
    fp32_heard = next((r["measured"].get("fp32_heard") for r in records.values()
                       if r.get("measured", {}).get("fp32_heard")), None)
    fp32_mb = (voice_dir / contract.MODEL_FILE).stat().st_size / 1e6
    rows = {name: [] for name in ("file", "int8 / fp16 arithmetic in", "speed over fp32", "phonemes moved",
                                  "log-mel / MCD", "WER", "DNSMOS OVRL / P.808", "DistillMOS", "verdict")}
    for name in models:
        r = records.get(name, {})
        m = r.get("measured") or {}
        preset = (r.get("config") or {}).get("preset")
        if name == contract.MODEL_FILE:
            cells = [f"{fp32_mb:.1f} MB", "-", "1.00x", "-", "reference", *_heard(fp32_heard), "the reference"]
        else:
            d = m.get("durations")
            moved = (f"{round(d['moved_share'] * d['phonemes'])} of {d['phonemes']} (at most "
                     f"{d['max_phoneme_frames']} frame)" if d else "-")
            close = (f"{m['logmel_db']:.2f} / {m['mcd_db']:.2f} dB" if m.get("logmel_db") is not None
                     and m.get("mcd_db") is not None else "-")
            size = (voice_dir / name).stat().st_size / 1e6
            verdict = ("inside the budget" if preset in JUDGED else
                       "a fixed recipe, not held to the budget" if preset else "not recorded")
            if "within_budget" in m:  # a fixed preset judged all the same: fp16, on an emulated Pi 5's audio
                outside = "" if m["within_budget"] else "outside the budget: "
                verdict = f"judged on {m['heard_on']}: {outside}{m['verdict']}"
            plan = [tuple(p) for p in (r.get("config") or {}).get("plan") or ()]
            computes = ", ".join(f"{unit} ({option})" for unit, option in plan if option in COMPUTE)
            cells = [f"{size:.1f} MB ({size / fp32_mb:.0%})", computes or "none: smaller weights, fp32 arithmetic",
                     _speed(m), moved, close, *_heard(m.get("heard")), verdict]
        for row, cell in zip(rows.values(), cells):
            row.append(cell)
    limits = ["", "", "faster than fp32, or weight storage only", "-", "-", "-", "-", "-", ""]
    if budget:
        tolerance = budget["mos_tolerance"]
        limits = ["", "", "clearly faster, or weight storage only",
                  f"at most {budget['max_moved_share']:.0%}, each within {budget['max_phoneme_frames']} frame",
                  f"at most {budget['max_logmel_db']} / {budget['max_mcd_db']} dB",
                  f"at most fp32's + {budget['wer_tolerance'] * 100:.1f} points", f"at least fp32's - {tolerance}",
                  f"at least fp32's - {tolerance}", ""]
    for row, limit in zip(rows.values(), limits):
        row.append(limit)
    header = ["", *[f"{contract.variant_name(n)} ({n})" for n in models], "the budget"]
    name, why = default_model(voice_dir, read_sidecar(contract.sidecar_path(voice_dir / contract.MODEL_FILE)))
    timed = [r["measured"]["timed_on"] for r in records.values() if (r.get("measured") or {}).get("timed_on")]
    where = f"; timed on {timed[0]['cpu']} ({timed[0]['int8_class']})" if timed else ""
    note = f"Speaks {name} by default on this CPU ({cpu.int8_class()}): {why}{where}."
    return header, [[label, *cells] for label, cells in rows.items()], note


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def text(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[k]) for r in [header, *rows]) for k in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in [header, *rows])


def search_table(voice_dir: Path, model_name: str = "model.auto.onnx") -> str | None:
    """``auto``'s trials as it reported them (the sidecar's ``search``), as a markdown table; None without one."""
    record = (_read(voice_dir).get("variants") or {}).get(model_name) or {}
    if not record.get("search"):
        return None
    lines = ["| step | plan | speed vs fp32 | log-mel dB | phonemes moved | size | heard | verdict |",
             "|---|---|---|---|---|---|---|---|"]
    for row in record["search"]:
        d = row.get("durations")
        moved = f"{d['moved_share']:.1%}" if d else "-"
        speed = "-" if row.get("speed_vs_fp32") is None else f"{row['speed_vs_fp32']:.2f}x"
        mel = "-" if row.get("logmel_db") is None else f"{row['logmel_db']:.2f}"
        size = f"{row['size_vs_fp32']:.0%}" if row.get("size_vs_fp32") is not None else "-"
        scores = heard(row["heard"]) if row.get("heard") else "-"
        lines.append(f"| {row['step']} | {row['plan']} | {speed} | {mel} | {moved} | {size} | {scores} | "
                     f"{row['verdict']} |")
    return "\n".join(lines)
