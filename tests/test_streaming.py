"""Streaming on tiny exported voices: the pieces, exact chunked decoding, the Voice API, timings, the CLI."""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import subprocess
import sys
import wave

import numpy as np
import pytest
from tests_helpers import REPO, leftovers

from runtime import chunking, contract
from runtime.chunking import Schedule
from runtime.pieces import Pieces
from runtime.voice import SynthesisConfig, Voice, VoiceError

pytest.importorskip("torch")  # the voices are exported by the tests themselves
tiny_vits = pytest.importorskip("tiny_vits")

KINDS = ["char", "speakers", "languages"] + (["phoneme"] if tiny_vits.HAS_ESPEAK else [])
LONG = ("The quick brown fox jumps over the lazy dog while the small cat watches from the old wooden fence "
        "and the farmer walks slowly home")
ZERO = SynthesisConfig(noise_scale=0.0, noise_w=0.0)
MANY = Schedule(first_frames=2, growth=2.0, max_frames=16)  # boundaries everywhere


def snr_db(reference, test) -> float:
    noise = float(np.sum((reference.astype(np.float64) - test) ** 2))
    return float("inf") if noise == 0 else 10 * np.log10(float(np.sum(reference.astype(np.float64) ** 2)) / noise)


def whole_and_pieces(folder):
    return Voice.load(folder, streaming=False), Voice.load(folder)


def latents_of(voice, ids, syn=ZERO):
    call = voice.resolve(syn)
    return voice.pieces.latents(voice.pieces.encode(call.feeds(ids)), 0.0), call.speaker


# -- exact chunked decoding ----------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_chunks_join_to_the_whole_sentence(exported, kind):
    whole, voice = whole_and_pieces(exported(kind))
    assert voice.streams and not whole.streams
    for text in ("Hi.", LONG):
        ids = voice.text_to_ids(text)
        syn = SynthesisConfig(noise_scale=0.0, noise_w=0.0, speaker=1 if kind != "char" and kind != "phoneme" else None)
        reference = whole.ids_to_audio(ids, syn)
        parts = list(voice.ids_to_stream(ids, syn, MANY))
        assert [offset for offset, _, _ in parts] == list(np.cumsum([0] + [len(a) for _, a, _ in parts[:-1]]))
        assert [last for _, _, last in parts] == [False] * (len(parts) - 1) + [True]
        joined = np.concatenate([a for _, a, _ in parts])
        assert len(joined) == len(reference)
        assert np.abs(joined - reference).max() < 1e-4 and snr_db(reference, joined) > 80


# -- the receptive field, against the model itself (PyTorch, float64) -----------------------------------
# A trained or random voice barely uses the far end of its receptive field (a frame 21 away moved the tiny
# voice's float32 audio by 1e-8), so float32 cannot tell an exact window from one a frame too small. In
# float64 a dependence is a dependence: these tests run the voice's own flow and decoder in PyTorch.

ARCHITECTURES = {
    "tiny": {},
    "resblock1": {"resblock_type_decoder": "1", "resblock_kernel_sizes_decoder": [3, 5],
                  "resblock_dilation_sizes_decoder": [[1, 3, 5], [1, 3, 5]], "upsample_rates_decoder": [4, 4, 2],
                  "upsample_kernel_sizes_decoder": [8, 8, 4]},
    # dilated WaveNet layers: the far end of the field is used so little (1e-16) that only the field's own
    # test, which needs a dependence to be nonzero, not large, can see it
    "dilated_flow": {"num_layers_flow": 3, "dilation_rate_flow": 2},
}


def torch_model(name: str):
    import torch
    from TTS.tts.models.vits import Vits

    from exporter.onnx_export import inference_copy
    from exporter.split import architecture_from_vits

    torch.manual_seed(0)
    config = tiny_vits.tiny_config()
    for key, value in ARCHITECTURES[name].items():
        setattr(config.model_args, key, value)
    config.audio.hop_length = int(np.prod(config.model_args.upsample_rates_decoder))
    vits = inference_copy(tiny_vits.lively(Vits(config))).double()
    return vits, chunking.layers(architecture_from_vits(vits))


def torch_decode(vits, z, plan=None, nudge=None):
    """Flow (reverse) and HiFi-GAN as Coqui runs them, cropping where the flow and vocoder pieces crop (``plan``), or
    whole with 1.0 added to sample ``nudge[1]`` of the tensor at crop point ``nudge[0]``."""
    import torch
    import torch.nn.functional as F

    def at(x, k):
        if plan is not None:
            return x[:, :, plan.crop_starts[k]: plan.crop_ends[k]]
        if nudge is not None and nudge[0] == k:
            x = x.clone()
            x[:, :, nudge[1]] += 1.0
        return x

    x, k = z if plan is None else z[:, :, plan.window[0]: plan.window[1]], 0
    with torch.no_grad():
        for flow in reversed(vits.flow.flows):
            x = flow(torch.flip(x, [1]), torch.ones_like(x[:, :1]), reverse=True)
            x, k = at(x, k), k + 1
        dec = vits.waveform_decoder
        o = dec.conv_pre(x)
        for i, up in enumerate(dec.ups):
            o, k = at(F.leaky_relu(o, 0.1), k), k + 1
            o = up(o)
            o = sum(dec.resblocks[i * dec.num_kernels + j](o) for j in range(dec.num_kernels)) / dec.num_kernels
        o = torch.tanh(dec.conv_post(F.leaky_relu(o))).reshape(-1)
    return o if plan is None else o[plan.trim[0]: plan.trim[1]]


def crop_rates(chain) -> list[int]:
    """Samples per latent frame at each crop point."""
    rate, rates = 1, []
    for layer in chain:
        if isinstance(layer, chunking.Upsample):
            rate *= layer.stride
        elif isinstance(layer, chunking.Crop):
            rates.append(rate)
    return rates


def moved(vits, z, span, frame=None, point=None, position=None) -> float:
    """How far the whole sentence's audio in ``span`` moves when input ``frame`` (or sample ``position`` of
    the tensor at crop ``point``) is nudged."""

    if frame is not None:
        nudged = z.clone()
        nudged[:, :, frame] += 1.0
        after = torch_decode(vits, nudged)
    else:
        after = torch_decode(vits, z, nudge=(point, position))
    return float((after[span[0]: span[1]] - torch_decode(vits, z)[span[0]: span[1]]).abs().max())


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_receptive_field_is_the_models_own(name):
    """A latent frame ``context`` frames before (or after) a chunk moves its audio; one frame further does not
    move it at all. So a window one frame smaller than the computed one would be wrong, and a larger one waste."""
    import torch

    vits, chain = torch_model(name)
    context, hop = chunking.context(chain), chunking.hop_length(chain)
    z = torch.randn(1, vits.flow.flows[0].half_channels * 2, 2 * context + 20, dtype=torch.float64)
    start, end = context + 5, context + 15
    span = (start * hop, end * hop)
    assert moved(vits, z, span, frame=start - context) > 0 and moved(vits, z, span, frame=end - 1 + context) > 0
    assert moved(vits, z, span, frame=start - context - 1) == 0 and moved(vits, z, span, frame=end + context) == 0


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_chunk_plan_is_exact_and_every_crop_tight(name):
    """Decoding a chunk with the plan's window and crops gives the whole sentence's samples (float64: to
    1e-13). Every crop keeps exactly what the audio depends on: in the whole model, nudging the first or
    last sample a crop keeps moves the chunk's audio, nudging the sample just outside does not. (The
    flow and vocoder pieces crop at the same points: test_chunks_join_to_the_whole_sentence runs them.)"""
    import torch

    vits, chain = torch_model(name)
    context, hop = chunking.context(chain), chunking.hop_length(chain)
    frames = 2 * context + 40
    z = torch.randn(1, vits.flow.flows[0].half_channels * 2, frames, dtype=torch.float64)
    for start, end in ((context + 10, context + 17), (0, 6), (frames - 5, frames), (0, frames)):
        plan = chunking.plan_chunk(chain, frames, start, end)
        span = (start * hop, end * hop)
        assert float((torch_decode(vits, z, plan) - torch_decode(vits, z)[span[0]: span[1]]).abs().max()) < 1e-13
        w0, w1 = plan.window
        if w0 > 0:
            assert moved(vits, z, span, frame=w0) > 0 and moved(vits, z, span, frame=w0 - 1) == 0
        if w1 < frames:
            assert moved(vits, z, span, frame=w1 - 1) > 0 and moved(vits, z, span, frame=w1) == 0
        for k, (rate, (lo, hi)) in enumerate(zip(crop_rates(chain), plan.kept)):
            if lo > 0:
                assert moved(vits, z, span, point=k, position=lo) > 0, (k, "first kept")
                assert moved(vits, z, span, point=k, position=lo - 1) == 0, (k, "before it")
            if hi < frames * rate:
                assert moved(vits, z, span, point=k, position=hi - 1) > 0, (k, "last kept")
                assert moved(vits, z, span, point=k, position=hi) == 0, (k, "after it")


# -- the pieces of every model of a folder ---------------------------------------------------------

def test_every_int8_variant_has_its_pieces(quantized):
    sidecar = json.loads((quantized / "model.onnx.json").read_text())
    records = sidecar["streaming"]["pieces"]
    assert set(records) == {"model.onnx", "model.dynamic.onnx", "model.static.onnx"}
    # a piece that computes what another model's does is that file: the int8 plans leave the text side fp32
    # (one frontend for all three), and the dynamic preset touches only the flow (its vocoder is fp32's)
    assert {r["frontend"] for r in records.values()} == {"pieces/model.frontend.onnx"}
    assert len({r["flow"] for r in records.values()}) == 3
    assert records["model.dynamic.onnx"]["vocoder"] == "pieces/model.vocoder.onnx"
    assert records["model.static.onnx"]["vocoder"] == "pieces/model.static.vocoder.onnx"
    for name, record in records.items():
        assert all((quantized / record[piece]).is_file() for piece in contract.PIECES)
        whole = Voice.load(quantized / name, streaming=False)
        voice = Voice.load(quantized / name)
        assert voice.streams
        ids = voice.text_to_ids(LONG)
        joined = np.concatenate([a for _, a, _ in voice.ids_to_stream(ids, ZERO, MANY)])
        reference = whole.ids_to_audio(ids, ZERO)
        assert len(joined) == len(reference)
        if name == "model.dynamic.onnx":  # activation ranges measured per block: as close to fp32, not equal
            assert record["verified"]["int8"]
            # ... but the flow's blocks sit on a fixed grid: where the chunks fall does not change the audio
            other = np.concatenate([a for _, a, _ in voice.ids_to_stream(ids, ZERO, Schedule(100, 1.0, 100))])
            assert snr_db(joined, other) > 60  # (per-block ranges on a moving grid gave 2-8 dB)
            assert record["verified"]["chunked_excess_db"] <= 0.05
        else:  # fp32 and static int8 (fixed ranges): the same numbers
            assert snr_db(reference, joined) > 60, name


@pytest.mark.parametrize("plan", [(("flow", "dynamic"), ("decoder.1", "qdq+"), ("decoder", "int8w")),
                                  (("flow", "int8w"), ("decoder", "qdq")),
                                  # durations that differ from fp32's by a frame (the budget allows it)
                                  (("text_encoder", "dynamic"), ("duration_predictor", "dynamic"), ("flow", "qdq"))])
def test_mixed_int8_plans_stream(quantized, tmp_path, plan):
    """Plans `auto` picked on CI runs of the real voice (its choice follows the machine's timings): a dynamic
    flow before a static decoder, an fp32-computing flow before one. Their chunks cannot equal their
    whole sentence bit for bit, yet they stream, as close to fp32 as the whole sentence is."""
    from exporter import pieces
    from exporter.quant.build import build
    from exporter.quant.plans import QuantConfig

    folder = tmp_path / "voice"
    shutil.copytree(quantized, folder)
    build(folder, QuantConfig("mixed", plan), folder / "model.mixed.onnx")
    record = pieces.add(folder, "model.mixed.onnx")
    assert record["verified"]["int8"]
    if record["verified"]["min_snr_db"] != "identical" and record["verified"]["min_snr_db"] < 60:
        assert record["verified"]["chunked_excess_db"] <= 0.05
    voice = Voice.load(folder / "model.mixed.onnx")
    assert voice.streams


def test_int8_agreement_is_against_fp32_not_against_the_whole_sentence():
    from exporter.pieces import int8_agreement

    assert int8_agreement([(0.85, 0.87), (0.70, 0.74), (0.9, 0.9)])["ok"]
    assert not int8_agreement([(0.85, 0.95), (0.70, 0.80), (0.9, 0.9)])["ok"]  # chunks drift from fp32


@pytest.mark.parametrize("kind", ["char", "languages"])
def test_frontend_without_its_token_mask_gives_the_same_numbers(exported, monkeypatch, kind):
    """The frontend piece drops the mask multiplications and masked fills that an unpadded utterance
    does not need (exporter/specialize.py): the same bits out, for one token and for many."""
    import onnx
    import onnxruntime as ort

    from exporter import specialize, split

    folder = exported(kind)
    model = onnx.load(str(folder / contract.MODEL_FILE))
    architecture = json.loads((folder / "model.onnx.json").read_text())["streaming"]["architecture"]
    lean, *_ = split.split(model, architecture)
    monkeypatch.setattr(split, "drop_full_masks", lambda m: 0)
    full, *_ = split.split(model, architecture)
    assert specialize.drop_full_masks(onnx.ModelProto.FromString(full.SerializeToString())) > 0
    assert len(lean.graph.node) < len(full.graph.node)
    sessions = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]) for m in (lean, full)]
    rng = np.random.default_rng(0)
    for tokens in (1, 2, 17, 60):
        feeds = specialize.sample_feeds(sessions[1], tokens)
        feeds[contract.INPUT] = rng.integers(1, 30, (1, tokens)).astype(np.int64)
        a, b = (s.run(None, {k: v for k, v in feeds.items() if k in {i.name for i in s.get_inputs()}})
                for s in sessions)
        assert all(np.array_equal(x, y) for x, y in zip(a, b)), tokens


def test_an_understated_receptive_field_fails_the_check(exported, tmp_path):
    from exporter import pieces
    from exporter.errors import ExportError

    folder = tmp_path / "voice"
    shutil.copytree(exported("char"), folder)
    sidecar_path = folder / "model.onnx.json"
    sidecar = json.loads(sidecar_path.read_text())
    sidecar["streaming"]["architecture"]["flow"]["kernel_size"] = 3  # the real one is 5
    sidecar_path.write_text(json.dumps(sidecar))
    with pytest.raises(ExportError, match="only .* dB SNR from the whole"):
        pieces.add(folder, contract.MODEL_FILE)


def test_split_an_older_export_in_place(exported, tmp_path):
    folder = tmp_path / "voice"
    shutil.copytree(exported("char"), folder)
    shutil.rmtree(folder / contract.PIECES_DIR)
    sidecar_path = folder / "model.onnx.json"
    sidecar = json.loads(sidecar_path.read_text())
    architecture = sidecar.pop("streaming")["architecture"]
    sidecar_path.write_text(json.dumps(sidecar))
    proc = subprocess.run([sys.executable, "-m", "exporter", "split", str(folder)], capture_output=True, text=True,
                          cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr
    again = json.loads(sidecar_path.read_text())["streaming"]
    assert again["architecture"] == architecture  # read back from the graph's convolutions
    assert Voice.load(folder).streams


# -- the Voice API ----------------------------------------------------------------------------------

def test_stream_chunks_know_their_sentence_and_offset(exported):
    voice = Voice.load(exported("char"))
    text = f"Short one. {LONG}. And the end!"
    chunks = list(voice.stream(text, schedule=Schedule(4, 2.0, 32), paced=False, seed=3))
    sentences = sorted({c.sentence for c in chunks})
    assert sentences == [0, 1, 2]
    for index in sentences:
        mine = [c for c in chunks if c.sentence == index]
        assert [c.offset for c in mine] == list(np.cumsum([0] + [len(c.audio) for c in mine[:-1]]))
        assert [c.final for c in mine] == [False] * (len(mine) - 1) + [True]
        assert len({c.text for c in mine}) == 1
    long = [c for c in chunks if c.sentence == 1]
    assert len(long) > 3 and len(long[0].audio) == 4 * voice.pieces.hop_length
    # the same seed gives the same noise: streamed (fixed or paced chunks) and whole sentences agree
    whole = list(voice.synthesize(text, seed=3))
    paced = list(voice.stream(text, seed=3))
    for index, sentence in enumerate(whole):
        for stream in (chunks, paced):
            joined = np.concatenate([c.audio for c in stream if c.sentence == index])
            assert snr_db(sentence.audio, joined) > 60


def test_first_chunk_comes_before_the_rest_is_decoded(exported, monkeypatch):
    """The first chunk is out after one small flow run (FLOW_FIRST frames) and one vocoder run; the flow then
    makes the rest of the sentence's z in one block (FLOW_BLOCK frames), the vocoder goes on chunk by chunk."""
    from runtime.pieces import FLOW_FIRST

    voice = Voice.load(exported("char"))
    calls = []
    for name in ("flow_frames", "vocode"):
        real = getattr(Pieces, name)

        def counting(self, source, start, end, speaker=None, _real=real, _name=name):
            calls.append((_name, start, end))
            return _real(self, source, start, end, speaker)

        monkeypatch.setattr(Pieces, name, counting)
    stream = voice.stream(LONG)
    first = next(stream)
    assert [c[0] for c in calls] == ["flow_frames", "vocode"] and first.offset == 0 and not first.final
    assert calls[0] == ("flow_frames", 0, FLOW_FIRST)
    rest = list(stream)
    assert [c[0] for c in calls].count("vocode") == 1 + len(rest)
    assert [c[0] for c in calls].count("flow_frames") == 2


def test_voice_without_pieces_falls_back_with_one_warning(exported, tmp_path, caplog):
    folder = tmp_path / "voice"
    shutil.copytree(exported("char"), folder)
    shutil.rmtree(folder / contract.PIECES_DIR)
    with caplog.at_level(logging.WARNING):
        voice = Voice.load(folder)
        chunks = list(voice.stream("One sentence. Another one."))
    assert not voice.streams and len(chunks) == 2 and all(c.final and c.offset == 0 for c in chunks)
    assert sum("not there" in r.getMessage() for r in caplog.records) == 1
    assert sum("come" in r.getMessage() and "whole" in r.getMessage() for r in caplog.records) == 1
    with pytest.raises(VoiceError, match="phoneme timings need the voice's streaming pieces.*exporter split"):
        list(voice.stream("Hello.", alignments=True))


# -- phoneme timings -----------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["char"] + (["phoneme"] if tiny_vits.HAS_ESPEAK else []))
def test_timings_add_up_to_the_audio(exported, kind):
    voice = Voice.load(exported(kind))
    text = "Hello there, my friend. The weather is fine today!"
    for chunk in voice.synthesize(text, alignments=True, length_scale=1.3):
        timing = chunk.alignment
        assert timing.samples == len(chunk.audio)
        assert sum(p.samples for p in timing.phonemes) == len(chunk.audio)
        assert timing.phonemes[0].start == 0 and timing.phonemes[-1].end == len(chunk.audio) / chunk.sample_rate
        assert all(a.end == b.start for a, b in zip(timing.phonemes, timing.phonemes[1:]))
        assert [i for p in timing.phonemes for i in p.ids] == voice.text_to_ids(chunk.text)
        words = [w.text for w in timing.words]
        assert words == [w.strip(",.!") for w in chunk.text.split()]
        assert all(w.start < w.end for w in timing.words)


def test_timings_of_a_streamed_sentence_come_with_its_first_chunk(exported):
    voice = Voice.load(exported("char"))
    chunks = list(voice.stream(LONG, alignments=True, schedule=Schedule(4, 2.0, 16)))
    assert chunks[0].alignment is not None and all(c.alignment is None for c in chunks[1:])
    assert chunks[0].alignment.samples == sum(len(c.audio) for c in chunks)


# -- the CLI -----------------------------------------------------------------------------------------

def cli(*args, stdin: bytes | None = None):
    return subprocess.run([sys.executable, "-m", "runtime.synthesize", *map(str, args)], input=stdin,
                          capture_output=True, cwd=REPO, timeout=300)


def test_cli_streams_raw_and_wav_and_writes_timings(exported, tmp_path):
    folder = exported("char")
    args = ["-m", folder, f"{LONG}. Second sentence here.", "--noise-scale", 0, "--noise-w", 0]
    streamed = cli(*args, "--output-raw", "--first-chunk", 2, "--max-chunk", 8, "--debug")
    written = [line for line in streamed.stderr.decode().splitlines() if "s of audio for" in line]
    assert len(written) > 3 and "(sample 0)" in written[0]  # one write per chunk, the first at once
    whole = cli(*args, "--output-raw", "--no-streaming")
    assert streamed.returncode == 0 and whole.returncode == 0, streamed.stderr.decode() + whole.stderr.decode()
    a, b = (np.frombuffer(p.stdout, dtype="<i2").astype(int) for p in (streamed, whole))
    assert len(a) == len(b) and np.abs(a - b).max() <= 1
    proc = cli(*args, "--output", tmp_path / "s.wav", "--output-alignments", tmp_path / "s.json")
    assert proc.returncode == 0, proc.stderr.decode()
    with wave.open(str(tmp_path / "s.wav")) as w:
        samples = w.getnframes()
    timings = json.loads((tmp_path / "s.json").read_text())
    assert timings["samples"] == samples and len(timings["sentences"]) == 2
    assert timings["sentences"][1]["start"] == timings["sentences"][0]["end"]
    assert sum(s["samples"] for s in timings["sentences"]) == samples
    assert timings["sentences"][1]["words"][0]["text"] == "Second"


@pytest.mark.parametrize("args,match", [(["--first-chunk", 0], b"first chunk must be"),
                                        (["--first-chunk", 64, "--max-chunk", 8], b"largest chunk must be")])
def test_cli_bad_chunk_settings(exported, tmp_path, args, match):
    proc = cli("-m", exported("char"), "Hello.", "--output", tmp_path / "x.wav", *args)
    assert proc.returncode == 2 and match in proc.stderr and b"Traceback" not in proc.stderr
    assert not (tmp_path / "x.wav").exists() and not leftovers(tmp_path)


def test_cli_output_folder_missing_names_the_users_path(exported, tmp_path):
    for flag in ("--output", "--output-alignments"):
        target = tmp_path / "nope" / "x.out"
        extra = ["--output-raw"] if flag == "--output-alignments" else []
        proc = cli("-m", exported("char"), "Hello.", flag, target, *extra)
        assert proc.returncode == 1 and str(target).encode() in proc.stderr and b".partial" not in proc.stderr
    assert not leftovers(tmp_path)


@pytest.mark.skipif(not tiny_vits.HAS_ESPEAK, reason="espeak-ng not installed")
def test_cli_odd_text_prints_only_our_warnings(exported):
    """Whatever espeak-ng (the library or the program) says about odd input stays in the debug log."""
    from frontend_cases import EDGE_CASES

    text = "\n".join(t for t in EDGE_CASES if t.strip() and "\x00" not in t)
    proc = cli("-m", exported("phoneme"), "--output-raw", stdin=text.encode("utf-8"))
    assert proc.returncode == 0, proc.stderr.decode()
    lines = [line for line in proc.stderr.decode().splitlines() if line.strip()]
    assert all(line.startswith("WARNING runtime") for line in lines), lines


def test_written_files_follow_the_umask(exported, tmp_path):
    """A WAV, an exported voice and its pieces get the permissions a plain open() gives, not mkstemp's 0600."""
    old = os.umask(0o022)
    try:
        proc = cli("-m", exported("char"), "Hello.", "--output", tmp_path / "x.wav", "--output-alignments",
                   tmp_path / "x.json")
        assert proc.returncode == 0
        for path in (tmp_path / "x.wav", tmp_path / "x.json"):
            assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
        folder = exported("char")
        for path in [folder, folder / contract.PIECES_DIR, *folder.rglob("*")]:
            want = 0o755 if path.is_dir() else 0o644
            assert stat.S_IMODE(path.stat().st_mode) == want, path
    finally:
        os.umask(old)
