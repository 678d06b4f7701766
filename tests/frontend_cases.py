"""Generated test strings for the text frontend parity tests (fixed seed: the same list every run)."""

from __future__ import annotations

import random

_WORD_TEXT = (
    "the a of to and in is it you that he was for on are with as his they be at one have this from or had by "
    "word but what some we can out other were all there when up use your how said an each she which do their "
    "time if will way about many then them write would like so these her long make thing see him two has look "
    "more day could go come did number sound no most people my over know water than call first who may down "
    "side been now find any new work part take get place made live where after back little only round man year "
    "came show every good me give our under name very through just form sentence great think say help low line "
    "kettle violin breakfast museum ancient weather mountains engineer bridge oranges package neighbor"
)
_WORDS = _WORD_TEXT.split()
_NAMES = ["Lee", "Smith", "Jones", "Baker", "O'Neil", "García", "Müller", "Zoë", "Renée", "Ødegaard"]
_ABBREVIATIONS = ["Mr.", "Mrs.", "Dr.", "St.", "Co.", "Jr.", "Maj.", "Gen.", "Drs.", "Rev.", "Lt.", "Hon.", "Sgt.",
                  "Capt.", "Esq.", "Ltd.", "Col.", "Ft.", "mr.", "DR.", "etc.", "e.g.", "i.e.", "vs."]
_PUNCT = [",", ".", "!", "?", ";", ":", "...", "…", " —", " –", " -", "!?", "?!", "!!", ",,", ". .", "‽"]
_QUOTES = [('"', '"'), ("'", "'"), ("“", "”"), ("‘", "’"), ("«", "»"), ("«\u00a0", "\u00a0»"), ("„", "“"),
           ("(", ")"), ("[", "]"), ("{", "}"), ("<", ">")]
_ODD = ["😀", "🎉👍", "♥", "©", "®", "™", "°", "%", "&", "@", "#", "*", "/", "\\", "|", "~", "^", "_", "=",
        "+", "\t", "\u200b", "\u00ad", "\x07", "\x1b", "é", "ñ", "ß", "ø", "ł", "ç", "å", "ö", "ÿ", "Æ", "œ",
        "e\u0301", "n\u0303", "ﬁ", "Ω", "π", "中文", "日本", "ка", "ك", "¡", "¿", "·", "•", "§", "¶", "€", "£", "¥",
        "$"]


def _number(rng: random.Random) -> str:
    kind = rng.randrange(16)
    if kind == 0:
        return str(rng.randrange(0, 20))
    if kind == 1:
        return str(rng.randrange(20, 1000))
    if kind == 2:
        return str(-rng.randrange(1, 5000))
    if kind == 3:
        return f"{rng.randrange(1000, 3000)}"  # years and the 1001..2999 rules
    if kind == 4:
        return f"{rng.randrange(0, 10**rng.randrange(4, 13)):,}"  # 1,234,567
    if kind == 5:
        return f"{rng.randrange(0, 1000)}.{rng.randrange(0, 100):0{rng.randrange(1, 3)}d}"
    if kind == 6:
        n = rng.randrange(0, 200)
        return f"{n}{rng.choice(['st', 'nd', 'rd', 'th'])}"
    if kind == 7:
        return f"{rng.choice('$£¥€')}{rng.randrange(0, 2000):,}" + rng.choice(["", f".{rng.randrange(0, 100):02d}"])
    if kind == 8:
        amount = rng.choice(["0.01", "1", "1.00", "1.01", "0.99", "2.5", "1.2.3", ".50", "1,000.5"])
        return f"{rng.choice('$£¥')}{amount}"
    if kind == 9:
        return f"{rng.randrange(0, 24)}:{rng.randrange(0, 60):02d}" + rng.choice(
            ["", " am", " pm", " AM", " PM", "am", " a.m.", " p.m.", " A.M."])
    if kind == 10:
        return f"{rng.randrange(1, 13)}/{rng.randrange(1, 32)}/{rng.randrange(1900, 2100)}"
    if kind == 11:
        return f"{rng.randrange(1900, 2100)}-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}"
    if kind == 12:
        return str(rng.randrange(10**12, 10**16))
    if kind == 13:
        return rng.choice(["0", "00", "007", "1000", "2000", "2005", "1900", "1100", "10000", "1,0,0", "3.14.15",
                           "1e5", "42nd", "101st", "111th", "1000000th", "12:00", "0:00", "23:59", "24:00", "1-2"])
    if kind == 14:
        return "9" * rng.randrange(30, 45)  # past inflect's largest named power
    return f"{rng.randrange(1, 100)}%"


def _piece(rng: random.Random) -> str:
    kind = rng.randrange(10)
    if kind < 4:
        return rng.choice(_WORDS)
    if kind == 4:
        return _number(rng)
    if kind == 5:
        return rng.choice(_ABBREVIATIONS) + " " + rng.choice(_NAMES)
    if kind == 6:
        open_, close = rng.choice(_QUOTES)
        return open_ + " ".join(rng.choice(_WORDS) for _ in range(rng.randrange(1, 4))) + close
    if kind == 7:
        return rng.choice(_NAMES)
    if kind == 8:
        return rng.choice(_ODD)
    return rng.choice(_WORDS) + rng.choice(_PUNCT)


def _case(rng: random.Random, word: str) -> str:
    roll = rng.random()
    if roll < 0.15:
        return word.upper()
    if roll < 0.3:
        return word.capitalize()
    return word


def generated_strings(n: int, seed: int = 1234) -> list[str]:
    """``n`` strings mixing words, numbers, money, times, dates, abbreviations, quotes, unicode, emoji, spaces."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        pieces = [_case(rng, _piece(rng)) for _ in range(rng.randrange(1, 9))]
        text = ""
        for piece in pieces:
            text += rng.choice([" ", " ", " ", "  ", "\t", "\n", ""]) + piece
        text = text[1:] if rng.random() < 0.8 else text
        text += rng.choice(["", ".", "!", "?", "...", " ", "  \n", ",", "\u00a0"])
        out.append(text)
    return out


EDGE_CASES = [
    "", " ", "   \n\t ", ".", "...", "!?", "—", "«»", '"', "''", "()", "😀", "😀 🎉", "\x00", "\x07\x1b", "a\x00b",
    "Hello, world!", "Hello , world !", "  leading and trailing  ", "UPPER lower MiXeD", "tab\tseparated\ttext",
    "line\nbreaks\n\nand paragraphs", "¡Hola! ¿Qué tal?", "«Bonjour», dit-il.", "Wait… what", "Wait... what",
    "He said: “Stop—now!”", "semi; colon: dash - en – em —", "a.b.c.", "U.S.A.'s economy", "3.14159",
    "It costs $5.50, £3.20 or ¥100.", "€20 and €1.50", "1st 2nd 3rd 4th 11th 12th 13th 21st 101st 0th",
    "Call me at 3:30pm or 12:05.", "from 9:00 am to 5:30 PM", "Dr. Smith met Mr. and Mrs. Jones on St. James St.",
    "In 1999, 2000, 2001, 2010 and 2024.", "-5 degrees and -1,000 feet", "10,000,000,000 stars",
    "Tom & Jerry", "x-ray, e-mail", "[brackets] {braces} <angles>", "naïve café résumé", "ﬁne ligature",
    "Ναι", "Привет", "你好", "مرحبا", "a\u0301\u0302", "zero\u200bwidth", "soft\u00adhyphen", "x" * 300,
    "word " * 120, "1" * 40, "No. 5", "e.g. this, i.e. that", "Ph.D. students", "C++ & C#", "50% off!",
]
