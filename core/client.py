"""A client of a run daemon's socket: ``RemoteControl``, the run's ``RunControl`` from another
process (the TUI, ``orch-tui attach``, ``orch-tui ctl``).

``connect`` says hello (the daemon refuses another protocol version with a message) and, unless
told not to, attaches: the daemon answers with the run's state and pushes every event after it.
A reader thread applies those to a mirror (``RunState.apply``) and hands them to the
subscribers, in seq order; a ``resync`` (this client fell too far behind) replaces the mirror.
Commands and reads are requests that wait for their reply. Whatever goes wrong with the daemon
is a ``DaemonGone`` or a ``ProtocolError`` with a one-line message, never a socket's exception.
"""

from __future__ import annotations

import base64
import itertools
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from core import __version__
from core import protocol as proto
from core.control import CtxValue, Reply
from core.events import Event, decode_event
from core.rundir import RunDir
from core.state import RunState

#: How long a command waits for its reply.
REPLY_TIMEOUT = 10.0


class DaemonGone(Exception):
    """No daemon answers for the run: no socket, refused, or it went away (the message says
    which, in a line)."""


class ProtocolError(Exception):
    """The daemon answered, but not in a way this client can use (another protocol version, a
    malformed reply); the message says why, in a line."""


class _Attached(msgspec.Struct):
    """The reply to an attach that was granted: the run's state (the events follow)."""

    id: int
    state: RunState


class _Pending:
    """A request waiting for its reply."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.reply: dict[str, Any] | None = None


def connect(
    target: RunDir | Path, *, client: str = "ctl", attach: bool = True, timeout: float = 5.0
) -> RemoteControl:
    """The run daemon of ``target`` (a RunDir, held, or a run folder), after its hello and,
    with ``attach``, with the run's state and its events from then on. ``timeout``: for the
    connection and the handshake."""
    owned = not isinstance(target, RunDir)
    try:
        run_dir = RunDir.open(Path(target)) if owned else target
    except OSError as exc:
        raise DaemonGone(f"no run at {target}: {exc.strerror or exc}") from None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(run_dir.socket_address())
        except FileNotFoundError:
            raise DaemonGone(f"no run daemon for {run_dir.path} (no socket)") from None
        except ConnectionRefusedError:
            raise DaemonGone(
                f"the run daemon of {run_dir.path} is gone (its socket refuses)"
            ) from None
        except OSError as exc:
            raise DaemonGone(f"cannot reach the run daemon of {run_dir.path}: {exc}") from None
        control = RemoteControl(sock, run_dir, client, owned)
    except BaseException:
        sock.close()
        if owned:
            run_dir.close()
        raise
    if attach:
        try:
            control._attach(timeout)
        except BaseException:
            control.close()
            raise
    return control


class RemoteControl:
    """``RunControl`` over a run daemon's socket (see the module's docstring), plus what a
    remote client needs: ``run_id``, ``pid``, ``protocol``, ``log`` and ``close``."""

    def __init__(self, sock: socket.socket, run_dir: RunDir, client: str, owned: bool) -> None:
        self.run_dir = run_dir
        self._sock = sock
        self._owned = owned
        self._lines = proto.LineBuffer(limit=None)  # the daemon's lines: a whole run's state
        self._send_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self._lock = threading.Lock()  # the mirror, the subscribers, the pending requests
        self._mirror: RunState | None = None
        self._attach_id: int | None = None
        self._subscribers: list[Callable[[Event], None]] = []
        self._resync_callbacks: list[Callable[[RunState], None]] = []
        self._gone: str | None = None  # why the connection ended
        self._closing: dict[str, Any] | None = None
        self._closed = False
        hello = self._handshake(client)
        self.run_id: str = hello.get("run_id", "")
        self.pid: int = hello.get("pid", 0)
        self.protocol: int = hello.get("protocol", 0)
        self.version: str = hello.get("version", "")
        self._stays_open = bool(hello.get("stays_open"))
        sock.settimeout(None)
        self._reader = threading.Thread(target=self._read_loop, name="orch-client", daemon=True)
        self._reader.start()

    # -- RunControl -------------------------------------------------------------------------------
    def snapshot(self) -> RunState:
        with self._lock:
            if self._mirror is None:
                raise ProtocolError("not attached to the run (connect(..., attach=True))")
            return self._mirror.copy()

    def subscribe(
        self,
        callback: Callable[[Event], None],
        on_resync: Callable[[RunState], None] | None = None,
    ) -> None:
        """``callback`` gets every event from now on, decoded, in seq order, on the reader
        thread; ``on_resync`` the new state when this client fell behind and the daemon sent
        a fresh one (the events after it follow)."""
        with self._lock:
            if self._mirror is None:
                raise ProtocolError("not attached to the run (connect(..., attach=True))")
            self._subscribers.append(callback)
            if on_resync is not None:
                self._resync_callbacks.append(on_resync)

    def command(self, name: str, step: str | None = None, **args: Any) -> Reply:
        message = {"op": "command", "name": name, "step": step, "force": bool(args.get("force"))}
        if args.get("signal") is not None:  # stop_run: the signal that asked for it
            message["signal"] = int(args["signal"])
        reply = self._request(message, REPLY_TIMEOUT)
        if reply is None:
            raise DaemonGone("the run daemon did not answer")
        if reply.get("ok"):
            return Reply(True, str(reply.get("message", "")))
        return Reply(False, str(reply.get("error", reply.get("message", ""))))

    def ctx_keys(self) -> dict[str, int]:
        return dict(self._checked({"op": "ctx_keys"})["keys"])

    def ctx_value(self, key: str, tail: int | None = None) -> CtxValue:
        reply = self._request({"op": "ctx_value", "key": key, "tail": tail}, REPLY_TIMEOUT)
        if reply is not None and reply.get("no_key"):
            raise KeyError(key)
        reply = self._ok(reply)
        if "rows" in reply:
            return CtxValue(reply["version"], reply["rows"], reply["length"])
        return CtxValue(reply["version"], reply.get("value"))

    def wait(self, timeout: float | None = None) -> int | None:
        """The run's exit code once it is over (no step can run any more), None if
        ``timeout`` passed first."""
        with self._lock:
            if self._closing is not None:
                return self._closing.get("exit_code")
            if self._mirror is not None and self._mirror.ended is not None:
                return self._mirror.exit_code
        if timeout is not None and timeout <= 0:
            return None
        try:
            reply = self._request({"op": "wait"}, timeout)
        except DaemonGone:
            # The daemon may have said ``closing`` and gone just as the wait was asked (the
            # app's quit: close, then wait): its exit code is in what the reader has yet to read.
            self._reader.join(REPLY_TIMEOUT)
            with self._lock:
                closing = self._closing
            if closing is None:
                raise
            return closing.get("exit_code")
        return None if reply is None else self._ok(reply).get("exit_code")

    # -- more ---------------------------------------------------------------------------------------
    def log(
        self, step: str, offset: int = 0, limit: int = proto.MAX_LOG_CHUNK
    ) -> tuple[bytes, int]:
        """Up to ``limit`` bytes of the step's log from ``offset``, and its size now."""
        reply = self._checked({"op": "log", "step": step, "offset": offset, "limit": limit})
        return base64.b64decode(reply["data"]), int(reply["size"])

    @property
    def stays_open(self) -> bool:
        """The daemon keeps serving the run once no step can run, until it is closed (the
        run was started without --exit-when-done), and has not said it is closing."""
        with self._lock:
            return self._stays_open and self._closing is None and self._gone is None

    @property
    def gone(self) -> str | None:
        """Why the connection ended (the daemon closed it, or went away); None while it lives."""
        return self._gone

    def wait_gone(self, timeout: float | None = None) -> bool:
        """Wait until the daemon closes the connection (it does so as it exits)."""
        self._reader.join(timeout)
        return not self._reader.is_alive()

    def close(self) -> None:
        """Say bye and close (the run goes on)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._send({"op": "bye"})
        except DaemonGone:
            pass
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._reader.join(5)
        self._sock.close()
        if self._owned:
            self.run_dir.close()

    def __enter__(self) -> RemoteControl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the connection -----------------------------------------------------------------------
    def _handshake(self, client: str) -> dict[str, Any]:
        self._send(
            {"op": "hello", "protocol": proto.PROTOCOL, "client": client, "version": __version__}
        )
        try:
            while True:
                data = self._sock.recv(1 << 16)
                if not data:
                    raise DaemonGone(f"the run daemon of {self.run_dir.path} closed the connection")
                lines = self._lines.feed(data)
                if lines:
                    break
        except TimeoutError:
            raise DaemonGone(f"the run daemon of {self.run_dir.path} did not answer") from None
        except OSError as exc:
            raise DaemonGone(f"the run daemon of {self.run_dir.path}: {exc}") from None
        try:
            hello = proto.decode(lines[0])
        except ValueError:
            raise ProtocolError("the run daemon's hello is not JSON") from None
        if hello.get("op") == "error":
            raise ProtocolError(str(hello.get("error", "refused")))
        if hello.get("op") != "hello" or hello.get("protocol") != proto.PROTOCOL:
            raise ProtocolError(f"the run daemon answered {hello.get('op')!r}, not a hello")
        self._early = lines[1:]  # anything that came with it (nothing, before attach)
        return hello

    def _attach(self, timeout: float) -> None:
        rid = next(self._ids)
        self._attach_id = rid
        reply = self._request({"op": "attach"}, timeout, rid=rid)
        if reply is None:
            raise DaemonGone(f"the run daemon of {self.run_dir.path} did not answer")
        self._ok(reply)
        with self._lock:  # the names only: no copy of the whole state
            assert self._mirror is not None
            steps = sorted(self._mirror.steps.values(), key=lambda s: s.index)
        self.run_dir.name_logs(lambda: [s.name for s in steps])

    def _send(self, message: dict[str, Any]) -> None:
        data = proto.encode(message)
        with self._send_lock:
            try:
                self._sock.sendall(data)
            except OSError as exc:
                raise DaemonGone(f"the run daemon went away ({exc.strerror or exc})") from None

    def _request(
        self, message: dict[str, Any], timeout: float | None, *, rid: int | None = None
    ) -> dict[str, Any] | None:
        """Send a request, wait for its reply (None: ``timeout`` passed)."""
        rid = next(self._ids) if rid is None else rid
        pending = _Pending()
        with self._lock:
            if self._gone is not None:
                raise DaemonGone(self._gone)
            self._pending[rid] = pending
        try:
            self._send({**message, "id": rid})
            if not pending.done.wait(timeout):
                return None
        finally:
            with self._lock:
                self._pending.pop(rid, None)
        if pending.reply is None:
            raise DaemonGone(self._gone or "the run daemon went away")
        return pending.reply

    def _checked(self, message: dict[str, Any]) -> dict[str, Any]:
        return self._ok(self._request(message, REPLY_TIMEOUT))

    @staticmethod
    def _ok(reply: dict[str, Any] | None) -> dict[str, Any]:
        if reply is None:
            raise DaemonGone("the run daemon did not answer")
        if not reply.get("ok"):
            raise KeyError(str(reply.get("error", "refused")))
        return reply

    # -- the reader thread --------------------------------------------------------------------------
    def _read_loop(self) -> None:
        why = "the run daemon went away without ending the run (was it killed?)"
        try:
            for line in self._early:
                self._frame(line)
            while True:
                data = self._sock.recv(1 << 18)
                if not data:
                    break
                for line in self._lines.feed(data):
                    self._frame(line)
        except OSError as exc:
            why = f"the run daemon went away ({exc.strerror or exc})"
        except (ValueError, ProtocolError) as exc:
            why = f"the run daemon sent what this client cannot read: {exc}"
        if self._closing is not None:
            why = f"the run is over ({self._closing.get('status')})"
        with self._lock:
            self._gone = why
            pending = list(self._pending.values())
        for request in pending:
            request.done.set()

    def _frame(self, line: bytes) -> None:
        if line.startswith(proto.EVENT_PREFIX):
            event = decode_event(line[len(proto.EVENT_PREFIX) : -1])
            with self._lock:
                if self._mirror is None or event.seq <= self._mirror.seq:
                    return
                self._mirror.apply(event)
                subscribers = list(self._subscribers)
            for callback in subscribers:
                callback(event)
            return
        if self._attach_id is not None and line.startswith(self._attached_prefix()):
            self._replied_attached(msgspec.json.decode(line, type=_Attached))
            return
        message = proto.decode(line)
        op = message["op"]
        if op == "reply":
            self._replied(message)
        elif op == "resync":
            self._resync(RunState.from_dict(message["state"]))
        elif op == "closing":
            self._closing = message
        elif op == "error":
            raise ProtocolError(str(message.get("error")))

    def _attached_prefix(self) -> bytes:
        """How the daemon's reply to this client's attach begins (core/server.py's _reply)."""
        return b'{"op":"reply","id":%d,"ok":true,"state":' % self._attach_id

    def _replied_attached(self, reply: _Attached) -> None:
        """The attach's reply, decoded straight into a RunState: a 10,000-step run's state as
        dicts first, then converted, took four times as long (the app's first paint waits)."""
        with self._lock:  # before the events that follow it are read
            self._mirror = reply.state
            pending = self._pending.get(reply.id)
        if pending is not None:
            pending.reply = {"op": "reply", "id": reply.id, "ok": True}
            pending.done.set()

    def _replied(self, message: dict[str, Any]) -> None:
        rid = message.get("id")
        if rid == self._attach_id and message.get("ok"):
            with self._lock:  # before the events that follow it are read
                self._mirror = RunState.from_dict(message["state"])
        with self._lock:
            pending = self._pending.get(rid)  # type: ignore[arg-type]
        if pending is not None:
            pending.reply = message
            pending.done.set()

    def _resync(self, state: RunState) -> None:
        with self._lock:
            self._mirror = state
            callbacks = list(self._resync_callbacks)
        for callback in callbacks:
            callback(state.copy())
