"""Hostile inputs for ``python -m benchmarks.fuzz``: texts a voice may be asked to say and byte strings a Wyoming
client may send. Every case is made from its own ``random.Random(f"{seed}:{case}")``, so one case is remade
alone (``--case N``) from the seed and its number, whatever the count of the run that found it."""

from __future__ import annotations

import json
import random

# (first, last) code points of the scripts and symbol blocks texts are drawn from
BLOCKS = {
    "latin": (0x20, 0x7E), "latin-ext": (0xA0, 0x24F), "ipa": (0x250, 0x2AF), "greek": (0x370, 0x3FF),
    "cyrillic": (0x400, 0x4FF), "hebrew": (0x590, 0x5FF), "arabic": (0x600, 0x6FF), "devanagari": (0x900, 0x97F),
    "gurmukhi": (0xA00, 0xA7F), "thai": (0xE00, 0xE7F), "georgian": (0x10A0, 0x10FF), "hangul": (0xAC00, 0xD7A3),
    "kana": (0x3040, 0x30FF), "cjk": (0x4E00, 0x9FFF), "box": (0x2500, 0x259F), "symbols": (0x2100, 0x23FF),
    "punctuation": (0x2000, 0x206F), "fullwidth": (0xFF00, 0xFFEF), "private": (0xE000, 0xF8FF),
    "emoji": (0x1F300, 0x1FAFF), "math": (0x1D400, 0x1D7FF), "any": (0x0, 0x10FFFF),
}
COMBINING = (0x300, 0x36F)
CONTROLS = [chr(c) for c in [*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0)]] + \
    ["\u2028", "\u2029", "\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\ufffe", "\uffff"]
BIDI = ["\u200e", "\u200f", "\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068",
        "\u2069", "\u061c"]
WORDS = ("hello world the quick brown fox jumps over a lazy dog turn on kitchen lights it is Dr Mr St vs etc "
         "minute second am pm").split()
LITERALS = [
    "░ਝ", "", " ", "\n", "\t\t", ".", "...", "?!", "-", "'", '"', "‐", "…", "——", "\x00", "\u200b", "\ufeff",
    "a" * 5000, "." * 3000, "1" * 400, "9" * 37, "0.0000000001", "-0", "1e308", "½ ¼ ¾", "Ⅻ ⅷ", "٣٤٥",
    "१२३", "𝟏𝟐𝟑", "#1", "No. 1", "3:30", "25:61", "$1,000,000.50", "£0.01", "€", "1st 2nd 3rd 101st",
    "Mr. Mrs. Dr. St. Jr.", "e.g. i.e. etc.", "I.B.M.", "👍🏽", "👨‍👩‍👧‍👦", "🇺🇸🇫🇷", "1️⃣", "\U0001F9D1\u200d\U0001F680",
    "Z̤̈͂a̸̧͓l̴g̵o̶", "ﷺ", "ﷰ", "ᄀᄀᄀ", "ﾟ", "\u0e33", "ö" * 200, "ǅ", "ß" * 50, "ﬃ", "İ", "ŉ", "ΐ",
    "<speak>hi</speak>", "<break time='5s'/>", "&amp;&lt;&#x41;&#0;", "{{x}}", "%s%n%x", "\\x00\\n", "<?xml?>",
    "[[[[[[", ")))", "\"'\"'", "¿¡", "א ב ג", "مرحبا بالعالم", "Hello \u202eworld\u202c!", "ਸਤਿ ਸ੍ਰੀ ਅਕਾਲ",
]
SSML = ["<speak>", "</speak>", "<break time=\"{n}ms\"/>", "<prosody rate=\"{n}%\">", "</prosody>",
        "<say-as interpret-as=\"digits\">", "</say-as>", "<phoneme alphabet=\"ipa\" ph=\"həˈloʊ\">", "</phoneme>",
        "<emphasis>", "</emphasis>", "<!-- {w} -->", "<![CDATA[{w}]]>", "&amp;", "&lt;", "&#{n};", "&#x{n:x};",
        "<{w} {w}=\"{n}\">", "</{w}>", "<", ">", "/>"]
NUMBER_SHAPES = ["{n}", "-{n}", "{n}.{m}", "{n},{m}", "{n}:{m}", "{n}st", "{n}th", "${n}", "£{n}.{m}", "{n}%",
                 "{n}/{m}", "{n}^{m}", "{n}e{m}", "#{n}", "{n}-{m}", "0x{n:x}", "{n}°C", "{n}km/h", "{big}"]


def rng_for(seed: int, case: int) -> random.Random:
    return random.Random(f"{seed}:{case}")


def _chars(rng: random.Random, block: str, n: int) -> str:
    first, last = BLOCKS[block]
    return "".join(chr(rng.randint(first, last)) for _ in range(n))


def _words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def _number(rng: random.Random) -> str:
    shape = rng.choice(NUMBER_SHAPES)
    return shape.format(n=rng.choice([0, 1, 7, 13, 100, 1000, 10 ** rng.randint(3, 40), rng.randint(0, 10 ** 9)]),
                        m=rng.randint(0, 99999), big="".join(rng.choice("0123456789,.") for _ in range(rng.randint(1, 120))))


def _scripts(rng):
    blocks = rng.sample(sorted(BLOCKS), rng.randint(1, 4))
    return " ".join(_chars(rng, rng.choice(blocks), rng.randint(0, 12)) for _ in range(rng.randint(1, 20)))


def _controls(rng):
    return "".join(rng.choice(CONTROLS) if rng.random() < 0.4 else rng.choice(WORDS) + " " for _ in range(rng.randint(1, 40)))


def _empty(rng):
    return "".join(rng.choice(["", " ", "\n", "\t", "\r\n", "\u200b", "\u00a0", "\u3000", ".", ","])
                   for _ in range(rng.randint(0, 30)))


def _huge(rng):
    unit = rng.choice([_words(rng, 12) + ". ", _words(rng, 30) + " ", "9" * 50 + " ", _scripts(rng), "a"])
    return unit * max(1, rng.randint(2_000, 20_000) // max(1, len(unit)))


def _markup(rng):
    parts = []
    for _ in range(rng.randint(1, 25)):
        if rng.random() < 0.5:
            parts.append(rng.choice(SSML).format(n=rng.randint(0, 100000), w=rng.choice(WORDS)))
        else:
            parts.append(_words(rng, rng.randint(1, 5)))
    return "".join(parts)


def _digits(rng):
    return " ".join(_number(rng) if rng.random() < 0.6 else rng.choice(WORDS) for _ in range(rng.randint(1, 15)))


def _emoji(rng):
    parts = []
    for _ in range(rng.randint(1, 15)):
        e = _chars(rng, "emoji", 1)
        e += rng.choice(["", "\ufe0f", "\U0001F3FB", "\U0001F3FF", "\u200d" + _chars(rng, "emoji", 1), "\u20e3"])
        parts.append(e if rng.random() < 0.6 else rng.choice(WORDS))
    return rng.choice(["", " "]).join(parts)


def _combining(rng):
    return "".join(rng.choice("aeiouxyz ") + "".join(chr(rng.randint(*COMBINING)) for _ in range(rng.randint(0, 30)))
                   for _ in range(rng.randint(1, 30)))


def _rtl(rng):
    parts = []
    for _ in range(rng.randint(1, 20)):
        pick = rng.random()
        parts.append(rng.choice(BIDI) if pick < 0.3 else _chars(rng, rng.choice(["arabic", "hebrew"]), rng.randint(1, 8))
                     if pick < 0.7 else rng.choice(WORDS))
    return " ".join(parts)


def _literal(rng):
    return rng.choice(LITERALS)


def _surrogates(rng):
    """Lone surrogates: no UTF-8 file holds them, but a JSON string (``"\\ud800"``, as Wyoming carries text) does."""
    return " ".join(chr(rng.randint(0xD800, 0xDFFF)) if rng.random() < 0.3 else rng.choice(WORDS)
                    for _ in range(rng.randint(1, 12)))


TEXT_KINDS = {"scripts": _scripts, "controls": _controls, "empty": _empty, "huge": _huge, "markup": _markup,
              "digits": _digits, "emoji": _emoji, "combining": _combining, "rtl": _rtl, "literal": _literal,
              "surrogates": _surrogates}
TEXT_WEIGHTS = {"huge": 0.2}  # the rest 1: a huge text costs a hundred small ones


def text(seed: int, case: int) -> tuple[str, str]:
    """(kind, text) of one case; one in five a mix of several kinds."""
    rng = rng_for(seed, case)
    kinds = sorted(TEXT_KINDS)
    weights = [TEXT_WEIGHTS.get(k, 1.0) for k in kinds]
    if rng.random() < 0.2:
        picked = rng.choices([k for k in kinds if k != "huge"], k=rng.randint(2, 4))
        return "mix:" + "+".join(picked), rng.choice(["", " ", "\n", ". "]).join(TEXT_KINDS[k](rng) for k in picked)
    kind = rng.choices(kinds, weights)[0]
    return kind, TEXT_KINDS[kind](rng)


# -- Wyoming frames ---------------------------------------------------------------------------------------------

def frame(kind: str, data: dict | None = None, payload: bytes | None = None, *, inline: bool = True) -> bytes:
    """One event as the ``wyoming`` library writes it: header line, data block, payload."""
    header: dict = {"type": kind}
    body = b""
    if data is not None:
        if inline:
            header["data"] = data
        else:
            body = json.dumps(data, ensure_ascii=False).encode("utf-8", "surrogatepass")
            header["data_length"] = len(body)
    if payload:
        header["payload_length"] = len(payload)
    line = json.dumps(header, ensure_ascii=False).encode("utf-8", "surrogatepass") + b"\n"
    return line + body + (payload or b"")


def _short_text(rng: random.Random, seed: int) -> str:
    """A text to say: mostly a few words, sometimes a hostile one (cut to 300 characters: the voice speaks it)."""
    if rng.random() < 0.5:
        return _words(rng, rng.randint(1, 6)) + rng.choice([".", "!", "?", ""])
    return text(seed, rng.randint(0, 1 << 30))[1][:300]


def _voice(rng: random.Random):
    return rng.choice([None, {"name": "voice"}, {"name": "nope"}, {"language": "en"}, {"language": "xx"},
                       {"name": "voice", "speaker": "0"}, {"speaker": "nobody"}])


def _valid_event(rng: random.Random, seed: int) -> tuple[str, dict | None, bytes | None]:
    pick = rng.randrange(12)
    voice = _voice(rng)
    if pick < 2:
        return "describe", None, None
    if pick < 3:
        return "ping", {"text": _words(rng, 1)}, None
    if pick < 6:
        data = {"text": _short_text(rng, seed)}
        return "synthesize", ({**data, "voice": voice} if voice else data), None
    if pick < 7:
        return "synthesize-start", ({"voice": voice} if voice else {}), None
    if pick < 9:
        return "synthesize-chunk", {"text": _short_text(rng, seed)}, None
    if pick < 10:
        return "synthesize-stop", None, None
    if pick < 11:
        return "audio-chunk", {"rate": 16000, "width": 2, "channels": 1}, rng.randbytes(rng.randint(0, 4096))
    return rng.choice(["transcribe", "run-pipeline", "detect", "info", "audio-stop", "x" * rng.randint(0, 50)]), {}, None


def _valid(rng, seed):
    kind, data, payload = _valid_event(rng, seed)
    return frame(kind, data, payload, inline=rng.random() < 0.7)


def _truncated(rng, seed):
    whole = _valid(rng, seed)
    return whole[:rng.randrange(len(whole))]


def _oversized(rng, seed):
    pick = rng.randrange(6)
    if pick == 0:
        return b'{"type": "synthesize", "data": {"text": "' + b"a" * rng.randint(65_000, 300_000) + b'"}}\n'
    if pick == 1:
        return json.dumps({"type": "synthesize", "data_length": rng.choice([2 ** 21 + 1, 2 ** 31, 2 ** 63, 10 ** 30])}
                          ).encode() + b"\n"
    if pick == 2:
        return json.dumps({"type": "audio-chunk", "payload_length": rng.choice([2 ** 18 + 1, 2 ** 40])}).encode() + b"\n"
    if pick == 3:  # a text over --max-text-chars, in the data block
        return frame("synthesize", {"text": _words(rng, 3000)}, inline=False)
    if pick == 4:  # a body shorter than announced, then the connection ends
        return json.dumps({"type": "synthesize", "data_length": 1000}).encode() + b"\n" + b'{"text": "hi"}'
    return b" " * rng.randint(65_000, 200_000) + b"\n"


WRONG = [None, True, 0, -1, 1.5, 1e309, "", "x", [], [1, 2], {}, {"a": 1}, "synthesize", 2 ** 70]


def _wrong_types(rng, seed):
    kind, data, payload = _valid_event(rng, seed)
    header = {"type": kind, "data": data or {}}
    pick = rng.randrange(6)
    if pick == 0:
        header["type"] = rng.choice(WRONG)
    elif pick == 1:
        header["data"] = rng.choice(WRONG)
    elif pick == 2:
        header["data"] = {**header["data"], rng.choice(["text", "voice", "rate", "name"]): rng.choice(WRONG)}
    elif pick == 3:
        header["data"] = {**header["data"], "voice": {"name": rng.choice(WRONG), "speaker": rng.choice(WRONG),
                                                      "language": rng.choice(WRONG)}}
    elif pick == 4:
        header[rng.choice(["data_length", "payload_length"])] = rng.choice(WRONG)
    else:
        header["version"] = rng.choice(WRONG)
    return json.dumps(header, allow_nan=True).encode() + b"\n"


def _bad_json(rng, seed):
    line = bytearray(_valid(rng, seed).split(b"\n", 1)[0])
    pick = rng.randrange(7)
    if pick == 0 and line:  # bytes flipped, removed or added
        for _ in range(rng.randint(1, 5)):
            at = rng.randrange(len(line))
            action = rng.randrange(3)
            if action == 0:
                line[at] = rng.randrange(256)
            elif action == 1:
                del line[at]
            else:
                line.insert(at, rng.choice(b'{}[]",:\\\x00\xff\xc3'))
            if not line:
                break
        return bytes(line).replace(b"\n", b" ") + b"\n"
    if pick == 1:
        return bytes(line[:rng.randrange(len(line) + 1)]) + b"\n"
    if pick == 2:  # deep nesting
        depth = rng.randint(1_000, 30_000)
        return b'{"type": "describe", "data": {"x": ' + b"[" * depth + b"]" * depth + b"}}\n"
    if pick == 3:
        return rng.choice([b'{"type": "describe", "data": NaN}\n', b'{"type": "ping", "data": {"text": Infinity}}\n',
                           b'\xef\xbb\xbf{"type": "describe"}\n', b'{"type": "describe"} trailing\n',
                           b'{"type": "describe", "type": "ping"}\n', b'{"type": "\\ud800"}\n',
                           b'{"type": "synthesize", "data": {"text": "\\ud800\\udfff\\u0000"}}\n', b"null\n", b"\n",
                           b'"describe"\n', b"{}\n", b'{"type": "describe"\n'])
    if pick == 4:  # invalid UTF-8 inside a string
        return b'{"type": "synthesize", "data": {"text": "' + rng.randbytes(rng.randint(1, 40)).replace(b'"', b"")\
            .replace(b"\\", b"").replace(b"\n", b"") + b'"}}\n'
    if pick == 5:  # a data block that is not JSON
        block = rng.randbytes(rng.randint(1, 200))
        return json.dumps({"type": "synthesize", "data_length": len(block)}).encode() + b"\n" + block
    return bytes(line) + b"\n" + b"}" * rng.randint(1, 10) + b"\n"


def _random_bytes(rng, seed):
    raw = rng.randbytes(rng.randint(0, 4096))
    if rng.random() < 0.5:
        return raw
    return b"\n".join(raw[i:i + 200] for i in range(0, len(raw), 200)) + b"\n"


def _wrong_order(rng, seed):
    kinds = ["synthesize-start", "synthesize-chunk", "synthesize-stop", "synthesize", "synthesize-stopped",
             "audio-start", "audio-stop", "describe"]
    out = b""
    for _ in range(rng.randint(2, 6)):
        kind = rng.choice(kinds)
        data = {"text": _short_text(rng, seed)} if kind in ("synthesize", "synthesize-chunk") else None
        out += frame(kind, data)
    return out


FRAME_KINDS = {"valid": _valid, "truncated": _truncated, "oversized": _oversized, "wrong-types": _wrong_types,
               "bad-json": _bad_json, "random-bytes": _random_bytes, "wrong-order": _wrong_order}


def connection(seed: int, case: int, most: int) -> tuple[list[str], bytes, bool]:
    """One connection's frames: (their kinds, the bytes sent, whether the client leaves without reading). At most
    ``most`` frames; a truncated frame ends what is sent (what follows it would only be read as its body)."""
    rng = rng_for(seed, case)
    kinds, sent = [], b""
    for _ in range(rng.randint(1, min(most, 6))):
        kind = rng.choice(sorted(FRAME_KINDS))
        kinds.append(kind)
        sent += FRAME_KINDS[kind](rng, seed)
        if kind == "truncated":
            break
    return kinds, sent, rng.random() < 0.05
