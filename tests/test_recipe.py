"""The recipe loader: both file shapes, every kind of mistake located by file:line and step,
unsafe YAML refused without being run, and the JSON schema made from the same model."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
import yaml

from core.recipe import (
    READY_FIELDS,
    RECIPE_FIELDS,
    SESSION_ACTIONS,
    STEP_FIELDS,
    Problem,
    Readiness,
    Recipe,
    RecipeError,
    ShellStep,
    find_workspace,
    load_recipe,
    recipe_json_schema,
    source,
)
from tests.conftest import ORCH, only_run_dir, read_state, run_cli, run_recipe, write_module


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A workspace (pyproject.toml beside the recipe) whose sys.path entry is undone afterwards."""
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(ws: Path, text: str, name: str = "r.yaml") -> Path:
    path = ws / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def module(ws: Path, source: str) -> str:
    """A fresh module in the workspace; unique names keep sys.modules from leaking between tests."""
    name = f"stepmod_{uuid.uuid4().hex[:12]}"
    (ws / f"{name}.py").write_text(textwrap.dedent(source))
    return name


def errors(path: Path, **kwargs: object) -> RecipeError:
    with pytest.raises(RecipeError) as info:
        load_recipe(path, **kwargs)  # type: ignore[arg-type]
    return info.value


# ------------------------------------------------------------------------------------------
# Good recipes


def test_list_shape_runs_top_to_bottom(ws: Path) -> None:
    path = write(
        ws,
        """
        - name: a
          type: shell
          run: echo a
        - name: b
          type: shell
          cmd: echo
          args: [1, true, x]
        - name: c
          type: shell
          run: echo c
          depends_on: []
        """,
    )
    recipe = load_recipe(path)
    assert isinstance(recipe, Recipe)
    assert recipe.path == path and recipe.path.is_absolute()
    assert recipe.workspace == ws
    a, b, c = recipe.steps
    assert (a.index, a.line, a.depends_on, a.explicit_deps) == (0, 1, (), False)
    assert (b.index, b.line, b.depends_on, b.explicit_deps) == (1, 4, ("a",), False)
    assert (c.index, c.line, c.depends_on, c.explicit_deps) == (2, 8, (), True)
    assert b.cmd == "echo" and b.args == ("1", "true", "x") and b.run is None
    assert a == ShellStep(name="a", index=0, line=1, depends_on=(), run="echo a")
    assert a.type == "shell" and isinstance(a, ShellStep)


def test_mapping_shape_with_every_step_type(ws: Path) -> None:
    mod = module(ws, "def run(ctx, n, label='x', *, stop=None, log=None):\n    return n\n")
    path = write(
        ws,
        f"""
        name: demo
        description: all three step types
        env: {{DEBUG: true, LEVEL: 3, NAME: x}}
        ctx: {{rows: [1, 2.5, null], nested: {{ok: true}}}}
        jobs: 2
        steps:
          - name: init
            type: python
            module: {mod}
            params: {{n: 3}}
            output: result
            retries: 2
            retry_delay: 0.5
          - name: web
            type: shell
            run: python3 -m http.server 8000
            background: true
            ready: {{port: 8000, timeout: 10}}
            grace: 1
            env: {{PORT: 8000}}
            expose: [result]
          - name: attach
            type: session
            backend: tmux
            socket: orch.test
            action: send
            session: dash_1
            command: echo hi
            log: true
            depends_on: init
            continue_on_error: true
            timeout: 5
        """,
    )
    recipe = load_recipe(path)
    assert (recipe.name, recipe.description, recipe.jobs) == ("demo", "all three step types", 2)
    assert recipe.env == {"DEBUG": "true", "LEVEL": "3", "NAME": "x"}
    assert recipe.ctx == {"rows": [1, 2.5, None], "nested": {"ok": True}}
    init, web, attach = recipe.steps
    assert (init.module, init.function, init.params, init.output) == (
        mod,
        "run",
        {"n": 3},
        "result",
    )
    assert (init.retries, init.retry_delay, init.depends_on, init.line) == (2, 0.5, (), 7)
    assert web.depends_on == ("init",) and web.background and web.grace == 1.0
    assert web.ready == Readiness(port=8000, host="127.0.0.1", timeout=10.0)
    assert (web.ready.kind, web.ready.value) == ("port", 8000)
    assert web.env == {"PORT": "8000"} and web.expose == ("result",)
    assert attach.depends_on == ("init",) and attach.explicit_deps
    assert (attach.backend, attach.socket, attach.action, attach.session) == (
        "tmux",
        "orch.test",
        "send",
        "dash_1",
    )
    assert attach.command == "echo hi" and attach.log is True and attach.continue_on_error
    assert attach.timeout == 5.0
    assert recipe.deps == {"init": (), "web": ("init",), "attach": ("init",)}


def test_ready_kinds_and_yaml_merge_keys(ws: Path) -> None:
    path = write(
        ws,
        """
        - &shell {name: a, type: shell, run: x, background: true, ready: {log: 'listening on \\d+'}}
        - {<<: *shell, name: b, ready: {ctx: url}}
        - {<<: *shell, name: c, ready: {delay: 0}}
        """,
    )
    a, b, c = load_recipe(path).steps
    assert a.ready == Readiness(log=r"listening on \d+")
    assert (b.ready, b.run, b.depends_on) == (Readiness(ctx="url"), "x", ("a",))
    assert c.ready == Readiness(delay=0.0)
    assert [(s.ready.kind, s.ready.value) for s in (b, c)] == [("ctx", "url"), ("delay", 0.0)]


def test_x_keys_are_where_anchors_live_and_are_ignored(ws: Path) -> None:
    """As in docker-compose: the recipe's and a step's ``x-...`` keys are extension fields,
    a home for YAML anchors; any other unknown key stays an error."""
    path = write(
        ws,
        """
        x-common: &common {type: shell, timeout: 10}
        x-notes: [free, text]
        steps:
          - {<<: *common, name: a, cmd: echo, args: [hi], x-owner: ops}
          - {<<: *common, name: b, run: echo there}
        """,
    )
    recipe = load_recipe(path)
    assert [(s.name, s.timeout) for s in recipe.steps] == [("a", 10.0), ("b", 10.0)]
    assert recipe.warnings == ()
    path.write_text(path.read_text().replace("x-common", "common"))
    assert [(p.line, p.message) for p in errors(path).problems] == [
        (1, "unknown field 'common' (keys starting with x- are ignored: for YAML anchors)")
    ]
    path.write_text(path.read_text().replace("x-owner", "owner"))
    problems = [(p.step, p.message.split(" (")[0]) for p in errors(path).problems]
    assert ("a", "unknown field 'owner'") in problems


def test_a_field_left_out_gets_the_default_the_schema_shows(ws: Path) -> None:
    """What an editor shows as a field's default is what the runner gets when it is left out."""
    written = [
        {"name": "p", "type": "python", "module": module(ws, "def run(ctx):\n    pass\n")},
        {"name": "s", "type": "shell", "run": "x", "background": True, "ready": {"port": 1}},
        {"name": "t", "type": "session", "action": "kill", "session": "x"},
    ]
    recipe = load_recipe(write(ws, json.dumps({"steps": written})))
    defs = json.loads(json.dumps(recipe_json_schema()))["$defs"]  # as an editor reads it

    def defaults(struct: str) -> dict[str, object]:
        props = defs[struct]["properties"]
        return {name: prop["default"] for name, prop in props.items() if "default" in prop}

    def plain(value: object) -> object:
        return list(value) if isinstance(value, tuple) else value

    assert defaults("PythonStep")["function"] == "run"
    for step, fields in zip(recipe.steps, written, strict=True):
        for name, default in defaults(type(step).__name__).items():
            if name not in fields:
                assert plain(getattr(step, name)) == default, (step.name, name)
    ready = recipe.steps[1].ready
    assert {"host": ready.host, "interval": ready.interval, "timeout": ready.timeout} == defaults(
        "Readiness"
    )
    assert {k: getattr(recipe, k) for k in RECIPE_FIELDS if k != "steps"} == {
        **defaults("RecipeFile"),
        "jobs": None,
        "executor": None,
    }


def test_service_fields_load_with_their_defaults(ws: Path) -> None:
    recipe = load_recipe(
        write(
            ws,
            """
            - {name: plain, type: shell, run: x, background: true, restart: no}
            - name: web
              type: shell
              run: x
              background: true
              restart: on_failure
              health: {http: "http://127.0.0.1:8050/", start_period: 10}
            """,
        )
    )
    plain, web = recipe.steps
    assert plain.restart == "no"  # YAML reads an unquoted no as false: it means no
    assert (plain.restart_delay, plain.max_restarts, plain.health) == (1.0, None, None)
    assert web.restart == "on_failure" and web.health is not None
    health = web.health
    assert (health.kind, health.value) == ("http", "http://127.0.0.1:8050/")
    assert (health.interval, health.timeout, health.failures, health.start_period) == (
        5.0,
        2.0,
        3,
        10.0,
    )


# ------------------------------------------------------------------------------------------
# Mistakes: each one located by file:line and step

GOOD_A = "- {name: a, type: shell, run: x}\n"

CASES = [
    pytest.param(
        GOOD_A + "- name: b\n  type: shell\n  run: x\n  dependson: [a]\n",
        5,
        "step 'b'",
        "unknown field 'dependson' (did you mean 'depends_on'?)",
        id="unknown-field",
    ),
    pytest.param(  # the YAML parser's own words ("cannot start any token") do not say it
        GOOD_A + "- name: b\n  type: shell\n\trun: x\n",
        4,
        "step 'b'",
        "invalid YAML: a tab character; YAML indents with spaces only",
        id="tab-indent",
    ),
    pytest.param(  # a syntax error too names the step it is in
        GOOD_A + "- name: 'b c'\n  type: shell\n  run: [x\n",
        4,  # where the list opens, not the end of the file where the parser stopped
        "step 'b c'",
        "invalid YAML:",
        id="yaml-syntax-in-step",
    ),
    pytest.param(  # 'command' is a session step's: the shell step's own field is offered
        "- name: a\n  type: shell\n  comand: ls\n",
        3,
        "step 'a'",
        "unknown field 'comand' (did you mean 'cmd'?)",
        id="unknown-field-of-its-type",
    ),
    pytest.param(
        "- name: a\n  type: python\n  modul: os\n",
        3,
        "step 'a'",
        "unknown field 'modul' (did you mean 'module'?)",
        id="unknown-field-python",
    ),
    pytest.param(
        "- name: a\n  type: shell\n  run: x\n  retries: three\n",
        4,
        "step 'a'",
        "field 'retries' must be an integer >= 0, got 'three'",
        id="wrong-type",
    ),
    pytest.param(
        "- name: a\n  type: shell\n  run: x\n  retries: 100000000000000000000000\n",
        4,
        "step 'a'",
        "field 'retries' must be at most 10000, got 100000000000000000000000",
        id="retries-past-any-use",
    ),
    pytest.param(
        "- name: a\n  type: shell\n  cmd: ' '\n",
        3,
        "step 'a'",
        "cmd: ' ' not found on PATH",
        id="blank-cmd",
    ),
    pytest.param(
        "- name: a\n  type: shell\n  run: x\n  background: true\n  restart: always\n"
        "  max_restarts: 10001\n",
        6,
        "step 'a'",
        "field 'max_restarts' must be at most 10000, got 10001",
        id="max-restarts-past-any-use",
    ),
    pytest.param(
        "- name: a\n  type: shell\n  run: x\n  retries: true\n",
        4,
        "step 'a'",
        "field 'retries' must be an integer >= 0, got true",
        id="bool-is-not-int",
    ),
    pytest.param(
        GOOD_A + "- type: shell\n  run: x\n",
        2,
        "step #2",
        "missing required field 'name'",
        id="no-name",
    ),
    pytest.param(
        "- name: a/b\n  type: shell\n  run: x\n",
        1,
        "step #1",
        "field 'name' must be",
        id="bad-name",
    ),
    pytest.param(
        "- name: '..'\n  type: shell\n  run: x\n", 1, "step #1", "not '.' or '..'", id="dotdot"
    ),
    pytest.param(
        "- name: a\n  type: pyhton\n", 2, "step 'a'", "did you mean 'python'?", id="bad-type"
    ),
    pytest.param(
        "- name: a\n  type: python\n  module: os\n  cmd: ls\n",
        4,
        "step 'a'",
        "field 'cmd' is for shell steps, not python steps",
        id="other-type-field",
    ),
    pytest.param(
        "- name: a\n  type: shell\n  cmd: ls\n  run: ls\n",
        4,
        "step 'a'",
        "use either 'cmd' or 'run', not both",
        id="cmd-and-run",
    ),
    pytest.param(
        "- name: a\n  type: shell\n",
        1,
        "step 'a'",
        "needs 'cmd' (with 'args') or 'run'",
        id="no-cmd",
    ),
    pytest.param(
        "- name: a\n  type: shell\n  run: x\n  restart: always\n",
        4,
        "step 'a'",
        "field 'restart: always' needs 'background: true'",
        id="restart-not-background",
    ),
    pytest.param(
        "- name: a\n  type: shell\n  run: x\n  background: true\n  restart: allways\n",
        5,
        "step 'a'",
        "field 'restart' must be one of no, on_failure, always, got 'allways' "
        "(did you mean 'always'?)",
        id="restart-policy",
    ),
    pytest.param(
        "- name: a\n  type: shell\n  run: x\n  background: true\n  restart: yes\n",
        5,
        "step 'a'",
        "field 'restart' must be one of no, on_failure, always, got true (YAML reads an unquoted "
        "yes, no, on or off as a boolean: write one of these words)",
        id="restart-yes-read-as-a-boolean",
    ),
    pytest.param(
        "- name: a\n  type: session\n  session: x\n  action: kill\n  backend: on\n",
        5,
        "step 'a'",
        "field 'backend' must be one of screen, tmux, got true (YAML reads an unquoted "
        "yes, no, on or off as a boolean: write one of these words)",
        id="backend-on-read-as-a-boolean",
    ),
    pytest.param(
        "- name: a\n  type: shell\n  run: x\n  background: true\n  restart: on_failure\n"
        "  retries: 2\n",
        6,
        "step 'a'",
        "field 'retries' does not go with 'restart'",
        id="restart-and-retries",
    ),
    pytest.param(
        "- name: a\n  type: shell\n  run: x\n  background: true\n  max_restarts: 3\n",
        5,
        "step 'a'",
        "field 'max_restarts' goes with 'restart: on_failure' or 'restart: always'",
        id="max-restarts-without-restart",
    ),
    pytest.param(
        "- name: a\n  type: shell\n  run: x\n  background: true\n  restart: always\n"
        "  max_restarts: -1\n",
        6,
        "step 'a'",
        "field 'max_restarts' must be an integer >= 0, got -1",
        id="max-restarts-negative",
    ),
    pytest.param(
        "- name: a\n  type: shell\n  run: x\n  background: true\n  restart: always\n"
        "  restart_delay: soon\n",
        6,
        "step 'a'",
        "field 'restart_delay' must be a number >= 0, got 'soon'",
        id="restart-delay",
    ),
    pytest.param(
        "- name: a\n  type: session\n  action: kill\n  session: s\n  background: true\n"
        "  restart: always\n",
        6,
        "step 'a'",
        "field 'restart' is not for session steps",
        id="restart-session",
    ),
    # the fields of the tools a recipe is moved from (process-compose, docker compose, tmuxp):
    # spelling is no guide, start_directory was "did you mean 'restart_delay'?"
    pytest.param(
        "- name: a\n  type: session\n  action: create\n  session: s\n  start_directory: /tmp\n",
        5,
        "step 'a'",
        "unknown field 'start_directory' (did you mean 'cwd'?)",
        id="peer-start-directory",
    ),
    pytest.param(
        "- name: a\n  type: shell\n  run: x\n  background: true\n  readiness_probe: {}\n",
        5,
        "step 'a'",
        "unknown field 'readiness_probe' (did you mean 'ready'?)",
        id="peer-readiness-probe",
    ),
    pytest.param(
        "- name: a\n  type: shell\n  run: x\n  environment: {A: b}\n",
        4,
        "step 'a'",
        "unknown field 'environment' (did you mean 'env'?)",
        id="peer-environment",
    ),
    pytest.param(
        "- name: a\n  type: session\n  action: create\n  session: s\n  shell_command: ls\n",
        5,
        "step 'a'",
        "unknown field 'shell_command' (did you mean 'command'?)",
        id="peer-shell-command-session",
    ),
    pytest.param(  # docker compose writes env as a list of NAME=value
        "- name: a\n  type: shell\n  run: x\n  env: [A=b, C=d e, F=g]\n",
        4,
        "step 'a'",
        "field 'env' must be a mapping of variable names to text, numbers or booleans, got a "
        'list (a mapping, not compose\'s list: env: {A: "b", C: "d e", ...})',
        id="peer-compose-env-list",
    ),
    pytest.param(  # a session's detach is an action, not a service's background
        "- name: a\n  type: session\n  action: create\n  session: s\n  detach: true\n",
        5,
        "step 'a'",
        "unknown field 'detach' (did you mean 'action: detach'?)",
        id="peer-detach-session",
    ),
    pytest.param(
        "- name: a\n  type: session\n  action: create\n  session: s\n  windows: []\n",
        5,
        "step 'a'",
        "unknown field 'windows' (a session step makes one session, its one window running "
        "'command': one step per session",
        id="peer-windows",
    ),
    # docker compose's words, which said nothing of what to write here
    pytest.param(
        "- name: a\n  type: shell\n  command: x\n",
        3,
        "step 'a'",
        "field 'command' is for session steps, not shell steps (did you mean 'run'?)",
        id="peer-compose-command",
    ),
    pytest.param(
        "- name: a\n  type: shell\n  run: x\n  ports: ['8080:8080']\n",
        4,
        "step 'a'",
        "unknown field 'ports' (nothing is mapped: a step's processes listen on this machine "
        "itself; ready: {port: N} waits until one does)",
        id="peer-compose-ports",
    ),
    pytest.param(
        "- name: a\n  type: shell\n  run: x\n  image: postgres:16\n",
        4,
        "step 'a'",
        "unknown field 'image' (a step runs on this machine, in no container",
        id="peer-compose-image",
    ),
    pytest.param(
        "- name: a\n  type: shell\n  run: x\n  enviroment: {A: b}\n",
        4,
        "step 'a'",
        "unknown field 'enviroment' (did you mean 'env'?)",
        id="peer-environment-typo",
    ),
    pytest.param(
        "- name: a\n  type: shell\n  run: x\n  background: true\n  restart: unless-stopped\n",
        5,
        "step 'a'",
        "field 'restart' must be one of no, on_failure, always, got 'unless-stopped' "
        "(did you mean 'always'?)",
        id="peer-compose-restart-value",
    ),
    pytest.param(
        "- name: a\n  type: shell\n  run: x\n  timeout: 1m30s\n",
        4,
        "step 'a'",
        "field 'timeout' must be a number > 0, got '1m30s' (seconds, without a unit: 90)",
        id="duration-with-units",
    ),
    pytest.param(
        "- name: a\n  type: shell\n  run: x\n  background: true\n"
        "  health: {port: 1, interval: 500ms}\n",
        5,
        "step 'a'",
        "field 'health.interval' must be a number > 0, got '500ms' (seconds, without a unit: 0.5)",
        id="duration-ms-in-health",
    ),
    pytest.param(
        "- name: db\n  type: shell\n  run: x\n- name: api\n  type: shell\n  run: x\n"
        "  depends_on:\n    db: {condition: process_healthy}\n",
        8,
        "step 'api'",
        "field 'depends_on' must be a list of step names, got a mapping: depends_on: [db] (a "
        "step waits for each to succeed, or for a background one to be ready",
        id="depends-on-conditions",
    ),
    pytest.param(
        "- name: a\n  type: shell\n  run: x\n  health: {port: 80}\n",
        4,
        "step 'a'",
        "field 'health' needs 'background: true'",
        id="health-not-background",
    ),
    pytest.param(
        "- name: a\n  type: shell\n  run: x\n  background: true\n  health:\n    port: 80\n"
        "    cmd: 'true'\n",
        7,
        "step 'a'",
        "field 'health' takes one of port, http or cmd, not port and cmd",
        id="health-two-kinds",
    ),
    pytest.param(
        "- name: a\n  type: shell\n  run: x\n  background: true\n  health: {interval: 1}\n",
        5,
        "step 'a'",
        "field 'health' needs one of port, http or cmd",
        id="health-no-kind",
    ),
    pytest.param(
        "- name: a\n  type: shell\n  run: x\n  background: true\n  health:\n"
        "    http: ftp://host/\n",
        6,
        "step 'a'",
        "field 'health.http' must be an http:// or https:// URL with a host, got 'ftp://host/'",
        id="health-http-scheme",
    ),
    pytest.param(
        "- name: a\n  type: shell\n  run: x\n  background: true\n  health:\n    port: 80\n"
        "    intervall: 1\n",
        7,
        "step 'a'",
        "unknown field 'health.intervall' (did you mean 'interval'?)",
        id="health-unknown-option",
    ),
    pytest.param(
        "- name: a\n  type: shell\n  run: x\n  background: true\n  health:\n    port: 80\n"
        "    failures: 0\n",
        7,
        "step 'a'",
        "field 'health.failures' must be an integer >= 1, got 0",
        id="health-failures",
    ),
    pytest.param(
        "- name: a\n  type: shell\n  run: x\n  background: true\n  health:\n    cmd: 'true'\n"
        "    timeout: 0\n",
        7,
        "step 'a'",
        "field 'health.timeout' must be a number > 0, got 0",
        id="health-timeout",
    ),
    pytest.param(
        "- name: a\n  type: shell\n  run: ls\n  args: [x]\n",
        4,
        "step 'a'",
        "field 'args' goes with 'cmd'",
        id="args-with-run",
    ),
    pytest.param(
        "- name: a\n  type: shell\n  run: x\n  ready: {port: 80}\n",
        4,
        "step 'a'",
        "field 'ready' needs 'background: true'",
        id="ready-not-background",
    ),
    pytest.param(
        "- name: a\n  type: shell\n  run: x\n  background: true\n  ready:\n    port: 80\n    log: up\n",
        7,
        "step 'a'",
        "takes one of port, log, ctx, delay, http or cmd, not port and log",
        id="ready-two-kinds",
    ),
    pytest.param(
        "- name: a\n  type: shell\n  run: x\n  background: true\n  ready:\n"
        "    http: 'http://127.0.0.1:8000/'\n    cmd: 'true'\n",
        7,
        "step 'a'",
        "field 'ready' takes one of port, log, ctx, delay, http or cmd, not http and cmd",
        id="ready-http-and-cmd",
    ),
    pytest.param(
        "- name: a\n  type: shell\n  run: x\n  background: true\n  ready: {http: 3}\n",
        5,
        "step 'a'",
        "field 'ready.http' must be an http:// or https:// URL, got 3",
        id="ready-http-number",
    ),
    pytest.param(
        "- name: a\n  type: shell\n  run: x\n  background: true\n  ready: {http: 'ftp://x'}\n",
        5,
        "step 'a'",
        "field 'ready.http' must be an http:// or https:// URL with a host, got 'ftp://x'",
        id="ready-http-ftp",
    ),
    pytest.param(
        "- name: a\n  type: shell\n  run: x\n  background: true\n  ready:\n    cmd: ''\n",
        6,
        "step 'a'",
        "field 'ready.cmd' must be a shell command, got '' (it would always pass)",
        id="ready-cmd-empty",
    ),
    pytest.param(  # bash -c "" exits 0: a service always healthy
        "- name: a\n  type: shell\n  run: x\n  background: true\n  health: {cmd: ' '}\n",
        5,
        "step 'a'",
        "field 'health.cmd' must be a shell command, got ' ' (it would always pass)",
        id="health-cmd-blank",
    ),
    pytest.param(
        "- name: a\n  type: shell\n  run: x\n  background: true\n  ready:\n    port: 80\n"
        "    interval: 1\n",
        7,
        "step 'a'",
        "field 'ready.interval' only goes with ready.http or ready.cmd",
        id="ready-interval-with-port",
    ),
    pytest.param(
        "- name: a\n  type: shell\n  run: x\n  background: true\n  ready:\n    cmd: 'true'\n"
        "    interval: 0\n",
        7,
        "step 'a'",
        "field 'ready.interval' must be a number > 0, got 0",
        id="ready-interval-zero",
    ),
    pytest.param(
        "- name: a\n  type: shell\n  run: x\n  background: true\n  ready:\n    log: '(unclosed'\n",
        6,
        "step 'a'",
        "field 'ready.log' is not a valid regular expression: missing ), unterminated subpattern",
        id="ready-bad-regex",
    ),
    pytest.param(
        "- name: a\n  type: shell\n  run: x\n  background: true\n  ready:\n    port: 70000\n",
        6,
        "step 'a'",
        "field 'ready.port' must be a port number 1-65535, got 70000",
        id="ready-port-range",
    ),
    pytest.param(
        "- name: a\n  type: session\n  action: kill\n  session: 'my session'\n",
        4,
        "step 'a'",
        "field 'session' must match ^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}$",
        id="session-name",
    ),
    pytest.param(
        "- name: a\n  type: session\n  action: kill\n  session: s\n  socket: x\n",
        5,
        "step 'a'",
        "field 'socket' is for the tmux backend only",
        id="socket-with-screen",
    ),
    pytest.param(
        "- name: a\n  type: session\n  action: send\n  session: s\n",
        3,
        "step 'a'",
        "action 'send' needs 'command'",
        id="send-without-command",
    ),
    pytest.param(
        "- name: a\n  type: shell\n  run: x\n  env:\n    A: [1, 2]\n",
        5,
        "step 'a'",
        "field 'env' value of 'A' must be text, a number or a boolean, got a list",
        id="env-list-value",
    ),
    pytest.param(
        GOOD_A + "- name: b\n  type: shell\n  run: x\n  depends_on:\n    - a\n    - aa\n",
        7,
        "step 'b'",
        "depends_on: unknown step 'aa' (did you mean 'a'?)",
        id="unknown-dependency",
    ),
    pytest.param(
        GOOD_A + "- name: a\n  type: shell\n  run: y\n",
        2,
        "step 'a'",
        "duplicate step name 'a' (also at line 1)",
        id="duplicate-name",
    ),
    pytest.param(
        "- name: a\n  type: shell\n  run: x\n  depends_on: [a]\n",
        1,
        "step 'a'",
        "dependency cycle: a -> a",
        id="self-dependency",
    ),
    pytest.param(
        "- {name: a, type: shell, run: x, depends_on: [b]}\n- {name: b, type: shell, run: x}\n",
        1,
        "step 'a'",
        "dependency cycle: a -> b -> a",
        id="cycle",
    ),
    pytest.param(
        "name: x\nstpes:\n  - {name: a, type: shell, run: x}\n",
        2,
        None,
        "unknown field 'stpes' (did you mean 'steps'?)",
        id="unknown-top-level",
    ),
    pytest.param(
        "ctx:\n  ok: 1\n  bad: .nan\nsteps: [{name: a, type: shell, run: x}]\n",
        3,
        None,
        "field 'ctx' must be JSON data, but bad is .nan",
        id="ctx-nan",
    ),
    pytest.param(
        "jobs: 0\nsteps: [{name: a, type: shell, run: x}]\n",
        1,
        None,
        "field 'jobs' must be an integer >= 1, got 0",
        id="jobs-zero",
    ),
    pytest.param(
        "- name: a\n  type: shell\n  run: x\n  timeout: 0\n",
        4,
        "step 'a'",
        "field 'timeout' must be a number > 0, got 0",
        id="timeout-zero",
    ),
    pytest.param(
        "- name: a\n  type: shell\n  run: x\n  grace: -1\n",
        4,
        "step 'a'",
        "field 'grace' must be a number >= 0, got -1",
        id="grace-negative",
    ),
    pytest.param(
        "- name: a\n  type: shell\n  run: x\n  run: y\n",
        4,
        "step 'a'",
        "duplicate key 'run' (first at line 3)",
        id="duplicate-key",
    ),
    pytest.param(
        "- name: a\n  type: shell\n  run: !shout x\n",
        3,
        "step 'a'",
        "YAML tag '!shout' is not allowed",
        id="custom-tag",
    ),
    pytest.param(
        "- name: a\n  type: shell\n  run: !!python/name:os.system\n",
        3,
        "step 'a'",
        "YAML tag '!!python/name:os.system' is not allowed",
        id="python-name-tag",
    ),
    pytest.param(
        "- name: a\n  type: python\n  module: 'not a module'\n",
        3,
        "step 'a'",
        "field 'module' must be a dotted module path",
        id="module-path",
    ),
    pytest.param(
        "- name: a\n  type: shell\n  run: x\n- name: b\n   type: shell\n",
        5,
        None,
        "invalid YAML:",
        id="yaml-syntax",
    ),
]


@pytest.mark.parametrize(("text", "line", "step", "message"), CASES)
def test_mistake_is_located(ws: Path, text: str, line: int, step: str | None, message: str) -> None:
    error = errors(write(ws, text))
    matching = [p for p in error.problems if message in p.message]
    assert matching, str(error)
    shown = str(matching[0])
    assert shown.startswith(f"r.yaml:{line}:"), shown
    if step is not None:
        assert f": {step}: " in shown, shown
    assert "Traceback" not in str(error)


BUILD = "- name: build\n  type: shell\n  run: x\n"


@pytest.mark.parametrize(
    ("text", "line", "step"),
    [
        pytest.param(  # the item's first key is not name:, its name: is below it
            BUILD + "- type: shell\n  name: test\n  run: 'echo\n", 6, "test", id="name-below"
        ),
        pytest.param(BUILD + '- {name: lint, run: "x" y}\n', 4, "lint", id="flow-item"),
        pytest.param(  # a nameless item is not put on the step above it
            "steps:\n  - name: build\n    run: x\n  - type: shell\n    run: 'a' b\n",
            5,
            None,
            id="nameless-item",
        ),
    ],
)
def test_a_syntax_error_names_the_step_it_is_in(
    ws: Path, text: str, line: int, step: str | None
) -> None:
    """The step named is the item the error is in, never the complete step above it."""
    (problem,) = errors(write(ws, text)).problems
    assert (problem.file, problem.line, problem.step) == ("r.yaml", line, step)
    named = f": step '{step}': invalid YAML: " if step else ": invalid YAML: "
    assert named in str(problem), str(problem)


@pytest.mark.parametrize(
    ("field", "opener", "words"),
    [
        pytest.param('run: "echo unclosed', 10, "the quoted text that starts here", id="quote"),
        pytest.param("cmd: echo\n    args: [a, b", 11, "the list ('[')", id="list"),
        pytest.param("run: x\n    env: {A: b", 10, "the mapping ('{')", id="mapping"),
    ],
)
def test_an_opener_left_open_is_located_where_it_opens(
    ws: Path, field: str, opener: int, words: str
) -> None:
    """A quote, ``[`` or ``{`` left open in step 1,900 of 2,000: the parser gives up steps
    later (a quote at the end of the file), which named the last step and the file's last line;
    the problem is where it opens, in the step it is in, and says where the parser stopped."""
    steps = [f"  - name: s{i}\n    type: shell\n    run: echo {i}\n" for i in range(2000)]
    steps[1900] = f"  - name: broken\n    type: shell\n    {field}\n"
    text = "steps:\n" + "".join(steps)
    path = ws / "r.yaml"
    path.write_text(text)
    line = 1 + 1900 * 3 + 2 + field.count("\n") + 1  # "steps:", the items above, its line
    (problem,) = errors(path).problems
    assert (problem.line, problem.column, problem.step) == (line, opener, "broken"), str(problem)
    assert problem.message.startswith(f"invalid YAML: {words}"), problem.message
    stopped = int(problem.message.rsplit("(line ", 1)[1].split(",")[0])
    assert stopped > line  # where the parser stopped, said too


def test_a_syntax_error_after_the_steps_names_no_step(ws: Path) -> None:
    """A tab in ``ctx:``, below the last step: the error is not put on that step."""
    problems = errors(
        write(ws, "steps:\n  - name: a\n    type: shell\n    run: x\nctx:\n\tk: 1\n")
    ).problems
    assert [(p.line, p.step, p.message) for p in problems] == [
        (6, None, "invalid YAML: a tab character; YAML indents with spaces only")
    ]


def test_a_refused_name_is_one_problem_not_one_more_per_dependent(ws: Path) -> None:
    """A step named ``a/b`` is refused; the step that depends on it by that name does not get
    "unknown step 'a/b'" besides: the step is there, its name is the problem."""
    error = errors(
        write(
            ws,
            "- {name: a/b, type: shell, run: x}\n- {name: c, type: shell, run: x, depends_on: [a/b]}\n",
        )
    )
    assert [p.message.split(" (")[0] for p in error.problems] == [
        "field 'name' must be a step name"
    ]


def test_all_problems_are_reported_at_once(ws: Path) -> None:
    path = write(
        ws,
        """
        - name: a
          type: shell
          run: x
          retries: -1
        - name: b
          type: shell
          run: x
          timout: 3
        - name: c
          type: shell
          run: x
          depends_on: [zz]
        """,
    )
    error = errors(path)
    assert [(p.line, p.step) for p in error.problems] == [(4, "a"), (8, "b"), (12, "c")]
    assert len(str(error).splitlines()) == 3


def test_problem_text_leaves_out_what_is_unknown() -> None:
    full = Problem("recipes/x.yaml", 12, 5, "foo", "unknown field 'dependson'")
    assert str(full) == "recipes/x.yaml:12:5: step 'foo': unknown field 'dependson'"
    assert str(Problem("x.yaml", None, None, None, "no such file")) == "x.yaml: no such file"
    assert str(Problem("x.yaml", 3, None, "step #2", "bad", step_is_label=True)) == (
        "x.yaml:3: step #2: bad"
    )
    error = RecipeError([full, Problem("x.yaml", 1, 1, None, "other")])
    assert str(error).splitlines() == [str(full), "x.yaml:1:1: other"]


def test_file_is_shown_relative_to_the_cwd(ws: Path) -> None:
    path = write(ws, "- {name: a, type: shell}\n")
    assert str(errors(path).problems[0]).startswith("r.yaml:1:")
    assert errors(Path("r.yaml")).problems[0].file == "r.yaml"


# ------------------------------------------------------------------------------------------
# Unsafe and hostile input


def test_python_object_apply_is_refused_and_never_run(ws: Path) -> None:
    marker = ws / "X"
    path = write(
        ws,
        f"""
        - name: a
          type: shell
          run: !!python/object/apply:os.system ["touch {marker}"]
        - !!python/object/apply:os.system ["touch {marker}"]
        """,
    )
    error = errors(path)
    assert not marker.exists()
    assert [p.line for p in error.problems] == [3, 4]
    assert "!!python/object/apply:os.system' is not allowed" in str(error)


def test_alias_bomb_and_deep_nesting_are_refused(ws: Path) -> None:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    lines += [
        f"{c}: &{c} [{', '.join([f'*{p}'] * 10)}]"
        for p, c in zip("abcdefg", "bcdefgh", strict=True)
    ]
    assert "recipe too large" in str(errors(write(ws, "\n".join(lines) + "\n", "bomb.yaml")))
    deep = "steps: " + "[" * 500 + "]" * 500 + "\n"
    assert "nested" in str(errors(write(ws, deep, "deep.yaml")))
    assert "nested" in str(errors(write(ws, "steps: &s [*s]\n", "loop.yaml")))


def test_an_alias_bomb_of_mappings_is_refused_where_the_budget_runs_out(ws: Path) -> None:
    """Plain text values are built with their keys, ahead of the stack; the node where the
    budget runs out is still the one met in document order, node by node."""
    lines = ["a: &a {x: y, z: w, q: r, s: t, u: v}"]
    lines += [
        f"{c}: &{c} {{{', '.join(f'k{i}: *{p}' for i in range(10))}}}"
        for p, c in zip("abcdefg", "bcdefgh", strict=True)
    ]
    problems = errors(write(ws, "\n".join(lines) + "\n")).problems
    assert [(p.line, p.column, p.message) for p in problems] == [
        (1, 20, "recipe too large: more than 1,000,000 values once aliases are expanded")
    ]


_DEEP = "[" * 150 + "]" * 150


@pytest.mark.parametrize("loader", ["libyaml", "pure-python"])
@pytest.mark.parametrize(
    ("text", "where"),
    [
        pytest.param(f"steps: {_DEEP}\n", (1, 107), id="flow"),
        pytest.param(
            "".join("  " * i + f"k{i}:\n" for i in range(105)) + "  " * 105 + "v\n",
            (101, 201),
            id="block",
        ),
        pytest.param("steps: " + "[" * 150 + "\n  : : :\n", (1, 107), id="before-a-syntax-error"),
        pytest.param(f"? {_DEEP}\n: 1\n", (1, 102), id="in-a-key"),
        pytest.param(f"steps: !!python/object {_DEEP}\n", (1, 123), id="under-a-refused-tag"),
    ],
)
def test_nesting_too_deep_is_the_one_problem_at_the_first_level_too_deep(
    ws: Path, monkeypatch: pytest.MonkeyPatch, text: str, where: tuple[int, int], loader: str
) -> None:
    """libyaml composes first and the tree's depth is checked after; the pure-Python composer,
    which recurses per level, is guarded by an event pass: the same problem either way."""
    if loader == "pure-python":
        monkeypatch.setattr(source, "_loader", lambda: yaml.SafeLoader)
    problems = errors(write(ws, text)).problems
    assert [(p.line, p.column, p.message) for p in problems] == [
        (*where, "nested more than 100 levels deep")
    ]


def test_a_syntax_error_before_deep_nesting_is_the_problem_reported(ws: Path) -> None:
    problems = errors(write(ws, f"steps: [\n b: c: d\n{_DEEP}\n")).problems
    assert [(p.line, p.column) for p in problems] == [(2, 6)]
    assert problems[0].message.startswith("invalid YAML: ")


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"just text",
        b"\xff\xfe not utf-8",
        b"a: \x00",
        b"[1, 2",
        b"a: 1\n---\nb: 2\n",
        b"steps: 3",
        b"steps: [1, null, [], {}]",
        b"- {name: a, type: shell, run: x, retries: 99999999999999999999999999999999}\n"
        b"- {name: b, type: shell, run: x, timeout: 1e999}",
        b"{? [1, 2] : x, 1: y, null: z, .nan: w}",
        b"ctx: {a: !!binary aGVsbG8=, b: 2020-01-01, c: 340282366920938463463374607431768211456}",
        b"- {name: a, type: shell, run: x, env: {'': 1, 'A=B': 2}}",
        b"- {<<: 5, name: a}",
    ],
)
def test_garbage_only_ever_raises_recipe_error(ws: Path, content: bytes) -> None:
    path = ws / "g.yaml"
    path.write_bytes(content)
    error = errors(path)
    assert error.problems and all(p.file == "g.yaml" for p in error.problems)


def test_missing_file_and_directory_are_recipe_errors(ws: Path) -> None:
    assert "no such file" in str(errors(ws / "nope.yaml"))
    assert "is a directory" in str(errors(ws))


# ------------------------------------------------------------------------------------------
# Python steps: import, function and params checked against the signature


def test_a_missing_function_is_suggested_only_functions(ws: Path) -> None:
    """ "did you mean" names a function of the module, never a module it imported (``np``)
    or a constant: neither could be the step."""
    plain = module(ws, "import json as js\nVALUE = 3\ndef load(ctx):\n    pass\n")
    path = write(
        ws,
        f"""
        - {{name: a, type: python, module: {plain}, function: jso}}
        - {{name: b, type: python, module: {plain}, function: VALUES}}
        - {{name: c, type: python, module: {plain}, function: laod}}
        """,
    )
    by_step = {p.step: p.message for p in errors(path).problems}
    assert by_step == {
        "a": f"module '{plain}' has no function 'jso'",
        "b": f"module '{plain}' has no function 'VALUES'",
        "c": f"module '{plain}' has no function 'laod' (did you mean 'load'?)",
    }


def test_python_import_problems(ws: Path) -> None:
    broken = module(ws, "raise RuntimeError('boom at import')\n")
    plain = module(
        ws,
        """
        VALUE = 3
        def run(ctx, count, *, stop=None, log=None):
            pass
        def flexible(ctx, **kwargs):
            pass
        """,
    )
    path = write(
        ws,
        f"""
        - name: missing
          type: python
          module: no_such_module_{uuid.uuid4().hex[:8]}
        - name: broken
          type: python
          module: {broken}
        - name: nofunc
          type: python
          module: {plain}
          function: rnu
        - name: notcallable
          type: python
          module: {plain}
          function: VALUE
        - name: params
          type: python
          module: {plain}
          params:
            cuont: 1
        - name: flexible
          type: python
          module: {plain}
          function: flexible
          params: {{anything: 1}}
        """,
    )
    error = errors(path)
    by_step = {p.step: p for p in error.problems}
    assert "ModuleNotFoundError" in by_step["missing"].message and by_step["missing"].line == 3
    assert by_step["broken"].message.endswith(f"RuntimeError: boom at import (at {broken}.py:1)")
    assert by_step["broken"].line == 6
    assert "has no function 'rnu' (did you mean 'run'?)" in by_step["nofunc"].message
    assert by_step["nofunc"].line == 10
    assert "is not callable" in by_step["notcallable"].message
    messages = [str(p) for p in error.problems if p.step == "params"]
    assert any(
        m.startswith("r.yaml:19:") and "unknown param 'cuont'" in m and "did you mean 'count'" in m
        for m in messages
    ), messages
    assert any("missing param 'count'" in m for m in messages), messages
    assert "flexible" not in by_step
    assert "Traceback" not in str(error) and len(str(error).splitlines()) == len(error.problems)


def test_a_module_that_fails_to_import_is_run_once_and_named_for_each_step(ws: Path) -> None:
    """Checking imports the steps' modules: one that fails runs its code once per check (its
    side effects once, like a module that imports fine), and each step using it is told, with
    the file and line that raised (once only "RuntimeError: boom": which file said it was the
    analyst's to find)."""
    ran = ws / "ran.txt"
    broken = module(ws, f"open({str(ran)!r}, 'a').write('x')\nraise RuntimeError('boom')\n")
    steps = "".join(f"- {{name: s{i}, type: python, module: {broken}}}\n" for i in range(3))
    problems = errors(write(ws, steps)).problems
    assert [(p.step, p.line, p.message) for p in problems] == [
        (f"s{i}", i + 1, f"cannot import module '{broken}': RuntimeError: boom (at {broken}.py:2)")
        for i in range(3)
    ]
    assert ran.read_text() == "x"


def test_many_steps_calling_one_callable_object(ws: Path) -> None:
    """The signature of a function many steps call is read once, whatever the callable (an
    object of a class that defines __eq__ and so is not hashable): each step still gets its
    own problems."""
    mod = module(
        ws,
        """
        class Run:
            def __eq__(self, other):
                return self is other
            def __call__(self, ctx, n):
                return n
        run = Run()
        """,
    )
    path = write(
        ws,
        f"""
        - {{name: a, type: python, module: {mod}, params: {{n: 1}}}}
        - {{name: b, type: python, module: {mod}}}
        - {{name: c, type: python, module: {mod}, params: {{nn: 1}}}}
        """,
    )
    assert [(p.step, p.line, p.message) for p in errors(path).problems] == [
        ("b", 2, f"missing param 'n' required by {mod}.run()"),
        ("c", 3, f"missing param 'n' required by {mod}.run()"),
        ("c", 3, f"unknown param 'nn' for {mod}.run() (did you mean 'n'?)"),
    ]


def test_loading_leaves_the_garbage_collector_as_it_was(ws: Path) -> None:
    """Loading pauses the cyclic collector (a large recipe loads twice as fast); it is on
    again afterwards, whether the recipe loaded or not, and stays off if it was off."""
    good = write(ws, "- {name: a, type: shell, run: x}\n", "good.yaml")
    bad = write(ws, "- {name: a, type: shell}\n", "bad.yaml")
    assert gc.isenabled()
    load_recipe(good)
    assert gc.isenabled()
    errors(bad)
    assert gc.isenabled()
    gc.disable()
    try:
        load_recipe(good)
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_check_imports_false_skips_importing(ws: Path) -> None:
    path = write(ws, "- {name: a, type: python, module: surely_not_there_xyz}\n")
    assert load_recipe(path, check_imports=False).steps[0].module == "surely_not_there_xyz"


def test_loading_leaves_sys_path_as_it_was(ws: Path) -> None:
    """The validator imports python steps from the workspace and takes the workspace off
    sys.path again: loading a recipe changes nothing for the program that loads it. What a
    module itself adds to the path on import stays, for its own later use."""
    mod = module(ws, "import sys\nsys.path.append('/own/dir')\ndef run(ctx):\n    return 1\n")
    sub = ws / "recipes"
    sub.mkdir()
    sys.path[:] = [p for p in sys.path if p != str(ws)]
    before = list(sys.path)
    recipe = load_recipe(write(sub, f"- {{name: a, type: python, module: {mod}}}\n"))
    assert recipe.workspace == ws and mod in sys.modules
    assert sys.path == [*before, "/own/dir"]


def test_a_running_python_step_imports_from_the_workspace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runner puts the workspace on sys.path itself: a step that imports another module
    of the workspace only when it runs finds it, though loading took the workspace off."""
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(tmp_path)])
    helper = write_module(tmp_path, "VALUE = 42\n", prefix="helper")
    step = write_module(
        tmp_path, f"def run(ctx):\n    import {helper}\n    return {helper}.VALUE\n"
    )
    yaml_text = f"- {{name: a, type: python, module: {step}, output: got}}\n"
    finished = run_recipe(tmp_path, yaml_text)
    assert finished.code == 0, finished.events
    assert finished.ctx == {"got": 42}
    assert sys.path[0] == str(tmp_path)


def test_find_workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "proj" / "scriptlets").mkdir(parents=True)
    deep = tmp_path / "proj" / "recipes" / "more"
    deep.mkdir(parents=True)
    assert find_workspace(deep / "r.yaml") == tmp_path / "proj"
    monkeypatch.chdir(tmp_path)
    # no marker in a folder that does not exist, nor above it (only "/"): falls back to the cwd
    assert not (Path("/pyproject.toml").exists() or Path("/scriptlets").exists())
    nowhere = Path("/") / f"orch-no-such-folder-{uuid.uuid4().hex}" / "r.yaml"
    assert find_workspace(nowhere) == tmp_path


def test_workspace_search_ends_at_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pyproject.toml").write_text("")  # above home: not the user's to use
    project = tmp_path / "home" / "me" / "project"
    project.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(tmp_path / "home" / "me"))
    monkeypatch.chdir(project)
    assert find_workspace(project / "r.yaml") == project  # the cwd: no workspace found
    (tmp_path / "home" / "me" / "scriptlets").mkdir()
    assert find_workspace(project / "r.yaml") == tmp_path / "home" / "me"


@pytest.mark.parametrize("mode", [0o777, 0o1777], ids=["0777", "1777"])
def test_workspace_search_ends_at_a_folder_others_may_write_to(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: int
) -> None:
    """Anyone could have dropped the pyproject.toml of a shared folder (even a sticky one,
    like /tmp), and a psutil.py beside it: it is no workspace, nor is anything above it."""
    (tmp_path / "pyproject.toml").write_text("")
    shared = tmp_path / "shared"
    project = shared / "project"
    project.mkdir(parents=True)
    (shared / "pyproject.toml").write_text("")
    shared.chmod(mode)
    monkeypatch.chdir(project)
    assert find_workspace(project / "r.yaml") == project


def test_python_steps_are_not_imported_from_a_workspace_others_may_write_to(
    ws: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mod = module(ws, "def run(ctx):\n    return 1\n")
    ws.chmod(0o777)
    sys.path[:] = [p for p in sys.path if p != str(ws)]
    error = errors(write(ws, f"- {{name: a, type: python, module: {mod}}}\n"))
    assert str(error) == (
        f"r.yaml:1:35: step 'a': python steps are not imported from the workspace {ws}: it is "
        "writable by other users (mode 0777); keep the recipe in a folder of yours"
    )
    assert str(ws) not in sys.path and mod not in sys.modules


# ------------------------------------------------------------------------------------------
# Shell steps: the program and the folder they name must be there


def executable(path: Path, text: str = "#!/bin/sh\necho hi\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


def test_cmd_and_cwd_that_exist(ws: Path) -> None:
    executable(ws / "tools" / "run.sh")
    executable(ws / "bin" / "helper")
    (ws / "data").mkdir()
    path = write(
        ws,
        f"""
        env: {{PATH: "{ws / "bin"}"}}
        steps:
          - {{name: rel, type: shell, cmd: ./tools/run.sh}}
          - {{name: in_cwd, type: shell, cwd: tools, cmd: ./run.sh}}
          - {{name: absolute, type: shell, cwd: {ws / "data"}, cmd: {ws / "tools" / "run.sh"}}}
          - {{name: on_path, type: shell, cmd: helper}}
          - {{name: home, type: shell, cwd: "~", cmd: ls, env: {{PATH: /usr/bin:/bin}}}}
        """,
    )
    recipe = load_recipe(path)
    assert recipe.warnings == ()
    assert [s.cwd for s in recipe.steps][:2] == [None, "tools"]


@pytest.mark.parametrize(
    ("step", "message"),
    [
        ("cmd: ./does_not_exist.sh", "cmd: ./does_not_exist.sh not found (relative to cwd WS)"),
        ("cmd: ./not_executable.sh", "cmd: ./not_executable.sh is not executable"),
        ("cmd: ./tools", "cmd: ./tools is a directory, not a program"),
        ("cmd: no_such_program_q8z", "cmd: no_such_program_q8z not found on PATH"),
        ("cmd: helper, env: {PATH: /nonexistent}", "cmd: helper not found on PATH"),
        ("cwd: /nonexistent/dir, cmd: ls", "cwd: /nonexistent/dir does not exist"),
        ("cwd: missing, cmd: ls", "cwd: missing does not exist (relative to WS)"),
        ("cwd: r.yaml, cmd: ls", "cwd: r.yaml is not a directory (relative to WS)"),
        ("cwd: missing, cmd: ./x.sh", "cwd: missing does not exist (relative to WS)"),
    ],
)
def test_a_first_step_with_a_missing_cmd_or_cwd_is_an_error(
    ws: Path, step: str, message: str
) -> None:
    (ws / "not_executable.sh").write_text("echo hi\n")
    (ws / "tools").mkdir()
    executable(ws / "bin" / "helper")
    path = write(ws, f"steps:\n  - {{name: x, type: shell, {step}}}\n")
    problems = errors(path).problems
    assert [(p.step, p.line) for p in problems] == [("x", 2)]
    assert problems[0].message.startswith(message.replace("WS", str(ws))), problems[0]
    assert problems[0].column == 2 + len("  - {name: x, type: shell, ") + step.index(": ") + 1


def test_after_other_steps_a_missing_cmd_or_cwd_is_a_warning(ws: Path) -> None:
    """A step before it may build the program or make the folder: the recipe still runs."""
    path = write(
        ws,
        """
        steps:
          - {name: make, type: shell, run: "make"}
          - {name: app, type: shell, cmd: build/app}
          - {name: report, type: shell, cwd: out/reports, cmd: ls}
          - {name: free, type: shell, depends_on: [], cmd: ./nowhere.sh}
        """,
    )
    problems = errors(path).problems
    assert [(p.step, p.message.split(" not found")[0]) for p in problems] == [
        ("free", "cmd: ./nowhere.sh")
    ], "a step that depends on nothing: nothing can make its cmd"
    path.write_text(path.read_text().replace("  - {name: free", "# "))
    recipe = load_recipe(path)
    assert [str(w) for w in recipe.warnings] == [
        f"r.yaml:3:35: step 'app': cmd: build/app not found (relative to cwd {ws}): "
        "fine only if a step before it makes it",
        f"r.yaml:4:38: step 'report': cwd: out/reports does not exist (relative to {ws}): "
        "fine only if a step before it makes it",
    ]


def test_env_and_cwd_where_they_do_nothing_are_warnings(ws: Path) -> None:
    """``env``/``cwd`` on a python step (it runs in the runner's process) or a session's send
    (its shell runs already) do nothing: said, not refused, so a recipe that merges one anchor
    into every step still runs (an error refused it, r16-review), and said once at the anchor.
    A python service's ready or health command runs with them: nothing to say there."""
    path = write(
        ws,
        """
        x-common: &common {env: {LANG: C.UTF-8}, timeout: 60}
        steps:
          - {name: a, type: python, module: m, <<: *common}
          - {name: b, type: python, module: m, cwd: /tmp}
          - {name: s, type: session, action: send, session: x, command: ls, <<: *common}
          - {name: c, type: python, module: m, <<: *common}
          - name: svc
            type: python
            module: m
            background: true
            cwd: /tmp
            env: {A: b}
            health: {cmd: "test -d .", interval: 1}
        """,
    )
    (ws / "m.py").write_text("def run(ctx):\n    pass\n")
    recipe = load_recipe(path)
    said = {w.step: (w.line, str(w).split(": ", 2)[2]) for w in recipe.warnings}
    python = (
        "does nothing for a python step: it runs in the runner's process, whose environment "
        "and working directory its steps share (pass values in 'params', or make it a shell step)"
    )
    assert said == {  # the anchor's env once (at the anchor) for each kind of step, not per step
        "a": (1, f"field 'env' {python}"),
        "b": (4, f"field 'cwd' {python}"),
        "s": (
            1,
            "field 'env' does nothing with action send: it is for create or recreate (the "
            "session's shell starts with it), and that shell is running already (type a 'cd "
            "DIR' or 'export NAME=VALUE' into it with command:)",
        ),
    }
    assert len(recipe.warnings) == 3


def test_a_service_with_health_and_no_ready_that_steps_depend_on_is_a_warning(ws: Path) -> None:
    """docker compose's and process-compose's dependents wait until a service is healthy; here
    a background step without ``ready`` is ready as it starts, and its dependent ran against a
    server not up yet (curl: Failed to connect) with nothing said before."""
    path = write(
        ws,
        """
        steps:
          - name: db
            type: shell
            background: true
            run: sleep 3; exec python3 -m http.server 18741
            health: {http: "http://127.0.0.1:18741/"}
          - {name: api, type: shell, run: "true"}
          - {name: web, type: shell, depends_on: [db], run: "true"}
          - name: cache
            type: shell
            background: true
            depends_on: []
            run: sleep 100
            ready: {log: up}
            health: {port: 6379}
          - {name: uses_cache, type: shell, depends_on: [cache], run: "true"}
          - name: lonely
            type: shell
            background: true
            depends_on: []
            run: sleep 100
            health: {port: 6380}
          - name: queue
            type: shell
            background: true
            depends_on: []
            run: sleep 100
            health: {cmd: "test -S q.sock", interval: 1}
          - {name: uses_queue, type: shell, depends_on: [queue], run: "true"}
        """,
    )
    recipe = load_recipe(path)
    start = (
        "will not wait for its health: a background step without 'ready' is ready as it starts "
        "('health' is checked from then on); give it a 'ready' for its dependents to wait "
        "until it answers: "
    )
    assert [str(w) for w in recipe.warnings] == [
        f"r.yaml:6:5: step 'db': steps 'api' and 'web' {start}"
        'ready: {http: "http://127.0.0.1:18741/"}, the check its health makes',
        f"r.yaml:28:5: step 'queue': step 'uses_queue' {start}"
        'ready: {cmd: "test -S q.sock"}, the check its health makes',
    ]
    # the ready it says is one the recipe can take, and then there is nothing to say
    health = 'health: {cmd: "test -S q.sock", interval: 1}'
    text = path.read_text().replace(health, health + '\n    ready: {cmd: "test -S q.sock"}')
    path.write_text(text)
    assert [w.step for w in load_recipe(path).warnings] == ["db"]


@pytest.mark.parametrize(
    ("cmd", "hint"),
    [
        ("echo hi", 'write cmd: echo with args: [hi], or run: "echo hi" for a shell line'),
        (
            "ls -l '*.txt' 1",
            'write cmd: ls with args: [-l, "*.txt", "1"], or run: "ls -l \'*.txt\' 1"',
        ),
        ("./tool.sh --fast", "write cmd: ./tool.sh with args: [--fast], or run:"),
        ("'echo hi", 'its arguments go in args, or write run: "\'echo hi" for a shell line'),
    ],
)
def test_a_cmd_with_spaces_says_cmd_is_one_program(ws: Path, cmd: str, hint: str) -> None:
    """The mistake a new user makes most: a whole command line in ``cmd``. The error says what
    to write; the words are never run split."""
    path = write(ws, f"steps:\n  - name: a\n    type: shell\n    cmd: {json.dumps(cmd)}\n")
    (problem,) = errors(path).problems
    assert problem.message.startswith(f"cmd: {json.dumps(cmd)} not found"), problem
    assert f"(cmd is one program: {hint}" in problem.message, problem
    result = run_cli("validate", path, cwd=ws)
    assert result.returncode == 2
    assert result.stderr.splitlines()[1].startswith("r.yaml:4:10: step 'a': cmd: "), result.stderr
    assert "Traceback" not in result.stderr


def test_a_command_line_in_cmd_after_another_step_is_an_error_not_a_warning(ws: Path) -> None:
    """``cmd: echo hi`` after a step was only a warning ("fine only if a step before it makes
    it"), and the run then failed it with a bare "No such file or directory". Its first word
    is a program there is: a command line, which no step makes. A path no step has made yet
    stays a warning, and the run's failure says what to write."""
    path = write(
        ws,
        "steps:\n  - {name: make, type: shell, cmd: 'true'}\n"
        "  - {name: a, type: shell, cmd: echo héllo}\n"
        "  - {name: b, type: shell, cmd: build/app --fast}\n",
    )
    (problem,) = errors(path).problems
    assert problem.message == (
        'cmd: "echo héllo" not found on PATH (cmd is one program: write cmd: echo '
        'with args: [héllo], or run: "echo héllo" for a shell line)'
    )
    path = write(
        ws,
        "steps:\n  - {name: make, type: shell, cmd: 'true'}\n"
        "  - {name: b, type: shell, cmd: build/app --fast}\n",
    )
    result = run_cli(path, "--no-ui", cwd=ws)
    assert result.returncode == 1, result.stderr
    state = read_state(only_run_dir(ws))["steps"]["b"]
    assert state["status"] == "failed"
    assert "(cmd is one program: write cmd: build/app with args: [--fast]" in state["reason"]


def test_a_folder_is_not_a_recipe(ws: Path) -> None:
    (ws / "recipes").mkdir()
    assert str(errors(ws / "recipes")) == "recipes: is a directory, expected a YAML file"
    assert str(errors(".")) == f".: is a directory ({ws}), expected a YAML file"


# ------------------------------------------------------------------------------------------
# JSON schema


def test_json_schema_is_made_from_the_model() -> None:
    schema = recipe_json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    json.dumps(schema)  # plain JSON all the way down
    defs = schema["$defs"]
    steps = {t: defs[f"{t.capitalize()}Step"] for t in ("python", "shell", "session")}
    # every field a step may have, each on the step types that have it; none the loader sets
    assert set().union(*(s["properties"] for s in steps.values())) == set(STEP_FIELDS)
    for step_type, step in steps.items():
        assert step["additionalProperties"] is False
        assert step["properties"]["type"] == {
            "enum": [step_type],
            "description": "what the step runs",
        }
        for name, prop in step["properties"].items():
            assert STEP_FIELDS[name].applies(step_type), (step_type, name)
            assert prop["description"] == STEP_FIELDS[name].description
            assert "null" not in json.dumps(prop), (step_type, name)  # absent, never null
    assert set(steps["python"]["required"]) == {"name", "type", "module"}
    assert set(steps["shell"]["required"]) == {"name", "type"}
    assert set(steps["session"]["required"]) == {"name", "type", "action", "session"}
    assert steps["shell"]["properties"]["grace"]["default"] == 5.0
    assert set(steps["session"]["properties"]["action"]["enum"]) == set(SESSION_ACTIONS)
    assert set(defs["Readiness"]["properties"]) == set(READY_FIELDS)
    top = defs["RecipeFile"]
    assert set(top["properties"]) == set(RECIPE_FIELDS) and top["required"] == ["steps"]
    assert top["properties"]["steps"]["items"]["discriminator"]["propertyName"] == "type"


def test_json_schema_accepts_a_good_recipe_and_rejects_a_bad_one() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = recipe_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    good = {
        "steps": [
            {"name": "a", "type": "python", "module": "m.n"},
            {"name": "b", "type": "shell", "run": "x", "background": True, "ready": {"port": 1}},
            {
                "name": "c",
                "type": "shell",
                "run": "x",
                "background": True,
                "restart": "on_failure",
                "health": {"http": "http://127.0.0.1:1/", "failures": 2},
            },
            {"name": "d", "type": "shell", "run": "x", "background": True, "restart": False},
            {
                "name": "e",
                "type": "shell",
                "run": "x",
                "background": True,
                "ready": {"http": "http://127.0.0.1:1/", "interval": 0.5},
            },
            {"name": "f", "type": "shell", "run": "x", "background": True, "ready": {"cmd": "t"}},
        ]
    }
    assert validator.is_valid(good)
    # x- keys, where anchors live, pass for the recipe and its steps, as the loader lets them
    assert validator.is_valid({"x-common": {"a": 1}, "steps": [{**good["steps"][1], "x-n": 1}]})
    assert not validator.is_valid([{"name": "a", "type": "python", "module": "m", "cmd": "x"}])
    assert not validator.is_valid([{"name": "a", "type": "shell", "dependson": []}])
    # what the loader refuses, an editor flags too
    shell = {"name": "a", "type": "shell", "run": "x"}
    for bad in [
        {**shell, "timeout": None},  # a field is written or left out, never null
        {**shell, "index": 3},  # the loader's, not the user's
        {**shell, "background": True, "ready": {"port": 1, "log": "up"}},
        {**shell, "background": True, "ready": {"host": "h"}},
        {**shell, "background": True, "ready": {"log": "up", "host": "h"}},
        {**shell, "background": True, "ready": {"port": 1, "interval": 1}},
        {**shell, "background": True, "ready": {"http": "http://h/", "cmd": "true"}},
        {**shell, "background": True, "ready": {"cmd": ""}},
        {**shell, "background": True, "health": {"port": 1, "cmd": "true"}},
        {**shell, "background": True, "health": {"interval": 1}},
        {**shell, "background": True, "restart": "sometimes"},
        {**shell, "name": ".."},
        {**shell, "type": "pyhton"},
    ]:
        assert not validator.is_valid([bad]), bad


def test_validating_a_long_chain_stays_small(tmp_path):
    """The unordered-output check once took every step's ancestors, needed or not: a chain of
    5,000 steps held 12.5 million names (620 MB, 1.2 s to validate; 10,000 steps: gigabytes).
    They are looked at only when two steps set the same ``output:`` key."""
    lines = ["steps:"]
    for i in range(5000):
        lines += [f"  - name: s{i}", "    type: shell", "    cmd: 'true'"]
    (tmp_path / "chain.yaml").write_text("\n".join(lines) + "\n")
    # measured from a small parent: a child forked from this (large) test process starts with
    # its memory counted in ru_maxrss, which exec does not reset
    measure = (
        "import resource, subprocess, sys\n"
        "code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode\n"
        "print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", measure, *ORCH, "validate", "chain.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    code, peak_kb = map(int, result.stdout.split())
    assert code == 0, result.stderr
    assert peak_kb < 200 * 1024, f"peak RSS {peak_kb // 1024} MB"


def test_two_sessions_logging_to_one_file_is_a_recipe_error(ws: Path) -> None:
    """One name on two tmux servers (or on screen and tmux) took one default log,
    sessions/NAME.log: both sessions' output interleaved in it, and each session's pane showed
    the other's too. Refused before anything runs, naming both steps; one session logged by
    two steps (created, later recreated) is one log, as before."""
    recipe = write(
        ws,
        """
        steps:
          - {name: a, type: session, backend: tmux, socket: one, action: create, session: api,
             log: true}
          - {name: b, type: session, backend: tmux, socket: two, action: recreate, session: api}
          - {name: c, type: session, action: create, session: api, log: sessions/api.log}
          - {name: again, type: session, backend: tmux, socket: one, action: recreate,
             session: api}
        """,
    )
    result = run_cli("validate", str(recipe), cwd=ws)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if "api.log" in line]
    assert len(lines) == 2, result.stderr
    assert lines[0].startswith("r.yaml:4:") and "step 'b'" in lines[0], lines
    assert "step 'a' (line 2)" in lines[0], lines
    assert lines[1].startswith("r.yaml:5:") and "step 'c'" in lines[1], lines
    assert "Traceback" not in result.stderr


def test_an_import_error_names_the_workspace_file_and_line_that_raised(ws: Path) -> None:
    """A step's module importing a helper that fails, or a package not installed, or edited into
    a syntax error: the problem names where, relative to the workspace (a SyntaxError's own
    text named the file without its folder); a module that does not exist names no place."""
    ana = f"ana_{uuid.uuid4().hex[:8]}"  # in-process checks share sys.modules: a name of its own
    (ws / ana / "sub").mkdir(parents=True)
    (ws / ana / "__init__.py").write_text("")
    (ws / ana / "sub" / "__init__.py").write_text("")
    (ws / ana / "sub" / "deep.py").write_text("x = 1\nraise RuntimeError('config missing')\n")
    (ws / ana / "helper.py").write_text(f"import {ana}.sub.deep\n")
    (ws / ana / "needs.py").write_text("import os\nimport not_installed_anywhere\n")
    (ws / ana / "broken.py").write_text("def f(ctx):\n    return 1 +\n")
    steps = "".join(
        f"- {{name: {m}, type: python, module: {ana}.{m}, function: f}}\n"
        for m in ("helper", "needs", "broken", "absent")
    )
    messages = {p.step: p.message for p in errors(write(ws, steps)).problems}
    assert messages == {
        "helper": f"cannot import module '{ana}.helper': RuntimeError: config missing"
        f" (at {ana}/sub/deep.py:2)",
        "needs": f"cannot import module '{ana}.needs': ModuleNotFoundError: No module named"
        f" 'not_installed_anywhere' (at {ana}/needs.py:2)",
        "broken": f"cannot import module '{ana}.broken': SyntaxError: invalid syntax"
        f" (at {ana}/broken.py:2)",
        "absent": f"cannot import module '{ana}.absent': ModuleNotFoundError: No module named"
        f" '{ana}.absent'",
    }
