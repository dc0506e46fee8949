"""Log file names: a step's own name, readable in any script, safe as a file name, unique."""

from __future__ import annotations

import os
from pathlib import Path

from core.rundir import MAX_LOG_NAME_BYTES, log_name


def names(*steps: str) -> list[str]:
    taken: set[str] = set()
    return [log_name(step, taken) for step in steps]


def test_letters_of_any_script_are_kept() -> None:
    assert names("数据处理", "データ処理", "Ünïcødé step", "build-1.2_x") == [
        "数据处理.log",
        "データ処理.log",
        "Ünïcødé step.log",
        "build-1.2_x.log",
    ]


def test_only_what_a_file_name_cannot_hold_is_replaced() -> None:
    assert names("a/b", "nul\x00here", "tab\tand\x1b[31m", "\x85c1", "..", ".hidden") == [
        "a_b.log",
        "nul_here.log",
        "tab_and_[31m.log",
        "_c1.log",
        "step.log",
        "hidden.log",
    ]


def test_names_stay_unique_where_the_file_system_folds_them() -> None:
    # "hidden" after ".hidden"; "Build" and "build" on a case-insensitive disk; é composed or not
    assert names(".hidden", "hidden", "build", "Build", "BUILD", "\u00e9", "e\u0301") == [
        "hidden.log",
        "hidden-2.log",
        "build.log",
        "Build-2.log",
        "BUILD-3.log",
        "\u00e9.log",
        "e\u0301-2.log",
    ]


def test_long_names_are_cut_to_a_safe_byte_length(tmp_path: Path) -> None:
    long = "数" * 128  # the longest step name the loader accepts: 384 bytes of UTF-8
    first, second = names(long, long + "x")
    for name in (first, second):
        assert len(name.encode()) <= MAX_LOG_NAME_BYTES + len(".log") < 255
        (tmp_path / name).write_text("ok")  # the file system takes it
    assert first != second and first[:60] == long[:60]
    assert sorted(os.listdir(tmp_path)) == sorted([first, second])
