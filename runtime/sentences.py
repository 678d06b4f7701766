"""Split long text into sentences, and over-long sentences into bounded pieces, lazily."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator

MAX_CHARS = 400  # longest piece handed to the model; longer sentences are split at commas, then spaces
# ... and its most token ids: the text encoder's attention grows with the square of the ids, so a piece's memory
# is bounded by its ids, not its characters. 400 characters of English are 850-950 ids on the built-in voice, but
# 400 CJK characters spelled out by espeak-ng's English are 6,600 and 400 characters of digits 8,100 (a server
# held 1.1 GB after one such request); those are cut again until each piece fits.
MAX_IDS = 1200

_ABBREVIATIONS = {
    "mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "vs", "etc", "no", "mt", "ft", "co", "inc", "ltd",
    "e.g", "i.e", "approx", "dept", "est", "fig", "gen", "gov", "sgt", "capt", "col", "lt", "rev", "jan",
    "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec",
}
_END = re.compile(r"""([.!?…]+["'”’)\]]*)(\s+)""")


def _is_abbreviation(before: str) -> bool:
    word = before.rsplit(None, 1)[-1].lower() if before.strip() else ""
    word = word.lstrip("\"'“‘([")
    return word in _ABBREVIATIONS or (len(word) == 1 and word.isalpha())


def split_sentences(text: str) -> list[str]:
    """Sentences of one paragraph; "Dr. Lee" and "J. R. R." do not end a sentence."""
    sentences, start = [], 0
    for match in _END.finditer(text):
        end = match.end(1)
        if match.end() < len(text) and text[match.end()].islower():
            continue  # "Wait... did you" and "e.g. this" go on
        if match.group(1) == "." and _is_abbreviation(text[start : match.start(1)]):
            continue
        sentences.append(text[start:end].strip())
        start = match.end()
    sentences.append(text[start:].strip())
    return [s for s in sentences if s]


def bounded_pieces(sentence: str, max_chars: int = MAX_CHARS) -> list[str]:
    """Split a sentence longer than ``max_chars`` at clause punctuation, then at spaces, then anywhere."""
    if len(sentence) <= max_chars:
        return [sentence]
    pieces: list[str] = []
    for clause in re.split(r"(?<=[,;:—])\s+", sentence):
        while len(clause) > max_chars:
            cut = clause.rfind(" ", 0, max_chars)
            cut = cut if cut > 0 else max_chars
            pieces.append(clause[:cut].strip())
            clause = clause[cut:].strip()
        if pieces and len(pieces[-1]) + 1 + len(clause) <= max_chars:
            pieces[-1] = f"{pieces[-1]} {clause}"
        elif clause:
            pieces.append(clause)
    return [p for p in pieces if p]


def bounded_by_ids(piece: str, ids_of: Callable[[str], list[int]], max_ids: int = MAX_IDS
                   ) -> Iterator[tuple[str, list[int]]]:
    """``(text, ids)`` of ``piece``, cut (as ``bounded_pieces`` cuts: clauses, spaces, anywhere) into parts of at
    most ``max_ids`` ids each; a single character that alone is longer (none is, in any language here) stays whole."""
    ids = ids_of(piece)
    if len(ids) <= max_ids or len(piece) <= 1:
        yield piece, ids
        return
    chars = max(1, min(len(piece) - 1, len(piece) * max_ids // len(ids)))
    for part in bounded_pieces(piece, chars):
        yield from bounded_by_ids(part, ids_of, max_ids)


def iter_sentences(lines: Iterable[str], max_chars: int = MAX_CHARS) -> Iterator[str]:
    """Yield bounded sentences from lines of text as soon as each is complete.

    A blank line ends a paragraph; a sentence may continue over line breaks. Only the current
    unfinished sentence is held in memory, so memory stays flat however long the text is.
    """
    pending = ""
    for line in lines:
        if not line.strip():
            if pending.strip():
                for sentence in split_sentences(pending):
                    yield from bounded_pieces(sentence, max_chars)
            pending = ""
            continue
        pending = f"{pending} {line.strip()}" if pending else line.strip()
        sentences = split_sentences(pending)
        # the last one may continue on the next line unless it clearly ended
        complete = sentences if re.search(r"""[.!?…]["'”’)\]]*$""", pending) else sentences[:-1]
        for sentence in complete:
            yield from bounded_pieces(sentence, max_chars)
        pending = "" if complete is sentences else (sentences[-1] if sentences else "")
        while len(pending) > 4 * max_chars:  # a very long line without punctuation
            head = bounded_pieces(pending, max_chars)
            yield from head[:-1]
            pending = head[-1]
    if pending.strip():
        for sentence in split_sentences(pending):
            yield from bounded_pieces(sentence, max_chars)


class SentenceStream:
    """Sentences cut from text that arrives in pieces (a Wyoming ``synthesize-chunk`` stream, an LLM's
    tokens): ``add`` returns the sentences its text completed, ``finish`` the rest.

    A sentence is complete when the next one has begun: "Dr. " or "3." at the end of a piece may go on
    ("Dr. Lee", "3.5"), and "Wait... did you" continues in lowercase, so the last sentence of a piece
    waits for more text. Pending text is bounded like ``iter_sentences``' (a long run without
    punctuation is cut at clauses and spaces)."""

    def __init__(self, max_chars: int = MAX_CHARS):
        self.max_chars = max_chars
        self.pending = ""

    def add(self, text: str) -> list[str]:
        self.pending += text
        sentences = split_sentences(self.pending)
        done: list[str] = []
        if len(sentences) > 1:
            for sentence in sentences[:-1]:
                done += bounded_pieces(sentence, self.max_chars)
            tail = sentences[-1]
            self.pending = tail + self.pending[len(self.pending.rstrip()):]  # keep a trailing space: a boundary
        while len(self.pending) > 4 * self.max_chars:
            head = bounded_pieces(self.pending.strip(), self.max_chars)
            done += head[:-1]
            self.pending = head[-1]
        return done

    def finish(self) -> list[str]:
        text, self.pending = self.pending, ""
        return [piece for sentence in split_sentences(" ".join(text.split()))
                for piece in bounded_pieces(sentence, self.max_chars)]
