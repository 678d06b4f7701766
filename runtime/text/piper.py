"""Piper voices: text -> phonemes -> ids like piper-tts 1.8, with the system ``espeak-ng`` program.

piper-tts links its own espeak-ng (1.52) and asks the library for each clause's phonemes and
terminator; it keeps the terminator as a phoneme (plus a space after ``, : ;``), NFD-decomposes,
and starts a new sentence after ``. ? !``. Each sentence becomes ``^ _ p1 _ p2 _ ... _ $``.
Here the program prints one line per clause and ``clauses.clause_ends`` recovers the terminators.

With piper's own data (``espeak_data=site-packages/piper``) this gives piper's ids for all 25 dev
sentences; with the system's espeak-ng 1.51 data, 19 (the rest read some vowels differently,
``oː`` for ``ɔː``). What is bridged, and what is not:
- espeak-ng 1.51 writes nothing for the palatal link phoneme ``;`` ("the battery is", 1.52: ``iʲ``);
  an empty phoneme whose mnemonic (``-x``) is ``;`` becomes ``ʲ`` (nothing to do on 1.52 and later).
- the program applies sentence intonation before printing, the library does not: a clause with no
  primary stress gets one on its strongest syllable ("What?", "He was." -> ``wˈʌt``, ``wˈʌz``;
  piper ``wˌʌt``, ``wʌz``). The output does not say which stress was added: not bridged.
- espeak-ng 1.51 and 1.52 code differ on a few rare inputs: runs of more than 32 digits, some
  symbols next to letters (``♥``, emoji). Not bridged.
"""

from __future__ import annotations

import logging
import os
import re
import unicodedata

from ..alignment import Symbols
from .clauses import clause_ends
from .errors import FrontendError, UnsupportedTokenizer
from .espeak import EspeakRunner

logger = logging.getLogger("runtime.text")

BOS, EOS, PAD = "^", "$", "_"
_PHONEME_BLOCK = re.compile(r"(\[\[.*?\]\])")  # [[ raw phonemes ]], as piper
_LANG_FLAG = re.compile(r"\([^)]+\)")
_DOUBLE_BRACKET = re.compile(r"\[(?=\[)")
_SEP = "\ue000"  # phoneme separator asked of espeak-ng; a private-use character it never prints otherwise
_PALATAL_MNEMONIC, _PALATAL_IPA = ";", "ʲ"


class PiperTokenizer:
    """ids as ``PiperVoice.phonemes_to_ids(PiperVoice.phonemize(text))`` give them (see ``piper_tokenizer``)."""

    def __init__(self, config: dict, *, espeak_data: str | os.PathLike | None = None) -> None:
        if not isinstance(config, dict):
            raise FrontendError("Piper voice config must be a JSON object")
        id_map = config.get("phoneme_id_map")
        if not isinstance(id_map, dict) or not all(
            isinstance(k, str) and isinstance(v, list) and all(isinstance(i, int) for i in v) for k, v in id_map.items()
        ):
            raise FrontendError("Piper voice config: 'phoneme_id_map' must map phonemes to lists of ids")
        missing = [s for s in (BOS, EOS, PAD) if s not in id_map]
        if missing:
            raise UnsupportedTokenizer(f"Piper voice config: phoneme_id_map lacks {', '.join(missing)}")
        self.id_map = id_map
        self.phoneme_type = config.get("phoneme_type", "espeak")
        self.voice = (config.get("espeak") or {}).get("voice")
        clusters = config.get("vowel_clusters") or []
        self.vowel_clusters = {tuple(c) for c in clusters} or None
        self.missing: set[str] = set()
        self.runner = None
        if self.phoneme_type == "espeak":
            if not isinstance(self.voice, str) or not self.voice:
                raise FrontendError("Piper voice config: 'espeak': {'voice': ...} is missing")
            if self.voice == "ar":
                raise UnsupportedTokenizer("Piper Arabic voices need its tashkeel diacritizer, not available here")
            self.runner = EspeakRunner(espeak_data)
            self.runner.check_voice(self.voice)
            self.language = self.voice.split("-")[0]
        elif self.phoneme_type != "text":
            raise UnsupportedTokenizer(f"Piper phoneme_type {self.phoneme_type!r} is not supported (espeak, text)")

    # -- text -> phonemes ---------------------------------------------------------------------------------
    def phonemize(self, text: str) -> list[list[str]]:
        """Phonemes grouped by sentence, as ``PiperVoice.phonemize``."""
        text = text.encode("utf-8", errors="replace").decode("utf-8")
        if self.phoneme_type == "text":
            return [list(unicodedata.normalize("NFD", text))]
        phonemes: list[list[str]] = []
        parts = _PHONEME_BLOCK.split(text)
        prev_raw = False
        for i, part in enumerate(parts):
            if part.startswith("[["):
                prev_raw = True
                if not phonemes:
                    phonemes.append([])
                if i > 0 and parts[i - 1].endswith(" "):
                    phonemes[-1].append(" ")
                phonemes[-1].extend(part[2:-2].strip())
                if i < len(parts) - 1 and parts[i + 1].startswith(" "):
                    phonemes[-1].append(" ")
                continue
            part_phonemes = self._espeak_sentences(part)
            if prev_raw and part_phonemes:
                phonemes[-1].extend(part_phonemes[0])
                part_phonemes = part_phonemes[1:]
            phonemes.extend(part_phonemes)
            prev_raw = False
        if phonemes and not phonemes[-1]:
            phonemes.pop()
        return phonemes

    def _espeak_sentences(self, text: str) -> list[list[str]]:
        """piper's ``EspeakPhonemizer.phonemize`` for one piece of text."""
        clauses = self.clause_phonemes(text)
        ends = clause_ends(text, self.language)
        if len(ends) != len(clauses):
            logger.debug("espeak-ng made %d clauses of %r, expected %d", len(clauses), text, len(ends))
            ends = (ends + [("", False)] * len(clauses))[: len(clauses)]
            if ends:
                ends[-1] = (ends[-1][0], True)
        sentences: list[list[str]] = []
        sentence: list[str] = []
        for phonemes, (terminator, end_of_sentence) in zip(clauses, ends, strict=True):
            phonemes = _LANG_FLAG.sub("", phonemes) + terminator
            if terminator in (",", ":", ";"):
                phonemes += " "
            sentence.extend(unicodedata.normalize("NFD", phonemes))
            if end_of_sentence:
                sentences.append(self._merge_clusters(sentence))
                sentence = []
        if sentence:
            sentences.append(self._merge_clusters(sentence))
        return sentences

    def clause_phonemes(self, text: str) -> list[str]:
        """espeak-ng's IPA for each clause of ``text``, without separators (the library's form)."""
        if self.runner is None:
            raise FrontendError("this Piper voice does not use espeak-ng")
        text = _DOUBLE_BRACKET.sub("[\u200c", text)  # the program reads [[...]] as phoneme input, the library does not;
        # espeak-ng ignores U+200C (ZWNJ) when reading text, so the clause is otherwise the same
        ipa = self.runner.run(["-v", self.voice, "--ipa", f"--sep={_SEP}"], text)
        if any("" in word.split(_SEP) for line in ipa for word in line.split(" ") if line):
            mnemonics = self.runner.run(["-v", self.voice, "-x", f"--sep={_SEP}"], text)
            ipa = _restore_palatal(ipa, mnemonics)
        return [line.replace(_SEP, "") for line in ipa]

    def _merge_clusters(self, phones: list[str]) -> list[str]:
        clusters = self.vowel_clusters
        if not clusters:
            return phones
        max_len = max(len(k) for k in clusters)
        out, i = [], 0
        while i < len(phones):
            for n in range(min(max_len, len(phones) - i), 1, -1):
                if tuple(phones[i : i + n]) in clusters:
                    out.append("".join(phones[i : i + n]))
                    i += n
                    break
            else:
                out.append(phones[i])
                i += 1
        return out

    # -- phonemes -> ids ----------------------------------------------------------------------------------
    def phonemes_to_ids(self, phonemes: list[str]) -> list[int]:
        """``^ _ p1 _ p2 _ ... _ $``; phonemes missing from the map are dropped, one warning each."""
        ids = [*self.id_map[BOS], *self.id_map[PAD]]
        for phoneme in phonemes:
            mapped = self.id_map.get(phoneme)
            if mapped is None:
                if phoneme not in self.missing:
                    self.missing.add(phoneme)
                    logger.warning("Phoneme %r is not in the voice's phoneme_id_map: dropped", phoneme)
                continue
            ids.extend(mapped)
            ids.extend(self.id_map[PAD])
        ids.extend(self.id_map[EOS])
        return ids

    def symbols(self) -> Symbols:
        """id -> phoneme, the pad that follows every phoneme, ``^`` and ``$`` (as Piper's alignments)."""
        names: dict[int, str] = {}
        for phoneme, ids in self.id_map.items():
            for ident in ids:
                names.setdefault(ident, phoneme)
        return Symbols(names, frozenset(self.id_map[PAD]), frozenset(self.id_map[BOS] + self.id_map[EOS]))

    def words(self, text: str, language: str | None = None) -> list[str]:
        return text.split()

    def text_to_sentence_ids(self, text: str) -> list[list[int]]:
        """One id sequence per sentence (Piper synthesizes sentence by sentence)."""
        return [self.phonemes_to_ids(sentence) for sentence in self.phonemize(text)]

    def text_to_ids(self, text: str, language: str | None = None) -> list[int]:
        """All sentences' ids, concatenated (``language`` is ignored: a Piper voice has one)."""
        if not isinstance(text, str):
            raise FrontendError(f"text must be a str, not {type(text).__name__}")
        return [i for ids in self.text_to_sentence_ids(text) for i in ids]


def _restore_palatal(ipa: list[str], mnemonics: list[str]) -> list[str]:
    """Put ``ʲ`` where espeak-ng < 1.52 printed nothing for the ``;`` phoneme (aligned phoneme by phoneme)."""
    if len(ipa) != len(mnemonics):
        return ipa
    out = []
    for ipa_line, mn_line in zip(ipa, mnemonics, strict=True):
        ipa_words, mn_words = ipa_line.split(" "), mn_line.split(" ")
        if len(ipa_words) != len(mn_words):
            out.append(ipa_line)
            continue
        words = []
        for ipa_word, mn_word in zip(ipa_words, mn_words, strict=True):
            ipa_ph, mn_ph = ipa_word.split(_SEP), mn_word.split(_SEP)
            if len(ipa_ph) == len(mn_ph):
                pairs = zip(ipa_ph, mn_ph, strict=True)
                ipa_ph = [_PALATAL_IPA if p == "" and m == _PALATAL_MNEMONIC else p for p, m in pairs]
            words.append(_SEP.join(ipa_ph))
        out.append(" ".join(words))
    return out


def piper_tokenizer(piper_config: dict, *, espeak_data: str | os.PathLike | None = None) -> PiperTokenizer:
    """Tokenizer for a Piper voice from its ``VOICE.onnx.json``; ids like piper-tts 1.8.0.

    ``espeak_data``: the folder holding the ``espeak-ng-data`` to use (e.g. piper's own,
    ``site-packages/piper``) instead of the system's. Raises EspeakNotFound when ``espeak-ng`` is
    not on PATH, UnsupportedTokenizer for a phoneme type or voice this runtime cannot reproduce.
    """
    return PiperTokenizer(piper_config, espeak_data=espeak_data)
