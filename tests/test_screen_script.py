"""scriptlets/shell/screen_script.sh end to end, against a real screen (own SCREENDIR)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest

from core.sessions.screen import ScreenBackend
from tests.conftest import (
    BASH,
    TRICKY_TEXTS,
    attached_client,
    file_becomes,
    needs_screen,
    printf_command,
    read_bytes,
    wait_for,
)

SCRIPT = Path(__file__).resolve().parent.parent / "scriptlets" / "shell" / "screen_script.sh"

pytestmark = pytest.mark.skipif(BASH is None, reason="bash is not installed")


def run(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None):
    return subprocess.run(
        [BASH or "bash", str(SCRIPT), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=30,
    )


def listed(cwd: Path | None = None) -> dict[str, tuple[int, str]]:
    result = run("-l", cwd=cwd)
    assert result.returncode == 0, result.stderr
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    return {name: (int(pid), state) for name, pid, state in rows}


def test_script_is_executable_and_shellcheck_clean() -> None:
    assert SCRIPT.stat().st_mode & stat.S_IXUSR
    assert SCRIPT.read_text().startswith("#!/usr/bin/env bash\n")
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed")
    result = subprocess.run([shellcheck, str(SCRIPT)], capture_output=True, text=True)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_help() -> None:
    result = run("-h")
    assert result.returncode == 0
    for flag in ("-l", "-c NAME", "-k NAME", "-d NAME", "-s NAME COMMAND", "-r NAME", "-h"):
        assert flag in result.stdout
    assert "SCREEN_LOG_DIR" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "Usage:"),
        (("-x",), "unknown option '-x'"),
        (("-c",), "missing session name"),
        (("-c", "a b"), "invalid session name 'a b'"),
        (("-k", "web.1"), "invalid session name 'web.1'"),
        (("-s", "-rf"), "invalid session name '-rf'"),
        (("-s", "web"), "missing command"),
        (("-s", "web", "a", "b"), "-s takes two arguments"),
        (("-c", "web", "extra"), "-c takes one argument"),
        (("-l", "web"), "-l takes no arguments"),
    ],
)
def test_usage_errors_exit_2(args: tuple[str, ...], message: str) -> None:
    result = run(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stdout == ""


@needs_screen
@pytest.mark.parametrize("args", [("-k", "ghost"), ("-d", "ghost"), ("-s", "ghost", "echo hi")])
def test_missing_session_exits_1(screendir: str, args: tuple[str, ...]) -> None:
    result = run(*args)
    assert result.returncode == 1
    assert result.stderr.strip() == "screen_script.sh: no screen session named 'ghost'"


def test_screen_not_installed_exits_1(tmp_path: Path) -> None:
    result = run("-c", "web", env={**os.environ, "PATH": str(tmp_path)})
    assert result.returncode == 1
    assert "GNU screen is not installed (apt-get install screen)" in result.stderr


@needs_screen
def test_create_list_send_kill_with_exact_names(screendir: str, tmp_path: Path) -> None:
    assert listed() == {}
    created = run("-c", "web")
    assert created.returncode == 0, created.stderr
    assert run("-c", "web-frontend").returncode == 0
    sessions = listed()
    assert set(sessions) == {"web", "web-frontend"}
    assert {state for _, state in sessions.values()} == {"Detached"}
    assert f"({sessions['web'][0]}.web)" in created.stdout

    again = run("-c", "web")
    assert again.returncode == 1
    assert "screen session 'web' already exists" in again.stderr

    # the first command after -c arrives, and goes to "web", not "web-frontend"
    sent = run("-s", "web", f"echo $STY > {tmp_path}/sty")
    assert sent.returncode == 0, sent.stderr
    file_becomes(tmp_path / "sty", f"{sessions['web'][0]}.web\n".encode())

    killed = run("-k", "web")
    assert killed.returncode == 0, killed.stderr
    assert set(listed()) == {"web-frontend"}
    assert run("-k", "web").returncode == 1
    assert run("-k", "web-frontend").returncode == 0
    assert listed() == {}


@needs_screen
def test_send_is_byte_for_byte(screendir: str, tmp_path: Path) -> None:
    assert run("-c", "bytes").returncode == 0
    for index, text in enumerate(TRICKY_TEXTS):
        target = tmp_path / f"out{index}"
        result = run("-s", "bytes", printf_command(text, target))
        assert result.returncode == 0, result.stderr
        file_becomes(target, text.encode())


@needs_screen
def test_recreate_logs_and_flushes_at_once(screendir: str, tmp_path: Path) -> None:
    logs = tmp_path / "my logs"
    env = {**os.environ, "SCREEN_LOG_DIR": str(logs)}
    first = run("-r", "app", env=env)
    assert first.returncode == 0, first.stderr
    log = logs / "app.log"
    assert f"logging to {log}" in first.stdout
    assert log.stat().st_mode & 0o777 == 0o600
    assert logs.stat().st_mode & 0o777 == 0o700
    pid = listed()["app"][0]

    assert run("-s", "app", "echo log-marker-$((6*7))").returncode == 0
    started = time.monotonic()
    wait_for(lambda: b"log-marker-42" in (read_bytes(log) or b""), 2.0, "output in the log")
    assert time.monotonic() - started < 2.0

    second = run("-r", "app", env=env)  # kills the old session, starts a new one
    assert second.returncode == 0, second.stderr
    assert listed()["app"][0] != pid
    assert len(listed()) == 1


@needs_screen
def test_recreate_default_log_dir_is_relative_to_cwd(screendir: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SCREEN_LOG_DIR"}
    result = run("-r", "rel", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "logs" / "rel.log").exists()


@needs_screen
@pytest.mark.parametrize("planted", ["link", "open folder"])
def test_recreate_never_logs_through_a_link_or_an_open_folder(
    screendir: str,
    tmp_path: Path,
    planted: str,
) -> None:
    """screen appends to whatever the log path leads to: a link left there, or a folder
    anyone may write to (they could put one there), is refused and no session is made."""
    keys = tmp_path / "authorized_keys"
    keys.write_text("key\n")
    logs = tmp_path / "logs"
    logs.mkdir()
    if planted == "link":
        (logs / "app.log").symlink_to(keys)
        why = f"log file {logs / 'app.log'}: it is a symbolic link (not followed)"
    else:
        logs.chmod(0o777)
        why = f"log folder {logs}: writable by other users (mode 0777)"
    result = run("-r", "app", env={**os.environ, "SCREEN_LOG_DIR": str(logs)})
    assert (result.returncode, result.stderr) == (1, f"screen_script.sh: refusing {why}\n")
    assert "app" not in listed()
    assert keys.read_text() == "key\n"


@needs_screen
def test_detach(screendir: str) -> None:
    assert run("-c", "att").returncode == 0
    not_attached = run("-d", "att")
    assert not_attached.returncode == 0
    assert "not attached" in not_attached.stdout

    with attached_client(ScreenBackend(), "att") as client:
        assert listed()["att"][1] == "Attached"
        detached = run("-d", "att")
        assert detached.returncode == 0, detached.stderr
        assert "detached screen session 'att'" in detached.stdout
        assert listed()["att"][1] == "Detached"
        assert client.wait(timeout=5) == 0


@needs_screen
def test_script_and_adapter_see_the_same_sessions(screendir: str) -> None:
    ScreenBackend().create("from-python")
    assert run("-c", "from-script").returncode == 0
    assert set(listed()) == {"from-python", "from-script"}
    assert {s.name for s in ScreenBackend().list()} == {"from-python", "from-script"}


@needs_screen
def test_send_long_text(screendir: str, tmp_path: Path) -> None:
    # screen spins when it pastes more than ~4 KiB at once: the script sends pieces
    assert run("-c", "long").returncode == 0
    text = "x" * 999 + "é😀" * 3000 + "y" * 9000
    result = run("-s", "long", printf_command(text, tmp_path / "long"))
    assert result.returncode == 0, result.stderr
    file_becomes(tmp_path / "long", text.encode())
