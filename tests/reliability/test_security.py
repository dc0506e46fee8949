"""Nothing runs that the recipe did not ask for; nothing is exposed that should not be.

* Only the text of a ``run:`` step reaches a shell. Every other value (cmd, args, cwd, env,
  exposed ctx values, step names, session commands) arrives literally; payloads that would
  create ``pwned-*`` files if a shell ever evaluated them must leave no such file.
* ctx values exposed to the environment cannot inject variables (newlines, ``=``), cannot
  override ``ORCH_*``; NUL cannot be exported and fails the step with a clear reason (once, this
  left the step "running" forever and the run hung); an oversized value fails it cleanly too.
* Session names are validated: a recipe error, exit 2, nothing runs.
* Run and log directories are 0700 and the files orch-tui writes 0600, even under umask 000;
  a run folder (or .orch) others could change is refused, a swapped one redirects nothing,
  no link is followed, and --resume-from uses no run others could have changed. What another
  real user can try is in test_hijack.py.
* The Dash step listens on 127.0.0.1 unless a recipe says otherwise.
* YAML is loaded safely: python tags are recipe errors and run nothing.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import time

import psutil
import pytest

from core.recipe import RecipeError, load_recipe
from tests.conftest import (
    PY,
    ROOT,
    free_port,
    kill_tree,
    make_runner,
    only_run_dir,
    read_state,
    run_cli,
    run_recipe,
    start_cli,
    wait_for,
    write_module,
    write_recipe,
)

PAYLOADS = [
    "$(touch pwned-1)",
    "`touch pwned-2`",
    "; touch pwned-3",
    "| touch pwned-4",
    "&& touch pwned-5",
    "\ntouch pwned-6\n",
    "$(IFS=_;cmd=touch_pwned-7;$cmd)",
    "() { :;}; touch pwned-8",
    "'; touch pwned-9; echo '",
    '"; touch pwned-10; echo "',
    "${IFS}touch${IFS}pwned-11",
    "* ? [a-z]",
]


def _no_pwned(tmp_path) -> None:
    found = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("pwned*"))
    assert not found, f"a payload was run by a shell: {found}"


def test_only_run_text_reaches_a_shell(tmp_path, faults):
    evil_dir = tmp_path / "$(touch pwned-cwd); `touch pwned-cwd2`"
    evil_dir.mkdir()
    setter = write_module(
        tmp_path,
        f"""
        def put(ctx):
            for i, payload in enumerate({PAYLOADS!r}):
                ctx[f"evil{{i}}"] = payload
        """,
    )
    names = [f"evil{i}" for i in range(len(PAYLOADS))]
    env = {f"E{i}": p for i, p in enumerate(PAYLOADS)}
    dump = "import json, os, sys; json.dump({'argv': sys.argv[1:], 'cwd': os.getcwd(), " + (
        "'env': {k: v for k, v in os.environ.items() if k.startswith(('E', 'evil', 'ORCH_S'))}}, "
        "open(os.path.join(os.environ['OUT'], sys.argv[1] + '.json'), 'w'))"
    )
    faults.tried("shell metacharacters in cmd/args/cwd/env/expose/names", len(PAYLOADS))
    result = run_recipe(
        tmp_path,
        f"""
        env: {json.dumps(env)}
        steps:
          - {{name: put, type: python, module: {setter}, function: put}}
          - name: args
            type: shell
            cmd: {json.dumps(PY)}
            args: {json.dumps(["-c", dump, "args", *PAYLOADS])}
            env: {{OUT: {json.dumps(str(tmp_path))}}}
            expose: {json.dumps(names)}
          - name: in_evil_cwd
            type: shell
            cmd: {json.dumps(PY)}
            args: ["-c", {json.dumps(dump)}, "cwd"]
            cwd: {json.dumps(evil_dir.name)}
            env: {{OUT: {json.dumps(str(tmp_path))}}}
          - name: "$(touch pwned-name) `touch pwned-name2`"
            type: shell
            cmd: {json.dumps(PY)}
            args: ["-c", {json.dumps(dump)}, "name"]
            env: {{OUT: {json.dumps(str(tmp_path))}}}
          - name: quoted_use_in_run
            type: shell
            expose: {json.dumps(names)}
            run: |
              for v in {" ".join(f'"${n}"' for n in names)}; do printf '[%s]\\n' "$v"; done
          # (a command line whose first word is a program is refused before the run:
          # tests/test_recipe.py; this one gets as far as starting)
          - name: cmd_is_not_a_command_line
            type: shell
            continue_on_error: true
            cmd: "no-such-program; touch pwned-cmd"
        """,
        timeout=30,
    )
    assert result.code == 0, result.steps
    _no_pwned(tmp_path)

    args = json.loads((tmp_path / "args.json").read_text())
    assert args["argv"] == ["args", *PAYLOADS]
    assert [args["env"][f"E{i}"] for i in range(len(PAYLOADS))] == PAYLOADS
    assert [args["env"][f"evil{i}"] for i in range(len(PAYLOADS))] == PAYLOADS
    cwd = json.loads((tmp_path / "cwd.json").read_text())
    assert cwd["cwd"] == str(evil_dir)
    name = json.loads((tmp_path / "name.json").read_text())
    assert name["env"]["ORCH_STEP"] == "$(touch pwned-name) `touch pwned-name2`"
    shown = result.log("quoted_use_in_run").decode()
    assert shown == "".join(f"[{p}]\n" for p in PAYLOADS)
    bad = result.steps["cmd_is_not_a_command_line"]
    assert bad["status"] == "failed" and "cannot start" in bad["reason"], bad
    # the odd step name became a safe log file name (no path tricks, no shell)
    logs = {p.name for p in (result.run_dir / "logs").iterdir()}
    assert all("/" not in n and not n.startswith(".") for n in logs), logs
    faults.survived("shell metacharacters in cmd/args/cwd/env/expose/names", len(PAYLOADS))


def test_session_command_is_typed_into_the_session_not_run_by_orch(tmp_path, screendir, faults):
    typed = "printf '%s\\n' '$HOME ^A \\ `touch pwned-typed` $(touch pwned-typed2)' > typed.txt"
    recipe = f"""
        steps:
          - name: make
            type: session
            action: recreate
            session: orchsec
            log: false
          - name: send
            type: session
            action: send
            session: orchsec
            command: {json.dumps(f"cd {tmp_path} && echo $$ > session-shell.pid && {typed}")}
        """
    faults.tried("session command with shell metacharacters")
    result = run_recipe(tmp_path, recipe, timeout=30)
    assert result.code == 0, (result.steps, result.log("send"))
    # typed into the session's own shell (a child of the screen server), which ran it there
    shell_pid = int(wait_for(lambda: (tmp_path / "session-shell.pid").read_text().strip()))
    server = psutil.Process(shell_pid).parent()
    assert "screen" in server.name().lower(), server
    assert os.getpid() not in [p.pid for p in psutil.Process(shell_pid).parents()]
    text = wait_for(lambda: (tmp_path / "typed.txt").read_text())
    assert text == "$HOME ^A \\ `touch pwned-typed` $(touch pwned-typed2)\n"
    _no_pwned(tmp_path)
    faults.survived("session command with shell metacharacters")


# ------------------------------------------------------------------------------ ctx -> env
INJECT = """
def put(ctx):
    ctx["multi"] = "line1\\nORCH_STEP=hacked\\nPATH=/nowhere\\n"
    ctx["equals"] = "a=b=c"
    ctx["ORCH_RUN_DIR"] = "/somewhere/else"
    ctx["ORCH_STEP"] = "hacked"
    ctx["structured"] = {"k": "$(touch pwned-json)", "n": [1, 2]}
"""


def test_exposed_ctx_values_cannot_inject(tmp_path, faults):
    module = write_module(tmp_path, INJECT)
    dump = "import json, os; json.dump(dict(os.environ), open('env.json', 'w'))"
    faults.tried("ctx values injecting into the environment", 5)
    result = run_recipe(
        tmp_path,
        f"""
        steps:
          - {{name: put, type: python, module: {module}, function: put}}
          - name: show
            type: shell
            expose: [multi, equals, ORCH_RUN_DIR, ORCH_STEP, structured]
            cmd: {json.dumps(PY)}
            args: ["-c", {json.dumps(dump)}]
        """,
    )
    assert result.code == 0, result.steps
    env = json.loads((tmp_path / "env.json").read_text())
    assert env["multi"] == "line1\nORCH_STEP=hacked\nPATH=/nowhere\n"
    assert env["equals"] == "a=b=c"
    assert env["ORCH_STEP"] == "show", "ORCH_* win over exposed ctx keys"
    assert env["ORCH_RUN_DIR"] == str(result.run_dir), "the watchdog's marker cannot be spoofed"
    assert env["PATH"] == os.environ["PATH"]
    assert json.loads(env["structured"]) == {"k": "$(touch pwned-json)", "n": [1, 2]}
    _no_pwned(tmp_path)
    faults.survived("ctx values injecting into the environment", 5)


def test_nul_or_oversized_exposed_value_fails_the_step_clearly(tmp_path, faults):
    module = write_module(
        tmp_path,
        """
        def put(ctx):
            ctx["nul"] = "before\\x00after"
            ctx["huge"] = "x" * 300_000
        """,
    )
    recipe = write_recipe(
        tmp_path,
        f"""
        steps:
          - {{name: put, type: python, module: {module}, function: put}}
          - {{name: use_nul, type: shell, expose: [nul], run: 'echo "$nul"'}}
          - {{name: after_nul, type: shell, run: touch after_nul.ran}}
          - {{name: use_huge, type: shell, depends_on: [put], expose: [huge], run: 'echo hi'}}
          - {{name: independent, type: shell, depends_on: [], run: 'echo fine'}}
        """,
    )
    faults.tried("NUL in an exposed ctx value")
    faults.tried("exposed ctx value larger than the kernel allows")
    started = time.monotonic()
    proc = start_cli(recipe, "--no-ui", cwd=tmp_path)
    try:
        out, err = proc.communicate(timeout=20)  # once, this hung forever
    finally:
        kill_tree(proc)
    assert time.monotonic() - started < 15
    assert proc.returncode == 1, out.decode() + err.decode()
    assert b"Traceback" not in err and b"scheduler error" not in err, err.decode()
    steps = read_state(only_run_dir(tmp_path))["steps"]
    assert steps["use_nul"]["status"] == "failed"
    assert "NUL" in steps["use_nul"]["reason"] and "nul" in steps["use_nul"]["reason"]
    assert steps["after_nul"]["status"] == "blocked"
    assert not (tmp_path / "after_nul.ran").exists()
    assert steps["use_huge"]["status"] == "failed"
    assert "cannot start" in steps["use_huge"]["reason"], steps["use_huge"]
    assert steps["independent"]["status"] == "succeeded"
    assert "NUL" in out.decode()  # the user is told why
    faults.survived("NUL in an exposed ctx value")
    faults.survived("exposed ctx value larger than the kernel allows")


# ------------------------------------------------------------------------------ session names
BAD_SESSION_NAMES = [
    "a;touch pwned",
    "web.1",
    "-x",
    "a b",
    "a\nb",
    "a" * 65,
    "..",
    "$(id)",
    "",
    "é",
    "a/b",
    "a:b",
]


@pytest.mark.parametrize("name", BAD_SESSION_NAMES, ids=range(len(BAD_SESSION_NAMES)))
def test_bad_session_names_are_recipe_errors(tmp_path, name, faults):
    faults.tried("invalid session name")
    path = write_recipe(
        tmp_path,
        f"""
        steps:
          - {{name: first, type: shell, run: touch ran}}
          - {{name: s, type: session, action: create, session: {json.dumps(name)}}}
        """,
    )
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert "session" in str(info.value) and "recipe.yaml:3" in str(info.value)
    faults.survived("invalid session name")


def test_bad_session_name_exits_2_and_runs_nothing(tmp_path, faults):
    faults.tried("invalid session name (command line)")
    path = write_recipe(
        tmp_path,
        """
        steps:
          - {name: first, type: shell, run: touch ran}
          - {name: s, type: session, action: create, session: "x; touch pwned"}
        """,
    )
    result = run_cli(path, "--no-ui", cwd=tmp_path)
    assert result.returncode == 2
    assert "recipe.yaml:3" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "ran").exists() and not (tmp_path / ".orch").exists()
    _no_pwned(tmp_path)
    faults.survived("invalid session name (command line)")


# ------------------------------------------------------------------------------ permissions
def test_run_files_private_even_under_umask_000(tmp_path, faults):
    module = write_module(tmp_path, "def put(ctx):\n    ctx['k'] = 'v'\n")
    recipe = write_recipe(
        tmp_path,
        f"""
        steps:
          - {{name: put, type: python, module: {module}, function: put}}
          - {{name: sh, type: shell, run: 'echo out; echo x=1 > "$ORCH_CTX_OUT"'}}
          - {{name: again, type: shell, retries: 1, run: 'test -f twice || {{ touch twice; exit 1; }}'}}
        """,
    )
    faults.tried("umask 000 while orch-tui writes its run directory")
    proc = start_cli(recipe, "--no-ui", cwd=tmp_path, umask=0)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, out.decode() + err.decode()
    run_dir = only_run_dir(tmp_path)
    loose = []
    # every folder and every file orch-tui made; an ORCH_CTX_OUT is the step's own file (made
    # with its umask), reachable only through ctx_out/, which is 0700 like every folder
    made_by_steps = set(run_dir.glob("ctx_out/*"))
    assert made_by_steps, "the step wrote its ORCH_CTX_OUT"
    for path in [run_dir, *run_dir.rglob("*")]:
        if path in made_by_steps:
            continue
        mode = stat.S_IMODE(path.lstat().st_mode)
        want = 0o700 if path.is_dir() else 0o600
        if mode != want:
            loose.append(f"{path.relative_to(tmp_path)} {mode:o} (want {want:o})")
    assert not loose, loose
    faults.survived("umask 000 while orch-tui writes its run directory")


@pytest.mark.parametrize("planted", ["open to others", "a link"])
def test_an_orch_folder_others_could_change_is_refused(tmp_path, planted, faults):
    """Anyone may write to a folder that is 0777 (as a careless umask, or an old bench, left
    .orch): they could put links in it or swap its runs. orch-tui refuses it, exit 2."""
    recipe = write_recipe(tmp_path, "steps:\n  - {name: a, type: shell, run: 'touch ran'}\n")
    orch, elsewhere = tmp_path / ".orch", tmp_path / "elsewhere"
    elsewhere.mkdir()
    if planted == "a link":
        orch.symlink_to(elsewhere)
        why = "is a symbolic link (not followed)"
    else:
        orch.mkdir()
        orch.chmod(0o777)
        why = "writable by other users (mode 0777)"
    faults.tried(f".orch {planted}")
    result = run_cli(recipe, "--no-ui", cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr == (
        f"orch-tui: {orch}: {why}: another user could take over the run's files there; "
        "give --run-dir a folder of yours\n"
    )
    assert not (tmp_path / "ran").exists() and list(elsewhere.iterdir()) == []
    faults.survived(f".orch {planted}")


def test_a_run_dir_under_a_folder_others_may_write_to_is_refused(tmp_path, faults):
    recipe = write_recipe(tmp_path, "steps:\n  - {name: a, type: shell, run: 'touch ran'}\n")
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # not sticky: anyone could rename the run's folder and put theirs
    faults.tried("--run-dir in a folder others may write to")
    result = run_cli(recipe, "--no-ui", "--run-dir", shared / "run", cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"{shared / 'run'}: {shared} is writable by other users (mode 0777)" in result.stderr
    assert not (tmp_path / "ran").exists() and not (shared / "run").exists()
    faults.survived("--run-dir in a folder others may write to")


def test_a_run_folder_swapped_during_the_run_redirects_nothing(tmp_path, runners, faults):
    """The run folder is held open: renamed away and replaced by a decoy full of links, it
    still gets every file, and nothing of the decoy is followed or read."""
    keys = tmp_path / "authorized_keys"
    keys.write_text("ssh-ed25519 KEY victim\n")
    runner = make_runner(
        tmp_path,
        """
        steps:
          - {name: first, type: shell, run: 'until [ -f go ]; do sleep 0.02; done'}
          - {name: second, type: shell, run: 'echo second output; echo k=v > "$ORCH_CTX_OUT"'}
        """,
    )
    runners.append(runner)
    runner.start()
    wait_for(lambda: runner.state()["steps"]["first"]["status"] == "running")
    faults.tried("run folder swapped for a decoy during the run")
    run_dir, moved = runner.run_dir, tmp_path / "moved"
    run_dir.rename(moved)
    for sub in ("logs", "ctx_out"):
        (run_dir / sub).mkdir(parents=True)
    (run_dir / "logs" / "second.log").symlink_to(keys)
    (run_dir / "state.json").symlink_to(keys)
    (run_dir / "ctx_out" / "second.log.1.env").write_text("token=decoy\n")
    (tmp_path / "go").touch()
    assert runner.wait(20) == 0, runner.state()
    assert keys.read_text() == "ssh-ed25519 KEY victim\n"
    assert (moved / "logs" / "second.log").read_text() == "second output\n"
    assert read_state(moved)["status"] == "succeeded"
    assert "token" not in runner.ctx and "k" not in runner.ctx  # the step wrote to the decoy
    faults.survived("run folder swapped for a decoy during the run")


def test_a_ctx_out_replaced_by_a_link_is_not_followed(tmp_path, faults):
    secret = tmp_path / "secret.env"
    secret.write_text("password=hunter2\n")
    faults.tried("ORCH_CTX_OUT replaced by a link")
    result = run_recipe(
        tmp_path,
        f"""
        steps:
          - name: link
            type: shell
            run: 'ln -s {secret} "$ORCH_CTX_OUT"'
        """,
    )
    step = result.steps["link"]
    assert step["status"] == "failed", step
    assert step["reason"] == "step 'link': ORCH_CTX_OUT: is a symbolic link (not followed)"
    assert "password" not in result.ctx
    faults.survived("ORCH_CTX_OUT replaced by a link")


@pytest.mark.parametrize("planted", ["a link", "a folder open to others"])
def test_a_session_log_path_through_a_link_or_an_open_folder_is_refused(tmp_path, planted, faults):
    """screen and tmux open a session's log by its path: a link there, or a folder anyone may
    write to (they could put one there), would send the session's output elsewhere."""
    from core.sessions.base import SessionError, prepare_log_path

    keys = tmp_path / "authorized_keys"
    keys.write_text("key\n")
    if planted == "a link":
        log = tmp_path / "session.log"
        log.symlink_to(keys)
        why = f"{log}: is a symbolic link (not followed)"
    else:
        shared = tmp_path / "shared"
        shared.mkdir()
        shared.chmod(0o777)
        log = shared / "logs" / "session.log"
        why = f"{log.parent}: {shared} is writable by other users (mode 0777)"
    faults.tried(f"session log path through {planted}")
    with pytest.raises(SessionError) as refused:
        prepare_log_path(log)
    assert str(refused.value) == why
    assert keys.read_text() == "key\n" and not (tmp_path / "shared" / "logs").exists()
    faults.survived(f"session log path through {planted}")


@pytest.mark.parametrize("planted", ["a link to a run", "a run folder open to others"])
def test_resume_uses_no_run_others_could_have_changed(tmp_path, planted, faults):
    recipe = write_recipe(
        tmp_path,
        "steps:\n  - {name: a, type: shell, run: 'true'}\n  - {name: b, type: shell, run: 'true'}\n",
    )
    assert run_cli(recipe, "--no-ui", cwd=tmp_path).returncode == 0
    run_dir = only_run_dir(tmp_path)
    if planted == "a link to a run":
        run_dir.rename(tmp_path / "elsewhere")
        run_dir.symlink_to(tmp_path / "elsewhere")
    else:
        run_dir.chmod(0o777)
    faults.tried(f"--resume-from with {planted}")
    result = run_cli(recipe, "--no-ui", "--resume-from", "b", cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "no earlier run of recipe.yaml" in result.stderr
    faults.survived(f"--resume-from with {planted}")


# ------------------------------------------------------------------------------ listeners
def _non_loopback_addresses() -> list[str]:
    addresses = []
    for entries in psutil.net_if_addrs().values():
        for entry in entries:
            if entry.family == socket.AF_INET and not entry.address.startswith("127."):
                addresses.append(entry.address)
    return addresses


def _listeners(pid: int, port: int) -> list[str]:
    return [
        c.laddr.ip
        for c in psutil.Process(pid).net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN and c.laddr.port == port
    ]


def _unreachable_from_outside(port: int) -> None:
    for address in _non_loopback_addresses():
        with socket.socket() as s:
            s.settimeout(2)
            assert s.connect_ex((address, port)) != 0, f"port {port} answers on {address}"


def test_dash_step_listens_on_loopback_only(tmp_path, runners, faults):
    port = free_port()
    runner = make_runner(
        tmp_path,
        f"""
        ctx: {{new_row: [[1.0, 2.0]]}}
        steps:
          - name: dash
            type: python
            module: scriptlets.python.apps.hello_dash
            background: true
            ready: {{port: {port}, timeout: 60}}
            params: {{port: {port}, ctx_key: new_row}}
        """,
        interactive=True,
    )
    runners.append(runner)
    faults.tried("Dash step listening address")
    runner.start()
    wait_for(lambda: runner.state()["steps"]["dash"]["status"] == "ready", 60, "dash ready")
    me = os.getpid()
    assert _listeners(me, port) == ["127.0.0.1"]
    _unreachable_from_outside(port)
    # and nothing else of the run listens anywhere but on loopback
    others = [
        c.laddr
        for c in psutil.Process(me).net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN and c.laddr.ip not in ("127.0.0.1", "::1")
    ]
    assert not others, others
    runner.close()  # the dashboard is stopped with the run, and its port is closed
    assert runner.wait(20) == 0, runner.state()
    assert runner.state()["steps"]["dash"]["status"] == "stopped"
    wait_for(lambda: not _listeners(me, port), 10, f"port {port} closed")
    faults.survived("Dash step listening address")


def test_dash_command_line_listens_on_loopback_by_default(tmp_path, faults):
    port = free_port()
    script = ROOT / "scriptlets" / "python" / "apps" / "hello_dash.py"
    proc = subprocess.Popen(
        [PY, str(script), "--port", str(port), "--demo-rows", "5"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    faults.tried("Dash command line listening address")
    try:
        ips = wait_for(lambda: _listeners(proc.pid, port), 60, "the dashboard to listen")
        assert ips == ["127.0.0.1"]
        _unreachable_from_outside(port)
        faults.survived("Dash command line listening address")
    finally:
        kill_tree(proc)


# ------------------------------------------------------------------------------ YAML
TAGS = [
    "!!python/object/apply:os.system ['touch pwned-yaml']",
    "!!python/object/new:subprocess.Popen [['touch', 'pwned-yaml']]",
    "!!python/name:os.system ''",  # a value after the tag: a flow "}" cannot end a tag
    "!!python/module:os ''",
    "!!python/tuple [1, 2]",
    "!!set {a, b}",
    "!custom thing",
]


@pytest.mark.parametrize("where", ["run", "ctx", "params", "env", "key", "steps"])
@pytest.mark.parametrize("tag", TAGS, ids=range(len(TAGS)))
def test_yaml_tags_are_recipe_errors(tmp_path, tag, where, faults):
    faults.tried("unsafe YAML tag")
    module = write_module(tmp_path, "def run(ctx, x=None):\n    pass\n")
    body = {
        "run": f"steps:\n  - {{name: a, type: shell, run: {tag}}}\n",
        "ctx": f"ctx: {{k: {tag}}}\nsteps:\n  - {{name: a, type: shell, run: x}}\n",
        "params": f"steps:\n  - {{name: a, type: python, module: {module}, params: {{x: {tag}}}}}\n",
        "env": f"env: {{A: {tag}}}\nsteps:\n  - {{name: a, type: shell, run: x}}\n",
        "key": f"steps:\n  - {{name: a, type: shell, run: x, ? {tag} : 1}}\n",
        "steps": f"steps: {tag}\n",
    }[where]
    path = write_recipe(tmp_path, body)
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    # the error names the tag (what is wrong with it) and where it is
    text, at = path.read_text(), path.read_text().index(tag)
    line, column = text.count("\n", 0, at) + 1, at - text.rfind("\n", 0, at)
    step = "step 'a': " if where in ("run", "params", "key") else ""
    if where == "key" and tag.endswith(("]", "}")):  # a list or mapping as a key: refused as such
        message = "mapping keys must be plain values, not lists or mappings"
    else:
        message = f"YAML tag '{tag.split()[0]}' is not allowed: a recipe holds plain data"
    assert str(info.value).startswith(f"{path}:{line}:{column}: {step}{message}"), str(info.value)
    _no_pwned(tmp_path)
    faults.survived("unsafe YAML tag")


def test_python_tag_through_the_command_line_runs_nothing(tmp_path, faults):
    faults.tried("unsafe YAML tag (command line)")
    path = write_recipe(
        tmp_path,
        """
        steps:
          - {name: first, type: shell, run: touch ran}
          - name: evil
            type: shell
            run: !!python/object/apply:os.system ["touch pwned-cli"]
        """,
    )
    for args in (["validate", path], [path, "--no-ui"]):
        result = run_cli(*args, cwd=tmp_path)
        assert result.returncode == 2, result
        assert "python/object/apply" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "ran").exists()
    _no_pwned(tmp_path)
    faults.survived("unsafe YAML tag (command line)")
