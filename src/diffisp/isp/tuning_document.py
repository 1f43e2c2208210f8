"""The parameter file's document: its schema (:data:`SCHEMA`, :data:`VERSION`), each stage
parameter's physical unit and valid range (:data:`PARAM_INFO`), the conversion of physical
values back to the raw values a stage trains (:func:`invert`), and writing an ISP as a document
(:func:`to_document`, :func:`write`).

Reading, checking and loading a file are in :mod:`diffisp.isp.tuning_file`, which re-exports
these names; the format is described there.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from flax import nnx

import diffisp
from diffisp.errors import ConfigError
from diffisp.isp.adaptive import AdaptiveISP
from diffisp.isp.chain import ISP
from diffisp.isp.raw import RESIDUAL_LIMIT, RawFront, RawISP

SCHEMA = "diffisp.isp-tuning"
VERSION = 1

# Per stage parameter: (unit, low, high, closed range); knots and kernel have their own checks.
PARAM_INFO: dict[str, dict[str, tuple[str, float, float, bool]]] = {
    "exposure": {"ev": ("EV (stops)", -8.0, 8.0, False)},
    "white_balance": {"gains": ("gain per channel R, G, B", 0.25, 4.0, False)},
    "ccm": {"matrix": ("3x3 matrix, rows = output R, G, B; entries of M - I", -2.0, 2.0, False)},
    "desaturation": {"strength": ("blend to luminance, 0..1", 0.0, 1.0, True)},
    "saturation": {"factor": ("chroma factor", 0.25, 4.0, False)},
    "tone_curve": {"knots": ("curve value at inputs k/15; black level, rises", -0.5, 0.5, False)},
    "gamma": {"gamma": ("exponent (output = input ** gamma)", 0.1, 10.0, False)},
    "contrast": {"factor": ("factor around mean luminance", 0.25, 4.0, False)},
    "sharpen": {
        "strength": ("unsharp-mask strength", -1.0, 4.0, False),
        "kernel": ("3x3 blur, entries > 0, sum 1", 0.0, 1.0, False),
    },
    "denoise": {
        "strength": ("bilateral blend, 0..1", 0.0, 1.0, True),
        "sigma_range": ("edge scale (intensity)", 0.005, 0.5, False),
    },
}


def _atanh(x: np.ndarray) -> np.ndarray:
    return np.arctanh(np.asarray(x, np.float64))


def invert(stage: str, values: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Raw values that ``STAGES[stage].constrain`` maps to ``values`` (checked values only)."""
    v = {k: np.asarray(x, np.float64) for k, x in values.items()}
    if stage == "exposure":
        raw = {"ev": 8.0 * _atanh(v["ev"] / 8.0)}
    elif stage in ("white_balance", "saturation", "contrast", "gamma"):
        key, limit = {"white_balance": ("gains", 4.0), "gamma": ("gamma", 10.0)}.get(
            stage, ("factor", 4.0)
        )
        ln = math.log(limit)
        raw = {key: ln * _atanh(np.log(v[key]) / ln)}
    elif stage == "ccm":
        raw = {"matrix": 2.0 * _atanh((v["matrix"] - np.eye(3)) / 2.0)}
    elif stage == "desaturation":
        raw = {"strength": v["strength"]}
    elif stage == "tone_curve":
        knots, segments = v["knots"], v["knots"].shape[-1] - 1
        rises = np.diff(knots) * segments
        ln = math.log(segments)
        raw = {"knots": np.concatenate([_atanh(2 * knots[:1]), ln * _atanh(np.log(rises) / ln)])}
    elif stage == "sharpen":
        frac = 1.0 / 5.0  # at_zero 0 in (-1, 4)
        p = (v["strength"] + 1.0) / 5.0
        logits = np.log(v["kernel"])
        raw = {
            "strength": np.log(p / (1 - p)) - math.log(frac / (1 - frac)),
            "kernel": logits - logits.mean(),
        }
    elif stage == "denoise":
        frac = (0.05 - 0.005) / (0.5 - 0.005)
        p = (v["sigma_range"] - 0.005) / (0.5 - 0.005)
        raw = {
            "strength": v["strength"],
            "sigma_range": np.log(p / (1 - p)) - math.log(frac / (1 - frac)),
        }
    else:
        raise ConfigError(f"unknown ISP stage {stage!r}")
    return {k: np.asarray(x, np.float32) for k, x in raw.items()}


# --------------------------------------------------------------------------------- writing


def _stage_entries(isp: ISP) -> list[dict[str, Any]]:
    entries = []
    for order, (name, stage) in enumerate(zip(isp.stage_names, isp.stages, strict=True)):
        values = stage.values()
        entries.append(
            {
                "name": name,
                "order": order,
                "values": {k: np.asarray(v).tolist() for k, v in values.items()},
                "units": {k: PARAM_INFO[name][k][0] for k in values},
                "ranges": {k: list(PARAM_INFO[name][k][1:3]) for k in values},
                "raw": {k: np.asarray(v).tolist() for k, v in stage.raw().items()},
            }
        )
    return entries


def _front_entry(front: RawFront) -> dict[str, Any]:
    demosaic = front.demosaic
    residual = None
    if demosaic.residual_raw is not None:
        raw = np.asarray(demosaic.residual_raw[...])
        residual = {
            "weights": np.asarray(RESIDUAL_LIMIT * np.tanh(raw / RESIDUAL_LIMIT)).tolist(),
            "range": [-RESIDUAL_LIMIT, RESIDUAL_LIMIT],
            "raw": raw.tolist(),
        }
    out: dict[str, Any] = {
        "stages": list(front.stage_names),
        "cfa": "per capture (the RawCapture's pattern: RGGB, GRBG, GBRG or BGGR)",
        "demosaic": {"method": demosaic.method, "residual": residual},
        "raw_wb": None,
        "raw_ccm": None,
    }
    if front.raw_wb is not None:
        raw = np.asarray(front.raw_wb.correction_raw[...])
        out["raw_wb"] = {
            "correction": front.raw_wb.summary()["correction"],
            "unit": "factor on the capture's recorded R, G, B gains",
            "range": [0.5, 2.0],
            "raw": raw.tolist(),
        }
    if front.raw_ccm is not None:
        out["raw_ccm"] = {
            "correction": np.asarray(front.raw_ccm.correction()).tolist(),
            "unit": "3x3 matrix applied after the capture's camera->sRGB matrix; rows sum to 1",
            "range": [-1.0, 1.0],
            "raw": np.asarray(front.raw_ccm.delta_raw[...]).tolist(),
        }
    return out


def predictor_bytes(isp: AdaptiveISP) -> bytes:
    """The adaptive ISP's predictor weights as ``.npz`` bytes (one array per state path)."""
    flat = nnx.to_flat_state(nnx.state(isp.predictor))
    arrays = {"/".join(str(p) for p in path): np.asarray(v.get_value()) for path, v in flat}
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def to_document(
    isp: Any, *, config: Mapping[str, Any] | None = None, predictor_file: str | None = None
) -> tuple[dict[str, Any], bytes | None]:
    """The parameter file of ``isp`` (global, adaptive or RAW) and, for an adaptive chain, the
    predictor ``.npz`` bytes that ``predictor_file`` names. ``config``: the run's config dict."""
    front, back = (isp.front, isp.back) if isinstance(isp, RawISP) else (None, isp)
    digest = None
    if config is not None:
        canonical = json.dumps(config, sort_keys=True, separators=(",", ":"))
        digest = hashlib.sha256(canonical.encode()).hexdigest()
    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "version": VERSION,
        "diffisp_version": diffisp.__version__,
        "kind": "raw" if front else ("adaptive" if isinstance(back, AdaptiveISP) else "global"),
        "config_sha256": digest,
        "front": None if front is None else _front_entry(front),
        "chain": None,
    }
    blob = None
    if isinstance(back, ISP):
        doc["chain"] = {"type": "global", "stages": _stage_entries(back)}
    elif isinstance(back, AdaptiveISP):
        blob = predictor_bytes(back)
        pred = back.predictor
        doc["chain"] = {
            "type": "adaptive",
            "stages": [
                {
                    "name": n,
                    "order": i,
                    "units": {k: u[0] for k, u in PARAM_INFO[n].items()},
                    "ranges": {k: list(u[1:3]) for k, u in PARAM_INFO[n].items()},
                }
                for i, n in enumerate(back.stage_names)
            ],
            "gates": back.gates,
            "cost_weight": back.cost_weight,
            "temperature": back.temperature,
            "thumb_size": pred.thumb_size,
            "widths": [int(c.out_features) for c in pred.convs],
            "hidden": int(pred.hidden.out_features),
            "predictor": {
                "file": predictor_file or "predictor.npz",
                "sha256": hashlib.sha256(blob).hexdigest(),
            },
        }
    elif back is not None:
        raise ConfigError(f"cannot write a parameter file for {type(back).__name__}")
    return doc, blob


def write(path: str | Path, isp: Any, *, config: Mapping[str, Any] | None = None) -> list[Path]:
    """Write ``isp``'s parameter file to ``path`` (JSON) and, for an adaptive chain, its
    predictor weights beside it (``<stem>.predictor.npz``). Returns the files written."""
    from diffisp.util.io import atomic_write_bytes, atomic_write_json

    path = Path(path)
    companion = path.with_name(path.stem + ".predictor.npz")
    doc, blob = to_document(isp, config=config, predictor_file=companion.name)
    written = []
    if blob is not None:
        written.append(atomic_write_bytes(companion, blob))
    written.insert(0, atomic_write_json(path, doc))
    return written
