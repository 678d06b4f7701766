"""A character voice's text frontend as an ONNX graph: a string in, TTS's token ids out.

Built from onnxruntime-extensions' string operators (domain ``ai.onnx.contrib``) and standard ONNX / ``ai.onnx.ml``
operators, it gives the ids of ``runtime.text`` (and so of TTS's ``TTSTokenizer``) for the cleaners that are pure
string rewriting. None of the extensions' operators could be used as they come (measured on onnxruntime-extensions
0.15.2): ``StringLower`` leaves Ł Œ Σ Ё unchanged and turns Ἀ into Ἠ, RE2's ``\\s`` is ASCII only, ``StringSplit``
with an empty separator cuts UTF-8 into bytes, and there is no Unicode normalisation. So:

* NFC is computed in the graph (UAX #15: full canonical decomposition by ``StringMapping``, canonical reordering by
  one ``TopK``, three rounds of canonical composition, enough for the deepest composite), from this Python's
  ``unicodedata`` tables;
* lower-casing is folded into the final character -> id table (each character whose ``str.lower()`` is a vocabulary
  symbol), with the two context rules of ``str.lower()`` done before: ``İ`` -> ``i̇`` and Greek final sigma;
* whitespace is Python's ``\\s`` spelled out as code-point ranges; code points come from
  ``StringRegexSplitWithOffsets`` with ``(?s)(.)``; unknown characters are dropped (``Compress``), as TTS drops them.

``english_cleaners`` and ``phoneme_cleaners`` (numbers, times and abbreviations to words are Python callbacks; RE2
rewrites are fixed templates) and phoneme voices (espeak-ng) cannot be expressed: ``unsupported`` says why.

Two limits, both at the input boundary: the extensions' operators read strings as C strings, so text after a NUL
character is lost (a C caller cannot pass one anyway); and the Unicode tables are those of the Python that built the
graph (recorded in the sidecar).
"""

from __future__ import annotations

import re
import unicodedata

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

CONTRIB, ML = "ai.onnx.contrib", "ai.onnx.ml"
LOWERING = {"basic_cleaners", "transliteration_cleaners", "basic_german_cleaners", "basic_turkish_cleaners",
            "multilingual_cleaners", "portuguese_cleaners"}
BY_LANGUAGE = {"multilingual_cleaners", "portuguese_cleaners"}  # replace_symbols(text, lang)
EXPRESSIBLE = LOWERING | {"no_cleaners", None}
# replace_symbols, rule by rule: (character, {language: rewrite}, rewrite for every other language)
SYMBOL_RULES = ((";", {"el": ";"}, ","), ("-", {"ca": ""}, " "), (":", {}, ","),
                ("&", {"en": " and ", "fr": " et ", "it": " e ", "pt": " e ", "ca": " i "}, "&"),
                ("'", {"ca": ""}, "'"))
ONE_CHARACTER = "(?s)(.)"  # RE2: each code point a kept delimiter; (?s) so that '.' matches '\n' too


def unsupported(spec: dict) -> str | None:
    """Why this voice's text frontend cannot be a graph, or None when it can."""
    if spec.get("type") != "characters":
        return "a phoneme voice needs espeak-ng to phonemize, which no ONNX operator does"
    cleaner = spec.get("cleaner")
    if cleaner not in EXPRESSIBLE:
        return (f"its cleaner {cleaner!r} turns numbers, times and abbreviations into words with Python code, which "
                "onnxruntime-extensions' string operators (fixed regular-expression rewrites) cannot express")
    return None


class _Graph:
    """Nodes and constants of the text graph, every name under ``text/`` (no clash with the voice's)."""

    def __init__(self):
        self.nodes, self.initializers, self.count = [], [], 0

    def name(self, base: str) -> str:
        self.count += 1
        return f"text/{base}_{self.count}"

    def const(self, value, dtype=None) -> str:
        name = self.name("c")
        if isinstance(value, str) or (isinstance(value, (list, tuple)) and value and isinstance(value[0], str)):
            values = [value] if isinstance(value, str) else list(value)
            self.initializers.append(helper.make_tensor(name, TensorProto.STRING, [len(values)],
                                                        [v.encode("utf-8") for v in values]))
        else:
            self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, inputs, outputs: int = 1, domain: str = "", out: str | None = None, **attrs):
        names = [out] if out else [self.name(op_type.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), names, name=self.name(op_type), domain=domain,
                                           **attrs))
        return names[0] if outputs == 1 else names

    def i64(self, values) -> str:
        return self.const(values, np.int64)

    def replace(self, text: str, pattern: str, rewrite: str, *, rewrite_is_tensor: bool = False) -> str:
        return self.op("StringRegexReplace", [text, self.const(pattern), rewrite if rewrite_is_tensor
                                              else self.const(rewrite)], domain=CONTRIB)

    def characters(self, text: str) -> str:
        pattern = self.const(ONE_CHARACTER)
        return self.op("StringRegexSplitWithOffsets", [text, pattern, pattern], outputs=4, domain=CONTRIB)[0]

    def join(self, pieces: str) -> str:
        return self.op("StringJoin", [pieces, self.const(""), self.i64([0])], domain=CONTRIB)

    def lookup(self, strings: str, table: dict[str, int], default: int) -> str:
        keys = list(table)
        return self.op("LabelEncoder", [strings], domain=ML, keys_strings=keys,
                       values_int64s=[table[k] for k in keys], default_int64=default)


def _code_points():
    return (chr(c) for c in range(0x110000) if not 0xD800 <= c < 0xE000)


def _whitespace_class() -> str:
    """Python's ``\\s`` (``str.isspace``) as an RE2 class of code-point ranges."""
    points = [ord(c) for c in _code_points() if c.isspace()]
    ranges, start = [], points[0]
    for prev, cur in zip(points, points[1:] + [None]):
        if cur != prev + 1:
            ranges.append(f"\\x{{{start:x}}}" + ("" if start == prev else f"-\\x{{{prev:x}}}"))
            start = cur
    return "[" + "".join(ranges) + "]"


def _id_table(vocab: list[str], lower: bool) -> dict[str, int]:
    """Character -> id, after the cleaner's lower-casing (a repeated symbol keeps its last id, as in TTS)."""
    ids = {symbol: i for i, symbol in enumerate(vocab)}
    if not lower:
        return {s: i for s, i in ids.items() if len(s) == 1}
    return {c: ids[c.lower()] for c in _code_points() if len(c.lower()) == 1 and c.lower() in ids}


def _nfc(g: _Graph, text: str) -> str:
    """NFC of ``text`` (UAX #15; CPython's composition loop, one composition per starter and round)."""
    nfd, ccc_of, pairs = {}, {}, {}
    for c in _code_points():
        decomposed = unicodedata.normalize("NFD", c)
        if decomposed != c:
            nfd[c] = decomposed
        if unicodedata.combining(c):
            ccc_of[c] = unicodedata.combining(c)
        dec = unicodedata.decomposition(c)
        if dec and not dec.startswith("<"):
            parts = "".join(chr(int(h, 16)) for h in dec.split())
            if len(parts) == 2 and unicodedata.normalize("NFC", parts) == c:
                pairs[parts] = c
    for lead in range(0x1100, 0x1113):  # Hangul syllables compose arithmetically
        for vowel in range(0x1161, 0x1176):
            lv = chr(0xAC00 + ((lead - 0x1100) * 21 + (vowel - 0x1161)) * 28)
            pairs[chr(lead) + chr(vowel)] = lv
            for trail in range(0x11A8, 0x11C3):
                pairs[lv + chr(trail)] = chr(ord(lv) + trail - 0x11A7)
    zero, minus1 = g.i64([0]), g.i64([-1])
    tokens = g.characters(text)
    tokens = g.op("StringMapping", [tokens], domain=CONTRIB, map="\n".join(f"{k}\t{v}" for k, v in nfd.items()))
    tokens = g.op("Concat", [g.const([""]), g.characters(g.join(tokens))], axis=0)  # a starter composing nothing

    def positions(x):
        n = g.op("Shape", [x])
        return n, g.op("Range", [g.i64(0), g.op("Squeeze", [n, zero]), g.i64(1)])

    ccc = g.lookup(tokens, ccc_of, 0)
    n, pos = positions(tokens)
    run = g.op("CumSum", [g.op("Cast", [g.op("Equal", [ccc, g.i64(0)])], to=TensorProto.INT64), zero])
    key = g.op("Add", [g.op("Mul", [g.op("Add", [g.op("Mul", [run, g.i64(256)]), ccc]), n]), pos])
    order = g.op("TopK", [key, n], outputs=2, axis=0, largest=0, sorted=1)[1]  # canonical order, stable
    tokens, ccc = g.op("Gather", [tokens, order], axis=0), g.op("Gather", [ccc, order], axis=0)
    eligible = g.op("ConstantOfShape", [n], value=helper.make_tensor("v", TensorProto.BOOL, [1], [True]))
    keys = list(pairs)
    composite = g.const([pairs[k] for k in keys])
    for _ in range(3):  # the deepest composite has four code points
        n, pos = positions(tokens)
        starter = g.op("Equal", [ccc, g.i64(0)])
        run = g.op("CumSum", [g.op("Cast", [starter], to=TensorProto.INT64), zero])
        run_start = g.op("Gather", [g.op("Compress", [pos, starter], axis=0), g.op("Sub", [run, g.i64(1)])], axis=0)
        prev_ccc = g.op("Concat", [g.i64([0]), g.op("Slice", [ccc, zero, minus1])], axis=0)
        before = g.op("Max", [g.op("Sub", [pos, g.i64(1)]), g.i64(0)])
        partner = g.op("Where", [starter, before, run_start])
        index = g.lookup(g.op("StringConcat", [g.op("Gather", [tokens, partner], axis=0), tokens], domain=CONTRIB),
                         dict(zip(keys, range(len(keys)))), -1)
        composable = g.op("GreaterOrEqual", [index, g.i64(0)])
        unblocked = g.op("Or", [g.op("Equal", [before, run_start]), g.op("Less", [prev_ccc, ccc])])
        mark_ok = g.op("And", [g.op("And", [g.op("Not", [starter]), eligible]), unblocked])
        with_starter = g.op("And", [composable, g.op("And", [starter, g.op("Equal", [prev_ccc, g.i64(0)])])])
        with_mark = g.op("And", [composable, mark_ok])
        prev_starter = g.op("Concat", [g.const(np.array([False])), g.op("Slice", [with_starter, zero, minus1])],
                            axis=0)
        merge_starter = g.op("And", [with_starter, g.op("Not", [prev_starter])])
        marks_before = g.op("CumSum", [g.op("Cast", [with_mark], to=TensorProto.INT64), zero], exclusive=1)
        first_mark = g.op("And", [with_mark, g.op("Equal", [marks_before, g.op("Gather", [marks_before, run_start],
                                                                                      axis=0)])])
        merge_mark = g.op("And", [first_mark, g.op("Not", [g.op("Gather", [merge_starter, run_start], axis=0)])])
        none = g.op("Expand", [g.i64([-1]), n])
        mark_at = g.op("ScatterElements", [none, g.op("Compress", [run_start, merge_mark], axis=0),
                                           g.op("Compress", [pos, merge_mark], axis=0)], axis=0)
        passed = g.op("And", [g.op("Not", [starter]),  # marks passed over in a run are not revisited (CPython)
                              g.op("Less", [pos, g.op("Gather", [mark_at, run_start], axis=0)])])
        eligible = g.op("And", [eligible, g.op("Not", [passed])])
        merged = g.op("Or", [merge_starter, merge_mark])
        composed_at = g.op("ScatterElements", [none, g.op("Compress", [partner, merged], axis=0),
                                               g.op("Compress", [index, merged], axis=0)], axis=0)
        composed = g.op("Gather", [composite, g.op("Max", [composed_at, g.i64(0)])], axis=0)
        tokens = g.op("Where", [g.op("GreaterOrEqual", [composed_at, g.i64(0)]), composed, tokens])
        keep = g.op("Not", [merged])
        tokens, ccc, eligible = (g.op("Compress", [x, keep], axis=0) for x in (tokens, ccc, eligible))
    return g.join(tokens)


def _final_sigma(g: _Graph, text: str) -> str:
    """Each 'Σ' that ``str.lower()`` makes 'ς' (cased, case-ignorable*, Σ, not followed by case-ignorable* cased),
    as 'ς'; the id table lowers the others to 'σ'. The classes are read off this Python's own ``lower()``."""
    kind = {}
    for c in _code_points():
        if (c + "\u03a3").lower()[-1] == "\u03c2":
            kind[c] = 2  # cased
        elif ("A" + c + "\u03a3").lower()[-1] == "\u03c2":
            kind[c] = 1  # case-ignorable
    zero = g.i64([0])
    tokens = g.op("Concat", [g.const([""]), g.characters(text), g.const([""])], axis=0)  # not cased
    classes = g.lookup(tokens, kind, 0)
    n = g.op("Shape", [tokens])
    pos = g.op("Range", [g.i64(0), g.op("Squeeze", [n, zero]), g.i64(1)])
    counted = g.op("Not", [g.op("Equal", [classes, g.i64(1)])])
    cased = g.op("Equal", [classes, g.i64(2)])
    where = g.op("Compress", [pos, counted], axis=0)
    as_int = g.op("Cast", [counted], to=TensorProto.INT64)
    before = g.op("CumSum", [as_int, zero], exclusive=1)
    upto = g.op("CumSum", [as_int, zero])
    last = g.op("Sub", [g.op("Shape", [where]), g.i64(1)])
    prev_cased = g.op("Gather", [cased, g.op("Gather", [where, g.op("Max", [g.op("Sub", [before, g.i64(1)]),
                                                                             g.i64(0)])], axis=0)], axis=0)
    next_cased = g.op("Gather", [cased, g.op("Gather", [where, g.op("Min", [upto, last])], axis=0)], axis=0)
    sigma = g.op("Equal", [g.lookup(tokens, {"\u03a3": 1}, 0), g.i64(1)])
    final = g.op("And", [g.op("And", [sigma, prev_cased]), g.op("Not", [next_cased])])
    return g.join(g.op("Where", [final, g.const(["\u03c2"]), tokens]))


def text_graph(spec: dict, languages: dict[str, int], *, opset: int, ir_version: int):
    """The graph ``text`` [1] (and ``language`` [1]) -> ``input`` [1, T], ``input_lengths`` [1] (and ``langid`` [1]).

    ``spec`` is the sidecar's ``tokenizer``; ``languages`` the voice's language ids. A ``language`` input exists when
    the voice has languages (its name gives ``langid``, and an unknown name an index onnxruntime refuses) or when
    the cleaner depends on it; empty means the voice's default (its first language, or none)."""
    reason = unsupported(spec)
    if reason:
        raise ValueError(reason)
    cleaner, vocab = spec.get("cleaner"), list(spec["vocab"])
    special = {k: (spec.get(k) or {}).get("id", len(vocab)) for k in ("blank", "bos", "eos")}
    lower = cleaner in LOWERING
    g = _Graph()
    inputs = [helper.make_tensor_value_info("text", TensorProto.STRING, [1])]
    outputs = ["input", "input_lengths"]
    text = g.op("Reshape", ["text", g.i64([1])])
    language = None
    if languages or cleaner in BY_LANGUAGE:
        inputs.append(helper.make_tensor_value_info("language", TensorProto.STRING, [1]))
        g.initializers.append(helper.make_tensor("language", TensorProto.STRING, [1], [b""]))  # optional input
        language = "language"
        if languages:  # the runtime's default: the first language, for the cleaner as for the embedding
            language = g.replace(language, "^$", next(iter(languages)))
            g.op("LabelEncoder", [language], domain=ML, keys_strings=list(languages),
                 values_int64s=list(languages.values()), default_int64=len(languages), out="langid")
            outputs.append("langid")
    if cleaner == "no_cleaners":
        text = g.replace(text, "\n", "")
    elif cleaner is not None:
        text = _nfc(g, text)
        if cleaner == "basic_turkish_cleaners":
            text = g.replace(text, "I", "\u0131")
        if lower and ("\u03c3" in vocab or "\u03c2" in vocab):
            text = _final_sigma(g, text)
        if lower:
            text = g.replace(text, "\u0130", "i\u0307")  # the one str.lower() of more than one character
        if cleaner in BY_LANGUAGE:
            lang = g.replace(language, "(?s)-.*", "")  # normalize_language: "en-US" -> "en"
            for symbol, by_language, default in SYMBOL_RULES:
                if not by_language:
                    text = g.replace(text, re.escape(symbol), default)
                    continue
                rewrite = g.op("LabelEncoder", [lang], domain=ML, keys_strings=list(by_language),
                               values_strings=list(by_language.values()), default_string=default)
                text = g.replace(text, re.escape(symbol), rewrite, rewrite_is_tensor=True)
            text = g.replace(text, r'[<>()\[\]"]+', "")
        text = g.replace(text, _whitespace_class() + "+", " ")
        text = g.replace(text, "^ | $", "")  # after the collapse an edge's whitespace is one space
    ids = g.lookup(g.characters(text), _id_table(vocab, lower), -1)
    ids = g.op("Compress", [ids, g.op("GreaterOrEqual", [ids, g.i64(0)])], axis=0)
    if spec.get("add_blank"):
        column = g.op("Unsqueeze", [ids, g.i64([1])])
        blanks = g.op("Expand", [g.i64([[special["blank"]]]), g.op("Shape", [column])])
        spaced = g.op("Reshape", [g.op("Concat", [blanks, column], axis=1), g.i64([-1])])
        ids = g.op("Concat", [spaced, g.i64([special["blank"]])], axis=0)
    if spec.get("use_eos_bos"):
        ids = g.op("Concat", [g.i64([special["bos"]]), ids, g.i64([special["eos"]])], axis=0)
    g.op("Unsqueeze", [ids, g.i64([0])], out="input")
    g.op("Shape", [ids], out="input_lengths")
    graph = helper.make_graph(g.nodes, "text_frontend", inputs,
                              [helper.make_tensor_value_info("input", TensorProto.INT64, [1, "tokens"]),
                               helper.make_tensor_value_info("input_lengths", TensorProto.INT64, [1])]
                              + ([helper.make_tensor_value_info("langid", TensorProto.INT64, [1])]
                                 if "langid" in outputs else []),
                              initializer=g.initializers)
    return onnx.helper.make_model(graph, ir_version=ir_version, opset_imports=[
        helper.make_opsetid("", opset), helper.make_opsetid(ML, 2), helper.make_opsetid(CONTRIB, 1)])
