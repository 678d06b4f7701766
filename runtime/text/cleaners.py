"""Coqui TTS's text cleaners (``TTS/tts/utils/text/cleaners.py``), step for step.

Each cleaner takes ``(text, lang)``, where ``lang`` is the language TTS's tokenizer passes: the
caller's language with any region removed ("en-US" -> "en"), or None. As in TTS, ``None`` turns off
the language-dependent steps (abbreviations, "&"), even for ``english_cleaners``.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

from .abbreviations import expand_abbreviations
from .errors import UnsupportedTokenizer
from .numbers import expand_time, normalize_numbers

Cleaner = Callable[[str, "str | None"], str]

_WHITESPACE = re.compile(r"\s+")
_AUX_SYMBOLS = re.compile(r"[\<\>\(\)\[\]\"]+")


def normalize_language(language: str | None) -> str | None:
    """TTS's ``normalize_language``: "en-US" -> "en"."""
    return None if language is None else language.split("-")[0]


def normalize_unicode(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def collapse_whitespace(text: str) -> str:
    return _WHITESPACE.sub(" ", text).strip()


def remove_aux_symbols(text: str) -> str:
    return _AUX_SYMBOLS.sub("", text)


def replace_symbols(text: str, lang: str | None = "en") -> str:
    if lang != "el":  # semicolons work as question marks in Greek
        text = text.replace(";", ",")
    text = text.replace("-", " ") if lang != "ca" else text.replace("-", "")
    text = text.replace(":", ",")
    if lang == "en":
        text = text.replace("&", " and ")
    elif lang == "fr":
        text = text.replace("&", " et ")
    elif lang in ("it", "pt"):
        text = text.replace("&", " e ")
    elif lang == "ca":
        text = text.replace("&", " i ")
        text = text.replace("'", "")
    return text


def basic_cleaners(text: str, lang: str | None = None) -> str:
    return collapse_whitespace(normalize_unicode(text).lower())


def basic_turkish_cleaners(text: str, lang: str | None = "tr") -> str:
    return collapse_whitespace(normalize_unicode(text).replace("I", "ı").lower())


def english_cleaners(text: str, lang: str | None = "en") -> str:
    text = normalize_unicode(text).lower()
    text = expand_time(text)
    text = normalize_numbers(text)
    text = expand_abbreviations(text, lang)
    text = replace_symbols(text, lang)
    text = remove_aux_symbols(text)
    return collapse_whitespace(text)


def phoneme_cleaners(text: str, lang: str | None = "en") -> str:
    text = normalize_unicode(text)
    text = normalize_numbers(text)
    text = expand_abbreviations(text, lang)
    text = replace_symbols(text, lang)
    text = remove_aux_symbols(text)
    return collapse_whitespace(text)


def multilingual_phoneme_cleaners(text: str, lang: str | None = None) -> str:
    text = replace_symbols(normalize_unicode(text), lang)
    return collapse_whitespace(remove_aux_symbols(text))


def multilingual_cleaners(text: str, lang: str | None = None) -> str:
    text = replace_symbols(normalize_unicode(text).lower(), lang)
    return collapse_whitespace(remove_aux_symbols(text))


def portuguese_cleaners(text: str, lang: str | None = "pt") -> str:
    text = replace_symbols(normalize_unicode(text).lower(), lang)
    return collapse_whitespace(remove_aux_symbols(text))


def no_cleaners(text: str, lang: str | None = None) -> str:
    return text.replace("\n", "")


CLEANERS: dict[str, Cleaner] = {
    "basic_cleaners": basic_cleaners,
    "transliteration_cleaners": basic_cleaners,  # identical in coqui-tts 0.28 (its ASCII step is commented out)
    "basic_german_cleaners": basic_cleaners,  # identical in coqui-tts 0.28
    "basic_turkish_cleaners": basic_turkish_cleaners,
    "english_cleaners": english_cleaners,
    "phoneme_cleaners": phoneme_cleaners,
    "multilingual_cleaners": multilingual_cleaners,
    "multilingual_phoneme_cleaners": multilingual_phoneme_cleaners,
    "portuguese_cleaners": portuguese_cleaners,
    "no_cleaners": no_cleaners,
}


def get_cleaner(name: str | None) -> Cleaner | None:
    """The cleaner TTS's tokenizer would use for ``config.text_cleaner``; None for none."""
    if name is None:
        return None
    if not isinstance(name, str) or name not in CLEANERS:
        supported = ", ".join(sorted(CLEANERS))
        raise UnsupportedTokenizer(f"text cleaner {name!r} is not supported by this runtime (supported: {supported})")
    return CLEANERS[name]
