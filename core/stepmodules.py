"""The python steps' modules: imported once, and again for a retry once their source was edited.

A run imports a step's module once (the recipe's check does, in the runner's process; a Dask
worker does as the run starts) and keeps it: a step's first attempt costs no look at the file.
A later attempt (``r`` in the app, ``ctl retry``, a ``retries:`` attempt) runs the module as its
file is then: a source whose modification time or size changed since it was imported (the bug
that failed the step fixed) is run again into a new module object, which takes the old one's
place (a step still running from the old one keeps its globals). Only the step's own module:
what it imports is not reloaded. A module edited into a syntax error fails the attempt with that
error, and the next attempt tries the file again.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import threading
from types import ModuleType

#: each module's source as it was imported: (mtime_ns, size), None for one without a file
_stamps: dict[str, tuple[int, int] | None] = {}
_reloading = threading.Lock()


def _stamp(module: ModuleType) -> tuple[int, int] | None:
    path = getattr(module, "__file__", None)
    if not path:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def import_module(name: str) -> ModuleType:
    """``importlib.import_module``, its source's stamp noted the first time it is seen."""
    module = importlib.import_module(name)
    if name not in _stamps:
        _stamps[name] = _stamp(module)
    return module


def current_module(name: str) -> ModuleType:
    """The module as its file is now: reloaded if the file changed since it was imported.
    Raises what importing it raises (a SyntaxError in the edited file)."""
    module = import_module(name)
    with _reloading:
        now = _stamp(module)
        if now is None or now == _stamps.get(name):
            return module
        module = _fresh(name, module)
        _stamps[name] = now  # only once reloaded: a file still wrong is tried again next time
    return module


def _fresh(name: str, old: ModuleType) -> ModuleType:
    """The module's file run again into a new module object, which takes the old one's place
    (in sys.modules and on its package) once it ran whole: a step still running from the old
    one keeps its globals. ``importlib.reload`` ran the file again in the same namespace, and
    reset the caches, registries and state of every step of that module still running."""
    spec = old.__spec__
    if spec is None or spec.loader is None:  # not a module imported from a file
        return importlib.reload(old)
    fresh = importlib.util.module_from_spec(spec)
    sys.modules[name] = fresh  # its own code may look itself up as it runs
    try:
        spec.loader.exec_module(fresh)
    except BaseException:
        sys.modules[name] = old
        raise
    parent, _, child = name.rpartition(".")
    if parent and parent in sys.modules:
        setattr(sys.modules[parent], child, fresh)
    return fresh
