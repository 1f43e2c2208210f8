"""Learnable ISP stages: thin Flax NNX wrappers around :mod:`diffisp.ops`.

Each stage holds *raw* (unconstrained) ``nnx.Param`` values, maps them through a bounded
parameterisation (:mod:`diffisp.isp.params`) to valid parameters, and calls the pure op. All raw
values start at 0, which every stage maps to its identity transform. The same
``constrain``/``process`` pair serves per-image parameters (leading batch axis), which is how
the adaptive ISP predicts them.

================  =======  ==============================================  ==================
stage             params   valid range (by construction)                   identity at init
================  =======  ==============================================  ==================
exposure          1        EV in (-8, 8) stops                              EV = 0
white_balance     3        per-channel gain in (1/4, 4)                     gains = 1
ccm               9        M = I + D, each entry of D in (-2, 2)             M = I
desaturation      1        strength in [0, 1]                               0
saturation        1        chroma factor in (1/4, 4)                        1
tone_curve        16       black level in (-0.5, 0.5), 15 rises in          y = x
                           (1/225, 1) -> monotone curve
gamma             1        exponent in (0.1, 10)                            1
contrast          1        factor in (1/4, 4) around the mean luminance     1
sharpen           10       strength in (-1, 4), 3x3 blur = softmax(9 logits)  strength 0
denoise           2        strength in [0, 1], edge scale in (0.005, 0.5)    strength 0
================  =======  ==============================================  ==================

Clipping: a stage does not clip its output (its op is defined on any real input, see
:mod:`diffisp.ops`), so what one stage pushes out of [0, 1] a later one can bring back, and
gradients reach it. A chain clips once, at its end, with :func:`clip_output`. The one exception
is exposure, which saturates at white like a sensor (see :class:`Exposure` for why).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from diffisp import ops
from diffisp.errors import ConfigError
from diffisp.isp import params

Values = dict[str, jax.Array]


class Stage(nnx.Module):
    """Base class: raw parameters (``<name>_raw`` attributes) -> bounded values -> op.

    Subclasses declare ``raw_shapes`` and implement ``constrain`` and ``process``; the base class
    creates the ``nnx.Param`` attributes at their identity value (zeros unless
    ``identity_raw`` says otherwise).
    """

    name: ClassVar[str]
    raw_shapes: ClassVar[dict[str, tuple[int, ...]]]

    def __init__(self) -> None:
        for key, value in self.identity_raw().items():
            setattr(self, f"{key}_raw", nnx.Param(jnp.asarray(value, dtype=jnp.float32)))

    @classmethod
    def identity_raw(cls) -> dict[str, np.ndarray]:
        """Raw values that make this stage the identity."""
        return {k: np.zeros(shape, np.float32) for k, shape in cls.raw_shapes.items()}

    @classmethod
    def num_params(cls) -> int:
        return sum(math.prod(shape) for shape in cls.raw_shapes.values())

    @staticmethod
    def constrain(raw: Mapping[str, jax.Array]) -> Values:
        """Map raw values (shared, or with a leading batch axis) to valid parameters."""
        raise NotImplementedError

    @staticmethod
    def process(images: jax.Array, values: Mapping[str, jax.Array]) -> jax.Array:
        """Apply the op with already-constrained parameters. ``images``: ``(N, H, W, 3)``."""
        raise NotImplementedError

    def raw(self) -> Values:
        return {key: getattr(self, f"{key}_raw")[...] for key in self.raw_shapes}

    def values(self) -> Values:
        """The current, constrained parameters (what the stage actually applies)."""
        return self.constrain(self.raw())

    def __call__(self, images: jax.Array, raw: Mapping[str, jax.Array] | None = None) -> jax.Array:
        """Process ``(N, H, W, 3)`` images with the stage's own or the given raw parameters."""
        return self.process(images, self.constrain(self.raw() if raw is None else raw))

    # Per-image parameters arrive as one flat vector per image (from a predictor network).
    @classmethod
    def unflatten_raw(cls, flat: jax.Array) -> Values:
        """Split ``(N, num_params)`` into this stage's raw values, each ``(N, *shape)``."""
        out, start = {}, 0
        for key, shape in cls.raw_shapes.items():
            size = math.prod(shape)
            out[key] = flat[:, start : start + size].reshape(flat.shape[:1] + shape)
            start += size
        return out

    @classmethod
    def flat_identity_raw(cls) -> np.ndarray:
        return np.concatenate([v.ravel() for v in cls.identity_raw().values()])


def clip_output(images: jax.Array) -> jax.Array:
    """The one clip of a stage chain, applied to its final output: ``(N, H, W, 3)`` -> [0, 1].

    :func:`diffisp.ops.clip_unit`: values as ``jnp.clip``, and the full gradient for every pixel
    in the closed range [0, 1], exact 0s and 1s included (``jnp.clip`` gives those half).
    """
    return ops.clip_unit(images)


def saturate(images: jax.Array) -> jax.Array:
    """Clip values above 1 (highlights saturate); gradients pass as if nothing were clipped.

    A clip has zero gradient above white, so an image pushed there by a learned gain would tell
    the gain nothing, and a gain that overexposes every pixel could never come back. Passing the
    gradient straight through tells it which way to go. Values below 1 are left alone.
    """
    return images + jax.lax.stop_gradient(jnp.minimum(images, 1.0) - images)


class Exposure(Stage):
    """Digital gain ``2**EV``, EV in (-8, 8) stops; saturates at white (the one stage that clips).

    Why this stage clips when the others do not: the chain's output clip gives zero gradient to
    pixels above 1, so if exposure left them there, an image overexposed to all-white would send
    no gradient back at all and the gain could never recover. Saturating here, with a
    straight-through gradient (:func:`saturate`), puts such pixels at exactly 1, where the output
    clip passes their gradient, and on to the gain.
    """

    name = "exposure"
    raw_shapes: ClassVar = {"ev": ()}

    @staticmethod
    def constrain(raw):
        return {"ev": params.symmetric_bounded(raw["ev"], 8.0)}

    @staticmethod
    def process(images, values):
        return saturate(ops.adjust_exposure(images, values["ev"]))


class WhiteBalance(Stage):
    """Per-channel gains in (1/4, 4)."""

    name = "white_balance"
    raw_shapes: ClassVar = {"gains": (3,)}

    @staticmethod
    def constrain(raw):
        return {"gains": params.log_bounded(raw["gains"], 4.0)}

    @staticmethod
    def process(images, values):
        return ops.white_balance(images, values["gains"])


class ColorCorrection(Stage):
    """3x3 colour matrix ``I + D`` with every entry of ``D`` in (-2, 2)."""

    name = "ccm"
    raw_shapes: ClassVar = {"matrix": (3, 3)}

    @staticmethod
    def constrain(raw):
        return {"matrix": jnp.eye(3) + params.symmetric_bounded(raw["matrix"], 2.0)}

    @staticmethod
    def process(images, values):
        return ops.apply_ccm(images, values["matrix"])


class Desaturation(Stage):
    """Blend with Rec. 709 luminance, strength in [0, 1] (straight-through clip)."""

    name = "desaturation"
    raw_shapes: ClassVar = {"strength": ()}

    @staticmethod
    def constrain(raw):
        return {"strength": params.clip_straight_through(raw["strength"], 0.0, 1.0)}

    @staticmethod
    def process(images, values):
        return ops.desaturate(images, values["strength"])


class Saturation(Stage):
    """Chroma factor around luminance in (1/4, 4)."""

    name = "saturation"
    raw_shapes: ClassVar = {"factor": ()}

    @staticmethod
    def constrain(raw):
        return {"factor": params.log_bounded(raw["factor"], 4.0)}

    @staticmethod
    def process(images, values):
        return ops.adjust_saturation(images, values["factor"])


class ToneCurve(Stage):
    """Monotone piecewise-linear curve through 16 knots (black level + 15 positive rises)."""

    name = "tone_curve"
    num_knots: ClassVar[int] = 16
    raw_shapes: ClassVar = {"knots": (16,)}

    @staticmethod
    def constrain(raw):
        return {"knots": params.monotone_knots(raw["knots"])}

    @staticmethod
    def process(images, values):
        return ops.tone_curve(images, values["knots"])


class Gamma(Stage):
    """Gamma exponent in (0.1, 10); < 1 brightens."""

    name = "gamma"
    raw_shapes: ClassVar = {"gamma": ()}

    @staticmethod
    def constrain(raw):
        return {"gamma": params.log_bounded(raw["gamma"], 10.0)}

    @staticmethod
    def process(images, values):
        return ops.adjust_gamma(images, values["gamma"])


class Contrast(Stage):
    """Contrast factor in (1/4, 4) around each image's mean luminance."""

    name = "contrast"
    raw_shapes: ClassVar = {"factor": ()}

    @staticmethod
    def constrain(raw):
        return {"factor": params.log_bounded(raw["factor"], 4.0)}

    @staticmethod
    def process(images, values):
        return ops.adjust_contrast(images, values["factor"])


# The seed's initial blur: the binomial 3x3 kernel [1 2 1]^T [1 2 1] / 16, as softmax logits.
_BINOMIAL_LOGITS = np.log(np.outer([1.0, 2.0, 1.0], [1.0, 2.0, 1.0]) / 16.0).astype(np.float32)


class Sharpen(Stage):
    """Unsharp mask: strength in (-1, 4) (0 = identity), learnable 3x3 blur (softmax, sums to 1)."""

    name = "sharpen"
    raw_shapes: ClassVar = {"strength": (), "kernel": (3, 3)}

    @classmethod
    def identity_raw(cls):
        return {"strength": np.zeros((), np.float32), "kernel": _BINOMIAL_LOGITS.copy()}

    @staticmethod
    def constrain(raw):
        logits = raw["kernel"]
        flat = jax.nn.softmax(logits.reshape((*logits.shape[:-2], 9)), axis=-1)
        return {
            "strength": params.interval(raw["strength"], -1.0, 4.0, 0.0),
            "kernel": flat.reshape(logits.shape),
        }

    @staticmethod
    def process(images, values):
        return ops.sharpen(images, values["strength"], values["kernel"])


class Denoise(Stage):
    """Bilateral smoothing: strength in [0, 1] (0 = identity), edge scale in (0.005, 0.5)."""

    name = "denoise"
    raw_shapes: ClassVar = {"strength": (), "sigma_range": ()}

    @staticmethod
    def constrain(raw):
        return {
            "strength": params.clip_straight_through(raw["strength"], 0.0, 1.0),
            "sigma_range": params.interval(raw["sigma_range"], 0.005, 0.5, 0.05),
        }

    @staticmethod
    def process(images, values):
        return ops.denoise(images, values["strength"], values["sigma_range"])


STAGES: dict[str, type[Stage]] = {
    cls.name: cls
    for cls in (
        Exposure,
        WhiteBalance,
        ColorCorrection,
        Desaturation,
        Saturation,
        ToneCurve,
        Gamma,
        Contrast,
        Sharpen,
        Denoise,
    )
}

ALIASES: dict[str, str] = {
    "wb": "white_balance",
    "tone": "tone_curve",
    "tonemap": "tone_curve",
    "color_matrix": "ccm",
    "desat": "desaturation",
    "sharpening": "sharpen",
    "ev": "exposure",
}


def resolve_stage_name(name: Any) -> str:
    """Canonical stage name for ``name`` or one of its aliases.

    Raises:
      ConfigError: the name is unknown (the message lists the valid names).
    """
    if not isinstance(name, str):
        raise ConfigError(f"stage names must be strings; got {name!r}")
    key = name.strip().lower().replace("-", "_")
    key = ALIASES.get(key, key)
    if key not in STAGES:
        valid = ", ".join(STAGES)
        raise ConfigError(f"unknown ISP stage {name!r}; valid stages: {valid}")
    return key
