"""The ``gscore`` command line. Each verb lives in its own module with a ``register(subparsers)``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from gscore.errors import GScoreError, title_and_detail

# Modules that add verbs; each has register(subparsers) and sets `func` (args -> exit code).
_VERB_MODULES = (
    "gscore.cli.local",  # score, demo, rank-file (offline; old name rank)
    "gscore.cli.serve",  # up, serve, worker
    "gscore.cli.remote",  # submit, status, collection, cancel, datasets, ranking (a server's collection)
    "gscore.cli.keys",  # keys create/list/revoke
    "gscore.cli.sweep",  # sweep submit
)


def build_parser() -> argparse.ArgumentParser:
    import importlib

    from gscore import __version__

    parser = argparse.ArgumentParser(
        prog="gscore",
        description="Generalization scores for trained image classifiers.",
        epilog="Start with `gscore demo`; `gscore VERB --help` describes a verb.",
    )
    parser.add_argument("--version", action="version", version=f"gscore {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    sub.required = True
    for name in _VERB_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:  # a verb module not installed in this build
            if exc.name != name:
                raise
            continue
        module.register(sub)
    return parser


# Packages of the optional extras (pyproject.toml), by the extra that installs them.
EXTRA_OF_PACKAGE = {
    "httpx": "client",
    "matplotlib": "plots",
    **dict.fromkeys(
        ("fastapi", "uvicorn", "multipart", "sqlalchemy", "alembic", "celery", "kombu", "redis", "plotly"),
        "service",
    ),
    "prometheus_client": "service",
    "fastapi_offline": "service",
    "psycopg2": "postgres",
    "onnx": "onnx",
    "onnx2pytorch": "onnx",
    "timm": "timm",
}


def missing_extra_message(verb: str | None, exc: ModuleNotFoundError) -> str | None:
    """The one-line advice for a missing optional package, or None when ``exc`` is not one."""
    package = (exc.name or "").split(".")[0]
    extra = EXTRA_OF_PACKAGE.get(package)
    if extra is None:
        return None
    what = f"`gscore {verb}`" if verb else "this command"
    return f"{what} needs the optional package {package!r}: pip install 'gscore[{extra}]'"


EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a writer whose reader closed early


def _reader_went_away() -> int:
    """stdout's reader closed early (``gscore ... | head``): stop quietly. stdout is pointed at /dev/null
    so that the interpreter's final flush does not fail again (Python's documented recipe)."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_BROKEN_PIPE


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:  # bare `gscore`: what it can do, not an error about a missing verb
        parser.print_help()
        return 0
    args = parser.parse_args(argv)
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler, not at interpreter exit
        return code
    except BrokenPipeError:
        return _reader_went_away()
    except GScoreError as exc:
        print(f"gscore: error: {title_and_detail(exc.title, exc.detail)}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        advice = missing_extra_message(getattr(args, "verb", None), exc)
        if advice is None:
            raise
        print(f"gscore: error: {advice}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gscore: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
