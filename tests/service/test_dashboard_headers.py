"""The dashboard's responses carry a strict Content-Security-Policy (scripts from this server only; inline
styles allowed, plotly.js needs them) and the framing, sniffing and referrer headers; its HTML has no
inline script or handler the policy would block (in process; tests/test_dashboard_browser.py runs the
pages under the policy in Chromium and fails on any violation it logs)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from test_routes_inprocess import inprocess_settings

from gscore.service.app import create_app
from gscore.service.routes.dashboard import DASHBOARD_DIR, dashboard_assets


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    settings = inprocess_settings(tmp_path_factory.mktemp("dashboard-headers"), upload_check_processes=0)
    with TestClient(create_app(settings, run_reaper=False)) as test_client:
        yield test_client


@pytest.mark.parametrize("path", ["/", "/dashboard/app.js", "/dashboard/style.css"])
def test_dashboard_responses_carry_the_security_headers(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    policy = dict(
        directive.strip().split(" ", 1)
        for directive in response.headers["content-security-policy"].split(";")
    )
    assert policy["default-src"] == "'none'" and policy["script-src"] == "'self'"
    assert policy["style-src"] == "'self' 'unsafe-inline'" and policy["frame-ancestors"] == "'none'"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"


def test_the_dashboard_html_has_nothing_inline_the_policy_blocks() -> None:
    html = (DASHBOARD_DIR / "index.html").read_text()
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", html, flags=re.S)
    assert scripts and all('src="/' in attributes and not body.strip() for attributes, body in scripts)
    assert "<style" not in html and not re.search(r"\son[a-z]+\s*=", html) and " style=" not in html
    for name, path in dashboard_assets().items():
        if name.endswith(".js"):
            assert "eval(" not in Path(path).read_text() and "new Function(" not in Path(path).read_text()
