"""Every kind of Coqui model-zoo VITS voice, rebuilt from the configs users have (tests/zoo_voices.py): exported,
checked against TTS's own inference and tokenizer, spoken through the runtime and its CLI by each speaker and
language name, and quantized by every int8 preset. YourTTS once at its published size."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, dev_sentences
from frontend_cases import generated_strings

tiny_vits = pytest.importorskip("tiny_vits")
if not tiny_vits.HAS_ESPEAK:
    pytest.skip("espeak-ng not installed", allow_module_level=True)

from zoo_voices import CSS10_SPEAKERS, build_zoo_voice

from exporter.errors import ExportError
from runtime import contract
from runtime.voice import Voice, VoiceError

SPOKEN = ("ljspeech", "vctk", "your_tts", "css10")
ZERO = {"noise_scale": 0.0, "noise_w": 0.0}


def torch_reference(loaded, text: str, speaker: str | None = None, language: str | None = None,
                    embedding=None) -> np.ndarray:
    """TTS's own inference at zero noise, the speaker given as TTS's ``synthesize`` gives it (an id, or a d-vector
    voice's mean d-vector for the name)."""
    from exporter.verify import torch_audio, zero_noise

    model = loaded.model
    sid = None if speaker is None else model.speaker_manager.name_to_id[speaker]
    d_vector = embedding
    if loaded.d_vectors is not None and embedding is None:
        d_vector = model.speaker_manager.get_mean_embedding(speaker)
    langid = None if language is None else model.language_manager.name_to_id[language]
    with zero_noise(model):
        return torch_audio(model, model.tokenizer.text_to_ids(text, language=language), sid, langid, d_vector)


def snr(reference: np.ndarray, test: np.ndarray) -> float:
    assert len(reference) == len(test)
    noise = float(np.sum((reference.astype(np.float64) - test) ** 2))
    return float("inf") if noise == 0 else 10 * np.log10(float(np.sum(reference.astype(np.float64) ** 2)) / noise)


def spoken(voice: Voice, text: str, **kwargs) -> np.ndarray:
    return np.concatenate([c.audio for c in voice.synthesize(text, **ZERO, **kwargs)])


def cli(*args):
    return subprocess.run([sys.executable, "-m", "runtime.synthesize", *map(str, args)], capture_output=True,
                          text=True, cwd=REPO, timeout=300)


def read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path)) as w:
        return np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).astype(np.float32) / 32767


# -- export: what each voice's config says, kept ----------------------------------------------------------------
@pytest.mark.parametrize("voice", SPOKEN)
def test_zoo_voice_exports_with_its_speakers_and_languages(zoo, voice):
    _, folder, loaded = zoo(voice)
    sidecar = json.loads(contract.sidecar_path(folder / contract.MODEL_FILE).read_text(encoding="utf-8"))
    model = loaded.model
    speakers = dict(model.speaker_manager.name_to_id) if model.speaker_manager else {}
    languages = dict(model.language_manager.name_to_id) if model.args.use_language_embedding else {}
    assert sidecar["speakers"] == speakers and sidecar["languages"] == languages
    assert sidecar["verification"]["min_snr_db"] >= 60
    assert sidecar["audio"]["sample_rate"] == model.config.audio.sample_rate
    assert sidecar["streaming"]["pieces"][contract.MODEL_FILE]["verified"]["min_snr_db"] >= 60
    if voice == "vctk":
        assert len(speakers) == 109 and speakers["ED\n"] == 0
    if voice == "your_tts":
        assert sidecar["d_vector_dim"] == 512 and len(speakers) == 6 and list(languages) == ["en", "fr-fr", "pt-br"]
        assert sidecar["tokenizer"]["cleaner"] == "multilingual_cleaners" and sidecar["audio"]["sample_rate"] == 16000
    if voice == "css10":
        assert speakers == CSS10_SPEAKERS and languages == {"de": 0}


def test_side_files_of_another_machine_are_found_and_named(zoo, caplog):
    """YourTTS's config records its speakers.json as a Windows path; VCTK's speaker_ids.json as a Linux one."""
    from exporter.checkpoint import load_voice

    for voice, name in (("your_tts", "speakers.json"), ("vctk", "speaker_ids.json")):
        src, _, _ = zoo(voice)
        with caplog.at_level(logging.INFO, logger="exporter.checkpoint"):
            load_voice(src / "config.json", next(src.glob("model_file.pth*")))
        assert f"using {src / name}, beside the config" in caplog.text
        raw = (src / "config.json").read_text(encoding="utf-8")
        assert "Infinity" in raw and str(src) not in raw  # the file as downloaded: nothing rewritten


# -- text: the runtime's ids are TTS's ---------------------------------------------------------------------------
@pytest.mark.parametrize("voice", SPOKEN)
def test_zoo_voice_ids_are_tts_ids_in_every_language(zoo, voice, caplog):
    _, folder, loaded = zoo(voice)
    runtime = Voice.load(folder)
    texts = dev_sentences()[:40] + generated_strings(60, seed=15)
    caplog.set_level(logging.ERROR)  # both drop what a vocabulary lacks, with a warning each
    for language in list(loaded.languages) or [None]:
        for text in texts:
            assert runtime.text_to_ids(text, language) == loaded.model.tokenizer.text_to_ids(text, language=language), \
                (voice, language, text)


# -- speech: each speaker and language by name, as TTS speaks them ----------------------------------------------
@pytest.mark.parametrize("voice", SPOKEN)
def test_each_speaker_and_language_by_name_speaks_as_tts(zoo, voice):
    _, folder, loaded = zoo(voice)
    runtime = Voice.load(folder)
    names = list(loaded.speakers)
    for name in names:  # every name as written
        assert runtime.speaker_id(name) == loaded.speakers[name]
    labels = runtime.config.speaker_labels()  # and as typed: VCTK's "ED\n" is "ED"; YourTTS's "female-en-5\n",
    assert len(labels) == len(names)          # beside a "female-en-5", is written out as "female-en-5\\n"
    assert all(label == label.strip() and runtime.speaker_id(label) == ident for label, ident in labels.items())
    if voice == "vctk":
        assert labels["ED"] == 0
    if voice == "your_tts":
        assert labels["female-en-5\\n"] != labels["female-en-5"] and labels["female-pt-4"] == names.index("female-pt-4\n")
    text = "The birch canoe slid on the smooth planks."
    speakers = [None] if not names else sorted({names[0], names[-1], names[len(names) // 2]})
    languages = list(loaded.languages) or [None]
    for k, speaker in enumerate(speakers):
        for language in languages if k == 0 else languages[-1:]:
            reference = torch_reference(loaded, text, speaker, language)
            assert snr(reference, spoken(runtime, text, speaker=speaker, language=language)) > 50, (speaker, language)


def test_d_vector_voice_speaks_a_callers_embedding_as_tts(zoo, tmp_path):
    _, folder, loaded = zoo("your_tts")
    runtime = Voice.load(folder)
    embedding = np.random.default_rng(7).standard_normal(512).astype(np.float32)
    text = "Bonjour, comment allez-vous?"
    reference = torch_reference(loaded, text, language="fr-fr", embedding=embedding)
    assert snr(reference, spoken(runtime, text, language="fr-fr", speaker_embedding=embedding)) > 50
    named = spoken(runtime, text, language="fr-fr", speaker="male-en-2")
    assert len(named) != len(reference) or snr(reference, named) < 40  # another speaker (a random voice's differ a little)
    # the CLI: a .npy or a text file of numbers
    np.save(tmp_path / "me.npy", embedding)
    (tmp_path / "me.txt").write_text(" ".join(f"{v:.9g}" for v in embedding))
    for path in (tmp_path / "me.npy", tmp_path / "me.txt"):
        out = tmp_path / f"{path.suffix[1:]}.wav"
        proc = cli("-m", folder, text, "--language", "fr-fr", "--speaker-embedding", path, "--noise-scale", 0,
                   "--noise-w", 0, "--output", out)
        assert proc.returncode == 0, proc.stderr
        assert snr(reference, read_wav(out)) > 40  # 16-bit PCM
    for bad, message in ((np.ones(3), "512"), (np.zeros(512), "not all zero")):
        with pytest.raises(VoiceError, match=message):
            spoken(runtime, text, speaker_embedding=bad)
    with pytest.raises(VoiceError, match="not both"):
        spoken(runtime, text, speaker="male-en-2", speaker_embedding=embedding)
    _, vctk, _ = zoo("vctk")
    with pytest.raises(VoiceError, match="no speaker embedding"):
        spoken(Voice.load(vctk), text, speaker_embedding=embedding)


@pytest.mark.parametrize("voice, speaker, language", [
    ("vctk", "ED", None), ("your_tts", "female-pt-4", "pt-br"), ("css10", "hokuspokus", "de"), ("ljspeech", None, None)])
def test_cli_speaks_a_speaker_and_language_by_name(zoo, tmp_path, voice, speaker, language):
    _, folder, loaded = zoo(voice)
    text = "Hallo, wie geht es dir?" if language == "de" else "Hello, how are you?"
    args = ["-m", folder, text, "--noise-scale", 0, "--noise-w", 0, "--output", tmp_path / "x.wav"]
    args += ["--speaker", speaker] if speaker else []
    args += ["--language", language] if language else []
    proc = cli(*args)
    assert proc.returncode == 0, proc.stderr
    named = next((n for n in loaded.speakers if n.strip() == speaker), None)
    assert snr(torch_reference(loaded, text, named, language), read_wav(tmp_path / "x.wav")) > 40
    listed = cli("-m", folder, "--list-speakers").stdout.splitlines()
    labels = Voice.load(folder).config.speaker_labels() or {"(single speaker)": 0}
    assert listed == [f"{ident}\t{label}" for label, ident in labels.items()]
    if language:
        assert language in cli("-m", folder, "--list-languages").stdout
        wrong = cli("-m", folder, text, "--language", "xx", "--output", tmp_path / "y.wav")
        assert wrong.returncode != 0 and "unknown language 'xx'" in wrong.stderr and not (tmp_path / "y.wav").exists()


# -- every int8 preset --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("voice", SPOKEN)
def test_every_int8_preset_of_a_zoo_voice_speaks_each_speaker(zoo, voice, tmp_path):
    from exporter.quant.quantize import quantize_voice
    from exporter.quant.budget import Budget
    from exporter.quant.search import search

    _, exported, loaded = zoo(voice)
    folder = tmp_path / "voice"
    shutil.copytree(exported, folder)
    made = [quantize_voice(folder, name, report=lambda line: None) for name in ("dynamic", "static")]
    if voice == "your_tts":
        # auto's whole pipeline on a d-vector, multi-language voice (build, judge, record, pieces), as a smoke run:
        # a budget nothing passes keeps every ladder to its first rung (the search itself: tests/test_quantize.py)
        made.append(search(folder, budget=Budget(max_logmel_db=0.0), listen=False, report=lambda line: None,
                           timer=lambda plan: 1.0 + 0.1 * len(plan)))
    fp32 = Voice.load(folder)
    names = list(loaded.speakers) or [None]
    language = next(iter(loaded.languages), None)
    for path in made:
        variant = Voice.load(path)
        assert variant.streams
        for speaker in sorted({names[0], names[-1]}, key=str):
            text = "Every preset speaks."
            audio = spoken(variant, text, speaker=speaker, language=language)
            reference = spoken(fp32, text, speaker=speaker, language=language)
            assert len(audio) == len(reference) and snr(reference, audio) > 3, (path.name, speaker)
        if loaded.d_vectors is not None:
            embedding = np.random.default_rng(3).standard_normal(512)
            assert len(spoken(variant, "Hello.", speaker_embedding=embedding, language=language))


# -- what cannot be exported is said, never spoken with wrong ids ---------------------------------------------------
def test_a_gruut_voice_is_refused_at_export_and_at_load(zoo, tmp_path):
    config, checkpoint = build_zoo_voice("thorsten", tmp_path / "src")
    proc = subprocess.run([sys.executable, "-m", "exporter", "export", "--config", str(config), "--checkpoint",
                           str(checkpoint), "--out", str(tmp_path / "voice")], capture_output=True, text=True,
                          cwd=REPO, timeout=300)
    assert proc.returncode != 0 and "'gruut'" in proc.stderr and "espeak" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "voice").exists()
    # a sidecar that names gruut (edited, or from another tool) fails to load, naming it
    _, exported, _ = zoo("ljspeech")
    folder = tmp_path / "edited"
    shutil.copytree(exported, folder)
    path = contract.sidecar_path(folder / contract.MODEL_FILE)
    sidecar = json.loads(path.read_text(encoding="utf-8"))
    sidecar["tokenizer"]["phonemizer"]["name"] = "gruut"
    path.write_text(json.dumps(sidecar), encoding="utf-8")
    with pytest.raises(ValueError, match="gruut"):
        Voice.load(folder)
    proc = cli("-m", folder, "Hello.", "--output", tmp_path / "x.wav")
    assert proc.returncode != 0 and "gruut" in proc.stderr and "Traceback" not in proc.stderr


def test_a_d_vector_voice_without_its_speakers_json_is_named(zoo, tmp_path):
    from exporter.checkpoint import load_voice

    src, _, _ = zoo("your_tts")
    folder = tmp_path / "src"
    shutil.copytree(src, folder)
    (folder / "speakers.json").unlink()
    with pytest.raises(ExportError, match="speakers.json"):
        load_voice(folder / "config.json", folder / "model_file.pth")


# -- the published size, once --------------------------------------------------------------------------------------
def test_your_tts_at_its_published_size(zoo):
    """10 text-encoder layers of 192 channels, HiFi-GAN from 512 channels, 512-dim d-vectors: ~29 M parameters."""
    _, folder, loaded = zoo("your_tts", small=False)
    sidecar = json.loads(contract.sidecar_path(folder / contract.MODEL_FILE).read_text(encoding="utf-8"))
    assert sidecar["model"]["num_parameters"] > 25e6 and sidecar["verification"]["min_snr_db"] >= 60
    runtime = Voice.load(folder)
    text = "Olá, tudo bem?"
    reference = torch_reference(loaded, text, "female-pt-4\n", "pt-br")
    assert snr(reference, spoken(runtime, text, speaker="female-pt-4", language="pt-br")) > 50
