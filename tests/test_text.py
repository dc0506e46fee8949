"""core/text.py: the one cleaner every string from a step, the ctx or a session goes through
before a terminal sees it. Each sequence here is one a terminal acts on (the hostile-output
suite feeds them through real runs); the words around it must survive."""

from __future__ import annotations

import pytest

from core.text import clean, listed

ESC = "\x1b"
CASES = [
    # (what, input, shown)
    ("plain text", "build ok", "build ok"),
    ("colour", f"{ESC}[31mred{ESC}[0m plain", "red plain"),
    ("title (OSC 0, BEL)", f"{ESC}]0;evil title\x07after", "after"),
    ("clipboard (OSC 52, ST)", f"{ESC}]52;c;cHduZWQ={ESC}\\after", "after"),
    ("hyperlink (OSC 8)", f"{ESC}]8;;http://e.com{ESC}\\link{ESC}]8;;{ESC}\\ x", "link x"),
    ("device control (DCS)", f"{ESC}P1;2|payload{ESC}\\after", "after"),
    ("APC, PM, SOS", f"{ESC}_apc{ESC}\\{ESC}^pm{ESC}\\{ESC}Xsos{ESC}\\ok", "ok"),
    ("screen wipe, reset, charset", f"{ESC}[2J{ESC}[H{ESC}c{ESC}(B{ESC}#8ok", "ok"),
    ("private modes", f"{ESC}[?1049h{ESC}[?25lok", "ok"),
    ("C1 CSI (U+009B)", "a\x9b31mb", "a31mb"),
    ("C1 ST and NEL", "a\x9c\x85b", "ab"),
    ("C0 and DEL", "a\x00\x07\x08\x7fb", "ab"),
    ("tab and newline stay", "a\tb\nc", "a\tb\nc"),
    ("unterminated OSC: its text shows, the next line too", f"{ESC}]0;t\nnext", "0;t\nnext"),
    ("cut-off CSI at the end", f"ok {ESC}[38;5;", "ok 38;5;"),
    ("lone ESC", f"ok {ESC}", "ok "),
    ("progress bar: its last frame", "\rprogress 10%\rprogress 100%\ndone", "progress 100%\ndone"),
    ("CRLF line end", "windows\r\nline", "windows\nline"),
]


@pytest.mark.parametrize(("raw", "shown"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_text_and_bytes_are_cleaned_alike(raw: str, shown: str) -> None:
    assert clean(raw) == shown
    assert clean(raw.encode()) == shown  # C1 as their UTF-8 (\xc2\x80-\xc2\x9f) in bytes


def test_keep_sgr_keeps_colour_and_nothing_else() -> None:
    raw = f"{ESC}[1;31mred{ESC}[0m {ESC}]8;;http://e.com{ESC}\\link{ESC}]8;;{ESC}\\ {ESC}[2Jx"
    assert clean(raw, keep_sgr=True) == f"{ESC}[1;31mred{ESC}[0m link x"
    assert clean(raw.encode(), keep_sgr=True) == f"{ESC}[1;31mred{ESC}[0m link x"


def test_bytes_that_are_not_utf8_are_replaced_and_raw_c1_bytes_too() -> None:
    assert clean(b"caf\xe9 \x9b31m \xc3\xa9") == "caf\ufffd \ufffd31m é"


def test_text_with_lone_surrogates_is_replaced() -> None:
    assert clean("a\udc80b") == "a\ufffd\ufffd\ufffdb"


def test_escapes_in_a_big_block_are_found_wherever_they_are() -> None:
    lines = [b"line %d" % i for i in range(100_000)]
    lines[3] = b"\x1b]0;first\x07three"
    lines[99_998] = b"\x1b[2Jlast but one \xc2\x9b"
    shown = clean(b"\n".join(lines)).split("\n")
    assert shown[3] == "three" and shown[99_998] == "last but one "
    assert shown[50_000] == "line 50000" and len(shown) == 100_000


@pytest.mark.parametrize(
    ("names", "line"),
    [
        ([], ""),
        (["a"], "a"),
        (["a", "b"], "a and b"),
        (["a", "b", "c"], "a, b and c"),
        (["a", "b", "c", "d"], "a, b, c and 1 more"),
        (list("abcdefg"), "a, b, c and 4 more"),
    ],
)
def test_names_are_listed_alike_everywhere(names: list[str], line: str) -> None:
    """One wording for the runner's notes (steps run locally) and the command line's errors
    (an ambiguous run): the first few, then how many more."""
    assert listed(names, 3) == line
