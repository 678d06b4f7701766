"""``python -m benchmarks.run``: PyTorch fp32 against ONNX fp32, int8 and the runtimes people use today.

    python -m benchmarks.run --voice build/demo/voice --threads 2 --out build/bench
    python -m benchmarks.run --voice build/demo/voice --quick --out build/bench-quick

Every contender speaks the same sentences from the same token ids with the same thread count, in
its own process. Contenders take turns within each round, each speaking all sentences in one
block, in an order that rotates from round to round, so a machine that drifts between a fast and
a slow state affects them alike; the report quotes medians and per-round ratios. Writes REPORT_DIR/report.md, results.json and plot.png.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from benchmarks import contenders as cs
from benchmarks import arithmetic, progress, report, sysinfo
from benchmarks import results as res
from benchmarks.worker import Worker, WorkerError, run_in_process
from exporter.quant import report as variants_report
from runtime.config import FP32
from runtime.voice import Voice

logger = logging.getLogger("benchmarks")

SENTENCES = Path(__file__).with_name("sentences.txt")
PARAGRAPH_SENTENCES = 5  # time to first audio is measured on a paragraph of this many sentences


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--voice", type=Path, required=True, help="exported voice folder (model.onnx + model.onnx.json, "
                   "and any model.*.onnx variants)")
    p.add_argument("--out", type=Path, required=True, help="report folder (report.md, results.json, plot.png)")
    p.add_argument("--text-file", type=Path, default=SENTENCES, help="one sentence a line (default: %(default)s)")
    p.add_argument("--threads", type=int, default=2, help="threads for every contender (default: %(default)s)")
    p.add_argument("--quick", action="store_true", help="5 sentences, 2 rounds: a smoke run (under 2 minutes)")
    p.add_argument("--rounds", type=int, help="timed rounds over all sentences (default: 5, or 2 with --quick)")
    p.add_argument("--checkpoint-dir", type=Path, help="Coqui checkpoint (config.json + model.pth) for the PyTorch "
                   "rows (default: VOICE/../coqui, the layout make demo writes, or VOICE/coqui)")
    p.add_argument("--piper-voice", default="auto", help="the Piper VOICE.onnx the voice came from, for the "
                   "piper-tts and sherpa-onnx rows; 'auto' (default): the built-in voice when it is this one; 'none'")
    p.add_argument("--only", help="comma-separated contender keys to run (e.g. ort-fp32,pytorch-fp32)")
    p.add_argument("--compare", type=Path, action="append", default=[],
                   help="a results.json measured elsewhere (e.g. with PyTorch, on another machine) to show beside")
    p.add_argument("--skip-quality", action="store_true", help="skip ASR and DNSMOS (speed, size, fidelity only)")
    p.add_argument("--docs", action="store_true", help="also write the report to docs/measured/benchmark.md (the "
                   "documentation's table: commit it)")
    p.add_argument("--debug", action="store_true", help="show debug logs")
    return p


def read_sentences(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as exc:
        raise cs.BenchmarkError(f"text file {path} not found") from exc
    sentences = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not sentences:
        raise cs.BenchmarkError(f"{path} has no sentences (one a line)")
    return sentences


class Bench:
    """One benchmark run: start the workers, alternate them through the rounds, collect raw numbers."""

    def __init__(self, args, sentences, ids, symbols, workdir: Path, show: progress.Progress):
        self.args, self.sentences, self.ids, self.symbols = args, sentences, ids, symbols
        self.workdir, self.show = workdir, show
        self.workers: dict[str, Worker] = {}
        self.rows: dict[str, dict] = {}
        self.other_work_per_round: list[float | None] = []

    def spec(self, c: cs.Contender) -> dict:
        return {"key": c.key, "kind": c.kind, "threads": self.args.threads, "ids": self.ids,
                "symbols": self.symbols, "paragraph": " ".join(self.sentences[:PARAGRAPH_SENTENCES]),
                "paragraph_sentences": min(PARAGRAPH_SENTENCES, len(self.sentences)),
                "log": str(self.workdir / f"{c.key}.log"), **c.params}

    def fail(self, key: str, error: Exception) -> None:
        logger.warning("%s failed: %s", key, error)
        self.rows[key]["status"] = "failed"
        self.rows[key]["note"] = str(error)
        worker = self.workers.pop(key, None)
        if worker is not None:
            worker.close()

    def start(self, contenders: list[cs.Contender]) -> None:
        for c in contenders:
            self.rows[c.key] = {"key": c.key, "label": c.label, "kind": c.kind, "status": "ok", "note": c.note}
            try:
                if c.prepare is not None:
                    self.show.phase(f"preparing {c.key}")
                    target, *prepare_args = c.prepare
                    run_in_process(target, *prepare_args, self.args.threads,
                                   log=str(self.workdir / f"{c.key}-prepare.log"))
                self.show.phase(f"loading {c.key}")
                worker = Worker(self.spec(c))
            except (WorkerError, OSError) as exc:
                self.fail(c.key, exc)
                continue
            self.workers[c.key] = worker
            self.rows[c.key].update({k: worker.ready[k] for k in ("import_s", "load_s", "sample_rate",
                                                                  "rss_after_load_mb", "ttfa_note")})

    def _each(self, order_seed: int):
        keys = list(self.workers)
        shift = order_seed % max(len(keys), 1)
        return keys[shift:] + keys[:shift]

    def _ask(self, key: str, op: str, **kwargs) -> dict | None:
        if key not in self.workers:
            return None
        try:
            return self.workers[key].ask(op, **kwargs)
        except WorkerError as exc:
            self.fail(key, exc)
            return None

    def warm_up(self, count: int) -> None:
        for i in range(min(count, len(self.ids))):
            for key in self._each(i):
                self.show.step(f"warm-up {key}")
                self._ask(key, "synth", index=i, noise=True)

    def rounds(self, rounds: int) -> dict[str, dict]:
        """Each round speaks every sentence once with every contender, in rotating order."""
        def grid():
            return [[None] * len(self.ids) for _ in range(rounds)]

        raw = {key: {"seconds": grid(), "cpu_seconds": grid(), "samples": grid(), "audio": [None] * len(self.ids)}
               for key in self.workers}
        for r in range(rounds):
            other = sysinfo.OtherWork(lambda: [w.process.pid for w in self.workers.values()])
            # One contender at a time speaks all sentences: onnxruntime's idle threads spin for a while
            # after each run, and interleaving processes sentence by sentence let those spinning threads
            # steal the next contender's cores (measured: static int8 1.08x instead of 1.6x fp32 speed).
            for key in self._each(r):
                for i in range(len(self.ids)):
                    self.show.step(f"round {r + 1}/{rounds}, sentence {i + 1}/{len(self.ids)}: {key}")
                    reply = self._ask(key, "synth", index=i, noise=True, audio=(r == 0))
                    if reply is not None:
                        for what in ("seconds", "cpu_seconds", "samples"):
                            raw[key][what][r][i] = reply[what]
                        if r == 0:
                            raw[key]["audio"][i] = reply["audio"]
            self.other_work_per_round.append(other.share())
        return raw

    def first_audio(self, reps: int) -> dict[str, list[float]]:
        times: dict[str, list[float]] = {key: [] for key in self.workers}
        for rep in range(reps):
            for key in self._each(rep):
                self.show.step(f"time to first audio {rep + 1}/{reps}: {key}")
                reply = self._ask(key, "first")
                if reply is not None:
                    times[key].append(reply["seconds"])
        return times

    def peak_rss(self) -> None:
        for key in list(self.workers):
            reply = self._ask(key, "rss")
            if reply is not None:
                self.rows[key]["peak_rss_mb"] = reply["peak_rss_mb"]

    def zero_noise(self) -> dict[str, list]:
        """Identical ids, zero noise: the fidelity pass (after peak memory was read)."""
        audio: dict[str, list] = {}
        for key in list(self.workers):
            out = []
            for i in range(len(self.ids)):
                self.show.step(f"zero-noise pass, sentence {i + 1}/{len(self.ids)}: {key}")
                reply = self._ask(key, "synth", index=i, noise=False, audio=True)
                if reply is None:
                    break
                out.append(reply["audio"])
            if key in self.workers:
                audio[key] = out
        return audio

    def close(self) -> None:
        for worker in self.workers.values():
            worker.close()
        self.workers.clear()


def zero_noise_feeds(voice_dir: Path, ids: list[list[int]]) -> tuple[list[dict], int]:
    """The fp32 graph's inputs for each sentence's ids at zero noise (for counting its arithmetic), and the voice's
    sample rate."""
    voice = Voice.load(voice_dir, variant=FP32, threads=1)
    resolved = voice.resolve(noise_scale=0.0, noise_w=0.0)
    return [resolved.feeds(x) for x in ids], voice.sample_rate


def measure(args, argv: list[str]) -> dict:
    started, t0 = datetime.now(timezone.utc), time.perf_counter()
    sentences = read_sentences(args.text_file)
    if args.quick:
        sentences = sentences[:PARAGRAPH_SENTENCES]
    rounds = args.rounds or (2 if args.quick else 5)
    warm = 1 if args.quick else 3  # warm-up sentences per contender
    ttfa_reps = 2 if args.quick else 5
    sidecar = cs.read_sidecar(args.voice)
    checkpoint = cs.find_checkpoint(args.voice, args.checkpoint_dir)
    show = progress.Progress()
    show.phase("text to ids")
    ids, frontend = cs.reference_ids(args.voice, sentences)
    if not all(ids):
        for sentence in (s for s, x in zip(sentences, ids) if not x):
            logger.warning("nothing this voice can say in %r; left out", sentence)
        sentences, ids = [s for s, x in zip(sentences, ids) if x], [x for x in ids if x]
        if not sentences:
            raise cs.BenchmarkError(f"{args.text_file}: the voice can say none of these sentences")
    symbols = [cs.ids_to_symbols(x, sidecar["tokenizer"]) for x in ids]
    piper_voice, piper_reason = cs.find_piper_voice(args.piper_voice, args.voice, ids[0], symbols[0])

    with tempfile.TemporaryDirectory(prefix="vits-edge-bench-") as tmp:
        workdir = Path(tmp)
        run, skipped = cs.plan(args.voice, checkpoint, piper_voice, piper_reason, sidecar, workdir)
        if args.only:
            wanted = {k.strip() for k in args.only.split(",") if k.strip()}
            known = {c.key for c in run} | {s.key for s in skipped}
            if wanted - known:
                raise cs.BenchmarkError(f"--only: unknown contender {', '.join(sorted(wanted - known))}; "
                                        f"known here: {', '.join(sorted(known))}")
            run = [c for c in run if c.key in wanted]
        bench = Bench(args, sentences, ids, symbols, workdir, show)
        other = sysinfo.OtherWork()
        try:
            bench.start(run)
            if not bench.workers:
                why = "; ".join(f"{key}: {row.get('note')}" for key, row in bench.rows.items()) or "none to run here"
                raise cs.BenchmarkError(f"no contender could start ({why})")
            n = len(sentences)
            show.total(len(bench.workers) * (warm + rounds * n + ttfa_reps + n))
            bench.warm_up(warm)
            raw = bench.rounds(rounds)
            ttfa = bench.first_audio(ttfa_reps)
            bench.peak_rss()
            zero = bench.zero_noise()
        finally:
            show.phase("stopping the workers")
            bench.close()
        other_work = other.share()
        show.phase("sizes on disk")
        sizes = {c.key: res.sizes(c) for c in run}
    show.phase("fidelity to the reference")

    results = res.assemble(
        rows=bench.rows, raw=raw, ttfa=ttfa, zero=zero, sizes=sizes, skipped=skipped, sentences=sentences,
        settings={"voice": str(args.voice), "checkpoint_dir": str(checkpoint) if checkpoint else None,
                  "piper_voice": str(piper_voice) if piper_voice else None, "threads": args.threads,
                  "rounds": rounds, "warm_up_sentences": warm, "ttfa_repeats": ttfa_reps, "quick": args.quick,
                  "frontend": frontend, "text_file": str(args.text_file),
                  "paragraph": " ".join(sentences[:PARAGRAPH_SENTENCES])},
    )
    if not args.skip_quality:
        res.score(results, raw, sentences, args.threads, show)
    show.phase("arithmetic per second of audio, and this machine's peak")
    feeds, rate = zero_noise_feeds(args.voice, ids)
    results["limit"] = arithmetic.limits(results["contenders"], feeds, rate, args.threads)
    results["machine"] = sysinfo.machine()
    results["git"] = sysinfo.git_revision(Path(__file__).resolve().parent.parent)
    results["other_work_share"] = other_work  # CPU other processes used while we timed, share of all cores
    results["other_work_share_per_round"] = bench.other_work_per_round
    results["command"] = "python -m benchmarks.run " + " ".join(shlex.quote(a) for a in argv)
    results["started"] = started.isoformat(timespec="seconds")
    results["wall_s"] = time.perf_counter() - t0
    header, rows, note = variants_report.columns(args.voice)  # how quantize judged each variant (the sidecar's record)
    results["variants"] = {"header": header, "rows": rows, "note": note,
                           "search": variants_report.search_table(args.voice)}
    show.done()
    return results


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO, format="%(message)s")
    for noisy in ("TTS", "trainer", "coqpit", "fsspec", "faster_whisper", "numba", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.threads < 1:
        print("error: --threads must be at least 1", file=sys.stderr)
        return 2
    try:
        compared = [res.load_results(path) for path in args.compare]
        results = measure(args, argv)
        written = report.write_all(results, args.out, compared)
        if args.docs:
            written.append(res.publish("benchmark", report.markdown(results, compared), argv))
    except (cs.BenchmarkError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
