"""English numbers, currency, ordinals and times in words, exactly as Coqui TTS writes them.

TTS (``TTS/tts/utils/text/english/number_norm.py`` and ``time_norm.py``) calls the ``inflect``
package for number words. ``number_to_words`` below reproduces inflect 7's ``number_to_words`` for
what TTS asks of it: integers (with a sign), ordinal strings such as ``"21st"``, ``andword`` and
``zero`` overrides, and digit grouping ``group`` 0, 1 or 2. The regular expressions and their order
are TTS's own.
"""

from __future__ import annotations

import re

_UNIT = ["", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
_TEEN = ["ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
_TEN = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_MILL = [" ", " thousand", " million", " billion", " trillion", " quadrillion", " quintillion", " sextillion",
         " septillion", " octillion", " nonillion", " decillion"]
_NTH_SUFFIXES = {"th", "st", "nd", "rd"}
_ORDINAL = {"ty": "tieth", "one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
            "nine": "ninth", "twelve": "twelfth"}
_ORDINAL_SUFFIX = re.compile(rf"({'|'.join(_ORDINAL)})\Z")

_DIGIT = re.compile(r"(\d)")
_TWO_DIGITS = re.compile(r"(\d)(\d)")
_THREE_DIGITS_WORD = re.compile(r"(\d)(\d)(\d)(?=\D*\Z)")
_TWO_DIGITS_WORD = re.compile(r"(\d)(\d)(?=\D*\Z)")
_ONE_DIGIT_WORD = re.compile(r"(\d)(?=\D*\Z)")
_NON_DIGIT = re.compile(r"\D")
_WHITESPACES_COMMA = re.compile(r"\s+,")
_COMMA_WORD = re.compile(r", (\S+)\s+\Z")
_WHITESPACES = re.compile(r"\s+")


class NumberTooLarge(Exception):
    """More digits than the largest named power (decillion); inflect's NumOutOfRangeError."""


class _Speller:
    """One call of inflect's ``number_to_words`` (its per-call state: andword, zero, mill_count)."""

    def __init__(self, andword: str, zero: str) -> None:
        self.andword = andword
        self.zero = zero
        self.mill_count = 0

    @staticmethod
    def mill(index: int) -> str:
        if index > len(_MILL) - 1:
            raise NumberTooLarge
        return _MILL[index]

    def tens(self, tens: int, units: int, mindex: int = 0) -> str:
        if tens != 1:
            hyphen = "-" if tens and units else ""
            return f"{_TEN[tens]}{hyphen}{_UNIT[units]}{self.mill(mindex)}"
        return f"{_TEEN[units]}{self.mill(mindex)}"

    def hundreds(self, hundreds: int, tens: int, units: int, mindex: int) -> str:
        if hundreds:
            andword = f" {self.andword} " if tens or units else ""
            return f"{_UNIT[hundreds]} hundred{andword}{self.tens(tens, units)}{self.mill(mindex)}, "
        if tens or units:
            return f"{self.tens(tens, units)}{self.mill(mindex)}, "
        return ""

    def _hundsub(self, mo: re.Match) -> str:
        out = self.hundreds(int(mo.group(1)), int(mo.group(2)), int(mo.group(3)), self.mill_count)
        self.mill_count += 1
        return out

    def _group1(self, mo: re.Match) -> str:
        units = int(mo.group(1))
        if units == 1:
            return " one, "
        return f"{_UNIT[units]}, " if units else f" {self.zero}, "

    def _group1b(self, mo: re.Match) -> str:
        units = int(mo.group(1))
        return f"{_UNIT[units]}, " if units else f" {self.zero}, "

    def _group2(self, mo: re.Match) -> str:
        tens, units = int(mo.group(1)), int(mo.group(2))
        if tens:
            return f"{self.tens(tens, units)}, "
        if units:
            return f" {self.zero} {_UNIT[units]}, "
        return f" {self.zero} {self.zero}, "

    def enword(self, num: str, group: int) -> str:
        if group == 1:
            return _DIGIT.sub(self._group1, num)
        if group == 2:
            head = (len(num) - 1) % 2 + 1
            parts = [num[:head]] + [num[i : i + 2] for i in range(head, len(num), 2)]
            return "".join(
                _DIGIT.sub(self._group1b, p) if len(p) == 1 else _TWO_DIGITS.sub(self._group2, p) for p in parts
            )
        if int(num) == 0:
            return self.zero
        if int(num) == 1:
            return "one"
        num = num.lstrip().lstrip("0")
        self.mill_count = 0
        while _THREE_DIGITS_WORD.search(num):
            num = _THREE_DIGITS_WORD.sub(self._hundsub, num, 1)
        num = _TWO_DIGITS_WORD.sub(lambda mo: f"{self.tens(int(mo.group(1)), int(mo.group(2)), self.mill_count)}, ",
                                   num, 1)
        return _ONE_DIGIT_WORD.sub(lambda mo: f"{_UNIT[int(mo.group(1))]}{self.mill(self.mill_count)}, ", num, 1)


def _ordinal_words(words: str) -> str:
    new = _ORDINAL_SUFFIX.sub(lambda mo: _ORDINAL[mo.group(1)], words)
    return new + "th" * (new == words)


def number_to_words(num: int | str, *, andword: str = "and", zero: str = "zero", group: int = 0) -> str:
    """inflect's ``engine().number_to_words(num, group=, andword=, zero=)`` for integers and ordinals.

    Raises NumberTooLarge where inflect raises NumOutOfRangeError (group 0, over 36 digits).
    """
    if group not in (0, 1, 2):
        raise ValueError(f"group {group} is not supported")
    speller = _Speller(andword, zero)
    num = str(num)
    sign = {"+": "plus", "-": "minus"}.get(num.lstrip()[0], "")
    if num in _NTH_SUFFIXES:
        num = zero
    ordinal = num[-2:] in _NTH_SUFFIXES
    if ordinal:
        num = num[:-2]
    chunks = num.split(".", -1 if group else 1)
    finalpoint = chunks[-1] == ""
    if finalpoint:
        chunks = chunks[:-1]
    loopstart = chunks[0] == ""
    first: bool | None = not loopstart
    for i in range(int(loopstart), len(chunks)):
        chunk = _NON_DIGIT.sub("", chunks[i]) or "0"
        chunk = speller.enword(chunk, 1 if group == 0 and not first else group)
        if chunk[-2:] == ", ":
            chunk = chunk[:-2]
        chunk = _WHITESPACES_COMMA.sub(",", chunk)
        if group == 0 and first:
            chunk = _COMMA_WORD.sub(f" {andword} \\1", chunk)
            chunk = _WHITESPACES_COMMA.sub(",", chunk)
        chunks[i] = _WHITESPACES.sub(" ", chunk).strip()
        if first:
            first = None
    words = chunks[0].split(", ") if first != 0 else []
    if ordinal and words:
        words[-1] = _ordinal_words(words[-1])
    for chunk in chunks[1:]:
        words.append("point")
        words.extend(chunk.split(", "))
    if finalpoint:
        words.append("point")
    signout = f"{sign} " if sign else ""
    if group:
        return signout + ", ".join(words)
    # inflect's _render: a comma between words, none right after "point"
    out = [words[0]]
    after_point = words[0].endswith("point")
    for word in words[1:]:
        if word == "point":
            after_point = True
        elif not after_point:
            out.append(",")
        out.append(f" {word}")
    return signout + "".join(out)


# --- TTS/tts/utils/text/english/number_norm.py --------------------------------------------------------
_COMMA_NUMBER = re.compile(r"([0-9][0-9\,]+[0-9])")
_DECIMAL_NUMBER = re.compile(r"([0-9]+\.[0-9]+)")
_CURRENCY = re.compile(r"(£|\$|¥)([0-9\,\.]*[0-9]+)")
_ORDINAL_NUMBER = re.compile(r"[0-9]+(st|nd|rd|th)")
_NUMBER = re.compile(r"-?[0-9]+")
_CURRENCIES = {
    "$": {0.01: "cent", 0.02: "cents", 1: "dollar", 2: "dollars"},
    "€": {0.01: "cent", 0.02: "cents", 1: "euro", 2: "euros"},
    "£": {0.01: "penny", 0.02: "pence", 1: "pound sterling", 2: "pounds sterling"},
    "¥": {0.02: "sen", 2: "yen"},
}


def _currency(m: re.Match) -> str:
    inflection = _CURRENCIES[m.group(1)]
    value = m.group(2)
    parts = value.replace(",", "").split(".")
    if len(parts) > 2:
        return f"{value} {inflection[2]}"
    text = []
    integer = int(parts[0]) if parts[0] else 0
    if integer > 0:
        text.append(f"{integer} {inflection.get(integer, inflection[2])}")
    fraction = int(parts[1]) if len(parts) > 1 and parts[1] else 0
    if fraction > 0:
        text.append(f"{fraction} {inflection.get(fraction / 100, inflection[0.02])}")
    if not text:
        return f"zero {inflection[2]}"
    return " ".join(text)


def _number(m: re.Match) -> str:
    num = int(m.group(0))
    if 1000 < num < 3000:
        if num == 2000:
            return "two thousand"
        if 2000 < num < 2010:
            return "two thousand " + number_to_words(num % 100)
        if num % 100 == 0:
            return number_to_words(num // 100) + " hundred"
        return number_to_words(num, andword="", zero="oh", group=2).replace(", ", " ")
    try:
        return number_to_words(num, andword="")
    except NumberTooLarge:
        return number_to_words(num, group=1).replace(", ", " ")


def _ordinal(m: re.Match) -> str:
    try:
        return number_to_words(m.group(0))
    except NumberTooLarge:  # TTS raises here; read the digits one by one instead, the last as an ordinal
        words = number_to_words(m.group(0)[:-2], group=1).replace(", ", " ").split(" ")
        return " ".join(words[:-1] + [_ordinal_words(words[-1])])


def normalize_numbers(text: str) -> str:
    """TTS's ``en_normalize_numbers``: commas, currency, decimals, ordinals, then integers."""
    text = _COMMA_NUMBER.sub(lambda m: m.group(1).replace(",", ""), text)
    text = _CURRENCY.sub(_currency, text)
    text = _DECIMAL_NUMBER.sub(lambda m: m.group(1).replace(".", " point "), text)
    text = _ORDINAL_NUMBER.sub(_ordinal, text)
    return _NUMBER.sub(_number, text)


# --- TTS/tts/utils/text/english/time_norm.py (the pattern is TTS's, quirks included) ------------------
_TIME = re.compile(
    r"""\b
                          ((0?[0-9])|(1[0-1])|(1[2-9])|(2[0-3]))  # hours
                          :
                          ([0-5][0-9])                            # minutes
                          \s*(a\\.m\\.|am|pm|p\\.m\\.|a\\.m|p\\.m)? # am/pm
                          \b""",
    re.IGNORECASE | re.VERBOSE,
)


def _time(m: re.Match) -> str:
    hour = int(m.group(1))
    past_noon = hour >= 12
    words = []
    if hour > 12:
        hour -= 12
    elif hour == 0:
        hour = 12
        past_noon = True
    words.append(number_to_words(hour))
    minute = int(m.group(6))
    if minute > 0:
        if minute < 10:
            words.append("oh")
        words.append(number_to_words(minute))
    am_pm = m.group(7)
    if am_pm is None:
        words.append("p m" if past_noon else "a m")
    else:
        words.extend(list(am_pm.replace(".", "")))
    return " ".join(words)


def expand_time(text: str) -> str:
    """TTS's ``expand_time_english``."""
    return _TIME.sub(_time, text)
