"""``orch-tui clean``: remove what orch-tui made where it is run (the ``.orch`` folder that
runs started there write into and ``orch-tui runs`` lists) and nothing else of the user's.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

from core.recorded import process_alive
from core.rundir import RUNS_FOLDER, RunDir, orch_folder
from core.state import RunStatus
from tui.stdout import say


def clean_runs(here: Path, *, dry_run: bool) -> int:
    """Remove what orch-tui made here, and nothing else: not a user's ``logs/`` or build
    output, not a symlink nor what it points to, not another user's files, not a run still
    going. The developer's clean-up (caches, egg-info) is ``make clean``.

    Here is ``here``'s ``.orch`` (where runs started in ``here`` go, what ``orch-tui runs``
    lists), in a workspace or not, and the ``.orch`` at the root of the workspace ``here`` is
    in. Only the workspace's was cleaned: from a subfolder, or a folder that is no workspace,
    the runs ``orch-tui runs`` listed there were "nothing to clean"."""
    from core.recipe import workspace_of

    workspace = workspace_of(here)
    places = dict.fromkeys([here, *([workspace] if workspace is not None else [])])
    cleaner = _Cleaner(here, dry_run=dry_run)
    found = [cleaner.orch(orch_folder(place)) for place in places]
    if not any(found):
        say(f"nothing to clean in {' or '.join(map(str, places))}")
    return 1 if cleaner.failed else 0


class _Cleaner:
    """Walks ``.orch`` and removes (or, dry, lists) only what has the shape of orch-tui's own:
    the folder itself owned by this user, ``runs/<id>/`` folders holding a state.json. A
    symlink is left, never followed: orch-tui makes none there, so it is the user's (a
    ``latest`` link) or another's. Everything it meets is said, one line each."""

    def __init__(self, here: Path, *, dry_run: bool) -> None:
        self.here = here
        self.dry_run = dry_run
        self.failed = False  # something of orch-tui's could not be removed

    def orch(self, orch: Path) -> bool:
        """Clean the .orch folder; False when there is none."""
        kind = self._kind(orch)
        if kind is None:
            return False
        if kind == "link":
            self._link(orch)
        elif kind != "ours":
            self._leave(orch, _not_ours(kind))
        elif self._clean_folder(orch, self._runs):
            self._rmdir(orch)
        return True

    def _runs(self, entry: Path) -> bool:
        """Inside .orch: the runs folder is orch-tui's; anything else is left alone."""
        if entry.name != RUNS_FOLDER:
            return self._leave(entry, "not made by orch-tui")
        kind = self._kind(entry)
        if kind == "link":
            return self._link(entry)
        if kind != "ours":
            return self._leave(entry, _not_ours(kind))
        return self._clean_folder(entry, self._run) and self._rmdir(entry)

    def _run(self, run: Path) -> bool:
        """A run folder goes unless its run may still be in use: its daemon live (a run in
        the app or ``--detach`` stays until closed, even with every step over and its
        state.json saying so: ``attach`` and ``ctl`` still reach it), or its runner alive."""
        kind = self._kind(run)
        if kind == "link":
            return self._link(run)
        state = RunDir(run).state
        if kind != "ours":
            why = "not an orch-tui run (not a folder)" if kind != "theirs" else _not_ours(kind)
            return self._leave(run, why)
        has_state = self._kind(state) == "file"
        if _daemon_listens(run):
            if has_state:
                why = f"its daemon is live (orch-tui ctl {run.name} close ends it)"
            else:
                why = "just started (its daemon is live, no state.json yet)"
            say(f"kept {self._shown(run)}: {why}")
            return False
        if not has_state:
            return self._leave(run, "not an orch-tui run (no state.json)")
        pid = _live_pid(state)
        if pid is not None:
            say(f"kept {self._shown(run)}: still running (pid {pid})")
            return False
        from tui.format import format_bytes

        return self._remove(run, f" ({format_bytes(_tree_size(run))})")

    # -- what a path is, and what is done with it

    @staticmethod
    def _kind(path: Path) -> str | None:
        """None (nothing there), "link", "ours" (a real folder of this user), "theirs" (a
        folder of another user), "file", "other" (a FIFO, a socket, a device...)."""
        try:
            info = path.lstat()
        except FileNotFoundError:
            return None
        except OSError:
            return "other"
        if stat.S_ISLNK(info.st_mode):
            return "link"
        if stat.S_ISDIR(info.st_mode):
            return "ours" if info.st_uid == os.getuid() else "theirs"
        return "file" if stat.S_ISREG(info.st_mode) else "other"

    def _clean_folder(self, folder: Path, clean_entry) -> bool:
        """``clean_entry`` on each entry, in name order; True when every one went."""
        try:
            entries = sorted(folder.iterdir())
        except OSError as exc:
            return self._failed(folder, exc)
        results = [clean_entry(entry) for entry in entries]
        return all(results)

    def _shown(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.here))
        except ValueError:
            return str(path)

    def _leave(self, path: Path, why: str) -> bool:
        say(f"left alone {self._shown(path)}: {why}")
        return False

    def _link(self, link: Path) -> bool:
        """A symlink is left with its target: orch-tui never makes one, and deletes only what
        it made."""
        try:
            target = os.readlink(link)
        except OSError:
            target = "?"
        return self._leave(link, f"a symlink to {target} (orch-tui makes none)")

    def _remove(self, path: Path, detail: str = "") -> bool:
        verb = "would remove" if self.dry_run else "removed"
        if not self.dry_run:
            import shutil

            try:
                shutil.rmtree(path)  # never follows the symlinks inside
            except OSError as exc:
                return self._failed(path, exc)
        say(f"{verb} {self._shown(path)}{detail}")
        return True

    def _rmdir(self, folder: Path) -> bool:
        """Remove a folder once emptied (a dry run says it would go)."""
        if not self.dry_run:
            try:
                folder.rmdir()
            except OSError as exc:
                return self._failed(folder, exc)
        say(f"{'would remove' if self.dry_run else 'removed'} {self._shown(folder)}")
        return True

    def _failed(self, path: Path, exc: OSError) -> bool:
        print(
            f"orch-tui: cannot remove {self._shown(path)}: {exc.strerror or exc}", file=sys.stderr
        )
        self.failed = True
        return False


def _not_ours(kind: str | None) -> str:
    """Why what ``_kind`` called ``kind`` (not a link, not our folder) is left alone."""
    return "not a folder of yours" if kind == "theirs" else "not a folder"


def _live_pid(state_path: Path) -> int | None:
    """The runner's pid if the run's state.json says it is running and that process is alive
    (a zombie is not: a SIGKILLed daemon whose parent never reaps it)."""
    try:
        state = json.loads(state_path.read_bytes())
    except (OSError, ValueError):
        return None  # state.json is replaced atomically: a running run's always parses
    if not isinstance(state, dict) or state.get("status") != RunStatus.RUNNING:
        return None
    pid = state.get("pid")
    if type(pid) is not int or not process_alive(pid):
        return None
    return pid


def _daemon_listens(run: Path) -> bool:
    """Whether a run daemon serves this folder: its run is in use, whatever its state.json
    says (a finished run's daemon serves attach and ctl until closed), and a folder without
    one yet may be a run that has just started (a daemon binds its socket first)."""
    from tui.runs import daemon_listens

    try:
        with RunDir.open(run) as run_dir:
            return daemon_listens(run_dir)
    except OSError:  # not a folder orch-tui could have made: no daemon of ours in it
        return False


def _tree_size(folder: Path) -> int:
    """Bytes under ``folder``, symlinks counted as links, not followed."""
    total, todo = 0, [folder]
    while todo:
        try:
            with os.scandir(todo.pop()) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        todo.append(Path(entry.path))
                    else:
                        total += entry.stat(follow_symlinks=False).st_size
        except OSError:
            continue
    return total
