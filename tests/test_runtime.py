"""The device runtime: Voice API and the synthesize CLI on exported voices."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import wave

import numpy as np
import pytest

from runtime import contract
from runtime.synthesize import main as synthesize_main
from runtime.pieces import Pieces
from runtime.voice import AudioChunk, Voice, VoiceError
from tests_helpers import REPO, leftovers

pytest.importorskip("torch")  # the voices are exported by the tests themselves
tiny_vits = pytest.importorskip("tiny_vits")

TEXT = "Hello there. This is a small test! Is it working?"


def read_wav(path):
    with wave.open(str(path)) as w:
        assert w.getnchannels() == 1 and w.getsampwidth() == 2
        return w.getframerate(), np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")


def test_voice_loads_folder_or_onnx(exported):
    folder = exported("char")
    for path in (folder, folder / contract.MODEL_FILE):
        voice = Voice.load(path)
        assert voice.sample_rate == 16000


def test_synthesize_yields_one_chunk_per_sentence(exported):
    voice = Voice.load(exported("char"))
    chunks = list(voice.synthesize(TEXT))
    assert [c.text for c in chunks] == ["Hello there.", "This is a small test!", "Is it working?"]
    assert all(isinstance(c, AudioChunk) and c.audio.dtype == np.float32 and len(c.audio) > 0 for c in chunks)
    assert all(c.sample_rate == 16000 for c in chunks)


def test_inner_steps_are_public_and_match_the_graph(exported):
    import onnxruntime as ort

    voice = Voice.load(exported("char"))
    ids = voice.text_to_ids("Hello there.")
    assert ids and all(isinstance(i, int) for i in ids)
    audio = voice.ids_to_audio(ids, None)
    sess = ort.InferenceSession(str(exported("char") / contract.MODEL_FILE))
    out, lengths = sess.run(None, {"input": np.array([ids]), "input_lengths": np.array([len(ids)]),
                                   "scales": np.array([0.0, 1.0, 0.0], np.float32)})
    zero = voice.ids_to_audio(ids, __import__("runtime.voice", fromlist=["SynthesisConfig"]).SynthesisConfig(
        noise_scale=0.0, noise_w=0.0))
    np.testing.assert_allclose(zero, out[0, 0, : lengths[0]], atol=1e-6)
    assert len(audio) > 0


def test_from_session_and_thread_options(exported):
    import onnxruntime as ort

    folder = exported("char")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(folder / contract.MODEL_FILE), options, providers=["CPUExecutionProvider"])
    sidecar = json.loads(contract.sidecar_path(folder / contract.MODEL_FILE).read_text())
    voice = Voice.from_session(session, sidecar)
    assert len(list(voice.synthesize("One sentence."))) == 1
    pieces = Voice.load(folder, threads=1).pieces
    for session in (pieces.frontend, pieces.flow, pieces.vocoder):
        assert session.get_session_options().intra_op_num_threads == 1
    assert Voice.load(folder, threads=1, streaming=False).session.get_session_options().intra_op_num_threads == 1


def test_speakers(exported):
    voice = Voice.load(exported("speakers"))
    a = voice.ids_to_audio(voice.text_to_ids("Hello there."), None)
    by_name = next(voice.synthesize("Hello there.", speaker="bob", noise_scale=0, noise_w=0)).audio
    by_id = next(voice.synthesize("Hello there.", speaker=1, noise_scale=0, noise_w=0)).audio
    np.testing.assert_array_equal(by_name, by_id)
    assert len(a) > 0
    with pytest.raises(VoiceError, match="alice"):
        list(voice.synthesize("Hello.", speaker="zed"))


def test_synthesize_wav_is_16bit_mono_and_atomic(exported, tmp_path, monkeypatch):
    voice = Voice.load(exported("char"))
    out = voice.synthesize_wav(TEXT, tmp_path / "a.wav")
    rate, pcm = read_wav(out)
    assert rate == 16000 and len(pcm) > 0

    def boom(*args, **kwargs):
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(Pieces, "vocode", boom)
    with pytest.raises(RuntimeError):
        voice.synthesize_wav(TEXT, tmp_path / "b.wav")
    assert not (tmp_path / "b.wav").exists() and not leftovers(tmp_path)


def test_streaming_is_lazy(exported):
    """The first chunk comes before later text is even read: long text streams."""
    voice = Voice.load(exported("char"))
    read = []

    def lines():
        for i in range(1000):
            read.append(i)
            yield f"Sentence number {i} is here."

    first = next(voice.synthesize(lines()))
    assert first.text == "Sentence number 0 is here." and len(read) <= 2


def test_long_line_without_punctuation_is_bounded(exported):
    voice = Voice.load(exported("char"))
    text = " ".join(["word"] * 400)  # 2,000 characters, no punctuation
    chunks = list(voice.synthesize(text))
    assert len(chunks) >= 5 and all(len(c.text) <= 400 for c in chunks)


def test_a_piece_is_bounded_by_its_ids_too():
    from runtime.sentences import bounded_by_ids

    def ids_of(text):  # a digit is spelled out in 20 ids, anything else is one
        return [0] * sum(20 if c.isdigit() else 1 for c in text)

    assert list(bounded_by_ids("plain words", ids_of, 50)) == [("plain words", [0] * 11)]
    text = "call 1234567, 7654321 and 1111111 " * 4  # 136 characters, 1,776 ids
    pieces = list(bounded_by_ids(text.strip(), ids_of, 200))
    assert all(len(ids) <= 200 and ids == ids_of(t) for t, ids in pieces)
    assert " ".join(t for t, _ in pieces).split() == text.split()  # cut between words, nothing lost
    assert list(bounded_by_ids("7", ids_of, 5)) == [("7", [0] * 20)]  # one character: cannot be cut


def test_long_spelled_out_text_is_cut_by_its_ids(exported):
    """400 characters of digits are 8,100 ids on an espeak voice: the model gets pieces of at most MAX_IDS."""
    from runtime.sentences import MAX_IDS

    voice = Voice.load(exported("phoneme"))
    seen = []
    voice.pieces.encode = (lambda encode: lambda feeds, rng: seen.append(feeds) or encode(feeds, rng))(
        voice.pieces.encode)
    text = "1234567 " * 50
    chunks = list(voice.synthesize(text))
    assert len(chunks) > 2 and " ".join(c.text for c in chunks).split() == text.split()
    lengths = [feeds[contract.INPUT].shape[1] for feeds in seen]
    assert len(lengths) == len(chunks) and max(lengths) <= MAX_IDS


def test_out_of_vocabulary_dropped_with_one_warning(exported, caplog):
    voice = Voice.load(exported("char"))
    with caplog.at_level(logging.WARNING):
        chunks = list(voice.synthesize("Hello ☃ world ☃ again ☃."))
    assert len(chunks) == 1
    assert sum("☃" in r.getMessage() for r in caplog.records) == 1


def test_espeak_ngs_own_messages_go_to_the_debug_log_not_to_stderr(exported, capfd, caplog):
    """espeak-ng prints "espeak: No envelope" for this text from inside the library (fprintf to C's stderr): a
    program using the Voice API (a server, a batch job) gets it in its debug log, and nothing on descriptor 2."""
    voice = Voice.load(exported("phoneme"))
    capfd.readouterr()
    with caplog.at_level(logging.DEBUG, logger="runtime.text"):
        voice.text_to_ids("\u2591\u0a1d")
    assert capfd.readouterr().err == ""
    assert any("No envelope" in r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG)


# -- bad voice files ---------------------------------------------------------------------------------

def test_missing_and_corrupt_voice_files(exported, tmp_path):
    folder = tmp_path / "voice"
    shutil.copytree(exported("char"), folder)
    sidecar = folder / "model.onnx.json"
    good = sidecar.read_text()

    with pytest.raises(FileNotFoundError, match="nope"):
        Voice.load(tmp_path / "nope")
    sidecar.write_text("{ broken")
    with pytest.raises(VoiceError, match="model.onnx.json.*not valid JSON"):
        Voice.load(folder)
    newer = json.loads(good)
    newer["schema_version"] = contract.SCHEMA_VERSION + 1
    sidecar.write_text(json.dumps(newer))
    with pytest.raises(VoiceError, match="newer vits-edge.*pip install -U vits-edge"):
        Voice.load(folder)
    sidecar.write_text(json.dumps({"format": "vits-edge", "schema_version": 1}))
    with pytest.raises(VoiceError, match="missing or has a bad field"):
        Voice.load(folder)
    sidecar.write_text(good)
    decoder = folder / contract.piece_name(contract.MODEL_FILE, "vocoder")
    decoder.write_bytes(b"not an onnx model")
    with pytest.raises(VoiceError, match="streaming pieces of .*model.onnx could not be loaded.*exporter split"):
        Voice.load(folder)
    (folder / "model.onnx").write_bytes(b"not an onnx model")
    with pytest.raises(VoiceError, match="model.onnx could not be loaded"):
        Voice.load(folder, streaming=False)
    sidecar.unlink()
    with pytest.raises(FileNotFoundError, match="model.onnx.json not found"):
        Voice.load(folder / "model.onnx")


# -- the CLI, as a user runs it ------------------------------------------------------------------

def cli(*args, stdin: bytes | None = None, env=None):
    return subprocess.run([sys.executable, "-m", "runtime.synthesize", *map(str, args)], input=stdin,
                          capture_output=True, cwd=REPO, timeout=300, env=env)


def test_cli_text_argument_to_wav(exported, tmp_path):
    proc = cli("-m", exported("char"), TEXT, "--output", tmp_path / "x.wav")
    assert proc.returncode == 0, proc.stderr.decode()
    rate, pcm = read_wav(tmp_path / "x.wav")
    assert rate == 16000 and len(pcm) > 1000


def test_cli_leaves_no_onnxruntime_telemetry(exported, tmp_path):
    """onnxruntime's Linux builds collect telemetry by default (a thread, a device id and an event database under
    ~/.cache/Microsoft, uploads when online): the runtime switches it off, and a user's own setting wins."""
    import os

    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"} | {"HOME": str(home)}
    proc = cli("-m", exported("char"), TEXT, "--output", tmp_path / "x.wav", env=env)
    assert proc.returncode == 0, proc.stderr.decode()
    assert not (home / ".cache" / "Microsoft").exists()
    # whether onnxruntime writes its files depends on the machine (it did here, not on CI's), so the switch itself
    # is checked too: set before onnxruntime is loaded, and a user's own setting kept
    probe = "import os, sys, runtime; print(os.environ['ORT_DISABLE_TELEMETRY'], 'onnxruntime' in sys.modules)"
    for setting, seen in ((None, "1 False"), ("0", "0 False")):
        extra = {} if setting is None else {"ORT_DISABLE_TELEMETRY": setting}
        proc = subprocess.run([sys.executable, "-c", probe], env=env | extra, cwd=REPO, capture_output=True, text=True)
        assert proc.stdout.split("\n")[0] == seen, proc.stderr


def test_cli_text_file_and_stdin_and_raw(exported, tmp_path):
    text_file = tmp_path / "in.txt"
    text_file.write_text("First line here.\nSecond line here.\n", encoding="utf-8")
    assert cli("-m", exported("char"), "--text-file", text_file, "--output", tmp_path / "f.wav").returncode == 0
    raw = cli("-m", exported("char"), "--output-raw", stdin="First line here.\nSecond line here.\n".encode())
    assert raw.returncode == 0, raw.stderr.decode()
    assert len(raw.stdout) % 2 == 0 and len(raw.stdout) > 2000
    assert not raw.stderr.strip()


def test_cli_scales_and_speakers(exported, tmp_path):
    folder = exported("speakers")
    listing = cli("-m", folder, "--list-speakers")
    assert listing.returncode == 0 and b"alice" in listing.stdout and b"carol" in listing.stdout
    base = cli("-m", folder, "Hello there.", "--noise-scale", 0, "--noise-w", 0, "--output-raw", "--speaker", "bob")
    slow = cli("-m", folder, "Hello there.", "--noise-scale", 0, "--noise-w", 0, "--output-raw", "--speaker", "1",
               "--length-scale", 2, "--threads", 1)
    assert base.returncode == 0 and slow.returncode == 0
    assert len(slow.stdout) > 1.5 * len(base.stdout)
    bad = cli("-m", folder, "Hello.", "--speaker", "zed", "--output-raw")
    assert bad.returncode != 0 and b"alice (0), bob (1), carol (2)" in bad.stderr and b"Traceback" not in bad.stderr


@pytest.mark.parametrize("stdin,args", [(b"", []), (b"   \n\t\n", []), (None, ["   "])])
def test_cli_empty_text_exit_2(exported, tmp_path, stdin, args):
    proc = cli("-m", exported("char"), *args, "--output", tmp_path / "e.wav", stdin=stdin or b"")
    assert proc.returncode == 2 and b"no text to speak" in proc.stderr
    assert not (tmp_path / "e.wav").exists() and not leftovers(tmp_path)


def test_cli_non_utf8_stdin(exported, tmp_path):
    proc = cli("-m", exported("char"), "--output", tmp_path / "u.wav", stdin=b"Hello \xff\xfe there.\n")
    assert proc.returncode == 2 and b"not UTF-8" in proc.stderr and b"Traceback" not in proc.stderr
    assert not (tmp_path / "u.wav").exists()


def test_cli_missing_voice(tmp_path):
    proc = cli("-m", tmp_path / "missing", "Hello.")
    assert proc.returncode == 1 and b"not found" in proc.stderr and b"Traceback" not in proc.stderr


@pytest.mark.skipif(not tiny_vits.HAS_ESPEAK, reason="espeak-ng not installed")
def test_phoneme_voice_without_espeak_says_how_to_install(exported, tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    env = {"PATH": str(empty), "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "runtime.synthesize", "-m", str(exported("phoneme")), "Hello.",
                           "--output-raw"], capture_output=True, cwd=REPO, timeout=300, env=env)
    assert proc.returncode != 0 and b"apt install espeak-ng" in proc.stderr and b"Traceback" not in proc.stderr


@pytest.mark.skipif(not tiny_vits.HAS_ESPEAK, reason="espeak-ng not installed")
def test_phoneme_voice_speaks(exported, tmp_path):
    proc = cli("-m", exported("phoneme"), "The meeting starts at 3:30 PM.", "--output", tmp_path / "p.wav")
    assert proc.returncode == 0, proc.stderr.decode()
    assert read_wav(tmp_path / "p.wav")[1].size > 0


# -- one settings object, from every front door ----------------------------------------------------------------
def test_syn_config_and_keywords_are_one_thing(exported):
    """``syn_config=`` and the keyword conveniences say the same; a keyword overrides the config's field, a None
    keyword leaves it; a misspelt setting, or a positional speaker (the old signature), is a TypeError."""
    from runtime.config import SynthesisConfig

    voice = Voice.load(exported("speakers"))
    syn = SynthesisConfig(speaker="bob", noise_scale=0.0, noise_w=0.0, length_scale=1.3)
    by_config = next(voice.synthesize("Hello there.", syn)).audio
    by_keywords = next(voice.synthesize("Hello there.", speaker="bob", noise_scale=0, noise_w=0,
                                        length_scale=1.3)).audio
    np.testing.assert_array_equal(by_config, by_keywords)
    overridden = next(voice.synthesize("Hello there.", syn, length_scale=1.0, speaker=None)).audio
    assert len(overridden) < len(by_config)  # length_scale overridden, the speaker kept
    np.testing.assert_array_equal(overridden, next(voice.synthesize(
        "Hello there.", SynthesisConfig(speaker="bob", noise_scale=0.0, noise_w=0.0))).audio)
    with pytest.raises(TypeError, match="length_scal"):
        voice.synthesize("Hello.", lenght_scale=1.2)
    with pytest.raises(TypeError, match="syn_config must be a SynthesisConfig"):
        voice.synthesize("Hello.", "bob")
    resolved = voice.resolve(syn)  # the voice's defaults, filled in once
    assert (resolved.syn.speaker, resolved.syn.length_scale) == ("bob", 1.3)
    assert resolved.syn.noise_scale == 0.0 and voice.resolve().syn.noise_scale == voice.config.noise_scale
    assert int(resolved.speaker[contract.SID][0]) == 1


def test_every_front_door_takes_the_same_synthesis_flags():
    """One function adds the synthesis flags: the CLI, the server and the batch job spell each the same way."""
    import argparse

    from runtime.batch.__main__ import build_parser as batch_parser
    from runtime.config import SynthesisConfig, add_synthesis_flags, synthesis_from_args
    from runtime.serve.__main__ import build_parser as serve_parser
    from runtime.synthesize import build_parser as cli_parser

    def flags(parser):
        return {s for a in parser._actions for s in a.option_strings}

    common = {"--speaker", "--length-scale", "--noise-scale", "--noise-w", "--noise-w-scale"}
    assert common <= flags(cli_parser()) and common <= flags(serve_parser()) and common <= flags(batch_parser())
    assert {"--seed", "--speaker-embedding", "--language"} <= flags(cli_parser())
    parser = argparse.ArgumentParser()
    add_synthesis_flags(parser)
    args = parser.parse_args(["--noise-w-scale", "0.5", "-s", "bob", "--length-scale", "1.2"])
    assert synthesis_from_args(args) == SynthesisConfig(speaker="bob", length_scale=1.2, noise_w=0.5)


# -- one voice folder, one model, at every front door ------------------------------------------------------------
def _with_default(quantized, tmp_path, model: str, int8_class: str | None):
    folder = tmp_path / "voice"
    shutil.copytree(quantized, folder)
    sidecar_path = contract.sidecar_path(folder / contract.MODEL_FILE)
    sidecar = json.loads(sidecar_path.read_text())
    sidecar[contract.DEFAULT_KEY] = {"model": model, "int8_class": int8_class}
    sidecar_path.write_text(json.dumps(sidecar))
    return folder


def test_a_folder_speaks_its_default_at_every_front_door(quantized, tmp_path):
    """The variant the sidecar makes the folder's default is what Voice.load, the CLI, the Wyoming server and the
    batch job speak, and each says which; --variant chooses another, fp32 by name."""
    from runtime import cpu
    from runtime.serve import catalog

    folder = _with_default(quantized, tmp_path, "model.static.onnx", cpu.int8_class())
    static = folder / "model.static.onnx"
    assert Voice.load(folder).model_path == static
    assert Voice.load(folder, variant="fp32").model_path == folder / contract.MODEL_FILE
    assert Voice.load(folder, variant="dynamic").model_path == folder / "model.dynamic.onnx"
    assert catalog.entry(folder).model == static and catalog.entry(folder, variant="fp32").model.name == "model.onnx"
    debug = cli("-m", folder, "Hello.", "--output", tmp_path / "d.wav", "--debug")
    assert debug.returncode == 0 and f"speaking {static}".encode() in debug.stderr
    fp32 = cli("-m", folder, "--variant", "fp32", "Hello.", "--output", tmp_path / "f.wav", "--debug")
    assert fp32.returncode == 0 and f"speaking {folder / contract.MODEL_FILE}".encode() in fp32.stderr
    (tmp_path / "items.txt").write_text("Hello there.\n")
    batch = subprocess.run([sys.executable, "-m", "runtime.batch", str(tmp_path / "items.txt"), "--voice", str(folder),
                            "--out", str(tmp_path / "out"), "--backend", "local", "--workers", "1"],
                           capture_output=True, text=True, cwd=REPO, timeout=300)
    assert batch.returncode == 0 and "voice: model.static.onnx" in batch.stderr, batch.stderr
    with pytest.raises(FileNotFoundError, match="it has: fp32, dynamic, static"):
        Voice.load(folder, variant="auto")
    with pytest.raises(VoiceError, match="give the folder"):
        Voice.load(static, variant="fp32")


def test_a_default_planned_for_another_cpu_class_is_not_forced_on_this_one(quantized, tmp_path):
    from runtime import cpu
    from runtime.config import default_model, read_sidecar
    from runtime.serve import catalog

    other = cpu.NO_DOT if cpu.int8_class() == cpu.DOT else cpu.DOT
    folder = _with_default(quantized, tmp_path, "model.static.onnx", other)
    name, why = default_model(folder, read_sidecar(contract.sidecar_path(folder / contract.MODEL_FILE)))
    assert name == contract.MODEL_FILE and f"planned for {other} CPUs" in why and "--variant static" in why
    assert Voice.load(folder).model_path.name == contract.MODEL_FILE
    assert catalog.entry(folder).model.name == contract.MODEL_FILE
    assert Voice.load(folder, variant="static").model_path.name == "model.static.onnx"  # asked for by name
    # weight storage only runs fp32's kernels: a default for every CPU
    folder = _with_default(quantized, tmp_path / "any", "model.dynamic.onnx", None)
    assert Voice.load(folder).model_path.name == "model.dynamic.onnx"
    # a folder without a default speaks model.onnx, whatever variants it holds
    assert Voice.load(quantized).model_path.name == contract.MODEL_FILE
