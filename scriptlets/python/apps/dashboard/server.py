"""Serving the dashboard: a werkzeug server in a thread, guarded, until the run stops it.

Stopping frees the port at once (the run may start the next dashboard on it), so the server
keeps track of its open connections and cuts them: an idle keep-alive connection would
otherwise hold a request thread, and closing the server joins those threads.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import threading
from typing import Any

from .access import guard, make_token
from .figure import DEFAULT_MAX_POINTS, MIN_POINTS
from .page import build_app

_LOG = logging.getLogger("hello_dash")


class _Connections:
    """Open client connections, so that stopping can end them.

    werkzeug answers ``Connection: close``, but a connection that is open and idle (browsers open
    spare ones ahead of time) keeps its request thread waiting for a request line, and
    ``server_close`` joins those threads: without this, stopping could hang until the client
    gives up on the connection.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self.closing = False

    def add(self, conn: socket.socket) -> bool:
        with self._lock:
            if self.closing:
                return False
            self._open.add(conn)
            return True

    def discard(self, conn: socket.socket) -> None:
        with self._lock:
            self._open.discard(conn)

    def close_all(self) -> None:
        with self._lock:
            self.closing = True
            conns = list(self._open)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _handler_class(conns: _Connections, log: logging.Logger, requests: bool) -> type:
    """werkzeug's request handler, keeping ``conns`` up to date and logging to the step's log
    (each request only when ``requests``: the browser polls twice a second)."""
    from werkzeug.serving import WSGIRequestHandler

    class Handler(WSGIRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            if not conns.add(self.connection):
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        def handle_one_request(self) -> None:
            super().handle_one_request()
            if conns.closing:
                self.close_connection = True

        def finish(self) -> None:
            conns.discard(self.connection)
            super().finish()

        def log_request(self, code: Any = "-", size: Any = "-") -> None:
            if requests:  # a line per browser poll: only when debugging
                log.debug("%s %s %s", self.command, self.path, code)

        def log(self, type: str, message: str, *args: Any) -> None:
            log.info("http %s: %s", type, message % args if args else message)

    return Handler


def orch_debug() -> bool:
    """``orch-tui --debug`` asked its steps to say more (it sets ``ORCH_DEBUG=1``)."""
    return os.environ.get("ORCH_DEBUG", "") not in ("", "0")


def check_port(host: str, port: int) -> None:
    """Fail with a clear message when ``host:port`` cannot be listened on (werkzeug would print
    to stderr and ``sys.exit(1)``)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        infos = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        raise RuntimeError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    fam, kind, proto, _, addr = infos[0]
    with socket.socket(fam, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # what the server does
        try:
            probe.bind(addr)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise RuntimeError(in_use(host, port)) from None
            raise RuntimeError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def in_use(host: str, port: int) -> str:
    """ "port N on HOST is already in use", and by whom, or how to find out: the user's next
    question, and the holder is often a dashboard of an earlier run still going."""
    text = f"port {port} on {host} is already in use"
    holder = _holder(host, port)
    if holder.startswith("pid "):
        return f"{text} by {holder}"
    ask = f"ss -ltnp 'sport = :{port}'"
    if holder:
        return f"{text} by {holder} (sudo {ask} names it)"
    return f"{text} ({ask} names who holds it)"


def _holder(host: str, port: int) -> str:
    """Who listens on ``host:port`` ("pid N (command)", "another user's process"), or "":
    orch-tui's own /proc lookup, which needs no privileges (psutil.net_connections does on
    some hosts)."""
    try:
        from core.ports import describe_holder, listeners, local_addresses
    except ImportError:  # this file run standalone by a Python without orch-tui
        return ""
    addresses = local_addresses(host)
    found = listeners(port, addresses) if addresses is not None else []
    return describe_holder(found[0]) if found else ""


def _check_params(port: Any, ctx_key: Any, interval_ms: Any, max_points: Any, url_key: Any) -> None:
    """A ``ValueError`` naming the first bad parameter: the step fails before it listens."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port must be a whole number from 0 to 65535, got {port!r}")
    if not isinstance(ctx_key, str) or not ctx_key:
        raise ValueError(f"ctx_key must be a non-empty string, got {ctx_key!r}")
    if isinstance(interval_ms, bool) or not isinstance(interval_ms, (int, float)):
        raise ValueError(f"interval_ms must be a number, got {interval_ms!r}")
    if not interval_ms >= 50:
        raise ValueError(f"interval_ms must be >= 50, got {interval_ms!r}")
    if isinstance(max_points, bool) or not isinstance(max_points, int) or max_points < MIN_POINTS:
        raise ValueError(f"max_points must be a whole number >= {MIN_POINTS}, got {max_points!r}")
    if url_key is not None and (not isinstance(url_key, str) or not url_key):
        raise ValueError(f"url_key must be a non-empty string, got {url_key!r}")


def _listen(
    wsgi_app: Any, host: str, port: int, log: logging.Logger, debug: bool
) -> tuple[Any, _Connections]:
    """The werkzeug server listening on ``host:port`` (not serving yet) and its connections,
    for :func:`run` to cut when it stops; a port in use is a ``RuntimeError`` naming its holder."""
    from werkzeug.serving import make_server

    check_port(host, port)
    conns = _Connections()
    try:
        server = make_server(
            host,
            port,
            wsgi_app,
            threaded=True,
            request_handler=_handler_class(conns, log, debug),
        )
    except (SystemExit, OSError):  # werkzeug exits on a bind error; the probe missed a race
        raise RuntimeError(in_use(host, port)) from None
    server.log = lambda type, message, *args: log.error(message, *args)  # type: ignore[method-assign]
    return server, conns


def run(
    ctx: Any,
    port: int = 8050,
    ctx_key: str = "new_row",
    host: str = "127.0.0.1",
    stop: threading.Event | None = None,
    log: logging.Logger | None = None,
    interval_ms: int = 500,
    max_points: int = DEFAULT_MAX_POINTS,
    debug: bool | None = None,
    token: bool | str = True,
    url_key: str | None = None,
) -> None:
    """Serve the dashboard of ``ctx[ctx_key]`` on ``http://host:port/`` until ``stop`` is set.

    Then the server is shut down and its socket closed, so the port is free at once. A port in
    use raises ``SystemExit("port N on HOST is already in use by ...")``: the step fails with
    that one line, without a traceback (it is no bug to debug). ``debug`` logs every HTTP
    request (the browser polls twice a second); by default it is on when ``ORCH_DEBUG`` is
    set, as ``orch-tui --debug`` does for its steps. ``token``: a random one (True), none
    (False) or this one (a string); the address with it is printed, and stored in
    ``ctx[url_key]`` if given, so a later step can show or use it.
    """
    log = log or _LOG
    if debug is None:
        debug = orch_debug()
    _check_params(port, ctx_key, interval_ms, max_points, url_key)
    secret = make_token(token)
    app = build_app(ctx, ctx_key, interval_ms=int(interval_ms), max_points=max_points)
    app.server.logger = log  # Flask logs callback exceptions here: the step's log
    try:
        server, conns = _listen(app.server, host, port, log, bool(debug))
    except RuntimeError as exc:  # expected (a port in use): one line, as a script exits
        raise SystemExit(str(exc)) from None
    guard(app.server, host, server.port, secret)
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.1},
        name=f"hello_dash:{server.port}",
        daemon=True,
    )
    thread.start()
    shown_host = f"[{host}]" if ":" in host else host
    url = f"http://{shown_host}:{server.port}/" + (f"?token={secret}" if secret else "")
    print(f"Dash is running on {url} (ctx key {ctx_key!r})", flush=True)
    if url_key is not None:
        ctx[url_key] = url
    try:
        (stop if stop is not None else threading.Event()).wait()
    finally:
        server.shutdown()  # the accept loop ends (within poll_interval)
        conns.close_all()  # client connections are cut (an answer in the making is dropped)
        server.server_close()  # closes the listening socket; joins the request threads
        thread.join(5)
        log.info("hello_dash on port %d stopped", server.port)
