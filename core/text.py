"""The one text cleaner: what a step, the ctx or a session wrote, made safe to show on a terminal.

Anything a step prints, an exception message built from ctx data, a ctx key or a session name
may hold escape sequences: a title change, an OSC 52 write to the user's clipboard, an OSC 8
hyperlink, a screen wipe. Every such string passes through :func:`clean` before a terminal sees
it (the headless reporter, the TUI's panes and labels, ``orch-tui sessions``).

What goes: C0 controls except tab and newline, DEL, C1 controls (U+0080-U+009F; in bytes their
UTF-8 form, ``\\xc2\\x80``-``\\xc2\\x9f``, since terminals may act on them as on ESC: U+009B is
CSI), and whole escape sequences: CSI, OSC (8 and 52 included), DCS, SOS, PM, APC and the short
ones (``ESC c``, ``ESC ( B``). With ``keep_sgr`` the colour codes (CSI ... m) stay, for a
terminal that shows them as colour. A ``\\r`` progress line keeps only its last frame.

It runs on every block the reporter echoes, so the common case costs a few ``in`` tests (memchr)
and one ``bytes.translate``; the regular expressions run only on the lines from the first
escape of a block to its last (on a 100 MB log with a few escapes: 0.09 s, where the two
cleaners this one replaced took 0.54 s).

Also the wording both faces share for a list of names: :func:`listed`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

#: An escape sequence: ESC and what belongs to it. String sequences (OSC ``]``, DCS ``P``, SOS
#: ``X``, PM ``^``, APC ``_``) end at BEL or ST and never span lines: an unterminated one loses
#: only its ESC and introducer (its text shows, harmlessly), not the lines after it. A lone ESC
#: (a sequence cut short at the end of the output) goes too. ``{sgr}`` is where keep_sgr puts a
#: look-ahead that leaves an ESC starting a colour code alone.
_SEQUENCE = r"""
    \x1b{sgr}(?:
        \[[0-?]*[ -/]*[@-~]                       # CSI
      | [\]PX^_][^\x07\x1b\n]*(?:\x07|\x1b\\)     # OSC, DCS, SOS, PM, APC
      | [ -/]*[0-~]                               # nF, Fp, Fe, Fs: ESC (B, ESC c, ESC 7 ...
    )?
"""
_KEEP_SGR = r"(?!\[[0-9;:]*m)"
_ESC = {  # the sequences above; without / with keep_sgr
    keep: re.compile(_SEQUENCE.format(sgr=_KEEP_SGR if keep else "").encode(), re.VERBOSE)
    for keep in (False, True)
}
#: C1 controls in UTF-8. A pattern of their own: in one alternation with the sequences, the
#: search for ESC loses its fast path, and every coloured line costs twice as much.
_C1 = re.compile(rb"\xc2[\x80-\x9f]")
_CR_TRAILING = re.compile(rb"\r+(?=\n|\Z)")  # "text\r\n" is a line ending, not a frame
_CR_FRAMES = re.compile(rb"(?m)^[^\n]*\r")  # all but the last frame of a \r progress line
#: C0 controls but tab and newline, and DEL; with keep_sgr ESC stays (only colour codes are
#: left by then)
_C0 = {False: bytes([*range(0, 9), *range(11, 32), 127])}
_C0[True] = _C0[False].replace(b"\x1b", b"")


def clean(data: str | bytes, *, keep_sgr: bool = False) -> str:
    """``data`` (a line or a block of lines; bytes are decoded as UTF-8 with replacement) as
    text a terminal only displays: see the module's docstring for what is removed."""
    if isinstance(data, str):
        if data.isprintable():  # the common case: a name, a reason without controls
            return data
        data = data.encode("utf-8", "surrogatepass")  # C1 code points become their UTF-8
    return clean_bytes(data, keep_sgr=keep_sgr).decode("utf-8", "replace")


def listed(names: Sequence[str], shown: int) -> str:
    """``a, b and c``; past ``shown`` names, the first ``shown`` and how many more (``a, b, c
    and 4 more``): a line that names many steps or runs stays a line. One wording for the
    runner's notes and the command line's errors."""
    if len(names) <= 1:
        return "".join(names)
    if len(names) > shown:
        return f"{', '.join(names[:shown])} and {len(names) - shown} more"
    return f"{', '.join(names[:-1])} and {names[-1]}"


def clean_bytes(data: bytes, *, keep_sgr: bool = False) -> bytes:
    """``clean`` before its decoding: the same bytes, for a writer that passes ASCII output
    on as bytes (the plain echo of a step printing millions of lines saves a decode and an
    encode of all of it). Not yet valid UTF-8: decode what is not ASCII as ``clean`` does."""
    if b"\x1b" in data:
        sequences = _ESC[keep_sgr]
        data = _on_lines(data, b"\x1b", lambda part: sequences.sub(b"", part))
    if b"\xc2" in data:
        data = _on_lines(data, b"\xc2", lambda part: _C1.sub(b"", part))
    if b"\r" in data:
        data = _on_lines(data, b"\r", _last_frames)
    return data.translate(None, _C0[keep_sgr])


def _last_frames(lines: bytes) -> bytes:
    """Of each ``\\r`` progress line, its last frame; a line ending in ``\\r\\n`` is kept."""
    lines = _CR_TRAILING.sub(b"", lines)
    return _CR_FRAMES.sub(b"", lines) if b"\r" in lines else lines


def _on_lines(data: bytes, mark: bytes, fix: Callable[[bytes], bytes]) -> bytes:
    """``fix`` applied to the lines from the first holding ``mark`` to the last only: what it
    removes never spans lines, and a 4 MiB block with a few escape codes then costs a few
    lines of regular expression, not 4 MiB of it."""
    start = data.rfind(b"\n", 0, data.find(mark)) + 1
    end = data.find(b"\n", data.rfind(mark))
    if end < 0:
        end = len(data)
    return data[:start] + fix(data[start:end]) + data[end:]
