"""The dashboard and the offline API docs in a real headless Chromium (Debian's ``chromium``, driven by
Playwright with the system browser) against a real API + worker with a small scored collection.

Every page is checked for console errors, uncaught exceptions and requests to any host but the service
(those are aborted, so the test also proves the pages work offline). With ``GSCORE_UPDATE_SCREENSHOTS=1``
the screenshots are written to ``docs/screenshots/`` (the README shows them).
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from conftest import DIGITS_ARCH, REPO_ROOT, Stack, start_stack, submit_job, wait_for_job

CHROMIUM = Path(os.environ.get("GSCORE_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
GATE_STEPS = (
    3  # each job holds in stage test-gate and takes a step per file the test creates (worker test hook)
)
STATE_TIMEOUT_SECONDS = 120  # the bound on waiting for a state to show, never the reason it shows
GRID = [{"lr": lr, "batch_size": bs} for lr in (0.01, 0.1) for bs in (32, 64)]
SCREENSHOTS = REPO_ROOT / "docs" / "screenshots"

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (dev extra)")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM} (.ci/run installs Debian's chromium)"
)


@dataclass
class Watch:
    """What one page did that it must not: console errors, uncaught exceptions, requests elsewhere."""

    origin: str
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    foreign_requests: list[str] = field(default_factory=list)

    def assert_clean(self) -> None:
        assert self.foreign_requests == [], self.foreign_requests
        assert self.console_errors == [], self.console_errors
        assert self.page_errors == [], self.page_errors


@pytest.fixture(scope="module")
def gate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The worker's gate folder: a job takes gate step i once the file ``i`` exists (``open``: all steps)."""
    return tmp_path_factory.mktemp("gate")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, gate: Path) -> Iterator[Stack]:
    stack = start_stack(tmp_path_factory.mktemp("dashboard"), GSCORE_TEST_JOB_GATE_DIR=str(gate))
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture()
def page(browser: Any, stack: Stack) -> Iterator[tuple[Any, Watch]]:
    """A fresh page whose requests off the service are recorded and aborted."""
    watch = Watch(origin=urlsplit(stack.url).netloc)
    context = browser.new_context(viewport={"width": 1400, "height": 900})

    def route(request_route: Any) -> None:
        url = request_route.request.url
        if url.startswith(("data:", "blob:")) or urlsplit(url).netloc == watch.origin:
            request_route.continue_()
        else:
            watch.foreign_requests.append(url)
            request_route.abort()

    context.route("**/*", route)
    page = context.new_page()
    page.on("console", lambda msg: watch.console_errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: watch.page_errors.append(str(exc)))
    yield page, watch
    context.close()


def screenshot(page: Any, name: str, tmp_path: Path) -> None:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000  # a rendered page, not a blank one
    if os.environ.get("GSCORE_UPDATE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, SCREENSHOTS / f"{name}.png")


@dataclass
class Collection:
    name: str
    job_ids: list[str]
    progress_seen: list[tuple[str, str, str]]  # (state, stage text, progress value) seen in the browser


# (state, stage text, progress value) of a jobs-page row, read at once (the row is redrawn as the page polls)
READ_ROW = """row => {
    const text = selector => row.querySelector(selector)?.innerText ?? "";
    const bar = row.querySelector("td.progress progress");
    return [text("td.state"), bar ? text("td.progress .stage") : "", bar?.getAttribute("value") ?? ""];
}"""


@pytest.fixture(scope="module")
def collection(stack: Stack, gate: Path, digits_checkpoint: Path, browser: Any) -> Collection:
    """Four models (a 2x2 lr x batch_size grid) scored by the real worker; while the first runs, the jobs
    page is watched in the browser and what its row shows is recorded. The first job is held at each step of
    its gate until the page has shown that step, so every step is seen however loaded the machine is. The
    others are submitted once it runs (the one worker then takes them after it: the watched job is first)."""
    name = f"sweep-{uuid.uuid4().hex[:6]}"
    job_ids: list[str] = []
    with stack.client() as client:
        for index, hyperparameters in enumerate(GRID):
            spec = {
                "arch": DIGITS_ARCH,
                "dataset": "digits",
                "measures": ["c3", "c4"],
                "samples_per_class": 10,
                # distinct jobs on one probe (a collection refuses a second probe, e.g. another seed)
                "params": {"c3": {"k": 5 + index}},
            }
            response = submit_job(
                client,
                digits_checkpoint,
                spec,
                collection=name,
                model_name=f"lr{hyperparameters['lr']}-bs{hyperparameters['batch_size']}",
                hyperparameters=json.dumps(hyperparameters),
                test_accuracy=str(0.5 + 0.1 * index - 0.05 * (index % 2)),
                train_accuracy=str(0.99 + 0.002 * index),  # all pass the 0.99 training protocol
            )
            assert response.status_code == 202, response.text
            job_ids.append(response.json()["id"])
            if index == 0:
                wait_for_job(client, job_ids[0], ("running",), timeout=STATE_TIMEOUT_SECONDS)

        context = browser.new_context()
        page = context.new_page()
        page.goto(f"{stack.url}/#/jobs")
        row = page.locator(f'tr[data-job="{job_ids[0]}"]')
        seen: list[tuple[str, str, str]] = []

        def watch_until(done: Callable[[tuple[str, str, str]], bool]) -> None:
            deadline = time.monotonic() + STATE_TIMEOUT_SECONDS
            while time.monotonic() < deadline:
                state, stage, value = row.evaluate(READ_ROW, timeout=30_000)  # one read: a consistent row
                if not seen or seen[-1] != (state, stage, value):
                    seen.append((state, stage, value))
                if done(seen[-1]):
                    return
                time.sleep(0.1)
            raise AssertionError(f"the jobs page never showed the awaited state; it showed {seen}")

        for step in range(GATE_STEPS):  # the page shows step `step`, then the job may take the next one
            watch_until(lambda shown, step=step: shown[0] == "running" and shown[2] == str(step))
            (gate / str(step + 1)).touch()
        (gate / "open").touch()  # the other jobs pass their gates at once
        watch_until(lambda shown: shown[0] == "succeeded")
        context.close()
        for job_id in job_ids:
            assert wait_for_job(client, job_id, ("succeeded",), timeout=120)["state"] == "succeeded"
    return Collection(name, job_ids, seen)


def test_jobs_page_shows_live_progress(collection: Collection) -> None:
    """The first job's row went running with its progress advancing through every step of its gate (read
    from the page as it polled) -> succeeded, without a reload."""
    states = [state for state, _, _ in collection.progress_seen]
    assert states[-1] == "succeeded", collection.progress_seen
    running = [(stage, value) for state, stage, value in collection.progress_seen if state == "running"]
    gate_values = [value for stage, value in running if stage.startswith("test-gate")]
    assert gate_values == [str(step) for step in range(GATE_STEPS)], collection.progress_seen
    assert all(stage.endswith(f"/{GATE_STEPS}") for stage, _ in running if stage.startswith("test-gate")), (
        running
    )


def test_dashboard_lists_the_collection(
    page: tuple[Any, Watch], stack: Stack, collection: Collection, tmp_path: Path
) -> None:
    browser_page, watch = page
    browser_page.goto(f"{stack.url}/")
    row = browser_page.locator(f'#collections tr[data-collection="{collection.name}"]')
    row.wait_for()
    assert row.locator("td.models").inner_text() == str(len(GRID))
    assert "digits train, 10/class" in row.inner_text()
    assert "4 succeeded" in row.inner_text()
    screenshot(browser_page, "dashboard-collections", tmp_path)
    watch.assert_clean()


def test_collection_page_models_plots_and_kendall_table(
    page: tuple[Any, Watch], stack: Stack, collection: Collection, tmp_path: Path
) -> None:
    browser_page, watch = page
    with stack.client() as client:
        models = client.get(f"/v1/collections/{collection.name}").json()["models"]
        ranking = client.get(f"/v1/collections/{collection.name}/ranking").json()
    browser_page.goto(f"{stack.url}/#/collections/{collection.name}")
    browser_page.locator("table.kendall").wait_for()

    # every model, with its scores as the API has them
    rows = browser_page.locator("table.models tbody tr")
    assert sorted(rows.evaluate_all("rows => rows.map(r => r.dataset.model)")) == sorted(
        m["model_name"] for m in models
    )
    for model in models:
        for measure, value in model["scores"].items():
            cell = browser_page.locator(
                f'table.models tr[data-model="{model["model_name"]}"] td[data-measure="{measure}"]'
            )
            assert float(cell.get_attribute("data-value")) == value

    # the Kendall table holds exactly the JSON ranking's coefficients
    columns = [*ranking["axes"], "total", "tau"]
    intervals_shown = 0
    assert set(ranking["measures"]) == {"c3", "c4"}
    for measure, entry in ranking["measures"].items():
        expected = {**{axis: entry["psi"][axis] for axis in ranking["axes"]}, "total": entry["psi"]["total"]}
        expected["tau"] = entry["tau"]
        for column in columns:
            cell = browser_page.locator(
                f'table.kendall tr[data-measure="{measure}"] td[data-column="{column}"]'
            )
            shown = cell.get_attribute("data-value")
            if expected[column] is None:
                assert shown == "" and cell.inner_text() == "n/a"
            else:
                assert float(shown) == expected[column]
                assert cell.inner_text().split()[0] == f"{expected[column]:.2f}"
            low, high = (entry.get("ci_low") or {}).get(column), (entry.get("ci_high") or {}).get(column)
            if low is not None and high is not None:  # the interval under the value
                ci = cell.locator(".ci")
                assert (float(ci.get_attribute("data-ci-low")), float(ci.get_attribute("data-ci-high"))) == (
                    low,
                    high,
                )
                intervals_shown += 1

    assert intervals_shown > 0  # the ranking's default bootstrap gives at least tau an interval

    # one rendered plotly scatter per measure, a point per model, coloured by the first hyperparameter
    for measure in ranking["measures"]:
        plot = browser_page.locator(f'.plot[data-measure="{measure}"]')
        plot.locator(".main-svg").first.wait_for()
        assert plot.locator(".scatterlayer .point").count() == len(GRID)
        assert plot.locator(".legend .traces").count() == 2  # lr: 0.01 and 0.1
        x_title = plot.locator(".xtitle").text_content()
        assert x_title.startswith(measure) and "predicts better generalization" in x_title
    browser_page.select_option("select.color-by", "batch_size")
    legend = browser_page.locator('.plot[data-measure="c3"] .legend .traces')
    assert legend.evaluate_all("items => items.map(i => i.textContent)") == [
        "batch_size = 32",
        "batch_size = 64",
    ]

    # sorting by a score orders the rows by it
    browser_page.locator('table.models th[data-key="m:c3"]').click()
    shown = rows.evaluate_all("rows => rows.map(r => r.dataset.model)")
    assert shown == [m["model_name"] for m in sorted(models, key=lambda m: m["scores"]["c3"])]
    browser_page.fill("input.filter", "bs64")
    assert rows.count() == 2
    browser_page.fill("input.filter", "")
    screenshot(browser_page, "dashboard-collection", tmp_path)
    watch.assert_clean()


def test_job_page_shows_the_result(
    page: tuple[Any, Watch], stack: Stack, collection: Collection, tmp_path: Path
) -> None:
    browser_page, watch = page
    with stack.client() as client:
        job = client.get(f"/v1/jobs/{collection.job_ids[0]}").json()
    browser_page.goto(f"{stack.url}/#/jobs/{job['id']}")
    browser_page.locator("table.scores").wait_for()
    assert browser_page.locator("dd.state").inner_text().startswith("succeeded")
    for measure, value in job["result"]["scores"].items():
        row = browser_page.locator(f'table.scores tr[data-measure="{measure}"]')
        assert float(row.locator("td.num").inner_text()) == pytest.approx(value, rel=1e-5)
    browser_page.goto(f"{stack.url}/#/jobs")
    browser_page.locator(f'tr[data-job="{job["id"]}"]').wait_for()
    screenshot(browser_page, "dashboard-jobs", tmp_path)
    watch.assert_clean()


def test_failed_job_page_shows_its_error(page: tuple[Any, Watch], stack: Stack, tmp_path: Path) -> None:
    """A checkpoint whose weights do not fit its architecture fails in the worker; the page shows why."""
    import torch

    from gscore.models import build_model

    # a torch.save file (a safetensors header would be refused at submission): the worker fails it
    wrong = tmp_path / "wider.pt"
    torch.save(build_model({**DIGITS_ARCH, "width": 4}).state_dict(), wrong)
    with stack.client() as client:
        response = submit_job(client, wrong, {"arch": DIGITS_ARCH, "dataset": "digits", "measures": ["c3"]})
        assert response.status_code == 202, response.text
        failed = wait_for_job(client, response.json()["id"], ("failed",))
    browser_page, watch = page
    browser_page.goto(f"{stack.url}/#/jobs/{failed['id']}")
    alert = browser_page.locator('.error[role="alert"]')
    alert.wait_for()
    assert failed["error"]["title"] in alert.inner_text()
    assert failed["error"]["detail"] in alert.inner_text()
    watch.assert_clean()


def test_api_docs_render_offline(page: tuple[Any, Watch], stack: Stack) -> None:
    browser_page, watch = page
    with stack.client() as client:
        schema = client.get("/openapi.json").json()
    operations = sum(len(item) for item in schema["paths"].values())
    browser_page.goto(f"{stack.url}/docs")
    browser_page.locator(".opblock").first.wait_for()
    assert browser_page.locator(".opblock").count() == operations
    assert "Submit a checkpoint (or an .onnx model) for scoring" in browser_page.inner_text("body")
    browser_page.goto(f"{stack.url}/redoc")
    browser_page.locator(
        "h2", has_text="Submit a checkpoint (or an .onnx model) for scoring"
    ).first.wait_for()
    assert browser_page.locator("h2", has_text="A job's state and result").count() == 1
    watch.assert_clean()


def test_the_api_key_stays_in_the_tab_unless_remembered(browser: Any, stack: Stack) -> None:
    """Under the dashboard's strict Content-Security-Policy: the key goes to sessionStorage, and to
    localStorage only with "remember" ticked; clearing it removes both."""
    context = browser.new_context()
    page = context.new_page()
    response = page.goto(f"{stack.url}/")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    page.locator("#api-key").wait_for()

    def stored() -> list[str | None]:
        return page.evaluate(
            "() => [sessionStorage.getItem('gscore.apiKey'), localStorage.getItem('gscore.apiKey')]"
        )

    page.fill("#api-key", "gsk_tab_only")
    page.click("#api-key-form button")
    assert stored() == ["gsk_tab_only", None]
    page.check("#api-key-remember")
    page.click("#api-key-form button")
    assert stored() == ["gsk_tab_only", "gsk_tab_only"]
    page.fill("#api-key", "")
    page.click("#api-key-form button")
    assert stored() == [None, None]
    context.close()


# ---- what a result says about itself: warnings, groups, one-group intervals, left-out models ------------
PROTOCOL_MODELS = [  # (hyperparameters, test accuracy, train accuracy): the last is under the protocol's 0.99
    ({"lr": 0.01, "batch_size": 32}, 0.6, 1.0),
    ({"lr": 0.1, "batch_size": 32}, 0.7, 1.0),
    ({"lr": 0.01, "batch_size": 64}, 0.4, 0.5),
]


@pytest.fixture(scope="module")
def protocol_collection(
    stack: Stack, gate: Path, digits_checkpoint: Path, collection: Collection
) -> Collection:
    """Three models of the untrained digits CNN (every result carries the fit warning; c4's k above the
    layer count warns too): two given as fitted that differ only in lr (one group for lr, none for
    batch_size) and one left out by the training-accuracy protocol. Made after `collection` (it opens the
    gate that `collection` watches step by step)."""
    name = f"protocol-{uuid.uuid4().hex[:6]}"
    job_ids = []
    (gate / "open").touch()  # nothing to watch here: these jobs pass the worker's gate at once
    with stack.client() as client:
        for index, (hyperparameters, test_accuracy, train_accuracy) in enumerate(PROTOCOL_MODELS):
            spec = {
                "arch": DIGITS_ARCH,
                "dataset": "digits",
                "measures": ["c3", "c4"],
                "samples_per_class": 10,
                "params": {"c3": {"k": 10 + 5 * index}},  # distinct jobs, distinct c3 values
            }
            response = submit_job(
                client,
                digits_checkpoint,
                spec,
                collection=name,
                model_name=f"p{index}",
                hyperparameters=json.dumps(hyperparameters),
                test_accuracy=str(test_accuracy),
                train_accuracy=str(train_accuracy),
            )
            assert response.status_code == 202, response.text
            job_ids.append(response.json()["id"])
        for job_id in job_ids:
            assert wait_for_job(client, job_id, ("succeeded",), timeout=120)["state"] == "succeeded"
    return Collection(name, job_ids, [])


def test_job_page_shows_every_warning(page: tuple[Any, Watch], stack: Stack, protocol_collection) -> None:
    browser_page, watch = page
    with stack.client() as client:
        job = client.get(f"/v1/jobs/{protocol_collection.job_ids[0]}").json()
    (fit_warning,) = job["result"]["meta"]["result_warnings"]  # untrained: below 0.99 on its probe
    assert job["result"]["status"]["c4"]["warnings"]  # k = 5 >= the 2 layers
    browser_page.goto(f"{stack.url}/#/jobs/{job['id']}")
    browser_page.locator("table.scores").wait_for()
    assert browser_page.locator(".result-warning").all_inner_texts() == [f"⚠ {fit_warning}"]
    for measure, status in job["result"]["status"].items():
        shown = browser_page.locator(f'table.scores tr[data-measure="{measure}"] td.measure-warnings li')
        assert shown.all_inner_texts() == [f"⚠ {warning}" for warning in status["warnings"]], measure
    watch.assert_clean()


def _box(locator: Any) -> tuple[float, float, float, float]:
    box = locator.bounding_box()
    assert box is not None
    return box["x"], box["y"], box["x"] + box["width"], box["y"] + box["height"]


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def test_collection_page_shows_warnings_groups_and_left_out_models(
    page: tuple[Any, Watch], stack: Stack, protocol_collection, tmp_path: Path
) -> None:
    browser_page, watch = page
    name = protocol_collection.name
    with stack.client() as client:
        ranking = client.get(f"/v1/collections/{name}/ranking").json()
        jobs = {job_id: client.get(f"/v1/jobs/{job_id}").json() for job_id in protocol_collection.job_ids}
    browser_page.goto(f"{stack.url}/#/collections/{name}")
    browser_page.locator("table.kendall").wait_for()

    # the models table: every measure's warnings on its cell, the fit warning on the model
    for index, job in enumerate(jobs.values()):
        row = browser_page.locator(f'table.models tr[data-model="p{index}"]')
        flag = row.locator("td.model .result-warning-flag")
        assert json.loads(flag.get_attribute("data-warnings")) == job["result"]["meta"]["result_warnings"]
        for measure, status in job["result"]["status"].items():
            cell_flag = row.locator(f'td[data-measure="{measure}"] .warning-flag')
            shown = json.loads(cell_flag.get_attribute("data-warnings")) if cell_flag.count() else []
            assert shown == status["warnings"], (index, measure)
            if status["warnings"]:
                assert cell_flag.get_attribute("title") == "\n".join(status["warnings"])

    # the Kendall table: lr has one group (its interval is said to be none), batch_size none
    c3 = ranking["measures"]["c3"]
    assert ranking["n_left_out"] == 1 and c3["groups"] == {"lr": 1, "batch_size": 0}
    assert c3["ci_low"]["lr"] == c3["ci_high"]["lr"]  # what the page must not show as an interval
    for column in ("lr", "total"):
        cell = browser_page.locator(f'table.kendall tr[data-measure="c3"] td[data-column="{column}"]')
        assert float(cell.get_attribute("data-value")) == c3["psi"][column]
        assert cell.locator(".groups").get_attribute("data-groups") == "1"
        assert cell.locator(".ci").inner_text() == "one group, no interval"
        assert cell.locator(".ci[data-ci-low]").count() == 0
    batch = browser_page.locator('table.kendall tr[data-measure="c3"] td[data-column="batch_size"]')
    assert batch.inner_text() == "n/a" and batch.get_attribute("title") == c3["why"]["batch_size"]

    # the scatter plots: the left-out model is its own grey-cross trace named in the legend
    for measure in ranking["measures"]:
        plot = browser_page.locator(f'.plot[data-measure="{measure}"]')
        plot.locator(".main-svg").first.wait_for()
        traces = plot.evaluate("d => d.data.map(t => [t.name, t.customdata, t.marker.symbol || 'circle'])")
        left_out = [t for t in traces if t[0].startswith("left out")]
        assert left_out == [["left out of τ/ψ (1)", ["p2"], "x-thin-open"]], traces
        assert sorted(n for t in traces if t not in left_out for n in t[1]) == ["p0", "p1"]
        legend = plot.locator(".legend .traces").evaluate_all("items => items.map(i => i.textContent)")
        assert "left out of τ/ψ (1)" in legend
        # no text past the plot, and plotly's toolbar clear of the title
        plot.hover()
        frame = _box(plot)
        for text in plot.locator("svg text").all():
            if text.text_content().strip() and text.is_visible():
                box = _box(text)
                assert (
                    frame[0] <= box[0] and box[2] <= frame[2] and frame[1] <= box[1] and box[3] <= frame[3]
                ), (
                    text.text_content(),
                    box,
                    frame,
                )
                assert float(text.evaluate("t => parseFloat(getComputedStyle(t).fontSize)")) >= 11
        toolbar = plot.locator(".modebar")
        assert toolbar.is_visible()
        assert not _overlap(_box(toolbar), _box(plot.locator(".gtitle")))
        assert frame[3] - frame[1] >= 450  # a readable plot
    screenshot(browser_page, "dashboard-protocol", tmp_path)
    watch.assert_clean()


def test_kendall_cells_show_their_groups(
    page: tuple[Any, Watch], stack: Stack, collection: Collection
) -> None:
    browser_page, watch = page
    with stack.client() as client:
        ranking = client.get(f"/v1/collections/{collection.name}/ranking").json()
    browser_page.goto(f"{stack.url}/#/collections/{collection.name}")
    browser_page.locator("table.kendall").wait_for()
    for measure, entry in ranking["measures"].items():
        formed = [axis for axis in ranking["axes"] if entry["psi"][axis] is not None]
        expected = {axis: entry["groups"][axis] for axis in formed}
        if entry["psi"]["total"] is not None:
            expected["total"] = sum(entry["groups"][axis] for axis in formed)
        assert expected and all(count >= 2 for count in expected.values())  # intervals from several groups
        for column, count in expected.items():
            cell = browser_page.locator(
                f'table.kendall tr[data-measure="{measure}"] td[data-column="{column}"]'
            )
            assert cell.locator(".groups").get_attribute("data-groups") == str(count)
            assert cell.locator(".groups").inner_text() == f"{count} groups"
            assert cell.locator(".ci[data-ci-low]").count() == 1
    watch.assert_clean()


def test_wide_tables_scroll_inside_their_section_on_a_narrow_window(
    page: tuple[Any, Watch], stack: Stack, collection: Collection
) -> None:
    """A window narrower than the models and Kendall tables (as 29 measures make them on any screen): the
    tables scroll inside their sections, the page itself stays as wide as the window."""
    browser_page, watch = page
    browser_page.set_viewport_size({"width": 480, "height": 900})
    browser_page.goto(f"{stack.url}/#/collections/{collection.name}")
    browser_page.locator("table.kendall").wait_for()
    widths = browser_page.evaluate(
        """() => ({page: document.documentElement.scrollWidth, window: window.innerWidth,
                  models: document.querySelector("#models").scrollWidth,
                  modelsBox: document.querySelector("#models").clientWidth,
                  kendall: document.querySelector("#kendall").scrollWidth,
                  kendallBox: document.querySelector("#kendall").clientWidth})"""
    )
    assert widths["models"] > widths["modelsBox"] and widths["kendall"] > widths["kendallBox"], widths
    assert widths["page"] <= widths["window"], widths
    watch.assert_clean()
