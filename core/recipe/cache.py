"""Recipes that checked clean, kept compiled, so that loading an unchanged one skips the YAML.

Most of loading (the YAML read, every field checked, the graph, the steps built) depends only on
the file's bytes and orch-tui's own code; its result is kept here and decoded with msgspec
(about a millisecond per 1,000 steps), and PyYAML is not even imported. What depends on this
machine runs again on every load, on the cached steps, with the same problems and warnings as
without the cache: python steps' modules and signatures (the user's code changes), each shell
step's cwd and cmd (files, PATH, the environment), the workspace.

* Key: the sha256 of the file's bytes (never its size or mtime: an edit in the same second and
  of the same size is still seen), its absolute path (messages name it), the loader's own code
  (size and mtime of each ``core/recipe`` module and ``core/graph``: an editable checkout
  changes under us), PyYAML's and msgspec's versions, Python's. Any mismatch, a corrupt or
  truncated entry, anything that fails to decode: the recipe is read from the YAML as before
  and the entry replaced. Only a recipe that checked clean is kept.
* Where: ``$XDG_CACHE_HOME/orch-tui/recipes`` (by default ``~/.cache``), not the workspace's
  ``.orch``: a cache is not a run's output (``orch-tui clean`` and the runs list stay as they
  were), ``validate`` may fill it without making anything in the user's project, and a recipe
  outside any workspace is served too.
* Safety: an entry decides what commands run, so another user must not be able to plant one.
  The folders are private (core.privatedir: made 0700, else checked to be this user's and
  writable by nobody else, never through a symlink); an entry is written to a new 0600 file
  (``O_EXCL``, ``O_NOFOLLOW``) then renamed over the old one, and read only when it is a
  regular file of this user's that nobody else may write to. Anything else is ignored.
* Bound: one entry per recipe path (rewritten in place), and at most ``MAX_ENTRIES`` in all:
  past that, the least recently written ones are removed.
* ``ORCH_TUI_NO_CACHE=1`` turns it off: neither read nor written.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec

from core.privatedir import PrivateDir
from core.recipe.checks import PATHS_READ, Draft
from core.recipe.model import Recipe
from core.recipe.problems import Problem, Trail
from core.recipe.pycheck import READS_VALUES, READS_WRITTEN
from core.recipe.recipefile import Source

try:  # CPython's own sha256, a module of its own: 3.11 names it _sha256, 3.12 _sha2
    from _sha256 import sha256 as _own_sha256
except ImportError:  # pragma: no cover - depends on the Python version
    try:
        from _sha2 import sha256 as _own_sha256  # type: ignore[no-redef]
    except ImportError:
        _own_sha256 = None

OFF_VARIABLE = "ORCH_TUI_NO_CACHE"
MAX_ENTRIES = 64
MAX_ENTRY_BYTES = 64 * 1024 * 1024
_MAGIC = b"orch-tui recipe cache 1\n"
_OPENSSL_FROM = 512 * 1024  # bytes hashed: from there OpenSSL's sha256 pays for its import
#: what the checks made on every load read of a step: these values, and whether these fields
#: are written; each is where they may report a problem too
_VALUES = READS_VALUES + PATHS_READ

Where = tuple[int | None, int | None]
Places = list[tuple[Trail, Where]]


class Entry(msgspec.Struct, array_like=True):
    """One recipe, compiled: the built Recipe (its workspace and warnings set on each load),
    its python and shell steps as the machine checks read them, where those checks may
    report, and the warnings found from the bytes alone (named with the file as shown then)."""

    key: bytes
    recipe: Recipe
    drafts: list[Draft]
    places: msgspec.Raw  # (values' places, keys' places): decoded only when one is asked for
    warnings: list[Problem]

    def source(self, path: Path, shown: str) -> Source:
        """A Source that locates what the machine checks report, as the file's own would."""
        places = _Places(self.places)
        return Source(path, shown, None, _Table(places, 0), _Table(places, 1), {})

    def warnings_for(self, shown: str) -> list[Problem]:
        """The kept warnings naming the file as this load shows it (the cwd may differ)."""
        return [msgspec.structs.replace(w, file=shown) for w in self.warnings]


def _enc(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    raise NotImplementedError(type(obj))


def _dec(kind: type, obj: Any) -> Any:
    if kind is Path and isinstance(obj, str):
        return Path(obj)
    raise NotImplementedError(kind)


_encoder = msgspec.msgpack.Encoder(enc_hook=_enc)
_decoder = msgspec.msgpack.Decoder(Entry, dec_hook=_dec)


class _Places:
    """An entry's places, decoded the first time a check reports something (rarely): a
    quarter of an entry, that a clean load never looks at."""

    def __init__(self, raw: msgspec.Raw) -> None:
        self.raw = raw
        self.tables: tuple[dict[Trail, Where], dict[Trail, Where]] | None = None

    def table(self, which: int) -> dict[Trail, Where]:
        if self.tables is None:
            try:
                values, keys = msgspec.msgpack.decode(self.raw, type=tuple[Places, Places])
            except msgspec.DecodeError:  # damaged on disk: the problems say no line then
                values, keys = [], []
            self.tables = (dict(values), dict(keys))
        return self.tables[which]


class _Table(Mapping[Trail, Where]):
    """One of the two tables of ``_Places`` (values', keys'), as ``Source.where`` reads it."""

    def __init__(self, places: _Places, which: int) -> None:
        self.places, self.which = places, which

    def __getitem__(self, trail: Trail) -> Where:
        return self.places.table(self.which)[trail]

    def __iter__(self) -> Iterator[Trail]:
        return iter(self.places.table(self.which))

    def __len__(self) -> int:
        return len(self.places.table(self.which))


def folder() -> Path | None:
    """Where entries go, or None when there is no absolute place for them."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(base) if os.path.isabs(base) else Path(os.path.expanduser("~")) / ".cache"
    return root / "orch-tui" / "recipes" if root.is_absolute() else None


def _code_fingerprint() -> bytes:
    """What the loader's result depends on besides the file: its own modules, as they are on
    disk now, and the versions of PyYAML (found, not imported), msgspec and Python."""
    import importlib.util

    here = Path(__file__).parent
    files = [here / n for n in sorted(os.listdir(here)) if n.endswith(".py")]
    files.append(here.parent / "graph.py")
    yaml = importlib.util.find_spec("yaml")
    if yaml is not None and yaml.origin:
        files.append(Path(yaml.origin))
    parts = [sys.version, msgspec.__version__]
    for file in files:
        info = file.stat()
        parts.append(f"{file}:{info.st_mtime_ns}:{info.st_size}")
    return "\0".join(parts).encode("utf-8", "surrogateescape")


def _sha256(data: bytes) -> bytes:
    """The sha256 of ``data``. ``hashlib`` loads OpenSSL first, ~3 ms of a one-step run of
    0.12 s; CPython's own sha256 is imported in 0.3 ms and hashes a recipe of some KB in
    microseconds. OpenSSL's, 7x faster, is worth its import for a large file only."""
    if _own_sha256 is not None and len(data) < _OPENSSL_FROM:
        return _own_sha256(data).digest()
    import hashlib

    return hashlib.sha256(data).digest()


class RecipeCache:
    """The entry of one recipe file, as loaded now: ``get`` it, or ``put`` a new one."""

    def __init__(self, place: Path, path: Path, data: bytes) -> None:
        self.place = place
        where = str(path).encode("utf-8", "surrogateescape")
        self.name = _sha256(where).hex()[:40]
        self.key = _sha256(b"\0".join((_sha256(data), where, _code_fingerprint())))

    @classmethod
    def of(cls, path: Path, data: bytes) -> RecipeCache | None:
        """The cache of the file at ``path`` (absolute) with content ``data``; None when the
        cache is off (``ORCH_TUI_NO_CACHE``) or has no place."""
        if os.environ.get(OFF_VARIABLE, "") not in ("", "0"):
            return None
        place = folder()
        if place is None:
            return None
        try:
            return cls(place, path, data)
        except OSError:  # the loader's own files cannot be looked at: nothing to key on
            return None

    def get(self) -> Entry | None:
        """The entry, if there is one of this user's for exactly this key; else None."""
        try:
            with PrivateDir.open(self.place, create=False) as held:
                blob = held.read(self.name, MAX_ENTRY_BYTES, private=True)
            if not blob.startswith(_MAGIC):
                return None
            entry = _decoder.decode(memoryview(blob)[len(_MAGIC) :])
        except Exception:  # missing, refused, truncated, from another version: read the YAML
            return None
        return entry if entry.key == self.key else None

    def put(
        self,
        recipe: Recipe,
        drafts: Sequence[Draft | None],
        source: Source,
        warnings: list[Problem],
    ) -> None:
        """Keep a recipe that checked clean; nothing is said when it cannot be kept."""
        machine = [_machine_part(d) for d in drafts if d is not None and d.step_type != "session"]
        trails = [t for d in machine for t in _reported_at(d)]
        try:
            places = (
                [(t, source.locs[t]) for t in trails if t in source.locs],
                [(t, source.key_locs[t]) for t in trails if t in source.key_locs],
            )
            recipe = msgspec.structs.replace(recipe, warnings=())
            entry = Entry(self.key, recipe, machine, msgspec.Raw(_encoder.encode(places)), warnings)
            blob = _MAGIC + _encoder.encode(entry)
        except (TypeError, ValueError, OverflowError):
            return  # a value msgpack cannot hold (an integer past 64 bits): read from YAML each time
        if len(blob) > MAX_ENTRY_BYTES:
            return
        with contextlib.suppress(OSError), PrivateDir.open(self.place) as held:
            self._write(held, blob)
            _bound(held)

    def _write(self, held: PrivateDir, blob: bytes) -> None:
        """Whole or not at all: a new private file, then renamed over the old entry."""
        temp = f".{self.name}.{os.getpid()}.{os.urandom(4).hex()}"
        fd = held.create(temp)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(blob)
            held.replace(temp, self.name)
        except BaseException:
            with contextlib.suppress(OSError):
                held.unlink(temp)
            raise


def _machine_part(d: Draft) -> Draft:
    """What ``check_python_steps`` and ``Validator.paths`` read of a step (its type, names,
    place, dependencies, and the fields they read), the rest left out."""
    return Draft(
        d.index,
        d.name,
        d.step_type,
        d.trail,
        d.line,
        d.who,
        {k: None for k in READS_WRITTEN if k in d.data},
        {k: d.values[k] for k in _VALUES if k in d.values},
        d.deps,
    )


def _reported_at(d: Draft) -> list[Trail]:
    """Every place those checks may report a problem of the step at, and the step itself:
    ``Source.where`` looks for a place, then for the values holding it, up to the step, so
    these are all it can meet (the step's trail is always located, being shallow)."""
    params = d.values.get("params", {})
    return [d.trail, *(d.trail + (f,) for f in _VALUES)] + [d.trail + ("params", k) for k in params]


def _bound(held: PrivateDir) -> None:
    """At most ``MAX_ENTRIES`` files: the least recently written go (a writer's temporary
    file too, once it is among the oldest: one left by a crash)."""
    names = held.names()
    if len(names) <= MAX_ENTRIES:
        return
    ages = []
    for name in names:
        with contextlib.suppress(OSError):
            info = os.stat(name, dir_fd=held.fd, follow_symlinks=False)
            ages.append((info.st_mtime_ns, name))
    for _, name in sorted(ages)[: len(ages) - MAX_ENTRIES]:
        with contextlib.suppress(OSError):
            held.unlink(name)
