"""The run daemon's wire protocol (version 1): newline-delimited JSON over a Unix socket.

Both ends use this module: the server (core.server) and its clients (core.client). Every message
is one JSON object on one line, ``op`` says what it is. The client speaks first (``hello``, with
the protocol version: a daemon outlives upgrades of the client, so a mismatch is refused with a
message, never misread). Requests carry an ``id`` and get exactly one ``reply``; the daemon
pushes ``event``, ``resync`` and ``closing`` unasked. README.md, "The run daemon", has the list.

An event frame is written as ``EVENT_PREFIX + <the event's JSON> + b"}"``: the event is encoded
once, when it is published, for every client, and a client decodes it straight into its typed
``Event`` (core.events) without parsing the frame twice.
"""

from __future__ import annotations

from typing import Any

import orjson

PROTOCOL = 1
#: The longest line a client may send (a daemon's lines, a whole run's state, may be longer).
MAX_LINE = 1 << 20
#: A connection that has not said hello by then is closed.
HELLO_TIMEOUT = 5.0
#: What a pushed event's line starts with (then the event's JSON, then "}").
EVENT_PREFIX = b'{"op":"event","event":'
#: The requests a client may send after its hello.
REQUESTS = ("attach", "command", "ctx_keys", "ctx_value", "log", "wait", "bye")
#: The most a ``log`` request returns at once.
MAX_LOG_CHUNK = 256 * 1024


class LineTooLong(ValueError):
    """A peer sent more than ``MAX_LINE`` bytes without a newline."""


def encode(message: dict[str, Any]) -> bytes:
    """One message as its line, newline included."""
    return orjson.dumps(message) + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    """One line (without its newline) as a message: a JSON object with a string ``op``.

    Raises ValueError for anything else (orjson.JSONDecodeError is one)."""
    message = orjson.loads(line)
    if not isinstance(message, dict) or not isinstance(message.get("op"), str):
        raise ValueError("a message is a JSON object with an 'op'")
    return message


def event_frame(event_json: bytes) -> bytes:
    """The line that pushes an event already encoded (core.events.encode_event)."""
    return EVENT_PREFIX + event_json + b"}\n"


class LineBuffer:
    """Bytes read from a socket, cut into lines; ``limit`` bounds an unfinished line."""

    def __init__(self, limit: int | None = MAX_LINE) -> None:
        self._data = bytearray()
        self._limit = limit

    def feed(self, data: bytes) -> list[bytes]:
        """The complete lines ``data`` finishes (without their newlines). Raises LineTooLong
        when a line, finished or not, is longer than the limit."""
        self._data += data
        end = self._data.rfind(b"\n")
        if end < 0:
            self._check(len(self._data))
            return []
        lines = bytes(self._data[:end]).split(b"\n")
        del self._data[: end + 1]
        for line in lines:
            self._check(len(line))
        self._check(len(self._data))
        return lines

    def _check(self, length: int) -> None:
        if self._limit is not None and length > self._limit:
            raise LineTooLong(f"a line longer than {self._limit} bytes")
