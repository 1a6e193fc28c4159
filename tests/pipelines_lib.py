"""Helpers of the pipeline tests (webhooks, sweeps, Lightning, MLflow), shared by their in-process tests and
their stack tests: a real webhook receiver, the README's receiver code, sweep checkpoints and manifests, a
tiny Lightning module and logger (defined when Lightning is installed), the MLflow metrics of a ranking."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from conftest import DIGITS_ARCH, MAX_UPLOAD_BYTES, REPO_ROOT

from gscore.settings import Settings

WEBHOOK_SECRET = "whsec-test-0123456789"
MEASURES = ["c3", "c4"]
PROBE = {"samples_per_class": 10, "seed": 0}


def service_settings(data_dir: Path, **overrides: Any) -> Settings:
    """Settings of an in-process embedded API under ``data_dir``, with webhooks to 127.0.0.1 and
    ``receiver.example`` signed with ``WEBHOOK_SECRET`` (slow retries: tests pass the clock)."""
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "datasets_dir": None,
        "storage_dir": None,
        "database_url": None,
        "broker_url": None,
        "device": "cpu",
        "default_queue": "cpu",
        "max_upload_bytes": MAX_UPLOAD_BYTES,
        "webhook_secret": WEBHOOK_SECRET,
        "webhook_allowed_hosts": "127.0.0.1, receiver.example",
        "webhook_backoff_seconds": 10.0,
        "webhook_timeout_seconds": 30.0,
        "webhook_max_attempts": 4,
    }
    values.update(overrides)
    return Settings(**values)


class WebhookReceiver:
    """A real HTTP receiver of webhook events on 127.0.0.1 (a free port, or ``port``), in a thread.

    ``events`` holds (headers, raw body) of every POST it answered 2xx. ``fail_next`` answers that many
    requests 503 first; ``hang`` makes every request wait until ``release()`` (a receiver that hangs).
    """

    def __init__(self, port: int | None = None) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.events: list[tuple[dict[str, str], bytes]] = []
        self.requests = 0
        self.fail_next = 0
        self.hang = False
        self.released = threading.Event()
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver.changed:
                    receiver.requests += 1
                    receiver.changed.notify_all()
                    failing = receiver.fail_next > 0
                    receiver.fail_next -= int(failing)
                if receiver.hang:
                    receiver.released.wait()
                if not failing:  # recorded before the answer: the sender's 2xx means it is here
                    with receiver.changed:
                        receiver.events.append((dict(self.headers.items()), body))
                        receiver.changed.notify_all()
                self.send_response(503 if failing else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port or 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str = "/events") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def wait_for(self, predicate: Any, timeout: float = 60.0) -> None:
        """Block until ``predicate(self)`` holds (checked at every request and event)."""
        with self.changed:
            assert self.changed.wait_for(lambda: predicate(self), timeout), (self.requests, self.events)

    def release(self) -> None:
        self.released.set()

    def close(self) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()


def readme_webhook_verifier() -> Any:
    """``verify_gscore_event`` as the README defines it (the code block between the receiver markers)."""
    text = (REPO_ROOT / "README.md").read_text()
    block = re.search(
        r"<!-- webhook-receiver:start -->\n```python\n(.*?)```\n<!-- webhook-receiver:end -->", text, re.S
    )
    assert block, "README has no webhook receiver block"
    namespace: dict[str, Any] = {}
    exec(compile(block.group(1), "README.md", "exec"), namespace)  # noqa: S102 (our own README)
    return namespace["verify_gscore_event"]


def write_checkpoints(folder: Path, count: int) -> list[Path]:
    """``count`` tiny digits CNNs with different weights, as safetensors files in ``folder/ckpt``."""
    import torch

    from gscore.inputs.checkpoints.loading import save_safetensors
    from gscore.models import build_model

    (folder / "ckpt").mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        torch.manual_seed(index)
        path = folder / "ckpt" / f"m{index}.safetensors"
        save_safetensors(build_model(DIGITS_ARCH), path)
        paths.append(path)
    return paths


def write_csv(path: Path, header: str, lines: list[str]) -> Path:
    path.write_text("\n".join([header, *lines]) + "\n")
    return path


def sweep_command(manifest: Path, url: str, collection: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "gscore.cli.main",
        "sweep",
        "submit",
        str(manifest),
        "--arch",
        json.dumps(DIGITS_ARCH),
        "--dataset",
        "digits",
        "--collection",
        collection,
        "--measures",
        "c3",
        "--samples-per-class",
        "10",
        "--url",
        url,
        "--no-progress",
    ]


def expected_mlflow_metrics(ranking: dict[str, Any]) -> dict[str, float]:
    """The coefficients of the ranking JSON, walked here independently of coefficient_rows."""
    expected = {}
    for measure, entry in ranking["measures"].items():
        keys = {"tau": entry["tau"], **{f"psi_{k}": v for k, v in entry["psi"].items()}}
        for name, value in keys.items():
            source = "tau" if name == "tau" else name.removeprefix("psi_")
            for suffix, number in (
                ("", value),
                ("_ci_low", entry["ci_low"][source]),
                ("_ci_high", entry["ci_high"][source]),
            ):
                if number is not None:
                    expected[f"{measure}/{name}{suffix}"] = number
    return expected


try:
    import lightning
except ModuleNotFoundError:  # the Lightning tests skip
    lightning = None

if lightning is not None:
    import torch
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import Logger
    from torch.nn import functional as F
    from torch.utils.data import DataLoader, TensorDataset

    import gscore
    from gscore.inputs.datasets import load_probe_set
    from gscore.models import build_model
    from gscore.settings import get_settings

    class DigitsClassifier(lightning.LightningModule):
        def __init__(self, lr: float = 0.05, optimizer: str = "sgd") -> None:
            super().__init__()
            self.save_hyperparameters()
            torch.manual_seed(0)
            self.model = build_model(DIGITS_ARCH)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.model(x)

        def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> torch.Tensor:
            x, y = batch
            logits = self.model(x)
            self.log("train_acc", (logits.argmax(1) == y).float().mean())
            return F.cross_entropy(logits, y)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)

    class MemoryLogger(Logger):
        """Keeps every ``log_metrics`` call: [(step, {name: value})]."""

        def __init__(self) -> None:
            super().__init__()
            self.logged: list[tuple[int | None, dict[str, float]]] = []

        @property
        def name(self) -> str:
            return "memory"

        @property
        def version(self) -> int:
            return 0

        def log_hyperparams(self, *_: Any, **__: Any) -> None:
            pass

        def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
            self.logged.append((step, dict(metrics)))

        def gscore_values(self) -> dict[int | None, dict[str, float]]:
            return {
                step: {k: v for k, v in metrics.items() if k.startswith("gscore/")}
                for step, metrics in self.logged
                if any(k.startswith("gscore/") for k in metrics)
            }

    def digits_loader() -> DataLoader:
        probe = load_probe_set("digits", "train", get_settings().resolved_datasets_dir)
        return DataLoader(TensorDataset(probe.x, probe.y), batch_size=64, shuffle=False)

    def trainer(tmp_path: Path, callbacks: list[Any], loggers: list[Logger], max_steps: int) -> Any:
        return lightning.Trainer(
            max_steps=max_steps,
            accelerator="cpu",
            devices=1,
            callbacks=callbacks,
            logger=loggers,
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
            default_root_dir=tmp_path,
            log_every_n_steps=1,
        )

    def reference(model: torch.nn.Module) -> dict[str, float]:
        result = gscore.score(model, "digits", MEASURES, device="cpu", **PROBE)
        return {f"gscore/{name}": value for name, value in result.scores.items()}
