"""SIGTERM and SIGINT, sent to real processes as systemd and a terminal send them: the Wyoming server finishes the
requests in flight (or answers them with an ``error`` event), refuses new connections and exits 0 within 10 s; the
batch job abandons what is in flight, keeps a manifest of complete WAVs and resumes to every id once;
``synthesize --output`` leaves nothing behind. All on the tiny test voice, on loopback."""

from __future__ import annotations

import asyncio
import configparser
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_batch import _workers, batch, check_wavs, manifest
from tests_helpers import REPO, leftovers

from benchmarks.wyoming_servers import ServerProcess

from runtime.serve.__main__ import SHUTDOWN_GRACE_S
from runtime.signals import Interrupted, deferred, interruptible

try:  # the server extra: without it the server's tests are skipped and the others run
    from wyoming.audio import AudioChunk
    from wyoming.client import AsyncTcpClient
    from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop

    from runtime.serve.server import GOODBYE_S, LINGER_S, SHUTTING_DOWN
except ImportError:
    AsyncTcpClient = None
needs_wyoming = pytest.mark.skipif(AsyncTcpClient is None, reason="needs the wyoming package (the server extra)")

SENTENCE = ("The quick brown fox jumps over the lazy dog while the band plays on, and everyone in the square stops "
            "to listen to the music that fills the warm evening air. ")
STOPPED_WITHIN_S = 10.0  # SIGTERM to exit 0: the bound the systemd unit's TimeoutStopSec gives
SIGNALS = [pytest.param(signal.SIGTERM, id="SIGTERM"), pytest.param(signal.SIGINT, id="SIGINT")]


@pytest.fixture
def server(exported, tmp_path):
    """Start ``python -m runtime.serve`` on the tiny voice with extra arguments; stopped (killed) after the test
    if the test did not stop it."""
    started = []

    def start(*args) -> ServerProcess:
        started.append(ServerProcess.ours("--voice", exported("char"), "--noise-scale", 0, "--noise-w-scale", 0,
                                          "--max-text-chars", 40_000, *args, log=tmp_path / "server.log"))
        return started[-1]

    yield start
    for srv in started:
        if srv.alive():
            srv.proc.kill()
            srv.proc.wait()


def exited(srv: ServerProcess, signalled_at: float) -> int:
    """The server's exit status, which must come within the bound after the signal."""
    try:
        return srv.proc.wait(timeout=STOPPED_WITHIN_S + signalled_at - time.monotonic())
    except subprocess.TimeoutExpired:
        pytest.fail(f"the server was still running {STOPPED_WITHIN_S} s after the signal:\n{srv.log.read_text()}")


async def read_all(client: AsyncTcpClient, until: tuple[str, ...]) -> list:
    """Events until one of ``until`` or the end of the connection (then the last is None)."""
    got = []
    while True:
        event = await client.read_event()
        got.append(event)
        if event is None or event.type in until:
            return got


async def refused(port: int, timeout: float = 5.0) -> bool:
    """Whether a new connection is refused within ``timeout`` (a connection accepted meanwhile is closed again)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except ConnectionRefusedError:
            return True
        writer.close()
        await asyncio.sleep(0.02)
    return False


def samples(events: list) -> int:
    return sum(len(AudioChunk.from_event(e).audio) // 2 for e in events if e is not None and e.type == "audio-chunk")


@needs_wyoming
@pytest.mark.parametrize("sig", SIGNALS)
def test_a_stopped_server_finishes_the_requests_in_flight_and_refuses_new_ones(server, sig):
    srv = server()
    text = SENTENCE * 10
    stream_text = [SENTENCE + "And then", " the band plays on. " + SENTENCE]  # (a sentence ends where the next begins)

    async def main():
        async with AsyncTcpClient("127.0.0.1", srv.port) as client:  # what the whole answer is
            await client.write_event(Synthesize(text=text).event())
            whole = samples(await read_all(client, ("audio-stop", "error")))
        idle = AsyncTcpClient("127.0.0.1", srv.port)
        streaming = AsyncTcpClient("127.0.0.1", srv.port)
        speaking = AsyncTcpClient("127.0.0.1", srv.port)
        for client in (idle, streaming, speaking):
            await client.connect()
        # a stream in progress: its first sentence spoken, the rest of its text still to come
        await streaming.write_event(SynthesizeStart().event())
        await streaming.write_event(SynthesizeChunk(text=stream_text[0]).event())
        assert (await read_all(streaming, ("audio-stop", "error")))[-1].type == "audio-stop"
        await speaking.write_event(Synthesize(text=text).event())
        before = [await speaking.read_event(), await speaking.read_event()]
        assert [e.type for e in before] == ["audio-start", "audio-chunk"]
        os.kill(srv.pid, sig)
        signalled_at = time.monotonic()
        assert await refused(srv.port), "a new connection was accepted after the signal"

        async def finish_stream():
            await streaming.write_event(SynthesizeChunk(text=stream_text[1]).event())
            await streaming.write_event(SynthesizeStop().event())
            return await read_all(streaming, ("synthesize-stopped", "error"))

        spoken, streamed, goodbye = await asyncio.gather(
            read_all(speaking, ("audio-stop", "error")), finish_stream(), read_all(idle, ("error",)))
        for client in (idle, streaming, speaking):
            await client.disconnect()
        return whole, before + spoken, streamed, goodbye, signalled_at

    whole, spoken, streamed, goodbye, signalled_at = asyncio.run(asyncio.wait_for(main(), 120))
    code = exited(srv, signalled_at)
    log = srv.log.read_text()
    assert code == 0 and "Traceback" not in log, log
    assert "2 request(s) in flight" in log, log  # both were under way when the signal came
    assert spoken[-1].type == "audio-stop" and samples(spoken) == whole  # finished: all of it
    assert streamed[-1].type == "synthesize-stopped"
    assert [e.data["code"] for e in goodbye if e is not None] == [SHUTTING_DOWN]  # the idle one is told why


@needs_wyoming
@pytest.mark.parametrize("grace, signals", [pytest.param(0.5, 1, id="past-the-grace"),
                                            pytest.param(600, 2, id="a-second-signal")])
def test_requests_past_the_grace_are_answered_with_an_error(server, grace, signals):
    srv = server("--shutdown-grace", grace)

    async def main():
        async with AsyncTcpClient("127.0.0.1", srv.port) as speaking, \
                AsyncTcpClient("127.0.0.1", srv.port) as streaming:
            await streaming.write_event(SynthesizeStart().event())  # a stream whose client never ends it
            await streaming.write_event(SynthesizeChunk(text="Hello there. And").event())
            assert (await read_all(streaming, ("audio-stop", "error")))[-1].type == "audio-stop"
            await speaking.write_event(Synthesize(text=SENTENCE * 200).event())  # seconds of work
            first = [await speaking.read_event(), await speaking.read_event()]
            os.kill(srv.pid, signal.SIGTERM)
            signalled_at = time.monotonic()
            if signals == 2:  # as systemd does not, but a person pressing Ctrl-C twice does: no more grace
                await asyncio.sleep(0.2)
                os.kill(srv.pid, signal.SIGINT)
            spoken, streamed = await asyncio.gather(read_all(speaking, ("audio-stop", "error")),
                                                    read_all(streaming, ("synthesize-stopped", "error")))
            return first + spoken, streamed, signalled_at

    spoken, streamed, signalled_at = asyncio.run(asyncio.wait_for(main(), 120))
    code = exited(srv, signalled_at)
    log = srv.log.read_text()
    assert code == 0 and "Traceback" not in log, log
    assert [e.type for e in spoken[:2]] == ["audio-start", "audio-chunk"]
    assert spoken[-1].type == "error" and spoken[-1].data["code"] == SHUTTING_DOWN  # never a silent cut
    assert "audio-stop" not in [e.type for e in spoken]
    assert streamed[-1].type == "error" and streamed[-1].data["code"] == SHUTTING_DOWN
    assert "0 request(s) finished, 2 answered with an error" in log, log


@needs_wyoming
def test_the_systemd_unit_waits_as_long_as_the_server_takes_to_stop():
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read(REPO / "runtime" / "serve" / "vits-edge-wyoming.service")
    service = unit["Service"]
    stop_s = float(service["TimeoutStopSec"].removesuffix("s"))
    # the grace, a goodbye and its linger, and a second for the last decoder step: within systemd's wait, which
    # is the bound
    assert SHUTDOWN_GRACE_S + GOODBYE_S + LINGER_S + 1.0 <= stop_s <= STOPPED_WITHIN_S
    assert service.get("KillSignal", "SIGTERM") == "SIGTERM"


# -- the batch job --------------------------------------------------------------------------------------------

@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the worker processes in /proc")
@pytest.mark.parametrize("sig, whole_group, backend", [
    pytest.param(signal.SIGTERM, False, "local", id="SIGTERM-to-the-job"),
    pytest.param(signal.SIGINT, True, "local", id="Ctrl-C-to-its-group"),
    pytest.param(signal.SIGTERM, False, "ray", id="SIGTERM-to-the-job-on-Ray")])
def test_a_stopped_batch_job_keeps_complete_wavs_and_resumes_to_every_id_once(exported, tmp_path, sig, whole_group,
                                                                              backend):
    if backend == "ray":
        pytest.importorskip("ray")
    ids = [f"item-{k:04d}" for k in range(300)]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"id": i, "text": SENTENCE * 2}) + "\n" for i in ids))
    out = tmp_path / "out"
    args = (tmp_path / "in.jsonl", "--voice", exported("char"), "--out", out, "--workers", 2, "--batch-size", 2)
    job = batch(*args, wait=False, backend=backend, start_new_session=True)
    workers = []
    try:
        deadline = time.monotonic() + 120
        while len(manifest(out)) < 20 or backend == "local" and len(workers := _workers(job.pid)) < 2:
            assert job.poll() is None and time.monotonic() < deadline, "the job did not get going"
            time.sleep(0.05)
        (os.killpg if whole_group else os.kill)(job.pid, sig)
        _, stderr = job.communicate(timeout=60)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    assert job.returncode == 128 + sig and f"stopped by {signal.Signals(sig).name}" in stderr, stderr
    assert "Traceback" not in stderr, stderr
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()
                and "(Z)" not in Path(f"/proc/{pid}/stat").read_text()], "a worker outlived the job"
    rows = manifest(out)  # every line whole, each a complete WAV, each id once
    assert len(rows) >= 20 and len({r["id"] for r in rows}) == len(rows) and len(rows) < len(ids)
    check_wavs(out, rows)
    if backend == "local":  # (Ray stops its actors its own way, and one may leave a temporary for the rerun)
        assert not leftovers(out)  # the WAVs in flight were abandoned whole: no temporaries

    again = batch(*args, backend=backend)
    assert again.returncode == 0, again.stderr
    rows = manifest(out)
    assert sorted(r["id"] for r in rows) == ids
    check_wavs(out, rows)
    assert not leftovers(out)


def test_a_signal_waits_for_the_end_of_a_deferred_block_and_comes_once():
    before, steps = signal.getsignal(signal.SIGTERM), []
    with pytest.raises(Interrupted) as stopped:
        with interruptible():
            with deferred():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.05)  # (Python runs its handler at the next instruction: it has come by now)
                steps.append("the whole line")
            steps.append("after the block")
    assert steps == ["the whole line"] and stopped.value.exit_code == 143
    with pytest.raises(Interrupted) as stopped:
        with interruptible():
            try:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)
            finally:
                os.kill(os.getpid(), signal.SIGTERM)  # during the cleanup: ignored
                time.sleep(0.05)
                steps.append("cleaned up")
    assert steps[-1] == "cleaned up" and stopped.value.exit_code == 130
    assert signal.getsignal(signal.SIGTERM) is before  # the handlers before it are back


# -- synthesize ------------------------------------------------------------------------------------------------

def signalled(argv: list, sig: int, ready, wait_s: float) -> tuple[int, str, str]:
    """Run ``argv``, send it ``sig`` once ``ready()`` holds (within ``wait_s``, the command still running), and
    return its exit status, stdout and stderr."""
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + wait_s
        while not ready():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.01)
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    return proc.returncode, stdout, stderr


@pytest.mark.parametrize("sig", SIGNALS)
def test_a_stopped_synthesize_leaves_no_partial_output(exported, tmp_path, sig):
    (tmp_path / "text.txt").write_text(SENTENCE * 60)
    wav, timings = tmp_path / "out.wav", tmp_path / "out.json"
    wav.write_bytes(b"the old file")
    returncode, _, stderr = signalled(
        [sys.executable, "-m", "runtime.synthesize", "-m", exported("char"), "--text-file", tmp_path / "text.txt",
         "--output", wav, "--output-alignments", timings],
        sig, ready=lambda: leftovers(tmp_path), wait_s=60)  # the WAV under way, on its temporary name
    assert returncode == 128 + sig and "Traceback" not in stderr, stderr
    assert wav.read_bytes() == b"the old file" and not timings.exists()
    assert not leftovers(tmp_path)


# -- the exporter ----------------------------------------------------------------------------------------------

def test_a_stopped_finetuning_exits_cleanly_and_the_same_command_goes_on(exported, tmp_path):
    """Ctrl-C in the longest command (the finetuned preset's training): no traceback, exit 130, no model written,
    a line saying the same command goes on; run again, it resumes from the checkpoint, and SIGTERM stops it the
    same way (143)."""
    pytest.importorskip("torch")
    import shutil

    voice = tmp_path / "voice"
    shutil.copytree(exported("char"), voice)
    command = [sys.executable, "-m", "exporter", "quantize", str(voice), "--preset", "finetuned",
               "--finetune-steps", "1000000"]

    def stop(sig: int, ready) -> str:
        returncode, stdout, stderr = signalled(command, sig, ready, wait_s=300)
        assert returncode == 128 + sig, stderr
        assert "Traceback" not in stderr and f"stopped by {signal.Signals(sig).name}" in stderr, stderr
        assert "the same command starts again" in stderr
        assert not (voice / "model.finetuned.onnx").exists() and not leftovers(voice)
        return stdout

    checkpoints = lambda: list((voice / ".finetune").glob("*/state.pt"))  # noqa: E731
    stop(signal.SIGINT, lambda: checkpoints())
    written = checkpoints()[0].stat().st_mtime_ns
    said = stop(signal.SIGTERM, lambda: checkpoints()[0].stat().st_mtime_ns != written)
    assert "fine-tune: resuming at step" in said
