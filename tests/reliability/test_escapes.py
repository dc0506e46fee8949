"""Escape sequences from a step, the ctx or a session never reach the user's terminal.

A failure's reason is often an exception message built from ctx data; ctx keys are whatever a
step chose; anyone on the machine names screen sessions. Once, such text wrote to the user's
clipboard (OSC 52) and retitled the terminal, in plain mode, in the live view and in the
summary; the live view also passed OSC 8 hyperlinks from step output on. All of it goes through
the one cleaner (core/text.py) now: the words stay, the sequences go.
"""

from __future__ import annotations

import os
import pty
import select
import subprocess
import time

from tests import tui_helpers
from tests.conftest import (
    kill_tree,
    run_cli,
    run_screen,
    start_cli,
    write_module,
    write_recipe,
)
from tests.tui_helpers import SIZE, until

orch = tui_helpers.orch  # fixture

#: In YAML: a clipboard write (OSC 52), a title change, a C1 CSI, around readable words.
EVIL = r"\e]52;c;cHduZWQ=\a\e]0;pwned title\a bad value \u009b31m!"
#: A screen session's name: screen takes any, and anyone on the machine names one.
SESSION = "evil\x1b]0;pwned\x07name"

FAILING = """
def boom(ctx):
    raise RuntimeError("cannot use" + ctx["evil"])
"""

RECIPE = """
ctx:
  evil: "{evil}"
steps:
  - {{name: boom, type: python, module: {module}, function: boom}}
  - name: link
    type: shell
    depends_on: []
    run: printf '\\033]8;;http://example.com/\\033\\\\the link text\\033]8;;\\033\\\\\\n'
"""


def _recipe(tmp_path):
    module = write_module(tmp_path, FAILING)
    return write_recipe(tmp_path, RECIPE.format(evil=EVIL, module=module))


def _assert_no_sequences(shown: bytes) -> None:
    assert b"\x1b]" not in shown, "an OSC sequence (title, clipboard, hyperlink) got through"
    assert b"\x07" not in shown and b"\xc2\x9b" not in shown and b"\x9b" not in shown


def test_plain_output_shows_a_reason_from_ctx_data_without_its_escapes(tmp_path, faults):
    faults.tried("escape sequences in a failure's reason (plain output)")
    result = run_cli(_recipe(tmp_path), "--no-ui", cwd=tmp_path)
    assert result.returncode == 1
    shown = result.stdout.encode()
    assert b"\x1b" not in shown
    _assert_no_sequences(shown)
    failed = next(line for line in result.stdout.splitlines() if "boom failed" in line)
    assert failed.endswith("RuntimeError: cannot use bad value 31m!"), failed
    assert "root failure: boom (exit 1, RuntimeError: cannot use bad value 31m!)" in result.stdout
    assert "link | the link text" in result.stdout
    faults.survived("escape sequences in a failure's reason (plain output)")


def _read_pty(master: int, proc: subprocess.Popen, timeout: float = 60) -> bytes:
    """Everything the process writes to its terminal, until it exits (EIO on the master)."""
    data = bytearray()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if not ready:
            if proc.poll() is not None:
                break
            continue
        try:
            chunk = os.read(master, 1 << 16)
        except OSError:  # the last writer closed the terminal
            break
        if not chunk:
            break
        data += chunk
    return bytes(data)


def test_live_view_on_a_terminal_passes_no_hyperlinks_or_titles(tmp_path, faults):
    recipe = _recipe(tmp_path)
    master, slave = pty.openpty()
    faults.tried("escape sequences from steps and ctx on a terminal (live view, summary)")
    proc = start_cli(recipe, "--no-ui", cwd=tmp_path, stdout=slave, stderr=slave)
    os.close(slave)
    try:
        shown = _read_pty(master, proc)
        proc.wait(timeout=30)
    finally:
        os.close(master)
        kill_tree(proc)
    assert proc.returncode == 1, shown[-2000:]
    assert b"\x1b[" in shown, "a terminal gets the live view (cursor moves, colours)"
    _assert_no_sequences(shown)
    assert b"the link text" in shown
    assert b"cannot use bad value 31m!" in shown
    faults.survived("escape sequences from steps and ctx on a terminal (live view, summary)")


SPOIL = """
EVIL = type("\\x1b]0;pwned\\x07[b]not bold[/b]", (), {})


def spoil(ctx):
    ctx["rows"] = []
    ctx["rows"].append(EVIL())  # in place: ctx.json cannot hold it, and the saver says why
    ctx["n"] = 1
"""


async def test_tui_shows_ctx_keys_messages_and_sessions_without_their_escapes(
    tmp_path, orch, screendir, faults
):
    from textual.widgets import DataTable

    from tui.widgets import CtxInspector

    run_screen("-dmS", SESSION, "sleep", "60", check=True)

    module = write_module(tmp_path, SPOIL)
    app, runner = orch(
        f"""
        ctx:
          "\\e]0;pwned\\akey": 1
          nested: {{"\\e[31mred\\e[0m": 2}}
        steps:
          - {{name: spoil, type: python, module: {module}, function: spoil}}
        """
    )
    faults.tried("escape sequences in ctx keys, messages, session names (TUI)", 3)
    async with app.run_test(size=SIZE) as pilot:

        def labels() -> list[str]:
            found, nodes = [], [app.query_one(CtxInspector).root]
            while nodes:
                node = nodes.pop()
                found.append(str(node.label))
                nodes.extend(node.children)
            return found

        def saver_message() -> list[str]:
            return [str(n.message) for n in app._notifications if "saved without" in str(n.message)]

        await until(pilot, lambda: "n: 1" in labels(), 10, "the ctx in the inspector")
        app.query_one(CtxInspector).expand_key("nested")
        await until(pilot, lambda: "red: 2" in labels(), 10, "the nested key")
        shown = labels()
        assert "key: 1" in shown, shown
        assert not [label for label in shown if any(c < " " for c in label)], shown
        (message,) = await until(pilot, saver_message, 10, "the save error's notice")
        assert "\x1b" not in message and "\x07" not in message
        assert message.endswith("Type is not JSON serializable: [b]not bold[/b]"), message

        await pilot.press("S")  # every session on the machine
        table = await until(pilot, lambda: app.screen.query(DataTable).first(), 10, "sessions")

        def names() -> list[str]:
            return [str(table.get_row_at(i)[2]) for i in range(table.row_count)]

        await until(pilot, lambda: "evilname" in names(), 10, f"evilname in {names()}")
        assert not [n for n in names() if any(c < " " for c in n)], names()
    faults.survived("escape sequences in ctx keys, messages, session names (TUI)", 3)


def test_sessions_listing_shows_names_without_their_escapes(tmp_path, screendir, faults):
    faults.tried("escape sequences in a screen session's name (orch-tui sessions)")
    run_screen("-dmS", SESSION, "sleep", "60", check=True)
    result = run_cli("sessions", "--backend", "screen", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    _assert_no_sequences(result.stdout.encode())
    assert b"\x1b" not in result.stdout.encode()
    row = next(line for line in result.stdout.splitlines() if "evil" in line)
    assert row.split()[:3] == ["screen", "evilname", "detached"], row
    faults.survived("escape sequences in a screen session's name (orch-tui sessions)")
