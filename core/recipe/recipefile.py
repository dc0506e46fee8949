"""A recipe file as bytes, its limits, and ``Source``: what reading it gives, without YAML.

Kept apart from ``source`` (the YAML side) so that a recipe served from the cache
(``core.recipe.cache``) is read, hashed and checked without importing PyYAML at all.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from core.recipe.problems import Problem, RecipeError, Trail, describe

MAX_FILE_BYTES = 4 * 1024 * 1024
MAX_NODES = 1_000_000  # values built, aliases expanded: stops "billion laughs"
MAX_DEPTH = 100  # nesting of lists and mappings

Loc = tuple[int, int]  # 1-based line and column


def locate(path: str | Path) -> tuple[Path, str]:
    """The absolute path, and the name to show: as given, or relative to the cwd if under it."""
    shown = str(path)
    try:
        given = Path(path)
        absolute = Path(os.path.abspath(given))
        if given.is_absolute():
            try:
                shown = str(absolute.relative_to(Path.cwd()))
            except ValueError:
                shown = str(given)
    except (TypeError, ValueError, OSError) as exc:
        raise RecipeError(
            [Problem(shown, None, None, None, f"invalid path: {describe(exc)}")]
        ) from None
    return absolute, shown


def _fail(
    shown: str, message: str, line: int | None = None, column: int | None = None
) -> RecipeError:
    return RecipeError([Problem(shown, line, column, None, message)])


def read_bytes(path: Path, shown: str) -> bytes:
    """The file's content, refused (RecipeError) when it is not a regular file or too large."""
    try:
        info = path.stat()
        if stat.S_ISDIR(info.st_mode):
            # "." or ".." name no folder a reader can tell: add which one it is
            named = f" ({path})" if Path(shown).name in ("", "..") else ""
            raise _fail(shown, f"is a directory{named}, expected a YAML file")
        if not stat.S_ISREG(info.st_mode):
            raise _fail(shown, "is not a regular file")
        if info.st_size > MAX_FILE_BYTES:
            raise _fail(shown, f"recipe file too large (over {MAX_FILE_BYTES:,} bytes)")
        with path.open("rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise _fail(shown, "no such file") from None
    except PermissionError:
        raise _fail(shown, "permission denied") from None
    except (OSError, ValueError) as exc:
        raise _fail(shown, f"cannot read: {describe(exc)}") from None
    if len(data) > MAX_FILE_BYTES:
        raise _fail(shown, f"recipe file too large (over {MAX_FILE_BYTES:,} bytes)")
    return data


def decode(data: bytes, shown: str) -> str:
    """The file's bytes as text: UTF-8 (a BOM allowed), else a RecipeError at the bad byte."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        message = f"not UTF-8 text (byte 0x{data[exc.start]:02x})"
        raise _fail(shown, message, line, column) from None


class Source(msgspec.Struct, frozen=True):
    """A recipe file read into plain values (``BAD`` where a value was refused), with the line
    and column of each value and key down to ``source._LOC_DEPTH``, and the problems found while
    reading (bad tags, duplicate keys), by the trail of the value they are about."""

    path: Path  # absolute
    shown: str  # the name problems give: as the user wrote it, or relative to the cwd
    doc: Any
    locs: Mapping[Trail, Loc]
    key_locs: Mapping[Trail, Loc]
    issues: dict[tuple[str, Loc], Trail]

    def where(self, trail: Trail, *, key: bool = False) -> tuple[int | None, int | None]:
        """Where the value at ``trail`` (or its key) is, or the nearest enclosing value."""
        if key and trail in self.key_locs:
            return self.key_locs[trail]
        probe = trail
        while True:
            if probe in self.locs:
                return self.locs[probe]
            if not probe:
                return (None, None)
            probe = probe[:-1]
