"""Range repairs of a decoder stage (exporter/quant/repair.py): the stream rewrites compute the same audio in fp32,
refuse what is not a HiFi-GAN stage, and bias correction takes the int8 convolutions' mean shift out."""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import pytest

pytest.importorskip("torch")
pytest.importorskip("tiny_vits")

from exporter.quant import repair
from exporter.quant.units import unit_names
from runtime import contract
from runtime.voice import SynthesisConfig, Voice


def _audio(model: onnx.ModelProto, feeds: dict) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


def _feeds(voice_dir):
    voice = Voice.load(voice_dir)
    call = voice.resolve(noise_scale=0.0, noise_w=0.0)
    return [call.feeds(voice.text_to_ids(text)) for text in ("Hello there, small voice.", "Another one!")]


def test_smoothing_and_splitting_a_stream_compute_the_same_audio(exported):
    voice = exported("char")
    feeds = _feeds(voice)
    base = onnx.load(str(voice / contract.MODEL_FILE))
    reference = [_audio(base, f) for f in feeds]
    stages = [u for u in unit_names(base) if u.startswith("decoder.") and u != "decoder.post"]
    assert len(stages) == 2
    for unit in stages:
        s = repair.stream(base, unit)
        assert len(s.writers) >= 3 and len(s.readers) >= 3 and s.channels > 2
        for lever in ("smooth:0.5", "smooth:1.0", "split:2"):
            model = repair.repaired_model(voice, unit, lever, feeds)
            for ref, f in zip(reference, feeds):
                got = _audio(model, f)
                assert got.shape == ref.shape
                assert np.abs(got - ref).max() < 1e-5 * max(1.0, np.abs(ref).max()), (unit, lever)
            if lever == "split:2":  # two channels more in every writer's output
                inits = {t.name: t for t in model.graph.initializer}
                ups = next(n for n in model.graph.node if n.name == s.writers[0])
                assert inits[ups.input[1]].dims[1] == s.channels + 2
        ranges = repair.channel_ranges(base, s, feeds)
        assert ranges.shape == (len(s.tensors), s.channels)
        assert (ranges.max(axis=1) >= 1.0 - 1e-6).all()  # a tensor's widest channel reaches its own percentile


def test_a_unit_that_is_not_a_stage_is_refused(exported):
    model = onnx.load(str(exported("char") / contract.MODEL_FILE))
    with pytest.raises(ValueError, match="not a HiFi-GAN stage"):
        repair.stream(model, "flow")
    with pytest.raises(ValueError, match="positive factors"):
        repair.scale(model, repair.stream(model, "decoder.1"), np.zeros(3))
    with pytest.raises(ValueError, match="unknown repair"):
        repair.repaired_model(exported("char"), "decoder.1", "clip:3", [])


def test_bias_correction_takes_out_each_int8_convolutions_mean_shift(quantized, tmp_path):
    """The static file's vocoder as onnxruntime computes int8 with exact integer arithmetic (ARM, VNNI: the
    simulation in exporter/quant/fakequant.py; AVX2 without VNNI saturates, see test_finetune): the mean output
    shift against fp32 (per channel, on the latents it was corrected on) of decoder.1's int8 convolutions shrinks;
    decoder.0's is not touched."""
    import torch

    from exporter.quant import polyphase
    from exporter.quant.fakequant import QUANTIZED_SUFFIX, FakeQuantGraph
    from exporter.split import split

    voice = tmp_path / "voice"
    shutil.copytree(quantized, voice)
    v = Voice.load(voice, variant="fp32")
    zero = SynthesisConfig(noise_scale=0.0, noise_w=0.0)
    latents = []
    for text in ("Hello there, small voice.", "Another one!"):
        encoded = v.pieces.encode(v.feeds(v.text_to_ids(text), zero))
        prior = v.pieces.latents(encoded, 0.0)
        latents.append(v.pieces.flow_frames(prior, 0, prior.shape[2]))
    architecture = v.config.streaming["architecture"]
    fp32_model = onnx.load(str(voice / contract.MODEL_FILE))
    polyphase.rewrite(fp32_model, lambda node: True)
    fp32 = {t.name: onnx.numpy_helper.to_array(t) for t in fp32_model.graph.initializer}

    def conv_outputs(model, teacher=False) -> dict[str, torch.Tensor]:
        """Each ResBlock convolution's mean output per channel; the biases as the file holds them (int32)."""
        vocoder = split(model, architecture)[2]
        biases = {n.input[0][:-len(QUANTIZED_SUFFIX)] for n in vocoder.graph.node
                  if n.op_type == "DequantizeLinear" and n.input[0].endswith(QUANTIZED_SUFFIX)}
        graph = FakeQuantGraph(vocoder, fp32 if teacher else {k: w for k, w in fp32.items() if k not in biases})
        crops = sum(1 for n in vocoder.graph.node if n.op_type == "Slice" and n.name.startswith("/pieces/crop_"))
        names = {n.output[0] for n in graph.nodes if n.name in graph.conv_params and "/resblocks." in n.name}
        sums = dict.fromkeys(names, 0.0)
        with torch.no_grad():
            for z in latents:
                feeds = {contract.Z: torch.from_numpy(z), contract.CROP_STARTS: torch.zeros(crops, dtype=torch.int64),
                         contract.CROP_ENDS: torch.full((crops,), 1 << 40, dtype=torch.int64)}
                _, got = graph({k: f for k, f in feeds.items() if k in graph.inputs}, quantized=not teacher,
                               teacher=teacher, record=names)
                for name in names:
                    sums[name] = sums[name] + got[name].mean(dim=(0, 2))
        return sums

    model = onnx.load(str(voice / "model.static.onnx"))
    reference = conv_outputs(model, teacher=True)
    before = conv_outputs(model)
    assert repair.correct_biases(voice, model, "decoder.1", latents) >= 3  # the upsampler and its ResBlock
    after = conv_outputs(model)
    onnx.checker.check_model(model)

    def shift(outputs, name):
        return float((outputs[name] - reference[name]).abs().mean())

    corrected = [name for name in reference if "/resblocks.1/" in name]
    untouched = [name for name in reference if "/resblocks.0/" in name]
    assert len(corrected) == 2 and untouched
    for name in corrected:
        assert shift(after, name) < 0.2 * shift(before, name), name
    for name in untouched:  # decoder.0 comes first: nothing upstream of it changed
        assert shift(after, name) == pytest.approx(shift(before, name))


def test_bias_correction_on_a_stage_with_tensors_kept_fp32(exported, tmp_path):
    """auto's finer plans leave some of a stage's tensors in fp32: a convolution then reads a float input with int8
    weights (the upsampler, when the LeakyRelu before it is kept): it is simulated as onnxruntime runs it, and
    corrected with the rest."""
    from exporter.quant.build import build
    from exporter.quant.plans import QuantConfig
    from exporter.quant.sensitivity import quantized_tensors

    voice = exported("char")
    whole = tmp_path / "whole.onnx"
    build(voice, QuantConfig("t", (("decoder.1", "qdq+"),)), whole, tmp_path / "ranges.json")
    into_upsampler = [t for t in quantized_tensors(onnx.load(str(whole)), "decoder.1") if "LeakyRelu" in t
                      and "resblocks" not in t]
    assert into_upsampler
    kept = tmp_path / "kept.onnx"
    build(voice, QuantConfig("t", (("decoder.1", "qdq+"),), keep_fp32=tuple(into_upsampler)), kept,
          tmp_path / "ranges.json")
    model = onnx.load(str(kept))
    v = Voice.load(voice, variant="fp32")
    encoded = v.pieces.encode(v.feeds(v.text_to_ids("Hello there."), SynthesisConfig(noise_scale=0.0, noise_w=0.0)))
    prior = v.pieces.latents(encoded, 0.0)
    before = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    assert repair.correct_biases(voice, model, "decoder.1", [v.pieces.flow_frames(prior, 0, prior.shape[2])]) >= 3
    changed = [t.name for t in model.graph.initializer
               if not np.array_equal(onnx.numpy_helper.to_array(t), before[t.name])]
    assert changed and all(name.endswith("bias_quantized") for name in changed)
    assert any("ups.1" in name for name in changed)  # the float-input convolution too
