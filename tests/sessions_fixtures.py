"""Shared helpers for the real screen/tmux tests (imported by the test modules, not a conftest).

Each screen test gets its own SCREENDIR (a fresh 0700 directory, short enough for a Unix socket
path) and each tmux test its own `-L` socket; whatever a test started there is ended in teardown,
even when the test fails.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import psutil
import pytest

T = TypeVar("T")

SCREEN = shutil.which("screen")
TMUX = shutil.which("tmux")
BASH = shutil.which("bash")

needs_screen = pytest.mark.skipif(SCREEN is None, reason="GNU screen is not installed")
needs_tmux = pytest.mark.skipif(TMUX is None, reason="tmux is not installed")


def wait_for(predicate: Callable[[], T], timeout: float, what: str = "condition") -> T:
    """Poll `predicate` until it returns something truthy (returned); fail the test after
    `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.01)


def read_bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def file_becomes(path: Path, expected: bytes, timeout: float = 5.0) -> None:
    """Wait until `path` holds exactly `expected`; fail showing what it holds instead."""
    deadline = time.monotonic() + timeout
    while read_bytes(path) != expected:
        if time.monotonic() >= deadline:
            pytest.fail(f"{path} holds {read_bytes(path)!r}, expected {expected!r}")
        time.sleep(0.01)


def _session_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # a UTF-8 locale for the multiplexers and the shells, and bash as the sessions' shell
    monkeypatch.setenv("LANG", "C.UTF-8")
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    if BASH:
        monkeypatch.setenv("SHELL", BASH)
    monkeypatch.delenv("STY", raising=False)
    monkeypatch.delenv("TMUX", raising=False)
    monkeypatch.delenv("ORCH_RUN_ID", raising=False)


#: every screen command a fixture runs is bounded: a server that stopped answering (its socket's
#: backlog full, so every client blocks in connect) must fail one test, not hang the suite
SCREEN_TIMEOUT = 5.0


def _screen_targets(screendir: str) -> list[str]:
    """PID.NAME of every live session in `screendir` (never a bare pid: screen matches prefixes).

    Read from the directory's socket files, not from `screen -ls`, which connects to every
    server and blocks on one that does not answer.
    """
    try:
        names = os.listdir(screendir)
    except FileNotFoundError:
        return []
    return [
        name
        for name in names
        if name.partition(".")[0].isdigit() and psutil.pid_exists(int(name.partition(".")[0]))
    ]


def _kill_tree(pid: int) -> None:
    try:
        process = psutil.Process(pid)
        family = [process, *process.children(recursive=True)]
    except psutil.Error:
        return
    for member in family:
        try:
            member.send_signal(signal.SIGKILL)
        except psutil.Error:
            pass
    psutil.wait_procs(family, timeout=3)


def end_screen_sessions(screendir: str) -> None:
    """Quit every session in `screendir`, then kill what is left (server and its children):
    a server that does not answer `quit` in time is killed too."""
    env = {**os.environ, "SCREENDIR": screendir}
    for target in _screen_targets(screendir):
        try:
            subprocess.run(
                [SCREEN or "screen", "-S", target, "-X", "quit"],
                capture_output=True,
                env=env,
                stdin=subprocess.DEVNULL,
                timeout=SCREEN_TIMEOUT,
            )
        except subprocess.TimeoutExpired:
            pass  # killed below
    deadline = time.monotonic() + 3
    while _screen_targets(screendir) and time.monotonic() < deadline:
        time.sleep(0.02)
    for target in _screen_targets(screendir):
        _kill_tree(int(target.split(".", 1)[0]))


@pytest.fixture
def screendir(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A private SCREENDIR for this test; every session in it is ended afterwards."""
    if SCREEN is None:
        pytest.skip("GNU screen is not installed")
    _session_env(monkeypatch)
    directory = tempfile.mkdtemp(prefix="orchscr-", dir="/tmp")  # socket paths must stay short
    os.chmod(directory, 0o700)
    monkeypatch.setenv("SCREENDIR", directory)
    try:
        yield directory
    finally:
        end_screen_sessions(directory)
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def tmux_socket(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A tmux `-L` socket name of its own for this test; its server is killed afterwards."""
    if TMUX is None:
        pytest.skip("tmux is not installed")
    _session_env(monkeypatch)
    socket = f"orchtest-{uuid.uuid4().hex[:12]}"
    try:
        yield socket
    finally:
        subprocess.run(
            [TMUX, "-L", socket, "kill-server"], capture_output=True, stdin=subprocess.DEVNULL
        )
        base = os.environ.get("TMUX_TMPDIR") or "/tmp"
        Path(base, f"tmux-{os.getuid()}", socket).unlink(missing_ok=True)


@pytest.fixture
def tmux_tmpdir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private TMUX_TMPDIR: every tmux server started under it (the default one and each `-L`
    socket) is this test's alone, and is killed afterwards."""
    if TMUX is None:
        pytest.skip("tmux is not installed")
    _session_env(monkeypatch)
    directory = Path(tempfile.mkdtemp(prefix="orchtmx-", dir="/tmp"))  # socket paths: short
    monkeypatch.setenv("TMUX_TMPDIR", str(directory))
    try:
        yield directory
    finally:
        sockets = directory / f"tmux-{os.getuid()}"
        for socket in sockets.iterdir() if sockets.is_dir() else []:
            subprocess.run(
                [TMUX, "-S", str(socket), "kill-server"],
                capture_output=True,
                stdin=subprocess.DEVNULL,
                timeout=10,
            )
        shutil.rmtree(directory, ignore_errors=True)


#: Texts that must reach the session byte for byte: what screen's `stuff` would expand, what
#: libtmux's `send_keys` would drop, quotes for the shell, and non-ASCII text.
TRICKY_TEXTS = [
    "$HOME and ${USER:-x} and $(echo no)",
    "^A ^C ^M ^[ ^^",
    "back\\slash \\n \\\\ \\015 \\",
    "it's a 'single' quote",
    'a "double" quote',
    "-leading dash",
    "--",
    "-X quit",
    "unicode: é ü ß 中文 😀 ∑",
    "`backticks` ; & | < > * ? ~ # % !wow",
    "%s %n %% %d %{",
    "two\nlines",
]


def printf_command(text: str, target: Path) -> str:
    """A shell command writing `text` (exactly) to `target`."""
    return f"printf '%s' {shlex.quote(text)} > {shlex.quote(str(target))}"


def input_eating_home(directory: Path) -> Path:
    """A HOME whose .bashrc starts slowly and throws away whatever was typed meanwhile, like a
    shell that is not ready yet: a command typed before the prompt is lost."""
    home = directory / "home"
    home.mkdir()
    (home / ".bashrc").write_text(
        "sleep 0.3\nwhile read -r -t 0; do read -r -t 0.05 _ || break; done\nPS1='ready$ '\n"
    )
    # tmux starts login shells, which read .bash_profile instead
    (home / ".bash_profile").write_text(". ~/.bashrc\n")
    return home
