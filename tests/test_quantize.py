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
from exporter.quantize import DURATION_MODULES, quantize_voice  # noqa: E402
from runtime import contract  # noqa: E402
from runtime.voice import SynthesisConfig, Voice  # noqa: E402


@pytest.fixture(scope="module")
def quantized(exported, tmp_path_factory):
    folder = tmp_path_factory.mktemp("quant") / "voice"
    shutil.copytree(exported("char"), folder)
    for preset in ("dynamic", "static"):
        quantize_voice(folder, preset)
    return folder


def ops(path, prefix=""):
    model = onnx.load(str(path))
    return Counter(n.op_type for n in model.graph.node if n.name.startswith(prefix))


def test_dynamic_quantizes_only_the_flow_convolutions(quantized):
    fp32_flow_convs = ops(quantized / "model.onnx", "/flow")["Conv"]
    counts = ops(quantized / "model.dynamic.onnx")
    assert counts["ConvInteger"] == fp32_flow_convs > 0
    assert ops(quantized / "model.dynamic.onnx", "/flow")["Conv"] == 0
    for prefix in (*DURATION_MODULES, "/waveform_decoder"):
        assert ops(quantized / "model.dynamic.onnx", prefix)["ConvInteger"] == 0
    assert counts["Cast"] > ops(quantized / "model.onnx")["Cast"]  # fp16 weights of attention layers


def test_static_is_qdq_on_flow_and_decoder_only(quantized):
    counts = ops(quantized / "model.static.onnx")
    assert counts["QuantizeLinear"] > 0 and counts["DequantizeLinear"] > counts["QuantizeLinear"]
    model = onnx.load(str(quantized / "model.static.onnx"))
    producers = {o: n for n in model.graph.node for o in n.output}
    for node in model.graph.node:
        if node.op_type == "Conv" and node.name.startswith(DURATION_MODULES):
            # duration layers keep fp32 weights: no DequantizeLinear feeds them
            assert producers.get(node.input[1]) is None or producers[node.input[1]].op_type != "DequantizeLinear"
    qdq_convs = sum(1 for n in model.graph.node if n.op_type == "Conv" and n.name.startswith(("/flow", "/waveform"))
                    and producers.get(n.input[1]) is not None and producers[n.input[1]].op_type == "DequantizeLinear")
    assert qdq_convs == ops(quantized / "model.onnx", "/flow")["Conv"] + ops(quantized / "model.onnx", "/waveform")["Conv"]


@pytest.mark.parametrize("preset", ["dynamic", "static"])
def test_variant_keeps_durations_and_stays_close(quantized, preset):
    fp32 = Voice.load(quantized)
    int8 = Voice.load(quantized / f"model.{preset}.onnx")
    zero = SynthesisConfig(noise_scale=0.0, noise_w=0.0)
    for text in ("Hello there.", "The quick brown fox jumps over the lazy dog!"):
        ids = fp32.text_to_ids(text)
        a, b = fp32.ids_to_audio(ids, zero), int8.ids_to_audio(ids, zero)
        assert len(a) == len(b)
        assert np.corrcoef(a, b)[0, 1] > 0.5  # same waveform shape, int8 noise on top


def test_sidecar_records_how_and_what(quantized):
    sidecar = json.loads(contract.sidecar_path(quantized / contract.MODEL_FILE).read_text())
    for preset in ("dynamic", "static"):
        record = sidecar["variants"][f"model.{preset}.onnx"]
        assert record["config"]["preset"] == preset and record["config"]["method"] == preset
        assert record["measured"]["same_length"] == record["measured"]["sentences"] == 16
        actual = (quantized / f"model.{preset}.onnx").stat().st_size / (quantized / "model.onnx").stat().st_size
        assert record["measured"]["size_vs_fp32"] == pytest.approx(actual, abs=1e-3)
        assert record["measured"]["speed_vs_fp32"] > 0
    assert sidecar["variants"]["model.dynamic.onnx"]["measured"]["size_vs_fp32"] < 1
    assert sidecar["variants"]["model.static.onnx"]["config"]["calibration_sentences"] == 16


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
