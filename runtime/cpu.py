"""The CPU a voice runs on, as far as int8 (and fp16) speed goes: its model, its int8-relevant features and its class.

int8 speed depends on one thing above all: whether the CPU has int8 dot-product instructions (x86: VNNI
or AMX; ARM: the dot-product extension, ``asimddp``). With them an int8 multiply-add is 4x denser than
fp32's; without them (AVX2-only x86, a Raspberry Pi 4's Cortex-A72) int8 gains far less. Every speed
target and figure names its class (a Raspberry Pi 5's Cortex-A76 is in the first, a Pi 4 in the second).
"""

from __future__ import annotations

import platform
import re
from pathlib import Path

X86_FEATURES = {"avx2": "AVX2", "avx512f": "AVX512F", "avx512_vnni": "AVX512-VNNI", "avx_vnni": "AVX-VNNI",
                "amx_int8": "AMX-INT8"}
ARM_FEATURES = {"asimd": "NEON", "asimddp": "dot-product", "asimdhp": "fp16 arithmetic", "i8mm": "I8MM",
                "sve": "SVE"}
DOT_PRODUCT = {"AVX512-VNNI", "AVX-VNNI", "AMX-INT8", "dot-product"}
DOT = "int8 dot-product"
NO_DOT = "no int8 dot-product"


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def features(cpuinfo: str | None = None) -> list[str]:
    """Named int8-relevant features from /proc/cpuinfo ("flags" on x86, "Features" on ARM)."""
    text = _cpuinfo() if cpuinfo is None else cpuinfo
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return [label for flag, label in {**X86_FEATURES, **ARM_FEATURES}.items() if flag in flags]


def model(cpuinfo: str | None = None) -> str:
    text = _cpuinfo() if cpuinfo is None else cpuinfo
    for key in ("model name", "Model", "Hardware", "CPU part"):
        match = re.search(rf"^{key}\s*:\s*(.+)$", text, re.MULTILINE)
        if match:
            return match.group(1).strip()
    return platform.processor() or "unknown"


def int8_class(names: list[str] | None = None) -> str:
    """``"int8 dot-product"`` or ``"no int8 dot-product"``: the class each speed figure is given for."""
    return DOT if DOT_PRODUCT & set(features() if names is None else names) else NO_DOT


def has_fp16_arithmetic(names: list[str] | None = None) -> bool:
    """Whether onnxruntime's fp16 Conv kernels run natively here: Arm64 with fp16 vector arithmetic (a Pi 5's
    Cortex-A76; not a Pi 4's A72). On x86 onnxruntime's CPU provider runs fp16 Convs in fp32."""
    return "fp16 arithmetic" in (features() if names is None else names)


def describe() -> dict:
    """What a timing was made on, as the sidecar and the benchmarks record it."""
    names = features()
    return {"cpu": model(), "arch": platform.machine(), "cpu_features": names, "int8_class": int8_class(names)}
