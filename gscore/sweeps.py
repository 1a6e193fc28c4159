"""A sweep: a whole collection submitted from one manifest (CSV or JSON), resumably.

Manifest columns: ``checkpoint`` (a path relative to the manifest), ``model_name`` (default the file's
stem), ``test_accuracy``, ``train_accuracy`` and ``initial_checkpoint`` (optional); every other column is
a hyperparameter (CSV cells that read as numbers or true/false are numbers or booleans; empty cells are
left out). Every row is checked before anything is sent: a bad row is reported with its number (1 = the
first data row).

Resumable: each row's ``Idempotency-Key`` is derived from its files' content, the spec and its entry, and
rows whose model is already in the collection with the same checkpoint are not sent again, so a rerun
after a crash or Ctrl-C submits only what is missing and never a duplicate.
"""

from __future__ import annotations

import csv
import hashlib
import inspect
import json
import math
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gscore.errors import GScoreError

if TYPE_CHECKING:
    from gscore.client import Client
    from gscore.ranking.frames import RankingResult

RESERVED_COLUMNS = ("checkpoint", "model_name", "test_accuracy", "train_accuracy", "initial_checkpoint")
TEXT_COLUMNS = ("checkpoint", "model_name", "initial_checkpoint")  # CSV cells kept as text
EXTRA_CELLS = "\0extra"  # DictReader's key of the cells past the header's columns
FINISHED_STATES = ("succeeded", "failed", "cancelled")
_INT = re.compile(r"[+-]?\d+")
_HASH_CHUNK = 1 << 20


class ManifestError(GScoreError):
    """A sweep manifest with bad rows; ``problems`` lists them (``row N: ...``). Nothing was sent."""

    type = "invalid-manifest"
    title = "Invalid sweep manifest"

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n  " + "\n  ".join(problems))
        self.problems = problems


@dataclass
class SweepRow:
    """One checked manifest row. ``number`` is 1 for the first data row."""

    number: int
    checkpoint: Path
    model_name: str
    test_accuracy: float | None = None
    train_accuracy: float | None = None
    initial_checkpoint: Path | None = None
    hyperparameters: dict[str, Any] = field(default_factory=dict)


def parse_cell(text: str) -> Any:
    """A CSV cell: an int, a finite float, a bool (true/false), None (empty), else the text itself."""
    text = text.strip()
    if not text:
        return None
    if _INT.fullmatch(text):
        return int(text)
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        value = float(text)
    except ValueError:
        return text
    return value if math.isfinite(value) else text


def read_manifest(path: str | Path) -> list[dict[str, Any]]:
    """The raw rows of a ``.csv`` or ``.json`` manifest (JSON: a list of objects)."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError([f"manifest {str(path)!r} is missing (no such file)"])
    if path.suffix.lower() == ".json":
        try:
            rows = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ManifestError([f"{path.name} is not valid JSON: {exc}"]) from None
        if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
            raise ManifestError([f"{path.name} must hold a JSON list of objects (one per checkpoint)"])
        return rows
    with path.open(newline="", encoding="utf-8-sig") as handle:
        rows = []
        for row in csv.DictReader(handle, restkey=EXTRA_CELLS):
            if EXTRA_CELLS in row:
                rows.append({EXTRA_CELLS: row[EXTRA_CELLS]})
                continue
            cells = {key.strip(): value or "" for key, value in row.items() if key}
            rows.append(
                {
                    key: (value.strip() or None) if key in TEXT_COLUMNS else parse_cell(value)
                    for key, value in cells.items()
                }
            )
        return rows


def _accuracy(value: Any, name: str, number: int, problems: list[str]) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        problems.append(f"row {number}: {name} must be a number in [0, 1] (got {value!r})")
        return None
    return float(value)


def _path(value: Any, name: str, number: int, base_dir: Path, problems: list[str]) -> Path | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        problems.append(f"row {number}: {name} must be a file path (got {value!r})")
        return None
    path = base_dir / value
    if not path.is_file():
        problems.append(f"row {number}: {name} {value!r} is missing (no such file: {path})")
        return None
    return path


def check_rows(rows: Sequence[dict[str, Any]], base_dir: str | Path) -> list[SweepRow]:
    """Every row checked (files exist, types, unique model names), paths resolved against ``base_dir``;
    a ManifestError lists every bad row."""
    base_dir = Path(base_dir)
    problems: list[str] = []
    checked: list[SweepRow] = []
    first_row_of: dict[str, int] = {}
    if not rows:
        raise ManifestError(["the manifest has no rows"])
    for number, raw in enumerate(rows, start=1):
        if EXTRA_CELLS in raw:
            problems.append(f"row {number}: more cells than the header has columns")
            continue
        if raw.get("checkpoint") in (None, ""):
            problems.append(f"row {number}: checkpoint is missing (a path relative to the manifest)")
            checkpoint = None
        else:
            checkpoint = _path(raw["checkpoint"], "checkpoint", number, base_dir, problems)
        name = raw.get("model_name")
        if name is None and isinstance(raw.get("checkpoint"), str):
            name = Path(raw["checkpoint"]).stem
        if name is not None and (not isinstance(name, str) or not name.strip()):
            problems.append(f"row {number}: model_name must be a non-empty string (got {name!r})")
            name = None
        if name is not None:
            name = name.strip()
            if name in first_row_of:
                problems.append(f"row {number}: model_name {name!r} repeats row {first_row_of[name]}")
            else:
                first_row_of[name] = number
        test_accuracy = _accuracy(raw.get("test_accuracy"), "test_accuracy", number, problems)
        train_accuracy = _accuracy(raw.get("train_accuracy"), "train_accuracy", number, problems)
        initial = _path(raw.get("initial_checkpoint"), "initial_checkpoint", number, base_dir, problems)
        hyperparameters = {}
        for key, value in raw.items():
            if key in RESERVED_COLUMNS or value is None:
                continue
            if isinstance(value, float) and not math.isfinite(value):
                problems.append(f"row {number}: hyperparameter {key!r} must be finite (got {value})")
            elif not isinstance(value, (str, int, float, bool)):
                problems.append(
                    f"row {number}: hyperparameter {key!r} must be a number, string or boolean (got {value!r})"
                )
            else:
                hyperparameters[key] = value
        if checkpoint is not None and name is not None:
            checked.append(
                SweepRow(number, checkpoint, name, test_accuracy, train_accuracy, initial, hyperparameters)
            )
    if problems:
        raise ManifestError(problems)
    return checked


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def row_idempotency_key(
    row: SweepRow, spec: dict[str, Any], collection: str, digests: dict[Path, str]
) -> str:
    """The row's Idempotency-Key: a hash of its files' content, the spec and its collection entry (the same
    on every rerun of the manifest, another as soon as anything the server would store differs)."""
    identity = {
        "checkpoint_sha256": digests[row.checkpoint],
        "initial_sha256": digests[row.initial_checkpoint] if row.initial_checkpoint else None,
        "spec": spec,
        "collection": collection,
        "model_name": row.model_name,
        "hyperparameters": row.hyperparameters,
        "test_accuracy": row.test_accuracy,
        "train_accuracy": row.train_accuracy,
    }
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return "sweep-" + hashlib.sha256(text.encode()).hexdigest()


def collection_jobs(client: Client, collection: str) -> list[dict[str, Any]]:
    """Every job of the collection (all pages), newest first."""
    jobs, cursor = [], None
    while True:
        page = client.jobs(collection=collection, limit=200, cursor=cursor)
        jobs.extend(page["jobs"])
        cursor = page.get("next_cursor")
        if not cursor:
            return jobs


class SweepProgress:
    """One tqdm bar for the collection on stderr: the models scored (in a final state) when the sweep waits,
    else the rows submitted; the other count is shown beside it."""

    def __init__(self, total: int, collection: str, enabled: bool, counts_finished: bool) -> None:
        self.bar, self.counts_finished = None, counts_finished
        if enabled:
            from tqdm import tqdm

            unit = "model" if counts_finished else "row"
            self.bar = tqdm(total=total, desc=collection, unit=unit, file=sys.stderr, dynamic_ncols=True)

    def update(self, finished: int, submitted: int) -> None:
        if self.bar is None:
            return
        if self.counts_finished:
            self.bar.n = finished
            self.bar.set_postfix_str(f"submitted {submitted}/{self.bar.total}", refresh=False)
        else:
            self.bar.n = submitted
            self.bar.set_postfix_str(f"scored {finished}", refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _submit_supports_initial(client: Client) -> bool:
    return "initial" in inspect.signature(client.submit).parameters


def submit_sweep(
    client: Client,
    manifest_or_rows: str | Path | Sequence[dict[str, Any]],
    *,
    arch: dict[str, Any],
    dataset: str,
    collection: str,
    base_dir: str | Path | None = None,
    split: str = "train",
    measures: list[str] | None = None,
    params: dict[str, dict[str, Any]] | None = None,
    samples_per_class: int | None = None,
    seed: int = 0,
    notify_url: str | None = None,
    wait: bool = True,
    poll: float = 1.0,
    timeout: float | None = None,
    progress: bool = False,
    ranking: dict[str, Any] | None = None,
) -> RankingResult | list[dict[str, Any]]:
    """Submit every row of a manifest (a ``.csv``/``.json`` path, or the rows as dicts with paths relative to
    ``base_dir``, default the working directory) to ``collection``; see the module docstring.

    Returns the collection's ranking (``ranking``: keyword arguments of ``Client.ranking``) once every job has
    finished when ``wait``, else the rows' jobs (in manifest order). ``progress``: one bar on stderr.
    """
    if isinstance(manifest_or_rows, (str, Path)):
        raw_rows = read_manifest(manifest_or_rows)
        base = Path(base_dir) if base_dir is not None else Path(manifest_or_rows).parent
    else:
        raw_rows, base = list(manifest_or_rows), Path(base_dir) if base_dir is not None else Path.cwd()
    rows = check_rows(raw_rows, base)
    with_initial = [row.number for row in rows if row.initial_checkpoint is not None]
    if with_initial and not _submit_supports_initial(client):
        raise ManifestError(
            [f"rows {with_initial}: initial_checkpoint needs a gscore client that sends initial checkpoints"]
        )
    digests = {
        path: file_sha256(path) for row in rows for path in (row.checkpoint, row.initial_checkpoint) if path
    }
    spec = {
        "arch": arch,
        "dataset": dataset,
        "split": split,
        "measures": measures,
        "params": params or {},
        "samples_per_class": samples_per_class,
        "seed": seed,
    }
    existing: dict[str, dict[str, Any]] = {}
    for job in collection_jobs(client, collection):  # newest first: the latest job of each name
        existing.setdefault(job["model_name"], job)
    clashes = [
        f"row {row.number}: model_name {row.model_name!r} is already in collection {collection!r} with "
        f"another checkpoint (job {existing[row.model_name]['id']}); rename the row"
        for row in rows
        if row.model_name in existing
        and existing[row.model_name]["checkpoint_sha256"] != digests[row.checkpoint]
    ]
    if clashes:
        raise ManifestError(clashes)

    bar = SweepProgress(len(rows), collection, progress, counts_finished=wait)
    jobs: list[dict[str, Any]] = []
    try:
        for row in rows:
            job = existing.get(row.model_name)
            if job is None:
                extra = {"initial": row.initial_checkpoint} if row.initial_checkpoint else {}
                job = client.submit(
                    row.checkpoint,
                    arch,
                    dataset,
                    split=split,
                    measures=measures,
                    params=params,
                    samples_per_class=samples_per_class,
                    seed=seed,
                    collection=collection,
                    model_name=row.model_name,
                    hyperparameters=row.hyperparameters,
                    test_accuracy=row.test_accuracy,
                    train_accuracy=row.train_accuracy,
                    idempotency_key=row_idempotency_key(row, spec, collection, digests),
                    notify_url=notify_url,
                    **extra,
                )
            jobs.append(job)
            bar.update(sum(j["state"] in FINISHED_STATES for j in jobs), len(jobs))
        if not wait:
            return jobs
        _wait_for_all(client, collection, [job["id"] for job in jobs], poll, timeout, bar)
    finally:
        bar.close()
    return client.ranking(collection, measures=measures, **(ranking or {}))


def _wait_for_all(
    client: Client,
    collection: str,
    ids: list[str],
    poll: float,
    timeout: float | None,
    bar: SweepProgress,
) -> None:
    """Poll the collection until every job of ``ids`` is in a final state (TimeoutError after ``timeout``)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        latest = {job["id"]: job for job in collection_jobs(client, collection)}
        jobs = [latest.get(job_id) or client.job(job_id) for job_id in ids]
        finished = sum(job["state"] in FINISHED_STATES for job in jobs)
        bar.update(finished, len(jobs))
        if finished == len(jobs):
            return
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(
                f"{len(jobs) - finished} job(s) of {collection!r} unfinished after {timeout} s"
            )
        time.sleep(poll)
