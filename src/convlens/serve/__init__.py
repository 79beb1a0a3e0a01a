"""``convlens serve``: explore a model in the browser.

:mod:`~convlens.serve.explorer` computes (with the same library functions as the CLI),
:mod:`~convlens.serve.app` maps it to HTTP, ``static/`` is the page.
"""
