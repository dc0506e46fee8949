"""core.privatedir: the run's folders are made private atomically, checked when they exist,
held open, and files in them are never opened through a link.

These run as any user: the folders "others could write to" are this user's own with the
group/other write bits set, which is what the checks look at. What another real user can do is
in tests/reliability/test_hijack.py (root only).
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
import subprocess
from pathlib import Path

import pytest

from core.privatedir import HeldFile, PrivateDir, PrivateDirError
from tests.conftest import PY, ROOT


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_missing_folders_are_made_0700_even_under_umask_0(tmp_path):
    run_dir = tmp_path / ".orch" / "runs" / "r1"
    code = f"from core.privatedir import PrivateDir; PrivateDir.open({str(run_dir)!r}).close()"
    subprocess.run([PY, "-c", code], cwd=ROOT, umask=0, check=True)
    assert [_mode(p) for p in (tmp_path / ".orch", run_dir.parent, run_dir)] == [0o700] * 3


def _shared_group() -> int:
    """A group this user may give a folder to that is not their private group."""
    me = pwd.getpwuid(os.geteuid()).pw_name
    mine = set(os.getgroups()) | {os.getegid()}
    for group in sorted(grp.getgrall(), key=lambda g: g.gr_name != "users"):
        if group.gr_name != me and (os.geteuid() == 0 or group.gr_gid in mine):
            return group.gr_gid
    pytest.skip("no group to share a folder with")


@pytest.mark.parametrize("mode", [0o777, 0o1777, 0o775], ids=["0777", "1777", "0775 shared"])
def test_an_existing_folder_others_may_write_to_is_refused(tmp_path, mode):
    orch = tmp_path / ".orch"
    orch.mkdir()
    orch.chmod(mode)
    if mode == 0o775:
        os.chown(orch, -1, _shared_group())
    with pytest.raises(PrivateDirError) as refused:
        PrivateDir.open(orch / "runs" / "r1", below=tmp_path)
    assert str(refused.value) == f"{orch}: writable by other users (mode {mode:04o})"
    assert list(orch.iterdir()) == []


def test_group_write_in_your_own_private_group_is_fine(tmp_path):
    """Fedora and Debian give each user a group of their own and umask 002: 0775 folders."""
    me = pwd.getpwuid(os.geteuid())
    group = grp.getgrgid(me.pw_gid)
    if group.gr_name != me.pw_name or set(group.gr_mem) - {me.pw_name}:
        pytest.skip("this user has no private group")
    project = tmp_path / "project"
    project.mkdir()
    os.chown(project, -1, me.pw_gid)
    project.chmod(0o775)
    (project / ".orch").mkdir(mode=0o775)
    (project / ".orch").chmod(0o775)
    with PrivateDir.open(project / ".orch" / "runs", below=project) as runs:
        assert runs.path == project / ".orch" / "runs"


def test_a_link_in_place_of_a_folder_is_refused_not_followed(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (tmp_path / ".orch").symlink_to(elsewhere)
    with pytest.raises(PrivateDirError) as refused:
        PrivateDir.open(tmp_path / ".orch" / "runs", below=tmp_path)
    assert str(refused.value) == f"{tmp_path / '.orch'}: is a symbolic link (not followed)"
    assert list(elsewhere.iterdir()) == []


def test_a_folder_above_that_others_may_write_to_is_refused_unless_sticky(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # anyone could rename the run's folder away and put theirs there
    with pytest.raises(PrivateDirError) as refused:
        PrivateDir.open(shared / "run")
    assert str(refused.value) == (
        f"{shared / 'run'}: {shared} is writable by other users (mode 0777)"
    )
    assert not (shared / "run").exists()
    shared.chmod(0o1777)  # like /tmp: nobody may rename what is not theirs
    with PrivateDir.open(shared / "run") as run:
        assert run.path == shared / "run" and _mode(run.path) == 0o700


def test_files_are_never_opened_through_a_link(tmp_path):
    target = tmp_path / "authorized_keys"
    target.write_text("key\n")
    with PrivateDir.open(tmp_path / "run") as run:
        (run.path / "a.log").symlink_to(target)
        for open_it in (run.append, run.create, run.read):
            with pytest.raises(OSError):
                open_it("a.log")
        with pytest.raises(PrivateDirError) as refused:
            run.append("a.log")
        assert refused.value.why == "is a symbolic link (not followed)"
    assert target.read_text() == "key\n"


def test_a_hard_link_to_another_file_is_refused(tmp_path):
    target = tmp_path / "authorized_keys"
    target.write_text("key\n")
    with PrivateDir.open(tmp_path / "run") as run:
        os.link(target, run.path / "a.log")
        with pytest.raises(PrivateDirError) as refused:
            run.append("a.log")
        assert "hard links" in refused.value.why
    assert target.read_text() == "key\n"


def test_create_never_reuses_a_file_and_append_continues_one(tmp_path):
    with PrivateDir.open(tmp_path / "run") as run:
        os.close(run.create("new.env"))
        assert _mode(run.path / "new.env") == 0o600
        with pytest.raises(FileExistsError):
            run.create("new.env")
        for text in (b"one\n", b"two\n"):
            fd = run.append("step.log")
            os.write(fd, text)
            os.close(fd)
        assert run.read("step.log") == b"one\ntwo\n"


def test_reading_a_fifo_is_refused_without_blocking(tmp_path):
    with PrivateDir.open(tmp_path / "run") as run:
        os.mkfifo(run.path / "ctx.env")  # no writer: a blocking open would wait forever
        with pytest.raises(PrivateDirError) as refused:
            run.read("ctx.env")
        assert refused.value.why == "not a regular file"


def test_a_held_folder_keeps_its_files_when_its_path_is_swapped(tmp_path):
    """Whoever renames the folder and puts a decoy with links in its place redirects nothing:
    what is written and read goes through the descriptor."""
    target = tmp_path / "authorized_keys"
    target.write_text("key\n")
    with PrivateDir.open(tmp_path / "run") as run:
        ctx_out = HeldFile(run, "ctx.env")
        os.close(run.create(ctx_out.name))
        (tmp_path / "run").rename(tmp_path / "moved")
        (tmp_path / "run").mkdir()
        (tmp_path / "run" / "step.log").symlink_to(target)
        (tmp_path / "run" / "ctx.env").write_text("token=decoy\n")
        os.write(fd := run.append("step.log"), b"output\n")
        os.close(fd)
        assert ctx_out.read_text() == ""
        assert ctx_out.path == tmp_path / "run" / "ctx.env"  # what a step is told
    assert (tmp_path / "moved" / "step.log").read_text() == "output\n"
    assert target.read_text() == "key\n"


def test_a_closed_folder_cannot_be_used_by_mistake(tmp_path):
    run = PrivateDir.open(tmp_path / "run")
    run.close()
    other = os.open(tmp_path, os.O_RDONLY)  # would get the old descriptor number
    try:
        with pytest.raises(OSError):
            run.create("late.log")
        assert not (tmp_path / "late.log").exists()
    finally:
        os.close(other)
