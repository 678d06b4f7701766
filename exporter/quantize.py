"""int8 variants of an exported voice: ``model.<preset>.onnx`` beside ``model.onnx``.

A variant is a *plan*: for each unit of the voice (the text encoder's embedding/attention, its
feed-forward layers, the duration predictor, the flow, each upsampling stage of the decoder) one
treatment, every unit not named staying fp32:

* ``fp16w`` / ``int8w``: weights stored in fp16 / int8 (per output channel), computed in fp32
  (folded back to fp32 at load: no cost at run time, see weight_only.py);
* ``dynamic``: onnxruntime's dynamic ConvInteger (activations quantized at run time);
* ``qdq``: static QDQ on the convolutions (and MatMuls), calibrated on built-in sentences;
* ``qdq+``: ``qdq`` plus the Add / LeakyRelu / Mul between them, so activations stay int8.

The upsamplers of a decoder stage computed in int8 become polyphase Convs (polyphase.py).

What the measurements on the real voice decided (each variant records its own in the sidecar):

* The text encoder and the duration predictor decide every duration; any change to their
  arithmetic moves some ``ceil`` across a frame boundary. Their int8 compute, and even int8
  weight storage, changed the length of 18 of 25 dev sentences; fp16 storage of any of their
  parts still moves one length in 50 (10 sentences at 5 length scales), and int16 storage moves
  one of the 25 dev sentences (a phoneme lasts 2.00036 frames before rounding up). They stay fp32.
* onnxruntime's dynamic ConvInteger on x86 is 3x slower than fp32 with signed (per-channel)
  weights and slightly faster with unsigned per-tensor weights.
* The flow and the HiFi-GAN decoder only shape the sound, and they hold 61% of the weights and
  82% of the time: they are where int8 compute goes. int8 in the flow keeps DNSMOS; int8 in the
  decoder loses it unless chosen layer by layer (``auto``).
* In the decoder, int8 weights alone cost 0.2 dB log-mel; activations are the problem. Clipping
  the decoder's activations at the 99.9th percentile halves the damage of MinMax or 99.999;
  quantizing the residual stream (Add) costs most but is what makes int8 fast (no Q/DQ glue).
  int8 noise at the highest sample rate is heard (DNSMOS) long before log-mel shows it: one
  resblock of the last stage in int8 already costs 0.06-0.09 DNSMOS OVRL.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import platform
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from exporter.errors import ExportError
from exporter.io import atomic_write_bytes
from runtime import contract

logger = logging.getLogger(__name__)

STORAGE = ("fp16w", "int8w")
COMPUTE = ("dynamic", "qdq", "qdq+")
QDQ_OPS = {"qdq": ("Conv", "MatMul"), "qdq+": ("Conv", "MatMul", "Add", "LeakyRelu", "Mul")}
CALIBRATION_OPS = ("Conv", "MatMul", "Add", "LeakyRelu", "Mul")  # one calibration serves every plan
STATIC_UNITS = ("flow", "decoder")  # the only units static QDQ may touch (durations: see below)
DURATION_UNITS = ("text_encoder", "duration_predictor")  # they decide every output length
LENGTH_SCALES = (0.8, 0.9, 1.0, 1.1, 1.25)


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

    def option(self, unit: str | None) -> str | None:
        if unit is None:
            return None
        for name, option in self.plan:
            if unit == name or unit.startswith(name + "."):
                return None if option == "fp32" else option
        return None

    def describe(self) -> str:
        return ", ".join(f"{u}={o}" for u, o in self.plan) or "all fp32"


def machine_target() -> str:
    return "arm64" if platform.machine().lower() in ("aarch64", "arm64") else "x86"


def preset(name: str, target: str | None = None) -> QuantConfig:
    target = target or machine_target()
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
    if name == "auto":
        raise ExportError("the auto preset is searched, not fixed: use quantize_voice(..., 'auto')")
    raise ExportError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")


PRESETS = ("dynamic", "static", "auto")
DEFAULT_PRESET = "auto"  # measured per voice: the fastest plan inside the quality budget

CALIBRATION_SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "She sells sea shells by the sea shore, and the shells she sells are surely seashells.",
    "How much wood would a woodchuck chuck if a woodchuck could chuck wood?",
    "Please call Stella and ask her to bring these things with her from the store.",
    "Six spoons of fresh snow peas, five thick slabs of blue cheese, and maybe a snack for her brother.",
    "We also need a small plastic snake and a big toy frog for the kids.",
    "A rainbow is a division of white light into many beautiful colors.",
    "Yesterday, at half past seven, the orchestra played a quiet piece by an unknown composer.",
    "Is this the right way to the station, or should we turn back?",
    "Wow! That was absolutely incredible.",
    "Numbers like 1,234 and dates like March 3rd, 2021 should be read clearly.",
    "The committee will meet again on Thursday to discuss the budget.",
    "Hmm, I am not sure that is what she meant.",
    "Every morning he walks his dog along the river before work.",
    "Thunder rolled across the valley as the storm approached the village.",
    "Could you spell your name for me, please?",
)


# -- units ----------------------------------------------------------------------------------------
def node_units(model) -> dict[str, str]:
    """Node name -> unit. Decoder stages are cut at each upsampler (graph order is topological):
    ``decoder.0`` holds conv_pre and the first stage; conv_post is ``decoder.post``."""
    units, stage = {}, 0
    for node in model.graph.node:
        name = node.name
        if name.startswith("/text_encoder/encoder/ffn_layers"):
            units[name] = "text_encoder_ffn"
        elif name.startswith("/text_encoder"):
            units[name] = "text_encoder"
        elif name.startswith("/duration_predictor"):
            units[name] = "duration_predictor"
        elif name.startswith("/flow"):
            units[name] = "flow"
        elif name.startswith("/waveform_decoder"):
            if name.startswith("/waveform_decoder/ups."):  # the ConvTranspose, or its polyphase form
                stage = int(name.split("/ups.")[1].split("/")[0])
            units[name] = f"decoder.{stage}"
    # conv_post (the most sensitive layer: it makes the waveform) and what follows it are their own unit;
    # so is the LeakyRelu feeding it.
    post = [n for n in model.graph.node if n.name.startswith("/waveform_decoder/conv_post")]
    if post:
        producers = {o: n for n in model.graph.node for o in n.output}
        feeding = producers.get(post[0].input[0])
        names = [n.name for n in model.graph.node if n.name.startswith("/waveform_decoder")]
        tail = names[names.index(post[0].name):]
        for name in tail + ([feeding.name] if feeding is not None and feeding.op_type == "LeakyRelu" else []):
            units[name] = "decoder.post"
    return units


def unit_names(model) -> list[str]:
    return list(dict.fromkeys(node_units(model).values()))


# -- building -------------------------------------------------------------------------------------
def _calibration_feeds(voice_dir: Path, count: int) -> list[dict]:
    """One feed per calibration sentence, at zero noise and the voice's length scale."""
    from exporter.verify import onnx_feeds
    from runtime.voice import Voice

    voice = Voice.load(voice_dir)
    return [onnx_feeds([voice.text_to_ids(text)], [0.0, voice.config.length_scale, 0.0],
                       sid=0 if contract.SID in voice.input_names else None,
                       langid=0 if contract.LANGID in voice.input_names else None)
            for text in CALIBRATION_SENTENCES[:count]]


class _Reader:
    def __init__(self, feeds):
        self._it = iter(feeds)

    def get_next(self):
        return next(self._it, None)


def calibrate(voice_dir: Path, cfg: QuantConfig, cache: Path) -> None:
    """Activation ranges of every tensor that static QDQ may quantize (those of the units in
    STATIC_UNITS), saved to ``cache`` once and reused by every plan built from it (auto builds dozens)."""
    import onnx
    from onnxruntime.quantization.calibrate import PercentileCalibrater, save_tensors_data

    from exporter import polyphase

    if cache.is_file():
        return
    feeds = _calibration_feeds(voice_dir, cfg.calibration_sentences)
    with tempfile.TemporaryDirectory(prefix="vits-edge-cal-") as tmp, _quiet_quantizer():
        # Calibrated in the polyphase form, so that every plan finds the ranges of its tensors (the
        # upsamplers' outputs have the same values in both forms).
        model = onnx.load(str(Path(voice_dir) / contract.MODEL_FILE))
        polyphase.rewrite(model, lambda node: True)
        src = Path(tmp) / "polyphase.onnx"
        onnx.save(model, str(src))
        units = node_units(model)
        keep = {t for n in model.graph.node if units.get(n.name, "").startswith(STATIC_UNITS)
                for t in (*n.input, *n.output)}

        class Calibrater(PercentileCalibrater):  # only what can be quantized: a third of the tensors
            def select_tensors_to_calibrate(self, model):
                tensors, value_infos = super().select_tensors_to_calibrate(model)
                return tensors & keep, value_infos

        calibrator = Calibrater(src, list(CALIBRATION_OPS), str(Path(tmp) / "aug.onnx"), symmetric=True,
                                percentile=dict(cfg.percentiles)[""])
        calibrator.augment_graph()
        calibrator.create_inference_session()
        # One sentence at a time: the histograms merge across calls, while collecting several feeds at
        # once stacks their tensors (frame counts differ: it fails) and holds them all in memory.
        for feed in feeds:
            calibrator.collect_data(_Reader([feed]))
        unit_of = {out: units.get(n.name, "") for n in model.graph.node for out in n.output}
        ranges = _percentile_ranges(calibrator.collector, calibrator.compute_data(), unit_of, cfg.percentiles)
        save_tensors_data(ranges, cache)


def _percentile_ranges(collector, ranges, unit_of: dict[str, str], percentiles: tuple[tuple[str, float], ...]):
    """Each tensor clipped at the percentile of the unit that makes it (one histogram pass)."""
    from onnxruntime.quantization.calibrate import TensorsData

    by_percentile = {}
    for pct in {p for _, p in percentiles}:
        collector.percentile = pct
        by_percentile[pct] = collector.compute_collection_result()

    def percentile(tensor: str) -> float:
        unit = unit_of.get(tensor, "")
        return next(p for prefix, p in percentiles if unit == prefix or unit.startswith(prefix))

    return TensorsData(ranges.calibration_method, {name: by_percentile[percentile(name)][name] for name in ranges.data})


def build(voice_dir: Path, cfg: QuantConfig, dst: Path, cache: Path | None = None) -> None:
    """Write the variant ``cfg`` of ``voice_dir/model.onnx`` to ``dst``."""
    with _quiet_quantizer():
        _build(Path(voice_dir) / contract.MODEL_FILE, voice_dir, cfg, dst, cache)


@contextlib.contextmanager
def _quiet_quantizer():
    """onnxruntime's quantizer logs on the root logger (a pre-processing hint, a line per tensor it
    skips) and prints calibration progress: none of it is news to our user."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


def _build(src: Path, voice_dir: Path, cfg: QuantConfig, dst: Path, cache: Path | None) -> None:
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

    from exporter import polyphase
    from exporter.weight_only import store_weights_fp16, store_weights_int8

    model = onnx.load(str(src))
    units = node_units(model)
    # Upsamplers of int8 stages become polyphase Convs (see exporter/polyphase.py): int8 kernels exist
    # for them in that form, and no ConvTranspose is left between a DequantizeLinear and a
    # QuantizeLinear for onnxruntime to quantize behind our back.
    polyphase.rewrite(model, lambda node: cfg.option(units.get(node.name)) in QDQ_OPS)
    units = node_units(model)
    option = {name: cfg.option(unit) for name, unit in units.items()}
    static = {o: [n.name for n in model.graph.node if option.get(n.name) == o and
                  (n.op_type in QDQ_OPS[o] or n.name.endswith(polyphase.SHUFFLE_SUFFIXES))]
              for o in QDQ_OPS}
    dynamic = [n.name for n in model.graph.node if option.get(n.name) == "dynamic" and n.op_type == "Conv"]
    with tempfile.TemporaryDirectory(prefix=".vits-edge-quant-", dir=dst.parent) as tmp:
        current = Path(tmp) / "fp32.onnx"
        onnx.save(model, str(current))
        if static["qdq"] or static["qdq+"]:
            with contextlib.ExitStack() as stack:
                if cache is None:
                    cache = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "ranges.json"
                calibrate(voice_dir, cfg, cache)
                out = Path(tmp) / "static.onnx"
                quantize_static(str(current), str(out), None, quant_format=QuantFormat.QDQ,
                                op_types_to_quantize=sorted({op for o in QDQ_OPS for op in QDQ_OPS[o]}
                                                            | {"Reshape", "Transpose"}),
                                nodes_to_quantize=static["qdq"] + static["qdq+"], per_channel=True,
                                activation_type=QuantType.QUInt8,
                                weight_type=QuantType.QInt8 if cfg.weight_type == "int8" else QuantType.QUInt8,
                                calibrate_method=CalibrationMethod.Percentile, calibration_cache_path=str(cache),
                                extra_options={"WeightSymmetric": True, "ActivationSymmetric": False})
                current = out
        if dynamic:
            # x86: unsigned per-tensor weights are the only fast ConvInteger path (signed per-channel: 3x slower).
            out = Path(tmp) / "dynamic.onnx"
            quantize_dynamic(str(current), str(out), op_types_to_quantize=["Conv"], nodes_to_quantize=dynamic,
                             weight_type=QuantType.QUInt8, per_channel=False)
            current = out
        model = onnx.load(str(current))
        store_weights_fp16(model, lambda node: option.get(node.name) == "fp16w")
        store_weights_int8(model, lambda node: option.get(node.name) == "int8w")
        onnx.save(model, str(dst))


# -- measuring ------------------------------------------------------------------------------------
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
        ``timed=False`` for weight storage: the same kernels run (see exporter/weight_only.py)."""
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


# -- the command ----------------------------------------------------------------------------------
def _record(voice_dir: Path, name: str, record: dict) -> None:
    sidecar_path = contract.sidecar_path(Path(voice_dir) / contract.MODEL_FILE)
    sidecar = json.loads(sidecar_path.read_text(encoding="utf-8"))
    sidecar.setdefault("variants", {})[name] = record
    atomic_write_bytes(sidecar_path, (json.dumps(sidecar, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))


def check_voice_dir(voice_dir: Path) -> None:
    src = Path(voice_dir) / contract.MODEL_FILE
    if not src.is_file() or not contract.sidecar_path(src).is_file():
        raise ExportError(f"{voice_dir} is not an exported voice folder (needs {contract.MODEL_FILE} and its .json)")


def quantize_voice(voice_dir: Path, preset_name: str = DEFAULT_PRESET, *, target: str | None = None,
                   budget=None, report=print) -> Path:
    """Write ``voice_dir/model.<preset>.onnx`` and record how it was made (and measured) in the sidecar."""
    voice_dir = Path(voice_dir)
    check_voice_dir(voice_dir)
    if preset_name == "auto":
        from exporter.auto import search

        return search(voice_dir, target=target, budget=budget, report=report)
    cfg = preset(preset_name, target)
    dst = voice_dir / f"model.{cfg.preset}.onnx"
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=".vits-edge-quant-", dir=voice_dir) as tmp:
        staged = Path(tmp) / "model.onnx"
        build(voice_dir, cfg, staged)
        measured = Comparison(voice_dir, CALIBRATION_SENTENCES).measure(staged)
        measured.pop("_audio")
        measured["seconds"] = round(time.perf_counter() - start, 1)
        shutil.move(str(staged), dst)
    _record(voice_dir, dst.name, {"config": asdict(cfg), "measured": measured})
    logger.info("wrote %s: %s", dst, measured)
    add_pieces(voice_dir, dst.name)
    return dst


def add_pieces(voice_dir: Path, name: str) -> None:
    """The variant's streaming pieces (its own plan, cut like model.onnx); a variant whose pieces fail
    their check is kept, and spoken whole sentences at a time."""
    from exporter import pieces

    try:
        pieces.add(voice_dir, name)
    except ExportError as exc:
        logger.error("%s; %s stays usable, without streaming", exc, name)
