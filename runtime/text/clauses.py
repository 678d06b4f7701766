"""Where espeak-ng ends its clauses, and with which punctuation: a port of its ``ReadClause``.

Piper asks the espeak-ng library for phonemes clause by clause, together with the punctuation
that ended each clause (``espeak_TextToPhonemesWithTerminator``); it keeps that punctuation as
phonemes and starts a new sentence after ``. ? !``. The ``espeak-ng`` program prints one line
per clause but not the terminators, so ``clause_ends`` re-reads the text the way espeak-ng's
``ReadClause`` (espeak-ng 1.52, ``src/libespeak-ng/readclause.c``) does for plain text: no SSML,
no spoken punctuation, no embedded commands. It returns one ``(terminator, end_of_sentence)`` per
clause, in the form Piper's ``espeakbridge`` gives them.
"""

from __future__ import annotations

import unicodedata

# readclause.h
OPTIONAL_SPACE_AFTER = 0x00008000
PUNCTUATION_IN_WORD = 0x00100000
SPEAK_PUNCTUATION_NAME = 0x00200000
DOT_AFTER_LAST_WORD = 0x00400000
INTONATION_FULL_STOP, INTONATION_COMMA, INTONATION_QUESTION = 0x0000, 0x1000, 0x2000
INTONATION_EXCLAMATION, INTONATION_NONE = 0x3000, 0x4000
TYPE_EOF, TYPE_CLAUSE, TYPE_SENTENCE = 0x00010000, 0x00040000, 0x00080000

CLAUSE_NONE = 0 | INTONATION_NONE
CLAUSE_PARAGRAPH = 70 | INTONATION_FULL_STOP | TYPE_SENTENCE
CLAUSE_EOF = 40 | INTONATION_FULL_STOP | TYPE_SENTENCE | TYPE_EOF
CLAUSE_PERIOD = 40 | INTONATION_FULL_STOP | TYPE_SENTENCE
CLAUSE_COMMA = 20 | INTONATION_COMMA | TYPE_CLAUSE
CLAUSE_QUESTION = 40 | INTONATION_QUESTION | TYPE_SENTENCE
CLAUSE_EXCLAMATION = 45 | INTONATION_EXCLAMATION | TYPE_SENTENCE
CLAUSE_COLON = 30 | INTONATION_FULL_STOP | TYPE_CLAUSE
CLAUSE_SEMICOLON = 30 | INTONATION_COMMA | TYPE_CLAUSE

# Piper's espeakbridge.c: the terminator it reports for a clause type (masked to 20 bits)
TERMINATORS = {CLAUSE_PERIOD: ".", CLAUSE_QUESTION: "?", CLAUSE_EXCLAMATION: "!", CLAUSE_COMMA: ",",
               CLAUSE_COLON: ":", CLAUSE_SEMICOLON: ";"}

# espeak-ng's own punctuation properties (src/ucd-tools/src/proplist.c, ESPEAKNG_PROPERTY_*):
# F full stop, Q question, E exclamation, C comma, O colon, S semicolon, D extended dash,
# L ellipsis, P paragraph separator, + optional space after, I inverted, W inside a word.
# fmt: off
_PROPERTIES = {
    "+C": (0x3001, 0xff0c), "+E": (0xff01,), "+EI": (0xa1,), "+IQ": (0xbf,), "+O": (0xff1a,), "+Q": (0xff1f,),
    "+S": (0xff1b,), "+F": (0x589, 0x964, 0xdf4, 0xf0d, 0x3002, 0xff0e),
    "C": (
        0x2c, 0x55d, 0x60c, 0x702, 0x7f8, 0xf14, 0x1363, 0x1802, 0x1808, 0x2e32, 0x2e34, 0x2e41, 0xa4fe, 0xa60d,
        0xa6f5, 0xfe10, 0xfe11, 0xfe50, 0xfe51, 0xff64, 0x1144d, 0x1da87, 0x1f101, 0x1f102, 0x1f103, 0x1f104,
        0x1f105, 0x1f106, 0x1f107, 0x1f108, 0x1f109, 0x1f10a, 0xe002c,
    ),
    "D": (0x2013, 0x2014, 0x2e3a, 0x2e3b, 0xfe31, 0xfe32),
    "E": (0x21, 0x703, 0x7f9, 0x1944, 0x203c, 0x2755, 0x2757, 0x2762, 0x2763, 0xfe15, 0xfe57, 0x1e95e, 0xe0021),
    "EQ": (0x2048, 0x2049), "EW": (0x55b, 0x55c), "QW": (0x55e,),
    "F": (
        0x2e, 0x6d4, 0x701, 0x704, 0x1362, 0x166e, 0x1803, 0x1809, 0x2488, 0x2489, 0x248a, 0x248b, 0x248c,
        0x248d, 0x248e, 0x248f, 0x2490, 0x2491, 0x2492, 0x2493, 0x2494, 0x2495, 0x2496, 0x2497, 0x2498, 0x2499,
        0x249a, 0x249b, 0x2cf9, 0x2cfe, 0x2e33, 0x2e3c, 0xa4ff, 0xa60e, 0xa6f3, 0xfe12, 0xfe52, 0xff61, 0x16af5,
        0x1bc9f, 0x1da88, 0x1f100, 0xe002e,
    ),
    "L": (0xeaf, 0x1801, 0x2026, 0x22ee, 0x22ef, 0x22f0, 0x22f1, 0xfe19),
    "O": (
        0x3a, 0x706, 0x707, 0x1365, 0x1366, 0x1804, 0x2982, 0xa6f4, 0xfe13, 0xfe55, 0x12471, 0x12472, 0x1da8a,
        0xe003a,
    ),
    "P": (0x700, 0x965, 0xf0e, 0x10fb, 0x1368),
    "Q": (
        0x3f, 0x37e, 0x61f, 0x709, 0x1367, 0x1945, 0x2047, 0x2753, 0x2754, 0x2cfa, 0x2cfb, 0xa60f, 0xa6f7,
        0xfe16, 0xfe56, 0x11143, 0x1e95f, 0xe003f,
    ),
    "S": (0x3b, 0x387, 0x61b, 0x708, 0x1364, 0x204f, 0x2e35, 0xa6f6, 0xfe14, 0xfe54, 0x1da89, 0xe003b),
}
# fmt: on
# readclause.c: clause_type_from_codepoint
_TYPE_OF_PROPERTY = {
    "F": CLAUSE_PERIOD, "+F": CLAUSE_PERIOD | OPTIONAL_SPACE_AFTER,
    "Q": CLAUSE_QUESTION, "+Q": CLAUSE_QUESTION | OPTIONAL_SPACE_AFTER, "QW": CLAUSE_QUESTION | PUNCTUATION_IN_WORD,
    "E": CLAUSE_EXCLAMATION, "+E": CLAUSE_EXCLAMATION | OPTIONAL_SPACE_AFTER,
    "EW": CLAUSE_EXCLAMATION | PUNCTUATION_IN_WORD,
    "C": CLAUSE_COMMA, "+C": CLAUSE_COMMA | OPTIONAL_SPACE_AFTER,
    "O": CLAUSE_COLON, "+O": CLAUSE_COLON | OPTIONAL_SPACE_AFTER,
    "S": CLAUSE_SEMICOLON, "D": CLAUSE_SEMICOLON, "+S": CLAUSE_SEMICOLON | OPTIONAL_SPACE_AFTER,
    "+IQ": CLAUSE_SEMICOLON | OPTIONAL_SPACE_AFTER, "+EI": CLAUSE_SEMICOLON | OPTIONAL_SPACE_AFTER,
    "L": CLAUSE_SEMICOLON | SPEAK_PUNCTUATION_NAME | OPTIONAL_SPACE_AFTER,
    "P": CLAUSE_PARAGRAPH, "EQ": CLAUSE_NONE,
}
_CLAUSE_TYPE = {c: _TYPE_OF_PROPERTY[p] for p, codes in _PROPERTIES.items() for c in codes}
_QUESTION_OR_EXCLAMATION = CLAUSE_QUESTION | CLAUSE_EXCLAMATION  # a bit mask in ReadClause, used as such
_BRACKETS = {ord(c) for c in "()[]{}<>\"'`"} | {0xAB, 0xBB, 0x300A, 0x300B, 0xE000 + ord("<")}
_CHARS_IGNORE = {0xAD: 1, 0x200C: 1, 0x200D: 1}  # tr_languages.c chars_ignore_default
# languages whose translator sets NUM_ORDINAL_DOT ("2. Mai"); tr_languages.c
_ORDINAL_DOT_LANGUAGES = {"da", "de", "et", "fi", "fo", "hu", "kl", "lt", "lv", "ltg", "nl", "nb", "sl", "smj"}
N_TR_SOURCE = 800  # translate.h: bytes of one clause
CTRL_EMBEDDED = 0x01


def clause_type(c: int) -> int:
    if c == 0x2029:  # the one character of category Zp
        return CLAUSE_PARAGRAPH
    return _CLAUSE_TYPE.get(c, CLAUSE_NONE)


# ucd-tools' character classes (what espeak-ng's iswspace & co. are)
def _isspace(c: int) -> bool:
    if c in (0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x85, 0x2028, 0x2029):
        return True
    return c < 0x110000 and unicodedata.category(chr(c)) == "Zs" and c not in (0xA0, 0x2007, 0x202F)


def _isalpha(c: int) -> bool:
    if c >= 0x110000:
        return False
    cat = unicodedata.category(chr(c))
    return cat[0] == "L" or cat in ("Nl", "Mc")


def _isalnum(c: int) -> bool:
    return _isalpha(c) or (c < 0x110000 and unicodedata.category(chr(c)) in ("Nd", "No"))


def _islower(c: int) -> bool:
    if c >= 0x110000:
        return False
    cat = unicodedata.category(chr(c))
    if cat == "Lt":
        return chr(c).upper() != chr(c)
    return cat == "Ll" or (cat in ("Lm", "Lo", "Mn", "Nl", "So") and chr(c).islower())


def _isdigit(c: int) -> bool:
    return 0x30 <= c <= 0x39


def _is_alpha_espeak(c: int) -> bool:
    """common.c IsAlpha: iswalpha plus some in-word marks."""
    if _isalpha(c):
        return True
    if c < 0x300:
        return False
    if 0x901 <= c <= 0xDF7:
        return (c & 0x7F) < 0x64 or c in (0xA70, 0xA71) or 0xD7A <= c <= 0xD7F
    return (0x5B0 <= c <= 0x5C2 or c == 0x605 or c == 0x670 or 0x64B <= c <= 0x65E or 0x300 <= c <= 0x36F
            or 0xF40 <= c <= 0xFBC or 0x1100 <= c <= 0x11FF or 0x2800 <= c <= 0x28FF or 0x3040 < c <= 0xA700)


def _is_bracket(c: int) -> bool:
    return 0x2014 <= c <= 0x201F or c in _BRACKETS


def _utf8_len(c: int) -> int:
    return 1 if c < 0x80 or c >= 0x110000 else 2 if c < 0x800 else 3 if c < 0x10000 else 4


class _Text:
    """espeak-ng's text decoder plus its one-character push-back (``GetC``/``UngetC``/``Eof``)."""

    def __init__(self, text: str) -> None:
        self.codes = [ord(ch) for ch in text.split("\x00", 1)[0]] + [0]  # a C string, NUL included
        self.pos = 0
        self.ungot = 0

    def decoder_eof(self) -> bool:
        return self.pos >= len(self.codes)

    def eof(self) -> bool:
        return self.ungot == 0 and self.decoder_eof()

    def getc(self) -> int:
        if self.ungot:
            c, self.ungot = self.ungot, 0
            return c
        if self.decoder_eof():
            return 0
        c = self.codes[self.pos]
        self.pos += 1
        return c

    def ungetc(self, c: int) -> None:
        self.ungot = c

    def peekc(self) -> int:
        return 0 if self.decoder_eof() else self.codes[self.pos]


def _read_clause(t: _Text, lang: str) -> int:
    """ReadClause for plain text; returns the clause type."""
    c1 = ord(" ")
    cprev = ord(" ")
    ix = 0
    any_alnum = False
    c2 = 0 if t.eof() else t.getc()
    while not t.eof():
        cprev2, cprev, c1 = cprev, c1, c2
        c2 = ord(" ") if t.eof() else t.getc()
        ignore = _CHARS_IGNORE.get(c1)
        if ignore == 1:
            continue
        if _isalnum(c1):
            any_alnum = True
        elif c1 == 0xF0B:
            c1 = ord(" ")
        elif c1 == 0xD4D and c2 == 0x200D:
            c1 = 0xD4E
        if c1 == 0x0A:
            parag = 0
            while not t.eof() and _isspace(c2):
                if c2 == 0x0A:
                    parag += 1
                c2 = t.getc()
            if parag > 0:
                t.ungetc(c2)
                return (CLAUSE_PARAGRAPH - 30) + 30 * min(parag, 3)
        is_end_clause = False
        if c1 == ord(".") and c2 == ord("."):
            c_next = 0
            while not t.eof():
                c_next = t.getc()
                if c_next != ord("."):
                    break
                c1, c2 = 0x2026, ord(" ")  # three or more dots: an ellipsis
            if c1 == 0x2026:
                c2 = c_next
            else:
                t.ungetc(c_next)
        punct = clause_type(c1)
        if punct != CLAUSE_NONE:
            if punct & _QUESTION_OR_EXCLAMATION:
                while not t.eof() and clause_type(c2) & _QUESTION_OR_EXCLAMATION:
                    c2 = t.getc()
            if punct & PUNCTUATION_IN_WORD:
                continue
            if (_isspace(c2) or punct & OPTIONAL_SPACE_AFTER or _is_bracket(c2) or c2 == ord("?") or t.eof()
                    or c2 == CTRL_EMBEDDED):
                is_end_clause = True
        if is_end_clause:
            nl_count = 0
            c_next = c2
            if _isspace(c_next):
                while not t.eof() and _isspace(c_next):
                    if c_next == 0x0A:
                        nl_count += 1
                    c_next = t.getc()
            if c1 == ord(".") and nl_count < 2:
                punct |= DOT_AFTER_LAST_WORD
            if nl_count == 0:
                if (c1 == ord(",") and cprev == ord(".") and lang == "hu" and _isdigit(cprev2)
                        and (_isdigit(c_next) or _islower(c_next))):
                    is_end_clause = False  # Hungarian ordinal "2.,"
                if c1 == ord(".") and c_next == ord("'") and t.peekc() == ord("s"):
                    is_end_clause = False  # "u.s.a.'s"
                if c1 == ord("."):
                    roman = "IVXLCDM"
                    ordinal = _isdigit(cprev) or (chr(cprev) in roman and (chr(cprev2) in roman or _isspace(cprev2)))
                    if lang in _ORDINAL_DOT_LANGUAGES and ordinal and (
                            not _isdigit(cprev) or _islower(c_next) or c_next == ord("-")):
                        is_end_clause = False  # "2. Mai", "XII. Jahrhundert"
                    if _islower(c_next):
                        is_end_clause = False  # probably an abbreviation
                    if not any_alnum:
                        c1 = ord(" ")
                        is_end_clause = False
                elif not any_alnum:
                    is_end_clause = False
            if is_end_clause:
                t.ungetc(c_next)
                if nl_count > 1:
                    if punct in (CLAUSE_QUESTION, CLAUSE_EXCLAMATION):
                        return punct + 35
                    return CLAUSE_PARAGRAPH
                return punct
            if not t.eof() and _isspace(c2):
                t.ungetc(c_next)
        ix += _utf8_len(c1)
        if (ix > N_TR_SOURCE - 75 and not _is_alpha_espeak(c1) and not _isdigit(c1)) or ix >= N_TR_SOURCE - 4:
            t.ungetc(c2)  # clause too long: broken here
            return CLAUSE_NONE
    return CLAUSE_EOF


def clause_ends(text: str, language: str = "en") -> list[tuple[str, bool]]:
    """``(terminator, end_of_sentence)`` for each clause espeak-ng makes of ``text``, as Piper reports them.

    The terminator is one of ``. ? ! , : ;`` (a dash ends a clause with ``;``) or "" (end of text,
    paragraph, ellipsis, inverted ``¡ ¿``, a clause cut for length); ``language`` is the voice's
    language code ("en" for "en-us").
    """
    t = _Text(text)
    ends = []
    while True:
        kind = _read_clause(t, language) & 0x000FFFFF
        ends.append((TERMINATORS.get(kind, ""), bool(kind & TYPE_SENTENCE)))
        if t.decoder_eof():
            return ends
