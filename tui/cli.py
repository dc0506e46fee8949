"""The ``orch-tui`` command line.

Start-up matters (``orch-tui --version`` runs in CI scripts and shell prompts), so this module
imports only the standard library at the top; the runner, Rich and Textual are imported by the
command that needs them.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import gc
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from core import __version__
from core.log import say_where_a_crash_is

if __name__ == "__main__":
    # ``python -m tui.cli``: this module is __main__, and tui.ctl, tui.attach and tui.runs would
    # import a second tui.cli whose UsageError main() does not catch ("internal error", exit 1
    # instead of the message and exit 2). One module under both names.
    sys.modules.setdefault("tui.cli", sys.modules[__name__])

if TYPE_CHECKING:
    import logging
    from collections.abc import Callable, Sequence

    from core.recipe.problems import Problem
    from core.store import ResumePoint
    from tui.spawn import Launch

#: the clients of a run (issue 13), each in its own module: ``add_arguments`` and ``cmd_<name>``
CLIENT_COMMANDS = {"runs": "tui.runs", "attach": "tui.attach", "ctl": "tui.ctl"}
SUBCOMMANDS = ("validate", "graph", "sessions", "clean", "schema", *CLIENT_COMMANDS)
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(Exception):
    """A mistake in how orch-tui was called: exit 2 with the message, no traceback."""


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's, given the terminal's width: argparse asks shutil.get_terminal_size for it,
    and add_argument makes a formatter, so every run paid ``import shutil`` (bz2, lzma: ~2 ms)
    for a width only --help and a usage error use. The same width: COLUMNS, else stdout's."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, width=_terminal_columns() - 2)  # argparse's margin


class _Parser(argparse.ArgumentParser):
    """argparse's parser with a usage error on one line, as orch-tui's other errors are:
    argparse prints the whole usage (five lines for the run's options) above the error."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _terminal_columns() -> int:
    try:
        columns = int(os.environ.get("COLUMNS", 0))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


def _run_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="orch-tui",
        formatter_class=_HelpFormatter,
        description="Run a recipe of python, shell and session steps in a terminal UI, "
        "or headless with --no-ui.",
        epilog="other commands: orch-tui validate|graph|sessions|clean|schema|runs|attach|ctl ... "
        "(-h for each). A recipe that checked clean is kept compiled in "
        "$XDG_CACHE_HOME/orch-tui/recipes; ORCH_TUI_NO_CACHE=1 turns that off.",
    )
    p.add_argument("recipe_pos", nargs="?", metavar="RECIPE", help="the recipe YAML file")
    p.add_argument("--recipe", dest="recipe_opt", metavar="RECIPE", help="same, the seed's way")
    p.add_argument("--no-ui", action="store_true", help="run headless (the default off a terminal)")
    p.add_argument(
        "--detach",
        action="store_true",
        help="start the run in the background and return (orch-tui attach comes back to it)",
    )
    p.add_argument(
        "--exit-when-done",
        action="store_true",
        help="end the run as soon as no step can run (no waiting for retry or skip)",
    )
    for option, what in (("--only", "run only these steps"), ("--skip", "do not run these steps")):
        p.add_argument(
            option,
            nargs="+",
            action="extend",
            metavar="STEP",
            help=f"{what}: {option} a,b or {option} a {option} b (or {option} a b after RECIPE)",
        )
    p.add_argument("--resume-from", metavar="STEP", help="restore the last run's ctx, start here")
    p.add_argument("--jobs", type=_positive_int, metavar="N", help="steps at once (default: CPUs)")
    p.add_argument("--run-dir", type=Path, metavar="DIR", help="where this run's files go")
    p.add_argument(
        "--executor",
        type=_executor,
        metavar="URL",
        help="dask-local://N or dask://HOST:PORT: python steps (and where: cluster shell steps) on Dask workers",
    )
    p.add_argument(
        "--keep-alive", action="store_true", help="keep background steps up until Ctrl-C"
    )
    p.add_argument(
        "--debug",
        action="store_true",
        help="verbose runner logging, tracebacks; steps get ORCH_DEBUG=1",
    )
    p.add_argument("--version", action="version", version=f"orch-tui {__version__}")
    return p


def whole_number(minimum: int) -> Callable[[str], int]:
    """An argparse ``type``: a whole number of at least ``minimum``, said alike for every
    option (argparse's own "invalid int value" was ``ctl events --since``'s)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


_positive_int = whole_number(1)


def _executor(text: str) -> str:
    from core.cluster import parse_executor

    try:
        return parse_executor(text).url
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix(f"--executor {text!r}: ")) from None


def _sub_parser(command: str) -> argparse.ArgumentParser:
    p = _Parser(prog=f"orch-tui {command}", formatter_class=_HelpFormatter)
    if command == "validate":
        # several: a pre-commit hook hands over every staged recipe at once
        p.add_argument("recipes", metavar="RECIPE", nargs="+")
        p.description = "Check recipes without running them; exit 0 if every one is good, 2 if not."
    if command == "graph":
        p.add_argument("recipe", metavar="RECIPE")
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
        p.description = (
            "Remove what orch-tui made here: the runs in the .orch folder of this folder and "
            "of its workspace's root (not a run still going). Nothing else of yours: not "
            "logs/, not build output, not a symlink."
        )
        p.add_argument("--dry-run", action="store_true", help="list what would go")
    if command == "schema":
        p.description = "Print the recipe JSON Schema (for editors)."
    if command in CLIENT_COMMANDS:
        _client_module(command).add_arguments(p)
    p.add_argument("--debug", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    _closed_streams_to_devnull()
    say_where_a_crash_is()  # a step module's C code crashing as the recipe is checked
    try:
        code = _dispatch(argv)
    except UsageError as exc:
        print(f"orch-tui: {exc}", file=sys.stderr)
        code = EXIT_USAGE
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    except Exception as exc:
        if isinstance(exc, BrokenPipeError) and _stdout_closed():
            from tui import stdout

            stdout.gone()  # the reader went away (`orch-tui graph R | head`): nothing to say
            code = EXIT_OK
        elif isinstance(exc, OSError) and (words := _stdout_fails(exc)) is not None:
            print(f"orch-tui: cannot write to stdout: {words}", file=sys.stderr)
            code = EXIT_FAILED
        elif debug:
            raise
        elif (words := _limit_words(exc)) is not None:  # not a bug: a limit of this process
            print(f"orch-tui: {words}", file=sys.stderr)
            code = EXIT_FAILED
        else:
            print(f"orch-tui: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
            print("orch-tui: run again with --debug for the traceback", file=sys.stderr)
            code = EXIT_FAILED
    try:
        sys.stdout.flush()  # here, not at exit, where a closed pipe would print a warning
    except BrokenPipeError:
        from tui import stdout

        stdout.gone()
    except OSError as exc:  # a full disk: what is left of a listing cannot be written
        from tui import stdout

        stdout.gone()
        print(f"orch-tui: cannot write to stdout: {exc.strerror or exc}", file=sys.stderr)
        code = code or EXIT_FAILED
    # The command is over (its files closed, its output flushed) and the process ends: what it
    # built is frozen out of the garbage collector, whose passes at interpreter exit went
    # through every module, the recipe and the run's objects to free memory the system takes
    # back anyway (a one-step run: ~45 ms of CPU, more than its run).
    gc.freeze()
    return code


def _stdout_closed() -> bool:
    from tui import stdout

    return stdout.closed()


def _stdout_fails(exc: OSError) -> str | None:
    """Why stdout cannot be written (the error's words), if that is what ``exc`` is: a write
    to a full disk (a CI log's), or to /dev/full; None for any other error. What stdout could
    not take is given up (sent to /dev/null)."""
    import stat

    from tui import stdout

    if exc.filename is not None or exc.errno not in (errno.ENOSPC, errno.EDQUOT):
        return None  # a file's error, not the stream's; or not a full disk
    try:
        info = os.fstat(sys.stdout.fileno())
        if stat.S_ISCHR(info.st_mode):
            full = os.stat("/dev/full").st_rdev == info.st_rdev
        else:
            space = os.fstatvfs(sys.stdout.fileno())
            full = exc.errno == errno.EDQUOT or not space.f_bavail or not space.f_bfree
    except (OSError, ValueError):
        return None
    if not full:
        return None
    stdout.gone()
    return exc.strerror or str(exc)


def _limit_words(exc: BaseException) -> str | None:
    from core.limits import limit_words

    return limit_words(exc)


def _closed_streams_to_devnull() -> None:
    """A standard stream the caller closed (``orch-tui R --no-ui >&-``) is None in Python, and
    every write to it failed: tracebacks, exit 1 for a run that succeeded. It becomes
    /dev/null, as ``> /dev/null`` would, on its own descriptor: a file opened later (a log)
    must never take descriptor 1 and get what was meant for the terminal."""
    for fd, name, mode in ((0, "stdin", "r"), (1, "stdout", "w"), (2, "stderr", "w")):
        if getattr(sys, name) is not None:
            continue
        _devnull_at(fd)
        setattr(sys, name, open(fd, mode, encoding="utf-8"))  # noqa: SIM115 (the process's)


def _devnull_at(fd: int) -> None:
    """/dev/null on descriptor ``fd`` (0, 1 or 2), whatever was there."""
    null = os.open(os.devnull, os.O_RDWR)
    if null != fd:
        os.dup2(null, fd)
        os.close(null)


def _dispatch(argv: list[str]) -> int:
    at = _subcommand_at(argv)
    if at is not None:
        command = argv[at]
        args = _sub_parser(command).parse_args(argv[:at] + argv[at + 1 :])
        if command in CLIENT_COMMANDS:
            return getattr(_client_module(command), f"cmd_{command}")(args)
        return _COMMANDS[command](args)
    return _cmd_run(_run_parser().parse_args(argv))


def _client_module(command: str):
    import importlib

    return importlib.import_module(CLIENT_COMMANDS[command])


def _subcommand_at(argv: list[str]) -> int | None:
    """Where the subcommand is: first, or after ``--debug``. A subcommand name there is always
    the subcommand, even when a file of that name is in the cwd: a recipe named like one is
    given as ``./NAME`` or ``--recipe NAME``."""
    for i, arg in enumerate(argv):
        if arg != "--debug":
            return i if arg in SUBCOMMANDS else None
    return None


def _load(path: str, *, debug: bool = False):
    from core.recipe import RecipeError, load_recipe

    try:
        return load_recipe(path)
    except RecipeError as exc:
        if debug:
            import traceback

            traceback.print_exc()
        problems = exc.problems
        if len(problems) == 1 and problems[0].line is None:  # the file itself: missing, a folder
            raise UsageError(f"recipe {problems[0]}") from None
        noun = "problem" if len(problems) == 1 else "problems"
        raise UsageError(f"{len(problems)} {noun} in the recipe:\n{exc}") from None


def _print_warnings(warnings: Sequence[Problem]) -> None:
    for warning in warnings:
        print(f"orch-tui: warning: {warning}", file=sys.stderr)


def _step_names(recipe, values: list[str] | None, option: str) -> list[str] | None:
    """The steps named by --only/--skip: one a word (``--only a b``), repeated (``--only a
    --only b``) or comma-separated (``--only a,b``). A value that is a step's whole name is
    that step, commas and all."""
    if values is None:
        return None
    known = [s.name for s in recipe.steps]
    names: list[str] = []
    for value in values:
        parts = [value] if value in known else [p.strip() for p in value.split(",")]
        for name in filter(None, parts):
            if name not in known:
                raise _no_such_step(recipe, name, option)
            names.append(name)
    if not names:
        raise UsageError(f"{option}: no step names given")
    return list(dict.fromkeys(names))


def _check_only(recipe, args: argparse.Namespace) -> None:
    """A step named by --only that another option keeps from running is a usage error: the
    options contradict each other, and the run would skip it and pass (exit 0) without
    running what was asked for, a green CI job that did nothing."""
    first = recipe.step(args.resume_from).index if args.resume_from else 0
    for name in args.only or ():
        if name in (args.skip or ()):
            raise UsageError(f"--only {name} and --skip {name}: choose one")
        if recipe.step(name).index < first:
            raise UsageError(
                f"--only {name}: {name!r} comes before --resume-from {args.resume_from}, "
                "so it would not run"
            )


def _no_such_step(recipe, name: str, option: str) -> UsageError:
    import difflib  # only a mistyped name needs it

    known = [s.name for s in recipe.steps]
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return UsageError(f"{option}: no step named {name!r} in {recipe.path.name}{hint}")


def _recipe_path(args: argparse.Namespace) -> str:
    """The recipe, wherever it was put. ``--only``/``--skip`` take every word after them, so
    ``orch-tui --only load r1.yaml`` hands them the recipe: when no recipe is given elsewhere,
    a word there ending in .yaml/.yml is taken back as the recipe."""
    if args.recipe_pos in SUBCOMMANDS:
        name = args.recipe_pos
        raise UsageError(
            f"{name!r} is a command: put it first (orch-tui {name} ...); "
            f"a recipe file of that name is given as ./{name} or --recipe {name}"
        )
    given = [p for p in (args.recipe_opt, args.recipe_pos) if p]
    for option in ("only", "skip"):
        values = getattr(args, option) or []
        found = [v for v in values if v.lower().endswith((".yaml", ".yml"))]
        if found and not given:
            setattr(args, option, [v for v in values if v not in found])
            given.extend(found)
    if not given:
        hint = ""
        if args.only or args.skip:
            hint = " (--only and --skip take the words after them: put RECIPE first, or --only a,b)"
        raise UsageError(f"no recipe given: orch-tui RECIPE (or --recipe RECIPE){hint}; see --help")
    if len(set(given)) > 1:
        raise UsageError(f"more than one recipe given ({', '.join(given)}): give one")
    return given[0]


# ---------------------------------------------------------------------------------- run
def _cmd_run(args: argparse.Namespace) -> int:
    recipe_path = _recipe_path(args)
    _setup_logging(args.debug)
    if args.debug:  # for the steps: shell steps inherit it, python steps (hello_dash) read it
        os.environ["ORCH_DEBUG"] = "1"
    launch = _launch(args, recipe_path)
    try:
        return _cmd_run_recipe(args, recipe_path, launch)
    finally:
        if launch is not None:
            launch.cancel()  # a usage error or headless after all (no Textual)


def _launch(args: argparse.Namespace, recipe_path: str) -> Launch | None:
    """The run daemon, started now where the run will go to one (--detach, or the app on a
    terminal): it loads the recipe while this process checks it (tui/spawn.py)."""
    on_terminal = not args.no_ui and sys.stdout.isatty() and sys.stdin.isatty()
    if not (args.detach and not args.no_ui) and not on_terminal:
        return None
    from tui.spawn import Launch

    return Launch(os.path.abspath(recipe_path))


def _cmd_run_recipe(args: argparse.Namespace, recipe_path: str, launch: Launch | None) -> int:
    recipe = _load(recipe_path, debug=args.debug)
    args.only = _step_names(recipe, args.only, "--only")
    args.skip = _step_names(recipe, args.skip, "--skip")
    if args.resume_from and args.resume_from not in {s.name for s in recipe.steps}:
        raise _no_such_step(recipe, args.resume_from, "--resume-from")
    _check_only(recipe, args)
    _print_warnings(recipe.warnings)
    resume = _resume_point(recipe, args) if args.resume_from else None

    if args.detach:
        if args.no_ui:
            raise UsageError(
                "--detach runs in the background, --no-ui in the foreground: choose one"
            )
        return _run_daemon(recipe, args, resume, launch, attach=False)
    use_ui = not args.no_ui and sys.stdout.isatty() and sys.stdin.isatty()
    if use_ui:
        try:
            import tui.app  # noqa: F401 - Textual may be missing: then headless
        except ImportError:
            use_ui = False
        else:
            return _run_daemon(recipe, args, resume, launch, attach=True)
    if launch is not None:
        launch.cancel()
    return _run_headless(recipe, args, resume)


def _resume_point(recipe, args: argparse.Namespace) -> ResumePoint:
    """The ctx --resume-from restores and the run it comes from."""
    from core.rundir import runs_root
    from core.store import ResumeError, find_resume_point

    roots = [runs_root(Path.cwd())]
    if args.run_dir is not None:
        roots.append(args.run_dir.absolute().parent)
    first = recipe.step(args.resume_from).index
    before = [s.name for s in recipe.steps if s.index < first]
    try:
        return find_resume_point(recipe.path, args.resume_from, before, roots, exclude=args.run_dir)
    except ResumeError as exc:
        raise UsageError(f"--resume-from {args.resume_from}: {exc}") from None


def make_runner(recipe, args: argparse.Namespace, resume: ResumePoint | None, **extra):
    from core.resources import ResourceSampler
    from core.rundir import create_problem
    from core.runner import Runner

    if args.run_dir is not None:
        _check_run_dir(args.run_dir)
    cluster = _open_cluster(recipe, args.executor)
    try:
        return Runner(
            recipe,
            cluster=cluster,
            run_dir=args.run_dir,
            jobs=args.jobs,
            only=args.only,
            skip=args.skip,
            resume=resume,
            keep_alive=args.keep_alive,
            sampler=ResourceSampler(),
            **extra,
        )
    except OSError as exc:  # another user's folder; one that cannot be made (read-only)
        if cluster is not None:
            cluster.close()
        raise UsageError(create_problem(exc, args.run_dir)) from None


def _open_cluster(recipe, executor: str | None):
    """The run's Dask cluster (core.cluster), or None; a cluster that cannot run the recipe is
    a usage error: exit 2 before anything runs."""
    if executor is None and recipe.executor is None:
        return None  # distributed is not even imported
    from core.cluster import ClusterError, open_cluster

    try:
        return open_cluster(executor, recipe)
    except ClusterError as exc:
        raise UsageError(str(exc)) from None


def _check_run_dir(run_dir: Path) -> None:
    """--run-dir must be a new folder or an empty one, in a place a folder can be made."""
    try:
        if run_dir.exists():
            if not run_dir.is_dir():
                raise UsageError(f"--run-dir {run_dir}: is a file, expected a folder")
            if any(run_dir.iterdir()):
                raise UsageError(f"--run-dir {run_dir}: exists and is not empty")
            return
        above = next((p for p in run_dir.absolute().parents if p.exists()), None)
        if above is not None and not above.is_dir():
            raise UsageError(f"--run-dir {run_dir}: {above} is a file, not a folder")
    except OSError as exc:
        raise UsageError(f"--run-dir {run_dir}: {exc.strerror or exc}") from None


def _stdin_to_devnull() -> None:
    """Python steps run in this process: one that reads stdin gets end of file, as in the run
    daemon and as shell steps do, instead of waiting on the terminal (or on a CI job's or an
    ssh channel's stdin, which may never close). Nothing of a headless run reads it."""
    _devnull_at(0)


def _stop_signals() -> tuple[int, ...]:
    """The signals that stop a headless run cleanly (its state saved, exit 130): Ctrl-C,
    SIGTERM, and the terminal closing under it (SIGHUP: a lost ssh connection, a killed tmux),
    unless SIGHUP is ignored (``nohup``: the user asked the run to outlive its terminal)."""
    import signal

    hangup = () if signal.getsignal(signal.SIGHUP) == signal.SIG_IGN else (signal.SIGHUP,)
    return (signal.SIGINT, signal.SIGTERM, *hangup)


def _stopping_line(signum: int, *, tty: bool) -> str:
    """What a headless run says as a signal stops it. On a terminal, SIGINT is Ctrl-C; off
    one (a CI job cancelled: GitHub Actions sends SIGINT) nobody pressed it: the signal by
    its name."""
    import signal

    name = "Ctrl-C" if signum == signal.SIGINT and tty else signal.Signals(signum).name
    return f"orch-tui: {name}: stopping steps (again to kill at once)"


def _run_headless(recipe, args: argparse.Namespace, resume: ResumePoint | None) -> int:
    import signal

    from core.control import LocalControl, interrupted_by
    from tui.headless import HeadlessReporter

    if not args.debug:  # --debug: a python step's breakpoint() gets the terminal
        _stdin_to_devnull()
    runner = make_runner(recipe, args, resume, own_process=True)
    reporter = HeadlessReporter(LocalControl(runner), stream=sys.stdout)
    interrupts = 0

    def on_signal(signum: int, _frame) -> None:
        nonlocal interrupts
        interrupts += 1
        if interrupts == 1:
            line = _stopping_line(signum, tty=reporter.tty)
            if reporter.tty:  # above the live view, by the thread that draws it
                reporter.say(line)
            else:
                with contextlib.suppress(OSError):
                    print(line, file=sys.stderr)
            # a closed terminal stops the steps as SIGTERM would: to a step, SIGHUP may mean
            # "reload" (its own process group never had the terminal's)
            runner.stop_run(
                signal.SIGTERM if signum == signal.SIGHUP else signum, note=interrupted_by(signum)
            )
        else:
            runner.stop_run(signal.SIGKILL, force=True)

    previous = {sig: signal.signal(sig, on_signal) for sig in _stop_signals()}
    from core.runner import RunStartError

    try:
        code = runner.run()
    except RunStartError as exc:  # nothing ran: exit 2, as for a run folder it cannot make
        raise UsageError(str(exc)) from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not reporter.close():
        from tui import stdout

        # stdout took nothing for ORCH_STDOUT_TIMEOUT seconds: what is left for it goes
        # nowhere, and the exit's own flush of sys.stdout cannot block either
        stdout.gone()
        stdout.tell_stderr(
            "orch-tui: stdout is not being read: gave up on the rest of the output "
            f"(the run's files are complete in {runner.run_dir})\n"
        )
    elif (error := reporter.output_error) is not None and error.errno != errno.EPIPE:
        from tui import stdout

        # a CI log on a full disk: its output stopped short, which is not the reader leaving
        stdout.gone()
        stdout.tell_stderr(
            f"orch-tui: cannot write to stdout ({error.strerror or error}): the output stops "
            f"short there (the run's files are complete in {runner.run_dir})\n"
        )
    return code


def _run_daemon(
    recipe, args: argparse.Namespace, resume: ResumePoint | None, launch: Launch, *, attach: bool
) -> int:
    """The run in its daemon (``launch``, tui/spawn.py): the TUI attached to it, or
    (``--detach``) left to run in the background."""
    from tui.spawn import StartFailed

    if args.run_dir is not None:
        _check_run_dir(args.run_dir)
    options = {
        "run_dir": None if args.run_dir is None else os.path.abspath(args.run_dir),
        "jobs": args.jobs,
        "executor": args.executor,
        "only": args.only,
        "skip": args.skip,
        "resume": None if resume is None else resume.record(),
        "keep_alive": args.keep_alive,
        "debug": args.debug,
        "exit_when_done": args.exit_when_done,
    }
    try:
        started = launch.start(options)
    except StartFailed as exc:
        print(f"orch-tui: {exc}", file=sys.stderr)
        return exc.code
    if not attach:
        try:
            print(
                f"run {started.run_id} started in the background (pid {started.pid}); "
                f"attach with: orch-tui attach {started.run_id}",
                flush=True,
            )
        except OSError as exc:  # a full disk, a reader gone: nobody learnt the run's id
            return _call_off(launch, started, exc)
        return EXIT_OK
    from tui.remote import run_attached

    if args.debug:
        _log_to_file(started.run_dir / "debug.log")
    code = run_attached(started.run_dir, launch=launch)
    if _stuck_threads():
        # Textual's input thread spins on a terminal that hung up and is not a daemon, so the
        # interpreter would wait for it forever at exit (seen with a killed tmux): leave.
        sys.stdout.flush()
        os._exit(code)
    return code


def _call_off(launch: Launch, started, exc: OSError) -> int:
    """The run --detach started, stopped (exit 1): its id could not be printed, so no script
    would know of it, and a run without --exit-when-done would stay up until someone closed
    it. Its daemon is waited for (at most 30 s), so nothing of it is left once this returns."""
    from core.client import DaemonGone, ProtocolError, connect
    from tui import stdout

    stdout.gone()  # what could not be written goes nowhere: the exit's own flush must not fail
    try:
        with connect(started.run_dir, client="cli", attach=False) as control:
            control.command("stop_run")
    except (DaemonGone, ProtocolError):
        pass  # it ended on its own meanwhile
    launch.wait_exit(30)
    with contextlib.suppress(OSError):
        print(
            f"orch-tui: cannot print the run's id ({exc.strerror or exc}): run "
            f"{started.run_id} stopped (nobody would know of it)",
            file=sys.stderr,
        )
    return EXIT_FAILED


def _log_to_file(path: Path) -> None:
    """--debug's log goes to a file: the app draws on stderr, where log lines would tear it."""
    import logging

    from core.log import configure

    path.parent.mkdir(parents=True, exist_ok=True)
    stream = open(path, "a", encoding="utf-8")  # noqa: SIM115 (the log's, for the run)
    configure(stream, logging.Formatter(DEBUG_FORMAT), level=logging.DEBUG, debug=True)


def _stuck_threads() -> bool:
    import threading

    main = threading.main_thread()
    return any(t.is_alive() and not t.daemon and t is not main for t in threading.enumerate())


def _setup_logging(debug: bool) -> None:
    """--debug's logging now; a quiet run's when it first logs (core.log: a run that logs
    nothing does not import ``logging``)."""
    if debug:
        _basic_config(debug=True)
    else:
        from core.log import configure_on_first_use

        configure_on_first_use(_basic_config)


#: --debug's lines: orch-tui's own, each naming its logger
DEBUG_FORMAT = "orch-tui %(levelname)s %(name)s: %(message)s"


def _basic_config(debug: bool = False) -> None:
    """orch-tui's log lines on stderr (core.log.configure): with --debug, every detail; in a
    quiet run, a warning or an error as the headless output says one (``12:00:02 ⚠ warning:
    cannot save ...``), not in a format of its own beside it."""
    import logging

    from core.log import configure

    if debug:
        formatter = logging.Formatter(DEBUG_FORMAT)
    else:
        formatter = _user_formatter()
    configure(sys.stderr, formatter, level=logging.WARNING, debug=debug)


def _user_formatter() -> logging.Formatter:
    """A ``logging.Formatter`` writing a record as the headless output writes a run's message:
    the time, the mark (its ASCII stand-in on a stream that cannot encode it), the level."""
    import logging
    import time

    from tui.headless.terminal import MARKS

    class UserFormatter(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            level = record.levelname.lower()
            glyph = MARKS.get(level, MARKS["info"])
            mark = glyph.symbol
            try:
                mark.encode(getattr(sys.stderr, "encoding", None) or "ascii")
            except (UnicodeError, LookupError):
                mark = glyph.ascii
            clock = time.strftime("%H:%M:%S", time.localtime(record.created))
            text = f"{clock} {mark} {level}: {record.getMessage()}"
            if record.exc_info:
                text += "\n" + self.formatException(record.exc_info)
            return text

    return UserFormatter()


# ---------------------------------------------------------------------------------- others
def _cmd_validate(args: argparse.Namespace) -> int:
    """Each recipe checked and told about in turn; one that is bad does not stop the others
    from being checked (a pre-commit hook's list: every problem at once)."""
    code = EXIT_OK
    for path in args.recipes:
        try:
            _validate(path, debug=args.debug)
        except UsageError as exc:
            print(f"orch-tui: {exc}", file=sys.stderr)
            code = EXIT_USAGE
    return code


def _validate(path: str, *, debug: bool) -> None:
    """One recipe's warnings and its OK line; its problems raised as a UsageError."""
    from core.recipe import no_executor_warnings
    from core.recipe.problems import in_file_order
    from tui.format import counted

    recipe = _load(path, debug=debug)
    kinds: dict[str, int] = {}
    for step in recipe.steps:
        kinds[step.type] = kinds.get(step.type, 0) + 1
    detail = ", ".join(f"{n} {k}" for k, n in kinds.items())
    # where: cluster steps are told here, not in recipe.warnings: a run may get --executor
    warnings = in_file_order([*recipe.warnings, *no_executor_warnings(recipe, path)])
    _print_warnings(warnings)
    count = len(warnings)
    warned = f", {counted(count, 'warning')}" if count else ""
    print(f"{path}: OK, {counted(len(recipe.steps), 'step')} ({detail}){warned}")


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


SESSIONS_HEADER = ("BACKEND", "SOCKET", "NAME", "STATE", "PID", "CREATED", "RUN")
#: the free text of a session's row (socket, name): what a narrow terminal cuts, never an id
_SESSION_TEXT = (1, 2)


def _print_sessions(rows) -> None:
    """One aligned line per session (each server's by name); SOCKET is the tmux server
    (`-L` name, or default). On a terminal each row fits its width (a 64-character name wrapped
    every row at 80 columns): the socket and the name are cut, with an ellipsis, the year left
    out of the time; to a pipe every cell is whole."""
    from core.text import clean
    from tui.stdout import print_table, terminal_width

    width = terminal_width()
    when = "%m-%d %H:%M" if width is not None else "%Y-%m-%d %H:%M"
    table = [
        (
            s.backend,
            clean(s.server),
            clean(s.name),  # anyone on the machine names sessions: no escapes to the terminal
            clean(s.state),
            str(s.pid or ""),
            _fmt_time(s.created, when),
            clean(s.run_id or ""),
        )
        for s in rows
    ]
    print_table(SESSIONS_HEADER, table if width is None else _fitted_sessions(table, width))


def _fitted_sessions(table: list[tuple[str, ...]], width: int) -> list[tuple[str, ...]]:
    from tui.cells import fit_table

    room = width - 2 * (len(SESSIONS_HEADER) - 1)  # two spaces between columns
    return fit_table(SESSIONS_HEADER, table, room, _SESSION_TEXT)[1]


def _fmt_time(ts: float | None, when: str) -> str:
    if not ts:
        return ""
    import time

    return time.strftime(when, time.localtime(ts))


def _cmd_clean(args: argparse.Namespace) -> int:
    from tui.clean import clean_runs

    return clean_runs(Path.cwd(), dry_run=args.dry_run)


_COMMANDS = {
    "validate": _cmd_validate,
    "graph": _cmd_graph,
    "sessions": _cmd_sessions,
    "clean": _cmd_clean,
    "schema": _cmd_schema,
}

if __name__ == "__main__":
    sys.exit(main())
