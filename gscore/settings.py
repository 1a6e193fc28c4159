"""One settings object for the whole product, read from environment variables.

Every default works with nothing set: all state lives under ``GSCORE_DATA_DIR``
(``./gscore-data``), the database and the Celery broker are SQLite files there.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from gscore.errors import ConfigurationError

TEST_FAULTS = ("", "exit-before-publish", "exit-before-claim")


class Settings(BaseSettings):
    """Product settings: field `x` is read from `GSCORE_X` (DATABASE_URL and BROKER_URL keep their usual names)."""

    model_config = SettingsConfigDict(env_prefix="GSCORE_", extra="ignore", populate_by_name=True)

    data_dir: Path = Field(
        Path("gscore-data"),
        description="Root of all embedded state (SQLite files, stored checkpoints and datasets).",
    )
    datasets_dir: Path | None = Field(
        None,
        description="Where built-in datasets (CIFAR) are installed; default DATA_DIR/datasets.",
    )
    database_url: str | None = Field(
        None,
        validation_alias=AliasChoices("DATABASE_URL", "database_url"),
        description="SQLAlchemy URL; default sqlite:///DATA_DIR/gscore.db.",
    )
    broker_url: str | None = Field(
        None,
        validation_alias=AliasChoices("BROKER_URL", "broker_url"),
        description="Celery broker; default the embedded SQLite broker sqla+sqlite:///DATA_DIR/broker.db.",
    )
    device: str = Field(
        "auto",
        description="auto, cpu or cuda: where workers run the models.",
    )
    torch_threads: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="CPU threads of each worker process's torch ops; default torch's own (one per core). "
        "Set it when other processes share the cores: oversubscribed threads stall (10x slower seen).",
    )
    max_upload_bytes: int = Field(
        512 * 1024 * 1024,
        description="Largest accepted checkpoint or dataset upload, in bytes.",
    )
    max_dataset_bytes: int = Field(
        512 * 1024 * 1024,
        ge=1,
        description="Largest uncompressed size of an .npz dataset (the sum of its members), checked from "
        "the archive's directory before anything is inflated, at upload and in the worker.",
    )
    max_checkpoint_bytes: int = Field(
        1024 * 1024 * 1024,
        ge=1,
        description="Largest uncompressed size of a torch.save checkpoint archive (the sum of its members) "
        "and of the tensors an ONNX model declares, checked before loading, at submission and in the worker.",
    )
    upload_check_processes: int = Field(
        2,
        ge=0,
        le=64,
        description="Processes of the API that run the CPU-heavy checks of uploads (archive and header "
        "scans), at low priority, so health checks and polls never wait on them; at most this many run at "
        "once. 0 runs them in the request's thread (tests).",
    )
    job_soft_time_limit: int = Field(6 * 3600)
    job_time_limit: int = Field(6 * 3600 + 300)
    lease_seconds: int = Field(
        60,
        description="A running job renews its lease this often x 1/3; an expired lease means its worker died.",
    )
    max_attempts: int = Field(3)
    storage_dir: Path | None = Field(
        None,
        description="Content-addressed checkpoints and uploaded datasets; default DATA_DIR/storage. "
        "Shared by the API and every worker (a shared volume when workers run on other machines).",
    )
    default_queue: str = Field(
        "cpu",
        description="Celery queue new jobs go to: cpu or gpu.",
    )
    reaper_interval_seconds: float = Field(
        10.0,
        description="How often the API and each worker look for running jobs whose lease expired.",
    )
    progress_interval_seconds: float = Field(
        0.5,
        description="Least time between two progress writes of a job to the database.",
    )
    republish_after_seconds: float = Field(
        30.0,
        description="A job still queued this long after it was last published is published again (the "
        "job table is the outbox: a lost broker message delays a job, never loses it). The wait doubles "
        "with the job's age, up to GSCORE_REPUBLISH_MAX_INTERVAL_SECONDS.",
    )
    republish_max_interval_seconds: float = Field(
        300.0,
        description="Longest wait between two publishes of a job that stays queued.",
    )
    broker_timeout_seconds: float = Field(
        5.0,
        description="Connect and socket timeout of every broker call; a publish retries within about this long.",
    )
    database_timeout_seconds: float = Field(
        5.0,
        description="Connect and connection-pool timeout of the database (PostgreSQL statements get 6x).",
    )
    claim_retry_seconds: float = Field(
        10.0,
        description="How long a worker retries claiming a job while the database fails; then the message "
        "is dropped and the job, still queued, is published again later.",
    )
    webhook_secret: str | None = Field(
        None,
        description="Key of the HMAC-SHA256 signature of every webhook event (docs/service.md); required "
        "when GSCORE_WEBHOOK_ALLOWED_HOSTS is set.",
    )
    webhook_allowed_hosts: str = Field(
        "",
        description="Comma-separated host names (or IP addresses) a job's notify_url may point to; "
        "empty: webhooks are off. A tenant's URL is a request made by the server: list only receivers.",
    )
    webhook_max_attempts: int = Field(
        8,
        description="Deliveries of one event before it is given up (notification state 'failed').",
    )
    webhook_backoff_seconds: float = Field(
        5.0,
        description="Wait before the second attempt; it doubles after every failed attempt.",
    )
    webhook_backoff_max_seconds: float = Field(
        3600.0,
        description="Longest wait between two attempts.",
    )
    webhook_timeout_seconds: float = Field(
        10.0,
        description="Connect, read and write timeout of one delivery (a receiver slower than this fails it).",
    )
    webhook_max_in_flight: int = Field(
        4,
        description="Deliveries one process makes at once (its bounded pool; hanging receivers hold a "
        "slot until their timeout, never a worker or a request).",
    )
    webhook_poll_seconds: float = Field(
        1.0,
        description="How often the API and each worker look for events to deliver.",
    )
    test_job_delay_seconds: float = Field(
        0.0,
        description="TEST HOOK: a worker waits this long (honouring cancel) before scoring. Keep 0.",
    )
    test_job_gate_dir: Path | None = Field(
        None,
        description="TEST HOOK: a worker holds each job in stage 'test-gate' and advances one step per file "
        "the test creates in this folder ('1', '2', '3'; 'open' passes every step). Keep unset.",
    )
    test_fault: str = Field(
        "",
        description="TEST HOOK for the chaos suite: 'exit-before-publish' (the API process exits after "
        "committing a job, before publishing it) or 'exit-before-claim' (a worker process exits after "
        "taking a message, before claiming its job). Keep empty.",
    )

    @model_validator(mode="after")
    def _check_consistency(self) -> Settings:
        """Values that would make the service misbehave later are refused at start-up."""
        problems = []
        positive = (
            "lease_seconds",
            "max_attempts",
            "max_upload_bytes",
            "job_soft_time_limit",
            "job_time_limit",
            "reaper_interval_seconds",
            "republish_after_seconds",
            "republish_max_interval_seconds",
            "broker_timeout_seconds",
            "database_timeout_seconds",
            "webhook_max_attempts",
            "webhook_backoff_seconds",
            "webhook_backoff_max_seconds",
            "webhook_timeout_seconds",
            "webhook_max_in_flight",
            "webhook_poll_seconds",
        )
        problems += [f"{env_name(name)} must be positive" for name in positive if getattr(self, name) <= 0]
        if self.progress_interval_seconds < 0:
            problems.append(f"{env_name('progress_interval_seconds')} must not be negative")
        if self.job_soft_time_limit >= self.job_time_limit:
            problems.append(
                f"{env_name('job_soft_time_limit')} ({self.job_soft_time_limit}) must be below "
                f"{env_name('job_time_limit')} ({self.job_time_limit}), or jobs are killed before they can clean up"
            )
        if self.webhook_hosts and not self.webhook_secret:
            problems.append(
                f"{env_name('webhook_allowed_hosts')} is set but {env_name('webhook_secret')} is not: "
                "webhook events must be signed"
            )
        if self.test_fault not in TEST_FAULTS:
            problems.append(
                f"{env_name('test_fault')} must be one of {TEST_FAULTS} (got {self.test_fault!r})"
            )
        if self.default_queue not in ("cpu", "gpu"):
            problems.append(f"{env_name('default_queue')} must be cpu or gpu (got {self.default_queue!r})")
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            problems.append(f"{env_name('device')} must be auto, cpu or cuda (got {self.device!r})")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def webhook_hosts(self) -> frozenset[str]:
        """The allowed webhook hosts, lower-cased (empty: webhooks are off)."""
        return frozenset(h.strip().lower() for h in self.webhook_allowed_hosts.split(",") if h.strip())

    @property
    def resolved_datasets_dir(self) -> Path:
        return self.datasets_dir if self.datasets_dir is not None else self.data_dir / "datasets"

    @property
    def resolved_storage_dir(self) -> Path:
        return self.storage_dir if self.storage_dir is not None else self.data_dir / "storage"

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'gscore.db').resolve()}"

    @property
    def resolved_broker_url(self) -> str:
        return self.broker_url or f"sqla+sqlite:///{(self.data_dir / 'broker.db').resolve()}"


def env_name(field: str) -> str:
    """The environment variable that sets ``field`` (e.g. ``lease_seconds`` -> ``GSCORE_LEASE_SECONDS``)."""
    alias = Settings.model_fields[field].validation_alias
    return alias.choices[0] if isinstance(alias, AliasChoices) else f"GSCORE_{field.upper()}"


def load_settings() -> Settings:
    """Read the environment; an unusable value is a ConfigurationError naming the variable."""
    try:
        return Settings()
    except ValidationError as exc:
        messages = []
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else ""  # the field, or the variable's name
            name = env_name(field) if field in Settings.model_fields else field
            shown = f"={error['input']!r}" if field and not isinstance(error.get("input"), dict) else ""
            where = f"{name}{shown}: " if field else ""
            messages.append(where + error["msg"].removeprefix("Value error, "))
        raise ConfigurationError("; ".join(messages)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (cached; tests call ``get_settings.cache_clear()``)."""
    return load_settings()
