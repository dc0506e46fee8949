"""The ``orch-tui`` command line.

Start-up matters (``orch-tui --version`` runs in CI scripts and shell prompts), so this module
imports only the standard library at the top; the runner, Rich and Textual are imported by the
command that needs them.
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys
from pathlib import Path

from core import __version__

SUBCOMMANDS = ("validate", "graph", "sessions", "clean", "schema")
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(Exception):
    """A mistake in how orch-tui was called: exit 2 with the message, no traceback."""


def _run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="orch-tui",
        description="Run a recipe of python, shell and session steps in a terminal UI, "
        "or headless with --no-ui.",
        epilog="other commands: orch-tui validate|graph|sessions|clean|schema ... (-h for each)",
    )
    p.add_argument("recipe_pos", nargs="?", metavar="RECIPE", help="the recipe YAML file")
    p.add_argument("--recipe", dest="recipe_opt", metavar="RECIPE", help="same, the seed's way")
    p.add_argument("--no-ui", action="store_true", help="run headless (the default off a terminal)")
    p.add_argument("--only", nargs="+", metavar="STEP", help="run only these steps")
    p.add_argument("--skip", nargs="+", metavar="STEP", help="do not run these steps")
    p.add_argument("--resume-from", metavar="STEP", help="restore the last run's ctx, start here")
    p.add_argument("--jobs", type=_positive_int, metavar="N", help="steps at once (default: CPUs)")
    p.add_argument("--run-dir", type=Path, metavar="DIR", help="where this run's files go")
    p.add_argument(
        "--keep-alive", action="store_true", help="keep background steps up until Ctrl-C"
    )
    p.add_argument("--debug", action="store_true", help="verbose runner logging, tracebacks")
    p.add_argument("--version", action="version", version=f"orch-tui {__version__}")
    return p


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _sub_parser(command: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"orch-tui {command}")
    if command in ("validate", "graph"):
        p.add_argument("recipe", metavar="RECIPE")
    if command == "validate":
        p.description = "Check a recipe without running it; exit 0 if it is good, 2 if not."
    if command == "graph":
        p.description = "Print the step graph."
        p.add_argument("--format", choices=("dot", "mermaid"), default="dot")
    if command == "sessions":
        p.description = "List GNU screen and tmux sessions on this machine."
        p.add_argument("--backend", choices=("screen", "tmux"))
        p.add_argument(
            "--socket",
            metavar="NAME",
            help="only this tmux -L server (default: every one of yours)",
        )
    if command == "clean":
        p.description = "Remove generated runs, logs and caches (never sources)."
        p.add_argument("--dry-run", action="store_true", help="list what would go")
    if command == "schema":
        p.description = "Print the recipe JSON Schema (for editors)."
    p.add_argument("--debug", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        if argv and argv[0] in SUBCOMMANDS:
            args = _sub_parser(argv[0]).parse_args(argv[1:])
            return _COMMANDS[argv[0]](args)
        return _cmd_run(_run_parser().parse_args(argv))
    except UsageError as exc:
        print(f"orch-tui: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception as exc:
        if debug:
            raise
        print(f"orch-tui: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        print("orch-tui: run again with --debug for the traceback", file=sys.stderr)
        return EXIT_FAILED


def _load(path: str, *, debug: bool = False):
    from core.recipe import RecipeError, load_recipe

    try:
        return load_recipe(path)
    except RecipeError as exc:
        if debug:
            import traceback

            traceback.print_exc()
        problems = exc.problems
        noun = "problem" if len(problems) == 1 else "problems"
        raise UsageError(f"{len(problems)} {noun} in the recipe:\n{exc}") from None


def _check_names(recipe, names: list[str] | None, option: str) -> None:
    known = [s.name for s in recipe.steps]
    for name in names or []:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UsageError(f"{option}: no step named {name!r} in {recipe.path.name}{hint}")


# ---------------------------------------------------------------------------------- run
def _cmd_run(args: argparse.Namespace) -> int:
    recipe_path = args.recipe_opt or args.recipe_pos
    if not recipe_path:
        raise UsageError("no recipe given: orch-tui RECIPE (or --recipe RECIPE); see --help")
    if args.recipe_opt and args.recipe_pos and args.recipe_opt != args.recipe_pos:
        raise UsageError("give the recipe once, either as RECIPE or as --recipe")
    _setup_logging(args.debug)
    recipe = _load(recipe_path, debug=args.debug)
    _check_names(recipe, args.only, "--only")
    _check_names(recipe, args.skip, "--skip")
    if args.resume_from:
        _check_names(recipe, [args.resume_from], "--resume-from")
    resume_ctx = _resume_ctx(recipe, args) if args.resume_from else None

    use_ui = not args.no_ui and sys.stdout.isatty() and sys.stdin.isatty()
    if use_ui:
        try:
            from tui.app import run_app
        except ImportError:
            use_ui = False
        else:
            return run_app(recipe, args, resume_ctx)
    return _run_headless(recipe, args, resume_ctx)


def _resume_ctx(recipe, args: argparse.Namespace) -> dict:
    import json

    from core.store import RUNS_DIR, find_latest_run

    roots = [Path.cwd() / RUNS_DIR]
    if args.run_dir is not None:
        roots.append(args.run_dir.absolute().parent)
    previous = find_latest_run(recipe.path, roots, exclude=args.run_dir)
    if previous is None:
        raise UsageError(
            f"--resume-from: no earlier run of {recipe.path.name} under "
            + " or ".join(str(r) for r in roots)
        )
    try:
        return json.loads((previous / "ctx.json").read_bytes())
    except (OSError, ValueError) as exc:
        raise UsageError(f"--resume-from: cannot read {previous / 'ctx.json'}: {exc}") from None


def make_runner(recipe, args: argparse.Namespace, resume_ctx: dict | None, **extra):
    from core.resources import ResourceSampler
    from core.runner import Runner

    if args.run_dir is not None and args.run_dir.exists() and any(args.run_dir.iterdir()):
        raise UsageError(f"--run-dir {args.run_dir} exists and is not empty")
    return Runner(
        recipe,
        run_dir=args.run_dir,
        jobs=args.jobs,
        only=args.only,
        skip=args.skip,
        resume_from=args.resume_from,
        resume_ctx=resume_ctx,
        keep_alive=args.keep_alive,
        sampler=ResourceSampler(),
        **extra,
    )


def _run_headless(recipe, args: argparse.Namespace, resume_ctx: dict | None) -> int:
    import signal

    from core.reporter import HeadlessReporter

    runner = make_runner(recipe, args, resume_ctx)
    reporter = HeadlessReporter(runner.run_dir, stream=sys.stdout)
    runner.subscribe(reporter.handle)
    interrupts = 0

    def on_signal(signum: int, _frame) -> None:
        nonlocal interrupts
        interrupts += 1
        if interrupts == 1:
            name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
            print(f"\norch-tui: {name}: stopping steps (again to kill at once)", file=sys.stderr)
            runner.stop_run(signum)
        else:
            runner.stop_run(signal.SIGKILL, force=True)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = runner.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    reporter.close(runner.state())
    return code


def _setup_logging(debug: bool) -> None:
    import logging

    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="orch-tui %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


# ---------------------------------------------------------------------------------- others
def _cmd_validate(args: argparse.Namespace) -> int:
    recipe = _load(args.recipe, debug=args.debug)
    kinds: dict[str, int] = {}
    for step in recipe.steps:
        kinds[step.type] = kinds.get(step.type, 0) + 1
    detail = ", ".join(f"{n} {k}" for k, n in kinds.items())
    print(f"{args.recipe}: OK, {len(recipe.steps)} steps ({detail})")
    return EXIT_OK


def _cmd_graph(args: argparse.Namespace) -> int:
    from core.graph import to_dot, to_mermaid

    recipe = _load(args.recipe, debug=args.debug)
    labels = {s.name: s.type + (" (bg)" if s.background else "") for s in recipe.steps}
    render = to_dot if args.format == "dot" else to_mermaid
    sys.stdout.write(render(recipe.deps, labels=labels))
    return EXIT_OK


def _cmd_schema(args: argparse.Namespace) -> int:
    import json

    from core.recipe import recipe_json_schema

    print(json.dumps(recipe_json_schema(), indent=2))
    return EXIT_OK


def _cmd_sessions(args: argparse.Namespace) -> int:
    from core.sessions.base import get_backend, list_sessions

    if args.backend and not get_backend(args.backend).available():
        raise UsageError(f"{args.backend} is not installed (apt-get install {args.backend})")
    backends = [args.backend] if args.backend else ["screen", "tmux"]
    rows, problems = list_sessions(backends, socket=args.socket)
    missing = {get_backend(name).install_hint for name in backends}
    errors = [p for p in problems if p not in missing]  # a multiplexer not installed: skipped
    if rows:
        _print_sessions(rows)
    elif not errors:
        print("no sessions")
    for error in errors:
        print(f"orch-tui: {error}", file=sys.stderr)
    return EXIT_USAGE if errors else EXIT_OK


def _print_sessions(rows) -> None:
    """One aligned line per session; SOCKET is the tmux server (`-L` name, or default)."""
    header = ("BACKEND", "SOCKET", "NAME", "STATE", "PID", "CREATED", "RUN")
    table = [header] + [
        (
            s.backend,
            s.server,
            s.name,
            s.state,
            str(s.pid or ""),
            _fmt_time(s.created),
            s.run_id or "",
        )
        for s in rows
    ]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _fmt_time(ts: float | None) -> str:
    if not ts:
        return ""
    import time

    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


CLEAN_DIRS = (".orch", ".pytest_cache", ".ruff_cache", ".hypothesis", "logs")
CLEAN_GLOBS = ("**/__pycache__", "**/*.egg-info", "bench/results.json.tmp")


def _cmd_clean(args: argparse.Namespace) -> int:
    """What tools/clean_pristine.sh did: generated files only, listed as they go."""
    import shutil

    root = Path.cwd()
    targets: list[Path] = [root / d for d in CLEAN_DIRS if (root / d).exists()]
    for pattern in CLEAN_GLOBS:
        targets.extend(
            p for p in root.glob(pattern) if ".venv" not in p.parts and ".git" not in p.parts
        )
    if not targets:
        print("nothing to clean")
        return EXIT_OK
    for path in sorted(set(targets)):
        print(("would remove " if args.dry_run else "removed ") + os.path.relpath(path, root))
        if not args.dry_run:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
    return EXIT_OK


_COMMANDS = {
    "validate": _cmd_validate,
    "graph": _cmd_graph,
    "sessions": _cmd_sessions,
    "clean": _cmd_clean,
    "schema": _cmd_schema,
}

if __name__ == "__main__":
    sys.exit(main())
