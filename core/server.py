"""The run daemon's socket: serves one run's ``RunControl`` to its clients (protocol: core.protocol).

Flow control is the point of this module. The runner never waits for a client:

* The bus's consumer thread hands each event to ``_on_event``, which encodes it once, appends
  the frame to a bounded ring of recent events (``EventRing``) and wakes the server's thread.
  Nothing there blocks: no socket is touched.
* One thread (a selector) serves every connection, non-blocking. A client has a cursor (the last
  seq it was sent) and at most one chunk of event frames in flight; the next chunk is cut from
  the ring only when the socket has taken the last one. Replies jump the queue: they go before
  the next chunk.
* A client whose cursor fell out of the ring (it did not read while the run went on) gets, once
  its socket takes data again, ONE ``resync``: a fresh snapshot, and the events after it.

So memory is the ring plus a chunk and the replies per client, whatever the clients do, and a
client that misbehaves (a line over 1 MiB, garbage, no hello in 5 s, another user) is closed
without touching the runner or the others.
"""

from __future__ import annotations

import functools
import os
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec

from core import __version__
from core import protocol as proto
from core.context import encode_for_viewer
from core.control import STOP_SIGNALS
from core.events import Event, RunFinished, RunReopened, encode_event
from core.log import get_logger
from core.rundir import SOCKET

if TYPE_CHECKING:
    from core.control import RunControl
    from core.rundir import RunDir

_log = get_logger("orch.server")

RING_EVENTS = 50_000
RING_BYTES = 32 << 20
#: The event bytes a client has in flight at most (cut from the ring when the last went out).
CHUNK_BYTES = 64 << 10
#: Replies a client has not read: past this its requests are not read either.
REPLY_BYTES = 4 << 20
#: How long the closing daemon gives its clients to take what is left.
FAREWELL_SECONDS = 2.0
_PEERCRED = struct.Struct("3i")


class EventRing:
    """The newest event frames, in seq order without gaps, bounded in count and bytes.

    ``append`` is called on the bus's consumer thread, ``after`` on the server's: a lock held
    for a list append or a slice is all they share."""

    def __init__(self, max_events: int = RING_EVENTS, max_bytes: int = RING_BYTES) -> None:
        self._frames: list[bytes] = []
        self._first = 1  # the seq of _frames[0]
        self._bytes = 0
        self._max_events, self._max_bytes = max_events, max_bytes
        self._lock = threading.Lock()

    def append(self, seq: int, frame: bytes) -> None:
        with self._lock:
            if not self._frames:
                self._first = seq
            self._frames.append(frame)
            self._bytes += len(frame)
            if len(self._frames) > self._max_events or self._bytes > self._max_bytes:
                self._trim()

    def _trim(self) -> None:
        """Drop the oldest eighth at least (one ``del`` for many appends), to within bounds."""
        frames, drop, dropped = self._frames, 0, 0
        least = max(1, len(frames) // 8)
        while drop < len(frames) - 1 and (
            drop < least
            or len(frames) - drop > self._max_events
            or self._bytes - dropped > self._max_bytes
        ):
            dropped += len(frames[drop])
            drop += 1
        del frames[:drop]
        self._first += drop
        self._bytes -= dropped

    def after(self, cursor: int, max_bytes: int) -> list[bytes] | None:
        """Frames of the events after seq ``cursor``, about ``max_bytes`` of them (at least
        one); None when some of those are no longer held (the client must resync)."""
        with self._lock:
            start = cursor + 1 - self._first
            if start < 0 and self._frames:
                return None
            taken, size = [], 0
            for frame in self._frames[max(start, 0) :]:
                taken.append(frame)
                size += len(frame)
                if size >= max_bytes:
                    break
            return taken


class _Client:
    """One connection: what it said, what it is owed, where it is in the event stream."""

    def __init__(self, sock: socket.socket, hello_deadline: float) -> None:
        self.sock = sock
        self.lines = proto.LineBuffer()
        self.hello_deadline: float | None = hello_deadline
        self.name = "?"
        self.attached = False
        self.cursor = 0  # the seq of the last event it was sent
        self.resync = False
        self.sending = memoryview(b"")  # bytes in flight: a chunk of events, or replies
        self.replies = bytearray()
        self.waits: list[int] = []  # ids of ``wait`` requests not answered yet
        self.gone = False


class RunServer:
    """The socket of one run (``run_dir``): its clients get ``control``'s state, events and
    commands. ``start`` before the runner starts (the ring must see every event); ``close``
    once the runner has finished."""

    def __init__(
        self,
        control: RunControl,
        run_dir: RunDir,
        *,
        run_id: str,
        ring: EventRing | None = None,
        on_command: Callable[[str], None] | None = None,
        stays_open: bool = False,
    ) -> None:
        """``on_command``: told each command's name as it is done (the daemon notes a stop).
        ``stays_open``: the run stays open once no step can run, for retry or skip, until it
        is closed (a run without --exit-when-done); said in the hello, so that a client that
        waited for the run's end (``ctl wait`` in CI) can say the daemon is still up."""
        self._control = control
        self._stays_open = stays_open
        self._run_dir = run_dir
        self._run_id = run_id
        self._ring = ring or EventRing()
        self._on_command = on_command
        self._selector = selectors.DefaultSelector()
        self._clients: dict[int, _Client] = {}
        self._listener: socket.socket | None = None
        self._inode: tuple[int, int] | None = None
        self._folder_fd = -1  # the run folder's, our own: the run closes its own as it ends
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._woken = threading.Event()
        #: (status, exit_code, seq of its run_finished) while the run is over
        self._ended: tuple[str, int, int] | None = None
        self._closing: bytes | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="orch-server", daemon=True)

    # -- the run's side -------------------------------------------------------------------------
    def start(self) -> None:
        """Bind the socket (0600: chmod after bind, never a process-wide umask: the runner has
        threads), subscribe to the run's events and serve."""
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            assert self._run_dir.folder is not None
            self._folder_fd = os.dup(self._run_dir.folder.fd)
            listener.bind(self._run_dir.socket_address())
            os.chmod(SOCKET, 0o600, dir_fd=self._folder_fd)
            info = os.stat(SOCKET, dir_fd=self._folder_fd, follow_symlinks=False)
            self._inode = (info.st_dev, info.st_ino)
            listener.listen(64)
            listener.setblocking(False)
        except BaseException:
            listener.close()
            self._unlink()
            raise
        self._listener = listener
        self._selector.register(listener, selectors.EVENT_READ, "listener")
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._control.subscribe(self._on_event)
        self._thread.start()

    def _on_event(self, event: Event) -> None:
        """On the bus's consumer thread: encode, keep, wake the server. Never blocks."""
        self._ring.append(event.seq, proto.event_frame(encode_event(event)))
        if isinstance(event, RunFinished):
            self._ended = (str(event.status), event.exit_code, event.seq)
        elif isinstance(event, RunReopened):
            self._ended = None
        self._wake()

    def _wake(self) -> None:
        if not self._woken.is_set():
            self._woken.set()
            try:
                os.write(self._wake_w, b"x")
            except BlockingIOError:  # already full of wake-ups
                pass

    def close(self, status: str, exit_code: int | None) -> None:
        """The run is over: every client is sent what is left of the events (for a moment at
        most), the open ``wait``s their answer, then ``closing``; the socket goes. Once: again does nothing."""
        if self._stop.is_set():
            return
        self._ended = (status, exit_code if exit_code is not None else 1, 0)
        self._closing = proto.encode({"op": "closing", "status": status, "exit_code": exit_code})
        self._stop.set()
        self._wake()
        self._thread.join(FAREWELL_SECONDS + 5)
        self._unlink()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def _unlink(self) -> None:
        """Remove the socket file if it is still ours (never one that took its name)."""
        if self._folder_fd < 0:
            return
        try:
            info = os.stat(SOCKET, dir_fd=self._folder_fd, follow_symlinks=False)
            if (info.st_dev, info.st_ino) == self._inode:
                os.unlink(SOCKET, dir_fd=self._folder_fd)
        except FileNotFoundError:
            pass
        finally:
            os.close(self._folder_fd)
            self._folder_fd = -1

    # -- the server's thread ------------------------------------------------------------------------
    def _serve(self) -> None:
        try:
            while not self._stop.is_set():
                self._turn(self._timeout())
            self._farewell()
        except Exception:
            _log.exception("the run's socket server failed")
        finally:
            for client in list(self._clients.values()):
                self._drop(client)
            if self._listener is not None:
                self._selector.unregister(self._listener)
                self._listener.close()
            self._selector.close()

    def _timeout(self) -> float | None:
        deadlines = [c.hello_deadline for c in self._clients.values() if c.hello_deadline]
        return max(0.0, min(deadlines) - time.monotonic()) if deadlines else None

    def _turn(self, timeout: float | None) -> None:
        for key, mask in self._selector.select(timeout):
            if key.data == "listener":
                self._accept()
            elif key.data == "wake":
                try:
                    while os.read(self._wake_r, 4096):
                        pass
                except BlockingIOError:
                    pass
                # cleared after the pipe is empty: a wake-up written meanwhile is not lost
                # (its event is in the ring already, and every client is pumped below)
                self._woken.clear()
            else:
                client = key.data
                if mask & selectors.EVENT_READ and not client.gone:
                    self._read(client)
                if mask & selectors.EVENT_WRITE and not client.gone:
                    self._pump(client)
        now = time.monotonic()
        for client in list(self._clients.values()):
            if client.hello_deadline is not None and now >= client.hello_deadline:
                self._refuse(client, "no hello within 5 s")
            elif not client.gone:
                self._pump(client)

    def _farewell(self) -> None:
        """What is left of the events, the waits' answers, ``closing``; then every connection
        closes. A client that does not read gets no more than FAREWELL_SECONDS."""
        deadline = time.monotonic() + FAREWELL_SECONDS
        pending = True
        while pending and time.monotonic() < deadline:
            pending = False
            for client in list(self._clients.values()):
                self._pump(client)
                if client.gone:
                    continue
                if not client.sending and not client.replies and self._closing is not None:
                    client.replies += self._closing
                    client.attached = False  # nothing after closing
                    self._pump(client)
                pending = pending or bool(client.sending or client.replies)
            if pending:
                self._selector.select(0.05)

    # -- connections ----------------------------------------------------------------------------
    def _accept(self) -> None:
        assert self._listener is not None
        while True:
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of descriptors: the others go on
                _log.warning("cannot accept a connection: %s", exc)
                return
            pid, uid, _gid = _PEERCRED.unpack(
                sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
            )
            if uid != os.geteuid():
                _log.warning("refused a connection from uid %d (pid %d): not this user", uid, pid)
                sock.close()
                continue
            sock.setblocking(False)
            client = _Client(sock, time.monotonic() + proto.HELLO_TIMEOUT)
            self._clients[sock.fileno()] = client
            self._selector.register(sock, selectors.EVENT_READ, client)

    def _read(self, client: _Client) -> None:
        try:
            data = client.sock.recv(1 << 16)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(client)
            return
        try:
            lines = client.lines.feed(data)
        except proto.LineTooLong as exc:
            self._refuse(client, str(exc))
            return
        for line in lines:
            if client.gone:
                return
            try:
                message = proto.decode(line)
            except ValueError:
                self._refuse(client, "malformed message: not a JSON object with an 'op'")
                return
            self._handle(client, message)

    def _refuse(self, client: _Client, why: str) -> None:
        """Close a connection that broke the protocol, with an error line first if it fits."""
        _log.warning("closed a connection (%s): %s", client.name, why)
        try:
            client.sock.send(proto.encode({"op": "error", "error": why}))
        except OSError:
            pass
        self._drop(client)

    def _drop(self, client: _Client) -> None:
        if client.gone:
            return
        client.gone = True
        self._clients.pop(client.sock.fileno(), None)
        try:
            self._selector.unregister(client.sock)
        except (KeyError, ValueError):
            pass
        client.sock.close()

    def _pump(self, client: _Client) -> None:
        """Send what the socket takes: the chunk in flight, then replies, then a resync or the
        next chunk of events from the ring. Watch for writability only while bytes wait."""
        while not client.gone:
            if not client.sending and not self._next_bytes(client):
                break
            try:
                sent = client.sock.send(client.sending)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                self._drop(client)
                return
            client.sending = client.sending[sent:]
            if client.sending:
                break
        if not client.gone:
            reading = len(client.replies) < REPLY_BYTES
            mask = (selectors.EVENT_READ if reading else 0) | (
                selectors.EVENT_WRITE if client.sending else 0
            )
            self._selector.modify(client.sock, mask or selectors.EVENT_WRITE, client)

    def _next_bytes(self, client: _Client) -> bool:
        """Put the next bytes for the client in flight; False when there are none."""
        self._answer_waits(client)
        if client.replies:
            client.sending = memoryview(bytes(client.replies))
            client.replies.clear()
            return True
        if not client.attached:
            return False
        if not client.resync:
            frames = self._ring.after(client.cursor, CHUNK_BYTES)
            if frames is None:
                client.resync = True
            elif frames:
                client.cursor += len(frames)
                client.sending = memoryview(b"".join(frames))
                return True
            else:
                return False
        client.resync = False
        state = self._control.snapshot()
        client.cursor = state.seq
        _log.info("resync of a client (%s) that fell behind, at seq %d", client.name, state.seq)
        client.sending = memoryview(
            b'{"op":"resync","state":' + msgspec.json.encode(state) + b"}\n"
        )
        return True

    # -- requests -------------------------------------------------------------------------------
    def _handle(self, client: _Client, message: dict[str, Any]) -> None:
        op = message["op"]
        if client.hello_deadline is not None:
            if op != "hello":
                self._refuse(client, f"expected hello first, got {op!r}")
            else:
                self._hello(client, message)
            return
        if op == "bye":
            self._drop(client)
            return
        rid = message.get("id")
        if op not in proto.REQUESTS or not isinstance(rid, int) or isinstance(rid, bool):
            self._refuse(client, f"not a request: {op!r} with id {rid!r}")
            return
        try:
            reply = getattr(self, f"_op_{op}")(client, message)
        except (KeyError, TypeError, ValueError, OSError) as exc:
            reply = {"ok": False, "error": _one_line(exc)}
        if reply is not None:
            self._reply(client, rid, reply)

    def _reply(self, client: _Client, rid: int, fields: dict[str, Any] | bytes) -> None:
        """``fields`` as the reply to ``rid``; bytes: a JSON object's members, already encoded."""
        if isinstance(fields, bytes):
            client.replies += b'{"op":"reply","id":%d,"ok":true,%s}\n' % (rid, fields)
        else:
            client.replies += proto.encode({"op": "reply", "id": rid, **fields})

    def _hello(self, client: _Client, message: dict[str, Any]) -> None:
        if message.get("protocol") != proto.PROTOCOL:
            self._refuse(
                client,
                f"protocol {message.get('protocol')} is not spoken here (this run's daemon "
                f"speaks {proto.PROTOCOL}): use the orch-tui that started it, or let the run "
                "finish",
            )
            return
        client.hello_deadline = None
        client.name = str(message.get("client", "?"))[:40]
        client.replies += proto.encode(
            {
                "op": "hello",
                "protocol": proto.PROTOCOL,
                "run_id": self._run_id,
                "pid": os.getpid(),
                "version": __version__,
                "stays_open": self._stays_open,
            }
        )

    def _op_attach(self, client: _Client, message: dict[str, Any]) -> bytes:
        state = self._control.snapshot()
        client.attached, client.cursor, client.resync = True, state.seq, False
        return b'"state":' + msgspec.json.encode(state)

    def _op_command(self, client: _Client, message: dict[str, Any]) -> dict[str, Any]:
        name, step = message.get("name"), message.get("step")
        if not isinstance(name, str) or not (step is None or isinstance(step, str)):
            raise ValueError("a command has a 'name' and a 'step' (a string or null)")
        by = message.get("signal")  # the signal that made the client stop the run
        if by is not None and (type(by) is not int or by not in STOP_SIGNALS):
            raise ValueError(f"a stop_run's 'signal' is one of {sorted(STOP_SIGNALS)}")
        args = {"force": bool(message.get("force"))} | ({} if by is None else {"signal": by})
        reply = self._control.command(name, step, **args)
        if reply.ok and self._on_command is not None:
            self._on_command(name)
        return {"ok": reply.ok, "message": reply.message} | (
            {} if reply.ok else {"error": reply.message}
        )

    def _op_ctx_keys(self, client: _Client, message: dict[str, Any]) -> dict[str, Any]:
        keys = self._control.ctx_keys()
        return {"ok": True, "keys": keys, "version": max(keys.values(), default=0)}

    def _op_ctx_value(self, client: _Client, message: dict[str, Any]) -> dict[str, Any] | bytes:
        key, tail = message.get("key"), message.get("tail")
        if not isinstance(key, str) or not (tail is None or isinstance(tail, int)):
            raise ValueError("ctx_value takes a 'key' and a 'tail' (a number or null)")
        try:
            value = self._control.ctx_value(key, tail)
        except KeyError:
            return {"ok": False, "error": f"no ctx key {key!r}", "no_key": True}
        fields = {"version": value.version, "value": value.value}
        if value.length is not None:
            fields = {"version": value.version, "length": value.length, "rows": value.value}
        return encode_for_viewer(fields)[1:-1]  # any value a step put in the ctx

    @functools.cached_property
    def _steps(self) -> frozenset[str]:
        """The run's step names, taken at the first read of a log: a 10,000-step run's snapshot
        is not worth taking while the daemon starts (the client waits for it)."""
        return frozenset(self._control.snapshot().steps)

    def _op_log(self, client: _Client, message: dict[str, Any]) -> dict[str, Any]:
        import base64

        step, offset, limit = message.get("step"), message.get("offset", 0), message.get("limit")
        if step not in self._steps:
            return {"ok": False, "error": f"no step named {step!r}"}
        if not isinstance(offset, int) or offset < 0:
            raise ValueError("'offset' is a number of bytes, 0 or more")
        limit = limit if isinstance(limit, int) and limit >= 0 else proto.MAX_LOG_CHUNK
        data, size = self._run_dir.read_log(step, offset, min(limit, proto.MAX_LOG_CHUNK))
        return {"ok": True, "data": base64.b64encode(data).decode(), "size": size}

    def _op_wait(self, client: _Client, message: dict[str, Any]) -> None:
        client.waits.append(message["id"])
        self._answer_waits(client)

    def _answer_waits(self, client: _Client) -> None:
        """Answer the client's waits once the run is over, and an attached client has been
        sent the event that says so (its mirror agrees with the answer)."""
        ended = self._ended
        if ended is None or not client.waits or (client.attached and client.cursor < ended[2]):
            return
        for rid in client.waits:
            self._reply(client, rid, {"ok": True, "status": ended[0], "exit_code": ended[1]})
        client.waits.clear()


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0] if text else text
