"""Plans: one treatment per unit (``QuantConfig``), the fixed presets, and each unit's ladder of treatments."""

from __future__ import annotations

import platform
from dataclasses import dataclass

from exporter.errors import ExportError
from exporter.quant.units import DURATION_UNITS

STORAGE = ("fp16w", "int8w")
TRAINED = "qdq+ft"  # qdq+, then the plan's int8 vocoder fine-tuned against fp32 (exporter/quant/finetune.py)
FP16 = "fp16"  # the convolutions compute in fp16 (exporter/quant/half.py): native only on cores with fp16 arithmetic
COMPUTE = ("dynamic", "qdq", "qdq+", TRAINED, FP16)
QDQ_OPS = {"qdq": ("Conv", "MatMul"), "qdq+": ("Conv", "MatMul", "Add", "LeakyRelu", "Mul")}
QDQ_OPS[TRAINED] = QDQ_OPS["qdq+"]


@dataclass(frozen=True)
class QuantConfig:
    """How one variant is made; recorded verbatim in the sidecar."""

    preset: str
    plan: tuple[tuple[str, str], ...]  # (unit or unit prefix, option): the first match wins; "fp32" or no
    # match: left as exported
    weight_type: str = "int8"  # static QDQ weights; dynamic ConvInteger weights are always uint8 (see below)
    calibration_sentences: int = 16  # percentile calibration (MinMax, entropy, least squares: worse)
    # The decoder's audio-rate activations are heavy-tailed: clipping the top 0.1% halves their int8
    # error (log-mel 1.78 -> 0.87 dB for the last stage with its Adds); the flow's are not (0.54 -> 0.73 dB).
    # Measured on the real voice against 99.0-99.999, MinMax, entropy and per-tensor least squares.
    percentiles: tuple[tuple[str, float], ...] = (("decoder", 99.9), ("", 99.999))
    target: str = "x86"
    # Quantized tensors left in fp32 inside units that compute in QDQ (their Quantize/Dequantize pairs removed:
    # exporter/quant/sensitivity.py): the few that make a stage's int8 error, by auto's ranking.
    keep_fp32: tuple[str, ...] = ()

    def option(self, unit: str | None) -> str | None:
        if unit is None:
            return None
        for name, option in self.plan:
            if unit == name or unit.startswith(name + "."):
                return None if option == "fp32" else option
        return None

    def describe(self) -> str:
        plan = ", ".join(f"{u}={o}" for u, o in self.plan) or "all fp32"
        return plan + (f" ({len(self.keep_fp32)} tensor{'s' if len(self.keep_fp32) > 1 else ''} kept fp32)"
                       if self.keep_fp32 else "")


# --target: the CPU a variant is for. x86 and arm64 only record it (the recipes are the same); the Pis also make
# auto's speed decisions by the Pi's estimated cost (exporter/pi) instead of this machine's timings.
PI_TARGETS = ("pi4", "pi5")
TARGETS = ("x86", "arm64", *PI_TARGETS)


def machine_target() -> str:
    return "arm64" if platform.machine().lower() in ("aarch64", "arm64") else "x86"


def check_target(target: str | None) -> str:
    """``target``, or this machine's when None; ExportError naming the known ones otherwise."""
    if target is None:
        return machine_target()
    if target not in TARGETS:
        raise ExportError(f"unknown target {target!r}: choose one of {', '.join(TARGETS)}")
    return target


def preset(name: str, target: str | None = None) -> QuantConfig:
    target = check_target(target)
    if name == "dynamic":
        # Only the flow: dynamic int8 in the decoder cost 0.6 DNSMOS P.808 on the real voice.
        return QuantConfig("dynamic", (("flow", "dynamic"),), calibration_sentences=0,
                           target=target)
    if name == "static":
        # QDQ: signed symmetric per-channel weights, unsigned activations (VNNI / ARM dot-product path),
        # on the flow and the decoder, the Adds and LeakyRelus between the convolutions included; not on
        # conv_post (one output channel), where int8 is slower than fp32 (54 ms against 37 ms).
        return QuantConfig("static", (("flow", "qdq+"), ("decoder.post", "fp32"), ("decoder", "qdq+")),
                           target=target)
    if name == "finetuned":
        # static's int8 compute, its vocoder then fine-tuned against fp32 (exporter/quant/finetune.py); the
        # text encoder and duration predictor in fp16 storage (they decide durations: never int8 here).
        return QuantConfig("finetuned", (("flow", "qdq+"), ("decoder.post", "fp32"), ("decoder", TRAINED),
                                         ("text_encoder", "fp16w"), ("text_encoder_ffn", "fp16w"),
                                         ("duration_predictor", "fp16w")), target=target)
    if name == FP16:
        # The flow's and the decoder's convolutions in fp16 arithmetic (the upsamplers in polyphase form, as
        # Convs), for a Pi 5; conv_post and everything that decides durations stay fp32.
        return QuantConfig(FP16, (("flow", FP16), ("decoder.post", "fp32"), ("decoder", FP16)),
                           calibration_sentences=0, target=target)
    if name == "auto":
        raise ExportError("the auto preset is searched, not fixed: use quantize_voice(..., 'auto')")
    raise ExportError(f"unknown preset {name!r}: choose one of {', '.join(ALL_PRESETS)}")


PRESETS = ("dynamic", "static", "auto")  # made in minutes; every one is checked on the emulated Pis
# Trained for up to half an hour (exporter/quant/finetune.py); its file has static's ops, so what the ARM check
# proves for static holds for it.
FINETUNED = "finetuned"
ALL_PRESETS = PRESETS + (FINETUNED, FP16)
DEFAULT_PRESET = "auto"  # measured per voice: the fastest plan inside the quality budget


def options_for(unit: str, finetune: bool = False) -> tuple[tuple[str, str | None], ...]:
    """``(option, the rung below it)``: an option is tried only if the rung below passed the budget. With
    ``finetune`` a decoder stage has a last rung, qdq+ fine-tuned, tried whenever its int8 weights passed (it
    is there for the stages whose plain qdq/qdq+ listeners reject)."""
    if unit.startswith(DURATION_UNITS):
        return (("fp16w", None), ("int8w", "fp16w"), ("dynamic", "int8w"))
    if unit == "decoder.post":
        # conv_post has one output channel: int8 compute is slower there (QLinearConv 54 ms against 37 ms
        # fp32 over the 25 dev sentences), and its weights are too few to be worth storing smaller.
        return ()
    ladder = (("int8w", None), ("qdq", "int8w"), ("qdq+", "qdq"))
    if unit == "flow":
        return ladder + (("dynamic", "int8w"),)
    # decoder stages (upsamplers in polyphase form: see exporter/quant/polyphase.py)
    return ladder + (((TRAINED, "int8w"),) if finetune else ())
