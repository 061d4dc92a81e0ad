"""One module per analysis. Each exposes a pure function ``(models, samples, config) -> Result``
and registers how its result is plotted and reported (see :mod:`rlvr_lens.report`).

Analyses never print, never write files and never parse command-line arguments.
"""
