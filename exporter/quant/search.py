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
With ``target`` "pi4" or "pi5" the speeds are not timed here but estimated for that Raspberry Pi from the
instructions its core executes, counted under emulation (exporter/pi/estimate.py: one exact ratio per plan, at
one thread, where counts repeat exactly); everything else is judged as above.

A decoder stage is a coarse unit: when its whole int8 form (qdq+) breaks the sound rules, its quantized tensors
are ranked by what leaving each in fp32 gives back (sensitivity.py, a second a tensor) and only a few plans are
tried and listened to: qdq+ with the worst 2, 4 or 8 tensors in fp32 (``FINER_KEEP``). The ranking goes into
the sidecar (``measured.rankings``), the tensors into the plan (``config.keep_fp32``).

Each unit's treatments form a ladder, each rung adding error to the one before (fp16 weights, int8
weights, int8 activations on the convolutions, int8 on everything between them): a rung that breaks
the budget is not climbed past. That is what keeps the search to a few minutes.
"""


from __future__ import annotations

import dataclasses
import time
from datetime import datetime, timezone
from pathlib import Path

import onnx

from exporter.io import publish, staging
from exporter.pi import estimate
from exporter.quant.budget import JUDGE_SENTENCES, Budget
from exporter.quant.build import build
from exporter.quant.finetune import FinetuneConfig, finetune, voice_key
from exporter.quant.judge import Judge, Trial
from exporter.quant.plans import COMPUTE, PI_TARGETS, TRAINED, QuantConfig, check_target, machine_target, options_for
from exporter.quant.sensitivity import Ranker, Ranking
from exporter.quant.units import unit_names
from exporter.quant.variants import add_pieces, make_default, record
from runtime import contract, cpu

FINER_KEEP = (2, 4, 8)  # tensors of a stage kept in fp32, tried in turn (each trial listened to: about a minute)


def refine(voice_dir: Path, units: list[str], alone: dict, kept: dict, trial, judge: Judge, tmp: Path, *,
           min_speedup: float, threads: int, report) -> list[Ranking]:
    """Step 1b of the search: for each decoder stage whose int8 weights passed but whose fullest int8 form
    (qdq+: the int8 chains that buy the speed) broke the sound rules or was not tried, rank its quantized tensors and
    try qdq+ with the worst ``FINER_KEEP`` of them in fp32, fewest first, until one passes (it takes qdq+'s place in
    ``alone``, its tensors in ``kept``) or one passes the ear but is no faster (more in fp32 cannot be faster). A
    stage whose whole qdq+ form is not clearly faster than fp32 is not ranked: no part of it can be faster.
    Returns the rankings."""
    rankings = []
    ranker = None
    for unit in units:
        weights = alone.get((unit, "int8w"))
        if not unit.startswith("decoder.") or unit == "decoder.post" or weights is None or not weights.within_budget:
            continue
        option = "qdq+"
        if (unit, option) in alone and alone[unit, option].sound:  # it passed, or sounded right and was no faster
            continue
        whole = QuantConfig("rank", ((unit, option),))
        build(voice_dir, whole, tmp / "rank.onnx", tmp / "ranges.json")
        # the stage all in int8 is the fastest it can be: keeping tensors in fp32 only adds Q/DQ and fp32 work
        ceiling = judge.speed(tmp / "rank.onnx", whole, min_speedup)
        if ceiling.versus(min_speedup) is not True:
            report(f"  {unit}={option} whole is not clearly faster than {min_speedup:.2f}x fp32 "
                   f"({ceiling.value:.2f}x): no finer plan of it can be; not ranked")
            continue
        ranker = ranker or Ranker(voice_dir, threads)
        ranking = ranker.rank(tmp / "rank.onnx", unit, option, report=report)
        rankings.append(ranking)
        report("    worst: " + ", ".join(f"{name} {gain:+.3f} dB" for name, gain in ranking.gains[:4]))
        for count in FINER_KEEP:
            if count >= len(ranking.gains):
                break
            kept[unit, option] = ranking.top(count)
            row = trial([(unit, option)], "finer", min_speedup)
            if row.within_budget:
                alone[unit, option] = row
                break
            del kept[unit, option]
            if row.sound:  # it passed the ear and was no faster: more fp32 is slower still
                break
    return rankings


def search(voice_dir: Path, *, target: str | None = None, budget: Budget | None = None, threads: int = 2,
           listen: bool = True, report=print, timer=None, finetune_cfg: FinetuneConfig | None = None) -> Path:
    """Write ``voice_dir/model.auto.onnx``: the fastest plan inside ``budget``, then the smallest.

    ``finetune_cfg``: decoder stages get a last rung, qdq+ fine-tuned against fp32; every plan
    holding it is trained before it is judged (minutes each: the default search stays without it).

    ``timer(plan)``, when given, stands in for one timed round of a plan (fp32's time over the plan's): the
    tests use it to show that timing noise does not change the plan."""
    budget = budget or Budget()
    voice_dir = Path(voice_dir)
    base = QuantConfig("auto", (), target=check_target(target))
    units = unit_names(onnx.load(str(voice_dir / contract.MODEL_FILE), load_external_data=False))
    start = time.perf_counter()
    report(f"auto: judging on {len(JUDGE_SENTENCES)} sentences against fp32 at zero noise; budget {budget}")
    estimator = None
    if base.target in PI_TARGETS:
        estimator = estimate.PiSpeed(voice_dir, base.target, log=report)
        report(f"  speeds: estimated for a {estimator.core.board} ({estimator.core.name}, {estimator.threads} "
               f"thread) from instructions counted under emulation, not timed here (fp32: RTF "
               f"{estimator.fp32.rtf(estimator.threads):.3f}, an emulation estimate)")
    elif base.target != machine_target():
        report(f"  note: speeds are measured on this {machine_target()} machine and stand in for {base.target}: "
               f"run the quantize command on the {base.target} device itself to choose by its own timings")
    judge = Judge(voice_dir, budget, threads=threads, listen=listen, report=report, timer=timer, estimator=estimator)

    with staging(voice_dir / "model.auto.onnx") as tmp:
        cache = tmp / "ranges.json"

        kept: dict[tuple[str, str], tuple[str, ...]] = {}  # (unit, option) -> tensors it keeps in fp32

        def keep_of(plan) -> tuple[str, ...]:
            return tuple(t for unit, option in plan for t in kept.get((unit, option), ()))

        def trial(plan, step, faster_than=None) -> Trial:
            cfg = dataclasses.replace(base, plan=tuple(plan), keep_fp32=keep_of(plan))
            report(f"  ... {step} {cfg.describe()} ({time.perf_counter() - start:.0f} s in)")  # a trial takes a minute
            path = tmp / "trial.onnx"
            build(voice_dir, cfg, path, cache)
            if any(option == TRAINED for _, option in plan):
                key = finetune_cfg.key(cfg.describe(), voice_key(voice_dir))
                report(f"  fine-tuning {cfg.describe()} ({finetune_cfg.steps} steps)")
                finetune(voice_dir, path, cfg.describe(), finetune_cfg, work=tmp / "finetune" / key,
                         report=lambda line: report("  " + line))
            return judge.trial(path, cfg, step, faster_than)

        # 1. Every treatment of every unit on its own, up each unit's ladder while the rungs pass.
        report("1. each unit alone (everything else fp32):")
        alone: dict[tuple[str, str], Trial] = {}
        for unit in units:
            for option, below in options_for(unit, finetune_cfg is not None):
                if below is not None and not alone[unit, below].sound:
                    alone[unit, option] = judge.skip(f"{unit}={option}", f"{unit}={below} already breaks the budget")
                    continue
                # a rung that is sound but no faster is climbed past: the next rung may be faster
                alone[unit, option] = trial([(unit, option)], "alone",
                                            budget.min_speedup if option in COMPUTE else None)

        # 1b. Finer units: a decoder stage whose int8 compute broke the budget, ranked tensor by tensor, keeps in
        #     fp32 only the few that make its error (sensitivity.py), if that passes and still pays.
        rankings = refine(voice_dir, units, alone, kept, trial, judge, tmp, min_speedup=budget.min_speedup,
                          threads=threads, report=report)

        # 2. int8 compute: treatments that passed alone, the most speed per dB of log-mel first (a
        #    knapsack's greedy order: the budget is what they share); one treatment per unit, kept if
        #    the combination stays inside the budget and is faster than without it.
        report("2. int8 compute, most speed per dB first:")
        candidates = [(unit, option, row) for (unit, option), row in alone.items() if option in COMPUTE
                      and row.within_budget]
        candidates.sort(key=lambda c: -(c[2].speed_vs_fp32 - 1) / max(c[2].logmel_db or 0.0, 0.1))
        plan: list[tuple[str, str]] = []
        speed = 1.0
        for unit, option, alone_row in candidates:
            if any(u == unit for u, _ in plan):
                continue
            # the first one is its own trial from step 1
            row = alone_row if not plan else trial(plan + [(unit, option)], "combine",
                                                   faster_than=speed * budget.min_speedup)
            if row.within_budget:
                plan.append((unit, option))
                speed = row.speed_vs_fp32

        # 3. Smaller weights for the units left in fp32 arithmetic: the most compact storage that passed
        #    alone, all at once (storage costs no speed); the final check holds them to the budget.
        for unit in units:
            if not any(u == unit for u, _ in plan):
                passed = [o for o in ("int8w", "fp16w") if (unit, o) in alone and alone[unit, o].within_budget]
                if passed:
                    plan.append((unit, passed[0]))

        #    The final plan: lengths at every length scale, log-mel, listening, and its speed to +-2%. A failure
        #    drops the last treatment added until one passes (an empty plan is fp32 itself); a plan slower than
        #    fp32 keeps only its weight storage, which runs fp32's kernels.
        report("3. final plan (+ weight storage for the units left in fp32):")
        while True:
            row = trial(plan, "final")
            if row.within_budget and row.speed_vs_fp32 < 1.0 and any(o in COMPUTE for _, o in plan):
                report(f"  slower than fp32 ({row.speed_vs_fp32:.2f}x): int8 compute dropped, weight storage kept")
                plan = [(u, o) for u, o in plan if o not in COMPUTE]
                continue
            if row.within_budget or not plan:
                break
            report(f"  dropping {plan[-1][0]}={plan[-1][1]} and trying again")
            plan.pop()
        cfg = dataclasses.replace(base, plan=tuple(plan), keep_fp32=keep_of(plan))
        dst = voice_dir / "model.auto.onnx"
        publish(tmp / "trial.onnx", dst)
    measured = row.recorded()
    # the plan follows this machine's timings, or a Pi's estimate: its CPU class says for which
    if estimator is not None:
        measured["planned_for"] = planned = estimator.describe()
        measured["timed_on"] = {"cpu": f"{planned['board']} ({planned['core']}, emulation estimate)",
                                "arch": "aarch64", "int8_class": planned["int8_class"]}
    else:
        measured["timed_on"] = cpu.describe()
    measured["fp32_noise_moves"] = judge.comparison.phonemes.noise_moves() \
        if judge.comparison.phonemes else None
    measured["rankings"] = [r.to_dict() for r in rankings]
    measured.update(seconds=round(time.perf_counter() - start, 1), fp32_heard=judge.reference,
                    date=datetime.now(timezone.utc).strftime("%Y-%m-%d"))
    record(voice_dir, dst.name, {"config": dataclasses.asdict(cfg), "measured": measured,
                                  "budget": dataclasses.asdict(budget), "search": [t.to_dict() for t in judge.tried]})
    low, high = measured["speed_interval"]
    how = ("estimated" if estimator is not None else f"{low:.2f}-{high:.2f}x over {measured['speed_rounds']} rounds")
    report(f"auto chose: {cfg.describe()} -> {dst} ({measured['speed_vs_fp32']:.2f}x fp32, {how} on "
           f"{measured['timed_on']['cpu']} ({measured['timed_on']['int8_class']}); {measured['size_vs_fp32']:.0%} of "
           "its size)")
    add_pieces(voice_dir, dst.name)
    make_default(voice_dir, dst.name, cfg, measured["timed_on"])
    return dst
