"""The fine-tuned preset: fake quantization against onnxruntime's int8, training that lowers the loss and writes
a valid QDQ file, and a stopped run that resumes to the same result."""

from __future__ import annotations

import platform
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest

pytest.importorskip("torch")
pytest.importorskip("tiny_vits")

from runtime import contract

FEW = {"steps": 12, "batch": 2, "crop_frames": 16, "generated": 4, "checkpoint_every": 4}


def _static_vocoder(voice: Path):
    """The static preset's file (the ``quantized`` fixture made it with the product's command), its vocoder
    piece, the fp32 vocoder, and the fp32 weights in the polyphase form the plan was quantized in."""
    from onnx import numpy_helper

    from exporter.quant import polyphase
    from exporter.split import split
    from runtime.voice import Voice

    path = voice / "model.static.onnx"
    architecture = Voice.load(voice, variant="fp32").config.streaming["architecture"]
    fp32_model = onnx.load(str(voice / contract.MODEL_FILE))
    polyphase.rewrite(fp32_model, lambda node: True)
    fp32 = {t.name: numpy_helper.to_array(t) for t in fp32_model.graph.initializer}
    return path, split(onnx.load(str(path)), architecture)[2], split(fp32_model, architecture)[2], fp32


def _feeds(fp32_vocoder, frames: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random latents of the vocoder's width, uncropped."""
    crops = sum(1 for n in fp32_vocoder.graph.node if n.op_type == "Slice" and n.name.startswith("/pieces/crop_"))
    init = {t.name: t for t in fp32_vocoder.graph.initializer}
    channels = init[next(n for n in fp32_vocoder.graph.node if n.op_type == "Conv").input[1]].dims[1]
    z = np.random.default_rng(seed).standard_normal((1, channels, frames)).astype(np.float32)
    return {contract.Z: z, contract.CROP_STARTS: np.zeros(crops, np.int64),
            contract.CROP_ENDS: np.full(crops, 1 << 40, np.int64)}


def _session(model: onnx.ModelProto):
    import onnxruntime as ort

    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def test_fake_quantization_matches_onnxruntime_int8(quantized):
    """Every quantized tensor of the vocoder, as integers: the simulation and onnxruntime agree to within one step
    (a float sum rounded across a step boundary is the only difference), and the simulated damage to the audio is
    onnxruntime's measured damage."""
    import torch

    from exporter.quant.fakequant import FakeQuantGraph
    from runtime import cpu

    if cpu.int8_class() == cpu.NO_DOT and platform.machine().lower() in ("x86_64", "amd64"):
        pytest.skip("onnxruntime's int8 convolution on x86 without VNNI (AVX2) adds pairs of u8 x s8 products in "
                    "saturating 16-bit lanes (vpmaddubsw), so its int8 is not exact integer arithmetic there (a tiny "
                    "voice's vocoder: up to 62 steps apart on most tensors); the simulation is exact arithmetic, as "
                    "onnxruntime computes it with VNNI and on ARM, where this test runs")
    _, vocoder, fp32_vocoder, fp32 = _static_vocoder(quantized)
    graph = FakeQuantGraph(vocoder, fp32)
    feeds = _feeds(fp32_vocoder, 40)
    quantized = [n for n in vocoder.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in graph.constants]
    # one learned scale per scale of the file: a Reshape/Transpose shares its input's
    assert len({n.input[1] for n in quantized}) == len(graph.act_log_scale) > 10
    probe = onnx.ModelProto()
    probe.CopyFrom(vocoder)
    probe.graph.output.extend([onnx.helper.make_tensor_value_info(n.output[0], onnx.TensorProto.UINT8, None)
                               for n in quantized])
    ort_out = _session(probe).run(None, feeds)
    with torch.no_grad():
        record = {n.input[0] for n in quantized}
        audio, floats = graph({k: torch.from_numpy(v) for k, v in feeds.items()}, record=record)
    with torch.no_grad():
        ours = [graph.quantize(floats[n.input[0]], n.input[1]).numpy().astype(np.int32) for n in quantized]
    steps = [np.abs(ort_q.astype(np.int32) - q) for q, ort_q in zip(ours, ort_out[1:])]
    assert max(int(s.max()) for s in steps) <= 1
    assert np.mean([float((s > 0).mean()) for s in steps]) < 0.01  # and rarely even that

    reference = _session(fp32_vocoder).run(None, feeds)[0].reshape(-1)
    ours, theirs = audio.numpy().reshape(-1), ort_out[0].reshape(-1)

    def snr(x):
        return 10 * np.log10(np.sum(reference ** 2) / np.sum((x - reference) ** 2))

    assert abs(snr(ours) - snr(theirs)) < 0.5
    with torch.no_grad():  # teacher mode is the fp32 vocoder itself
        teacher, _ = graph({k: torch.from_numpy(v) for k, v in feeds.items()}, quantized=False, teacher=True)
    np.testing.assert_allclose(teacher.numpy().reshape(-1), reference, atol=1e-5)


def _finetuned(voice: Path, tmp: Path, name: str, stop_after=None, resume_from: Path | None = None, **extra):
    from exporter.quant.finetune import FinetuneConfig, finetune

    path = voice / "model.static.onnx"
    target = tmp / f"{name}.onnx"
    shutil.copyfile(path, target)
    work = tmp / f"{name}-work"
    if resume_from is not None:
        shutil.copytree(resume_from, work)
    cfg = FinetuneConfig(**{**FEW, **extra})
    lines = []
    done = finetune(voice, target, "static", cfg, report=lines.append, stop_after=stop_after, work=work)
    return path, target, done, lines


def test_finetuning_lowers_the_loss_and_writes_the_same_qdq_graph(quantized, tmp_path):
    voice = quantized
    untrained, trained, done, lines = _finetuned(voice, tmp_path, "run")
    assert done["finished"] and done["steps"] == FEW["steps"]
    assert done["held_out_loss_after"] < done["held_out_loss_before"]
    assert any("step 12/12" in line for line in lines)
    before, after = onnx.load(str(untrained)), onnx.load(str(trained))
    onnx.checker.check_model(after)
    assert Counter(n.op_type for n in after.graph.node) == Counter(n.op_type for n in before.graph.node)
    assert [n.name for n in after.graph.node] == [n.name for n in before.graph.node]
    changed = [a.name for a, b in zip(after.graph.initializer, before.graph.initializer) if a != b]
    assert any(name.endswith("_quantized") for name in changed) and any(name.endswith("_scale") for name in changed)
    assert all(name.startswith(("vits.waveform_decoder", "/waveform_decoder", "/Mul")) or "waveform_decoder" in name
               or name.endswith(("_scale", "_zero_point")) for name in changed)
    # onnxruntime still fuses it into int8 kernels: as many QLinearConv as before
    import onnxruntime as ort

    def fused(path: Path) -> int:  # the optimized graph goes to tmp_path: the voice folder is shared by other tests
        options = ort.SessionOptions()
        options.optimized_model_filepath = str(tmp_path / f"{path.parent.name}.{path.stem}.opt.onnx")
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return Counter(n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node)["QLinearConv"]

    assert fused(trained) == fused(untrained) > 0


ADVERSARIAL = {"adversarial": 0.1, "discriminator_warmup": 3}


@pytest.mark.parametrize("extra", [{}, ADVERSARIAL], ids=["spectral", "adversarial"])
def test_a_stopped_run_resumes_to_the_same_model(quantized, tmp_path, extra):
    """With the adversarial term the discriminator and its optimizer are in the checkpoint too (stopped past its
    warm-up, so the student has heard from it)."""
    voice = quantized
    _, whole, done, lines = _finetuned(voice, tmp_path, "whole", **extra)
    assert any("discriminator" in line for line in lines) == bool(extra)
    _, part, stopped, _ = _finetuned(voice, tmp_path, "part", stop_after=6, **extra)
    assert not stopped["finished"] and stopped["steps"] == 6
    assert onnx.load(str(part)) == onnx.load(str(voice / "model.static.onnx"))  # nothing written before the end
    _, resumed_path, resumed, lines = _finetuned(voice, tmp_path, "resumed", resume_from=tmp_path / "part-work",
                                                 **extra)
    assert any("resuming at step 6" in line for line in lines)
    assert resumed["finished"] and resumed["held_out_loss_after"] == done["held_out_loss_after"]
    from exporter.quant.finetune import FinetuneConfig, voice_key

    # a checkpoint belongs to its voice: another fp32 model (a re-export) starts afresh
    assert FinetuneConfig().key("plan", voice_key(voice)) != FinetuneConfig().key("plan", "another voice")
    a, b = onnx.load(str(whole)), onnx.load(str(resumed_path))
    for x, y in zip(a.graph.initializer, b.graph.initializer):
        np.testing.assert_array_equal(onnx.numpy_helper.to_array(x), onnx.numpy_helper.to_array(y), err_msg=x.name)


class _Deaf:
    """No listening models (their verdicts are tested in test_quantize.py): the rest of the budget judges."""

    available, notes = False, ["listening left out by the test"]

    def __init__(self, threads):
        pass


def test_finetuned_preset_through_the_cli_judges_and_records(exported, tmp_path, capsys, monkeypatch):
    """The user's command on a tiny voice: trained, judged by the budget, written or refused with the reason."""
    import json

    from exporter.__main__ import main
    from exporter.quant import judge

    monkeypatch.setattr(judge, "Listener", _Deaf)

    folder = tmp_path / "voice"
    shutil.copytree(exported("char"), folder)
    code = main(["quantize", str(folder), "--preset", "finetuned", "--finetune-steps", "8"])
    captured = capsys.readouterr()
    if code == 0:
        sidecar = json.loads(contract.sidecar_path(folder / contract.MODEL_FILE).read_text())
        record = sidecar["variants"]["model.finetuned.onnx"]
        assert record["measured"]["finetune"]["steps"] == 8
        assert record["measured"]["finetune"]["held_out_loss_after"] < record["measured"]["finetune"]["held_out_loss_before"]
        assert (folder / "model.finetuned.onnx").is_file() and not (folder / ".finetune").exists()
        assert "model.finetuned.onnx" in sidecar["streaming"]["pieces"]  # it streams like any variant
        assert "listening left out by the test" in captured.out
    else:
        assert "outside the budget" in captured.err and "model.finetuned.rejected.onnx" in captured.err
        assert not (folder / "model.finetuned.onnx").exists()


def test_auto_finetune_gives_decoder_stages_a_trained_rung(exported, tmp_path):
    """``auto --finetune``: each decoder stage's ladder ends in qdq+ fine-tuned; a plan holding it is trained before
    it is judged, and kept when it is the faster (made-up timings: this CPU gains only from stage 1 trained)."""
    import json

    from exporter.quant.budget import Budget
    from exporter.quant.finetune import FinetuneConfig
    from exporter.quant.search import search
    from exporter.quant.units import unit_names

    folder = tmp_path / "voice"
    shutil.copytree(exported("char"), folder)
    anything = Budget(max_phoneme_frames=10**6, max_moved_share=1.0, max_length_change=10.0, max_logmel_db=100.0,
                      max_mcd_db=1000.0)
    gains = {("decoder.1", "qdq+ft"): 1.5}

    def timer(plan):
        return float(np.prod([gains.get(item, 1.0) for item in plan]))

    lines: list[str] = []
    search(folder, budget=anything, listen=False, report=lines.append, timer=timer,
           finetune_cfg=FinetuneConfig(**FEW))
    record = json.loads(contract.sidecar_path(folder / contract.MODEL_FILE).read_text())["variants"]["model.auto.onnx"]
    alone = {r["plan"] for r in record["search"] if r["step"] == "alone"}
    stages = [u for u in unit_names(onnx.load(str(folder / contract.MODEL_FILE))) if u[-1].isdigit()]
    assert len(stages) == 2 and {f"{stage}=qdq+ft" for stage in stages} <= alone  # the tiny voice has two stages
    assert ["decoder.1", "qdq+ft"] in record["config"]["plan"]
    assert any("fine-tuning" in line for line in lines) and any("step 12/12" in line for line in lines)
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # its training happened in its temporary folder


def test_the_discriminator_learns_to_tell_the_teachers_audio_from_a_hissing_copy():
    """HiFi-GAN's discriminators at fine-tuning's CPU width, from scratch: on a voiced sound against the same sound
    with a noise floor, the least-squares loss falls below what a discriminator that cannot tell them apart scores
    (0.5 for each sub-discriminator, both outputs at 0.5), real scored above fake."""
    import torch

    from exporter.quant import adversarial
    from exporter.quant.finetune import FinetuneConfig

    torch.manual_seed(0)
    critic = adversarial.Discriminator(FinetuneConfig().discriminator_width)
    optimizer = torch.optim.Adam(critic.parameters(), lr=1e-3, betas=(0.8, 0.99))
    t = torch.arange(4096) / 22050
    real = torch.stack([0.3 * torch.sin(2 * torch.pi * f * t) * torch.sin(2 * torch.pi * 3 * t) ** 2
                        for f in (110.0, 150.0, 220.0, 330.0)])
    fake = real + 0.1 * torch.randn(real.shape, generator=torch.Generator().manual_seed(1))
    losses = []
    for _ in range(80):
        loss = adversarial.discriminator_loss(critic(real), critic(fake))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    undecided = 0.5 * (len(adversarial.PERIODS) + adversarial.SCALES)
    assert losses[0] > undecided and np.mean(losses[-5:]) < 0.85 * undecided
    with torch.no_grad():
        scores_real = sum(s.mean() for s, _ in critic(real))
        scores_fake = sum(s.mean() for s, _ in critic(fake))
    assert scores_real > scores_fake
    fooled, matching = adversarial.generator_loss(critic(real), critic(fake))
    assert fooled > 0 and matching > 0
    assert len(critic(real)) == len(adversarial.PERIODS) + adversarial.SCALES
