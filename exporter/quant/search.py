"""``quantize --preset auto``: measure each unit's treatments alone, then combine the fastest that
stay inside a quality budget, and record every trial.

The budget (defaults in :class:`Budget`), judged against ``model.onnx`` at zero noise on built-in
sentences that calibration never sees:

* the phonemes' durations (at five length scales, whenever a unit that decides durations is touched,
  and for the final plan): every phoneme within a frame of fp32's, few moved at all, every sentence's
  length within 1% (``Budget.REASONS`` says why each number);
* log-mel distance to fp32 (median over same-length sentences) at most ``max_logmel_db``;
* for every plan that computes in int8, and for the final plan, when the quality extras are installed
  (``pip install vits-edge[bench]``): DNSMOS OVRL and P.808 within ``mos_tolerance`` of fp32's and a
  Whisper word error rate no worse than fp32's. Without them auto says so and judges on the rules above.

Speed is the variant's time over fp32's on the same sentences, the two taking turns in blocks in one
process, run as the device runs them. Gains under ``min_speedup`` are timing noise and buy nothing.
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

from exporter.quant.budget import JUDGE_SENTENCES, Budget, Comparison, _Listener, within
from exporter.quant.build import build
from exporter.quant.plans import COMPUTE, QuantConfig, machine_target, options_for
from exporter.quant.units import DURATION_UNITS, unit_names
from exporter.quant.variants import add_pieces, record
from runtime import contract


def _heard(scores: dict) -> str:
    parts = [f"WER {scores['wer']:.1%}"] if scores.get("wer") is not None else []
    parts += [f"DNSMOS {k.upper()} {scores[k]:.2f}" for k in ("ovrl", "p808") if k in scores]
    parts += [f"DistillMOS {scores['distillmos']:.2f}"] if "distillmos" in scores else []
    return ", ".join(parts)


def _line(row: dict) -> str:
    if row["step"] == "skipped":
        return f"  {row['step']:<9} {row['plan']:<58} {row['verdict']}"
    speed = "    -" if row["speed_vs_fp32"] is None else f"{row['speed_vs_fp32']:5.2f}x"
    mel = "-" if row["logmel_db"] is None else f"{row['logmel_db']:.2f}"
    lengths = "-" if row["same_length"] is None else f"{row['same_length']}/{row['sentences']}"
    d = row.get("durations")
    scales = (f" (phonemes: {d['moved_share']:.1%} moved, at most {d['max_phoneme_frames']} frame(s))"
              if d else "")
    return (f"  {row['step']:<9} {row['plan']:<58} {speed}  mel {mel:>5} dB  len {lengths}{scales}  "
            f"size {row['size_vs_fp32']:.0%}" + (f"  [{_heard(row['heard'])}]" if "heard" in row else "")
            + f"  {row['verdict']}")


def search(voice_dir: Path, *, target: str | None = None, budget: Budget | None = None, threads: int = 2,
           listen: bool = True, report=print) -> Path:
    """Write ``voice_dir/model.auto.onnx``: the fastest plan inside ``budget``, then the smallest."""
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
    comparison = Comparison(voice_dir, JUDGE_SENTENCES, threads=threads, repeats=4)
    listener = _Listener(threads) if listen else None
    reference = None
    if listener and listener.available:
        reference = listener.score(JUDGE_SENTENCES, comparison.reference, comparison.voice.sample_rate)
        report(f"  fp32 heard: {_heard(reference)}")
    if listener and listener.notes:
        report("  " + "; ".join(listener.notes) + ": judged without them")
    tried: list[dict] = []

    with tempfile.TemporaryDirectory(prefix=".vits-edge-auto-", dir=voice_dir) as tmp:
        tmp = Path(tmp)
        cache = tmp / "ranges.json"

        def trial(plan, step, faster_than=None) -> dict:
            """Build and judge one plan. int8 compute is listened to (the log-mel bound misses the
            hiss int8 adds at the highest sample rate: 0.99 dB there cost 0.57 P.808, 0.83 dB in
            the middle stage and the flow 0.08). ``faster_than``: the speed it has to beat."""
            cfg = dataclasses.replace(base, plan=tuple(plan))
            path = tmp / "trial.onnx"
            build(voice_dir, cfg, path, cache)
            computes = any(o in COMPUTE for _, o in plan)
            measured = comparison.measure(path, timed=computes or step == "final", durations=step == "final" or any(
                u.startswith(DURATION_UNITS) for u, _ in plan))
            audio = measured.pop("_audio")
            sound, why = within(measured, budget)  # the sound passed, fast enough or not
            ok = sound
            if ok and faster_than is not None:
                ok = measured["speed_vs_fp32"] >= faster_than
                why = f"{'faster' if ok else 'no faster'} than {faster_than:.2f}x"
            row = {"step": step, "plan": cfg.describe(), **measured}
            if ok and reference is not None and (computes or step == "final"):
                heard = listener.score(JUDGE_SENTENCES, audio, comparison.voice.sample_rate)
                row["heard"] = heard
                ok, verdict = listener.verdict(reference, heard, budget)
                sound = ok
                why = f"{why}; {verdict}" if ok else verdict
            row.update(within_budget=ok, sound=sound, verdict=("kept: " if ok else "rejected: ") + why)
            tried.append(row)
            report(_line(row))
            return row

        # 1. Every treatment of every unit on its own, up each unit's ladder while the rungs pass.
        report("1. each unit alone (everything else fp32):")
        alone: dict[tuple[str, str], dict] = {}
        for unit in units:
            for option, below in options_for(unit):
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

        #    The final plan: lengths at every length scale, log-mel, listening. A failure drops the last
        #    treatment added until one passes (an empty plan is fp32 itself).
        report("3. final plan (+ weight storage for the units left in fp32):")
        while True:
            row = trial(plan, "final")
            if row["within_budget"] or not plan:
                break
            report(f"  dropping {plan[-1][0]}={plan[-1][1]} and trying again")
            plan.pop()
        cfg = dataclasses.replace(base, plan=tuple(plan))
        dst = voice_dir / "model.auto.onnx"
        shutil.move(str(tmp / "trial.onnx"), dst)
    measured = {k: row.get(k) for k in ("sentences", "same_length", "logmel_db", "mcd_db", "speed_vs_fp32", "size_mb",
                                        "size_vs_fp32", "threads", "durations")}
    measured["fp32_noise_moves"] = comparison.phonemes.noise_moves() \
        if comparison.phonemes else None
    measured.update(seconds=round(time.perf_counter() - start, 1), heard=row.get("heard"), fp32_heard=reference)
    record(voice_dir, dst.name, {"config": dataclasses.asdict(cfg), "measured": measured,
                                  "budget": dataclasses.asdict(budget), "search": tried})
    report(f"auto chose: {cfg.describe()} -> {dst} ({measured['speed_vs_fp32']:.2f}x fp32, "
           f"{measured['size_vs_fp32']:.0%} of its size)")
    add_pieces(voice_dir, dst.name)
    return dst
