"""ONNX export of a trained ISP (global, adaptive, RAW) with jax2onnx.

The exported graph is the ISP's deterministic inference with its parameters baked in as
constants:

* global :class:`~diffisp.isp.chain.ISP`: ``images (B, H, W, 3)`` -> ``output (B, H, W, 3)``,
  batch, height and width dynamic;
* adaptive :class:`~diffisp.isp.adaptive.AdaptiveISP`: the predictor and the hard gates
  (``logit > 0`` selects a stage's output, as ``AdaptiveISP.__call__``); dynamic batch, fixed
  height and width (the predictor's thumbnail is an exact area mean when the image is a multiple
  of it, a resize otherwise: a choice made from the static size);
* :class:`~diffisp.isp.raw.RawISP`: inputs ``mosaic (B, H, W)`` (black level removed, white = 1),
  ``wb_gains (B, 3)`` and ``cam_to_srgb (B, 3, 3)`` (a ``RawCapture``'s metadata), sRGB out; the
  CFA pattern is fixed at export (a graph per pattern, stored in the model's metadata). Dynamic
  batch, fixed height and width: the mosaic ops check ``H % 2 == 0`` and slice the mirrored
  border at ``H - 3``, which JAX cannot decide for a symbolic ``H``, and jax2onnx cannot lower
  a size written as ``2*k + 4`` (its dimension variables must be input dimensions).

Why jax2onnx: it converts the jaxpr of any JAX function (and Flax NNX modules) directly, so the
ISP's own code is what is exported - no second implementation in another framework to keep in
step (tf2onnx would need TensorFlow and jax2tf). Two of its lowerings are wrong for this graph,
and the export path rewrites around them with mathematically identical code
(:func:`_export_rewrites`): ``jnp.pad`` with ``mode="edge"``/``"reflect"`` (it mislowers the
gathers; the rewrite is slices and concatenations, copying the same samples), and the
broadcasting of ``jnp.power`` against symbolic shapes (a ``TypeError`` in its shape rule);
and one it cannot index with a symbolic batch, the tone curve's per-image knot gather
(rewritten as selects, :func:`_tone_curve_by_select`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import diffisp
from diffisp.capture.raw_capture import RawCapture
from diffisp.errors import ConfigError, InputError
from diffisp.isp.adaptive import AdaptiveISP
from diffisp.isp.chain import ISP
from diffisp.isp.raw import RawISP
from diffisp.ops.raw import BAYER_PATTERNS

OPSET = 21
# metadata_props["format"] of every exported model; readers refuse others.
FORMAT = "diffisp.isp-onnx/1"
# What the ONNX round-trip tests assert (onnxruntime CPU against JAX CPU, float32).
TOLERANCE = 1e-5


def isp_kind(isp: Any) -> str:
    """``"global"``, ``"adaptive"`` or ``"raw"``."""
    if isinstance(isp, RawISP):
        return "raw"
    if isinstance(isp, AdaptiveISP):
        return "adaptive"
    if isinstance(isp, ISP):
        return "global"
    raise ConfigError(f"cannot export {type(isp).__name__}: not a diffisp ISP")


def _frozen(isp: nnx.Module) -> nnx.Module:
    """A copy of ``isp`` whose parameters are plain numpy arrays (graph constants)."""
    graphdef, state = nnx.split(isp)
    return nnx.merge(graphdef, jax.tree.map(np.asarray, state))


def inference_function(
    isp: Any, *, pattern: str = "RGGB", height: int | None = None, width: int | None = None
) -> tuple[Callable[..., jax.Array], list[tuple], list[str]]:
    """The function exported, its input specs (``"B"``, ``"H"``, ``"W"`` = dynamic) and names.

    ``height``/``width``: the fixed image size, needed for an adaptive chain (anywhere in the
    ISP); ignored otherwise.
    """
    kind = isp_kind(isp)
    frozen = _frozen(isp)
    fixed = kind == "raw" or isinstance(isp, AdaptiveISP)
    if fixed and (height is None or width is None):
        raise ConfigError(f"a {kind} ISP exports at a fixed image size: give height and width")
    if fixed and (height < 8 or width < 8 or (kind == "raw" and (height % 2 or width % 2))):
        raise ConfigError(f"export size must be at least 8x8 (even for RAW); got {height}x{width}")
    h, w = (height, width) if fixed else ("H", "W")
    if kind != "raw":
        return (lambda images: frozen(images)), [("B", h, w, 3)], ["images"]
    pattern = str(pattern).upper()
    if pattern not in BAYER_PATTERNS:
        raise InputError(f"unknown CFA pattern {pattern!r}; expected one of {BAYER_PATTERNS}")

    def raw_fn(mosaic: jax.Array, wb_gains: jax.Array, cam_to_srgb: jax.Array) -> jax.Array:
        noise = jnp.zeros((mosaic.shape[0], 2), mosaic.dtype)  # unused by the ISP
        return frozen(RawCapture(mosaic, wb_gains, cam_to_srgb, noise, pattern))

    specs = [("B", h, w), ("B", 3), ("B", 3, 3)]
    return raw_fn, specs, ["mosaic", "wb_gains", "cam_to_srgb"]


def _edge_or_reflect(x: jax.Array, axis: int, before: int, after: int, mode: str) -> jax.Array:
    n = x.shape[axis]
    take = lambda i: jax.lax.slice_in_dim(x, i, i + 1, axis=axis)  # noqa: E731
    if mode == "edge":
        head, tail = [take(0)] * before, [take(n - 1)] * after
    else:  # numpy's "reflect": x[b], ..., x[1] | x | x[n-2], ..., x[n-1-a]
        head = [take(k) for k in range(before, 0, -1)]
        tail = [take(n - 1 - k) for k in range(1, after + 1)]
    parts = [*head, x, *tail]
    return jax.lax.concatenate(parts, axis) if len(parts) > 1 else x


def _tone_curve_by_select(images: jax.Array, knots: jax.Array) -> jax.Array:
    """:func:`diffisp.ops.tone._tone_curve` with the knot lookup as selects instead of a gather
    into the flattened ``(N, K)`` table (which jax2onnx cannot index with a symbolic batch):
    the same two knots are picked for every value, so the result is the same."""
    num_segments = knots.shape[-1] - 1
    scaled = images * num_segments
    segment = jnp.clip(jnp.floor(scaled), 0, num_segments - 1).astype(jnp.int32)
    frac = scaled - segment
    table = knots if knots.ndim == 1 else knots[:, None, None, None, :]
    low, high = table[..., 0], table[..., 1]
    for k in range(1, num_segments):
        low = jnp.where(segment == k, table[..., k], low)
        high = jnp.where(segment == k, table[..., k + 1], high)
    return low + frac * (high - low)


@contextlib.contextmanager
def _export_rewrites() -> Iterator[None]:
    """Rewrite what jax2onnx 0.17 lowers wrongly, with identical maths (module docstring)."""
    import jax2onnx.plugins.jax.numpy.pow as j2o_pow

    from diffisp.ops import tone

    original_pad, original_shape = jnp.pad, j2o_pow._broadcast_shape
    original_tone = tone._tone_curve

    def pad(array: Any, pad_width: Any, mode: str = "constant", **kwargs: Any) -> jax.Array:
        if mode not in ("edge", "reflect") or kwargs:
            return original_pad(array, pad_width, mode=mode, **kwargs)
        x = jnp.asarray(array)
        for axis, (before, after) in enumerate(np.broadcast_to(pad_width, (x.ndim, 2))):
            x = _edge_or_reflect(x, axis, int(before), int(after), mode)
        return x

    def broadcast_shape(x: Any, y: Any) -> tuple:
        try:
            return original_shape(x, y)
        except TypeError:  # symbolic dimensions: jnp's rule handles them
            return tuple(jnp.broadcast_shapes(tuple(x), tuple(y)))

    # jax2onnx patches jax.numpy / jax.lax functions while it traces and has been seen to leave
    # some patched after a call (jnp.cumsum then refused its axis argument in later code):
    # every public attribute of those modules is put back as it was.
    modules = (jnp, jax.lax, jax.nn)
    saved = [(module, dict(vars(module))) for module in modules]
    jnp.pad, j2o_pow._broadcast_shape = pad, broadcast_shape
    tone._tone_curve = _tone_curve_by_select
    try:
        yield
    finally:
        for module, attributes in saved:
            for name, value in attributes.items():
                if vars(module).get(name) is not value:
                    setattr(module, name, value)
        j2o_pow._broadcast_shape = original_shape
        tone._tone_curve = original_tone


def export_onnx(
    isp: Any,
    *,
    pattern: str = "RGGB",
    height: int | None = None,
    width: int | None = None,
    metadata: dict[str, str] | None = None,
) -> bytes:
    """The ISP as a serialised ONNX model (``opset`` :data:`OPSET`, float32).

    Args:
      isp: a global, adaptive or RAW ISP.
      pattern: the CFA pattern a RAW ISP's graph is built for.
      height, width: the fixed image size of an adaptive ISP.
      metadata: extra ``metadata_props`` (strings), e.g. the run's config digest.

    Returns:
      The model bytes; its ``metadata_props`` hold ``diffisp_version``, ``kind``, ``stages``,
      ``inputs``, ``pattern`` (RAW) and the given ``metadata``.

    Raises:
      ConfigError: not an ISP, an adaptive ISP without a size, or jax2onnx is not installed.
    """
    try:
        from jax2onnx import to_onnx
    except ImportError as exc:
        raise ConfigError(
            "ONNX export needs jax2onnx and onnx: pip install -e '.[export]' and "
            "pip install --no-deps jax2onnx==0.17.1 (see the Makefile)"
        ) from exc
    fn, specs, names = inference_function(isp, pattern=pattern, height=height, width=width)
    # jax2onnx imports its example plugins, some of which need packages diffisp does not use.
    logging.getLogger("jax2onnx.plugins.plugin_system").setLevel(logging.ERROR)
    logging.getLogger("onnx_ir.serde").setLevel(logging.ERROR)
    with _export_rewrites():
        model = to_onnx(
            fn,
            specs,
            model_name="diffisp_isp",
            opset=OPSET,
            input_names=names,
            output_names=["output"],
        )
    props = {
        "format": FORMAT,
        "diffisp_version": diffisp.__version__,
        "kind": isp_kind(isp),
        "stages": ",".join(isp.stage_names),
        "inputs": ",".join(names),
        **({"pattern": str(pattern).upper()} if isp_kind(isp) == "raw" else {}),
        **(metadata or {}),
    }
    del model.metadata_props[:]
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, str(value)
    return model.SerializeToString()
