"""core/ never depends on tui/ or textual, and the fast commands import nothing heavy.

Checked in fresh interpreters, because within pytest everything is already imported.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("textual", "dash", "plotly", "tui.app")


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_core_sources_never_import_tui_or_textual():
    offenders = []
    for path in sorted((ROOT / "core").rglob("*.py")):
        for name in _imports(path):
            if name.split(".")[0] in ("tui", "textual"):
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert offenders == []


def _loaded_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys; print('\\n'.join(sys.modules))"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return set(out.split())


def test_importing_the_whole_core_loads_no_ui():
    modules = _loaded_after(
        "import core.runner, core.recipe, core.reporter, core.sessions.screen, core.sessions.tmux"
    )
    assert not {m for m in modules if m.split(".")[0] in ("textual", "tui")}


def test_version_and_validate_do_not_import_heavy_modules():
    for code in (
        "import sys; sys.argv=['orch-tui','--version']\nfrom tui.cli import main\n"
        "try: main()\nexcept SystemExit: pass",
        "from tui.cli import main; main(['validate', 'recipes/example_parallel.yaml'])",
    ):
        modules = _loaded_after(code)
        assert not {m for m in modules if m.split(".")[0] in ("textual", "dash", "plotly")}
        assert "tui.app" not in modules
