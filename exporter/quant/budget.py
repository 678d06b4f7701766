"""How a variant is judged against ``model.onnx``: the budget, and the measurements it is applied to
(lengths at several length scales, log-mel distance, speed, and what listeners' models hear)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime import contract

LENGTH_SCALES = (0.8, 0.9, 1.0, 1.1, 1.25)

# Judged on these, calibrated on exporter.quant.calibration.CALIBRATION_SENTENCES: the two sets share nothing.
JUDGE_SENTENCES = (
    "I would like a cup of tea with milk, but no sugar, please.",
    "The train to Edinburgh leaves from platform nine at a quarter to six.",
    "Why did the children laugh when the old clock finally struck twelve?",
    "Fresh bread, warm soup and a little honey: that is all we need tonight.",
    "Scientists measured the temperature of the lake every hour for three weeks.",
    "Turn left at the bakery, then walk straight on until you see the bridge.",
    "Oh no! I left my umbrella on the bus again.",
    "Her voice was soft and calm, like rain on a summer evening.",
    "The results will be published in the journal next spring.",
    "Yes.",
)


@dataclass(frozen=True)
class Budget:
    max_logmel_db: float = 1.0
    mos_tolerance: float = 0.1
    min_speedup: float = 1.03


def within(measured: dict, budget: Budget) -> tuple[bool, str]:
    if measured.get("lengths_changed"):
        return False, f"{measured['lengths_changed']}/{measured['length_checks']} lengths changed across length scales"
    if measured["same_length"] != measured["sentences"]:
        return False, f"{measured['sentences'] - measured['same_length']} lengths changed"
    if measured["logmel_db"] is not None and measured["logmel_db"] > budget.max_logmel_db:
        return False, f"log-mel {measured['logmel_db']:.2f} dB > {budget.max_logmel_db} dB"
    return True, "inside the budget"


class _Listener:
    """Whisper and DNSMOS when installed (the bench extra); otherwise says what it cannot judge."""

    def __init__(self, threads: int):
        from exporter.quality import Scorer

        self.scorer = Scorer(threads)
        self.notes = [n for n in (self.scorer.asr_error, self.scorer.mos_error) if n]
        self.available = self.scorer.asr is not None or self.scorer.dnsmos is not None

    def score(self, texts, audio, rate) -> dict:
        s = self.scorer.score(list(texts), list(audio), rate)
        return {"wer": s.get("wer"), **{k: s["dnsmos"][k] for k in ("ovrl", "p808") if "dnsmos" in s}}

    @staticmethod
    def verdict(ref: dict, out: dict, budget: Budget) -> tuple[bool, str]:
        problems = [f"DNSMOS {k.upper()} {out[k]:.2f} vs fp32 {ref[k]:.2f}" for k in ("ovrl", "p808")
                    if k in ref and out[k] < ref[k] - budget.mos_tolerance]
        if ref.get("wer") is not None and out["wer"] > ref["wer"] + 1e-9:
            problems.append(f"WER {out['wer']:.1%} vs fp32 {ref['wer']:.1%}")
        return (not problems), "; ".join(problems) or "listening checks passed"


def _session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.enable_mem_pattern = False  # as runtime.voice.Voice.load runs it (spinning threads too)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class Comparison:
    """Audio and timing of ``model.onnx`` on fixed ids, to compare variants against (zero noise)."""

    def __init__(self, voice_dir: Path, sentences, threads: int = 2, repeats: int = 2):
        from runtime.voice import SynthesisConfig, Voice

        self.voice_dir, self.threads, self.repeats = Path(voice_dir), threads, repeats
        self.voice = Voice.load(voice_dir)
        self.sentences = tuple(sentences)
        self.ids = [self.voice.text_to_ids(s) for s in self.sentences]
        self.zero = SynthesisConfig(noise_scale=0.0, noise_w=0.0)
        self.fp32 = self._voice(self.voice_dir / contract.MODEL_FILE)
        self.reference = [self.fp32.ids_to_audio(i, self.zero) for i in self.ids]
        self.size = (self.voice_dir / contract.MODEL_FILE).stat().st_size
        self._durations = None

    def _voice(self, path: Path):
        from runtime.voice import Voice

        return Voice.from_session(_session(path, self.threads), self.voice.config)

    def durations(self, voice) -> list[int]:
        """Output lengths at several length scales: each scale moves every ``ceil`` boundary, so a
        variant whose durations drift shows it on a few dozen sentences, not only on the rare one."""
        from runtime.voice import SynthesisConfig

        return [len(voice.ids_to_audio(ids, SynthesisConfig(noise_scale=0.0, noise_w=0.0, length_scale=scale)))
                for scale in LENGTH_SCALES for ids in self.ids]

    def measure(self, variant: Path, durations: bool = False, timed: bool = True) -> dict:
        """Lengths, log-mel distance and speed against fp32; with ``durations``, lengths at every
        scale of LENGTH_SCALES first (a variant that changes one is not measured further).
        ``timed=False`` for weight storage: the same kernels run (see exporter/quant/storage.py)."""
        from exporter.quality import logmel_distance_db

        candidate = self._voice(variant)
        size = {"size_mb": round(variant.stat().st_size / 1e6, 2),
                "size_vs_fp32": round(variant.stat().st_size / self.size, 3), "threads": self.threads}
        extra = {}
        if durations:
            if self._durations is None:
                self._durations = self.durations(self.fp32)
            changed = sum(a != b for a, b in zip(self._durations, self.durations(candidate)))
            extra = {"length_checks": len(self._durations), "lengths_changed": changed}
            if changed:
                return {"sentences": len(self.ids), "same_length": None, "logmel_db": None, "speed_vs_fp32": None,
                        **size, **extra, "_audio": None}
        audio = [candidate.ids_to_audio(i, self.zero) for i in self.ids]  # also the warm-up
        same = [(r, a) for r, a in zip(self.reference, audio) if len(r) == len(a)]
        mel = [logmel_distance_db(r, a, self.voice.sample_rate) for r, a in same]
        return {"sentences": len(self.ids), "same_length": len(same),
                "logmel_db": round(float(np.median(mel)), 3) if mel else None,
                "speed_vs_fp32": self._speed(candidate) if timed else None, **size, **extra, "_audio": audio}

    def _speed(self, candidate) -> float:
        """fp32 time over the variant's: blocks of all sentences, the order swapped each repeat, as the
        device runs them (threads spinning). Turn-taking sentence by sentence let one session's spinning
        pool slow the other, and timed int8 faster than it runs (1.14x in-process, 0.97x in the
        benchmark's own processes)."""
        times = {"fp32": 0.0, "variant": 0.0}
        for repeat in range(self.repeats):
            order = (("fp32", self.fp32), ("variant", candidate))
            for name, v in order if repeat % 2 == 0 else order[::-1]:
                v.ids_to_audio(self.ids[0], self.zero)  # let the other pool go idle, wake this one
                start = time.perf_counter()
                for ids in self.ids:
                    v.ids_to_audio(ids, self.zero)
                times[name] += time.perf_counter() - start
        return round(times["fp32"] / times["variant"], 3)
