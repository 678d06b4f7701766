"""int8 variants: which nodes each preset quantizes, closeness to fp32, and the sidecar record."""

from __future__ import annotations

import json
import shutil
from collections import Counter

import numpy as np
import onnx
import pytest

pytest.importorskip("torch")
pytest.importorskip("tiny_vits")

from exporter.__main__ import main  # noqa: E402
from exporter.quantize import DURATION_UNITS, node_units, preset, quantize_voice  # noqa: E402
from runtime import contract  # noqa: E402
from runtime.voice import SynthesisConfig, Voice  # noqa: E402


@pytest.fixture(scope="module")
def quantized(exported, tmp_path_factory):
    folder = tmp_path_factory.mktemp("quant") / "voice"
    shutil.copytree(exported("char"), folder)
    for name in ("dynamic", "static"):
        quantize_voice(folder, name)
    return folder


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
    convs = qdq_convs(quantized / "model.static.onnx")
    assert len(convs) == fp32 and all(name.startswith(("/flow", "/waveform")) for name in convs)
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


# -- auto ---------------------------------------------------------------------------------------------
def test_auto_keeps_only_what_its_budget_allows(exported, tmp_path):
    from exporter.auto import Budget, search

    folder = tmp_path / "voice"
    shutil.copytree(exported("char"), folder)
    lines: list[str] = []
    budget = Budget(max_logmel_db=0.5)
    dst = search(folder, budget=budget, listen=False, report=lines.append)
    assert dst == folder / "model.auto.onnx" and dst.exists()
    record = json.loads(contract.sidecar_path(folder / contract.MODEL_FILE).read_text())["variants"][dst.name]
    search_rows = record["search"]
    units = set(node_units(onnx.load(str(folder / "model.onnx"))).values())
    # every unit was measured on its own, with every treatment it can take
    assert {r["plan"].split("=")[0] for r in search_rows if r["step"] == "alone"} == units
    for row in search_rows:
        if row["within_budget"]:
            assert row["same_length"] == row["sentences"] and row["logmel_db"] <= 0.5
            assert not row.get("lengths_changed")
        assert any(row["plan"] in line for line in lines)  # each trial was reported
    chosen = [tuple(p) for p in record["config"]["plan"]]
    final = search_rows[-1]
    assert final["step"] == "final" and final["within_budget"] and final["length_checks"] > final["sentences"]
    assert record["measured"]["logmel_db"] is None or record["measured"]["logmel_db"] <= 0.5
    for unit, option in chosen:  # each chosen treatment passed on its own first
        alone = [r for r in search_rows if r["step"] == "alone" and r["plan"] == f"{unit}={option}"]
        assert alone and alone[0]["within_budget"]
    assert "auto chose" in lines[-1]

    # nothing may change a length or the sound: only storage that is exact enough survives
    strict = search(folder, budget=Budget(max_logmel_db=0.0), listen=False, report=lines.append)
    record = json.loads(contract.sidecar_path(folder / contract.MODEL_FILE).read_text())["variants"][strict.name]
    assert all(option not in ("dynamic", "qdq", "qdq+") for _, option in record["config"]["plan"])


def test_listening_verdict_holds_mos_and_wer_to_fp32():
    from exporter.auto import Budget, _Listener

    ref = {"wer": 0.02, "ovrl": 3.3, "p808": 4.0}
    assert _Listener.verdict(ref, {"wer": 0.02, "ovrl": 3.25, "p808": 3.95}, Budget())[0]
    ok, why = _Listener.verdict(ref, {"wer": 0.02, "ovrl": 3.1, "p808": 4.0}, Budget())
    assert not ok and "OVRL" in why
    ok, why = _Listener.verdict(ref, {"wer": 0.05, "ovrl": 3.3, "p808": 4.0}, Budget())
    assert not ok and "WER" in why


def test_weight_only_storage_keeps_fp32_compute(exported, tmp_path):
    """int8 / fp16 weight storage: smaller file, DequantizeLinear/Cast feeding the same fp32 ops."""
    import onnxruntime as ort

    from exporter.weight_only import store_weights_fp16, store_weights_int8
    from exporter.verify import onnx_feeds, snr_db

    src = exported("char") / "model.onnx"
    feeds = onnx_feeds([[5, 12, 7, 30, 22, 9, 14, 3]], [0.0, 1.0, 0.0])
    ref = ort.InferenceSession(str(src)).run(None, feeds)[0]
    for store, op, min_snr in ((store_weights_int8, "DequantizeLinear", 20.0), (store_weights_fp16, "Cast", 50.0)):
        model = onnx.load(str(src))
        rewritten = store(model, lambda node: node.name.startswith("/waveform_decoder"))
        path = tmp_path / f"{op}.onnx"
        onnx.save(model, str(path))
        assert rewritten > 0 and ops(path, "/waveform_decoder")[op] == rewritten
        assert path.stat().st_size < src.stat().st_size
        out = ort.InferenceSession(str(path)).run(None, feeds)[0]
        assert out.shape == ref.shape and snr_db(ref.reshape(-1), out.reshape(-1)) > min_snr
