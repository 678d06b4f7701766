"""Counted instructions -> an estimate of time on a Raspberry Pi's core: a small model of each core, calibrated on
one published measurement. Every figure it gives is an emulation estimate, not a timing.

The model, per core (``CORES``):
* each class of instruction occupies pipelines for some cycles (``Core.usage``): the throughputs of Arm's
  Cortex-A72 and A76 optimization guides, as LLVM's scheduling models (AArch64SchedA57.td, which LLVM uses for
  both cores, and AArch64SchedNeoverseN1.td, the A76's server sibling) and published measurements
  (ocxtal/insn_bench_aarch64: an A72 and a Neoverse N1) give them; where they differ, the measurement;
* a translated block (straight-line code, what the plugin counts) takes as many cycles as its busiest pipeline
  or its dispatch width needs, whichever is more (a throughput bound, as llvm-mca's block throughput: the
  kernels that dominate a voice are unrolled loops written to run at throughput);
* one constant, ``Calibration.stall``, multiplies the sum: what that bound leaves out (latency chains, cache and
  memory stalls, branch mispredictions, the operating system), fitted on sherpa-onnx's Raspberry Pi 4 figure for
  the fp32 Piper medium voice at one thread and nothing else;
* threads: Amdahl's law, with the serial share counted, not fitted: a 2-thread count splits the work between
  onnxruntime's first thread (the serial work and its half of every parallel loop) and the pool's thread (the
  other half), so serial = (first - other) / (first + other); at ``n`` threads the rest takes 1/n of its time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from exporter.pi.counts import CLASSES, Counts
from exporter.pi.emulation import Recipe


@dataclass(frozen=True)
class Core:
    """A core's dispatch width, clock and, for each instruction class, the cycles it occupies each pipeline
    group (``usage[class] = {group: cycles}``; a group of ``capacity[group]`` identical pipes)."""

    name: str
    board: str
    clock_ghz: float
    width: int  # instructions decoded/dispatched per cycle
    capacity: dict[str, int]
    usage: dict[str, dict[str, float]]
    source: str
    # the most multiply-adds one core does a cycle: fp32 (FMLA on 4 lanes), fp16 (8 lanes where the core has fp16
    # arithmetic; the A72 runs fp16 Convs as fp32) and int8 (A72: UMULL, 8 products; A76: UDOT, 16, two a cycle):
    # the physical limit a variant's arithmetic is set against
    peak_macs: dict[str, float] = field(default_factory=dict)

    def least_seconds(self, macs: dict[str, float], threads: int = 1) -> float:
        """The time ``macs`` ({"fp32": n, "int8": n} multiply-adds) take at this core's peak on ``threads`` cores."""
        return sum(n / self.peak_macs[kind] for kind, n in macs.items()) / (self.clock_ghz * 1e9 * threads)

    def matrix(self) -> tuple[np.ndarray, list[str]]:
        """[classes, groups]: cycles of each group per instruction, divided by the group's capacity."""
        groups = sorted(self.capacity)
        m = np.zeros((len(CLASSES), len(groups)))
        for c, name in enumerate(CLASSES):
            for g, cycles in self.usage.get(name, {}).items():
                m[c, groups.index(g)] = cycles / self.capacity[g]
        return m, groups

    def block_cycles(self, blocks: np.ndarray) -> np.ndarray:
        """Cycles of one pass through each block [blocks] (its throughput bound)."""
        m, _ = self.matrix()
        return np.maximum(blocks.sum(axis=1) / self.width, (blocks @ m).max(axis=1))


# Cortex-A72 (Pi 4): pipes B, I0/I1, M, L, S, F0/F1. ASIMD is 64 bits wide per pipe: a 128-bit FP operation
# takes both F pipes (1 per cycle, measured), integer multiplies only F0, pairwise accumulates only F1.
A72 = Core(
    "cortex-a72", "Raspberry Pi 4", 1.8, 3,
    capacity={"B": 1, "I": 2, "M": 1, "L": 1, "S": 1, "F": 2, "F0": 1, "F1": 1},
    usage={
        "branch": {"B": 1}, "int": {"I": 1}, "imul": {"M": 3}, "system": {"I": 1},
        "load": {"L": 1}, "load_v": {"L": 1}, "store": {"S": 1}, "store_v": {"S": 2},
        "fp_scalar": {"F": 1}, "fp16_scalar": {"F": 1}, "fp32_d": {"F": 1}, "fp32_q": {"F": 2},
        "fp16_d": {"F": 1}, "fp16_q": {"F": 2}, "dot_d": {"F": 1}, "dot_q": {"F": 2},
        "mul_d": {"F": 1, "F0": 1}, "mul_q": {"F": 2, "F0": 2}, "mull": {"F": 1, "F0": 1},
        "padal_d": {"F": 1, "F1": 1}, "padal_q": {"F": 1, "F1": 1},
        "simd_d": {"F": 1}, "simd_q": {"F": 4 / 3},  # 1.5 per cycle measured (2 in LLVM's model)
    },
    source="Cortex-A72 Software Optimization Guide (UAN 0016A) pipelines; LLVM AArch64SchedA57.td; "
           "ocxtal/insn_bench_aarch64 (NXP LX2160A, A72)",
    peak_macs={"fp32": 4, "fp16": 4, "int8": 8},
)

# Cortex-A76 (Pi 5): pipes B, S0/S1 (+M for simple ALU), M, two load/store AGUs, two store-data, V0/V1 128 bits
# wide: FMLA, fp16 FMLA and SDOT 2 per cycle; integer multiplies only V0, pairwise accumulates only V1.
A76 = Core(
    "cortex-a76", "Raspberry Pi 5", 2.4, 4,
    capacity={"B": 1, "I": 3, "M": 1, "L": 2, "D": 2, "V": 2, "V0": 1, "V1": 1},
    usage={
        "branch": {"B": 1}, "int": {"I": 1}, "imul": {"M": 3}, "system": {"I": 1},
        "load": {"L": 1}, "load_v": {"L": 1}, "store": {"L": 1, "D": 1}, "store_v": {"L": 1, "D": 2},
        "fp_scalar": {"V": 1}, "fp16_scalar": {"V": 1}, "fp32_d": {"V": 1}, "fp32_q": {"V": 1},
        "fp16_d": {"V": 1}, "fp16_q": {"V": 1}, "dot_d": {"V": 1}, "dot_q": {"V": 1},
        "mul_d": {"V": 1, "V0": 1}, "mul_q": {"V": 2, "V0": 2}, "mull": {"V": 1, "V0": 1},
        "padal_d": {"V": 1, "V1": 1}, "padal_q": {"V": 1, "V1": 1},
        "simd_d": {"V": 1}, "simd_q": {"V": 1},
    },
    source="Cortex-A76 Software Optimization Guide pipelines; LLVM AArch64SchedNeoverseN1.td; "
           "ocxtal/insn_bench_aarch64 (AWS Graviton2, Neoverse N1)",
    peak_macs={"fp32": 8, "fp16": 16, "int8": 32},
)

CORES = {"cortex-a72": A72, "cortex-a76": A76}
TARGETS = {"pi4": "cortex-a72", "pi5": "cortex-a76"}  # quantize --target NAME -> the core it is estimated on

# The one public measurement: sherpa-onnx's table for a Raspberry Pi 4 Model B, the fp32 Piper voice
# en_US-lessac-medium (https://k2-fsa.github.io/sherpa/onnx/tts/pretrained_models/rtf.html): real-time factor
# at 1, 2, 3 and 4 threads. The model is fitted on the 1-thread figure only; the others check it.
SHERPA_PI4 = {1: 0.774, 2: 0.482, 3: 0.390, 4: 0.357}
CHECK_TOLERANCE = 0.30  # the estimate must be within 30% of every figure it was not fitted on
# The calibration runs the onnxruntime sherpa-onnx ran, not ours: how much of the work its thread pool shares
# differs by version (counted at 2 threads: 3.7% left to one thread in 1.32, 10.9% in 1.19). sherpa-onnx's Linux
# aarch64 build pinned onnxruntime 1.16.3 when the table was made (it lists kokoro-en-v0_19: early 2025); 1.17.1,
# the oldest aarch64 wheel PyPI still has for Python 3.11, stands in for it, with bookworm's numpy (onnxruntime
# before 1.19 was built against numpy 1.x).
SHERPA_ONNXRUNTIME = Recipe(onnxruntime="1.17.1", numpy="1.24.2", numpy_from="debian")


@dataclass
class Estimate:
    """A model's estimated speed on one core: cycles of its serial and parallel work per sentence."""

    core: Core
    serial: np.ndarray  # cycles per sentence, without the stall factor
    parallel: np.ndarray
    samples: np.ndarray
    sample_rate: int
    stall: float = 1.0
    counts: Counts | None = None  # the one-thread count it was made from

    def seconds(self, threads: int = 1, sentence: int | None = None) -> float:
        """Estimated seconds (of all the sentences, or one) at ``threads`` threads."""
        s = slice(None) if sentence is None else slice(sentence, sentence + 1)
        cycles = self.serial[s].sum() + self.parallel[s].sum() / threads
        return float(self.stall * cycles / (self.core.clock_ghz * 1e9))

    def audio_seconds(self, sentence: int | None = None) -> float:
        s = slice(None) if sentence is None else slice(sentence, sentence + 1)
        return float(self.samples[s].sum() / self.sample_rate)

    def rtf(self, threads: int = 1) -> float:
        """Estimated real-time factor: seconds of computing per second of audio."""
        return self.seconds(threads) / self.audio_seconds()

    @property
    def parallel_share(self) -> float:
        return float(self.parallel.sum() / (self.serial.sum() + self.parallel.sum()))


def serial_share(pool: Counts, core: Core) -> float:
    """The share of the work one thread does alone, from a 2-thread count: the first thread does the serial work
    and half the shared work, the pool's thread the other half (onnxruntime's first thread works in every
    parallel loop; waiting threads sleep, uncounted), so serial = (first - other) / (first + other)."""
    if pool.meta.get("threads") != 2:
        raise ValueError("the serial share is read from a 2-thread count")
    cycles = core.block_cycles(pool.blocks)
    first, other = (pool.execs[:, :, i].sum(axis=0) @ cycles for i in (0, 1))
    return float(max(first - other, 0.0) / (first + other))


def estimate(counts: Counts, core: Core, *, pool: Counts | list[Counts] | None = None, serial: float | None = None,
             sample_rate: int, stall: float = 1.0) -> Estimate:
    """``counts`` (one thread) on ``core``; ``pool``: the same model counted at 2 threads, for the serial share
    (several such counts: their median, as each run splits the work a little differently), or ``serial``: the
    share itself (a piece of a model whose share was counted whole)."""
    if counts.meta.get("threads", 1) != 1:
        raise ValueError("the estimate works from a one-thread count (several threads count the pool's waiting)")
    if (pool is None) == (serial is None):
        raise ValueError("give the 2-thread count(s) or the serial share, one of them")
    cycles = counts.execs.sum(axis=2) @ core.block_cycles(counts.blocks)  # [sentences]
    if pool is not None:
        serial = float(np.median([serial_share(p, core) for p in (pool if isinstance(pool, list) else [pool])]))
    return Estimate(core, cycles * serial, cycles * (1 - serial), np.asarray(counts.samples), sample_rate, stall,
                    counts)


@dataclass
class Calibration:
    """The stall factor fitted on sherpa-onnx's 1-thread Pi 4 figure, and how the fitted model does on the
    2-, 3- and 4-thread figures it was not fitted on."""

    stall: float
    estimated: dict[int, float]  # threads -> estimated RTF of the reference model
    measured: dict[int, float] = field(default_factory=lambda: dict(SHERPA_PI4))
    reference: str = ""

    @classmethod
    def fit(cls, reference: Estimate, reference_name: str = "") -> Calibration:
        if reference.core.name != "cortex-a72":
            raise ValueError("sherpa-onnx's figures are for a Raspberry Pi 4: calibrate on cortex-a72")
        reference.stall = stall = SHERPA_PI4[1] * reference.stall / reference.rtf(1)
        return cls(stall, {n: reference.rtf(n) for n in SHERPA_PI4}, reference=reference_name)

    def errors(self) -> dict[int, float]:
        """Relative error of the estimate at each thread count (0 at one thread, by construction)."""
        return {n: self.estimated[n] / self.measured[n] - 1 for n in self.measured}

    @property
    def holds(self) -> bool:
        """Within CHECK_TOLERANCE of every figure it was not fitted on."""
        return all(abs(e) <= CHECK_TOLERANCE for n, e in self.errors().items() if n != 1)

    def as_dict(self) -> dict:
        return {"stall": self.stall, "reference": self.reference, "estimated_rtf": self.estimated,
                "sherpa_onnx_pi4_rtf": self.measured, "errors": self.errors(), "holds": self.holds,
                "tolerance": CHECK_TOLERANCE}
