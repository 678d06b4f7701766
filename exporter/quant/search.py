"""``quantize --preset auto``: measure each unit's treatments alone, then combine the fastest that
stay inside a quality budget, and record every trial.

The budget (:class:`Budget`, each number with its reason in ``Budget.REASONS``), judged against
``model.onnx`` on built-in sentences that calibration never sees:

* the phonemes' durations at zero noise and five length scales (whenever a unit that decides durations
  is touched, and for the final plan): every phoneme within a frame of fp32's, few moved at all, every
  sentence's length within 1%;
* closeness at zero noise: log-mel distance (median over same-length sentences) and DTW mel-cepstral
  distortion;
* for every plan that computes in int8, and for the final plan, when the quality extras are installed
  (``pip install vits-edge[bench]``): DNSMOS OVRL and P.808 and DistillMOS within ``mos_tolerance`` of
  fp32's and Whisper's word error rate within ``wer_tolerance``, all on ``listen_seeds`` draws of the
  default noise per sentence, the same draws for fp32. Without them auto says so and judges on the rest.

Speed is fp32's time over the variant's on the same sentences, in rounds (each model runs every sentence
in a block, as the device runs them, the order swapped each round), repeated until the decision is clear
of the timing noise (``budget.Speed``): a treatment is kept only if it is faster than it must be with 95%
confidence; one the rounds cannot tell apart is not kept. The final plan is timed until its speed-up is
known to +-2% (at most 20 rounds), and if it is slower than fp32 it keeps only its weight storage. The
sidecar records the speed, its interval, the rounds and the CPU (and its int8 class) it was timed on.
Weight storage is not timed: onnxruntime folds it back to fp32 weights at load (exporter/quant/storage.py).

Each unit's treatments form a ladder, each rung adding error to the one before (fp16 weights, int8
weights, int8 activations on the convolutions, int8 on everything between them): a rung that breaks
the budget is not climbed past. That is what keeps the search to a few minutes.
"""


from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
from pathlib import Path

from exporter.quant.budget import JUDGE_SENTENCES, Budget, Comparison, _Listener, measure_speed, within
from exporter.quant.build import build
from exporter.quant.plans import COMPUTE, TRAINED, QuantConfig, machine_target, options_for
from exporter.quant.units import DURATION_UNITS, unit_names
from exporter.quant.variants import add_pieces, record
from runtime import contract, cpu

# What the sidecar keeps of a final trial (auto's and the fine-tuned preset's)
RECORDED = ("sentences", "same_length", "logmel_db", "mcd_db", "speed_vs_fp32", "speed_interval", "speed_rounds",
            "size_mb", "size_vs_fp32", "threads", "durations")
# The final plan is timed against fp32 until its speed-up is known to +-2% (95% interval), at most 20 rounds.
FINAL_PRECISION = 0.02


def _heard(scores: dict) -> str:
    parts = [f"WER {scores['wer']:.1%}"] if scores.get("wer") is not None else []
    parts += [f"DNSMOS {k.upper()} {scores[k]:.2f}" for k in ("ovrl", "p808") if k in scores]
    parts += [f"DistillMOS {scores['distillmos']:.2f}"] if "distillmos" in scores else []
    return ", ".join(parts)


def _line(row: dict) -> str:
    if row["step"] == "skipped":
        return f"  {row['step']:<9} {row['plan']:<58} {row['verdict']}"
    speed = "    -" if row.get("speed_vs_fp32") is None else f"{row['speed_vs_fp32']:5.2f}x"
    mel = "-" if row["logmel_db"] is None else f"{row['logmel_db']:.2f}"
    lengths = "-" if row["same_length"] is None else f"{row['same_length']}/{row['sentences']}"
    d = row.get("durations")
    scales = (f" (phonemes: {d['moved_share']:.1%} moved, at most {d['max_phoneme_frames']} frame(s))"
              if d else "")
    return (f"  {row['step']:<9} {row['plan']:<58} {speed}  mel {mel:>5} dB  len {lengths}{scales}  "
            f"size {row['size_vs_fp32']:.0%}" + (f"  [{_heard(row['heard'])}]" if "heard" in row else "")
            + f"  {row['verdict']}")


def search(voice_dir: Path, *, target: str | None = None, budget: Budget | None = None, threads: int = 2,
           listen: bool = True, report=print, timer=None, finetune=None) -> Path:
    """Write ``voice_dir/model.auto.onnx``: the fastest plan inside ``budget``, then the smallest.

    ``finetune`` (a ``FinetuneConfig``): decoder stages get a last rung, qdq+ fine-tuned against fp32; every plan
    holding it is trained before it is judged (minutes each: the default search stays without it).

    ``timer(plan)``, when given, stands in for one timed round of a plan (fp32's time over the plan's): the
    tests use it to show that timing noise does not change the plan."""
    import onnx

    budget = budget or Budget()
    voice_dir = Path(voice_dir)
    base = QuantConfig("auto", (), target=target or machine_target())
    units = unit_names(onnx.load(str(voice_dir / contract.MODEL_FILE), load_external_data=False))
    start = time.perf_counter()
    report(f"auto: judging on {len(JUDGE_SENTENCES)} sentences against fp32 at zero noise; budget {budget}")
    if base.target != machine_target():
        report(f"  note: speeds are measured on this {machine_target()} machine and stand in for {base.target}: "
               f"run the quantize command on the {base.target} device itself to choose by its own timings")
    judge = Judge(voice_dir, budget, threads=threads, listen=listen, report=report, timer=timer)
    tried = judge.tried

    with tempfile.TemporaryDirectory(prefix=".vits-edge-auto-", dir=voice_dir) as tmp:
        tmp = Path(tmp)
        cache = tmp / "ranges.json"

        def trial(plan, step, faster_than=None) -> dict:
            cfg = dataclasses.replace(base, plan=tuple(plan))
            path = tmp / "trial.onnx"
            build(voice_dir, cfg, path, cache)
            if any(option == TRAINED for _, option in plan):
                from exporter.quant.finetune import finetune as train
                from exporter.quant.finetune import voice_key

                key = finetune.key(cfg.describe(), voice_key(voice_dir))
                report(f"  fine-tuning {cfg.describe()} ({finetune.steps} steps)")
                train(voice_dir, path, cfg.describe(), finetune, work=tmp / "finetune" / key,
                      report=lambda line: report("  " + line))
            return judge.trial(path, cfg, step, faster_than)

        # 1. Every treatment of every unit on its own, up each unit's ladder while the rungs pass.
        report("1. each unit alone (everything else fp32):")
        alone: dict[tuple[str, str], dict] = {}
        for unit in units:
            for option, below in options_for(unit, finetune is not None):
                if below is not None and not alone[unit, below]["sound"]:
                    row = {"step": "skipped", "plan": f"{unit}={option}", "within_budget": False, "sound": False,
                           "verdict": f"skipped: {unit}={below} already breaks the budget"}
                    tried.append(row)
                    report(_line(row))
                    alone[unit, option] = row
                    continue
                # a rung that is sound but no faster is climbed past: the next rung may be faster
                alone[unit, option] = trial([(unit, option)], "alone", budget.min_speedup if option in COMPUTE else None)

        # 2. int8 compute: treatments that passed alone, the most speed per dB of log-mel first (a
        #    knapsack's greedy order: the budget is what they share); one treatment per unit, kept if
        #    the combination stays inside the budget and is faster than without it.
        report("2. int8 compute, most speed per dB first:")
        candidates = [(unit, option, row) for (unit, option), row in alone.items() if option in COMPUTE
                      and row["within_budget"]]
        candidates.sort(key=lambda c: -(c[2]["speed_vs_fp32"] - 1) / max(c[2]["logmel_db"] or 0.0, 0.1))
        plan: list[tuple[str, str]] = []
        speed = 1.0
        for unit, option, alone_row in candidates:
            if any(u == unit for u, _ in plan):
                continue
            # the first one is its own trial from step 1
            row = alone_row if not plan else trial(plan + [(unit, option)], "combine",
                                                   faster_than=speed * budget.min_speedup)
            if row["within_budget"]:
                plan.append((unit, option))
                speed = row["speed_vs_fp32"]

        # 3. Smaller weights for the units left in fp32 arithmetic: the most compact storage that passed
        #    alone, all at once (storage costs no speed); the final check holds them to the budget.
        for unit in units:
            if not any(u == unit for u, _ in plan):
                passed = [o for o in ("int8w", "fp16w") if alone.get((unit, o), {}).get("within_budget")]
                if passed:
                    plan.append((unit, passed[0]))

        #    The final plan: lengths at every length scale, log-mel, listening, and its speed to +-2%. A failure
        #    drops the last treatment added until one passes (an empty plan is fp32 itself); a plan slower than
        #    fp32 keeps only its weight storage, which runs fp32's kernels.
        report("3. final plan (+ weight storage for the units left in fp32):")
        while True:
            row = trial(plan, "final")
            if row["within_budget"] and row["speed_vs_fp32"] < 1.0 and any(o in COMPUTE for _, o in plan):
                report(f"  slower than fp32 ({row['speed_vs_fp32']:.2f}x): int8 compute dropped, weight storage kept")
                plan = [(u, o) for u, o in plan if o not in COMPUTE]
                continue
            if row["within_budget"] or not plan:
                break
            report(f"  dropping {plan[-1][0]}={plan[-1][1]} and trying again")
            plan.pop()
        cfg = dataclasses.replace(base, plan=tuple(plan))
        dst = voice_dir / "model.auto.onnx"
        shutil.move(str(tmp / "trial.onnx"), dst)
    measured = {k: row.get(k) for k in RECORDED}
    measured["timed_on"] = cpu.describe()  # the plan follows this machine's timings: its CPU class says for which
    measured["fp32_noise_moves"] = judge.comparison.phonemes.noise_moves() \
        if judge.comparison.phonemes else None
    measured.update(seconds=round(time.perf_counter() - start, 1), heard=row.get("heard"), fp32_heard=judge.reference)
    record(voice_dir, dst.name, {"config": dataclasses.asdict(cfg), "measured": measured,
                                  "budget": dataclasses.asdict(budget), "search": tried})
    low, high = measured["speed_interval"]
    report(f"auto chose: {cfg.describe()} -> {dst} ({measured['speed_vs_fp32']:.2f}x fp32, {low:.2f}-{high:.2f}x "
           f"over {measured['speed_rounds']} rounds on {measured['timed_on']['cpu']} "
           f"({measured['timed_on']['int8_class']}); {measured['size_vs_fp32']:.0%} of its size)")
    add_pieces(voice_dir, dst.name)
    return dst


class Judge:
    """A variant file against ``model.onnx`` under ``budget``: the trials of ``auto`` and the fine-tuned preset's
    verdict. fp32 is measured (and listened to) once; every trial is reported and kept in ``tried``."""

    def __init__(self, voice_dir: Path, budget: Budget, *, threads: int = 2, listen: bool = True, report=print,
                 timer=None):
        self.budget, self.report, self.timer = budget, report, timer
        self.comparison = Comparison(voice_dir, JUDGE_SENTENCES, threads=threads)
        self.listener = _Listener(threads) if listen else None
        self.reference = None
        self.rate = self.comparison.voice.sample_rate
        self.heard_texts = list(JUDGE_SENTENCES) * budget.listen_seeds
        if self.listener and self.listener.available:
            self.reference = self.listen(Path(voice_dir) / contract.MODEL_FILE)
            report(f"  fp32 heard ({budget.listen_seeds} draws of its default noise per sentence): "
                   f"{_heard(self.reference)}")
        if self.listener and self.listener.notes:
            report("  " + "; ".join(self.listener.notes) + ": judged without them")
        self.tried: list[dict] = []

    def listen(self, path: Path) -> dict:
        return self.listener.score(self.heard_texts, self.comparison.heard(path, self.budget.listen_seeds),
                                   self.rate, self.budget.listen_seeds)

    def trial(self, path: Path, cfg: QuantConfig, step: str, faster_than: float | None = None) -> dict:
        """Judge the variant ``path`` (made by ``cfg``). int8 compute is listened to (the log-mel bound misses
        the hiss int8 adds at the highest sample rate: 0.99 dB there cost 0.57 P.808, 0.83 dB in the middle
        stage and the flow 0.08). ``faster_than``: the speed it has to beat, clearly."""
        budget, plan = self.budget, cfg.plan
        computes = any(o in COMPUTE for _, o in plan)
        final = step == "final"
        measured = self.comparison.measure(path, timed=False, durations=final or any(
            u.startswith(DURATION_UNITS) for u, _ in plan))
        candidate = measured.pop("_voice")
        sound, why = within(measured, budget)  # the sound passed, fast enough or not
        ok = sound
        if sound and (computes or final):
            # weight storage alone runs fp32's kernels (exporter/quant/storage.py): only compute is timed
            one_round = (lambda: self.timer(tuple(plan))) if self.timer else (lambda: self.comparison.round(candidate))
            speed = measure_speed(one_round, threshold=faster_than, precision=FINAL_PRECISION if final else None,
                                  min_rounds=6 if final else 4, max_rounds=20 if final else 12)
            measured.update(speed.summary())
            if faster_than is not None:
                clear = speed.versus(faster_than)
                ok = clear is True
                low, high = speed.interval
                why = (f"{'faster' if ok else 'no faster' if clear is False else 'not clearly faster'} than "
                       f"{faster_than:.2f}x ({low:.2f}-{high:.2f}x over {len(speed.ratios)} rounds)")
        row = {"step": step, "plan": cfg.describe(), **measured}
        if ok and self.reference is not None and (computes or final):
            heard = self.listen(path)
            row["heard"] = heard
            ok, verdict = self.listener.verdict(self.reference, heard, budget)
            sound = ok
            why = f"{why}; {verdict}" if ok else verdict
        row.update(within_budget=ok, sound=sound, verdict=("kept: " if ok else "rejected: ") + why)
        self.tried.append(row)
        self.report(_line(row))
        return row
