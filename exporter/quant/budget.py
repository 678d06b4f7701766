"""How a variant is judged against ``model.onnx``: the budget, and the measurements it is applied to
(lengths at several length scales, log-mel distance, speed, and what listeners' models hear)."""

from __future__ import annotations

import functools
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import onnx
import onnxruntime as ort

from exporter.errors import ExportError
from exporter.quality import Scorer, has_librosa, logmel_distance_db, mcd_dtw_db
from exporter.split import split
from runtime import chunking, contract
from runtime.alignment import align
from runtime.config import FP32
from runtime.pieces import Pieces
from runtime.voice import SynthesisConfig, Voice

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
    """Every rule a variant is held to against ``model.onnx``, in one place; ``REASONS`` says why each number.

    Durations are judged per phoneme (the phoneme timings of runtime/alignment.py, at zero noise and at
    every scale of ``LENGTH_SCALES``), not as "every output length identical": a phoneme of a dev sentence
    lasts 2.00036 frames before rounding up, so any change at all to the text encoder or duration predictor
    moved some length by a frame, a change nobody hears and the fp32 voice itself makes, by far more, at its
    default ``noise_w`` (``PhonemeDurations.noise_moves`` measures how much)."""

    max_phoneme_frames: int = 1
    max_moved_share: float = 0.02
    max_length_change: float = 0.01
    max_logmel_db: float = 1.0
    max_mcd_db: float = 4.0
    mos_tolerance: float = 0.05
    listen_seeds: int = 4
    wer_tolerance: float = 0.015
    min_speedup: float = 1.03

    REASONS: ClassVar[dict[str, str]] = {
        "max_phoneme_frames": "every phoneme within one frame (11.6 ms at 22.05 kHz) of fp32's: a rounding "
                              "that lands across a frame boundary, never a phoneme stretched or cut",
        "max_moved_share": "at most 2% of phonemes moved at all: rounding flips are rare, a drifting duration "
                           "predictor moves many",
        "max_length_change": "every sentence within 1% of fp32's length: the rhythm of the sentence is kept",
        "max_logmel_db": "log-mel distance to fp32 (median, same-length sentences, zero noise): above 1 dB int8 "
                         "noise was audible on the real voice",
        "max_mcd_db": "DTW mel-cepstral distortion to fp32 (median, zero noise): the fixed presets on the real "
                      "voice: dynamic, heard the same as fp32, 2.26 dB; static, heard worse (DNSMOS OVRL -0.27, "
                      "P.808 -0.63, DistillMOS -0.70), 10.3 dB; every plan listeners accepted stayed under 3.7 dB, "
                      "a last-stage int8 decoder they rejected had 4.3. MCD is the coarse guard: it cannot hear the "
                      "subtle hiss listeners rejected at 3.0 dB (decoder.1 in int8), the listening rules do",
        "mos_tolerance": "DNSMOS OVRL and P.808, and DistillMOS (a second predictor, made for speech "
                         "quality), within 0.05 of fp32's, on the same noise draws (listen_seeds)",
        "listen_seeds": "draws of the default noise per sentence that listening averages over: fp32's 10-sentence "
                        "means over 8 draws on the real voice spread (sd) 0.014 OVRL, 0.025 P.808, 0.030 "
                        "DistillMOS, so two 4-draw means differ by under 0.05 (2 sd: 0.02, 0.035, 0.042)",
        "wer_tolerance": "Whisper tiny.en's word error rate at most 1.5 points over fp32's: fp32's own WER over 8 "
                         "draws of its noise was 0-2.7% per draw (sd 1.06 points), so two 4-draw rates differ by "
                         "up to 2 sd = 1.5 points with no change to the model",
        "min_speedup": "a gain under 3% is inside the timing spread of a shared machine and buys nothing",
    }

    def judge(self, measured: Measured) -> list[str]:
        """What in ``measured`` (``Comparison.measure``'s answer) breaks a rule; [] when nothing does."""
        problems = []
        d = measured.durations
        if d is not None:
            if d["max_phoneme_frames"] > self.max_phoneme_frames:
                problems.append(f"a phoneme moved {d['max_phoneme_frames']} frames (at most {self.max_phoneme_frames})")
            if d["moved_share"] > self.max_moved_share:
                problems.append(f"{d['moved_share']:.1%} of phonemes moved (at most {self.max_moved_share:.0%})")
            if d["max_length_change"] > self.max_length_change:
                problems.append(f"a sentence's length changed {d['max_length_change']:.1%} "
                                f"(at most {self.max_length_change:.0%})")
        if measured.logmel_db is not None and measured.logmel_db > self.max_logmel_db:
            problems.append(f"log-mel {measured.logmel_db:.2f} dB > {self.max_logmel_db} dB")
        if measured.mcd_db is not None and measured.mcd_db > self.max_mcd_db:
            problems.append(f"MCD {measured.mcd_db:.2f} dB > {self.max_mcd_db} dB")
        return problems


@dataclass
class Measured:
    """A variant against fp32 at zero noise (``Comparison.measure``): lengths, closeness, size, and when asked the
    phonemes' durations (``PhonemeDurations.compare``) and the speed. ``to_dict`` is the sidecar's record of it."""

    sentences: int = 0
    same_length: int = 0
    logmel_db: float | None = None  # median over the sentences of fp32's length
    mcd_db: float | None = None  # median over all sentences (DTW); None without librosa
    size_mb: float = 0.0
    size_vs_fp32: float = 1.0
    threads: int = 0
    speed: Speed | None = None  # fp32's time over the variant's; None when not timed (weight storage)
    durations: dict | None = None

    @property
    def speed_vs_fp32(self) -> float | None:
        return None if self.speed is None else round(self.speed.value, 3)

    @classmethod
    def from_dict(cls, record: dict) -> Measured:
        """A recorded measurement (``to_dict``, a row of the sidecar's search table), to judge again; its speed's
        rounds are not recorded, so it comes back without one."""
        names = ("sentences", "same_length", "logmel_db", "mcd_db", "size_mb", "size_vs_fp32", "threads", "durations")
        return cls(**{k: record[k] for k in names if k in record})

    def to_dict(self) -> dict:
        out = {k: v for k, v in asdict(self).items() if k not in ("speed", "durations")}
        out.update(self.speed.summary() if self.speed else {"speed_vs_fp32": None})
        if self.durations is not None:
            out["durations"] = self.durations
        return out


def within(measured: Measured, budget: Budget) -> tuple[bool, str]:
    problems = budget.judge(measured)
    return (not problems), "; ".join(problems) or "inside the budget"


class PhonemeDurations:
    """Frames of every phoneme (tokens grouped as the phoneme timings group them: a symbol with the blanks
    after it) at zero noise and every scale of ``LENGTH_SCALES``, from a model's frontend, cut from its
    graph as the streaming pieces are (exporter/split.py)."""

    def __init__(self, voice, ids: list[list[int]], architecture: dict, threads: int, reference_model: Path):
        self.voice, self.ids, self.architecture, self.threads = voice, ids, architecture, threads
        self.reference_model = reference_model
        self.hop = chunking.hop_length(chunking.layers(architecture))
        self.symbols = voice.tokenizer.symbols()

    def _frontend(self, model: Path):
        """The frontend of ``model`` as a session (a variant's file is rewritten between trials: cut anew)."""
        return _session(_pieces(model, self.architecture)[0], self.threads)

    @functools.cached_property
    def _reference(self):
        """fp32's frontend, cut once: its durations and ``noise_moves`` both use it."""
        return self._frontend(self.reference_model)

    @staticmethod
    def _noise_channels(session) -> int:
        noise = [i for i in session.get_inputs() if i.name == contract.DURATION_NOISE]
        return int(noise[0].shape[1]) if noise else 0

    def _tokens(self, session, ids: list[int], scale: float, noise: np.ndarray | None = None) -> list[int]:
        names = {i.name for i in session.get_inputs()}
        syn = SynthesisConfig(noise_scale=0.0, noise_w=0.0 if noise is None else None, length_scale=scale)
        feeds = {k: v for k, v in self.voice.feeds(ids, syn).items() if k in names}
        channels = self._noise_channels(session)
        if channels:
            feeds[contract.DURATION_NOISE] = np.zeros((1, channels, len(ids)), np.float32) if noise is None else noise
        durations = session.run([contract.DURATIONS], feeds)[0]
        return np.rint(durations.reshape(-1)).astype(np.int64).tolist()

    def _phonemes(self, ids: list[int], tokens: list[int]) -> list[int]:
        timing = align(ids, tokens, self.symbols, self.hop, self.voice.sample_rate, sum(tokens) * self.hop)
        return [p.samples // self.hop for p in timing.phonemes]

    def frames(self, model: Path | None = None) -> list[list[int]]:
        """Per-phoneme frames of ``model`` (fp32's when None) at every length scale."""
        session = self._reference if model is None else self._frontend(model)
        return [self._phonemes(ids, self._tokens(session, ids, scale)) for scale in LENGTH_SCALES for ids in self.ids]

    @staticmethod
    def compare(reference: list[list[int]], frames: list[list[int]]) -> dict:
        diffs = [abs(a - b) for ref, out in zip(reference, frames) for a, b in zip(ref, out)]
        change = max(abs(sum(out) - sum(ref)) / max(sum(ref), 1) for ref, out in zip(reference, frames))
        return {"checks": len(reference), "phonemes": len(diffs), "max_phoneme_frames": max(diffs, default=0),
                "moved_share": round(sum(d > 0 for d in diffs) / max(len(diffs), 1), 4),
                "max_length_change": round(change, 4)}

    def noise_moves(self, seeds: int = 5) -> dict:
        """How much the fp32 voice itself moves its phonemes at its default ``noise_w``: per phoneme, the
        spread of its frames over ``seeds`` runs (length scale 1), and how many move more than a frame from
        the zero-noise durations. The budget's one frame is measured against this."""
        session = self._reference
        channels = self._noise_channels(session)
        if not channels:
            return {"seeds": 0, "note": "this voice's duration predictor takes no noise: its durations never move"}
        spreads, over = [], 0
        total = 0
        for k, ids in enumerate(self.ids):
            zero = self._phonemes(ids, self._tokens(session, ids, 1.0))
            runs = []
            for seed in range(seeds):
                noise = np.random.default_rng(1000 * k + seed).standard_normal((1, channels, len(ids)), dtype=np.float32)
                runs.append(self._phonemes(ids, self._tokens(session, ids, 1.0, noise)))
            runs = np.array(runs)
            spreads += runs.std(axis=0).tolist()
            over += int((np.abs(runs - np.array(zero)) > 1).sum())
            total += runs.size
        return {"seeds": seeds, "median_phoneme_spread_frames": round(float(np.median(spreads)), 2),
                "share_moved_over_one_frame": round(over / max(total, 1), 3)}


class Listener:
    """Whisper, DNSMOS and DistillMOS when installed (the bench extra); otherwise says what it cannot judge.
    Scores are means over every sentence and noise draw; the word error rate is pooled over them, and given
    per draw too (``wer_per_draw``: fp32's own spread is what ``Budget.wer_tolerance`` is measured from)."""

    def __init__(self, threads: int):
        self.scorer = Scorer(threads)
        self.notes = [n for n in (self.scorer.asr_error, self.scorer.mos_error, self.scorer.distill_error) if n]
        self.available = self.scorer.asr is not None or self.scorer.dnsmos is not None

    def score(self, texts, audio, rate, draws: int = 1) -> dict:
        s = self.scorer.score(list(texts), list(audio), rate)
        per_draw = None
        if s.get("wer") is not None:
            n = len(s["per_sentence"]) // draws
            rows = [s["per_sentence"][d * n:(d + 1) * n] for d in range(draws)]
            per_draw = [round(sum(r["word_errors"] for r in d) / max(sum(r["words"] for r in d), 1), 4) for d in rows]
        return {"wer": s.get("wer"), **{k: s["dnsmos"][k] for k in ("ovrl", "p808") if "dnsmos" in s},
                **({"distillmos": s["distillmos"]} if "distillmos" in s else {}),
                **({"wer_per_draw": per_draw} if per_draw else {})}

    @staticmethod
    def verdict(ref: dict, out: dict, budget: Budget) -> tuple[bool, str]:
        names = {"ovrl": "DNSMOS OVRL", "p808": "DNSMOS P808", "distillmos": "DistillMOS"}
        problems = [f"{names[k]} {out[k]:.2f} vs fp32 {ref[k]:.2f}" for k in names
                    if k in ref and out[k] < ref[k] - budget.mos_tolerance]
        if ref.get("wer") is not None and out["wer"] > ref["wer"] + budget.wer_tolerance + 1e-9:
            problems.append(f"WER {out['wer']:.1%} vs fp32 {ref['wer']:.1%} (+{budget.wer_tolerance:.1%} allowed)")
        return (not problems), "; ".join(problems) or "listening checks passed"


@dataclass(frozen=True)
class Speed:
    """fp32's time over a variant's, one ratio per round (a round: every sentence by each model in a block, the
    order swapped each round). The estimate is their geometric mean; ``interval`` its 95% confidence interval
    (Student's t on the log ratios), so a decision says how sure it is instead of trusting one noisy number."""

    ratios: tuple[float, ...]
    # "timed" (rounds on this machine) or "estimated" (one exact ratio: a Pi's estimate from counted instructions,
    # exporter/pi; it repeats exactly, so its interval is the value itself)
    method: str = "timed"

    @classmethod
    def estimated(cls, ratio: float) -> Speed:
        return cls((float(ratio),), "estimated")

    @property
    def value(self) -> float:
        return float(np.exp(np.mean(np.log(self.ratios))))

    @property
    def interval(self) -> tuple[float, float]:
        from scipy.stats import t  # scipy comes with librosa (the export extra); only timing needs it here

        if self.method == "estimated":
            return self.value, self.value
        logs = np.log(self.ratios)
        if len(logs) < 2:
            return 0.0, float("inf")
        half = float(t.ppf(0.975, len(logs) - 1) * logs.std(ddof=1) / np.sqrt(len(logs)))
        return float(np.exp(logs.mean() - half)), float(np.exp(logs.mean() + half))

    def versus(self, threshold: float) -> bool | None:
        """True: clearly at least ``threshold``; False: clearly under it; None: the rounds cannot tell."""
        low, high = self.interval
        return True if low >= threshold else False if high < threshold else None

    def summary(self) -> dict:
        low, high = self.interval
        return {"speed_vs_fp32": round(self.value, 3), "speed_interval": [round(low, 3), round(high, 3)],
                "speed_rounds": len(self.ratios), **({"speed_method": self.method} if self.method != "timed" else {})}


def measure_speed(one_round, *, threshold: float | None = None, precision: float | None = None,
                  min_rounds: int = 4, max_rounds: int = 12) -> Speed:
    """Rounds of ``one_round()`` (a ratio each) until the answer is clear: with ``threshold``, until the interval
    is wholly above or below it; with ``precision``, until the interval is within that share of the estimate;
    with neither, ``min_rounds``. Stops at ``max_rounds`` either way: ``Speed.versus`` then says it is unclear."""
    ratios: list[float] = []
    while len(ratios) < max_rounds:
        ratios.append(float(one_round()))
        if len(ratios) < min_rounds:
            continue
        speed = Speed(tuple(ratios))
        low, high = speed.interval
        if threshold is not None and speed.versus(threshold) is not None:
            break
        if precision is not None and high / low - 1 <= 2 * precision:
            break
        if threshold is None and precision is None:
            break
    return Speed(tuple(ratios))


def _session(model, threads: int):
    """A session of a model file or of a piece cut in memory (an ``onnx.ModelProto``)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.enable_mem_pattern = False  # as runtime.voice.Voice.load runs it (spinning threads too)
    source = str(model) if isinstance(model, (str, Path)) else model.SerializeToString()
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def _pieces(model: Path, architecture: dict):
    """``(frontend, flow, vocoder)`` of ``model``, cut in memory as exporter/split.py cuts the streaming pieces."""
    return split(onnx.load(str(model)), architecture)


class Comparison:
    """Audio and timing of ``model.onnx`` on fixed ids, to compare variants against (zero noise)."""

    def __init__(self, voice_dir: Path, sentences, threads: int = 2, repeats: int = 2):
        self.voice_dir, self.threads, self.repeats = Path(voice_dir), threads, repeats
        self.voice = Voice.load(voice_dir, variant=FP32)
        self.sentences = tuple(sentences)
        self.ids = [self.voice.text_to_ids(s) for s in self.sentences]
        self.zero = SynthesisConfig(noise_scale=0.0, noise_w=0.0)
        self.fp32 = self.candidate(self.voice_dir / contract.MODEL_FILE)
        self.reference = [self.fp32.ids_to_audio(i, self.zero) for i in self.ids]
        self.size = (self.voice_dir / contract.MODEL_FILE).stat().st_size
        self.architecture = self.voice.config.streaming.get("architecture")
        self.phonemes = (PhonemeDurations(self.voice, self.ids, self.architecture, threads,
                                          self.voice_dir / contract.MODEL_FILE) if self.architecture else None)
        self._frames = None
        self._rounds = 0

    def candidate(self, path: Path) -> Voice:
        """The whole graph of the model file ``path``, as a Voice speaking with this voice's settings."""
        return Voice.from_session(_session(path, self.threads), self.voice.config)

    def _needs_architecture(self, what: str) -> dict:
        if not self.architecture:
            raise ExportError(f"{self.voice_dir}: {what} needs the voice's streaming architecture in its sidecar: "
                              f"re-export it, or run `python -m exporter split {self.voice_dir}`")
        return self.architecture

    def reference_frames(self) -> list[list[int]]:
        self._needs_architecture("judging durations")
        if self._frames is None:
            self._frames = self.phonemes.frames()
        return self._frames

    def measure(self, variant: Path, candidate: Voice | None = None, *, durations: bool = False,
                timed: bool = True) -> Measured:
        """``variant`` (run as ``candidate``, made here when not given) against fp32 at zero noise: with
        ``durations``, every phoneme's frames at every scale of LENGTH_SCALES (``PhonemeDurations``); lengths,
        log-mel distance on the sentences of fp32's length, DTW mel-cepstral distortion on all, and speed.
        ``timed=False`` for weight storage: the same kernels run (see exporter/quant/storage.py)."""
        candidate = candidate or self.candidate(variant)
        measured = Measured(sentences=len(self.ids), size_mb=round(variant.stat().st_size / 1e6, 2),
                            size_vs_fp32=round(variant.stat().st_size / self.size, 3), threads=self.threads)
        if durations:
            measured.durations = self.phonemes.compare(self.reference_frames(), self.phonemes.frames(variant))
        audio = [candidate.ids_to_audio(i, self.zero) for i in self.ids]  # also the warm-up
        same = [(r, a) for r, a in zip(self.reference, audio) if len(r) == len(a)]
        mel = [logmel_distance_db(r, a, self.voice.sample_rate) for r, a in same]
        mcd = [mcd_dtw_db(r, a, self.voice.sample_rate) for r, a in zip(self.reference, audio)] if has_librosa() else []
        measured.same_length = len(same)
        measured.logmel_db = round(float(np.median(mel)), 3) if mel else None
        measured.mcd_db = round(float(np.median(mcd)), 3) if mcd else None
        if timed:
            measured.speed = measure_speed(lambda: self.round(candidate), min_rounds=self.repeats)
        return measured

    def round(self, candidate: Voice) -> float:
        """One round: fp32's time over the variant's, each running every sentence in a block as the device
        runs them (threads spinning), the order swapped each round. Turn-taking sentence by sentence let one
        session's spinning pool slow the other, and timed int8 faster than it runs (1.14x in-process, 0.97x
        in the benchmark's own processes)."""
        times = {}
        order = (("fp32", self.fp32), ("variant", candidate))
        self._rounds += 1
        for name, v in order if self._rounds % 2 else order[::-1]:
            v.ids_to_audio(self.ids[0], self.zero)  # let the other pool go idle, wake this one
            start = time.perf_counter()
            for ids in self.ids:
                v.ids_to_audio(ids, self.zero)
            times[name] = time.perf_counter() - start
        return times["fp32"] / times["variant"]

    def heard(self, model: Path, seeds: int) -> list[np.ndarray]:
        """What listeners judge: every sentence at the voice's default noise, ``seeds`` draws each, made as the
        device makes them, by the model's streaming pieces (cut here from ``model``). The pieces draw the noise
        in numpy, so the draws are the same for every model: fp32 and a variant are compared on the same
        noise. (The whole graph draws its own noise inside onnxruntime, which no seed repeats.)"""
        architecture = self._needs_architecture("listening")
        sessions = [_session(piece, self.threads) for piece in _pieces(model, architecture)]
        voice = Voice(None, self.voice.config, pieces=Pieces(*sessions, architecture))
        return [voice.ids_to_audio(ids, SynthesisConfig(seed=1000 * seed + k))
                for seed in range(seeds) for k, ids in enumerate(self.ids)]
