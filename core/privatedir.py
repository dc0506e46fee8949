"""Folders only this user can change, and files opened in them without following links.

Another local user must not be able to hijack a run: make the run's folder (or ``.orch``) in
advance, plant ``logs/<step>.log -> ~/.ssh/authorized_keys`` in it, or swap the folder for one of
their own while the run goes on. So:

* a folder orch-tui keeps files in is made by ``mkdir`` with mode 0700 (the umask can only
  narrow that: there is no moment when it is open to others, as there was before a chmod), or,
  when it is already there, checked: a real folder (a symlink is refused, never followed),
  owned by this user, writable by nobody else;
* the folders above it may be this user's or root's, writable by others only with the sticky
  bit (as /tmp): whoever can write to a folder can rename what is in it and put their own
  under the same name, and steps, multiplexers and viewers still use the run's paths;
* folders are held open and walked by descriptor, and files are opened relative to the held
  descriptor with ``O_NOFOLLOW`` (``O_EXCL`` when new), so neither a planted link nor a folder
  swapped after the check can redirect a write.

Root counts as trusted: it can change anything anyway.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class PrivateDirError(OSError):
    """A folder or file someone else could control, refused; the message names it and why."""

    def __init__(self, path: Path | str, why: str) -> None:
        super().__init__(f"{path}: {why}")
        self.path, self.why = Path(path), why


def _private_group(info: os.stat_result) -> bool:
    """The file's group is its owner's own private group: same name, the owner's primary
    group, nobody else in it. Fedora and Debian give every user one, with umask 002, so a
    user's folders are 0775 and their group write lets nobody else in (as Debian's OpenSSH
    allows for ~/.ssh). A shared primary group such as ``users`` is not one."""
    import grp
    import pwd

    try:
        owner, group = pwd.getpwuid(info.st_uid), grp.getgrgid(info.st_gid)
    except KeyError:
        return False
    return (
        group.gr_name == owner.pw_name
        and owner.pw_gid == info.st_gid
        and set(group.gr_mem) <= {owner.pw_name}
    )


def _others_may_write(info: os.stat_result) -> bool:
    mode = info.st_mode
    return bool(mode & stat.S_IWOTH or (mode & stat.S_IWGRP and not _private_group(info)))


def _who(uid: int) -> str:
    import pwd

    try:
        return f"user {pwd.getpwuid(uid).pw_name}"
    except KeyError:
        return f"uid {uid}"


def folder_problem(info: os.stat_result, *, shared: bool = False, own: bool = False) -> str | None:
    """Why a folder with this ``stat`` cannot be trusted, or None.

    Trusted: owned by this user or by root (``own``: by this user), and writable by nobody
    else (group write is harmless in the owner's private group, see ``_private_group``).
    ``shared``: writable by others is fine with the sticky bit (/tmp), where nobody may rename
    or remove what is not theirs, so what this user makes there stays this user's. Not for a
    folder whose own files matter (a workspace: anyone can add a ``psutil.py`` to /tmp)."""
    if info.st_uid != os.geteuid() and (own or info.st_uid != 0):
        return f"owned by {_who(info.st_uid)}, not by you"
    if _others_may_write(info) and not (shared and info.st_mode & stat.S_ISVTX):
        return f"writable by other users (mode {stat.S_IMODE(info.st_mode):04o})"
    return None


def chain_problem(path: Path) -> str | None:
    """The first folder from / down to ``path`` (as written, then with links resolved) that
    another user could change, and why; None when only this user and root can.

    Checking each prefix as written covers the folders each name is looked up in, symlinks
    included; the resolved path covers the folders the links lead through. Raises OSError when
    a folder is missing or cannot be looked at."""
    path = Path(os.path.abspath(path))
    seen: set[tuple[int, int]] = set()
    for chain in (path, Path(os.path.realpath(path))):
        for folder in (*reversed(chain.parents), chain):
            info = os.stat(folder)
            if (info.st_dev, info.st_ino) in seen:
                continue
            seen.add((info.st_dev, info.st_ino))
            why = folder_problem(info, shared=True)
            if why is not None:
                return f"{folder} is {why}"
    return None


def _file_problem(info: os.stat_result) -> str | None:
    """Why an existing file cannot be written or read as this user's own."""
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file"
    if info.st_uid != os.geteuid():
        return f"owned by {_who(info.st_uid)}, not by you"
    if info.st_nlink > 1:
        return "has other names (hard links): it may be someone else's file"
    return None


def nearest_existing(path: Path) -> Path:
    """``path`` if it exists, else the nearest folder above it that does."""
    for folder in (path, *path.parents):
        if folder.exists():
            return folder
    return Path("/")  # pragma: no cover - "/" exists


def _only_mine(fd: int, path: Path) -> None:
    """Refuse the open file ``fd`` when its group or others may write to it."""
    mode = stat.S_IMODE(os.fstat(fd).st_mode)
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise PrivateDirError(path, f"writable by other users (mode {mode:04o})")


class TooLarge(Exception):
    """A file bigger than the caller's limit: ``size`` bytes (or more)."""

    def __init__(self, size: int) -> None:
        super().__init__(f"{size} bytes")
        self.size = size


class PrivateDir:
    """A folder of this user's that nobody else can write to, held open by descriptor.

    Everything made or opened in it goes through the descriptor: renaming the folder, or a
    link planted where a file was expected, cannot redirect a write. ``close`` when done (the
    descriptor is then -1, so a late use fails instead of hitting a reused descriptor)."""

    def __init__(self, fd: int, path: Path) -> None:
        self.fd, self.path = fd, path

    @classmethod
    def open(cls, path: Path, *, below: Path | None = None, create: bool = True) -> PrivateDir:
        """``path``, held open; every folder from ``below`` (excluded) down to ``path`` is
        private to this user: made 0700 when missing (with ``create``), else checked.

        ``below`` (by default the nearest folder above ``path`` that exists) must exist, and it
        and the folders above it must be safe (``chain_problem``). Raises PrivateDirError
        naming what is refused and why, OSError for anything else (FileNotFoundError for a
        missing folder without ``create``)."""
        path = Path(os.path.abspath(path))
        below = nearest_existing(path.parent) if below is None else Path(os.path.abspath(below))
        names = path.relative_to(below).parts
        problem = chain_problem(below)
        if problem is not None:
            raise PrivateDirError(path, problem)
        folder = cls(os.open(below, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC), below)
        try:
            for name in names:
                inner = folder.subdir(name, create=create)
                folder.close()
                folder = inner
        except BaseException:
            folder.close()
            raise
        return folder

    def subdir(self, name: str, *, create: bool = True) -> PrivateDir:
        """The folder ``name`` in this one, held open: made 0700 if missing (``create``), else
        it must be this user's, writable by nobody else; a symlink is refused."""
        if create:
            try:
                os.mkdir(name, 0o700, dir_fd=self.fd)
            except FileExistsError:
                pass
            except OSError as exc:
                exc.filename = str(self.path / name)
                raise
        fd = self._open(name, _DIR_FLAGS, kind="folder")
        why = folder_problem(os.fstat(fd), own=True)
        if why is not None:
            os.close(fd)
            raise PrivateDirError(self.path / name, why)
        return PrivateDir(fd, self.path / name)

    def new_subdir(self, name: str) -> PrivateDir:
        """A folder ``name`` made here now, 0700, held open: FileExistsError when something
        is already there (what another run made is never taken for this one's)."""
        try:
            os.mkdir(name, 0o700, dir_fd=self.fd)
        except OSError as exc:
            exc.filename = str(self.path / name)
            raise
        return self.subdir(name, create=False)

    # -- files

    def create(self, name: str) -> int:
        """A new file ``name``, 0600, open for writing: never one already there, nor a link."""
        return self._open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL)

    def append(self, name: str) -> int:
        """``name`` open for appending: a new 0600 file, or an existing regular file of this
        user's with no other name (a hard link could be anyone's file)."""
        try:
            return self.create(name)
        except FileExistsError:
            return self._existing(name, os.O_WRONLY | os.O_APPEND)

    def read(self, name: str, limit: int | None = None, *, private: bool = False) -> bytes:
        """The content of ``name``, a regular file of this user's (not a link, not a FIFO
        that would block). With ``limit``, a file larger than that raises TooLarge before
        anything is read (its size is looked at first), or if it grew past it meanwhile.
        ``private``: refused too when its group or others may write to it (a file that
        decides what runs, as a cached recipe, is made 0600: any other mode was not ours)."""
        with os.fdopen(self._existing(name, os.O_RDONLY | os.O_NONBLOCK), "rb") as f:
            if private:
                _only_mine(f.fileno(), self.path / name)
            if limit is None:
                return f.read()
            size = os.fstat(f.fileno()).st_size
            if size > limit:
                raise TooLarge(size)
            data = f.read(limit + 1)
            if len(data) > limit:
                raise TooLarge(len(data))
            return data

    def replace(self, source: str, target: str) -> None:
        """Rename ``source`` to ``target`` within this folder, atomically."""
        os.replace(source, target, src_dir_fd=self.fd, dst_dir_fd=self.fd)

    def unlink(self, name: str) -> None:
        os.unlink(name, dir_fd=self.fd)

    def names(self) -> list[str]:
        return os.listdir(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> PrivateDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _existing(self, name: str, flags: int) -> int:
        fd = self._open(name, flags)
        why = _file_problem(os.fstat(fd))
        if why is not None:
            os.close(fd)
            raise PrivateDirError(self.path / name, why)
        return fd

    def _open(self, name: str, flags: int, *, kind: str = "regular file") -> int:
        try:
            return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=self.fd)
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                exc.filename = str(self.path / name)
                raise
            try:
                link = stat.S_ISLNK(os.stat(name, dir_fd=self.fd, follow_symlinks=False).st_mode)
            except OSError:
                link = False
            why = "a symbolic link (not followed)" if link else f"not a {kind}"
            raise PrivateDirError(self.path / name, f"is {why}") from None


class HeldFile:
    """A file in a held folder: others (a step) know it by ``path``; orch-tui reads it through
    the folder's descriptor, so what it reads is the file in the run's own folder, whatever was
    done to the path meanwhile."""

    def __init__(self, folder: PrivateDir, name: str) -> None:
        self.folder, self.name = folder, name

    @property
    def path(self) -> Path:
        return self.folder.path / self.name

    def untouched(self) -> bool:
        """Absent (the step made none) or an empty regular file: nothing to read. A cheap
        look (no open), so the common case costs a step's end no more than a stat."""
        try:
            info = os.stat(self.name, dir_fd=self.folder.fd, follow_symlinks=False)
        except FileNotFoundError:
            return True
        return stat.S_ISREG(info.st_mode) and info.st_size == 0

    def read_bytes(self, limit: int | None = None) -> bytes:
        return self.folder.read(self.name, limit)

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)
