"""The RAW ISP: learnable RAW stages in front of the stage chain, and the conventional pipeline.

A RAW ISP takes a :class:`~diffisp.capture.raw_capture.RawCapture` (Bayer mosaics with the camera's
white balance and colour matrix) and returns display-referred RGB, so that any ISP of the stage
chain - global or adaptive - can follow it, and any task model after that:

    mosaic --raw_wb--> --demosaic--> camera RGB --raw_ccm--> linear sRGB --sRGB curve--> chain

================  =======  ===============================================  ====================
RAW stage         params   what it learns (bounded by construction)         at initialisation
================  =======  ===============================================  ====================
raw_wb            3        a correction of the recorded WB gains, x (1/2, 2)  the camera's gains
demosaic          0 / 432  fixed bilinear or Malvar-He-Cutler, plus an       the fixed demosaic
                           optional residual: a 3x3 conv on the packed
                           mosaic, each weight in (-0.1, 0.1)
raw_ccm           9        a correction ``C`` applied after the recorded     the camera's matrix
                           matrix, ``C = I + D - mean_row(D)``, D in (-1/2,
                           1/2): rows of C sum to 1, so white stays white
================  =======  ===============================================  ====================

White balance is applied on the mosaic, before demosaicing, as cameras do (Malvar's gradient
correction mixes colour channels and assumes balanced ones), followed by the sensor's
saturation at 1. The front ends like a camera's output stage: a clip to [0, 1], the sRGB
transfer curve and the global tone curve that :mod:`diffisp.capture.unprocess` inverts (Brooks et
al.'s smoothstep), so the chain behind it sees ordinary display-referred images.

The conventional pipeline (:func:`conventional_pipeline`) is the same front with nothing
learned: the camera's own recipe, the RAW baseline every learned RAW ISP must beat.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from diffisp import ops
from diffisp.capture.raw_capture import RawCapture
from diffisp.errors import ConfigError, InputTypeError
from diffisp.isp import params
from diffisp.isp.chain import RAW_FRONT, LearnedISP, parse_stage_list, split_raw_front
from diffisp.ops.raw import (
    apply_cfa_white_balance,
    camera_to_srgb,
    demosaic_bilinear,
    demosaic_malvar2004,
    pack_bayer,
    srgb_encode,
)

DEMOSAIC_METHODS: dict[str, Callable[[jax.Array, str], jax.Array]] = {
    "bilinear": demosaic_bilinear,
    "malvar": demosaic_malvar2004,
}
# The residual demosaic: a 3x3 convolution over the packed mosaic (4 channels: R, G1, G2, B)
# that predicts 12 values per 2x2 tile (3 colours at each of its 4 pixels).
_RESIDUAL_SHAPE = (3, 3, 4, 12)
# Each residual weight stays in (-RESIDUAL_LIMIT, RESIDUAL_LIMIT): a correction, not a new filter.
RESIDUAL_LIMIT = 0.1


def _check_capture(capture: Any) -> RawCapture:
    if not isinstance(capture, RawCapture):
        raise InputTypeError(
            f"a RAW ISP takes a RawCapture (diffisp.capture.raw_capture.make_capture); got "
            f"{type(capture).__name__}"
        )
    return capture


def _check_method(method: str) -> str:
    if method not in DEMOSAIC_METHODS:
        raise ConfigError(
            f"unknown demosaic method {method!r}; choose from {', '.join(DEMOSAIC_METHODS)}"
        )
    return method


# ----------------------------------------------------------------- fixed (conventional) pipeline


def conventional_linear(capture: RawCapture, demosaic: str = "bilinear") -> jax.Array:
    """Camera recipe up to linear sRGB: recorded WB on the mosaic, saturation, demosaic,
    recorded matrix. Returns ``(N, H, W, 3)`` linear sRGB, unclipped.

    The clip after white balance is the sensor's saturation, where Brooks et al. and dcraw's
    default highlight mode put it: a sample saturated in every channel is ``(r, 1, b) > 1`` after
    white balance, and without the clip the matrix's negative entries turn it magenta
    (measured: (1, 0.96, 1)) instead of white.
    """
    capture = _check_capture(capture)
    balanced = apply_cfa_white_balance(capture.mosaic, capture.wb_gains, capture.pattern)
    rgb = DEMOSAIC_METHODS[_check_method(demosaic)](ops.clip_unit(balanced), capture.pattern)
    return camera_to_srgb(rgb, capture.cam_to_srgb)


def display_encode(linear: jax.Array, *, tone: bool = True) -> jax.Array:
    """Linear sRGB -> display-referred sRGB in [0, 1]: clip, the sRGB transfer curve, then the
    global tone curve (Brooks et al.'s smoothstep, on encoded values as they fit it)."""
    encoded = srgb_encode(ops.clip_unit(linear))
    return ops.clip_unit(ops.smoothstep(encoded)) if tone else encoded


def conventional_pipeline(capture: RawCapture, *, tone: bool = True) -> jax.Array:
    """The conventional camera pipeline: bilinear demosaic, recorded WB and colour matrix, sRGB
    curve and (``tone``) the global tone curve. ``RawCapture`` -> ``(N, H, W, 3)`` in [0, 1].
    Nothing learned, nothing brightened: with the tone curve, what
    :func:`diffisp.capture.unprocess.unprocess` inverts; without it, what LibRaw computes with
    :data:`diffisp.experiments.raw_bench.RAWPY_EQUIVALENT` (real files are rendered so)."""
    return display_encode(conventional_linear(capture), tone=tone)


def demosaic_only(capture: RawCapture) -> jax.Array:
    """The "no ISP" view of a RAW capture: bilinear-demosaiced camera RGB as recorded (no white
    balance, no colour matrix, linear), clipped to [0, 1]. ``(N, H, W, 3)``."""
    capture = _check_capture(capture)
    return ops.clip_unit(demosaic_bilinear(capture.mosaic, capture.pattern))


def packed_raw(capture: RawCapture) -> jax.Array:
    """The packed-RAW input of models that skip the ISP: ``(N, H/2, W/2, 4)`` R, G1, G2, B."""
    capture = _check_capture(capture)
    return pack_bayer(capture.mosaic, capture.pattern)


# ------------------------------------------------------------------------- learnable RAW stages


class RawWhiteBalance(nnx.Module):
    """The recorded white-balance gains times a learned per-channel correction in (1/2, 2)."""

    def __init__(self) -> None:
        self.correction_raw = nnx.Param(jnp.zeros(3, jnp.float32))

    def gains(self, capture: RawCapture) -> jax.Array:
        """``(N, 3)`` gains applied to each image."""
        return capture.wb_gains * params.log_bounded(self.correction_raw[...], 2.0)

    def __call__(self, capture: RawCapture) -> jax.Array:
        """Balanced mosaic ``(N, H, W)``."""
        return apply_cfa_white_balance(capture.mosaic, self.gains(capture), capture.pattern)

    def summary(self) -> dict[str, Any]:
        correction = params.log_bounded(self.correction_raw[...], 2.0)
        return {"correction": np.asarray(correction).tolist()}


class Demosaic(nnx.Module):
    """A fixed demosaic (``"bilinear"`` or ``"malvar"``) plus, optionally, a learned residual.

    The residual is a 3x3 convolution over the packed mosaic, so it sees a 6x6-pixel window and
    can learn a different filter for each of the four tile positions; its weights start at 0
    (the fixed demosaic exactly) and stay in (-0.1, 0.1). Off by default in training
    (``raw_residual``): measured, it hurt phase 1 and painted CFA-periodic stripes.
    """

    def __init__(self, method: str = "malvar", residual: bool = False) -> None:
        self.method = _check_method(method)
        self.residual_raw = nnx.Param(jnp.zeros(_RESIDUAL_SHAPE, jnp.float32)) if residual else None

    def __call__(self, mosaic: jax.Array, pattern: str) -> jax.Array:
        """``(N, H, W)`` mosaic -> ``(N, H, W, 3)`` camera RGB (unclipped)."""
        rgb = DEMOSAIC_METHODS[self.method](mosaic, pattern)
        if self.residual_raw is None:
            return rgb
        packed = pack_bayer(mosaic, pattern)
        kernel = params.symmetric_bounded(self.residual_raw[...], RESIDUAL_LIMIT)
        out = jax.lax.conv_general_dilated(
            packed, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        n, h2, w2, _ = out.shape
        # 12 channels per tile -> (2 rows, 2 columns, 3 colours) of full-resolution pixels.
        delta = out.reshape(n, h2, w2, 2, 2, 3).transpose(0, 1, 3, 2, 4, 5)
        return rgb + delta.reshape(n, 2 * h2, 2 * w2, 3)

    def num_params(self) -> int:
        return 0 if self.residual_raw is None else int(np.prod(_RESIDUAL_SHAPE))


class RawColorMatrix(nnx.Module):
    """The recorded camera -> sRGB matrix followed by a learned correction with unit row sums."""

    def __init__(self) -> None:
        self.delta_raw = nnx.Param(jnp.zeros((3, 3), jnp.float32))

    def correction(self) -> jax.Array:
        delta = params.symmetric_bounded(self.delta_raw[...], 0.5)
        return jnp.eye(3) + delta - jnp.mean(delta, axis=1, keepdims=True)

    def matrices(self, capture: RawCapture) -> jax.Array:
        """``(N, 3, 3)`` camera RGB -> linear sRGB, per image."""
        return jnp.einsum("ij,njk->nik", self.correction(), capture.cam_to_srgb)


class RawFront(nnx.Module):
    """The learnable RAW stages: ``RawCapture`` -> display-referred ``(N, H, W, 3)`` in [0, 1].

    ``stage_names`` is a subset of :data:`~diffisp.isp.chain.RAW_FRONT` holding ``demosaic``; a
    stage left out uses the recorded metadata unchanged (WB, matrix).
    """

    def __init__(
        self,
        stage_names: Sequence[str] = RAW_FRONT,
        *,
        demosaic: str = "malvar",
        residual: bool = False,
    ) -> None:
        names = tuple(stage_names)
        if "demosaic" not in names or any(n not in RAW_FRONT for n in names):
            raise ConfigError(
                f"a RAW front takes stages from {', '.join(RAW_FRONT)} including 'demosaic'; "
                f"got {names}"
            )
        self.stage_names = tuple(n for n in RAW_FRONT if n in names)
        self.raw_wb = RawWhiteBalance() if "raw_wb" in names else None
        self.demosaic = Demosaic(demosaic, residual)
        self.raw_ccm = RawColorMatrix() if "raw_ccm" in names else None

    def linear(self, capture: RawCapture) -> jax.Array:
        """Linear sRGB ``(N, H, W, 3)``, unclipped."""
        capture = _check_capture(capture)
        if self.raw_wb is None:
            balanced = apply_cfa_white_balance(capture.mosaic, capture.wb_gains, capture.pattern)
        else:
            balanced = self.raw_wb(capture)
        # Saturation after white balance, as in conventional_linear (white stays white).
        rgb = self.demosaic(ops.clip_unit(balanced), capture.pattern)
        matrix = capture.cam_to_srgb if self.raw_ccm is None else self.raw_ccm.matrices(capture)
        return camera_to_srgb(rgb, matrix)

    def __call__(self, capture: RawCapture) -> jax.Array:
        return display_encode(self.linear(capture))

    def num_params(self) -> int:
        return (3 if self.raw_wb else 0) + self.demosaic.num_params() + (9 if self.raw_ccm else 0)

    def parameter_summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"demosaic": {"method": self.demosaic.method}}
        if self.demosaic.residual_raw is not None:
            weights = params.symmetric_bounded(self.demosaic.residual_raw[...], RESIDUAL_LIMIT)
            out["demosaic"]["residual_max_abs_weight"] = float(jnp.max(jnp.abs(weights)))
        if self.raw_wb is not None:
            out["raw_wb"] = self.raw_wb.summary()
        if self.raw_ccm is not None:
            out["raw_ccm"] = {"correction": np.asarray(self.raw_ccm.correction()).tolist()}
        return out


# ---------------------------------------------------------------------------------- the RAW ISP


class RawISP(nnx.Module):
    """A :class:`RawFront` followed by any chain ISP (global or adaptive), or by nothing.

    Implements :class:`~diffisp.isp.chain.LearnedISP` with :class:`RawCapture` inputs; the
    chain ISP's per-image parameters and gates are predicted from the front's output.
    """

    def __init__(self, front: RawFront, back: LearnedISP | None) -> None:
        self.front = front
        self.back = back
        self.stage_names = front.stage_names + (() if back is None else back.stage_names)
        self.per_image = bool(back is not None and back.per_image)

    def __call__(self, capture: RawCapture) -> jax.Array:
        rgb = self.front(capture)
        return rgb if self.back is None else self.back(rgb)

    def forward_train(self, capture: RawCapture, key: jax.Array) -> tuple[jax.Array, dict]:
        rgb = self.front(capture)
        if self.back is None:
            return rgb, {"penalty": jnp.zeros((), rgb.dtype)}
        return self.back.forward_train(rgb, key)

    def decisions(self, capture: RawCapture) -> dict[str, Any]:
        """The chain's decisions, with the RAW stages always active (they are not gated)."""
        rgb = self.front(capture)
        n, num_front = rgb.shape[0], len(self.front.stage_names)
        on = jnp.ones((n, num_front), bool)
        if self.back is None:
            return {
                "stage_names": self.stage_names,
                "active": on,
                "gate_probs": on.astype(rgb.dtype),
                "values": {},
            }
        inner = self.back.decisions(rgb)
        return {
            **inner,
            "stage_names": self.stage_names,
            "active": jnp.concatenate([on, inner["active"]], axis=1),
            "gate_probs": jnp.concatenate(
                [on.astype(inner["gate_probs"].dtype), inner["gate_probs"]], axis=1
            ),
        }

    def parameter_summary(self, capture: RawCapture | None = None) -> dict[str, Any]:
        out = self.front.parameter_summary()
        if self.back is not None:
            rgb = None if capture is None else self.front(capture)
            out.update(self.back.parameter_summary(rgb))
        return out

    def fastest_inference(self) -> Callable[[RawCapture], jax.Array]:
        graphdef, state = nnx.split(self)
        run = jax.jit(lambda state, capture: nnx.merge(graphdef, state)(capture))
        return lambda capture: run(state, capture)

    def num_params(self) -> int:
        return self.front.num_params() + (0 if self.back is None else self.back.num_params())

    def start_from_auto_exposure(self, target_level: float) -> None:
        """The chain's start (an adaptive chain reads the front's output, so its auto-exposure
        acts on the RAW front's white-balanced sRGB)."""
        if self.back is not None:
            self.back.start_from_auto_exposure(target_level)


def build_raw_isp(
    stages: str | Sequence[str],
    make_back: Callable[[tuple[str, ...]], LearnedISP],
    *,
    demosaic: str = "malvar",
    residual: bool = False,
) -> RawISP:
    """A :class:`RawISP` for a stage list holding RAW stages; ``make_back(chain_stages)`` builds
    the chain ISP behind the front (global or adaptive) when there are chain stages."""
    front_names, chain_names = split_raw_front(parse_stage_list(stages))
    if not front_names:
        raise ConfigError(f"a RAW ISP needs RAW stages ({', '.join(RAW_FRONT)}) first")
    front = RawFront(front_names, demosaic=demosaic, residual=residual)
    return RawISP(front, make_back(chain_names) if chain_names else None)


def process_capture(
    capture: RawCapture, *, tone: bool = True, demosaic: str = "bilinear"
) -> jax.Array:
    """The reference camera pipeline that :func:`diffisp.capture.unprocess.unprocess` inverts:
    the conventional pipeline (:func:`conventional_linear` and :func:`display_encode`) with the
    capture's own metadata. Pure; darkening is not undone.

    Args:
      capture: a :class:`~diffisp.capture.raw_capture.RawCapture`.
      tone: apply the smoothstep tone curve.
      demosaic: ``"bilinear"`` or ``"malvar"``.

    Returns:
      ``(N, H, W, 3)`` sRGB in [0, 1].
    """
    if not isinstance(capture, RawCapture):
        raise InputTypeError(f"capture must be a RawCapture; got {type(capture).__name__}")
    return display_encode(conventional_linear(capture, demosaic=demosaic), tone=tone)
