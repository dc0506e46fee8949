"""The live dashboard behind ``scriptlets/python/apps/hello_dash.py`` (its entry point and the
user's documentation), one concept a module:

* ``source``: where rows come from (the run's Context, a dict, a run's ctx.json);
* ``times``: ISO dates and epoch seconds, and the date axis's local-time shift;
* ``cache``: the rows as numpy columns, converted once per row, and MinMaxLTTB downsampling;
* ``figure``: one tick's plotly figure, as base64 typed arrays;
* ``page``: the Dash layout and its update callback;
* ``access``: the Host check and the token;
* ``server``: the werkzeug server and ``run``, the recipe step;
* ``cli``: ``main``, the command line.

Built to stay fast on millions of rows: a tick converts only the rows appended since the
previous one, sends at most ``max_points`` points a trace (of the zoomed window when zoomed),
sends nothing when nothing changed, and never overlaps the previous tick.

Nothing here imports dash, plotly, flask, werkzeug, numpy or tsdownsample at import: the runner
imports step modules to validate a recipe, and that must stay fast.
"""
