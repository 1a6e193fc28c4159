"""Every collection name the service accepts reads back at its URL; every one it refuses is one that could
not (a property test over random Unicode names, over HTTP with ``gscore.client.Client``'s percent-encoding).

The app runs under a real uvicorn server (in a thread): Starlette's ``TestClient`` decodes a path twice
(``httpx.URL.path`` is already decoded and it unquotes it again), so ``%2500`` would reach the app as NUL.
"""

from __future__ import annotations

import json
import threading
import time
import unicodedata
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import DIGITS_ARCH, free_port
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_routes_inprocess import inprocess_settings

from gscore.client import Client
from gscore.service.app import create_app

SPEC = {"arch": DIGITS_ARCH, "dataset": "digits", "samples_per_class": 10, "measures": ["c3"], "seed": 7}
MAX_NAME = 128
SPECIAL = [
    " ",
    "\u3000",
    "\u00a0",
    "%",
    "%2F",
    "%25",
    "\\",
    "\u200f",
    "\u202e",
    "\u2028",
    "?",
    "#",
    ".",
    "..",
    "/",
    "\t",
    "\x00",
    "\x7f",
    "+",
    "&",
    ";",
    "é",
    "e\u0301",
    "\U0001f600",
    "\ufeff",
    "\ufffe",
]


def readable_back(name: str) -> bool:
    """The rule the service states: one URL path segment, exactly as sent."""
    return (
        0 < len(name) <= MAX_NAME
        and name.strip() == name
        and "/" not in name
        and name not in (".", "..")
        and not any(unicodedata.category(ch) == "Cc" for ch in name)
    )


names = st.one_of(
    st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=40),
    st.lists(st.sampled_from(SPECIAL) | st.text(min_size=1, max_size=3), min_size=1, max_size=8).map("".join),
    st.text(st.characters(exclude_categories=("Cs",)), min_size=MAX_NAME - 2, max_size=MAX_NAME + 2),
)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    import uvicorn

    app = create_app(inprocess_settings(tmp_path_factory.mktemp("names")), run_reaper=False)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    try:
        with Client(f"http://127.0.0.1:{port}") as client:
            yield client
            assert client._http.get("/healthz").status_code == 200  # still serving
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=names)
def test_accepted_names_read_back_and_refused_names_could_not(
    service: Client, digits_checkpoint: Path, name: str
) -> None:
    model_name = f"m-{uuid.uuid4().hex[:8]}"
    with digits_checkpoint.open("rb") as handle:
        response = service._http.post(
            "/v1/jobs",
            data={"spec": json.dumps(SPEC), "collection": name, "model_name": model_name},
            files={"checkpoint": ("c.safetensors", handle)},
        )
    if not readable_back(name):
        assert response.status_code == 422, (name, response.text)
        assert response.json()["field"] == "collection"
        return
    assert response.status_code == 202, (name, response.text)
    job = response.json()
    assert job["collection"] == name
    collection = service.collection(name)  # GET /v1/collections/{percent-encoded name}
    assert collection["name"] == name
    assert model_name in [model["model_name"] for model in collection["models"]]
    listed = service.jobs(collection=name)["jobs"]  # the name as a query parameter
    assert job["id"] in [entry["id"] for entry in listed]
    ranking = service.ranking(name)  # and under /ranking (nothing scored yet: every model not_scored)
    assert model_name in [entry["name"] for entry in ranking["not_scored"]]
