"""The Wyoming text-to-speech server: one ``Handler`` per connection, all sharing one ``Engine``.

What a connection can ask (wyoming's tts events, as Home Assistant and wyoming-piper use them):
``describe`` -> ``info`` (from the catalog: nothing is loaded to answer it); ``synthesize`` -> one
``audio-start``, the audio in ``audio-chunk`` events as it is decoded, one ``audio-stop``; a stream
``synthesize-start``, ``synthesize-chunk``..., (a compatibility ``synthesize``, ignored),
``synthesize-stop`` -> one audio cycle per sentence, each begun as soon as the sentence is complete,
then ``synthesize-stopped``; ``ping`` -> ``pong``. Anything else, and every client mistake, is answered
with an ``error`` event on that connection, which stays open (but for a frame that cannot be skipped).

Stopping (``Server.shutdown``, on SIGTERM or SIGINT): the listening socket is closed first, so new connections
are refused; a request in flight (an event being answered, or a stream between its ``synthesize-start`` and its
``synthesize-stop``) is given a grace period to finish; then every connection still open, idle or not, gets an
``error`` event (code ``shutting-down``) as its last event and is closed. A client never sees its answer cut
without one.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from dataclasses import dataclass, field

from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event, async_write_event
from wyoming.info import Attribution, Describe, Info, TtsProgram, TtsVoice, TtsVoiceSpeaker
from wyoming.ping import Ping, Pong
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeStopped

from runtime.config import SynthesisConfig, VoiceError
from runtime.sentences import SentenceStream
from runtime.serve.catalog import VoiceEntry
from runtime.serve.engine import Engine
from runtime.serve.protocol import ProtocolError, read_event
from runtime.serve.settings import Settings
from runtime.text.errors import FrontendError

logger = logging.getLogger(__name__)

WIDTH, CHANNELS = 2, 1  # 16-bit mono, as every Piper and Coqui voice speaks
MAX_PROTOCOL_ERRORS = 8  # a connection sending only junk is closed after this many answers
# After a fatal error the connection is half-closed and what the client still sends is read and dropped, for at
# most this long and this much: closing a socket with unread input makes the kernel reset the connection, and the
# reset can overtake the error event on its way (seen in CI: a client sent 200 kB of junk and got
# ConnectionResetError instead of the "too-large" error). Bounded, so no client can hold a connection with it.
LINGER_S, LINGER_BYTES = 1.0, 1 << 20
GOODBYE_S = 1.0  # writing the shutting-down error to a client that does not read gives up after this long
SHUTTING_DOWN = "shutting-down"  # the error code of a request the server stopped before it could finish


class ClientError(Exception):
    """A request the server cannot do as asked; the message says why (sent as an ``error`` event)."""

    def __init__(self, message: str, code: str):
        super().__init__(message)
        self.code = code


def speaker_of(entry: VoiceEntry, speaker: str | int | None) -> str | int | None:
    """A requested speaker (name, or id as text) as the voice takes it (None for a single-speaker voice);
    a ClientError when the voice has no such speaker."""
    if speaker is None or speaker in entry.speakers or speaker in entry.config.speakers:
        return speaker
    if str(speaker).isdigit() and (int(speaker) in entry.config.speakers.values()
                                   or not entry.speakers and int(speaker) == 0):
        return int(speaker) if entry.speakers else None
    has = f"it has: {', '.join(entry.speakers)}" if entry.speakers else "it has a single speaker"
    raise ClientError(f"voice {entry.name} has no speaker {speaker!r}; {has}", "unknown-speaker")


def program_info(catalog: dict[str, VoiceEntry], settings: Settings, version: str) -> Info:
    voices = [TtsVoice(name=e.name, description=e.description, attribution=Attribution(*e.attribution),
                       installed=True, version=None, languages=e.languages,
                       speakers=[TtsVoiceSpeaker(name=s) for s in e.speakers] or None)
              for e in catalog.values()]
    program = TtsProgram(name="vits-edge", description="Coqui VITS voices, int8 and streaming, on onnxruntime",
                         attribution=Attribution("vits-edge", "https://github.com/coqui-ai/TTS"), installed=True,
                         version=version, voices=voices, supports_synthesize_streaming=settings.streaming)
    return Info(tts=[program])


class Server:
    """Shared by every connection: the catalog, the engine, the settings and the ``info`` answer."""

    def __init__(self, catalog: dict[str, VoiceEntry], engine: Engine, settings: Settings, version: str):
        self.catalog = catalog
        self.engine = engine
        self.settings = settings
        self.info_event = program_info(catalog, settings, version).event()
        self.handlers: set[Handler] = set()
        self.listener: asyncio.AbstractServer | None = None
        self.stopping = False

    @property
    def connections(self) -> int:
        return len(self.handlers)

    async def serve(self, host: str, port: int) -> asyncio.AbstractServer:
        self.listener = await asyncio.start_server(self._connected, host=host, port=port,
                                                   limit=self.settings.limits.line_bytes)
        return self.listener

    async def shutdown(self, grace_s: float, hurry: asyncio.Event | None = None) -> tuple[int, int]:
        """Stop: refuse new connections, give the requests in flight up to ``grace_s`` seconds (less when ``hurry``
        is set: a second signal) to finish, then answer what is left with a ``shutting-down`` error and close every
        connection. Returns (requests in flight at the start, requests cut by the end of the grace). Bounded:
        ``grace_s`` plus ``GOODBYE_S`` and ``LINGER_S``."""
        self.stopping = True
        if self.listener is not None:
            self.listener.close()
        in_flight = [h for h in self.handlers if h.in_request]
        for handler in self.handlers - set(in_flight):
            handler.cancel()  # idle: its goodbye now
        hurry = hurry or asyncio.Event()
        hurried = asyncio.ensure_future(hurry.wait())
        deadline = asyncio.get_running_loop().time() + grace_s
        try:
            while (busy := {h.task for h in self.handlers if h.in_request and h.task is not None}) \
                    and not hurry.is_set() and (left := deadline - asyncio.get_running_loop().time()) > 0:
                await asyncio.wait(busy | {hurried}, timeout=left, return_when=asyncio.FIRST_COMPLETED)
        finally:
            hurried.cancel()
        cut = sum(h.in_request for h in self.handlers)
        # cancelled again until it takes: Python 3.11's wait_for (every write and read here) drops a cancellation
        # that comes as the awaited write completes, and then the handler would speak on
        deadline = asyncio.get_running_loop().time() + GOODBYE_S + LINGER_S + 1.0
        while (tasks := {h.task for h in self.handlers if h.task is not None and not h.task.done()}) \
                and (left := deadline - asyncio.get_running_loop().time()) > 0:
            for handler in list(self.handlers):
                handler.cancel()
            await asyncio.wait(tasks, timeout=min(left, 0.1))
        return len(in_flight), cut

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.connections >= self.settings.max_connections:
            # full: the connection idle longest (waiting for its next event, not mid-request) makes room,
            # so connections that hold a slot and say nothing cannot lock the others out
            idle = [h for h in self.handlers if not h.busy]
            if idle:
                oldest = min(idle, key=lambda h: h.last_event)
                logger.info("--max-connections %d reached: closing the connection idle longest",
                            self.settings.max_connections)
                self.handlers.discard(oldest)
                oldest.writer.transport.abort()
            else:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(async_write_event(Error(
                        text=f"busy: {self.connections} requests under way (--max-connections); try again",
                        code="busy").event(), writer), 1.0)
                writer.close()
                return
        handler = Handler(self, reader, writer)
        if self.stopping:  # accepted just before the listener closed
            await handler.goodbye()
            await handler.close()
            return
        handler.task = asyncio.current_task()
        self.handlers.add(handler)
        try:
            await handler.run()
        finally:
            self.handlers.discard(handler)


class Handler:
    """One connection."""

    def __init__(self, server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.server = server
        self.settings = server.settings
        self.reader = reader
        self.writer = writer
        self.stream: _Stream | None = None  # a synthesize-start ... synthesize-stop in progress
        self.protocol_errors = 0
        self.busy = False  # handling an event (speaking), not waiting for the next one
        self.last_event = time.monotonic()
        self.task: asyncio.Task | None = None  # the task running ``run``
        self.stopped = False  # cancelled by the server's shutdown (not by anything else)
        self.closing = False  # saying goodbye: nothing more to cancel

    @property
    def in_request(self) -> bool:
        """Answering an event, or in a stream: what the server lets finish when it stops."""
        return self.busy or self.stream is not None

    def cancel(self) -> None:
        """Stop this connection for the server's shutdown: ``run`` says goodbye and closes."""
        if self.task is not None and not self.closing:
            self.stopped = True
            self.task.cancel()

    async def goodbye(self) -> None:
        """The last event of a connection the server closes as it stops (bounded by ``GOODBYE_S`` and ``LINGER_S``):
        a client mid-request learns that its answer will not come, an idle one why the connection closes."""
        if self.closing:
            return
        self.closing = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(async_write_event(Error(
                text="the server is shutting down: try again when it is back", code=SHUTTING_DOWN).event(),
                self.writer), GOODBYE_S)
            await self.linger()

    async def write(self, event: Event) -> None:
        await asyncio.wait_for(async_write_event(event, self.writer), self.settings.write_timeout_s)

    async def error(self, text: str, code: str) -> None:
        logger.info("client error (%s): %s", code, text)
        await self.write(Error(text=text, code=code).event())

    async def linger(self) -> None:
        """Half-close, then drop what the client is still sending (``LINGER_S``, ``LINGER_BYTES``), so that the error
        just written reaches it before the connection closes."""
        with contextlib.suppress(Exception):
            if self.writer.can_write_eof():
                self.writer.write_eof()
            deadline, dropped = time.monotonic() + LINGER_S, 0
            while dropped < LINGER_BYTES and (left := deadline - time.monotonic()) > 0:
                chunk = await asyncio.wait_for(self.reader.read(1 << 16), left)
                if not chunk:
                    break
                dropped += len(chunk)

    async def run(self) -> None:
        peer = self.writer.get_extra_info("peername")
        try:
            while True:
                if self.server.stopping and not self.in_request:  # its request answered as the server stops
                    await self.goodbye()
                    break
                try:
                    event = await read_event(self.reader, self.settings.limits)
                except ProtocolError as exc:
                    self.protocol_errors += 1
                    await self.error(str(exc), exc.code)
                    if exc.fatal or self.protocol_errors >= MAX_PROTOCOL_ERRORS:
                        await self.linger()
                        break
                    continue
                if event is None:
                    break
                self.busy, self.last_event = True, time.monotonic()
                try:
                    await self.handle(event)
                except ClientError as exc:
                    self.stream = None
                    await self.error(str(exc), exc.code)
                finally:
                    self.busy, self.last_event = False, time.monotonic()
        except asyncio.CancelledError:
            if not self.stopped:
                raise
            # the server's shutdown: whatever was under way (a write included: an event goes into the transport
            # whole, before the first await) ends with the shutting-down error
            logger.debug("%s: closed as the server stops%s", peer, " mid-request" if self.in_request else "")
            await self.goodbye()
        except asyncio.TimeoutError:
            logger.debug("%s: idle or not reading; closed", peer)
        except (ConnectionError, OSError) as exc:
            logger.debug("%s: gone (%s)", peer, exc)
        except Exception:  # a bug of ours: say so to this client, keep serving the others
            logger.exception("%s: unexpected error", peer)
            with contextlib.suppress(Exception):
                await self.error("internal error in the server (see its log)", "internal")
        finally:
            await self.close()

    async def close(self) -> None:
        self.writer.close()
        # (awaited, so that a write to a client gone is no "never retrieved"); the server's shutdown may cancel a
        # handler that is already closing: its connection is closed all the same, and a cancellation let out of
        # here reached asyncio's stream callback as a logged traceback
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await self.writer.wait_closed()

    async def handle(self, event: Event) -> None:
        kind = event.type
        if Describe.is_type(kind):
            await self.write(self.server.info_event)
        elif Ping.is_type(kind):
            await self.write(Pong(text=event.data.get("text")).event())
        elif Synthesize.is_type(kind):
            if self.stream is not None:
                return  # the compatibility copy of a stream's text: the chunks already carry it
            request = _parse(Synthesize, event)
            text = _text(request.text, self.settings.max_text_chars)
            sentences = SentenceStream()
            said = await self.speak(request.voice, sentences.add(text) + sentences.finish(), cycle_per_sentence=False)
            if not said:
                raise ClientError("nothing to say: the text is empty or has nothing this voice can say", "no-audio")
        elif self.settings.streaming and SynthesizeStart.is_type(kind):
            request = _parse(SynthesizeStart, event)
            self._resolve(request.voice)  # an unknown voice is said now, not after the text has come
            self.stream = _Stream(request.voice)
        elif self.settings.streaming and SynthesizeChunk.is_type(kind):
            if self.stream is None:
                raise ClientError("synthesize-chunk outside a stream: send synthesize-start first", "no-stream")
            chunk = _parse(SynthesizeChunk, event)
            self.stream.chars += len(_text(chunk.text, self.settings.max_text_chars, empty_ok=True))
            if self.stream.chars > self.settings.max_text_chars:
                raise ClientError(f"text too long: at most {self.settings.max_text_chars} characters per request "
                                  "(--max-text-chars)", "text-too-long")
            self.stream.said += await self.speak(self.stream.voice, self.stream.sentences.add(chunk.text))
        elif self.settings.streaming and SynthesizeStop.is_type(kind):
            if self.stream is None:
                raise ClientError("synthesize-stop outside a stream: send synthesize-start first", "no-stream")
            stream = self.stream
            stream.said += await self.speak(stream.voice, stream.sentences.finish())
            self.stream = None
            if not stream.said:
                raise ClientError("nothing to say: the stream's text is empty or has nothing this voice can say",
                                  "no-audio")
            await self.write(SynthesizeStopped().event())
        elif kind in ("synthesize-start", "synthesize-chunk", "synthesize-stop"):
            return  # streaming is off (--no-streaming): as wyoming-piper, its events are ignored
        else:
            raise ClientError(f"unknown event type {kind!r} for a text-to-speech server", "unknown-event")

    def _resolve(self, requested) -> tuple[VoiceEntry, SynthesisConfig]:
        """The voice a request asks for, and its settings: the server's, with the request's speaker."""
        catalog = self.server.catalog
        name = requested.name if requested is not None else None
        speaker = requested.speaker if requested is not None else None
        if name is None and requested is not None and requested.language:
            family = requested.language.replace("-", "_").split("_")[0]
            name = next((e.name for e in catalog.values() if any(lang.split("_")[0] == family for lang in e.languages)),
                        None)
            if name is None:
                raise ClientError(f"no voice for language {requested.language!r}; this server has: "
                                  f"{', '.join(sorted({lang for e in catalog.values() for lang in e.languages}))}",
                                  "unknown-language")
        name = name or self.settings.default_voice
        if name not in catalog:
            raise ClientError(f"unknown voice {name!r}; this server has: {', '.join(catalog)}", "unknown-voice")
        if speaker is None and name == self.settings.default_voice:
            speaker = self.settings.synthesis.speaker
        # replace, not update: a speaker of the default voice is no speaker of another voice
        return catalog[name], dataclasses.replace(self.settings.synthesis, speaker=speaker_of(catalog[name], speaker))

    def _punctuated(self, sentence: str) -> str:
        marks = self.settings.auto_punctuation
        if marks and sentence and sentence[-1] not in marks:
            return sentence + marks[0]
        return sentence

    async def speak(self, requested, sentences: list[str], *, cycle_per_sentence: bool = True) -> int:
        """Speak ``sentences``: one audio cycle each (a stream), or one for all (``synthesize``); the audio
        goes out as it is decoded. Returns how many sentences made audio."""
        if not sentences:
            return 0
        entry, syn = self._resolve(requested)
        try:
            voice = await self.server.engine.voice(entry.name)
        except VoiceError as exc:
            raise ClientError(str(exc), "voice-unavailable") from exc
        start = AudioStart(rate=voice.sample_rate, width=WIDTH, channels=CHANNELS).event()
        block = self.settings.samples_per_chunk * WIDTH * CHANNELS
        said, started = 0, False
        for sentence in sentences:
            if not any(ch.isalnum() for ch in sentence):
                logger.info("nothing to say in %r (no letters or digits): skipped", sentence[:80])
                continue
            try:
                chunks = voice.stream([self._punctuated(sentence)], syn)
            except VoiceError as exc:
                raise ClientError(f"cannot say {sentence[:80]!r}: {exc}", "bad-text") from exc
            pending = b""
            spoke = False
            while True:
                try:
                    chunk = await self.server.engine.next(chunks)
                except (VoiceError, FrontendError) as exc:
                    raise ClientError(f"cannot say {sentence[:80]!r}: {exc}", "bad-text") from exc
                if chunk is None:
                    break
                if not started:
                    await self.write(start)
                    started = True
                spoke = True
                pending += chunk.pcm16()
                cut = len(pending) - len(pending) % block if not chunk.final else len(pending)
                for offset in range(0, cut, block):
                    await self.write(AudioChunk(rate=voice.sample_rate, width=WIDTH, channels=CHANNELS,
                                                audio=pending[offset:min(offset + block, cut)]).event())
                pending = pending[cut:]
            said += spoke
            if cycle_per_sentence and started:
                await self.write(AudioStop().event())
                started = False
        if started:
            await self.write(AudioStop().event())
        return said


@dataclass
class _Stream:
    voice: object  # SynthesizeVoice | None
    sentences: SentenceStream = field(default_factory=SentenceStream)
    chars: int = 0
    said: int = 0


def _parse(kind, event: Event):
    try:
        request = kind.from_event(event)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ClientError(f"a {event.type} event without what it needs ({exc!r})", "bad-event") from exc
    voice = getattr(request, "voice", None)
    if voice is not None and not all(isinstance(v, (str, type(None))) for v in (voice.name, voice.speaker)):
        raise ClientError("voice name and speaker must be strings", "bad-event")
    return request


def _text(text, max_chars: int, *, empty_ok: bool = False) -> str:
    if not isinstance(text, str):
        raise ClientError("text must be a string", "bad-event")
    if not empty_ok and not text.strip():
        raise ClientError("nothing to say: the text is empty", "no-text")
    if len(text) > max_chars:
        raise ClientError(f"text too long: at most {max_chars} characters per request (--max-text-chars)",
                          "text-too-long")
    return text

