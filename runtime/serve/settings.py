"""The server's settings and the bounds on what a client may send: plain data, without the wyoming package (the
command line reads its defaults before it knows that the server extra is installed)."""

from __future__ import annotations

from dataclasses import dataclass, field

from runtime.config import SynthesisConfig


@dataclass(frozen=True)
class Limits:
    line_bytes: int = 64 * 1024  # one header line (asyncio's stream limit, set where the server starts)
    data_bytes: int = 2 * 1024 * 1024  # the JSON data block: text of up to ~1M characters can be read and refused
    payload_bytes: int = 256 * 1024  # a TTS server is sent no audio; a little is read and dropped
    idle_s: float = 300.0  # waiting for the next event (Home Assistant opens a connection per request)
    body_s: float = 30.0  # reading an event's data and payload once its header has come


@dataclass
class Settings:
    """The server's options (``python -m runtime.serve --help``)."""

    default_voice: str
    # every request's settings (Wyoming carries no scales); its speaker is the default voice's, when none is asked
    synthesis: SynthesisConfig = field(default_factory=SynthesisConfig)
    auto_punctuation: str = ".?!。？！．؟"
    samples_per_chunk: int = 1024
    streaming: bool = True
    max_text_chars: int = 10_000
    max_connections: int = 32
    write_timeout_s: float = 30.0
    limits: Limits = field(default_factory=Limits)
