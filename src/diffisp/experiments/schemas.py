"""The documented layout of ``metrics.json`` (one run) and ``eval.json`` (a multi-seed study).

``docs/results-format.md`` explains every field; :func:`validate` checks a loaded file against the
layout below (required keys and their JSON types), so a change of format fails the tests instead of
silently breaking readers such as ``diffisp report``. :func:`validate_metrics` and
:func:`validate_eval` also check that every row carries the file's headline metric (the
top-level ``"metric"``: ``"accuracy"`` for classification, ``"map50"`` for detection; files
written before it existed have no ``"metric"`` and mean ``"accuracy"``).
"""

from __future__ import annotations

from typing import Any

from diffisp.errors import DataError

NUMBER = (int, float)
OPTIONAL_NUMBER = (int, float, type(None))

DATASET = {
    "name": str,
    "description": str,
    "is_standin": bool,
    "num_train": int,
    "num_test": int,
    "num_classes": int,
    "class_names": list,
    "image_size": int,
}
RESULT_ROW = {
    "label": str,
    "num_samples": int,
    "description": str,
    "gap_closed": OPTIONAL_NUMBER,
}
METRICS = {
    "schema": str,
    "created": str,
    "command": (str, type(None)),
    "seed": int,
    "dataset": DATASET,
    "config": dict,
    "results": {"*": RESULT_ROW},
    "learned_parameters": dict,
    "timing": {"train_seconds": NUMBER, "total_seconds": NUMBER},
    "figures": list,
    "environment": {"python": str, "packages": dict},
}
MEAN_STD = {"mean": NUMBER, "std": NUMBER}
SWEEP = {
    "parameter": str,
    "values": list,
    "fixed": dict,
    "trained_range": list,
    "methods": {"*": {"mean": list, "std": list}},
}
EVAL = {
    "schema": str,
    "created": str,
    "command": (str, type(None)),
    "wall_seconds": NUMBER,
    "dataset": DATASET,
    "config": dict,
    "seeds": list,
    "methods": {
        "*": {
            "label": str,
            "description": str,
            "mean": NUMBER,
            "std": NUMBER,
            "num_samples": int,
            "gap_closed": (dict, type(None)),
        }
    },
    "sweeps": {"brightness": SWEEP, "noise_sigma": SWEEP},
    "runs": list,
    "figures": list,
    "environment": dict,
}


def validate(obj: Any, layout: dict[str, Any], where: str = "$") -> None:
    """Raise :class:`DataError` naming the first field of ``obj`` that does not fit ``layout``.

    ``layout`` maps keys to a type, a tuple of types, or a nested layout; the key ``"*"`` applies
    its layout to every value of a mapping.
    """
    if not isinstance(obj, dict):
        raise DataError(f"{where} must be an object; got {type(obj).__name__}")
    for key, spec in layout.items():
        if key == "*":
            for name, value in obj.items():
                _check(value, spec, f"{where}.{name}")
            continue
        if key not in obj:
            raise DataError(f"{where} has no {key!r} field")
        _check(obj[key], spec, f"{where}.{key}")


def file_metric(obj: dict[str, Any]) -> str:
    """The headline metric key of a ``metrics.json`` or ``eval.json`` (``"accuracy"`` for files
    that predate the ``"metric"`` field)."""
    metric = obj.get("metric", "accuracy")
    if not isinstance(metric, str) or not metric:
        raise DataError(f"$.metric must be a metric name; got {metric!r}")
    return metric


def validate_metrics(obj: Any) -> None:
    """:func:`validate` against :data:`METRICS`, and every results row has the headline metric
    as a number (``null`` where there was nothing to measure)."""
    validate(obj, METRICS)
    metric = file_metric(obj)
    for key, row in obj["results"].items():
        if metric not in row:
            raise DataError(f"$.results.{key} has no {metric!r} field (the file's metric)")
        _check(row[metric], OPTIONAL_NUMBER, f"$.results.{key}.{metric}")


def validate_eval(obj: Any) -> None:
    """:func:`validate` against :data:`EVAL`, and every method has the headline metric's
    per-seed list."""
    validate(obj, EVAL)
    metric = file_metric(obj)
    for key, row in obj["methods"].items():
        if metric not in row:
            raise DataError(f"$.methods.{key} has no {metric!r} field (the file's metric)")
        _check(row[metric], list, f"$.methods.{key}.{metric}")


def _check(value: Any, spec: Any, where: str) -> None:
    if isinstance(spec, dict):
        validate(value, spec, where)
    elif isinstance(value, bool) and spec in (NUMBER, OPTIONAL_NUMBER, int):
        raise DataError(f"{where} must be a number; got a bool")
    elif not isinstance(value, spec):
        names = spec.__name__ if isinstance(spec, type) else "/".join(t.__name__ for t in spec)
        raise DataError(f"{where} must be {names}; got {type(value).__name__}")
