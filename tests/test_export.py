"""The exporter on tiny random voices: every input path, every scale, every output."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

torch = pytest.importorskip("torch")
tiny_vits = pytest.importorskip("tiny_vits")

from exporter.verify import onnx_feeds, snr_db, torch_audio, zero_noise  # noqa: E402
from runtime import contract  # noqa: E402


def session(folder):
    return ort.InferenceSession(str(folder / contract.MODEL_FILE), providers=["CPUExecutionProvider"])


def sidecar(folder):
    return json.loads(contract.sidecar_path(folder / contract.MODEL_FILE).read_text(encoding="utf-8"))


def run(sess, ids_batch, scales, sid=None, langid=None):
    audio, lengths = sess.run(None, onnx_feeds(ids_batch, scales, sid, langid))
    return audio, lengths


IDS = [5, 12, 7, 30, 22, 9, 14, 3, 40, 11, 6, 19]


@pytest.mark.parametrize("kind", ["char", "phoneme", "speakers", "languages", "discriminator"])
def test_export_writes_verified_voice(exported, kind):
    if kind == "phoneme" and not tiny_vits.HAS_ESPEAK:
        pytest.skip("espeak-ng not installed")
    folder = exported(kind)
    meta = sidecar(folder)
    assert meta["schema_version"] == contract.SCHEMA_VERSION
    assert meta["audio"]["sample_rate"] == 16000
    assert meta["verification"]["min_snr_db"] >= 60
    assert all(c["torch_samples"] == c["onnx_samples"] for c in meta["verification"]["checks"])
    names = [i.name for i in session(folder).get_inputs()]
    assert names == meta["inputs"]["names"]
    assert [o.name for o in session(folder).get_outputs()] == [contract.OUTPUT, contract.OUTPUT_LENGTHS]
    # only the finished files remain in the folder
    assert sorted(p.name for p in folder.iterdir()) == ["model.onnx", "model.onnx.json", contract.PIECES_DIR]
    assert sorted(p.name for p in (folder / contract.PIECES_DIR).iterdir()) == [
        "model.flow.onnx", "model.frontend.onnx", "model.vocoder.onnx"]
    record = meta["streaming"]["pieces"][contract.MODEL_FILE]
    assert record["verified"]["min_snr_db"] == "identical" or record["verified"]["min_snr_db"] >= 60


def test_sidecar_describes_tokenizer_and_metadata(exported):
    folder = exported("char")
    meta = sidecar(folder)
    tok = meta["tokenizer"]
    assert tok["type"] == "characters" and tok["cleaner"] == "english_cleaners"
    assert tok["add_blank"] is True and tok["blank"]["id"] == len(tok["vocab"]) - 1
    assert tok["pad"] == {"symbol": "<PAD>", "id": 0}
    assert meta["inference"] == {"noise_scale": 0.667, "length_scale": 1.0, "noise_w": 1.0}  # VitsArgs defaults
    props = {p.key: p.value for p in onnx.load(str(folder / "model.onnx")).metadata_props}
    for key in ("model_type", "comment", "sample_rate", "n_speakers", "add_blank", "blank_id", "bos_id", "eos_id",
                "pad_id", "use_eos_bos", "punctuation", "language", "frontend"):
        assert key in props, key
    assert props["model_type"] == "vits" and props["comment"] == "coqui" and props["frontend"] == "characters"
    assert props["blank_id"] == str(tok["blank"]["id"])
    assert json.loads(props[contract.METADATA_KEY])["tokenizer"] == tok


@pytest.mark.skipif(not tiny_vits.HAS_ESPEAK, reason="espeak-ng not installed")
def test_phoneme_sidecar_names_phonemizer(exported):
    tok = sidecar(exported("phoneme"))["tokenizer"]
    assert tok["type"] == "phonemes"
    assert tok["phonemizer"]["name"] == "espeak" and tok["phonemizer"]["language"] == "en-us"
    assert tok["cleaner"] == "phoneme_cleaners" and tok["use_eos_bos"] is False


def test_onnx_matches_torch_for_each_speaker_and_language(voices, exported):
    from exporter.checkpoint import load_voice

    config, checkpoint = voices("languages")
    loaded = load_voice(config, checkpoint)
    sess = session(exported("languages"))
    meta = sidecar(exported("languages"))
    assert meta["speakers"] == {"alice": 0, "bob": 1} and meta["languages"] == {"en": 0, "fr": 1}
    outputs = []
    with zero_noise(loaded.model):
        for sid in (0, 1):
            for langid in (0, 1):
                ref = torch_audio(loaded.model, IDS, sid, langid)
                audio, lengths = run(sess, [IDS], [0, 1, 0], sid, langid)
                out = audio[0, 0, : lengths[0]]
                assert len(out) == len(ref) and snr_db(ref, out) > 60
                outputs.append(out)
    assert not np.allclose(outputs[0], outputs[2][: len(outputs[0])])  # speaker changes the voice
    assert not np.allclose(outputs[0], outputs[1][: len(outputs[0])])  # language changes it too


def test_each_scale_reaches_the_graph(exported):
    sess = session(exported("char"))
    base, base_len = run(sess, [IDS], [0.0, 1.0, 0.0])
    again, _ = run(sess, [IDS], [0.0, 1.0, 0.0])
    np.testing.assert_array_equal(base, again)  # zero noise is deterministic
    noisy, noisy_len = run(sess, [IDS], [0.8, 1.0, 0.0])
    assert noisy_len[0] == base_len[0] and not np.allclose(noisy, base)  # noise_scale: same durations, new audio
    slow, slow_len = run(sess, [IDS], [0.0, 2.0, 0.0])
    assert slow_len[0] > 1.5 * base_len[0]  # length_scale stretches time
    lengths_w = {int(run(sess, [IDS], [0.0, 1.0, 1.0])[1][0]) for _ in range(5)}
    assert lengths_w != {int(base_len[0])}  # noise_w randomises durations


def test_one_token_input(exported):
    sess = session(exported("char"))
    audio, lengths = run(sess, [[7]], [0.0, 1.0, 0.0])
    assert lengths[0] > 0 and audio.shape[2] == lengths[0]


def test_batch_returns_output_lengths(exported):
    sess = session(exported("speakers"))
    long, short = IDS, IDS[:5]
    audio, lengths = run(sess, [long, short], [0.0, 1.0, 0.0], sid=1)
    single_long, len_long = run(sess, [long], [0.0, 1.0, 0.0], sid=1)
    single_short, len_short = run(sess, [short], [0.0, 1.0, 0.0], sid=1)
    assert list(lengths) == [len_long[0], len_short[0]]
    assert audio.shape[2] == max(lengths)
    np.testing.assert_allclose(audio[0, 0, : lengths[0]], single_long[0, 0], atol=1e-4)


def test_dynamic_lengths(exported):
    sess = session(exported("char"))
    lengths = [int(run(sess, [[1 + i % 60 for i in range(n)]], [0, 1, 0])[1][0]) for n in (2, 30, 120)]
    assert lengths[0] < lengths[1] < lengths[2]


def test_weight_norm_removed_before_tracing(exported):
    model = onnx.load(str(exported("char") / "model.onnx"))
    names = [i.name for i in model.graph.initializer]
    assert not any("original0" in n or "weight_g" in n for n in names)


@pytest.mark.parametrize("t", [1, 2, 3, 7, 20])
def test_relative_attention_band_skews_exactly(t):
    """The exported attention moves the 2w+1 relative terms into place by padding and reshaping (no index
    tensors): the same numbers, zeros outside the band, for every length including one token."""
    from exporter.onnx_export import _absolute_to_band, _band_to_absolute

    w = 4
    band = torch.randn(1, 2, t, 2 * w + 1)
    absolute = torch.zeros(1, 2, t, t)
    back = torch.zeros(1, 2, t, 2 * w + 1)
    full = torch.randn(1, 2, t, t)
    for i in range(t):
        for j in range(t):
            if abs(j - i) <= w:
                absolute[..., i, j] = band[..., i, j - i + w]
                back[..., i, j - i + w] = full[..., i, j]
    assert torch.equal(_band_to_absolute(band, t), absolute)
    assert torch.equal(_absolute_to_band(full, w), back)
