"""Make ``import TTS`` work next to a CPU-only torch, without touching site-packages.

coqui-tts 0.28 refuses to import in the environment vits-edge installs, for reasons that
have nothing to do with VITS inference or ONNX export:

* ``TTS/__init__.py`` raises unless ``torchaudio`` is importable, and
  ``TTS/tts/models/vits.py`` does ``import torchaudio`` at module level.  VITS uses it only
  for training-time audio loading and resampling (``load_audio``, ``audio_resampler``).
  PyPI's current torchaudio is a CUDA build whose native library fails to load beside the
  CPU build of torch (missing ``libc10_cuda.so``), so we do not install it at all.
* With torch >= 2.9, ``TTS/__init__.py`` raises unless ``torchcodec`` is installed; it is
  used only for audio file IO, which export never does.
* ``TTS/tts/utils/text/punctuation.py`` imports ``six`` without declaring it: that one is a
  real runtime need, so the ``export`` extra depends on ``six``.

``ensure_tts_importable()`` registers placeholder modules for ``torchaudio`` and
``torchcodec`` *only when the real package cannot be imported*.  Any use of a placeholder
(e.g. loading a WAV for training) raises an ImportError that says why.  The guard is scoped
to this process and is applied by the exporter before its first ``import TTS``;
``tests/test_tts_compat.py`` fails if it stops working.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import sys
import types

_PLACEHOLDERS = ("torchaudio", "torchcodec")
_REASON = (
    "{name} is not usable here ({error}). vits-edge only needs TTS for VITS inference and "
    "ONNX export, which never touch {name}; it was replaced by a placeholder. Install a "
    "{name} build matching your torch if you need TTS's audio IO or training."
)


class _Placeholder(types.ModuleType):
    """A module whose every attribute access raises a helpful ImportError."""

    def __init__(self, name: str, error: str) -> None:
        super().__init__(name)
        self.__spec__ = importlib.machinery.ModuleSpec(name, loader=None)
        self.__path__ = []  # a package, so ``import torchaudio.transforms`` resolves here too
        self.__vits_edge_placeholder__ = True
        self._message = _REASON.format(name=name, error=error)

    def __getattr__(self, attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)
        raise ImportError(self._message)


def _usable(name: str) -> str | None:
    """Return None if ``name`` imports, else a short reason why not."""
    if name in sys.modules:
        return None
    try:
        importlib.import_module(name)
    except Exception as exc:  # a broken native library raises OSError, not ImportError
        sys.modules.pop(name, None)
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return None


def ensure_tts_importable() -> None:
    """Install placeholders for unusable optional TTS dependencies, then import TTS."""
    for name in _PLACEHOLDERS:
        error = _usable(name)
        if error is not None:
            sys.modules[name] = _Placeholder(name, error)
    try:
        import TTS  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            f"Could not import coqui-tts ({exc}). Install the export extra: "
            "pip install 'vits-edge[export]' (after the CPU build of torch)."
        ) from exc


def is_placeholder(module: types.ModuleType) -> bool:
    return bool(getattr(module, "__vits_edge_placeholder__", False))
