"""The recipe loader under fuzzing: a valid Recipe or a located RecipeError, nothing else.

Every input is checked and counted as a fault survived only once its checks passed: the loader
either returns a Recipe whose invariants hold (unique names, known types, known dependencies,
no cycle, valid session names), or raises a RecipeError each of whose problems is one line that
names the file and a line:column inside it (only "the recipe is empty" has no line). Never
another exception, and never an "internal error while checking the recipe" (``load_recipe``
wraps anything unexpected into one: each would be a loader bug). A hang fails the test through
pytest-timeout. Inputs: random YAML documents (structures, types, unicode, huge and odd values,
deep nesting), recipe-shaped documents with random field values, random YAML-ish text and
random bytes. Then ``orch-tui validate`` on a handful of nasty files: exit 0 or 2, never a
traceback, never a hang.
"""

from __future__ import annotations

import math
import os
import re
import string
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from core.graph import find_cycle
from core.recipe import (
    READY_FIELDS,
    RECIPE_FIELDS,
    SESSION_ACTIONS,
    SESSION_NAME_PATTERN,
    STEP_FIELDS,
    STEP_TYPES,
    Recipe,
    RecipeError,
    load_recipe,
)
from tests.conftest import run_cli

FUZZ = settings(
    max_examples=200,
    deadline=None,
    # function_scoped_fixture: ``faults`` is meant to add up over all of a test's examples
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
    database=None,
)
KIND = "loader fuzz input: a valid Recipe or a located RecipeError"
#: problems about the file as a whole, which have no line to point at
WHOLE_FILE = ("the recipe is empty",)
YAML_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A workspace with python step modules: good, broken at import, odd functions."""
    ws = tmp_path_factory.mktemp("fuzz")
    (ws / "pyproject.toml").write_text("[project]\nname = 'fuzz'\nversion = '0'\n")
    (ws / "fuzz_good.py").write_text(
        "def run(ctx, a=1, *, b=2):\n    pass\n\nNOT_CALLABLE = 3\n\n"
        "def needs(ctx, x):\n    pass\n\ndef kw(ctx, **kw):\n    pass\n"
    )
    (ws / "fuzz_boom.py").write_text("raise RuntimeError('boom at import')\n")
    (ws / "fuzz_exit.py").write_text("import sys\nsys.exit(3)\n")
    (ws / "fuzz_syntax.py").write_text("def (:\n")
    return ws


def _check(workspace: Path, text: str | bytes, faults, *, check_imports: bool = False) -> None:
    """Load ``text`` as a recipe file; count it survived once the outcome passed its checks."""
    path = workspace / "recipe.yaml"
    if isinstance(text, str):
        path.write_text(text, encoding="utf-8", errors="surrogateescape")
    else:
        path.write_bytes(text)
    faults.tried(KIND)
    try:
        recipe = load_recipe(path, check_imports=check_imports)
    except RecipeError as exc:
        _assert_located(exc, path)
    else:
        _assert_valid(recipe, path)
        # loaded again: from the cache of compiled recipes, the very same recipe
        assert load_recipe(path, check_imports=check_imports) == recipe
    faults.survived(KIND)


def _assert_located(exc: RecipeError, path: Path) -> None:
    """Each problem: one line naming this file and a line:column in it, no internal error."""
    data = path.read_bytes()
    # YAML 1.1 line breaks (PyYAML counts NEL and U+2028 too); "unexpected end" points past
    # the last line
    end = len(YAML_BREAK.findall(data.decode("utf-8", "replace"))) + 2
    assert exc.problems, "a RecipeError lists its problems"
    for problem in exc.problems:
        shown = str(problem)
        context = f"{shown!r}\n--- input:\n{data[:2000]!r}"
        assert "internal error" not in problem.message, f"loader bug: {context}"
        assert "\n" not in shown and "Traceback" not in shown, context
        assert problem.file == str(path) and shown.startswith(f"{path}"), context
        if problem.message in WHOLE_FILE:
            continue
        assert problem.line is not None and problem.column is not None, context
        assert 1 <= problem.line <= end and problem.column >= 1, context
        assert shown.startswith(f"{path}:{problem.line}:{problem.column}: "), context


def _assert_valid(recipe: Recipe, path: Path) -> None:
    """What the runner relies on from a loaded recipe."""
    assert recipe.path == path.resolve()
    names = [step.name for step in recipe.steps]
    assert len(set(names)) == len(names), names
    for step in recipe.steps:
        assert step.type in STEP_TYPES, step
        assert set(step.depends_on) <= set(names) - {step.name}, step
        if step.type == "python":
            assert step.module, step
        elif step.type == "shell":
            assert (step.run is None) != (step.cmd is None), step
        else:
            assert step.action in SESSION_ACTIONS, step
            assert re.fullmatch(SESSION_NAME_PATTERN, step.session or ""), step
    assert find_cycle(recipe.deps) is None, recipe.deps


# ---------------------------------------------------------------------------- strategies
FIELD_NAMES = sorted({*STEP_FIELDS, *RECIPE_FIELDS, *READY_FIELDS})
ODD_TEXT = st.sampled_from(
    [
        "",
        " ",
        "\x00",
        "a\x00b",
        "\n",
        "é",
        "\u202e",
        "\ufeff",
        "💥" * 50,
        "x" * 5000,
        "../../etc/passwd",
        "/",
        ".",
        "..",
        "-rf",
        "$(touch pwned)",
        "`id`",
        "a;b",
        "web.1",
        "!!python/object/apply:os.system",
        "{{ jinja }}",
        "%s%n",
        "\\",
        "'\"",
        "NaN",
        "1e999",
        "0x10",
        "~",
        "null",
        "yes",
        "on",
    ]
)
TEXT = st.one_of(st.text(max_size=40), ODD_TEXT, st.sampled_from(FIELD_NAMES))
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([0, -1, 2**63, 2**64, -(2**63) - 1, 10**30, 65536, 65535]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.inf, -math.inf, math.nan, 1e9, 1e9 + 1, 1e-320, -0.0]),
    TEXT,
)
KEYS = st.one_of(
    st.sampled_from(FIELD_NAMES), st.text(max_size=12), st.integers(), st.none(), st.booleans()
)
DOCS = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=5), st.dictionaries(KEYS, children, max_size=6)
    ),
    max_leaves=40,
)


def _value_for(field: str) -> st.SearchStrategy:
    common = [DOCS]
    specific = {
        "type": st.sampled_from(["python", "shell", "session", "Shell", "docker", ""]),
        "action": st.sampled_from(["create", "recreate", "send", "kill", "detach", "nuke"]),
        "backend": st.sampled_from(["screen", "tmux", "zellij"]),
        "module": st.sampled_from(
            [
                "fuzz_good",
                "fuzz_boom",
                "fuzz_exit",
                "fuzz_syntax",
                "json",
                "no_such_module_xyz",
                "fuzz_good.sub",
                "a..b",
                "1abc",
            ]
        ),
        "function": st.sampled_from(["run", "needs", "kw", "NOT_CALLABLE", "missing", "x y", ""]),
        "session": st.one_of(st.sampled_from(["web", "a" * 64, "a" * 65, "-x", "a.b", "é"]), TEXT),
        "depends_on": st.one_of(st.lists(st.sampled_from(["s0", "s1", "s2", "zz"]), max_size=4)),
        "ready": st.dictionaries(
            st.sampled_from(sorted(READY_FIELDS) + ["bogus"]), SCALARS, max_size=3
        ),
        "params": st.dictionaries(
            st.sampled_from(["a", "b", "x", "ctx", "stop", "log", "zz"]), DOCS, max_size=3
        ),
        "env": st.dictionaries(st.one_of(TEXT, st.integers()), SCALARS, max_size=3),
        "args": st.lists(SCALARS, max_size=4),
        "expose": st.lists(TEXT, max_size=3),
        "log": st.one_of(st.booleans(), TEXT),
    }
    if field in specific:
        return st.one_of(specific[field], *common)
    return st.one_of(SCALARS, *common)


@st.composite
def recipe_docs(draw) -> object:
    steps = []
    for i in range(draw(st.integers(0, 4))):
        fields = draw(st.lists(st.sampled_from(sorted(STEP_FIELDS) + ["bogus"]), max_size=8))
        step = {"name": draw(st.one_of(st.just(f"s{i}"), TEXT))}
        for name in fields:
            step[name] = draw(_value_for(name))
        steps.append(step)
    if draw(st.booleans()):
        return steps
    top = {"steps": steps}
    for name in draw(st.lists(st.sampled_from(sorted(RECIPE_FIELDS) + ["bogus"]), max_size=4)):
        top[name] = draw(_value_for(name))
    return top


def _dump(doc: object, draw_flags: tuple[bool, bool]) -> str:
    allow_unicode, flow = draw_flags
    try:
        return yaml.safe_dump(doc, allow_unicode=allow_unicode, default_flow_style=flow)
    except (yaml.YAMLError, UnicodeEncodeError, ValueError):
        return yaml.safe_dump(str(doc))


YAMLISH = st.lists(
    st.one_of(
        st.sampled_from(
            [
                "steps:",
                "- ",
                "  ",
                "\n",
                ":",
                "name: a",
                "type: shell",
                "run: echo",
                "[",
                "]",
                "{",
                "}",
                ",",
                "&a ",
                "*a",
                "<<: *a",
                "!!python/object/apply:os.system ['touch pwned']",
                "!!python/name:os.system",
                "!!binary aGVsbG8=",
                "!!timestamp 2001-12-14",
                "!custom",
                "? ",
                "|",
                ">-",
                "%YAML 1.1\n",
                "%TAG ! tag:x,2000:\n",
                "---\n",
                "...\n",
                "'",
                '"',
                "\t",
                "#",
                "\ufeff",
                "\x00",
                "\x85",
                "\u2028",
                "depends_on: [",
                "99999999999999999999999999",
                ".nan",
                "~",
            ]
        ),
        st.text(string.printable, max_size=5),
    ),
    max_size=60,
).map("".join)


# ---------------------------------------------------------------------------- the fuzzers
@FUZZ
@given(doc=DOCS, flags=st.tuples(st.booleans(), st.booleans()))
def test_random_yaml_documents(workspace, faults, doc, flags):
    _check(workspace, _dump(doc, flags), faults)


@FUZZ
@given(doc=recipe_docs(), flags=st.tuples(st.booleans(), st.booleans()))
@example(
    doc={"steps": [{"name": "a", "type": "shell", "run": "x", "timeout": 1e400}]},
    flags=(True, False),
)
@example(
    doc=[{"name": "a", "type": "python", "module": "fuzz_good", "params": {"ctx": 1}}],
    flags=(True, False),
)
def test_recipe_shaped_documents_with_random_fields(workspace, faults, doc, flags):
    _check(workspace, _dump(doc, flags), faults, check_imports=True)


@FUZZ
@given(text=YAMLISH)
@example(text="steps:\n  - &a {name: a, type: shell, run: x, x: *a}\n")
@example(text="a: &a [*a]\n")
@example(text="- " + "[" * 5000 + "]" * 5000)
@example(text="- " + "{a: " * 3000 + "}" * 3000)
@example(text="- {name: a, type: shell, run: x, timeout: 1" + "0" * 5000 + "}\n")
def test_random_yamlish_text(workspace, faults, text):
    _check(workspace, text, faults)


@FUZZ
@given(data=st.binary(max_size=300))
@example(data=b"\xff\xfe\x00s\x00t\x00e\x00p\x00s\x00")
@example(data=b"steps:\n  - {name: \xc3\x28, type: shell, run: x}\n")
def test_random_bytes(workspace, faults, data):
    _check(workspace, data, faults)


#: text a recipe may hold anywhere: no NUL (never legal) and no lone surrogate (not UTF-8)
LEGAL_TEXT = st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=20
)


PROGRAMS = ["/bin/true", "/bin/echo", "/bin/sh"]


@st.composite
def valid_recipes(draw) -> tuple[list[dict], dict[str, tuple[str, ...]]]:
    """Recipes that must load: valid steps of each type, odd but legal names and values,
    dependencies on earlier steps only. Returns the steps and the dependencies they imply."""
    names = draw(
        st.lists(
            st.text(string.ascii_letters + string.digits + "_-. é💥", min_size=1, max_size=12),
            min_size=1,
            max_size=6,
            unique=True,
        ).filter(lambda ns: not {".", ".."} & set(ns))
    )
    steps, deps = [], {}
    backends: dict[str, str] = {}  # a session's name: the multiplexer of its first step
    for i, name in enumerate(names):
        step = draw(
            st.one_of(
                st.fixed_dictionaries(
                    {"type": st.just("python"), "module": st.just("fuzz_good")},
                    optional={"function": st.sampled_from(["run", "kw"])},
                ),
                st.fixed_dictionaries({"type": st.just("shell"), "run": LEGAL_TEXT}),
                st.fixed_dictionaries(
                    # a program that exists: a missing one is an error of the recipe
                    {"type": st.just("shell"), "cmd": st.sampled_from(PROGRAMS)},
                    optional={"args": st.lists(st.one_of(LEGAL_TEXT, st.integers()), max_size=3)},
                ),
                st.fixed_dictionaries(
                    {
                        "type": st.just("session"),
                        "action": st.sampled_from(SESSION_ACTIONS),
                        "session": st.from_regex(SESSION_NAME_PATTERN, fullmatch=True),
                    },
                    optional={"backend": st.sampled_from(["screen", "tmux"])},
                ),
            )
        )
        extra = st.fixed_dictionaries(
            {},
            optional={
                "timeout": st.floats(0.001, 1e6),
                "retries": st.integers(0, 100),
                "continue_on_error": st.booleans(),
                "env": st.dictionaries(st.from_regex("[A-Z_]{1,8}", fullmatch=True), LEGAL_TEXT),
            },
        )
        if step.get("action") == "send":
            step["command"] = draw(LEGAL_TEXT)
        if step["type"] == "session":  # one name, one multiplexer: two would log to one file
            backend = backends.setdefault(step["session"], step.get("backend", "screen"))
            step["backend"] = backend
        step = {"name": name, **step, **draw(extra)}
        if step["type"] == "python" or step.get("action") in ("send", "kill", "detach"):
            step.pop("env", None)  # a process's as it starts: a shell's, a created session's
        if i and draw(st.booleans()):  # absent: the previous step
            deps[name] = (names[i - 1],)
        else:
            earlier = st.sampled_from(names[:i]) if i else st.nothing()
            step["depends_on"] = draw(st.lists(earlier, unique=True))
            deps[name] = tuple(step["depends_on"])
        steps.append(step)
    return steps, deps


@FUZZ
@given(drawn=valid_recipes(), flags=st.tuples(st.booleans(), st.booleans()))
def test_random_valid_recipes_load_as_written(workspace, drawn, flags):
    """The other half of the loader's promise: what is valid loads, exactly as written."""
    steps, deps = drawn
    path = workspace / "recipe.yaml"
    path.write_text(_dump({"steps": steps}, flags), encoding="utf-8")
    recipe = load_recipe(path, check_imports=True)
    _assert_valid(recipe, path)
    assert [(s.name, s.type) for s in recipe.steps] == [(d["name"], d["type"]) for d in steps]
    assert recipe.deps == deps


# ---------------------------------------------------------------------------- validate
BILLION_LAUGHS = "\n".join(
    ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    + [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]" for i in range(8)]
    + ["steps: [{name: s, type: shell, run: x}]"]
)

NASTY = {
    "python_tag": "steps:\n  - !!python/object/apply:os.system ['touch pwned']\n",
    "python_name": "steps: !!python/name:os.system\n",
    "billion_laughs": BILLION_LAUGHS,
    "deep_lists": "steps: " + "[" * 10000 + "]" * 10000 + "\n",
    "deep_maps": "steps: " + "{a: " * 5000 + "b" + "}" * 5000 + "\n",
    "recursive_alias": "steps: &s [*s]\n",
    "huge_int": "steps: [{name: s, type: shell, run: x, retries: 1" + "0" * 10000 + "}]\n",
    "nul": 'steps: [{name: "a\\0b", type: shell, run: "x\\0y"}]\n',
    "bom_tabs": "\ufeffsteps:\n\t- {name: s, type: shell, run: x}\n",
    "garbage": "\x00\x01\x02\x03 : : : [[[ }}}\n",
    "empty": "",
    "good": "steps:\n  - {name: s, type: shell, run: echo ok}\n",
}


@pytest.mark.parametrize("kind", sorted(NASTY) + ["invalid_utf8", "too_big", "fifo", "dir"])
def test_validate_exits_0_or_2_without_a_traceback(tmp_path, kind, faults):
    (tmp_path / "pyproject.toml").write_text("")
    path = tmp_path / "recipe.yaml"
    if kind in NASTY:
        path.write_text(NASTY[kind])
    elif kind == "invalid_utf8":
        path.write_bytes(b"steps:\n  - {name: \xff\xfe, type: shell, run: x}\n")
    elif kind == "too_big":
        path.write_bytes(b"# " + b"x" * (5 * 1024 * 1024) + b"\n")
    elif kind == "fifo":
        os.mkfifo(path)  # reading it would block forever: must be refused, not read
    elif kind == "dir":
        path.mkdir()
    faults.tried("orch-tui validate on a nasty file")
    result = run_cli("validate", path, cwd=tmp_path, timeout=20)
    assert result.returncode in (0, 2), result
    assert "Traceback" not in result.stdout + result.stderr
    assert "internal error" not in result.stderr, result.stderr
    assert not (tmp_path / "pwned").exists()
    if kind == "good":
        assert result.returncode == 0
    else:
        assert result.returncode == 2 and "recipe.yaml" in result.stderr, result.stderr
    faults.survived("orch-tui validate on a nasty file")


def test_odd_values_the_loader_accepts_fail_their_step_cleanly_at_run_time(tmp_path, faults):
    """A ready.host that no resolver accepts ("label too long"): once, the probe thread died
    with a traceback on stderr and the step sat out its whole readiness timeout."""
    faults.tried("unresolvable ready.host")
    host = "a" * 80 + ".example"
    (tmp_path / "pyproject.toml").write_text("")
    path = tmp_path / "recipe.yaml"
    path.write_text(
        "steps:\n"
        "  - name: srv\n"
        "    type: shell\n"
        "    background: true\n"
        f"    ready: {{port: 8080, host: {host}, timeout: 30}}\n"
        "    run: sleep 100\n"
        "  - {name: after, type: shell, run: echo after}\n"
        "  - {name: huge_args, type: shell, depends_on: [], cmd: echo,"
        f" args: [{', '.join(['x' * 1000] * 3000)}]}}\n"
    )
    result = run_cli(path, "--no-ui", cwd=tmp_path, timeout=20)
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr, result.stderr
    assert "cannot probe ready.port" in result.stdout and host in result.stdout
    assert "huge_args" in result.stdout and "Argument list too long" in result.stdout
    faults.survived("unresolvable ready.host")
