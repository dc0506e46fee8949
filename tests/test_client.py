"""core.client against a real run served on a real socket (core.server, in this process).

The run daemon's process, its start and its end are tested in test_daemon.py; here the client's
interface: hello, the attached mirror, commands, the ctx, logs, wait, and one-line errors.
"""

from __future__ import annotations

import os
import socket
import threading

import pytest

from core.client import DaemonGone, ProtocolError, connect
from core.control import LocalControl
from core.rundir import RunDir
from tests.conftest import make_runner, wait_for
from tests.tui_helpers import close_runner

RECIPE = """
steps:
  - name: hello
    type: shell
    run: printf 'one\\ntwo\\n'
  - name: gate
    type: shell
    depends_on: [hello]
    run: exit 3
  - name: after
    type: shell
    depends_on: [gate]
    run: echo after
"""


@pytest.fixture
def served(tmp_path):
    """(runner, server): an interactive run on its socket; both ended after the test."""
    from core.server import RunServer

    runner = make_runner(tmp_path, RECIPE, interactive=True)
    server = RunServer(LocalControl(runner), runner.rundir, run_id=runner.run_id)
    server.start()
    try:
        yield runner, server
    finally:
        close_runner(runner)
        server.close(str(runner.status), runner.exit_code)
        runner.rundir.close()


def test_a_client_mirrors_the_run_and_its_commands_act_on_it(served, tmp_path):
    runner, _server = served
    with connect(tmp_path / "run", client="test") as control:
        assert (control.run_id, control.pid, control.protocol) == (runner.run_id, os.getpid(), 1)
        seen = []
        control.subscribe(seen.append)
        runner.start()
        assert control.wait(20) == 1  # gate failed, after is blocked: no step can run
        wait_for(lambda: control.snapshot().steps["gate"].status == "failed", 10, "the mirror")
        assert control.snapshot().steps["after"].status == "blocked"
        assert [e.seq for e in seen] == sorted({e.seq for e in seen})  # in order, once each

        refused = control.command("retry", "after")
        assert not refused.ok and "cannot retry 'after': it is blocked" in refused.message
        assert control.command("skip", "gate").ok
        wait_for(lambda: control.snapshot().steps["after"].status == "succeeded", 20, "after")
        assert control.wait(20) == 0

        data, size = control.log("hello")
        assert data == b"one\ntwo\n" and size == 8
        assert control.log("hello", offset=4, limit=2) == (b"tw", 8)
        assert control.snapshot().to_dict() == runner.snapshot().to_dict()


def test_ctx_is_read_by_key_and_version(served, tmp_path):
    runner, _server = served
    runner.ctx["rows"] = [1, 2, 3, 4]
    runner.ctx["name"] = "x"
    with connect(tmp_path / "run") as control:
        keys = control.ctx_keys()
        assert set(keys) == {"rows", "name"} and keys["name"] > keys["rows"]
        assert control.ctx_value("name").value == "x"
        tail = control.ctx_value("rows", tail=2)
        assert (tail.value, tail.length, tail.version) == ([3, 4], 4, keys["rows"])
        with pytest.raises(KeyError):
            control.ctx_value("nope")


def test_without_attach_only_the_hello_is_done(served, tmp_path):
    runner, _server = served
    with connect(RunDir.open(tmp_path / "run"), attach=False) as control:
        assert control.run_id == runner.run_id
        with pytest.raises(ProtocolError):
            control.snapshot()


def test_no_daemon_is_a_one_line_daemon_gone(tmp_path):
    with RunDir.create(tmp_path / "run", tmp_path, "x"):
        pass
    with pytest.raises(DaemonGone, match="no socket"):
        connect(tmp_path / "run")
    with pytest.raises(DaemonGone, match="no run at"):
        connect(tmp_path / "missing")
    # a socket file nobody listens on: what a SIGKILLed daemon leaves
    with socket.socket(socket.AF_UNIX) as stale:
        stale.bind(str(tmp_path / "run" / "daemon.sock"))
    with pytest.raises(DaemonGone, match="refuses"):
        connect(tmp_path / "run")


def test_another_protocol_version_is_refused_with_a_message(served, tmp_path):
    with RunDir.open(tmp_path / "run") as run_dir, socket.socket(socket.AF_UNIX) as sock:
        sock.connect(run_dir.socket_address())
        sock.sendall(b'{"op":"hello","protocol":2,"client":"future"}\n')
        answer = sock.makefile("rb").readline()
    assert b"protocol 2 is not spoken here (this run's daemon speaks 1)" in answer


def test_a_daemon_that_goes_away_fails_pending_requests_with_daemon_gone(served, tmp_path):
    runner, server = served
    control = connect(tmp_path / "run")
    try:
        result = {}

        def waiting():
            try:
                result["code"] = control.wait(30)
            except DaemonGone as exc:
                result["gone"] = str(exc)

        waiter = threading.Thread(target=waiting)
        waiter.start()
        server.close("interrupted", None)  # what the daemon does as it exits
        waiter.join(10)
        assert "code" in result or "gone" in result
        with pytest.raises(DaemonGone):
            control.command("skip", "hello")
    finally:
        control.close()


def test_a_wait_that_meets_the_closed_daemon_gives_the_exit_code_it_said(served, tmp_path):
    """Quitting the app (q, y) sends ``close`` and then waits. The daemon says ``closing`` (with
    the exit code) and goes: a wait whose request met the closed socket before the reader had
    read that raised DaemonGone, a traceback on the user's screen, though the run was over."""
    _runner, server = served
    control = connect(tmp_path / "run")
    try:
        reading = threading.Event()
        frame, request = control._frame, control._request

        def late_frame(line: bytes) -> None:  # "closing" is read once the wait is under way
            if b'"closing"' in line:
                reading.wait(10)
            frame(line)

        def request_after_the_goodbye(message, timeout, **kw):
            reading.set()
            control._reader.join(10)  # the daemon said closing and went
            return request(message, timeout, **kw)

        control._frame, control._request = late_frame, request_after_the_goodbye
        closer = threading.Thread(target=server.close, args=("interrupted", 130))
        closer.start()
        assert control.wait(30) == 130
        closer.join(10)
    finally:
        control.close()


def _wide(n: int) -> str:
    steps = "".join(f"  - {{name: s{i}, type: shell, run: 'true'}}\n" for i in range(n))
    return "jobs: 8\nsteps:\n" + steps


def test_a_client_that_never_reads_costs_bounded_memory_and_gets_one_resync(tmp_path):
    """The run goes on to its end while a client reads nothing; the server holds no more than
    its ring and one chunk for it; once it reads, it gets ONE resync and then the events after
    it, and its mirror ends equal to the run's state."""
    import msgspec
    import orjson

    from core import protocol as proto
    from core.events import decode_event
    from core.server import CHUNK_BYTES, EventRing, RunServer
    from core.state import RunState

    runner = make_runner(tmp_path, _wide(600))
    ring = EventRing(max_events=100)
    server = RunServer(LocalControl(runner), runner.rundir, run_id=runner.run_id, ring=ring)
    server.start()
    sock = socket.socket(socket.AF_UNIX)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        sock.connect(runner.rundir.socket_address())
        sock.sendall(b'{"op":"hello","protocol":1}\n{"op":"attach","id":1}\n')
        runner.start()
        assert runner.wait(60) == 0  # every step ran; nobody waited for the client
        wait_for(lambda: runner.snapshot().seq - ring._first < 100, 10, "the ring to trim")
        assert len(ring._frames) <= 100
        (client,) = server._clients.values()
        # in flight: what the socket did not take of the attach reply, or of one chunk
        state_bytes = len(msgspec.json.encode(runner.snapshot()))
        assert len(client.sending) <= max(CHUNK_BYTES + 4096, state_bytes) and not client.replies

        sock.settimeout(10)
        lines, mirror, resyncs = proto.LineBuffer(None), None, 0
        final_seq = runner.snapshot().seq
        while mirror is None or mirror.seq < final_seq:
            for line in lines.feed(sock.recv(1 << 16)):
                if line.startswith(proto.EVENT_PREFIX):
                    mirror.apply(decode_event(line[len(proto.EVENT_PREFIX) : -1]))
                    continue
                message = orjson.loads(line)
                if message["op"] == "resync":
                    resyncs += 1
                if message["op"] in ("resync", "reply"):
                    mirror = RunState.from_dict(message["state"])
        assert resyncs == 1
        assert mirror.to_dict() == runner.snapshot().to_dict()
    finally:
        sock.close()
        close_runner(runner)
        server.close(str(runner.status), runner.exit_code)
        runner.rundir.close()
