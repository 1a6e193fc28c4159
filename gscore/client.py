"""A small Python client for the gscore service.

client = Client("http://127.0.0.1:8000", api_key="gsk_...")  # api_key default: $GSCORE_API_KEY
job = client.submit("model.safetensors", arch={...}, dataset="digits", collection="sweep")
done = client.wait(job["id"], progress=lambda job: print(job["progress"]))
client.collection("sweep")
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from gscore.errors import title_and_detail
from gscore.ranking.frames import CollectionResult, RankingResult

FINISHED_STATES = ("succeeded", "failed", "cancelled")
API_KEY_ENV = "GSCORE_API_KEY"


def _segment(value: str) -> str:
    """``value`` as one URL path segment (a collection may be named ``sweep #1`` or ``50%``)."""
    return quote(value, safe="")


class ServiceError(Exception):
    """The service answered with an error; ``problem`` is its RFC 9457 document."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status, self.problem = status, problem
        title = str(problem.get("title") or "HTTP error")
        detail = str(problem.get("detail") or "")
        super().__init__(f"{status} {title_and_detail(title, detail)}")


@dataclass(frozen=True)
class JobSubmission:
    """One ``POST /v1/jobs``: what is scored (a ``checkpoint`` with its ``arch``, or an ONNX ``model`` file),
    on which data and measures, and how the job joins a collection.

    ``replace``: replace the collection's entry of the same ``model_name`` (else re-using a name is a 409).
    ``notify_url``: a webhook the service POSTs a signed event to when the job ends (docs/service.md).
    ``initial``: the same architecture's checkpoint at initialization (the ``initial_checkpoint`` part),
    for ``distance_to_init`` and ``layer_rotation``.
    """

    checkpoint: str | Path | None = None
    arch: dict[str, Any] | None = None
    dataset: str | None = None
    model: str | Path | None = None
    replace: bool = False
    split: str = "train"
    measures: list[str] | None = None
    params: dict[str, dict[str, Any]] | None = None
    samples_per_class: int | None = None
    seed: int = 0
    collection: str | None = None
    model_name: str | None = None
    hyperparameters: dict[str, Any] | None = None
    test_accuracy: float | None = None
    train_accuracy: float | None = None
    notify_url: str | None = None
    initial: str | Path | None = None

    def check(self) -> None:
        """ValueError for a submission the service would refuse for its shape alone."""
        if (self.checkpoint is None) == (self.model is None):
            raise ValueError("give either checkpoint_path (with arch) or model (an .onnx file)")
        if self.dataset is None:
            raise ValueError("dataset is required")
        if self.model is None and self.arch is None:
            raise ValueError("arch is required with a checkpoint (only an .onnx model needs none)")

    def upload(self) -> tuple[str, Path]:
        """(form part, file) of the model: ``model`` for an ONNX file, else ``checkpoint``."""
        if self.model is not None:
            return "model", Path(self.model)
        return "checkpoint", Path(self.checkpoint or "")

    def form(self) -> dict[str, str]:
        """The form fields: ``spec`` (JSON) and the collection fields that are set."""
        spec = {
            **({"arch": self.arch} if self.arch is not None else {}),
            "dataset": self.dataset,
            "split": self.split,
            "measures": self.measures,
            "params": self.params or {},
            "samples_per_class": self.samples_per_class,
            "seed": self.seed,
        }
        data: dict[str, str] = {"spec": json.dumps(spec)}
        optional = {
            "collection": self.collection,
            "model_name": self.model_name,
            "test_accuracy": self.test_accuracy,
            "train_accuracy": self.train_accuracy,
            "notify_url": self.notify_url,
        }
        data.update({key: str(value) for key, value in optional.items() if value is not None})
        if self.hyperparameters is not None:
            data["hyperparameters"] = json.dumps(self.hyperparameters)
        if self.replace:
            data["replace"] = "true"
        return data


class Client:
    """Talks to one gscore server.

    ``api_key`` (default ``$GSCORE_API_KEY``; none: a keyless loopback server) is sent as
    ``Authorization: Bearer <key>`` on every request.
    """

    def __init__(
        self, url: str = "http://127.0.0.1:8000", timeout: float = 60.0, api_key: str | None = None
    ) -> None:
        self.url = url.rstrip("/")
        api_key = api_key if api_key is not None else os.environ.get(API_KEY_ENV) or None
        headers = {"Authorization": f"Bearer {api_key.strip()}"} if api_key else {}
        self._http = httpx.Client(base_url=self.url, timeout=timeout, headers=headers)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _request(self, method: str, path: str, *, raw: bool = False, **kwargs: Any) -> Any:
        response = self._http.request(method, path, **kwargs)
        if response.status_code >= 400:
            try:
                problem = response.json()
            except ValueError:
                problem = {"title": response.reason_phrase, "detail": response.text[:500]}
            raise ServiceError(response.status_code, problem if isinstance(problem, dict) else {})
        if raw:
            return response.content
        return response.json() if response.content else None

    # ---- jobs ----------------------------------------------------------------------------------------
    def submit(
        self,
        checkpoint_path: str | Path | None = None,
        arch: dict[str, Any] | None = None,
        dataset: str | None = None,
        *,
        idempotency_key: str | None = None,
        **options: Any,
    ) -> dict[str, Any]:
        """Upload a checkpoint (with its ``arch``) or an ONNX ``model`` file and queue its scoring; returns the
        job (state queued, or succeeded if deduplicated).

        ``options`` are the other fields of :class:`JobSubmission` (``model``, ``replace``, ``split``,
        ``measures``, ``params``, ``samples_per_class``, ``seed``, ``collection``, ``model_name``,
        ``hyperparameters``, ``test_accuracy``, ``train_accuracy``, ``notify_url``, ``initial``).
        """
        job = JobSubmission(checkpoint=checkpoint_path, arch=arch, dataset=dataset, **options)
        return self.submit_job(job, idempotency_key=idempotency_key)

    def submit_job(self, job: JobSubmission, *, idempotency_key: str | None = None) -> dict[str, Any]:
        """``POST /v1/jobs`` of ``job``; ``idempotency_key``: a retried request returns the first answer."""
        job.check()
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        part, path = job.upload()
        with contextlib.ExitStack() as stack:
            files = {part: (path.name, stack.enter_context(path.open("rb")), "application/octet-stream")}
            if job.initial is not None:
                initial_path = Path(job.initial)
                handle = stack.enter_context(initial_path.open("rb"))
                files["initial_checkpoint"] = (initial_path.name, handle, "application/octet-stream")
            return self._request("POST", "/v1/jobs", data=job.form(), headers=headers, files=files)

    def submit_sweep(self, manifest_or_rows: Any, **options: Any) -> Any:
        """Submit a whole collection from a manifest (a CSV/JSON path, or rows as dicts), resumably, and by
        default wait and return its ranking; see :func:`gscore.sweeps.submit_sweep` for the options
        (``arch``, ``dataset``, ``collection`` required)."""
        from gscore.sweeps import submit_sweep

        return submit_sweep(self, manifest_or_rows, **options)

    def job(self, job_id: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/jobs/{_segment(job_id)}")

    def wait(
        self,
        job_id: str,
        poll: float = 0.5,
        timeout: float | None = None,
        progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Poll until the job is finished (any final state); ``progress`` is called with each poll's job."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if progress is not None:
                progress(job)
            if job["state"] in FINISHED_STATES:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['state']} after {timeout} s")
            time.sleep(poll)

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._request("DELETE", f"/v1/jobs/{_segment(job_id)}")

    def jobs(
        self,
        *,
        collection: str | None = None,
        state: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """One page: ``{"jobs": [...], "next_cursor": str | None}``."""
        params = {
            key: value
            for key, value in {
                "collection": collection,
                "state": state,
                "limit": limit,
                "cursor": cursor,
            }.items()
            if value is not None
        }
        return self._request("GET", "/v1/jobs", params=params)

    # ---- collections, datasets, catalog --------------------------------------------------------------
    def collections(self) -> list[dict[str, Any]]:
        return self._request("GET", "/v1/collections")["collections"]

    def collection(self, name: str) -> CollectionResult:
        """The collection's models with their scores; ``.to_pandas()`` gives one row per model."""
        return CollectionResult(self._request("GET", f"/v1/collections/{_segment(name)}"))

    def ranking(
        self,
        name: str,
        target: str = "test_accuracy",
        measures: list[str] | None = None,
        *,
        min_train_accuracy: float | None = None,
        level: float | None = None,
        n_resamples: int | None = None,
        seed: int | None = None,
    ) -> RankingResult:
        """The collection's models ranked by each measure, with Kendall coefficients against ``target``.

        ``min_train_accuracy`` (server default 0.99; 0 turns it off): models below it, or without a
        known training accuracy, are listed but left out of the coefficients. ``level`` (0.95),
        ``n_resamples`` (1000; 0: no intervals) and ``seed`` (0) set the bootstrap intervals; None
        leaves the server's default. ``.to_pandas()`` gives one row per (measure, model),
        ``.to_pandas("coefficients")`` one per coefficient.
        """
        params: dict[str, Any] = {"target": target}
        if measures:
            params["measures"] = ",".join(measures)
        optional = {
            "min_train_accuracy": min_train_accuracy,
            "level": level,
            "n_resamples": n_resamples,
            "seed": seed,
        }
        params.update({key: value for key, value in optional.items() if value is not None})
        return RankingResult(self._request("GET", f"/v1/collections/{_segment(name)}/ranking", params=params))

    def plot(
        self,
        name: str,
        measures: list[str] | None = None,
        target: str = "test_accuracy",
        color_by: str | None = None,
        **ranking: Any,
    ) -> bytes:
        """A PNG of each measure against the target, one point per model (the paper's Figure 3), coloured
        by the hyperparameter ``color_by`` (with a legend) when given. ``ranking``: the ranking's
        ``min_train_accuracy``, ``level``, ``n_resamples``, ``seed`` for the tau in the titles."""
        params: dict[str, Any] = {"target": target}
        params.update({key: value for key, value in ranking.items() if value is not None})
        if measures:
            params["measure"] = ",".join(measures)
        if color_by:
            params["color_by"] = color_by
        return self._request("GET", f"/v1/collections/{_segment(name)}/plot.png", params=params, raw=True)

    def upload_dataset(self, path: str | Path, name: str | None = None) -> dict[str, Any]:
        """Upload an .npz probe set (``x``, ``y``, optional ``sub`` and test split); returns its record."""
        path = Path(path)
        data = {"name": name} if name else {}
        with path.open("rb") as handle:
            return self._request(
                "POST",
                "/v1/datasets",
                data=data,
                files={"file": (path.name, handle, "application/octet-stream")},
            )

    def datasets(self) -> list[dict[str, Any]]:
        return self._request("GET", "/v1/datasets")["datasets"]

    def measures(self) -> list[dict[str, Any]]:
        return self._request("GET", "/v1/measures")["measures"]

    def architectures(self) -> list[dict[str, Any]]:
        return self._request("GET", "/v1/architectures")["architectures"]
