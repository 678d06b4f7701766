"""Normalise text before word error rate: Whisper writes "9 o'clock" for "nine o'clock".

Both the input text and the transcript go through ``normalize``: lower case, numbers spelled
out the same way on both sides, punctuation dropped. Then ``error_counts`` gives word and
character edit distances.
"""

from __future__ import annotations

import re

from runtime.text.numbers import number_to_words

_DIGITS = "zero one two three four five six seven eight nine".split()
# Spellings Whisper and people use interchangeably; mapped to one form on both sides.
_WORDS = {"doctor": "dr", "mister": "mr", "missus": "mrs", "okay": "ok", "p.m.": "pm", "a.m.": "am"}


def number_words(n: int) -> str:
    """1999 -> "one thousand nine hundred ninety nine": the runtime's (inflect's) words, without "and",
    commas or hyphens, so the same convention holds on both sides."""
    return " ".join(re.sub(r"[,-]", " ", number_to_words(n, andword="")).split())


def _spell(match: re.Match) -> str:
    whole, frac = match.group(1).replace(",", ""), match.group(2)
    words = number_words(int(whole))
    if frac:
        words += " point " + " ".join(_DIGITS[int(d)] for d in frac)
    return f" {words} "


def normalize(text: str) -> str:
    text = text.lower().replace("’", "'").replace("‘", "'").replace("%", " percent ").replace("&", " and ")
    for word, repl in _WORDS.items():
        text = re.sub(rf"(?<![\w.]){re.escape(word)}(?![\w])", f" {repl} ", text)
    text = re.sub(r"(\d+):(\d\d)\b", r"\1 \2", text)  # 3:30 -> 3 30
    text = re.sub(r"(\d+)\.(\d\d)(?=\s*[ap]m\b)", r"\1 \2", text)  # 3.30 pm -> 3 30 pm
    text = re.sub(r"(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d+))?", _spell, text)
    text = re.sub(r"[^\w' ]+", " ", text)  # punctuation (apostrophes inside words stay)
    text = re.sub(r"(?<!\w)'|'(?!\w)", " ", text)
    return " ".join(text.split())


def edit_distance(ref: list, hyp: list) -> int:
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, start=1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, start=1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def error_counts(reference: str, hypothesis: str) -> dict:
    """Word and character edits after normalisation, with the lengths to divide by."""
    ref, hyp = normalize(reference), normalize(hypothesis)
    return {
        "word_errors": edit_distance(ref.split(), hyp.split()),
        "words": len(ref.split()),
        "char_errors": edit_distance(list(ref), list(hyp)),
        "chars": len(ref),
    }
