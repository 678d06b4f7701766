"""Coqui VITS text -> token ids, exactly as ``TTSTokenizer.text_to_ids``, from the sidecar's tokenizer spec.

The steps are TTS's: clean (with the caller's language, region removed), phonemize with espeak-ng
if the voice uses phonemes, look every character up in the vocabulary (unknown ones are dropped
with one warning each), intersperse the blank id, add bos/eos.
"""

from __future__ import annotations

import logging
import os
from typing import Protocol

from ..alignment import Symbols
from .cleaners import get_cleaner, normalize_language
from .errors import FrontendError, UnsupportedTokenizer
from .espeak import EspeakPhonemizer

logger = logging.getLogger("runtime.text")

# Character classes whose ids are plain "symbol -> last index in vocab" lookups (all of Coqui's VITS ones).
SUPPORTED_CHARACTER_CLASSES = {
    "TTS.tts.models.vits.VitsCharacters",
    "TTS.tts.utils.text.characters.Graphemes",
    "TTS.tts.utils.text.characters.IPAPhonemes",
    "TTS.tts.utils.text.characters.BaseCharacters",
    "TTS.tts.utils.text.characters.BaseVocabulary",
}
SUPPORTED_PHONEMIZERS = {"espeak"}


class Tokenizer(Protocol):
    def text_to_ids(self, text: str, language: str | None = None) -> list[int]: ...

    def symbols(self) -> Symbols: ...

    def words(self, text: str, language: str | None = None) -> list[str]: ...


class Vocabulary:
    """Symbol -> id as TTS builds it (``{s: i for i, s in enumerate(vocab)}``: a repeated symbol keeps its last id)."""

    def __init__(self, vocab: list[str]) -> None:
        self.vocab = list(vocab)
        self.ids = {symbol: idx for idx, symbol in enumerate(self.vocab)}
        self.not_found: list[str] = []

    def encode(self, text: str) -> list[int]:
        ids = []
        for char in text:
            idx = self.ids.get(char)
            if idx is not None:
                ids.append(idx)
            elif char not in self.not_found:
                self.not_found.append(char)
                logger.warning("Character %r is not in the voice's vocabulary: dropped (text: %r)", char, text)
        return ids


class CoquiTokenizer:
    """``TTSTokenizer`` without TTS: see ``tokenizer_from_spec``."""

    def __init__(self, vocab: list[str], *, cleaner: str | None = None, phonemizer: EspeakPhonemizer | None = None,
                 add_blank: bool = False, use_eos_bos: bool = False, blank_id: int | None = None,
                 bos_id: int | None = None, eos_id: int | None = None, pad_id: int | None = None) -> None:
        self.vocabulary = Vocabulary(vocab)
        self.cleaner = get_cleaner(cleaner)
        self.phonemizer = phonemizer
        self.add_blank = add_blank
        self.use_eos_bos = use_eos_bos
        n = len(self.vocabulary.vocab)  # TTS uses len(vocab) for a special symbol the voice does not define
        self.blank_id = n if blank_id is None else blank_id
        self.bos_id = n if bos_id is None else bos_id
        self.eos_id = n if eos_id is None else eos_id
        self.pad_id = pad_id

    def clean(self, text: str, language: str | None = None) -> str:
        if self.cleaner is None:
            return text
        return self.cleaner(text, normalize_language(language))

    def to_symbols(self, text: str, language: str | None = None) -> str:
        """Cleaned text, or its phonemes for a phoneme voice: the string whose characters become ids."""
        text = self.clean(text, language)
        if self.phonemizer is not None:
            text = self.phonemizer.phonemize(text, separator="")
        return text

    def symbols(self) -> Symbols:
        """id -> symbol (a repeated symbol answers to each of its ids), blanks, bos/eos."""
        names = dict(enumerate(self.vocabulary.vocab))
        for ident, name in ((self.blank_id, "<blank>"), (self.bos_id, "<bos>"), (self.eos_id, "<eos>")):
            names.setdefault(ident, name)
        return Symbols(names, frozenset({self.blank_id} if self.add_blank else ()),
                       frozenset({self.bos_id, self.eos_id} if self.use_eos_bos else ()))

    def words(self, text: str, language: str | None = None) -> list[str]:
        """The cleaned text's words: what the phonemes of each word were made from."""
        return self.clean(text, language).split()

    def text_to_ids(self, text: str, language: str | None = None) -> list[int]:
        if not isinstance(text, str):
            raise FrontendError(f"text must be a str, not {type(text).__name__}")
        ids = self.vocabulary.encode(self.to_symbols(text, language))
        if self.add_blank:
            spaced = [self.blank_id] * (len(ids) * 2 + 1)
            spaced[1::2] = ids
            ids = spaced
        if self.use_eos_bos:
            ids = [self.bos_id, *ids, self.eos_id]
        return ids


def _special_id(spec: dict, key: str) -> int | None:
    entry = spec.get(key)
    if not entry:
        return None
    try:
        return int(entry["id"])
    except (KeyError, TypeError, ValueError) as exc:
        raise FrontendError(f"tokenizer spec: bad {key!r} entry {entry!r}") from exc


def tokenizer_from_spec(spec: dict, *, espeak_data: str | os.PathLike | None = None) -> CoquiTokenizer:
    """Build the tokenizer a sidecar's ``"tokenizer"`` section describes; fails now, not at the first sentence.

    Raises UnsupportedTokenizer for a cleaner, phonemizer or character class this runtime does not
    reproduce, and EspeakNotFound for a phoneme voice when ``espeak-ng`` is not on PATH.
    ``espeak_data`` is the folder holding an ``espeak-ng-data`` to use instead of the system's.
    """
    if not isinstance(spec, dict):
        raise FrontendError("tokenizer spec must be a JSON object")
    kind = spec.get("type")
    if kind not in ("characters", "phonemes"):
        raise UnsupportedTokenizer(f"tokenizer type {kind!r} is not supported (expected 'characters' or 'phonemes')")
    chars_class = spec.get("characters_class")
    if chars_class is not None and chars_class not in SUPPORTED_CHARACTER_CLASSES:
        raise UnsupportedTokenizer(f"characters class {chars_class!r} is not supported by this runtime")
    vocab = spec.get("vocab")
    if not isinstance(vocab, list) or not all(isinstance(s, str) for s in vocab):
        raise FrontendError("tokenizer spec: 'vocab' must be a list of strings (index = id)")
    get_cleaner(spec.get("cleaner"))  # unsupported cleaner -> UnsupportedTokenizer now
    phonemizer = None
    if kind == "phonemes":
        phon = spec.get("phonemizer") or {}
        name = phon.get("name")
        if name not in SUPPORTED_PHONEMIZERS:
            raise UnsupportedTokenizer(f"phonemizer {name!r} is not supported by this runtime (supported: espeak)")
        if not phon.get("language"):
            raise UnsupportedTokenizer("espeak phonemizer without a language in the tokenizer spec")
        phonemizer = EspeakPhonemizer(phon["language"], phon.get("punctuations"),
                                      keep_puncs=bool(phon.get("keep_puncs", True)), espeak_data=espeak_data)
    return CoquiTokenizer(
        vocab,
        cleaner=spec.get("cleaner"),
        phonemizer=phonemizer,
        add_blank=bool(spec.get("add_blank", False)),
        use_eos_bos=bool(spec.get("use_eos_bos", False)),
        blank_id=_special_id(spec, "blank"),
        bos_id=_special_id(spec, "bos"),
        eos_id=_special_id(spec, "eos"),
        pad_id=_special_id(spec, "pad"),
    )
