"""Bad input gets a clear error, a non-zero exit, and leaves nothing behind."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("tiny_vits")

from exporter.__main__ import main  # noqa: E402
from tests_helpers import REPO, leftovers  # noqa: E402


def export_cli(config, checkpoint, out, *extra):
    return main(["export", "--config", str(config), "--checkpoint", str(checkpoint), "--out", str(out), *extra])


class _Exploit:
    """Unpickling this would create a marker file: proof that code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("container", ["torch.save", "plain pickle"])
def test_malicious_checkpoint_is_refused_and_never_executed(voices, tmp_path, capsys, container):
    config, _ = voices("char")
    marker = tmp_path / "pwned"
    evil = tmp_path / "model.pth"
    payload = {"model": {"x": torch.zeros(1)}, "payload": _Exploit(marker)}
    if container == "torch.save":
        torch.save(payload, evil)
    else:
        evil.write_bytes(pickle.dumps(payload, protocol=2))
    assert export_cli(config, evil, tmp_path / "out") == 1
    assert not marker.exists()
    err = capsys.readouterr().err
    assert "pickled Python objects" in err and "refused" in err
    assert not (tmp_path / "out").exists() and not leftovers(tmp_path)


def test_missing_files(voices, tmp_path, capsys):
    config, checkpoint = voices("char")
    assert export_cli(tmp_path / "nope.json", checkpoint, tmp_path / "out") == 1
    assert "nope.json not found" in capsys.readouterr().err
    assert export_cli(config, tmp_path / "nope.pth", tmp_path / "out") == 1
    assert "nope.pth not found" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_non_vits_config(voices, tmp_path, capsys):
    _, checkpoint = voices("char")
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model": "glow_tts"}))
    assert export_cli(config, checkpoint, tmp_path / "out") == 1
    assert "not a Coqui VITS config" in capsys.readouterr().err
    config.write_text("{ not json")
    assert export_cli(config, checkpoint, tmp_path / "out") == 1
    assert "not valid JSON" in capsys.readouterr().err


def test_config_checkpoint_mismatch_names_tensor_and_shapes(voices, tmp_path, capsys):
    config, _ = voices("char")
    other = json.loads(config.read_text())
    other["model_args"]["hidden_channels"] = 48
    (tmp_path / "config.json").write_text(json.dumps(other))
    _, checkpoint = voices("char")
    assert export_cli(tmp_path / "config.json", checkpoint, tmp_path / "out") == 1
    err = capsys.readouterr().err
    assert "does not match checkpoint" in err and "text_encoder.emb.weight" in err
    assert "(65, 32)" in err and "(65, 48)" in err


def test_not_a_checkpoint(voices, tmp_path, capsys):
    config, _ = voices("char")
    junk = tmp_path / "model.pth"
    junk.write_bytes(b"this is not a checkpoint")
    assert export_cli(config, junk, tmp_path / "out") == 1
    assert "model.pth" in capsys.readouterr().err


def test_existing_output_needs_force(voices, tmp_path, capsys):
    config, checkpoint = voices("char")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert export_cli(config, checkpoint, out) == 1
    assert "--force" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "mine"
    assert export_cli(config, checkpoint, out, "--force") == 0
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx", "model.onnx.json", "pieces"]
    assert not leftovers(tmp_path)


def test_failure_half_way_leaves_nothing(voices, tmp_path, monkeypatch, capsys):
    import exporter.export as export_module
    from exporter.errors import ExportError

    def broken_verify(*args, **kwargs):
        raise ExportError("verification failed: simulated")

    monkeypatch.setattr(export_module, "verify", broken_verify)
    config, checkpoint = voices("char")
    out = tmp_path / "out"
    assert export_cli(config, checkpoint, out) == 1
    assert "simulated" in capsys.readouterr().err
    assert not out.exists() and not leftovers(tmp_path)


def test_full_disk_is_reported(voices, tmp_path, monkeypatch, capsys):
    import errno

    import exporter.export as export_module

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(export_module, "export_onnx", no_space)
    config, checkpoint = voices("char")
    assert export_cli(config, checkpoint, tmp_path / "out") == 73
    assert f"cannot write {tmp_path / 'out'}: no space left on device" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not leftovers(tmp_path)


def test_console_run_is_quiet(voices, tmp_path):
    """The real command: tracer warnings do not flood the user; the report is printed."""
    config, checkpoint = voices("speakers")
    proc = subprocess.run(
        [sys.executable, "-m", "exporter", "export", "--config", str(config), "--checkpoint", str(checkpoint),
         "--out", str(tmp_path / "out")],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "worst SNR" in proc.stdout
    assert len(proc.stderr.splitlines()) <= 6, proc.stderr
    assert "TracerWarning" not in proc.stderr


def _downloaded_config(voices, folder, *, with_files: bool):
    """The tiny speaker+language voice as Coqui's downloader saves one: speakers and languages only in side
    files recorded by absolute paths of another machine, the files themselves beside the config (or not)."""
    import shutil

    config, checkpoint = voices("languages")
    folder.mkdir()
    raw = json.loads(config.read_text())
    elsewhere = "/home/someone/.local/share/tts/tts_models--multilingual--tiny--vits"
    raw["speakers"] = []
    raw["model_args"]["speakers_file"] = f"{elsewhere}/speaker_ids.json"
    raw["model_args"]["language_ids_file"] = f"{elsewhere}/language_ids.json"
    (folder / "config.json").write_text(json.dumps(raw))
    shutil.copy(checkpoint, folder / "model_file.pth.tar")
    if with_files:
        (folder / "speaker_ids.json").write_text(json.dumps({"alice": 0, "bob": 1}))
        (folder / "language_ids.json").write_text(json.dumps({"en": 0, "fr": 1}))
    return folder / "config.json", folder / "model_file.pth.tar"


def test_side_files_recorded_on_another_machine_are_found_beside_the_config(voices, tmp_path, caplog):
    import logging

    config, checkpoint = _downloaded_config(voices, tmp_path / "downloaded", with_files=True)
    with caplog.at_level(logging.INFO, logger="exporter.checkpoint"):
        assert export_cli(config, checkpoint, tmp_path / "out") == 0
    sidecar = json.loads((tmp_path / "out" / "model.onnx.json").read_text())
    assert sidecar["speakers"] == {"alice": 0, "bob": 1} and sidecar["languages"] == {"en": 0, "fr": 1}
    used = [r.getMessage() for r in caplog.records if "beside the config" in r.getMessage()]
    assert len(used) == 2 and any(str(tmp_path / "downloaded" / "speaker_ids.json") in m for m in used)


def test_a_side_file_found_nowhere_is_named(voices, tmp_path, capsys):
    config, checkpoint = _downloaded_config(voices, tmp_path / "downloaded", with_files=False)
    assert export_cli(config, checkpoint, tmp_path / "out") == 1
    err = capsys.readouterr().err
    assert "speakers_file /home/someone/" in err and "no speaker_ids.json beside the config" in err
    assert not (tmp_path / "out").exists() and not leftovers(tmp_path)
