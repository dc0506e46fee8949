"""The test suite's one home of shared helpers and fixtures (tests/tui_helpers.py adds the TUI's).

Everything here drives the real thing: recipes are written to ``tmp_path`` (with a
``pyproject.toml`` beside them, so ``tmp_path`` is the workspace root and Python step modules
written there import by their bare name), shell steps are real processes, and the command line
is run as a real ``orch-tui`` subprocess. Synchronisation is always a poll of something the
runner itself writes (state.json, events.jsonl, its in-memory state) with a deadline, never a
bare sleep. Each screen test gets its own SCREENDIR and each tmux test its own server; whatever a
test started is ended in teardown, pass or fail, and every multiplexer command run here has a
timeout (a screen server that stopped answering must fail one test, not hang the suite).
"""

from __future__ import annotations

import json
import os
import pty
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
_SCRIPT = Path(sys.executable).parent / "orch-tui"
#: How the command line is started: the installed console script when there is one.
ORCH = [str(_SCRIPT)] if _SCRIPT.exists() else [PY, "-m", "tui.cli"]


# ------------------------------------------------------------------------------------ files
def write_recipe(tmp_path: Path, yaml_text: str, name: str = "recipe.yaml") -> Path:
    """Write a recipe (dedented) and a ``pyproject.toml`` so ``tmp_path`` is the workspace."""
    pyproject = tmp_path / "pyproject.toml"
    if not pyproject.exists():
        pyproject.write_text("[project]\nname = 'recipe-test-workspace'\nversion = '0'\n")
    path = tmp_path / name
    path.write_text(textwrap.dedent(yaml_text).lstrip("\n"))
    return path


def write_module(tmp_path: Path, source: str, prefix: str = "steps") -> str:
    """Write a Python step module into the workspace; return its (unique) module name.

    Names are unique per call because in-process runners share ``sys.modules`` and every test's
    workspace lands on ``sys.path``.
    """
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source).lstrip("\n"))
    return name


def read_bytes(path: Path) -> bytes | None:
    """The file's bytes, or None while it does not exist."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def read_json(path: Path) -> Any:
    return json.loads(path.read_bytes())


def read_state(run_dir: Path) -> dict[str, Any]:
    return read_json(run_dir / "state.json")


def read_events(run_dir: Path) -> list[dict[str, Any]]:
    lines = (run_dir / "events.jsonl").read_bytes().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def event_index(events: list[dict[str, Any]], type_: str, step: str, **match: Any) -> int:
    """Position of the first event of ``type_`` for ``step`` (matching ``match``); fails if none."""
    for i, event in enumerate(events):
        if (
            event.get("type") == type_
            and event.get("step") == step
            and all(event.get(k) == v for k, v in match.items())
        ):
            return i
    raise AssertionError(f"no {type_} event for {step!r} {match or ''} in {events}")


def only_run_dir(cwd: Path) -> Path:
    """The single run directory under ``cwd/.orch/runs``. None there yet (.orch/runs is made a
    moment before it) is FileNotFoundError, which ``wait_for`` takes as "not yet"."""
    runs = sorted((cwd / ".orch" / "runs").iterdir())
    if not runs:
        raise FileNotFoundError(f"no run directory in {cwd / '.orch' / 'runs'} yet")
    assert len(runs) == 1, runs
    return runs[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------ waiting
def wait_for(
    predicate: Callable[[], Any], timeout: float = 10.0, message: str = "", interval: float = 0.02
) -> Any:
    """Poll ``predicate`` until it returns something truthy; return that. Fails at the deadline.

    Exceptions from the predicate (a file not written yet, half-read JSON) count as "not yet".
    """
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            value = predicate()
        except (OSError, ValueError, KeyError, psutil.Error) as exc:
            value, last_exc = None, exc
        if value:
            return value
        if time.monotonic() > deadline:
            detail = f" (last error: {last_exc!r})" if last_exc else ""
            pytest.fail(f"timed out after {timeout}s waiting for {message or predicate}{detail}")
        time.sleep(interval)  # polling interval, not synchronisation


def read_pid(path: Path, timeout: float = 10.0) -> int:
    """A pid a step wrote to ``path`` (waits until the file holds a whole number)."""
    return wait_for(lambda: int(path.read_text().strip()), timeout, f"a pid in {path}")


def file_becomes(path: Path, expected: bytes, timeout: float = 5.0) -> None:
    """Wait until ``path`` holds exactly ``expected``; fail showing what it holds instead."""
    deadline = time.monotonic() + timeout
    while read_bytes(path) != expected:
        if time.monotonic() >= deadline:
            pytest.fail(f"{path} holds {read_bytes(path)!r}, expected {expected!r}")
        time.sleep(0.01)  # polling interval, not synchronisation


# ------------------------------------------------------------------------------------ processes
def alive(pid: int) -> bool:
    """Running (a zombie counts as gone: it has already exited)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def assert_gone(pids: Iterable[int], timeout: float = 5.0) -> None:
    pids = list(pids)
    wait_for(
        lambda: not [p for p in pids if alive(p)],
        timeout,
        f"processes {[p for p in pids if alive(p)]} to be gone",
    )


def descendants(pid: int) -> list[int]:
    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def marked(run_dir: Path) -> list[int]:
    """Live processes carrying ``ORCH_RUN_DIR=<run_dir>`` (what the watchdog looks for)."""
    from core.watchdog import marked_pids

    return [p for p in marked_pids(str(run_dir.absolute())) if alive(p)]


def _kill_with_group(pid: int) -> None:
    """SIGKILL ``pid`` and its process group (never pytest's own group)."""
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return
    if pgid != os.getpgrp():
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
    with suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)


def kill_tree(proc: subprocess.Popen | int, extra: Iterable[int] = ()) -> None:
    """Clean-up, pass or fail: SIGKILL a process (a test's orch-tui, a screen server), what it
    started, the ``extra`` pids a test knows about (steps that left its tree), and the process
    group of each; then reap the Popen and wait (briefly) for the rest to go."""
    popen = proc if isinstance(proc, subprocess.Popen) else None
    root = popen.pid if popen is not None else int(proc)
    pids = set(extra)
    if popen is None or popen.poll() is None:  # a reaped child's pid may be someone else's now
        pids.update((root, *descendants(root)))
    for pid in pids:
        _kill_with_group(pid)
    if popen is not None:
        with suppress(subprocess.TimeoutExpired):
            popen.wait(timeout=5)
        pids.discard(root)
    deadline = time.monotonic() + 3
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.02)  # polling interval, not synchronisation


# ------------------------------------------------------------------------------ recipe cache
@pytest.fixture(scope="session", autouse=True)
def _recipe_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The tests' own cache of compiled recipes (core.recipe.cache), not the user's
    ~/.cache: in the environment, so orch-tui subprocesses use it too."""
    folder = tmp_path_factory.mktemp("xdg-cache")
    before = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(folder)
    try:
        yield folder
    finally:
        if before is None:
            os.environ.pop("XDG_CACHE_HOME", None)
        else:
            os.environ["XDG_CACHE_HOME"] = before


# ------------------------------------------------------------------------------------ the CLI
def _cli_env(env: dict[str, str] | None) -> dict[str, str]:
    full = dict(os.environ)
    # A run started from a step of another run must not look like part of it; and colour is
    # left to orch-tui's own decision (stdout is a pipe here), not forced from outside.
    for name in ("ORCH_RUN_DIR", "ORCH_STEP", "ORCH_CTX_OUT", "FORCE_COLOR", "CLICOLOR_FORCE"):
        full.pop(name, None)
    if env:
        full.update(env)
    return full


def run_cli(
    *args: str | os.PathLike,
    cwd: Path,
    timeout: float = 30.0,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``orch-tui ARGS`` to completion with stdout/stderr piped (so it runs headless)."""
    proc = start_cli(*args, cwd=cwd, env=env)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(proc)
        out, err = proc.communicate()
        pytest.fail(
            f"orch-tui {args} did not finish in {timeout}s:\n{out.decode()}\n{err.decode()}"
        )
    finally:
        kill_tree(proc)
    return subprocess.CompletedProcess(
        proc.args, proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
    )


def start_cli(
    *args: str | os.PathLike, cwd: Path, env: dict[str, str] | None = None, **popen: Any
) -> subprocess.Popen[bytes]:
    """Start ``orch-tui ARGS`` in its own session (signals sent to it never reach pytest);
    stdout and stderr are pipes unless ``popen`` says otherwise."""
    popen.setdefault("stdout", subprocess.PIPE)
    popen.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen(
        [*ORCH, *map(str, args)],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        env=_cli_env(env),
        start_new_session=True,
        **popen,
    )


# ------------------------------------------------------------------------------------ run daemons
@dataclass
class Daemon:
    """A run started with ``--detach``: its id, folder and daemon's pid."""

    run_id: str
    run_dir: Path
    pid: int


def start_detached(recipe: Path, *args: str | os.PathLike, cwd: Path, **popen: Any) -> Daemon:
    """``orch-tui RECIPE --detach ARGS``: the run it started in the background (clean it up with
    ``end_daemon``, or use the ``daemons`` fixture)."""
    proc = start_cli(recipe, "--detach", *args, cwd=cwd, **popen)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    words = out.decode().split()
    run_id, pid = words[1], int(words[words.index("(pid") + 1].rstrip(");"))
    given = [str(a) for a in args]
    folder = cwd / given[given.index("--run-dir") + 1] if "--run-dir" in given else None
    run_dir = folder or cwd / ".orch" / "runs" / run_id
    return Daemon(run_id, run_dir.absolute(), pid)


def end_daemon(daemon: Daemon) -> None:
    """Clean-up, pass or fail: SIGKILL the daemon and every process of its run."""
    with suppress(ProcessLookupError):
        os.kill(daemon.pid, signal.SIGKILL)
    for pid in marked(daemon.run_dir):
        _kill_with_group(pid)
    assert_gone([daemon.pid, *marked(daemon.run_dir)], 10)


def end_run(run_dir: Path) -> None:
    """Clean-up of a run ``orch-tui RECIPE`` started on a terminal: its daemon (the pid in its
    state.json, if that is a run daemon still) and every process of the run, SIGKILLed."""
    try:
        pid = read_state(run_dir)["pid"]
        daemon = "core.daemon" in psutil.Process(pid).cmdline()
    except (OSError, ValueError, KeyError, psutil.Error):
        daemon = False
    if daemon:
        end_daemon(Daemon("", run_dir.absolute(), pid))
    for left in marked(run_dir):
        _kill_with_group(left)


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    """Append every run daemon a test starts: each is killed after the test, with its steps."""
    started: list[Daemon] = []
    yield started
    for daemon in started:
        end_daemon(daemon)


#: A run whose ``slow`` step runs until it is killed (its pid in ``slow.pid``), ``later`` after it.
SLOW_RUN = """
steps:
  - {name: quick, type: shell, run: "true"}
  - {name: slow, type: shell, run: 'echo $$ > slow.pid; echo started; exec sleep 60'}
  - {name: later, type: shell, run: "true"}
"""


@contextmanager
def headless_at_slow(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """``orch-tui --no-ui`` of ``SLOW_RUN`` in ``tmp_path``, once its ``slow`` step runs: the
    process and the run folder (a test may SIGKILL the process: its state.json then says
    running for good). It and the step are killed afterwards, pass or fail."""
    proc = start_cli(write_recipe(tmp_path, SLOW_RUN), "--no-ui", cwd=tmp_path)
    step_pid = None
    try:
        step_pid = read_pid(tmp_path / "slow.pid")
        run_dir = only_run_dir(tmp_path)
        wait_for(lambda: read_state(run_dir)["steps"]["slow"]["status"] == "running")
        yield proc, run_dir
    finally:
        kill_tree(proc, [step_pid] if step_pid else [])


# ------------------------------------------------------------------------------------ in-process
@dataclass
class Finished:
    code: int
    runner: Any
    run_dir: Path

    @property
    def state(self) -> dict[str, Any]:
        return read_state(self.run_dir)

    @property
    def steps(self) -> dict[str, dict[str, Any]]:
        return self.state["steps"]

    @property
    def ctx(self) -> dict[str, Any]:
        return read_json(self.run_dir / "ctx.json")

    @property
    def events(self) -> list[dict[str, Any]]:
        return read_events(self.run_dir)

    def log(self, step: str) -> bytes:
        return (self.run_dir / "logs" / f"{step}.log").read_bytes()


def make_runner(tmp_path: Path, yaml_text: str, **kwargs: Any):
    """A Runner for the recipe (not started), its run directory ``tmp_path/run``."""
    from core.recipe import load_recipe
    from core.runner import Runner

    recipe = load_recipe(write_recipe(tmp_path, yaml_text))
    kwargs.setdefault("run_dir", tmp_path / "run")
    return Runner(recipe, **kwargs)


def stop_runner(runner) -> None:
    """Clean-up: end a runner that a failed test left running, killing its steps."""
    if runner.finished:
        return
    runner.stop_run(signal.SIGTERM)
    runner.stop_run(signal.SIGKILL, force=True)
    runner.wait(10)


def run_recipe(tmp_path: Path, yaml_text: str, *, timeout: float = 20.0, **kwargs: Any) -> Finished:
    """Run a recipe in-process (headless semantics) to the end."""
    runner = make_runner(tmp_path, yaml_text, **kwargs)
    runner.start()
    try:
        code = runner.wait(timeout)
        assert code is not None, f"run did not finish in {timeout}s: {runner.state()}"
    finally:
        stop_runner(runner)
    return Finished(code, runner, runner.run_dir)


@pytest.fixture
def runners():
    """Runners registered here are stopped (steps killed) at the end of the test, pass or fail."""
    started: list[Any] = []
    yield started
    for runner in started:
        stop_runner(runner)


# ------------------------------------------------------------------------------------ sessions
SCREEN = shutil.which("screen")
TMUX = shutil.which("tmux")
BASH = shutil.which("bash")
needs_screen = pytest.mark.skipif(SCREEN is None, reason="GNU screen is not installed")
needs_tmux = pytest.mark.skipif(TMUX is None, reason="tmux is not installed")

#: every multiplexer command run here is bounded: a screen server that stopped answering (its
#: socket's backlog full, so every client blocks in connect) must fail one test, not hang the suite
MULTIPLEXER_TIMEOUT = 10.0


def _session_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A UTF-8 locale and bash for the multiplexers and their shells; not inside any session."""
    monkeypatch.setenv("LANG", "C.UTF-8")
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    if BASH:
        monkeypatch.setenv("SHELL", BASH)
    for name in ("STY", "TMUX", "TMUX_PANE", "ORCH_RUN_ID"):
        monkeypatch.delenv(name, raising=False)


def run_screen(
    *args: str, screendir: str | None = None, check: bool = False
) -> subprocess.CompletedProcess[str]:
    """``screen ARGS`` (in ``screendir``, else $SCREENDIR), bounded by MULTIPLEXER_TIMEOUT."""
    env = dict(os.environ, SCREENDIR=screendir) if screendir else None
    return subprocess.run(
        [SCREEN or "screen", *args],
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=MULTIPLEXER_TIMEOUT,
        check=check,
    )


def _screen_targets(screendir: str) -> list[str]:
    """PID.NAME of every live session in ``screendir`` (never a bare pid: screen matches
    prefixes). Read from the directory's socket files, not from ``screen -ls``, which connects
    to every server and blocks on one that does not answer."""
    try:
        names = os.listdir(screendir)
    except FileNotFoundError:
        return []
    return [
        name
        for name in names
        if name.partition(".")[0].isdigit() and psutil.pid_exists(int(name.partition(".")[0]))
    ]


def end_screen_sessions(screendir: str) -> None:
    """Quit every session in ``screendir``, then kill what is left (server and its children):
    a server that does not answer ``quit`` in time is killed too."""
    for target in _screen_targets(screendir):
        with suppress(subprocess.TimeoutExpired):  # killed below
            run_screen("-S", target, "-X", "quit", screendir=screendir)
    deadline = time.monotonic() + 3
    while _screen_targets(screendir) and time.monotonic() < deadline:
        time.sleep(0.02)  # polling interval, not synchronisation
    for target in _screen_targets(screendir):
        kill_tree(int(target.split(".", 1)[0]))


def screen_sessions(screendir: str | None = None) -> list[tuple[int, str, str]]:
    """(pid, name, state) of each session ``screen -ls`` lists; state as screen words it
    ("Detached", "Attached", "Dead ???")."""
    sessions = []
    for line in run_screen("-ls", screendir=screendir).stdout.splitlines():
        if not line.startswith("\t"):
            continue
        fields = [field for field in line.strip().split("\t") if field]
        pid, _, name = fields[0].partition(".")
        if pid.isdigit():
            sessions.append((int(pid), name, fields[-1].strip("()")))
    return sessions


def screen_session_pids(screendir: str, name: str) -> list[int]:
    """pids of the live screen servers of sessions named exactly ``name`` in ``screendir``."""
    return [pid for pid, found, _ in screen_sessions(screendir) if found == name and alive(pid)]


@pytest.fixture
def screendir(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A private SCREENDIR for this test (in the environment); its sessions end afterwards."""
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


def _kill_tmux_server(*where: str) -> None:
    """``tmux -L NAME kill-server`` / ``tmux -S PATH kill-server``, bounded."""
    with suppress(subprocess.TimeoutExpired):
        subprocess.run(
            [TMUX or "tmux", *where, "kill-server"],
            capture_output=True,
            stdin=subprocess.DEVNULL,
            timeout=MULTIPLEXER_TIMEOUT,
        )


@pytest.fixture
def tmux_socket(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A tmux ``-L`` socket name of its own for this test; its server is killed afterwards."""
    if TMUX is None:
        pytest.skip("tmux is not installed")
    _session_env(monkeypatch)
    name = f"orchtest-{uuid.uuid4().hex[:12]}"
    try:
        yield name
    finally:
        _kill_tmux_server("-L", name)
        base = os.environ.get("TMUX_TMPDIR") or "/tmp"
        Path(base, f"tmux-{os.getuid()}", name).unlink(missing_ok=True)


@pytest.fixture
def tmux_tmpdir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private TMUX_TMPDIR: every tmux server started under it (the default one and each
    ``-L`` socket) is this test's alone, and is killed afterwards."""
    if TMUX is None:
        pytest.skip("tmux is not installed")
    _session_env(monkeypatch)
    directory = Path(tempfile.mkdtemp(prefix="orchtmx-", dir="/tmp"))  # socket paths: short
    monkeypatch.setenv("TMUX_TMPDIR", str(directory))
    try:
        yield directory
    finally:
        sockets = directory / f"tmux-{os.getuid()}"
        for path in sockets.iterdir() if sockets.is_dir() else []:
            _kill_tmux_server("-S", str(path))
        shutil.rmtree(directory, ignore_errors=True)


@contextmanager
def attached_client(backend: Any, name: str) -> Iterator[subprocess.Popen[bytes]]:
    """A terminal attached to session ``name``: the backend's attach command on a pty, until
    it is detached (or killed at the end)."""
    master, slave = pty.openpty()
    client = subprocess.Popen(
        backend.attach_argv(name),
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env={**os.environ, "TERM": "xterm"},
        start_new_session=True,
    )
    os.close(slave)
    try:
        wait_for(lambda: backend.get(name).state == "attached", 5, "the session to be attached")
        yield client
    finally:
        kill_tree(client)
        os.close(master)


#: Texts that must reach a session byte for byte: what screen's `stuff` would expand, what
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
    """A shell command writing ``text`` (exactly) to ``target``."""
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


# ------------------------------------------------------------------------------------ another user
@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int

    def do(self, action: Callable[[], object]) -> None:
        """Run ``action`` as this user (umask 0, as careless as can be), in a forked child."""
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 1
            try:
                os.setgroups([])
                os.setgid(self.gid)
                os.setuid(self.uid)
                os.umask(0)
                action()
                code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, "the attacker's own step failed"

    def argv(self, *argv: str) -> list[str]:
        """``argv`` as a command run by this user."""
        ids = [f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups"]
        return ["setpriv", *ids, *argv]


def _retrying(argv: list[str]) -> None:
    """useradd/userdel, again while another one holds the lock on /etc/passwd."""
    deadline = time.monotonic() + 30
    while True:
        result = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if result.returncode == 0:
            return
        if "lock" not in result.stderr or time.monotonic() > deadline:
            pytest.fail(f"{argv}: {result.stderr.strip()}")
        time.sleep(0.1)  # another process holds the lock: nothing to wait on but time


def _processes_of(uid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    found.append(int(entry))
            except OSError:
                continue
    return found


@pytest.fixture
def attacker() -> Iterator[User]:
    """A second local user, made for the test and removed after it, with whatever it started."""
    if os.geteuid() != 0:
        pytest.skip("needs root: makes a second user")
    if shutil.which("useradd") is None or shutil.which("setpriv") is None:
        pytest.skip("needs useradd and setpriv")
    name = f"orchx{uuid.uuid4().hex[:8]}"
    _retrying(["useradd", "--no-create-home", "--user-group", "--shell", "/bin/false", name])
    entry = pwd.getpwnam(name)
    try:
        yield User(name, entry.pw_uid, entry.pw_gid)
    finally:
        for pid in _processes_of(entry.pw_uid):  # only the user made for this test
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _retrying(["userdel", name])


@pytest.fixture
def shared() -> Iterator[Path]:
    """A folder everyone may write to, with the sticky bit, like /tmp."""
    folder = Path(tempfile.mkdtemp(prefix="orch-shared-", dir="/tmp"))
    os.chmod(folder, 0o1777)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# ------------------------------------------------------------------------------------ timeouts
# pytest-timeout (method "signal", timeout_func_only false) arms ONE SIGALRM for a test's setup,
# call and teardown together, and cancels it as soon as any phase fails (its
# pytest_exception_interact hook, meant for pdb). So a teardown that hangs after a failed or
# timed-out test (a multiplexer command that never returns) would hang the whole suite. These
# two hooks close that gap: the alarm repeats every ``timeout`` seconds until pytest-timeout
# cancels it after the teardown, and a teardown starting with no alarm gets a fresh one.
_TIMEOUT_SETTINGS = pytest.StashKey[Any]()


@pytest.hookimpl(hookwrapper=True)
def pytest_timeout_set_timer(item: pytest.Item, settings: Any):
    """Remember the test's timeout settings; make the SIGALRM repeat (each finaliser that hangs
    is interrupted in turn, not only the first)."""
    item.stash[_TIMEOUT_SETTINGS] = settings
    yield
    delay = signal.getitimer(signal.ITIMER_REAL)[0]
    if delay > 0 and callable(signal.getsignal(signal.SIGALRM)):
        signal.setitimer(signal.ITIMER_REAL, delay, settings.timeout)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item):
    """A teardown runs under a timeout even when the failure before it cancelled the alarm."""
    settings = item.stash.get(_TIMEOUT_SETTINGS, None)
    rearm = (
        settings is not None
        and settings.method == "signal"
        and not settings.func_only  # func_only: the teardown is deliberately not timed
        and signal.getitimer(signal.ITIMER_REAL)[0] == 0
    )
    if rearm:
        item.config.hook.pytest_timeout_set_timer(item=item, settings=settings)
    yield
