"""The full chaos table of issue 9: every scenario of tests/chaos_lib.py, embedded and Redis + PostgreSQL,
printed as the Markdown table kept in docs/service.md.

    .venv/bin/python benchmarks/chaos.py [--only SUBSTRING] [--mode embedded|redis+postgres]

Needs PostgreSQL on 127.0.0.1:5432 and a Redis for the second mode: its own ``redis-server`` on a free port
(or GSCORE_TEST_REDIS_URL; never the shared Redis on 6379, whose databases the scenarios would flush); a
mode whose services are missing is skipped with a note. Everything runs on loopback, one stack at a time.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import chaos_lib as chaos  # noqa: E402
from conftest import DIGITS_ARCH, RedisUnavailable, own_redis  # noqa: E402


def digits_checkpoint(directory: Path) -> Path:
    import torch

    from gscore.inputs.checkpoints.loading import save_safetensors
    from gscore.models import build_model

    torch.manual_seed(0)
    path = directory / "digits-cnn.safetensors"
    save_safetensors(build_model(DIGITS_ARCH), path)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="run the scenarios whose function name contains this")
    parser.add_argument("--mode", choices=["embedded", "redis+postgres"])
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="gscore-chaos-"))
    checkpoint = digits_checkpoint(work)
    generic = [
        chaos.api_killed_between_commit_and_publish,
        chaos.worker_killed_between_message_and_claim,
        chaos.sigterm_worker_takes_no_new_job,
        chaos.fresh_start_together,
        chaos.workers_killed_mid_run,
    ]
    rows = []
    started = time.monotonic()
    with contextlib.ExitStack() as resources:
        for mode in ("embedded", "redis+postgres"):
            if args.mode and mode != args.mode:
                continue
            redis_server = None
            if mode == "redis+postgres":
                try:
                    redis_server = resources.enter_context(own_redis(work / "redis"))
                except RedisUnavailable as exc:
                    print(f"skipping {mode}: {exc}", file=sys.stderr)
                    continue
            rows += run_mode(mode, generic, redis_server, work, checkpoint, args.only)
    print(chaos.TABLE_HEADER)
    print("\n".join(rows))
    print(f"\n{len(rows)} scenarios in {time.monotonic() - started:.0f} s; data under {work}")
    return 0


def run_mode(
    mode: str,
    generic: list,
    redis_server: tuple[str, int] | None,
    work: Path,
    checkpoint: Path,
    only: str | None,
) -> list[str]:
    """The rows of every scenario of ``mode`` (``redis_server``: the (host, port) of its own Redis)."""
    rows = []
    runs = [(scenario, {}) for scenario in generic]
    if mode == "redis+postgres":
        runs += [
            (chaos.broker_lost_its_messages, {}),
            (chaos.broker_hangs, {}),
            (chaos.database_down, {}),
        ]
    for index, (scenario, _) in enumerate(runs):
        if only and only not in scenario.__name__:
            continue
        env: dict[str, str] = {}
        database = None
        if mode == "redis+postgres":
            database = chaos.fresh_postgres_url()
            broker = chaos.flushed_redis_url(*redis_server)
            env = {"DATABASE_URL": database, "BROKER_URL": broker}
        data_dir = work / f"{mode.replace('+', '-')}-{index}"
        try:
            if scenario is chaos.broker_lost_its_messages:
                tally = scenario(data_dir, checkpoint, mode, env.pop("BROKER_URL"), **env)
            elif scenario is chaos.broker_hangs:
                env.pop("BROKER_URL")
                tally = scenario(data_dir, checkpoint, mode, redis_server[1], chaos.CHAOS_REDIS_DB, **env)
            elif scenario is chaos.database_down:
                tally = scenario(data_dir, checkpoint, mode, env["DATABASE_URL"], env["BROKER_URL"])
            else:
                tally = scenario(data_dir, checkpoint, mode, **env)
        except Exception as exc:  # a scenario that breaks is a row too
            tally = chaos.Tally(scenario.__name__, mode, notes=f"ERROR {type(exc).__name__}: {exc}"[:200])
        finally:
            if database:
                chaos.drop_postgres(database)
        rows.append(tally.row())
        print(tally.row(), file=sys.stderr, flush=True)
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
