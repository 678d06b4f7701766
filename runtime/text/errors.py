"""Errors raised by the text frontend (re-exported by ``runtime.text``)."""

from __future__ import annotations


class FrontendError(ValueError):
    """Base class for text frontend problems."""


class UnsupportedTokenizer(FrontendError):
    """The voice asks for a cleaner, phonemizer or vocabulary setup this runtime does not reproduce."""


class EspeakNotFound(FrontendError):
    """A phoneme voice needs the ``espeak-ng`` program, and it is not on PATH."""
