"""report.md (one table: contenders as rows, ratios to the baseline as columns) and plot.png.

Also re-renders a report from a results.json, e.g. to show numbers measured elsewhere beside it:

    python -m benchmarks.report pi/results.json --compare x86/results.json --out pi/
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from benchmarks import arithmetic
from benchmarks import results as res
from benchmarks import sysinfo
from exporter.quant import report as variants_report

COLUMNS = ("contender", "model MB", "× size", "installed MB", "load s", "RTF median (min-max)", "× speed",
           "first audio ms", "peak RSS MB", "× RSS", "SNR dB", "log-mel dB", "MCD dB", "length changed", "WER %", "CER %",
           "DNSMOS OVRL", "P.808")


def _num(value, fmt: str = "{:.2f}") -> str:
    if value is None:
        return "-"
    if value == "inf" or (isinstance(value, float) and value == float("inf")):
        return "∞"
    if isinstance(value, str):
        return value
    return fmt.format(value)


def _scaled(value, factor: float):
    return None if value is None else value * factor


def _get(row: dict, *path):
    for key in path:
        if not isinstance(row, dict) or key not in row:
            return None
        row = row[key]
    return row


def table_row(row: dict, baseline: str | None) -> list[str]:
    rtf = _get(row, "speed", "rtf")
    fid = row.get("fidelity") or {}
    is_ref = fid.get("is_reference")
    wer, cer = _get(row, "quality", "wer"), _get(row, "quality", "cer")
    label = f"**{row['label']}**" if row["key"] == baseline else row["label"]
    return [
        label,
        _num(_scaled(row.get("model_bytes"), 1e-6), "{:.1f}"),
        _num(row.get("model_bytes_vs_baseline"), "{:.2f}"),
        _num(_scaled(row.get("installed_bytes"), 1e-6), "{:.0f}"),
        _num(row.get("load_s"), "{:.2f}"),
        f"{rtf['median']:.3f} ({rtf['min']:.3f}-{rtf['max']:.3f})" if rtf else "-",
        _num(_get(row, "speedup_vs_baseline", "median"), "{:.2f}"),
        _num(_scaled(_get(row, "ttfa_s", "median"), 1000), "{:.0f}"),
        _num(row.get("peak_rss_mb"), "{:.0f}"),
        _num(row.get("peak_rss_mb_vs_baseline"), "{:.2f}"),
        "reference" if is_ref else _num(_get(fid, "snr_db", "median"), "{:.1f}"),
        "reference" if is_ref else _num(_get(fid, "logmel_db", "median"), "{:.3f}"),
        "reference" if is_ref else _num(_get(fid, "mcd_db", "median"), "{:.2f}"),
        "reference" if is_ref else (f"{fid['changed_length']}/{fid['sentences']}" if "sentences" in fid else "-"),
        _num(_scaled(wer, 100), "{:.1f}"),
        _num(_scaled(cer, 100), "{:.1f}"),
        _num(_get(row, "quality", "dnsmos", "ovrl"), "{:.2f}"),
        _num(_get(row, "quality", "dnsmos", "p808"), "{:.2f}"),
    ]


def table(results: dict) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in results["contenders"]:
        if row.get("status") == "ok" and "speed" in row:
            lines.append("| " + " | ".join(table_row(row, results.get("baseline"))) + " |")
    return "\n".join(lines)


def _label(results: dict, key: str | None) -> str:
    row = next((r for r in results["contenders"] if r["key"] == key), None)
    return row["label"] if row else str(key)


def _yardstick(results: dict) -> str:
    mcd = results.get("mcd_noise_yardstick_db")
    if not mcd:
        return ""
    return (f" Yardstick: the reference with its default noise instead of zero noise is {mcd['median']:.1f} dB "
            "MCD from itself.")


def _busy(results: dict) -> list[str]:
    share = results.get("other_work_share")
    if share is None or share < 0.05:
        return []
    rounds = ", ".join(f"{100 * x:.0f}%" for x in results.get("other_work_share_per_round") or [] if x is not None)
    return [f"**Other processes used {100 * share:.0f}% of the CPU while this was measured"
            + (f" (per round: {rounds})" if rounds else "") + ": timings are noisier than usual; the paired "
            "× speed ratios suffer least.**", ""]


def _limit(results: dict) -> list[str]:
    if not (results.get("limit") or {}).get("rows"):
        return []
    labels = {r["key"]: r["label"] for r in results["contenders"]}
    return [*arithmetic.markdown(results["limit"], labels), ""]


def markdown(results: dict, compared: list[dict] = ()) -> str:
    s = results["settings"]
    machine = results.get("machine", {})
    versions = ", ".join(f"{k} {v}" for k, v in machine.get("versions", {}).items() if v)
    out = [
        "# vits-edge benchmark",
        "",
        f"Voice `{s['voice']}`, {len(results['sentences'])} sentences, {s['threads']} threads, {s['rounds']} timed "
        f"rounds{' (--quick)' if s.get('quick') else ''}; measured {results.get('started', '')} in "
        f"{results.get('wall_s', 0):.0f} s on {sysinfo.describe(machine)}.",
        "",
        f"`{results.get('command', '')}`" + (f" at commit `{results['git']}`" if results.get("git") else ""),
        "",
        table(results),
        "",
        *_busy(results),
        *_limit(results),
        "## How to read it",
        "",
        f"- × columns are ratios to **{_label(results, results.get('baseline'))}**: × speed is its RTF over "
        "the row's "
        "for the same sentence in the same round, median over all of them (above 1 is faster; per-round ratios are "
        "in results.json); × size and × RSS are the row's over its.",
        "- RTF = synthesis time / audio duration for all sentences of a round (voice's default noise), median and "
        "range over rounds after a warm-up. Contenders take turns, one block of all sentences each per round, in rotating order. Per-sentence "
        "RTFs are in results.json.",
        "- First audio: a paragraph of five sentences in, first sentence of audio out (median of repeats); how "
        "each contender gets there is listed below.",
        "- Load s: model load after imports (imports are in results.json). Peak RSS: the contender's own process.",
        f"- Fidelity: identical ids, zero noise, against **{_label(results, results.get('reference'))}**. SNR where "
        "the length is unchanged, and log-mel = mean absolute difference of the log-mel spectrograms (both "
        "medians over those sentences); MCD = mel-cepstral distortion (13 coefficients, "
        "spectra floored 60 dB below the reference's peak) after DTW alignment, median over all sentences; length "
        "changed = outputs whose sample count differs."
        + _yardstick(results),
        "- WER/CER: Whisper tiny.en (faster-whisper, int8) against the input text, numbers spelled out on both sides. "
        "Differences of a few words are noise. DNSMOS (speechmos) on 16 kHz audio: OVRL and P.808 MOS, higher is "
        "better. Both on round 1's audio with the default noise.",
        f"- Token ids: {s.get('frontend')}.",
        f"- Versions: {versions}.",
    ]
    notes = [(r["label"], r.get("note")) for r in results["contenders"] if r.get("status") == "ok" and r.get("note")]
    ttfa = [(r["label"], r.get("ttfa_note")) for r in results["contenders"] if r.get("ttfa_note")]
    if notes or ttfa:
        out += ["", "## Contenders", ""]
        out += [f"- {label}: {note}" for label, note in notes]
        out += [f"- {label}, first audio: {note}" for label, note in ttfa]
    variants = results.get("variants")
    if variants:
        out += ["", "## How the variants were judged when they were made", "",
                "What `python -m exporter quantize` measured and recorded in the voice's sidecar (the listener budget: "
                "[docs/int8.md](../int8.md)); its speeds are its own timings, on the judged sentences, not this run's.",
                "", variants_report.markdown(variants["header"], variants["rows"]), "", variants["note"]]
        if variants.get("search"):
            out += ["", "Every plan `auto` tried, in its own words:", "", variants["search"]]
    missing = [(r["label"], "failed: " + r.get("note", "")) for r in results["contenders"] if r.get("status") != "ok"]
    missing += [(r["label"], "skipped: " + r["reason"]) for r in results.get("skipped", [])]
    missing += [("quality", note) for note in results.get("quality_notes", [])]
    if missing:
        out += ["", "## Not measured", ""] + [f"- {label}: {why}" for label, why in missing]
    for other in compared:
        out += ["", f"## Measured elsewhere: {other.get('source')}", "",
                f"{sysinfo.describe(other.get('machine', {}))}, {other['settings'].get('threads')} threads, "
                f"{other.get('started', '')}; ratios to its own {_label(other, other.get('baseline'))}.", "",
                f"`{other.get('command', '')}`", "", table(other)]
    return "\n".join(out) + "\n"


def plot(results: dict, path: Path) -> Path | None:
    """Speed against quality and against size, one point per contender."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    rows = [r for r in results["contenders"] if r.get("status") == "ok" and _get(r, "speed", "rtf")]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5))
    quality_key = "DNSMOS OVRL" if any(_get(r, "quality", "dnsmos") for r in rows) else None
    markers = "o s D ^ v P X *".split()
    for i, r in enumerate(rows):
        style = {"color": f"C{i % 10}", "marker": markers[i % len(markers)], "s": 50, "label": r["key"]}
        rtf = r["speed"]["rtf"]["median"]
        y = _get(r, "quality", "dnsmos", "ovrl") if quality_key else None
        if y is not None:
            left.scatter(rtf, y, **style)
        right.scatter((r.get("model_bytes") or 0) / 1e6, rtf, **style)
    right.legend(fontsize=8, loc="best")
    left.set_xlabel("real-time factor (lower is faster)")
    left.set_ylabel("DNSMOS OVRL (higher is better)" if quality_key else "(quality not measured)")
    left.set_title("speed against quality")
    right.set_xlabel("model file size, MB")
    right.set_ylabel("real-time factor (lower is faster)")
    right.set_title("speed against size")
    for ax in (left, right):
        ax.grid(True, alpha=0.3)
    s = results["settings"]
    fig.suptitle(f"{Path(s['voice']).name}: {s['threads']} threads, {sysinfo.describe(results.get('machine', {}))}",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a report is for reading
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_all(results: dict, out: Path, compared: list[dict] = ()) -> list[Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results_path, report_path = out / "results.json", out / "report.md"
    _atomic_write(results_path, res.dumps(results).encode("utf-8"))
    _atomic_write(report_path, markdown(results, compared).encode("utf-8"))
    written = [report_path, results_path]
    plot_path = plot(results, out / "plot.png")
    if plot_path:
        written.append(plot_path)
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", type=Path, help="results.json written by python -m benchmarks.run")
    p.add_argument("--compare", type=Path, action="append", default=[], help="results.json measured elsewhere")
    p.add_argument("--out", type=Path, help="report folder (default: the results.json's folder)")
    args = p.parse_args(argv)
    try:
        results = res.load_results(args.results)
        compared = [res.load_results(path) for path in args.compare]
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    results.pop("source", None)
    for path in write_all(results, args.out or args.results.parent, compared):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
