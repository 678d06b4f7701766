"""Turn the raw timings and audio into results: speed, size, fidelity and quality per contender."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from benchmarks import sysinfo

SCHEMA = 1
BASELINES = ("pytorch-fp32", "ort-fp32")  # ratios and fidelity are to the first of these that ran


def stats(values) -> dict | None:
    arr = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if arr.size == 0:
        return None
    return {"median": float(np.median(arr)), "min": float(np.min(arr)), "max": float(np.max(arr)), "n": int(arr.size)}


def write(out: Path, results: dict, report: str) -> None:
    """``OUT/results.json`` and ``OUT/report.md`` (the report also printed): what every benchmark leaves."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    (out / "report.md").write_text(report, encoding="utf-8")
    print(report)


def sizes(contender) -> dict:
    """Model files on disk and the installed packages (and system packages) the contender needs."""
    files = {str(p): p.stat().st_size for p in contender.files if Path(p).is_file()}
    installed = sysinfo.installed_size(contender.install)
    apt = sysinfo.apt_size(contender.apt) if contender.apt else None
    return {"model_files": files, "model_bytes": sum(files.values()), "installed_bytes": installed["bytes"]
            + (apt or 0), "installed_packages": installed["packages"], "missing_packages": installed["missing"],
            "apt_packages": contender.apt, "apt_bytes": apt}


def _speed(raw: dict, sample_rate: int) -> dict:
    seconds, samples = raw["seconds"], raw["samples"]
    per_round, synth_s, audio_s, cpu_s = [], [], [], []
    for sec, smp, cpu in zip(seconds, samples, raw["cpu_seconds"]):
        if any(v is None for v in sec + smp):
            continue
        synth_s.append(sum(sec))
        cpu_s.append(sum(cpu))
        audio_s.append(sum(smp) / sample_rate)
        per_round.append(synth_s[-1] / audio_s[-1])
    per_sentence = []
    for i in range(len(seconds[0]) if seconds else 0):
        rtfs = [sec[i] / (smp[i] / sample_rate) for sec, smp in zip(seconds, samples)
                if sec[i] is not None and smp[i]]
        per_sentence.append(stats(rtfs))
    return {"rtf": stats(per_round), "rtf_per_round": per_round, "synthesis_s_per_round": synth_s,
            "cpu_s_per_round": cpu_s, "audio_s_per_round": audio_s, "rtf_per_sentence": per_sentence,
            "raw": {"seconds": seconds, "cpu_seconds": raw["cpu_seconds"], "samples": samples}}


def _paired_ratios(base: dict, row: dict, base_rate: int, row_rate: int) -> list[float]:
    """Baseline RTF over the row's for each sentence of each round: runs seconds apart, so the
    machine's state (and other work on it) is nearly the same for both."""
    ratios = []
    for b_sec, b_smp, r_sec, r_smp in zip(base["seconds"], base["samples"], row["seconds"], row["samples"]):
        for bs, bn, rs, rn in zip(b_sec, b_smp, r_sec, r_smp):
            if None not in (bs, bn, rs, rn) and bn and rn and rs > 0:
                ratios.append((bs / (bn / base_rate)) / (rs / (rn / row_rate)))
    return ratios


def assemble(rows: dict, raw: dict, ttfa: dict, zero: dict, sizes: dict, skipped: list, sentences: list[str],
             settings: dict) -> dict:
    from exporter.quality import fidelity, noise_yardstick

    ok = [key for key, row in rows.items() if row["status"] == "ok" and key in raw]
    baseline = next((k for k in BASELINES if k in ok), ok[0] if ok else None)
    complete = [k for k in ok if len(zero.get(k, [])) == len(sentences)]
    reference = next((k for k in BASELINES if k in complete), None)
    contenders = []
    for key, row in rows.items():
        row = dict(row)
        row.update(sizes.get(key, {}))
        if key in ok:
            row["speed"] = _speed(raw[key], row["sample_rate"])
            row["ttfa_s"] = {**(stats(ttfa.get(key, [])) or {}), "all": ttfa.get(key, [])}
        if key in complete and reference is not None:
            if key == reference:
                row["fidelity"] = {"is_reference": True}
            elif rows[reference]["sample_rate"] == row["sample_rate"]:
                row["fidelity"] = fidelity(zero[reference], zero[key], row["sample_rate"])
        contenders.append(row)
    by_key = {row["key"]: row for row in contenders}
    if baseline is not None:
        base = by_key[baseline]
        for row in contenders:
            if "speed" not in row:
                continue
            pairs = zip(base["speed"]["rtf_per_round"], row["speed"]["rtf_per_round"])
            per_round = [b / r for b, r in pairs if r > 0]
            paired = _paired_ratios(raw[baseline], raw[row["key"]], base["sample_rate"], row["sample_rate"])
            row["speedup_vs_baseline"] = {**(stats(paired) or {}), "per_round": per_round,
                                          "per_round_stats": stats(per_round)}
            for what in ("model_bytes", "peak_rss_mb"):
                if row.get(what) and base.get(what):
                    row[f"{what}_vs_baseline"] = row[what] / base[what]
    yardstick = None
    if reference is not None and all(a is not None for a in raw[reference]["audio"]):
        yardstick = noise_yardstick(zero[reference], raw[reference]["audio"], rows[reference]["sample_rate"])
    return {
        "schema": SCHEMA,
        "baseline": baseline,
        "reference": reference,
        "mcd_noise_yardstick_db": yardstick,
        "settings": settings,
        "sentences": sentences,
        "contenders": contenders,
        "skipped": [vars(s) for s in skipped],
    }


def score(results: dict, raw: dict, sentences: list[str], threads: int, show) -> None:
    """Whisper WER/CER and DNSMOS on each contender's default-noise audio (round 1)."""
    from exporter.quality import Scorer

    show.phase("loading Whisper tiny.en and DNSMOS")
    scorer = Scorer(threads)
    results["quality_notes"] = [n for n in (scorer.asr_error, scorer.mos_error) if n]
    if scorer.asr is None and scorer.dnsmos is None:
        return
    for row in results["contenders"]:
        audio = raw.get(row["key"], {}).get("audio")
        if row["status"] != "ok" or not audio or any(a is None for a in audio):
            continue
        show.phase(f"scoring {row['key']} (Whisper, DNSMOS)")
        row["quality"] = scorer.score(sentences, audio, row["sample_rate"])


# -- files ------------------------------------------------------------------------------------------
def _plain(value):
    """JSON-safe: numpy scalars to Python, infinities to strings (JSON has none)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return "inf" if value > 0 else ("-inf" if value < 0 else None)
    if isinstance(value, Path):
        return str(value)
    return value


def dumps(results: dict) -> str:
    return json.dumps(_plain(results), indent=1, ensure_ascii=False) + "\n"


def load_results(path: Path) -> dict:
    """A results.json written by this benchmark (e.g. on another machine), for --compare."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not a results.json: {exc}") from exc
    if not isinstance(data, dict) or "contenders" not in data or data.get("schema") != SCHEMA:
        raise ValueError(f"{path} is not a results.json written by python -m benchmarks.run (schema {SCHEMA})")
    data["source"] = str(path)
    return data
