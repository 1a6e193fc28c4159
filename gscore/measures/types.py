"""The measure table's types: an entry (:class:`Measure`), what its function returns
(:class:`MeasureOutcome`) and what it may refuse with (:class:`MeasureUndefined`).

A measure is a plain function ``compute(ctx, params) -> MeasureOutcome``: ``ctx`` is the
:class:`gscore.measures.context.MeasureContext` of one scoring run (model, probe sets, activations, training
samples, progress, cancellation, prepared once and shared by every measure), ``params`` the measure's
parameters with the table's defaults filled in. The entry names its function as ``"module:function"`` and
imports it on first use, so that reading the table (the HTTP API's ``/v1/measures``) never imports torch.

Statuses of a computed measure:

- ``ok``: a finite value;
- ``undefined``: the measure does not apply to this model or data (raise :class:`MeasureUndefined` with
  the reason: no ReLU-type activation for c1-c4, no final ``nn.Linear`` for the LLID, one class only...);
- ``failed``: the computation raised (the reason is the error's message).
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gscore.errors import MeasureError

__all__ = [
    "FAMILIES",
    "Measure",
    "MeasureOutcome",
    "MeasureResult",
    "MeasureUndefined",
    "OK",
    "UNDEFINED",
    "FAILED",
]

OK, UNDEFINED, FAILED = "ok", "undefined", "failed"

# What a measure may need; the pipeline prepares each once for every measure that needs it.
NEEDS = frozenset(
    {
        "hierarchy",
        "activations",
        "representations",
        "training_sample",
        "model",
        "probe",
        "logits",  # the model's output on the probe set, from the shared extraction pass
        "last_linear",  # the input of the last nn.Linear (or the first ReLU output), same pass
        "initial_model",  # the initial checkpoint's model (the measure explains when there is none)
    }
)

# The families a request may name instead of listing measures (``--measures norm,c1``; ``all``: every one).
FAMILIES = (
    "clustering",
    "sharpness",
    "intrinsic_dimension",
    "tangent",
    "norm",
    "representation",
    "spectral",
)


class MeasureUndefined(MeasureError):
    """The measure does not apply to this model or data; the message is the reason shown to the user."""


@dataclass
class MeasureOutcome:
    """What a measure function returns: a finite ``value``, details for ``meta`` and warnings that make
    the value less meaningful (degenerate top-k, tiny classes, a bisection on its bound...)."""

    value: float
    meta: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


@dataclass
class MeasureResult:
    """One measure of one run, as reported: ``status`` ok / undefined / failed, the value when ok."""

    name: str
    status: str
    value: float | None = None
    reason: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def status_document(self) -> dict[str, Any]:
        """``{"status", "reason", "warnings"}`` for the result's ``status`` map."""
        return {"status": self.status, "reason": self.reason, "warnings": list(self.warnings)}


@dataclass(frozen=True)
class Measure:
    """One entry of the measure table.

    ``orientation`` is +1 when a higher value predicts better generalization, -1 when worse.
    ``needs`` says which inputs the pipeline must prepare (``NEEDS``); ``parameters`` are the defaults
    (the names a request may override); ``rules`` say how a parameter whose default does not tell its
    type is checked (see :func:`check_parameter`). ``compute`` is ``"module:function"``.
    """

    name: str
    title: str
    orientation: int
    needs: frozenset[str]
    kind: str  # "activations", "perturbation", "representations" or "tangent_kernel": the family
    compute_path: str
    parameters: Mapping[str, Any] = field(default_factory=dict)
    rules: Mapping[str, str] = field(default_factory=dict)
    description: str = ""
    family: str = ""  # one of FAMILIES (every entry of the table has one)

    def __post_init__(self) -> None:
        if self.family and self.family not in FAMILIES:  # "": selectable by its name only
            raise ValueError(f"{self.name}: family must be one of {', '.join(FAMILIES)}")
        unknown = set(self.needs) - NEEDS
        if unknown:
            raise ValueError(f"{self.name}: unknown needs {sorted(unknown)}")
        if self.orientation not in (1, -1):
            raise ValueError(f"{self.name}: orientation must be +1 or -1")

    @property
    def needs_hierarchy(self) -> bool:
        return "hierarchy" in self.needs

    @property
    def compute(self) -> Callable[[Any, dict[str, Any]], MeasureOutcome]:
        module_name, _, function_name = self.compute_path.partition(":")
        return getattr(importlib.import_module(module_name), function_name)


SPLITS = ("train", "test")
LAYERS = ("penultimate", "first")  # davies_bouldin's representation


def check_parameter(measure: str, key: str, value: Any, default: Any, rule: str | None) -> str | None:
    """Why ``value`` is not acceptable for parameter ``key`` of ``measure`` (None when it is).

    Rules: ``split`` (train/test), ``layer`` (penultimate/first), ``count0`` (integer >= 0), ``optional_count`` (None or integer >= 1),
    ``fraction`` (0 < x <= 1), ``seed`` (integer in [0, 2**64)); without a rule the default's type
    decides: integers >= 1, floats > 0 and finite, booleans.
    """
    where = f"params.{measure}.{key}"
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if rule == "split":
        return None if value in SPLITS else f"{where} must be one of {', '.join(SPLITS)} (got {value!r})"
    if rule == "layer":
        return None if value in LAYERS else f"{where} must be one of {', '.join(LAYERS)} (got {value!r})"
    if rule == "count0":
        return None if is_int and 0 <= value < 2**63 else f"{where} must be an integer >= 0 (got {value!r})"
    if rule == "optional_count":
        if value is None or (is_int and 1 <= value < 2**63):
            return None
        return f"{where} must be a positive integer or null (got {value!r})"
    if rule == "fraction":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value <= 1
        return None if ok else f"{where} must be a number in (0, 1] (got {value!r})"
    if rule == "seed" or (rule is None and key == "seed"):
        return (
            None
            if is_int and 0 <= value < 2**64
            else f"{where} must be an integer in [0, 2**64) (got {value!r})"
        )
    if isinstance(default, bool):
        return None if isinstance(value, bool) else f"{where} must be true or false (got {value!r})"
    if isinstance(default, int):
        return (
            None if is_int and 1 <= value < 2**64 else f"{where} must be a positive integer (got {value!r})"
        )
    if isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < math.inf
        return None if ok else f"{where} must be a positive number (got {value!r})"
    return None
