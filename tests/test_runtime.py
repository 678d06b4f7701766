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


def test_out_of_vocabulary_dropped_with_one_warning(exported, caplog):
    voice = Voice.load(exported("char"))
    with caplog.at_level(logging.WARNING):
        chunks = list(voice.synthesize("Hello ☃ world ☃ again ☃."))
    assert len(chunks) == 1
    assert sum("☃" in r.getMessage() for r in caplog.records) == 1


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
