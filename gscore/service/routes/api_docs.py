"""``/docs`` (Swagger UI) and ``/redoc`` (ReDoc) that work without internet access.

FastAPI's self-hosting recipe (``docs_url=None``, ``redoc_url=None`` and ``get_swagger_ui_html`` /
``get_redoc_html`` with local URLs); the JS and CSS come from the installed ``fastapi-offline`` package,
which ships Swagger UI's bundle and ReDoc's standalone build, served under ``/docs-assets/``. ReDoc's
build points one image (its "API docs by Redocly" logo) at a CDN; that URL is rewritten to a local file.
"""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import FileResponse, HTMLResponse, Response

from gscore.service.problems import Problem

router = APIRouter(include_in_schema=False)
ASSETS_PREFIX = "/docs-assets"
OAUTH2_REDIRECT = "/docs/oauth2-redirect"
DOCS_ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "redoc.standalone.js": "text/javascript",
    "favicon.png": "image/png",
}
REDOC_CDN_LOGO = b"https://cdn.redoc.ly/redoc/logo-mini.svg"
_CACHE = {"Cache-Control": "max-age=86400"}


@cache
def docs_assets_dir() -> Path:
    """The ``static`` folder of the installed ``fastapi_offline`` package."""
    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the fastapi-offline package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


@cache
def redoc_js() -> bytes:
    """ReDoc's standalone build with its one CDN image URL pointed at a local asset."""
    source = (docs_assets_dir() / "redoc.standalone.js").read_bytes()
    return source.replace(REDOC_CDN_LOGO, f"{ASSETS_PREFIX}/favicon.png".encode())


def _root(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


@router.get("/docs")
def swagger_ui(request: Request) -> HTMLResponse:
    root = _root(request)
    return get_swagger_ui_html(
        openapi_url=f"{root}{request.app.openapi_url}",
        title=f"{request.app.title} - Swagger UI",
        oauth2_redirect_url=f"{root}{OAUTH2_REDIRECT}",
        swagger_js_url=f"{root}{ASSETS_PREFIX}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{ASSETS_PREFIX}/swagger-ui.css",
        swagger_favicon_url=f"{root}{ASSETS_PREFIX}/favicon.png",
        swagger_ui_parameters={"validatorUrl": None},  # no request to the online validator
    )


@router.get(OAUTH2_REDIRECT)
def swagger_ui_redirect() -> HTMLResponse:
    return get_swagger_ui_oauth2_redirect_html()


@router.get("/redoc")
def redoc(request: Request) -> HTMLResponse:
    root = _root(request)
    return get_redoc_html(
        openapi_url=f"{root}{request.app.openapi_url}",
        title=f"{request.app.title} - ReDoc",
        redoc_js_url=f"{root}{ASSETS_PREFIX}/redoc.standalone.js",
        redoc_favicon_url=f"{root}{ASSETS_PREFIX}/favicon.png",
        with_google_fonts=False,
    )


@router.get(f"{ASSETS_PREFIX}/{{name}}", response_model=None)
def docs_asset(name: str) -> Response | FileResponse:
    if name not in DOCS_ASSETS:
        raise Problem(404, "not-found", "Not found", f"no documentation asset {name!r}")
    if name == "redoc.standalone.js":
        return Response(redoc_js(), media_type=DOCS_ASSETS[name], headers=_CACHE)
    return FileResponse(docs_assets_dir() / name, media_type=DOCS_ASSETS[name], headers=_CACHE)
