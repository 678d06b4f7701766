"""Device-side text frontend: text -> token ids for Coqui VITS voices and Piper voices.

Standard library only (espeak-ng is run as a program). The pieces, one concern per module:

- ``cleaners``, ``numbers``, ``abbreviations``: Coqui TTS's text cleaners;
- ``punctuation``, ``espeak``: TTS's espeak-ng phonemizer with punctuation strip-and-restore;
- ``tokenizer``: ``TTSTokenizer.text_to_ids`` from the sidecar's tokenizer spec;
- ``clauses``, ``piper``: Piper's espeak-ng phonemes (clause terminators, sentences) and ids.
"""

from __future__ import annotations

from .errors import EspeakNotFound, FrontendError, UnsupportedTokenizer
from .piper import PiperTokenizer, piper_tokenizer
from .tokenizer import CoquiTokenizer, Tokenizer, tokenizer_from_spec

__all__ = [
    "CoquiTokenizer",
    "EspeakNotFound",
    "FrontendError",
    "PiperTokenizer",
    "Tokenizer",
    "UnsupportedTokenizer",
    "piper_tokenizer",
    "tokenizer_from_spec",
]
