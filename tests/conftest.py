"""Shared fixtures; anything that needs torch or TTS is imported lazily so runtime tests run without them."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DEV_SENTENCES = REPO.parent / "shared" / "eval" / "dev_sentences.txt"


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


def dev_sentences() -> list[str]:
    return [line.strip() for line in DEV_SENTENCES.read_text(encoding="utf-8").splitlines() if line.strip()]
