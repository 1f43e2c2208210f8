"""``diffisp export``: a trained run's ISP as an ONNX graph or a JSON parameter file.

Reads the run's ``model/`` (:func:`diffisp.training.checkpoint.load_model`) and writes, atomically:

* ``--format onnx``: :func:`diffisp.isp.onnx_export.export_onnx` (metadata: the run's config
  digest); an adaptive or RAW ISP is exported at a fixed size, the run's ``image_size`` unless
  given;
* ``--format json``: :func:`diffisp.isp.tuning_file.write` (plus ``<stem>.predictor.npz`` for
  an adaptive chain).

:func:`read_onnx` checks an exported file before use (truncated, hand-edited, another format).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from diffisp.errors import ConfigError, DataError
from diffisp.isp import onnx_export, tuning_file

FORMATS = ("onnx", "json")


def config_digest(config: dict[str, Any] | None) -> str | None:
    """SHA-256 of the run config as canonical JSON (sorted keys), or ``None`` without one."""
    if config is None:
        return None
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def model_dir(path: Path) -> Path:
    """A run directory's ``model/``, or ``path`` itself when it is one."""
    return path / "model" if (path / "model").is_dir() else path


def export_run(
    run: str | Path,
    fmt: str,
    out: str | Path,
    *,
    size: tuple[int, int] | None = None,
    pattern: str = "RGGB",
) -> list[Path]:
    """Export the ISP of ``run`` (a run dir or its ``model/``) as ``fmt`` to ``out``.

    Args:
      run: the training run.
      fmt: ``"onnx"`` or ``"json"``.
      out: the file to write.
      size: ``(height, width)`` of an adaptive or RAW ONNX graph (default: the run's
        ``image_size`` square).
      pattern: the CFA pattern of a RAW ISP's ONNX graph.

    Returns:
      The files written.

    Raises:
      ConfigError: an unknown format; CheckpointError: not a diffisp run.
    """
    from diffisp.training.checkpoint import load_model
    from diffisp.util.io import atomic_write_bytes

    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; choose from {', '.join(FORMATS)}")
    isp, _, meta = load_model(model_dir(Path(run)))
    config = meta.get("config")
    if fmt == "json":
        return tuning_file.write(out, isp, config=config)
    if size is None:
        side = int((config or {}).get("image_size", 32))
        size = (side, side)
    digest = config_digest(config)
    blob = onnx_export.export_onnx(
        isp,
        pattern=pattern,
        height=size[0],
        width=size[1],
        metadata={"config_sha256": digest} if digest else None,
    )
    return [atomic_write_bytes(out, blob)]


def read_onnx(path: str | Path) -> tuple[bytes, dict[str, str]]:
    """An exported ISP graph's bytes and metadata, checked.

    Raises:
      DataError: missing, truncated or damaged, or not a diffisp ISP graph.
      ConfigError: an ISP graph of another export format version.
    """
    import onnx

    path = Path(path)
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such ONNX file") from None
    try:
        model = onnx.load_from_string(blob)
        onnx.checker.check_model(model)
    except Exception as exc:  # protobuf DecodeError, onnx ValidationError
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(
            f"{path}: not a complete, valid ONNX model (truncated or edited? {first})"
        ) from None
    props = {p.key: p.value for p in model.metadata_props}
    found = props.get("format")
    if found is None or not found.startswith("diffisp.isp-onnx/"):
        raise DataError(f"{path}: an ONNX model, but not one diffisp exported (no ISP format)")
    if found != onnx_export.FORMAT:
        raise ConfigError(
            f"{path}: ISP graph format {found!r}; this diffisp reads {onnx_export.FORMAT!r}"
        )
    return blob, props
