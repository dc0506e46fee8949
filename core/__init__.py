"""orch-tui core: the runner, its event stream and command API. Never imports tui/ or textual."""

from __future__ import annotations

import sys

__version__ = "0.1.0"


class _NoTypingExtensionsForMsgspec:
    """An import finder that keeps msgspec from importing typing_extensions, and no one else.

    msgspec's ``_utils`` imports typing_extensions, when it is installed (Textual needs it),
    only for ``get_type_hints``, ``Required`` and ``NotRequired``, which Python 3.11's typing
    (our oldest) has too; msgspec takes typing's when that import fails. typing_extensions and
    the ``inspect`` it imports were ~14 ms of every headless run's start: a fifth of
    ``python -c 'import msgspec'``. The import is refused only while msgspec._utils runs its
    first lines (it defines ``get_type_hints`` right after); anything else importing
    typing_extensions, before or after, gets it as ever. Nothing of ours uses typing_extensions'
    own forms in a msgspec type.
    """

    @staticmethod
    def find_spec(name: str, path: object = None, target: object = None) -> None:
        if name == "typing_extensions":
            utils = sys.modules.get("msgspec._utils")
            if utils is not None and not hasattr(utils, "get_type_hints"):
                raise ModuleNotFoundError("typing_extensions: not for msgspec", name=name)


if "typing_extensions" not in sys.modules:
    sys.meta_path.insert(0, _NoTypingExtensionsForMsgspec())  # type: ignore[arg-type]


def _import_uuid_without_platform() -> None:
    """Import uuid (msgspec's core imports it, for its UUID type) without the platform module.

    uuid imports platform only to call ``platform.system()`` once, and platform compiles a
    dozen regular expressions as it loads: ~3 ms of every run's start, 3% of a one-step run.
    While uuid loads, ``platform`` is a stand-in whose ``system()`` is ``os.uname().sysname``
    (what platform's own returns); it is gone from ``sys.modules`` right after, so anything
    importing platform later (Textual, Dask) gets the real module.
    """
    if "uuid" in sys.modules or "platform" in sys.modules:
        return
    import os
    import types

    stand_in = types.ModuleType("platform")
    stand_in.system = lambda: os.uname().sysname  # type: ignore[attr-defined]
    sys.modules["platform"] = stand_in
    try:
        import uuid  # noqa: F401
    except Exception:  # a uuid wanting more of platform than system(): with the real one
        del sys.modules["platform"]
        import uuid  # noqa: F401
    finally:
        if sys.modules.get("platform") is stand_in:
            del sys.modules["platform"]


_import_uuid_without_platform()
