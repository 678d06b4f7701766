"""The Pi estimates: the plugin's file read right, the core models' arithmetic, the calibration's check, and (under
emulation, skipped where this machine cannot emulate) counts that repeat exactly and a decoder that agrees with
QEMU's own disassembler on every instruction a voice executes."""

from __future__ import annotations

import importlib.util
import json
import re

import numpy as np
import onnxruntime as ort
import pytest
from exporter.pi import cost, counts, emulation, estimate


def _block(**classes) -> list[int]:
    return [classes.get(c, 0) for c in counts.CLASSES]


def test_parse_splits_sentences_at_markers_and_leaves_out_warmup():
    n = len(counts.CLASSES)
    text = "\n".join([
        f"insnclass 1 classes {n}",
        "seg 0 mark 0",  # imports, load, warm-up: left out
        "tb 0 1000 3 " + " ".join(map(str, _block(int=3))),
        "x 0 500 0",
        "seg 1 mark 1",  # sentence 1
        "tb 1 2000 2 " + " ".join(map(str, _block(fp32_q=2))),
        "x 0 7 0", "x 1 10 30",
        "seg 2 mark 2",  # sentence 2
        "x 1 4 0",
        "seg 3 exit 0",  # after the last marker: left out
        "x 0 99 0",
        f"end {n}",
    ])
    blocks, execs, vaddrs = counts.parse(text, 2)
    assert blocks.shape == (2, n) and list(vaddrs) == [0x1000, 0x2000]
    assert execs[0].tolist() == [[7, 0], [10, 30]] and execs[1].tolist() == [[0, 0], [4, 0]]
    got = counts.Counts(blocks, execs, vaddrs, [100, 50])
    assert got.by_class(0)["fp32_q"] == 2 * 40 and got.by_class(0)["int"] == 3 * 7
    with pytest.raises(RuntimeError, match="ends early"):
        counts.parse(text.rsplit("\n", 1)[0], 2)
    with pytest.raises(RuntimeError, match="classes"):
        counts.parse(text.replace(f"classes {n}", f"classes {n + 1}", 1), 2)


def test_block_cycles_are_the_busiest_pipe_or_the_dispatch_width():
    blocks = np.asarray([_block(fp32_q=10), _block(int=30), _block(dot_q=8, load_v=4), _block(mull=6, padal_q=6)])
    a72, a76 = cost.CORES["cortex-a72"], cost.CORES["cortex-a76"]
    # A72: a 128-bit FMLA takes both 64-bit FP pipes (1 a cycle); 30 ALU ops: 2 pipes (15) over dispatch (10);
    # widening multiplies on F0 and pairwise accumulates on F1 overlap, but both use the FP pipes (12 / 2 = 6)
    assert a72.block_cycles(blocks).tolist() == [10, 15, 8, 6]
    # A76: two 128-bit pipes (FMLA, SDOT 2 a cycle); 3 ALUs; SMULL only on V0
    assert a76.block_cycles(blocks).tolist() == [5, 10, 4, 6]


def _estimate(serial, parallel):
    return cost.Estimate(cost.A72, np.asarray(serial, float), np.asarray(parallel, float), np.asarray([22050]), 22050)


def test_calibration_fits_one_thread_and_checks_the_others():
    # 2% of the work serial: Amdahl gives 1.96x at 2 threads, 3.77x at 4 (the Pi 4 gave 1.61x and 2.17x)
    est = _estimate([0.02 * 1.8e9], [0.98 * 1.8e9])
    cal = cost.Calibration.fit(est, "made up")
    assert cal.estimated[1] == pytest.approx(cost.SHERPA_PI4[1]) and cal.stall == pytest.approx(0.774)
    assert cal.estimated[4] == pytest.approx(0.774 * (0.02 + 0.98 / 4))
    assert cal.errors()[1] == pytest.approx(0) and cal.errors()[4] < -0.4 and not cal.holds
    # work that parallelizes as the Pi 4 did (about 76%) passes
    assert cost.Calibration.fit(_estimate([0.24 * 1.8e9], [0.76 * 1.8e9])).holds
    with pytest.raises(ValueError, match="Raspberry Pi 4"):
        cost.Calibration.fit(cost.Estimate(cost.A76, est.serial, est.parallel, est.samples, 22050))


def test_serial_share_is_what_the_first_thread_does_beyond_its_half():
    blocks = np.asarray([_block(fp32_q=10), _block(int=6)])  # 10 and 3 cycles on the A72
    # first thread: 30 passes of the FMLA block and 10 of the scalar one; the pool's thread 30 of the FMLA block
    execs = np.asarray([[[30, 30], [10, 0]]])
    pool = counts.Counts(blocks, execs, np.asarray([1, 2], dtype=np.uint64), [22050], {"threads": 2})
    assert cost.serial_share(pool, cost.A72) == pytest.approx(30 / 630)
    one = counts.Counts(blocks, np.asarray([[[60, 0], [10, 0]]]), pool.vaddrs, [22050], {"threads": 1})
    est = cost.estimate(one, cost.A72, pool=pool, sample_rate=22050)
    assert est.seconds(1) == pytest.approx(630 / 1.8e9) and est.seconds(4) == pytest.approx((30 + 600 / 4) / 1.8e9)
    with pytest.raises(ValueError, match="2-thread"):
        cost.serial_share(one, cost.A72)


# -- under emulation ------------------------------------------------------------------------------------
# QEMU's disassembly (mnemonic and arrangement) -> the class the decoder must give it
EXPECTED = [
    (r"^f(mla|mls|mul|add|sub|max|min)\S* v\d+\.4s", "fp32_q"),
    (r"^f(mla|mls|mul|add|sub)\S* v\d+\.2s", "fp32_d"),
    (r"^f(mla|mls|mul|add|sub)\S* v\d+\.8h", "fp16_q"),
    (r"^[su]dot ", "dot"),
    (r"^[su]m(ull|lal|lsl)2? v", "mull"),
    (r"^[su]adalp v\d+\.\d+[hsd]", "padal"),
    (r"^(mul|mla|mls) v", "mul"),
    (r"^(ld1|ld1r|ld2|ld3|ld4) ", "load_v"),
    (r"^(st1|st2|st3|st4) ", "store_v"),
    (r"^(ldr|ldp|ldur) [qd]\d+", "load_v"),
    (r"^(str|stp|stur) [qd]\d+", "store_v"),
    (r"^(ldr|ldp|ldrb|ldrh|ldur|ldrsw) [xw]\d+", "load"),
    (r"^(str|stp|strb|strh|stur) [xw]\d+", "store"),
    (r"^(b|bl|cbz|cbnz|tbz|tbnz|ret|br|blr)(\.\w+)? ", "branch"),
    (r"^(add|sub|and|orr|eor|cmp|mov|lsl|lsr|asr|csel) [xw]\d+(?!.*\bv\d+\.)", "int"),
    (r"^(mul|madd|msub|udiv|sdiv|umulh|smulh) [xw]\d+", "imul"),
    (r"^f(add|mul|madd|sub) [sd]\d+", "fp_scalar"),
]


def _disassembled(path):
    for line in path.read_text().splitlines():
        word, klass, text = line.split("\t", 2)
        yield int(word, 16), counts.CLASSES[int(klass)], text


def test_counts_repeat_exactly_and_the_decoder_agrees_with_qemu(exported, tmp_path):
    """One short sentence, the tiny voice, the Pi 4's core: the same count twice (not from the cache), and every
    distinct instruction it executed classed as QEMU's disassembler names it."""
    from runtime.voice import Voice

    voice_dir = exported("char")
    voice = Voice.load(voice_dir, variant="fp32", streaming=False)
    feeds = [voice.resolve(noise_scale=0.0, noise_w=0.0).feeds(voice.text_to_ids("Hello there."))]
    model = voice_dir / "model.onnx"
    try:
        first = counts.count(model, feeds, cpu="cortex-a72", cache=False, disas=tmp_path / "disas.txt")
    except emulation.CannotEmulate as exc:
        pytest.skip(f"cannot emulate aarch64 here, Pi counts NOT checked: {exc}")
    again = counts.count(model, feeds, cpu="cortex-a72", cache=False)
    assert np.array_equal(first.instructions(), again.instructions()) and first.samples == again.samples
    x86 = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, feeds[0])[0]
    assert first.samples == [x86.shape[-1]]
    by = first.by_class(0)
    assert by["fp32_q"] > 0 and by["load_v"] > 0
    assert by["dot_q"] == by["fp16_q"] == 0  # the A72 has neither: onnxruntime must not have used them
    assert counts.count(model, feeds, cpu="cortex-a72").by_class() == first.by_class()  # cached from now on

    checked, wrong = 0, []
    for word, klass, text in _disassembled(tmp_path / "disas.txt"):
        for pattern, expected in EXPECTED:
            if re.search(pattern, text):
                checked += 1
                if not klass.startswith(expected):
                    wrong.append(f"{word:08x} {text!r}: {klass}, expected {expected}")
                break
    assert checked > 1000 and not wrong, "\n".join(wrong[:20])


# -- quantize --target pi4|pi5 ---------------------------------------------------------------------------
class _FakePi(estimate.PiSpeed):
    """A Pi whose estimates are made up (no emulation): each QuantizeLinear in the file multiplies its
    speed over fp32 by 1 + ``gain``. The real one counts each trial under QEMU (the smoke test above shows the counting)."""

    gain = 0.02

    def __init__(self, voice_dir, target, *, threads=estimate.PLAN_THREADS, log=print):
        self.target, self.threads, self.log = target, threads, log
        self.core = cost.CORES[cost.TARGETS[target]]
        self.fp32 = cost.Estimate(self.core, np.zeros(1), np.ones(1) * 1e9, np.asarray([22050]), 22050)
        self.calibrated = estimate.Calibrated(cost.Calibration(1.7, dict(cost.SHERPA_PI4)), self.fp32)

    def __call__(self, model):
        import onnx

        quantized = sum(n.op_type == "QuantizeLinear" for n in onnx.load(str(model)).graph.node)
        return (1.0 + self.gain) ** quantized


@pytest.mark.parametrize("target, gain", [("pi5", 0.02), ("pi4", -0.01)])
def test_quantize_for_a_pi_plans_by_its_estimate(exported, tmp_path, monkeypatch, target, gain):
    """auto --target pi5 decides by the Pi's estimate (recorded as such, with the Pi's int8 class); where int8
    is estimated slower (a made-up Pi 4), the plan computes nothing in int8: never slower than fp32."""
    import shutil

    from exporter.quant.budget import Budget
    from exporter.quant.search import search
    from runtime import contract, cpu

    monkeypatch.setattr(estimate, "PiSpeed", type("Pi", (_FakePi,), {"gain": gain}))
    folder = tmp_path / "voice"
    shutil.copytree(exported("char"), folder)
    anything = Budget(max_phoneme_frames=10**6, max_moved_share=1.0, max_length_change=10.0, max_logmel_db=100.0,
                      max_mcd_db=1000.0)
    lines: list[str] = []
    search(folder, target=target, budget=anything, listen=False, report=lines.append)
    sidecar = json.loads(contract.sidecar_path(folder / contract.MODEL_FILE).read_text())
    record = sidecar["variants"]["model.auto.onnx"]
    measured = record["measured"]
    assert record["config"]["target"] == target
    assert measured["planned_for"]["target"] == target and measured["planned_for"]["method"] == "emulation estimate"
    assert measured["speed_method"] == "estimated" and measured["speed_interval"] == [measured["speed_vs_fp32"]] * 2
    assert any("estimated for a Raspberry Pi" in line for line in lines)
    computes = [p for p in record["config"]["plan"] if p[1] in ("dynamic", "qdq", "qdq+")]
    if target == "pi5":
        assert computes and measured["speed_vs_fp32"] > 1.0
        assert measured["timed_on"]["int8_class"] == cpu.DOT == sidecar[contract.DEFAULT_KEY]["int8_class"]
    else:
        assert not computes and sidecar[contract.DEFAULT_KEY]["int8_class"] is None


def test_an_unknown_target_names_the_known_ones_and_no_qemu_exits_77(exported, tmp_path, monkeypatch, capsys):
    from exporter.__main__ import EXIT_CANNOT_EMULATE, main
    from exporter.errors import ExportError
    from exporter.quant.plans import check_target

    with pytest.raises(ExportError, match="unknown target 'pi3': choose one of x86, arm64, pi4, pi5"):
        check_target("pi3")
    def no_qemu(*args, **kwargs):
        with monkeypatch.context() as m:
            m.setattr(counts.shutil, "which", lambda name, *a, **k: None)
            counts.qemu()

    with pytest.raises(emulation.CannotEmulate, match="apt-get install qemu-user"):
        no_qemu()

    monkeypatch.setattr(estimate, "count", no_qemu)
    assert main(["quantize", str(exported("char")), "--target", "pi5"]) == EXIT_CANNOT_EMULATE
    assert "apt-get install qemu-user" in capsys.readouterr().err


def test_arithmetic_counts_multiply_adds_and_which_are_int8():
    from benchmarks import arithmetic
    from onnx import TensorProto, helper

    # a convolution: 8 output channels x 100 frames, each summing 4 input channels x kernel 3
    assert arithmetic.node_macs("Conv", [[1, 4, 102], [8, 4, 3]], [[1, 8, 100]]) == 8 * 100 * 4 * 3
    # a transposed convolution (stride 2, kernel 4): every input element spread over 2 channels x 4 taps
    assert arithmetic.node_macs("ConvTranspose", [[1, 4, 50], [4, 2, 4]], [[1, 2, 100]]) == 4 * 50 * 2 * 4
    assert arithmetic.node_macs("MatMul", [[1, 10, 16], [16, 32]], [[1, 10, 32]]) == 10 * 32 * 16
    assert arithmetic.node_macs("Add", [[1, 4], [1, 4]], [[1, 4]]) == 0
    assert arithmetic.least_seconds({"fp32": 2e9, "int8": 8e9, "fp16": 0}, {"fp32": 1e9, "int8": 4e9}) == 4.0
    graph = helper.make_graph([
        helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["x"], name="dqx"),
        helper.make_node("DequantizeLinear", ["wq", "s", "z"], ["w"], name="dqw"),
        helper.make_node("Conv", ["x", "w"], ["y"], name="qdq_conv"),  # both dequantized: int8 in onnxruntime
        helper.make_node("Conv", ["y", "w"], ["y2"], name="weights_only"),  # fp32 data: weight storage only
        helper.make_node("ConvInteger", ["xq", "wq"], ["y3"], name="dynamic"),
    ], "g", [helper.make_tensor_value_info("xq", TensorProto.UINT8, None)],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("y2", "y3")])
    assert arithmetic.int8_nodes(helper.make_model(graph)) == {"qdq_conv", "dynamic"}
    import numpy as np
    from onnx import numpy_helper

    half = helper.make_graph([
        helper.make_node("Cast", ["x"], ["x16"], to=TensorProto.FLOAT16),
        helper.make_node("Conv", ["x16", "w16"], ["y16"], name="fp16_island"),  # an fp16 weight read as such
        helper.make_node("Cast", ["w16b"], ["w32"], to=TensorProto.FLOAT),
        helper.make_node("Conv", ["x", "w32"], ["y"], name="fp16_storage"),  # weight storage: fp32 arithmetic
    ], "h", [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.zeros((2, 2, 3), np.float16), n) for n in ("w16", "w16b")])
    assert arithmetic.fp16_nodes(helper.make_model(half)) == {"fp16_island"}


def test_first_audio_is_the_frontend_the_first_flow_block_and_the_first_chunk(exported):
    """What the first-audio estimate counts is what Voice.stream runs before its first chunk."""
    from runtime import chunking, pieces

    voice_dir = exported("char")
    runs = estimate.first_audio_runs(voice_dir / "model.onnx", "Hello there, this is a longer sentence to stream.")
    assert [p.name for p, _ in runs] == ["model.frontend.onnx", "model.flow.onnx", "model.vocoder.onnx"]
    frontend, flow, vocoder = (feeds for _, feeds in runs)
    assert frontend["input"].shape[1] == int(frontend["input_lengths"][0]) > 10
    # the flow's first block covers the first chunk and the vocoder's context; the vocoder sees the first chunk
    assert flow["latents"].shape[2] <= pieces.FLOW_FIRST + chunking.context(chunking.layers(
        json.loads((voice_dir / "model.onnx.json").read_text())["streaming"]["architecture"]))
    assert vocoder["z"].shape[2] < flow["latents"].shape[2]
    # the same feeds on every call (the zero-scaled noise too): the counts are cached by them
    again = estimate.first_audio_runs(voice_dir / "model.onnx", "Hello there, this is a longer sentence to stream.")
    assert all(np.array_equal(a[k], b[k]) for (_, a), (_, b) in zip(runs, again, strict=True) for k in a)


def test_estimate_takes_a_given_serial_share():
    blocks = np.asarray([_block(fp32_q=10)])
    one = counts.Counts(blocks, np.asarray([[[100, 0]]]), np.asarray([1], dtype=np.uint64), [22050], {"threads": 1})
    est = cost.estimate(one, cost.A72, serial=0.25, sample_rate=22050)
    assert est.seconds(4) == pytest.approx((250 + 750 / 4) / 1.8e9)
    with pytest.raises(ValueError, match="one of them"):
        cost.estimate(one, cost.A72, sample_rate=22050)


def test_fp16_preset_computes_the_convolutions_in_fp16_islands(exported, tmp_path):
    """The fp16 preset: the flow's and the decoder's Convs (upsamplers as polyphase Convs) in fp16 between two
    Casts, conv_post and the text side untouched, Adds and LeakyRelus in fp32 (fp16 Add is a scalar loop on the
    A76); on x86 (fp32 kernels behind onnxruntime's Casts) it speaks the same length, close to fp32."""
    import onnx
    from exporter.quant.build import build
    from exporter.quant.plans import preset
    from exporter.quant.units import node_units
    from runtime.voice import Voice

    voice_dir = exported("char")
    dst = tmp_path / "model.fp16.onnx"
    build(voice_dir, preset("fp16", "pi5"), dst)
    model = onnx.load(str(dst))
    units = node_units(model)
    fp16 = [n for n in model.graph.node if n.op_type == "Conv" and n.output[0].endswith("_fp16")]
    assert fp16 and all(units[n.name].split(".")[0] in ("flow", "decoder") for n in fp16)
    assert not any(units.get(n.name) == "decoder.post" for n in fp16)
    assert not any(n.op_type == "ConvTranspose" for n in model.graph.node)
    half = {n.output[0] for n in fp16} | {n.output[0] for n in model.graph.node
                                          if n.op_type == "Cast" and n.name.endswith("/to_fp16")}
    assert not any(name in half for n in model.graph.node if n.op_type in ("Add", "LeakyRelu", "Mul")
                   for name in n.input)
    voice = Voice.load(voice_dir, variant="fp32", streaming=False)
    feeds = voice.resolve(noise_scale=0.0, noise_w=0.0).feeds(voice.text_to_ids("Hello there."))
    ref = voice.session.run(None, feeds)[0]
    out = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    assert out.shape == ref.shape
    snr = 10 * np.log10(np.sum(ref ** 2) / max(np.sum((out - ref) ** 2), 1e-20))
    assert snr > 30, snr


def test_pi_report_has_every_column_and_says_when_the_check_fails():
    from benchmarks import pi

    fitted = cost.Calibration.fit(_estimate([0.1 * 1.8e9], [0.9 * 1.8e9]), "made up")
    cal = {"calibration": fitted.as_dict(), "ours_rtf": dict(fitted.estimated), "ours_errors": fitted.errors(),
           "serial_share": {"piper": 0.1, "ours": 0.05}, "onnxruntime": {"piper": "1.17.1", "ours": "1.32.0"}}
    row = {"model": "model.fp16.onnx", "variant": "fp16", "cpu": "cortex-a76", "board": "Raspberry Pi 5",
           "bytes": 46_000_000, "instructions_per_audio_s": 1e9, "groups_per_audio_s": dict.fromkeys(pi.GROUPS, 1e8),
           "estimated_rtf": {1: 0.2, 2: 0.11, 4: 0.06}, "vs_fp32": {1: 1.6, 2: 1.5, 4: 1.4}, "serial_share": 0.05,
           "macs_per_audio_s": {"fp32": 0.3e9, "fp16": 2.3e9, "int8": 0.0}, "share_of_peak": {1: 0.5, 4: 0.4},
           "first_audio_s": {1: 0.31, 4: 0.12}, "x86_peak_rss_mb": 180.0}
    text = pi.report(cal, [row, {**row, "first_audio_s": None, "x86_peak_rss_mb": None}], 10.2)
    assert "| fp16 | Raspberry Pi 5 | 46.0 | 0.200 | 0.060 | 1.60x | 1.40x | 0.31 / 0.12 |" in text
    assert "| 0.20 / 0.06 | - |" not in text and "| - | 0.30 + 2.30 + 0.00 | 50% / 40% | - |" in text
    assert "10.2 s sentence" in text and "**fails**" not in text
    failing = {**cal, "calibration": {**cal["calibration"], "holds": False}}
    assert "**fails**" in pi.report(failing, [row], 10.2) and "RTF 4 threads" not in pi.report(failing, [row], 10.2)


def test_fp16_preset_is_judged_on_the_pi5s_own_audio(exported, tmp_path):
    """`quantize --preset fp16` on a machine without fp16 arithmetic: the budget's measures on audio made on an
    emulated A76, its speed estimated there, both recorded as such; a voice that speaks; fp16 arithmetic executed
    on the A76, folded back to fp32 on the A72."""
    import shutil

    from exporter.quant.quantize import quantize_voice
    from runtime import contract
    from runtime.voice import Voice

    folder = tmp_path / "voice"
    shutil.copytree(exported("char"), folder)
    lines: list[str] = []
    try:
        dst = quantize_voice(folder, "fp16", target="pi5", report=lines.append)
    except emulation.CannotEmulate as exc:
        pytest.skip(f"cannot emulate aarch64 here, the fp16 preset NOT checked: {exc}")
    record = json.loads(contract.sidecar_path(folder / "model.onnx").read_text())["variants"][dst.name]
    measured = record["measured"]
    assert record["config"]["preset"] == "fp16" and "cortex-a76, emulated" in measured["heard_on"]
    assert measured["speed_method"] == "estimated" and measured["logmel_db"] is not None
    assert measured["sentences"] == 10 and measured["size_vs_fp32"] < 1.0  # the tiny voice: its text side dominates
    # judged by the budget, its listeners too where installed (the bench extra), on the same emulated audio
    assert isinstance(measured["within_budget"], bool) and measured["verdict"]
    if importlib.util.find_spec("faster_whisper") or importlib.util.find_spec("speechmos"):  # Listener.available
        heard = measured["heard_at_zero_noise"]
        assert set(heard) == {"fp16", "fp32"} and heard["fp16"].keys() == heard["fp32"].keys() >= {"wer"}
    else:
        assert "skipped" in measured["verdict"]
    assert any("emulated Raspberry Pi 5" in line for line in lines)
    voice = Voice.load(folder, variant="fp16")
    assert len(voice.ids_to_audio(voice.text_to_ids("Hello there."))) > 1000
    # native on the Pi 5's core (its count, cached by the estimate above, has fp16 vector arithmetic); on the Pi 4's,
    # onnxruntime folds every island back into an fp32 Conv: no island Cast is left in the graph it runs
    import onnx

    feeds = estimate.zero_noise_feeds(Voice.load(folder, variant="fp32", streaming=False), estimate.TEXTS[:1])
    assert counts.count(dst, feeds, cpu="cortex-a76").by_class()["fp16_q"] > 0
    a72 = counts.run_on(dst, feeds, cpu="cortex-a72")
    assert any(n.name.endswith("/to_fp16") for n in onnx.load(str(dst)).graph.node)
    assert not any(n.name.endswith("/to_fp16") for n in onnx.load_from_string(a72.optimized).graph.node)


def test_a_planned_folder_gives_its_auto_and_its_pi_or_says_how_to_make_one(exported, tmp_path):
    """`benchmarks.pi --planned FOLDER`: the auto of a folder made by `quantize --target pi5` is counted as "auto for
    the Raspberry Pi 5"; a folder whose auto was planned on the host is refused with the command that plans it."""
    import shutil

    from benchmarks import pi
    from runtime import contract

    folder = tmp_path / "voice"
    shutil.copytree(exported("char"), folder)
    shutil.copy(folder / contract.MODEL_FILE, folder / contract.variant_file("auto"))
    sidecar = contract.sidecar_path(folder / contract.MODEL_FILE)
    record = json.loads(sidecar.read_text())
    record.setdefault("variants", {})["model.auto.onnx"] = {"measured": {"planned_for": None}}
    sidecar.write_text(json.dumps(record))
    with pytest.raises(SystemExit, match="--target pi5"):
        pi.planned_auto(folder)
    record["variants"]["model.auto.onnx"]["measured"]["planned_for"] = {"target": "pi5", "board": "Raspberry Pi 5"}
    sidecar.write_text(json.dumps(record))
    assert pi.planned_auto(folder) == (folder / "model.auto.onnx", "Raspberry Pi 5")
