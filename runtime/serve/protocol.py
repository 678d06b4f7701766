"""Reading Wyoming events with every length bounded.

The frame (wyoming/event.py): one JSON header line ``{"type", "data"?, "data_length"?,
"payload_length"?}``, then ``data_length`` bytes of JSON merged over ``data``, then ``payload_length``
bytes of binary. The ``wyoming`` library's reader trusts both lengths (a header announcing gigabytes
makes it buffer gigabytes) and answers a malformed header by closing the connection without a word;
this one reads at most ``Limits`` and says what was wrong, so the handler can answer with an ``error``
event. A bad header line is skipped (the next line is the next event); a length over its bound cannot
be skipped safely and ends the connection after the error.
"""

from __future__ import annotations

import asyncio
import json

from wyoming.event import Event

from runtime.serve.settings import Limits


class ProtocolError(Exception):
    """What a client sent that is not a Wyoming event; ``fatal`` when the stream cannot be resynchronised."""

    def __init__(self, message: str, *, fatal: bool = False, code: str = "protocol"):
        super().__init__(message)
        self.fatal = fatal
        self.code = code


def _length(header: dict, key: str, limit: int) -> int:
    value = header.get(key)
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ProtocolError(f"{key} must be a non-negative integer, not {value!r}", fatal=True)
    if value > limit:
        raise ProtocolError(f"{key} of {value} bytes is over this server's limit of {limit}", fatal=True,
                            code="too-large")
    return value


async def read_event(reader: asyncio.StreamReader, limits: Limits) -> Event | None:
    """The next event; None at the end of the stream (or a connection that went quiet for ``idle_s``:
    ``TimeoutError``). Raises ProtocolError for what is not an event."""
    try:
        line = await asyncio.wait_for(reader.readuntil(b"\n"), limits.idle_s)
    except asyncio.IncompleteReadError:
        return None  # closed, perhaps mid-line: nothing to answer
    except asyncio.LimitOverrunError as exc:
        raise ProtocolError(f"an event header longer than {limits.line_bytes} bytes", fatal=True,
                            code="too-large") from exc
    if len(line) > limits.line_bytes:
        raise ProtocolError(f"an event header longer than {limits.line_bytes} bytes", fatal=True, code="too-large")
    try:
        header = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:  # RecursionError: "[[[[..." nested deep
        raise ProtocolError(f"not a Wyoming event header (one JSON object per line): {exc}") from exc
    if not isinstance(header, dict) or not isinstance(header.get("type"), str):
        raise ProtocolError("an event header must be a JSON object with a string 'type'")
    data = header.get("data") or {}
    if not isinstance(data, dict):
        raise ProtocolError("an event's 'data' must be a JSON object")
    data_length = _length(header, "data_length", limits.data_bytes)
    payload_length = _length(header, "payload_length", limits.payload_bytes)
    try:
        if data_length:
            block = await asyncio.wait_for(reader.readexactly(data_length), limits.body_s)
            try:
                extra = json.loads(block)
            except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
                raise ProtocolError(f"an event's data block is not JSON: {exc}") from exc
            if not isinstance(extra, dict):
                raise ProtocolError("an event's data block must be a JSON object")
            data = {**data, **extra}
        payload = await asyncio.wait_for(reader.readexactly(payload_length), limits.body_s) if payload_length else None
    except asyncio.IncompleteReadError:
        return None
    except asyncio.TimeoutError as exc:
        raise ProtocolError(f"the event's data and payload did not arrive within {limits.body_s:.0f} s",
                            fatal=True, code="timeout") from exc
    return Event(type=header["type"], data=data, payload=payload)
