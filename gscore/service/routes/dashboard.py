"""The web dashboard at ``/``: static HTML/JS/CSS from ``service/dashboard/`` and plotly's bundled JS.

The pages are a client of the JSON API (``/v1/...``); this module only serves files, all from this
machine: the dashboard's own assets and ``plotly.min.js`` from the installed ``plotly`` package.
"""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from gscore.service.problems import Problem

router = APIRouter(include_in_schema=False)
DASHBOARD_DIR = Path(__file__).resolve().parents[1] / "dashboard"
_MEDIA_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
# Every script, image and request is this server's own; no inline script runs. Styles allow inline ones:
# plotly.js sets style attributes and injects its stylesheet at run time (blocked otherwise).
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "font-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
_NO_CACHE = {"Cache-Control": "no-cache", **SECURITY_HEADERS}  # revalidate (ETag): an upgrade is seen at once


def dashboard_assets() -> dict[str, Path]:
    """File name -> path of every servable dashboard asset (a fixed set: no path from the URL is opened)."""
    return {
        path.name: path
        for path in sorted(DASHBOARD_DIR.iterdir())
        if path.is_file() and path.suffix in _MEDIA_TYPES
    }


@cache
def plotly_js_path() -> Path:
    """``plotly/package_data/plotly.min.js`` of the installed plotly package."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the plotly package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "package_data" / "plotly.min.js"


def _not_found(name: str) -> Problem:
    return Problem(404, "not-found", "Not found", f"the dashboard has no file {name!r}")


@router.get("/")
def dashboard_index() -> FileResponse:
    return FileResponse(DASHBOARD_DIR / "index.html", media_type="text/html", headers=_NO_CACHE)


@router.get("/dashboard/vendor/plotly.min.js")
def plotly_js() -> FileResponse:
    path = plotly_js_path()
    if not path.is_file():
        raise _not_found("vendor/plotly.min.js")
    headers = {"Cache-Control": "max-age=86400", **SECURITY_HEADERS}
    return FileResponse(path, media_type="text/javascript", headers=headers)


@router.get("/dashboard/{name}")
def dashboard_asset(name: str) -> FileResponse:
    path = dashboard_assets().get(name)
    if path is None:
        raise _not_found(name)
    return FileResponse(path, media_type=_MEDIA_TYPES[path.suffix], headers=_NO_CACHE)
