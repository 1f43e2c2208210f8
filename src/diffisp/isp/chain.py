"""The one stage chain, and the interface every ISP offers (global :class:`ISP`, adaptive ISP).

:func:`run_chain` is the only loop in diffisp that runs ISP stages in order. The global ISP (one
parameter set for every image), the adaptive ISP (per-image parameters and gates, in training and
inference), the adaptive ISP's skipping inference, the stage cost measurement and the figures all
call it, so a stage is applied the same way everywhere.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from diffisp.errors import ConfigError
from diffisp.isp.stages import STAGES, Stage, clip_output, resolve_stage_name
from diffisp.util.checks import check_images

# The reference system's five stages: 9 + 1 + 16 + 1 + 10 = 37 learnable parameters.
SEED_PRESET: tuple[str, ...] = ("ccm", "desaturation", "tone_curve", "gamma", "sharpen")
# AdaptiveISP's module set, in a camera-like order: white balance and exposure on linear data,
# colour, noise and detail before the tone and gamma curves. White balance comes before exposure
# because exposure saturates at white: brightening a colour-cast capture first clips its
# dominant channel (red under tungsten) before the gains can bring it down. Measured on mixed
# captures (seed 0): per-image auto-exposure + grey world feeding the global ISP gave 70.0 %
# in this order and 66.2 % with exposure first.
FULL_PRESET: tuple[str, ...] = (
    "white_balance",
    "exposure",
    "ccm",
    "denoise",
    "sharpen",
    "tone_curve",
    "gamma",
    "contrast",
    "saturation",
    "desaturation",
)
# The RAW front (diffisp.isp.raw): white balance on the mosaic, demosaicing, the camera colour
# matrix. Its stages take a RawCapture and come first; the chain's stages follow.
RAW_FRONT: tuple[str, ...] = ("raw_wb", "demosaic", "raw_ccm")
PRESETS: dict[str, tuple[str, ...]] = {
    "seed": SEED_PRESET,
    "full": FULL_PRESET,
    "raw-seed": RAW_FRONT + SEED_PRESET,
    "raw-full": RAW_FRONT + FULL_PRESET,
}

StageValues = Mapping[str, jax.Array]


def parse_stage_list(spec: str | Sequence[str]) -> tuple[str, ...]:
    """Stage names from a preset name (``"seed"``, ``"full"``, ``"raw-seed"``, ``"raw-full"``),
    a comma list or a sequence. RAW front stages (:data:`RAW_FRONT`) come first, in their own
    order, and include ``demosaic``.

    Raises:
      ConfigError: empty list, unknown or repeated stage name, a misplaced RAW front stage.
    """
    if isinstance(spec, str):
        spec = PRESETS.get(spec.strip().lower()) or [s for s in spec.split(",") if s.strip()]
    names = tuple(_resolve_any_stage(n) for n in spec)
    if not names:
        raise ConfigError("an ISP needs at least one stage")
    repeated = sorted(n for n, count in Counter(names).items() if count > 1)  # linear, not O(n^2)
    if repeated:
        raise ConfigError(f"ISP stages may appear once each; repeated: {', '.join(repeated)}")
    front, _ = split_raw_front(names)
    if front:
        if "demosaic" not in front:
            raise ConfigError(f"a RAW front ({', '.join(front)}) needs the 'demosaic' stage")
        if names[: len(front)] != tuple(n for n in RAW_FRONT if n in front):
            raise ConfigError(
                f"RAW stages must come first, in the order {', '.join(RAW_FRONT)}; got "
                f"{', '.join(names)}"
            )
    return names


def split_raw_front(names: Sequence[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(RAW front stages, chain stages)`` of a parsed stage list."""
    front = tuple(n for n in names if n in RAW_FRONT)
    return front, tuple(n for n in names if n not in RAW_FRONT)


def _resolve_any_stage(name: object) -> str:
    if isinstance(name, str) and name.strip().lower().replace("-", "_") in RAW_FRONT:
        return name.strip().lower().replace("-", "_")
    return resolve_stage_name(name)


# ------------------------------------------------------------------------------ the chain


def chain_steps(
    images: jax.Array,
    stage_names: Sequence[str],
    stage_values: Sequence[StageValues],
    *,
    gates: jax.Array | None = None,
    barrier: bool = False,
    clip: bool = True,
) -> list[jax.Array]:
    """Run stages in order and return the image after each of them.

    Args:
      images: ``(N, H, W, 3)`` in [0, 1].
      stage_names: ``S`` canonical stage names, in the order they run.
      stage_values: one dict of *constrained* values per stage (``Stage.constrain``'s output),
        shared by all images (the global ISP) or with a leading ``N`` axis (per image).
      gates: ``None`` (every stage runs on every image), an ``(N, S)`` bool array (inference:
        image ``n`` takes stage ``s``'s output where ``gates[n, s]``, else keeps its input) or an
        ``(N, S)`` float array (training: the blend ``x + g (stage(x) - x)``, so a
        straight-through gate gets a gradient).
      barrier: put ``jax.lax.optimization_barrier`` after every stage. The global ISP needs it
        for speed: without it XLA fuses stages into each other and recomputes expensive
        producers (tone curve, power) once per consumer read. Values are the same either way.
      clip: clip the output (the chain's one clip). ``False`` only for a chain run in pieces
        (tiled ``apply``), where just the last piece clips.

    Returns:
      ``S`` arrays ``(N, H, W, 3)``: the image after stage 1, ..., after stage ``S`` (the output).
      Stages do not clip (ops chain, as in dm-pix); the output - and only the output - is
      clipped to [0, 1] by :func:`~diffisp.isp.stages.clip_output`, with the full gradient
      inside the closed range.
      Under ``jit`` the intermediates nobody reads cost nothing.

    Raises:
      ConfigError: unknown stage, or stage values or gates that do not match the stages.
    """
    unknown = [name for name in stage_names if name not in STAGES]
    if unknown:
        raise ConfigError(f"unknown stage(s) {unknown} in a chain; known: {', '.join(STAGES)}")
    if len(stage_values) != len(stage_names):
        raise ConfigError(
            f"a chain of {len(stage_names)} stages needs {len(stage_names)} value dicts; "
            f"got {len(stage_values)}"
        )
    if gates is not None and gates.shape != (images.shape[0], len(stage_names)):
        raise ConfigError(
            f"gates must be (images, stages) = {(images.shape[0], len(stage_names))}; "
            f"got {gates.shape}"
        )
    steps, x = [], images
    for s, (name, values) in enumerate(zip(stage_names, stage_values, strict=True)):
        y = STAGES[name].process(x, values)
        if gates is None:
            x = y
        elif gates.dtype == jnp.bool_:  # inference: select, no blend arithmetic at all
            x = jnp.where(gates[:, s, None, None, None], y, x)
        else:
            x = x + gates[:, s, None, None, None] * (y - x)
        if barrier:
            x = jax.lax.optimization_barrier(x)
        steps.append(x)
    if steps and clip:  # the chain's one clip
        steps[-1] = clip_output(steps[-1])
    return steps


def run_chain(
    images: jax.Array,
    stage_names: Sequence[str],
    stage_values: Sequence[StageValues],
    *,
    gates: jax.Array | None = None,
    barrier: bool = False,
    clip: bool = True,
) -> jax.Array:
    """The chain's output ``(N, H, W, 3)``; arguments as :func:`chain_steps` (no stage: input)."""
    steps = chain_steps(images, stage_names, stage_values, gates=gates, barrier=barrier, clip=clip)
    return steps[-1] if steps else images


# -------------------------------------------------------------------------- the interface


class LearnedISP(Protocol):
    """What every learnable ISP offers its callers (training, evaluation, reports, figures).

    Implemented by the global :class:`ISP` and by :class:`diffisp.isp.adaptive.AdaptiveISP`, so
    callers never ask which one they hold. ``per_image`` says whether parameters and gates are
    chosen per image (for the few outputs that differ in kind, e.g. which figure to draw).
    """

    stage_names: tuple[str, ...]
    per_image: bool

    def __call__(self, images: jax.Array) -> jax.Array:
        """Deterministic inference: ``(N, H, W, 3)`` in [0, 1] -> the same shape, in [0, 1]."""
        ...

    def forward_train(self, images: jax.Array, key: jax.Array) -> tuple[jax.Array, dict]:
        """Training pass: ``(processed, aux)`` with the scalar ``aux["penalty"]`` for the loss."""
        ...

    def decisions(self, images: jax.Array) -> dict[str, Any]:
        """Per image: ``{"stage_names", "active" (N, S) bool, "gate_probs" (N, S), "values"}``."""
        ...

    def parameter_summary(self, images: jax.Array) -> dict[str, Any]:
        """Learned parameters as JSON-ready lists and numbers, for reports."""
        ...

    def fastest_inference(self) -> Callable[[jax.Array], jax.Array]:
        """A compiled function that processes images as fast as this ISP can (for timing)."""
        ...

    def num_params(self) -> int:
        """Trainable scalars."""
        ...

    def start_from_auto_exposure(self, target_level: float) -> None:
        """Start per-image exposure and white balance from classical auto-exposure and grey
        world to ``target_level`` mean luminance (the phase-1 warm-up's start); a no-op for
        an ISP without per-image parameters."""
        ...


class ISP(nnx.Module):
    """A chain of learnable stages with one parameter set for every image; identity at init.

    Implements :class:`LearnedISP`.

    Example:
      >>> isp = ISP(SEED_PRESET)
      >>> isp.num_params()
      37
      >>> out = isp(images)  # (N, H, W, 3) in [0, 1] -> same shape, in [0, 1]
    """

    per_image = False

    def __init__(self, stages: str | Sequence[str] = SEED_PRESET) -> None:
        self.stage_names = parse_stage_list(stages)
        if split_raw_front(self.stage_names)[0]:
            raise ConfigError(
                f"ISP takes RGB images; RAW stages ({', '.join(RAW_FRONT)}) belong to a RawISP "
                "(diffisp.isp.raw)"
            )
        self.stages = nnx.List([STAGES[name]() for name in self.stage_names])

    def start_from_auto_exposure(self, target_level: float) -> None:
        """Nothing to start: one parameter set for every image has no per-image exposure."""
        del target_level

    def __call__(self, images: jax.Array) -> jax.Array:
        """Run every stage in order. ``images``: ``(N, H, W, 3)`` float in [0, 1]."""
        images = check_images(images)
        values = [stage.values() for stage in self.stages]
        return run_chain(images, self.stage_names, values, barrier=True)

    def forward_train(self, images: jax.Array, key: jax.Array) -> tuple[jax.Array, dict]:
        """Training forward pass (the adaptive ISP's interface): no randomness, no penalty."""
        del key
        return self(images), {"penalty": jnp.zeros((), images.dtype)}

    def decisions(self, images: jax.Array) -> dict[str, Any]:
        """The shared values broadcast to every image, every stage active (see LearnedISP)."""
        images = check_images(images)
        n, num_stages = images.shape[0], len(self.stage_names)
        per_image = {
            name: {k: jnp.broadcast_to(v, (n, *v.shape)) for k, v in values.items()}
            for name, values in self.values().items()
        }
        return {
            "stage_names": self.stage_names,
            "active": jnp.ones((n, num_stages), bool),
            "gate_probs": jnp.ones((n, num_stages), images.dtype),
            "values": per_image,
        }

    def parameter_summary(self, images: jax.Array | None = None) -> dict[str, Any]:
        """``{stage: {param: value as nested lists}}``; ``images`` is not needed (shared values)."""
        del images
        return {
            stage: {k: np.asarray(v).tolist() for k, v in values.items()}
            for stage, values in self.values().items()
        }

    def fastest_inference(self) -> Callable[[jax.Array], jax.Array]:
        """``self(images)`` compiled, with the parameters as they are now."""
        graphdef, state = nnx.split(self)
        run = jax.jit(lambda state, images: nnx.merge(graphdef, state)(images))
        return lambda images: run(state, images)

    def num_params(self) -> int:
        return sum(stage.num_params() for stage in self.stages)

    def stage(self, name: str) -> Stage:
        """The stage called ``name`` (aliases accepted)."""
        key = resolve_stage_name(name)
        if key not in self.stage_names:
            raise ConfigError(
                f"this ISP has no {key!r} stage; it has {', '.join(self.stage_names)}"
            )
        return self.stages[self.stage_names.index(key)]

    def values(self) -> dict[str, dict[str, jax.Array]]:
        """Constrained parameters of every stage, by stage name (for reports and figures)."""
        return {
            name: stage.values() for name, stage in zip(self.stage_names, self.stages, strict=True)
        }
