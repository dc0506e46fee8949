"""Initialise ctx keys as empty lists, so downstream steps can append to them.

Recipe::

    - name: start_shared_ctx
      type: python
      module: scriptlets.python.steps.ctx_init
      params:
        keys: ["new_row"]

CLI (prints the initialised ctx as JSON)::

    python scriptlets/python/steps/ctx_init.py --keys foo bar
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import MutableMapping
from typing import Any


def run(ctx: MutableMapping[str, Any], keys: list[str], overwrite: bool = False) -> list[str]:
    """Set each key to ``[]``; keys that already hold a value are kept unless ``overwrite``.

    Keeping existing values is what makes ``--resume-from`` work: a resumed run starts with the
    restored ctx, and initialising must not wipe it. Returns the keys it set.
    """
    if isinstance(keys, str):
        keys = [keys]
    done = []
    for key in keys:
        if not isinstance(key, str) or not key:
            raise ValueError(f"ctx keys must be non-empty strings, got {key!r}")
        if overwrite or key not in ctx:
            ctx[key] = []
            done.append(key)
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Initialise ctx keys as empty lists.")
    parser.add_argument("--keys", nargs="+", required=True, metavar="KEY")
    args = parser.parse_args(argv)
    ctx: dict[str, Any] = {}
    run(ctx, args.keys)
    print(json.dumps(ctx))
    return 0


if __name__ == "__main__":
    sys.exit(main())
