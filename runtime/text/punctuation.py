"""Punctuation strip-and-restore around the phonemizer, as Coqui TTS does it.

A port of ``TTS/tts/utils/text/punctuation.py``: the text is cut at runs of punctuation, the
pieces are phonemized one by one, and the punctuation runs (with their spaces) are put back.
"""

from __future__ import annotations

import re
from enum import Enum
from typing import NamedTuple

DEFAULT_PUNCTUATIONS = ';:,.!?¡¿—…"«»“”'


class Position(Enum):
    BEGIN = 0
    END = 1
    MIDDLE = 2


class Mark(NamedTuple):
    punc: str
    position: Position


class Punctuation:
    def __init__(self, puncs: str = DEFAULT_PUNCTUATIONS) -> None:
        self.puncs = "".join(dict.fromkeys(puncs))  # drop duplicates, keep the order
        self.regex = re.compile(rf"(\s*[{re.escape(self.puncs)}]+\s*)+")

    def strip(self, text: str) -> str:
        """Replace each punctuation run by a space."""
        return re.sub(self.regex, " ", text).strip()

    def strip_to_restore(self, text: str) -> tuple[list[str], list[Mark]]:
        """"This is. example !" -> (["This is", "example"], [".", "!"] with their positions)."""
        matches = list(re.finditer(self.regex, text))
        if not matches:
            return [text], []
        if len(matches) == 1 and matches[0].group() == text:  # only punctuation
            return [], [Mark(text, Position.BEGIN)]
        puncs = []
        for match in matches:
            position = Position.MIDDLE
            if match == matches[0] and text.startswith(match.group()):
                position = Position.BEGIN
            elif match == matches[-1] and text.endswith(match.group()):
                position = Position.END
            puncs.append(Mark(match.group(), position))
        pieces = []
        for idx, punc in enumerate(puncs):
            split = text.split(punc.punc)
            prefix, suffix = split[0], punc.punc.join(split[1:])
            text = suffix
            if prefix == "":
                continue  # no empty piece for a leading punctuation run
            pieces.append(prefix)
            if idx == len(puncs) - 1 and len(suffix) > 0:
                pieces.append(suffix)
        return pieces, puncs

    @classmethod
    def restore(cls, text: list[str], puncs: list[Mark]) -> list[str]:
        """(["This is", "example"], [".", "!"]) -> ["This is. example!"]."""
        # TTS's recursive _restore, unrolled into a loop (the same steps, no recursion limit)
        done: list[str] = []
        while True:
            if not puncs:
                return done + text
            if not text:
                return done + ["".join(m.punc for m in puncs)]
            current, puncs = puncs[0], puncs[1:]
            if current.position == Position.BEGIN:
                text = [current.punc + text[0]] + text[1:]
            elif current.position == Position.END:
                done.append(text[0] + current.punc)
                text = text[1:]
            elif len(text) == 1:  # the end of a middle mark was not phonemized
                text = [text[0] + current.punc]
            else:
                text = [text[0] + current.punc + text[1]] + text[2:]
