"""model.text.onnx: a character voice's text frontend inside the graph (onnxruntime-extensions' string operators),
ids identical to the runtime's, run as a string-in, audio-out model with onnxruntime and the extensions library only."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import REPO, dev_sentences
from frontend_cases import EDGE_CASES, generated_strings

pytest.importorskip("onnxruntime_extensions")

from exporter.text_graph import text_graph, unsupported
from exporter.text_model import extensions_library, session
from runtime import contract
from runtime.text import tokenizer_from_spec

LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def spec_for(cleaner, characters=LETTERS + "éèàçœıσςάłёß", **extra):
    vocab = ["<PAD>", *"!'(),-.:;? ", *characters, "<BLNK>"]
    return {"type": "characters", "characters_class": "TTS.tts.models.vits.VitsCharacters", "vocab": vocab,
            "pad": {"symbol": "<PAD>", "id": 0}, "blank": {"symbol": "<BLNK>", "id": len(vocab) - 1}, "bos": None,
            "eos": None, "add_blank": True, "use_eos_bos": False, "cleaner": cleaner, "phonemizer": None, **extra}


def texts():
    """Everything but a NUL character, which ends a string for the extensions' operators (the documented limit,
    checked below)."""
    return [t for t in dev_sentences() + EDGE_CASES + generated_strings(300, seed=99) if "\x00" not in t] + [
        "ΟΔΟΣ Σ ΑΣ.", "İstanbul IĞDIR", "e\u0301cole A\u030a \u212b", "a\u0330\u0301", "x\u00a0y\u3000z\x1c w\x85",
        "Tom & Jerry; 3:30 - well-known 'quote' <b>(x)</b> [y] \"z\"", "\u1100\u1161\u11a8"]


@pytest.mark.parametrize("cleaner", ["basic_cleaners", "multilingual_cleaners", "basic_turkish_cleaners",
                                     "no_cleaners", None])
def test_the_graph_gives_the_runtimes_ids(cleaner, caplog):
    """Every cleaner that is string rewriting, in every language its rules know, on the dev sentences, the frontend
    edge cases and generated strings (accents, decomposed forms, Greek final sigma, Turkish I, odd whitespace)."""
    caplog.set_level(logging.ERROR)
    for spec in (spec_for(cleaner), spec_for(cleaner, add_blank=False, use_eos_bos=True,
                                             bos={"symbol": "<BOS>", "id": 3}, eos={"symbol": "<EOS>", "id": 4})):
        graph = text_graph(spec, {}, opset=17, ir_version=8)
        run = session(graph.SerializeToString(), extensions_library())
        tokenizer = tokenizer_from_spec(spec)
        takes_language = bool(run.get_overridable_initializers())
        for language in (None, "en", "fr-FR", "ca", "el", "pt") if takes_language else (None,):
            for text in texts():
                feeds = {"text": np.array([text], dtype=object)}
                if takes_language:
                    feeds["language"] = np.array([language or ""], dtype=object)
                got = run.run(["input"], feeds)[0].reshape(-1).tolist()
                assert got == tokenizer.text_to_ids(text, language), (cleaner, language, text)
        # the limit the sidecar states: text after a NUL is lost
        feeds = {"text": np.array(["ab\x00cd"], dtype=object)}
        assert run.run(["input"], feeds)[0].reshape(-1).tolist() == tokenizer.text_to_ids("ab")


def test_what_cannot_be_a_graph_says_why():
    assert "english_cleaners" in unsupported(spec_for("english_cleaners"))
    assert "espeak" in unsupported({**spec_for("phoneme_cleaners"), "type": "phonemes"})
    with pytest.raises(ValueError, match="english_cleaners"):
        text_graph(spec_for("english_cleaners"), {}, opset=17, ir_version=8)


def test_a_character_voice_gets_its_text_model_at_export(exported):
    """The tiny voices use english_cleaners (numbers to words): none, and the sidecar and the log say why."""
    sidecar = json.loads(contract.sidecar_path(exported("char") / contract.MODEL_FILE).read_text())
    assert "english_cleaners" in sidecar["text_models"][contract.MODEL_FILE]["unavailable"]
    assert not (exported("char") / "model.text.onnx").exists()


STANDALONE = textwrap.dedent("""
    # What a user of another binding does: onnxruntime and the extensions' shared library, no vits-edge, no tokenizer
    # (the library is found without importing the onnxruntime_extensions package, which would pull in torch).
    import importlib.util, json, pathlib, sys
    import numpy as np, onnxruntime as ort
    package = pathlib.Path(importlib.util.find_spec("onnxruntime_extensions").origin).parent
    library = str(next(package.glob("_extensions_pydll*.so")))
    model, text, language, out = sys.argv[1:5]
    options = ort.SessionOptions()
    options.register_custom_ops_library(library)
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()} | {i.name for i in session.get_overridable_initializers()}
    defaults = json.loads(session.get_modelmeta().custom_metadata_map["vits_edge"])["inference"]  # the file says
    feeds = {"text": np.array([text], dtype=object), "scales": np.array([0.0, defaults["length_scale"], 0.0], np.float32)}
    if "language" in names and language:
        feeds["language"] = np.array([language], dtype=object)
    if "sid" in names:
        feeds["sid"] = np.array([int(sys.argv[5])], np.int64)
    if "speaker_embedding" in names:
        feeds["speaker_embedding"] = np.zeros((1, 512), np.float32)
    audio, lengths, ids = session.run(["output", "output_lengths", "token_ids"], feeds)
    np.save(out, audio[0, 0, : int(lengths[0])])
    loaded = [m for m in sys.modules if m.split(".")[0] in ("runtime", "exporter", "TTS", "torch", "onnxruntime_extensions")]
    print(json.dumps({"ids": ids.reshape(-1).tolist(), "loaded": loaded}))
""")


@pytest.mark.parametrize("voice, language, speaker", [("your_tts", "fr-fr", "male-en-2"), ("css10", "", "hokuspokus")])
def test_the_text_model_speaks_as_the_runtime_with_onnxruntime_alone(zoo, voice, language, speaker, tmp_path):
    """Exported zoo character voices (multilingual cleaners, languages, d-vectors, a speaker id) get model.text.onnx;
    a script that imports only onnxruntime and loads the extensions' library turns a string into the runtime's
    audio."""
    from runtime.voice import SynthesisConfig, Voice

    _, folder, _ = zoo(voice)
    record = json.loads(contract.sidecar_path(folder / contract.MODEL_FILE).read_text())["text_models"]["model.onnx"]
    assert record["file"] == "model.text.onnx" and (folder / record["file"]).is_file()
    assert record["verified"]["ids"] == "identical to the runtime's" and record["verified"]["audio_snr_db"] == "identical"
    runtime = Voice.load(folder, streaming=False)
    text = "Où est la bibliothèque? Tom & Jerry; c'est « l'été »!"
    script = tmp_path / "standalone.py"
    script.write_text(STANDALONE)
    proc = subprocess.run([sys.executable, str(script), str(folder / "model.text.onnx"), text, language,
                           str(tmp_path / "audio.npy"), str(runtime.config.speakers[speaker])], capture_output=True,
                          text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["loaded"] == []
    lang = language or None
    assert result["ids"] == runtime.text_to_ids(text, runtime.language_id(lang)[0])
    zero = SynthesisConfig(speaker=speaker, language=lang, noise_scale=0.0, noise_w=0.0)
    assert np.array_equal(np.load(tmp_path / "audio.npy"), runtime.ids_to_audio(result["ids"], zero))


def test_text_model_of_an_int8_variant_from_the_cli(zoo, tmp_path):
    """``python -m exporter text-model DIR --model model.dynamic.onnx``: the int8 voice as one string-in file."""
    import shutil

    from exporter.quant.quantize import quantize_voice

    _, exported, _ = zoo("css10")
    folder = tmp_path / "voice"
    shutil.copytree(exported, folder)
    quantize_voice(folder, "dynamic", report=lambda line: None)
    proc = subprocess.run([sys.executable, "-m", "exporter", "text-model", str(folder), "--model",
                           "model.dynamic.onnx"], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (folder / "model.dynamic.text.onnx").is_file() and "ids identical" in proc.stdout
    sidecar = json.loads(contract.sidecar_path(folder / contract.MODEL_FILE).read_text())
    assert sidecar["text_models"]["model.dynamic.onnx"]["verified"]["audio_snr_db"] == "identical"
    # a folder holding text models is still split, benchmarked and served by its audio models only
    split = subprocess.run([sys.executable, "-m", "exporter", "split", str(folder)], capture_output=True, text=True,
                           cwd=REPO, timeout=300)
    assert split.returncode == 0, split.stderr[-3000:]
    pieces = json.loads(contract.sidecar_path(folder / contract.MODEL_FILE).read_text())["streaming"]["pieces"]
    assert set(pieces) == {"model.onnx", "model.dynamic.onnx"}
    assert [p.name for p in contract.voice_models(folder)] == ["model.onnx", "model.dynamic.onnx"]
    nowhere = subprocess.run([sys.executable, "-m", "exporter", "text-model", str(tmp_path / "nowhere")],
                             capture_output=True, text=True, cwd=REPO, timeout=300)
    assert nowhere.returncode != 0 and "not an exported voice folder" in nowhere.stderr
