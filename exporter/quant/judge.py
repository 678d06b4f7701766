"""A variant judged against ``model.onnx`` under the budget: the trials of ``auto`` (search.py) and the fine-tuned
preset's verdict (finetune.py), each reported as a line a person can read and kept for the sidecar."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from exporter.quant.budget import JUDGE_SENTENCES, Budget, Comparison, Listener, Measured, Speed, measure_speed, within
from exporter.quant.plans import COMPUTE, QuantConfig
from exporter.quant.report import heard
from exporter.quant.units import DURATION_UNITS
from runtime import contract

# What the sidecar keeps of a final trial (auto's and the fine-tuned preset's)
RECORDED = ("sentences", "same_length", "logmel_db", "mcd_db", "speed_vs_fp32", "speed_interval", "speed_rounds",
            "speed_method", "size_mb", "size_vs_fp32", "threads", "durations")
# The final plan is timed against fp32 until its speed-up is known to +-2% (95% interval), at most 20 rounds.
FINAL_PRECISION = 0.02


@dataclass
class Trial:
    """One plan judged: what was measured (None when it was skipped), what listeners' models heard, the verdict.
    ``sound``: inside the budget's sound rules, fast enough or not (a ladder's next rung is tried above it)."""

    step: str  # "alone", "combine", "final" or "skipped"
    plan: str
    within_budget: bool
    sound: bool
    verdict: str
    measured: Measured | None = None
    heard: dict | None = None

    @property
    def speed_vs_fp32(self) -> float | None:
        return None if self.measured is None else self.measured.speed_vs_fp32

    @property
    def logmel_db(self) -> float | None:
        return None if self.measured is None else self.measured.logmel_db

    def recorded(self) -> dict:
        """What the sidecar keeps of a final plan (``RECORDED``, and what was heard)."""
        measured = self.measured.to_dict() if self.measured else {}
        return {**{k: measured.get(k) for k in RECORDED}, "heard": self.heard}

    def to_dict(self) -> dict:
        """The sidecar's row of the search table."""
        row = {"step": self.step, "plan": self.plan, **(self.measured.to_dict() if self.measured else {})}
        if self.heard is not None:
            row["heard"] = self.heard
        return {**row, "within_budget": self.within_budget, "sound": self.sound, "verdict": self.verdict}

    def line(self) -> str:
        if self.measured is None:
            return f"  {self.step:<9} {self.plan:<58} {self.verdict}"
        m = self.measured
        speed = "    -" if m.speed_vs_fp32 is None else f"{m.speed_vs_fp32:5.2f}x"
        mel = "-" if m.logmel_db is None else f"{m.logmel_db:.2f}"
        lengths = f"{m.same_length}/{m.sentences}"
        d = m.durations
        scales = (f" (phonemes: {d['moved_share']:.1%} moved, at most {d['max_phoneme_frames']} frame(s))"
                  if d else "")
        return (f"  {self.step:<9} {self.plan:<58} {speed}  mel {mel:>5} dB  len {lengths}{scales}  "
                f"size {m.size_vs_fp32:.0%}" + (f"  [{heard(self.heard)}]" if self.heard else "")
                + f"  {self.verdict}")


class Judge:
    """A variant file against ``model.onnx`` under ``budget``: the trials of ``auto`` and the fine-tuned preset's
    verdict. fp32 is measured (and listened to) once; every trial is reported and kept in ``tried``."""

    def __init__(self, voice_dir: Path, budget: Budget, *, threads: int = 2, listen: bool = True, report=print,
                 timer=None, estimator=None):
        """``estimator(path)``, when given, is fp32's estimated time over the file's on another device (a Pi:
        exporter/pi/estimate.PiSpeed), and stands in for timing it here."""
        self.budget, self.report, self.timer, self.estimator = budget, report, timer, estimator
        self.comparison = Comparison(voice_dir, JUDGE_SENTENCES, threads=threads)
        self.listener = Listener(threads) if listen else None
        self.reference = None
        self.rate = self.comparison.voice.sample_rate
        self.heard_texts = list(JUDGE_SENTENCES) * budget.listen_seeds
        if self.listener and self.listener.available:
            report(f"  ... listening to fp32 ({len(self.heard_texts)} clips: Whisper, DNSMOS, DistillMOS)")
            self.reference = self.listen(Path(voice_dir) / contract.MODEL_FILE)
            report(f"  fp32 heard ({budget.listen_seeds} draws of its default noise per sentence): "
                   f"{heard(self.reference)}")
        if self.listener and self.listener.notes:
            report("  " + "; ".join(self.listener.notes) + ": judged without them")
        self.tried: list[Trial] = []

    def listen(self, path: Path) -> dict:
        return self.listener.score(self.heard_texts, self.comparison.heard(path, self.budget.listen_seeds),
                                   self.rate, self.budget.listen_seeds)

    def skip(self, plan: str, why: str) -> Trial:
        """A plan not tried (the rung below it already breaks the budget): reported and kept like any trial."""
        trial = Trial("skipped", plan, within_budget=False, sound=False, verdict=f"skipped: {why}")
        self.tried.append(trial)
        self.report(trial.line())
        return trial

    def speed(self, path: Path, cfg: QuantConfig, faster_than: float | None = None, final: bool = False,
              candidate=None) -> Speed:
        """fp32's time over the variant's: the target's estimate, or rounds timed here until the comparison with
        ``faster_than`` is clear (``final``: until the speed is known to FINAL_PRECISION)."""
        if self.estimator is not None:
            return Speed.estimated(self.estimator(path))
        if self.timer:
            one_round = lambda: self.timer(tuple(cfg.plan))  # noqa: E731
        else:
            candidate = candidate or self.comparison.candidate(path)
            one_round = lambda: self.comparison.round(candidate)  # noqa: E731
        return measure_speed(one_round, threshold=faster_than, precision=FINAL_PRECISION if final else None,
                             min_rounds=6 if final else 4, max_rounds=20 if final else 12)

    def trial(self, path: Path, cfg: QuantConfig, step: str, faster_than: float | None = None) -> Trial:
        """Judge the variant ``path`` (made by ``cfg``). int8 compute is listened to (the log-mel bound misses
        the hiss int8 adds at the highest sample rate: 0.99 dB there cost 0.57 P.808, 0.83 dB in the middle
        stage and the flow 0.08). ``faster_than``: the speed it has to beat, clearly."""
        budget, plan = self.budget, cfg.plan
        computes = any(o in COMPUTE for _, o in plan)
        final = step == "final"
        candidate = self.comparison.candidate(path)
        measured = self.comparison.measure(path, candidate, timed=False, durations=final or any(
            u.startswith(DURATION_UNITS) for u, _ in plan))
        sound, why = within(measured, budget)  # the sound passed, fast enough or not
        ok = sound
        if sound and (computes or final):
            # weight storage alone runs fp32's kernels (exporter/quant/storage.py): only compute is timed
            measured.speed = self.speed(path, cfg, faster_than, final, candidate)
            if faster_than is not None:
                clear = measured.speed.versus(faster_than)
                ok = clear is True
                low, high = measured.speed.interval
                how = ("estimated" if measured.speed.method == "estimated"
                       else f"{low:.2f}-{high:.2f}x over {len(measured.speed.ratios)} rounds")
                why = (f"{'faster' if ok else 'no faster' if clear is False else 'not clearly faster'} than "
                       f"{faster_than:.2f}x ({how})")
        scores = None
        if ok and self.reference is not None and (computes or final):
            scores = self.listen(path)
            ok, verdict = self.listener.verdict(self.reference, scores, budget)
            sound = ok
            why = f"{why}; {verdict}" if ok else verdict
        trial = Trial(step, cfg.describe(), within_budget=ok, sound=sound,
                      verdict=("kept: " if ok else "rejected: ") + why, measured=measured, heard=scores)
        self.tried.append(trial)
        self.report(trial.line())
        return trial
