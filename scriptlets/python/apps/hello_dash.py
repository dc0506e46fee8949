"""A live Dash dashboard of ``ctx[ctx_key]``: rows ``[timestamp, v1, ..., vn]`` as time series.

Recipe (a background step: it serves until the run stops it)::

    - name: monitor_and_plot
      type: python
      module: scriptlets.python.apps.hello_dash
      background: true
      ready: {port: 8050}
      params:
        port: 8050
        ctx_key: new_row

Only this machine's browser gets in, and only with the run's token: the address it prints (in
the step's log, and in ``ctx[url_key]`` if given) carries a random ``?token=``, which the first
visit trades for a cookie; a request without either, or whose Host header is not the dashboard's
own loopback address (a web page reaching 127.0.0.1 through DNS rebinding), is answered 403.
``token: false`` turns the token off (the Host check stays).

CLI, standalone: plot the ctx.json of a run directory (re-read when it changes), or rows it makes
up itself (``--demo-rows`` to start with that many)::

    python scriptlets/python/apps/hello_dash.py --port 8050 --ctx_key new_row --run-dir .orch/runs/ID
    python scriptlets/python/apps/hello_dash.py --port 8050 --demo-rows 1000000

The code is the package next to this file, ``dashboard/`` (one concept a module: its
``__init__`` says which); this module is the seed's entry point: ``run`` for recipes, ``main``
for the command line. dash, plotly and numpy are imported only when the app is built, never at
import: the runner imports step modules to validate a recipe, and that must stay fast.
"""

from __future__ import annotations

import sys

if __package__:  # imported: scriptlets.python.apps.hello_dash (a recipe's module), or run by -m
    from .dashboard.cli import main
    from .dashboard.server import run
else:  # run as a file: Python put this file's folder first on sys.path
    from dashboard.cli import main
    from dashboard.server import run

__all__ = ["main", "run"]

if __name__ == "__main__":
    sys.exit(main())
