"""The web console at ``/console``: static pages that use the hub's own HTTP API.

The console is plain ES modules, one per page, with no build step, and one vendored library
(uPlot, for the usage and status charts; see ``static/vendor/README.md``). It renders nothing on
the server: the browser keeps the signed-in token (an admin token ``mha-…`` or an API key
``mh-…``) in sessionStorage and calls ``/v1/*`` and ``/admin/v1/*`` with it, so the console can
do exactly what a client of the public API can do, and no second code path needs keeping in
step with the API. The playground has to be client code anyway: it streams a POST's SSE body,
which neither ``EventSource`` nor htmx's SSE extension can send with a Bearer header.
"""

from __future__ import annotations

from pathlib import Path

from starlette.staticfiles import StaticFiles

__all__ = ["STATIC_DIR", "console_app"]

STATIC_DIR = Path(__file__).parent / "static"


def console_app() -> StaticFiles:
    """The files under ``static/``, ``index.html`` for the directory itself."""
    return StaticFiles(directory=STATIC_DIR, html=True)
