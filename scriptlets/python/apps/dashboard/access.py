"""Who may use the dashboard: this machine's browser, with the run's token.

The ctx can hold anything a step computed, and the dashboard listens on a port any local user
or web page can reach: a request whose Host header is not the dashboard's own loopback address
(a web page reaching 127.0.0.1 through DNS rebinding) is refused, and so is one that carries
neither the token nor the cookie the first visit with the token got.
"""

from __future__ import annotations

import hmac
import ipaddress
import re
import secrets
from typing import Any


def allowed_hosts(host: str, port: int) -> frozenset[str] | None:
    """The Host headers a request to a dashboard on a loopback address may carry: this
    machine's loopback names, with the port. A web page whose own name resolves to 127.0.0.1
    (DNS rebinding) sends its own name and is refused. None for any other interface: the names
    it is reached by cannot be known here (the token guards it)."""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        return None
    names = {"127.0.0.1", "localhost", "[::1]", f"[{host}]" if ":" in host else host}
    allowed = {f"{name}:{port}" for name in names}
    if port == 80:  # the default port is left out of the Host header
        allowed |= names
    return frozenset(allowed)


def make_token(token: bool | str) -> str | None:
    """The run's token: a new random one (True), none (False), or the one given."""
    if token is True:
        return secrets.token_urlsafe(24)
    if token is False:
        return None
    if not isinstance(token, str) or not re.fullmatch(r"[A-Za-z0-9_-]{8,}", token):
        raise ValueError(
            f"token must be true, false or at least 8 letters, digits, '-' or '_', got {token!r}"
        )
    return token


def guard(server: Any, host: str, port: int, token: str | None) -> None:
    """Answer 403 to a request with a foreign Host header and, with a ``token``, to one that
    carries neither the token (``?token=``) nor its cookie. The first visit with the token
    gets the cookie and is sent on to ``/``, so the token leaves the address bar."""
    import flask

    allowed = allowed_hosts(host, port)
    cookie = f"hello_dash_{port}"  # per port: browsers share cookies between a host's ports

    def refuse(why: str) -> Any:
        return flask.Response(f"hello_dash: {why}\n", status=403, mimetype="text/plain")

    def holds(given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), token.encode())  # type: ignore[union-attr]

    @server.before_request
    def check() -> Any:
        request = flask.request
        if allowed is not None and request.host.lower() not in allowed:
            return refuse(f"Host {request.host!r} is not this dashboard's address")
        if token is None or holds(request.cookies.get(cookie)):
            return None
        if not holds(request.args.get("token")):
            return refuse(
                "this dashboard needs its token: open the address it printed (in the log of "
                "the step that runs it), which ends in ?token=..."
            )
        if request.method == "GET" and request.path == "/":
            response = flask.redirect("/", code=303)
            response.set_cookie(cookie, token, httponly=True, samesite="Strict")
            return response
        return None
