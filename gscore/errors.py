"""User-facing errors of the engine.

Every failure a user can cause (bad spec, unsafe or mismatched checkpoint,
missing dataset) is a ``GScoreError`` with a short ``title`` and a ``detail``
that says what to fix. The CLI prints them without a stack trace; the service
turns them into RFC 9457 problem documents (``type`` is the slug).
"""

from __future__ import annotations


def title_and_detail(title: str, detail: str) -> str:
    """``"Title: detail"``, or the detail alone when it already starts with what the title says."""
    if not detail:
        return title
    return detail if detail.lower().startswith(title.lower()) else f"{title}: {detail}"


class GScoreError(Exception):
    """Base of all user-facing errors."""

    type: str = "scoring-error"
    title: str = "Scoring failed"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    def to_dict(self) -> dict[str, str]:
        return {"type": self.type, "title": self.title, "detail": self.detail}


class SpecError(GScoreError):
    """An architecture or job spec is invalid; ``field`` names the offending field."""

    type = "invalid-spec"
    title = "Invalid spec"

    def __init__(self, detail: str, field: str | None = None) -> None:
        super().__init__(detail)
        self.field = field


class CheckpointError(GScoreError):
    """A checkpoint cannot be read safely or does not match its architecture."""

    type = "invalid-checkpoint"
    title = "Unreadable or unsafe checkpoint"


class CheckpointMismatchError(CheckpointError):
    type = "checkpoint-mismatch"
    title = "Checkpoint does not match the architecture"


class DatasetError(GScoreError):
    """A dataset is unknown, not installed, or malformed."""

    type = "invalid-dataset"
    title = "Dataset unavailable or invalid"


class MeasureError(GScoreError):
    """A measure is unknown or cannot be computed on this data (e.g. c1 without a hierarchy)."""

    type = "invalid-measure"
    title = "Measure cannot be computed"


class JobCancelled(GScoreError):
    """Raised inside the engine when the caller's ``should_cancel`` says stop."""

    type = "cancelled"
    title = "Job cancelled"


class ConfigurationError(GScoreError):
    """An environment variable holds an unusable value (see gscore/settings.py)."""

    type = "invalid-configuration"
    title = "Invalid configuration"


class ApiKeyError(GScoreError):
    """An API key name is invalid, a key id is unknown, or the service has no key where it needs one."""

    type = "api-key-error"
    title = "API key problem"
