"""The ISP parameter file: a trained ISP as one JSON document of physical values, and back.

A camera team keeps ISP tuning as one parameter file per sensor; this is diffisp's. Every stage
is listed in the order it runs, with each parameter's value in its physical unit (EV, gains, a
3x3 matrix, tone-curve knots, a gamma exponent, a blur kernel), its valid range and the raw
(unconstrained) value it was trained as. The format is ``diffisp.isp-tuning`` version
:data:`VERSION`, documented in ``docs/isp-file-format.md``.

Loading inverts the bounded maps of :mod:`diffisp.isp.params`. Float32 inversion is not exact,
so the raw values are stored too: where a value and its stored raw agree (``constrain(raw)``
within :data:`AGREE_TOL`) the raw is used and the reloaded ISP is bit-identical; where they
disagree the value was edited by hand, and the value wins (it is checked against its range and
inverted). An adaptive ISP's per-image parameters come from its predictor network, which a
JSON file cannot hold: the file holds the stage list and settings and names a companion
``.npz`` of the predictor's weights by file name and SHA-256.

Writing, the schema and the units are in :mod:`diffisp.isp.tuning_document`; the reading,
checking and loading are here, and every public name of both is importable from this module.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import diffisp
from diffisp.errors import ConfigError, DataError
from diffisp.isp.adaptive import AdaptiveISP
from diffisp.isp.chain import ISP
from diffisp.isp.raw import RESIDUAL_LIMIT, RawFront, RawISP
from diffisp.isp.stages import STAGES
from diffisp.isp.tuning_document import (
    PARAM_INFO,
    SCHEMA,
    VERSION,
    _atanh,
    invert,
    predictor_bytes,
    to_document,
    write,
)

# A stored value and constrain(stored raw) closer than this are the same number (float32 noise).
AGREE_TOL = 1e-6


# ------------------------------------------------------------------------------- checking


def _array(field: str, value: Any, shape: tuple[int, ...]) -> np.ndarray:
    try:
        array = np.asarray(value, np.float64)
    except (TypeError, ValueError):
        raise ConfigError(f"{field} must be a number or a list of numbers; got {value!r}") from None
    if array.shape != shape:
        raise ConfigError(f"{field} must have shape {list(shape)}; got {list(array.shape)}")
    if not np.isfinite(array).all():
        raise ConfigError(f"{field} must be finite; got {array.tolist()}")
    return array


def _check_range(field: str, array: np.ndarray, low: float, high: float, closed: bool) -> None:
    """Refuse values outside ``[low, high]``, naming the first offending entry.

    Open ranges are checked as closed: a saturated bounded map reaches its bound in float32
    (``tanh`` rounds to 1), so a trained value may sit exactly on it; such a value reloads
    from its stored raw, and inverting it without one is refused in :func:`_finite_raw`.
    """
    del closed
    slack = 1e-6 * max(1.0, abs(low), abs(high))  # float32 rounding of a value at its bound
    bad = np.argwhere(np.atleast_1d((array < low - slack) | (array > high + slack)))
    if len(bad):
        index = tuple(int(i) for i in bad[0]) if array.ndim else ()
        where = f"{field}{list(index) if index else ''}"
        raise ConfigError(
            f"{where} = {float(array[index]):.6g} is outside its valid range [{low}, {high}]"
            + (f" ({len(bad)} entries are)" if len(bad) > 1 else "")
        )


def _finite_raw(field: str, raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    for key, value in raw.items():
        if not np.isfinite(value).all():
            raise ConfigError(
                f"{field}.values.{key} lies on the boundary of its open range (edited by hand?); "
                "move it strictly inside"
            )
    return raw


def check_values(stage: str, field: str, values: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Validate one stage's physical values; ``field`` names it in errors (``stages[2]``)."""
    shapes = STAGES[stage].raw_shapes
    if not isinstance(values, Mapping) or set(values) != set(shapes):
        got = sorted(values) if isinstance(values, Mapping) else values
        raise ConfigError(f"{field} ({stage}) must have parameters {sorted(shapes)}; got {got}")
    out = {}
    for key, shape in shapes.items():
        name = f"{field}.{key}"
        array = _array(name, values[key], shape)
        _, low, high, closed = PARAM_INFO[stage][key]
        if stage == "ccm":
            _check_range(name + " - identity", array - np.eye(3), low, high, closed)
        elif stage == "tone_curve":
            _check_range(name + "[0] (black level)", array[:1], low, high, closed)
            segments = shape[0] - 1
            _check_range(name + " rises", np.diff(array), 1 / segments**2, 1.0, False)
        elif stage == "sharpen" and key == "kernel":
            _check_range(name, array, low, high, closed)
            if abs(array.sum() - 1.0) > 1e-5:
                raise ConfigError(f"{name} must sum to 1; sums to {array.sum():.6g}")
        else:
            _check_range(name, array, low, high, closed)
        out[key] = array
    return out


def _stage_raw(stage: str, field: str, entry: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Raw values for one stage entry: the stored raw when it agrees with the values."""
    values = check_values(stage, field + ".values", entry.get("values"))
    stored = entry.get("raw")
    if isinstance(stored, Mapping):
        shapes = STAGES[stage].raw_shapes
        try:
            raw = {k: np.asarray(stored[k], np.float32).reshape(shapes[k]) for k in shapes}
        except (KeyError, TypeError, ValueError):
            raise ConfigError(f"{field}.raw does not match the {stage} stage") from None
        again = STAGES[stage].constrain({k: jnp.asarray(r) for k, r in raw.items()})
        if all(np.allclose(np.asarray(again[k]), values[k], rtol=0, atol=AGREE_TOL) for k in raw):
            return raw
    return _finite_raw(field, invert(stage, values))


# --------------------------------------------------------------------------------- reading


def _need(doc: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in doc:
        raise DataError(f"{where}: missing field {key!r}")
    if not isinstance(doc[key], kind):
        raise DataError(f"{where}: field {key!r} has the wrong type ({type(doc[key]).__name__})")
    return doc[key]


def _load_chain(chain: Mapping[str, Any], where: Path) -> Any:
    entries = _need(chain, "stages", list, f"{where} chain")
    names = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, Mapping) or entry.get("name") not in STAGES:
            raise ConfigError(f"{where}: chain.stages[{i}] has no known stage 'name'")
        if entry.get("order", i) != i:
            raise ConfigError(f"{where}: chain.stages[{i}].order is {entry.get('order')}, not {i}")
        names.append(entry["name"])
    if chain.get("type") == "global":
        isp = ISP(tuple(names))
        for i, (entry, stage) in enumerate(zip(entries, isp.stages, strict=True)):
            raw = _stage_raw(entry["name"], f"chain.stages[{i}]", entry)
            for key, value in raw.items():
                getattr(stage, f"{key}_raw")[...] = jnp.asarray(value, jnp.float32)
        return isp
    if chain.get("type") != "adaptive":
        raise ConfigError(f"{where}: chain.type must be 'global' or 'adaptive'")
    ref = _need(chain, "predictor", Mapping, f"{where} chain")
    blob_path = where.parent / str(ref.get("file"))
    if Path(str(ref.get("file"))).name != ref.get("file"):
        raise ConfigError(f"{where}: chain.predictor.file must be a file name beside it")
    if not blob_path.is_file():
        raise DataError(f"{where}: the predictor weights {blob_path} are missing")
    blob = blob_path.read_bytes()
    if hashlib.sha256(blob).hexdigest() != ref.get("sha256"):
        raise DataError(f"{blob_path}: SHA-256 differs from chain.predictor.sha256 in {where}")
    try:
        isp = AdaptiveISP(
            tuple(names),
            gates=bool(chain["gates"]),
            cost_weight=float(chain["cost_weight"]),
            temperature=float(chain["temperature"]),
            thumb_size=int(chain["thumb_size"]),
            widths=tuple(int(w) for w in chain["widths"]),
            hidden=int(chain["hidden"]),
            rngs=nnx.Rngs(0),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: adaptive chain settings are invalid: {exc}") from None
    _load_predictor(isp, blob, blob_path)
    return isp


def _load_predictor(isp: AdaptiveISP, blob: bytes, where: Path) -> None:
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except Exception as exc:  # zipfile / numpy raise assorted types on a damaged file
        raise DataError(f"{where}: not a readable predictor .npz ({exc})") from None
    state = nnx.state(isp.predictor)
    flat = nnx.to_flat_state(state)
    for path, variable in flat:
        key = "/".join(str(p) for p in path)
        old = variable.get_value()
        if key not in arrays or arrays[key].shape != old.shape:
            raise DataError(f"{where}: predictor weight {key!r} is missing or has another shape")
        variable.set_value(jnp.asarray(arrays[key], old.dtype))
    nnx.update(isp.predictor, nnx.from_flat_state(flat))


def _load_front(front: Mapping[str, Any], where: Path) -> RawFront:
    stages = tuple(_need(front, "stages", list, f"{where} front"))
    demosaic = _need(front, "demosaic", Mapping, f"{where} front")
    residual = demosaic.get("residual")
    out = RawFront(stages, demosaic=str(demosaic.get("method")), residual=residual is not None)
    if residual is not None:
        weights = _array(
            "front.demosaic.residual.weights",
            residual.get("weights"),
            tuple(out.demosaic.residual_raw.shape),
        )
        _check_range(
            "front.demosaic.residual.weights", weights, -RESIDUAL_LIMIT, RESIDUAL_LIMIT, False
        )
        out.demosaic.residual_raw[...] = _agreeing_raw(
            "front.demosaic.residual.weights",
            residual.get("raw"),
            weights,
            lambda r: RESIDUAL_LIMIT * np.tanh(r / RESIDUAL_LIMIT),
            lambda v: RESIDUAL_LIMIT * _atanh(v / RESIDUAL_LIMIT),
        )
    if out.raw_wb is not None:
        entry = _need(front, "raw_wb", Mapping, f"{where} front")
        value = _array("front.raw_wb.correction", entry.get("correction"), (3,))
        _check_range("front.raw_wb.correction", value, 0.5, 2.0, False)
        ln = math.log(2.0)
        out.raw_wb.correction_raw[...] = _agreeing_raw(
            "front.raw_wb.correction",
            entry.get("raw"),
            value,
            lambda r: np.exp(ln * np.tanh(r / ln)),
            lambda v: ln * _atanh(np.log(v) / ln),
        )
    if out.raw_ccm is not None:
        entry = _need(front, "raw_ccm", Mapping, f"{where} front")
        value = _array("front.raw_ccm.correction", entry.get("correction"), (3, 3))
        if np.abs(value.sum(axis=1) - 1).max() > 1e-5:
            raise ConfigError(f"front.raw_ccm.correction rows must sum to 1; got {value.tolist()}")
        _check_range("front.raw_ccm.correction - identity", value - np.eye(3), -1.0, 1.0, False)

        def forward(r: np.ndarray) -> np.ndarray:
            d = 0.5 * np.tanh(r / 0.5)
            return np.eye(3) + d - d.mean(axis=1, keepdims=True)

        out.raw_ccm.delta_raw[...] = _agreeing_raw(
            "front.raw_ccm.correction",
            entry.get("raw"),
            value,
            forward,
            lambda v: 0.5 * _atanh((v - np.eye(3)) / 0.5),
        )
    return out


def _agreeing_raw(
    field: str, stored: Any, value: np.ndarray, forward: Any, inverse: Any
) -> jax.Array:
    """The stored raw where it maps to ``value`` (bit-identical reload), else ``inverse(value)``."""
    if stored is not None:
        try:
            raw = np.asarray(stored, np.float32).reshape(value.shape)
        except (TypeError, ValueError):
            raw = None
        if raw is not None and np.abs(forward(raw.astype(np.float64)) - value).max() <= AGREE_TOL:
            return jnp.asarray(raw)
    raw = np.asarray(inverse(value), np.float32)
    if not np.isfinite(raw).all():
        raise ConfigError(
            f"{field} = {value.tolist()} is on the boundary of its range or beyond what its "
            "bounded map reaches (edited by hand?)"
        )
    return jnp.asarray(raw)


def read_document(path: str | Path) -> dict[str, Any]:
    """Parse and check the header of a parameter file (schema, version); the dict back.

    Raises:
      DataError: unreadable, truncated or not JSON, or not a diffisp parameter file.
      ConfigError: a version this diffisp does not read.
    """
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: no such parameter file") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(
            f"{path}: not a complete JSON parameter file (truncated or garbled: {exc})"
        ) from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        found = doc.get("schema") if isinstance(doc, dict) else type(doc).__name__
        raise DataError(
            f"{path}: not a diffisp ISP parameter file (schema {found!r}, expected {SCHEMA!r})"
        )
    if doc.get("version") != VERSION:
        raise ConfigError(
            f"{path}: parameter file version {doc.get('version')!r}; this diffisp "
            f"({diffisp.__version__}) reads version {VERSION}"
        )
    return doc


def load(path: str | Path) -> Any:
    """The ISP a parameter file describes: an ``ISP``, ``AdaptiveISP`` or ``RawISP``.

    Raises:
      DataError: see :func:`read_document`; a missing or altered predictor file.
      ConfigError: a value outside its range (the message names the field), unknown stages.
    """
    path = Path(path)
    doc = read_document(path)
    chain = doc.get("chain")
    back = None if chain is None else _load_chain(_need(doc, "chain", Mapping, str(path)), path)
    if doc.get("kind") == "raw":
        return RawISP(_load_front(_need(doc, "front", Mapping, str(path)), path), back)
    if back is None:
        raise DataError(f"{path}: a {doc.get('kind')!r} parameter file needs a 'chain'")
    return back


__all__ = [
    "AGREE_TOL",
    "PARAM_INFO",
    "SCHEMA",
    "VERSION",
    "check_values",
    "invert",
    "load",
    "predictor_bytes",
    "read_document",
    "to_document",
    "write",
]
