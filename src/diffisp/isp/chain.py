"""An ISP: an ordered chain of learnable stages, built from stage names or a preset."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from diffisp.errors import ConfigError
from diffisp.isp.stages import STAGES, Stage, resolve_stage_name
from diffisp.util.checks import check_images

# The reference system's five stages: 9 + 1 + 16 + 1 + 10 = 37 learnable parameters.
SEED_PRESET: tuple[str, ...] = ("ccm", "desaturation", "tone_curve", "gamma", "sharpen")
# AdaptiveISP's module set, in a camera-like order: exposure and white balance on linear data,
# colour, noise and detail before the tone and gamma curves.
FULL_PRESET: tuple[str, ...] = (
    "exposure",
    "white_balance",
    "ccm",
    "denoise",
    "sharpen",
    "tone_curve",
    "gamma",
    "contrast",
    "saturation",
    "desaturation",
)
PRESETS: dict[str, tuple[str, ...]] = {"seed": SEED_PRESET, "full": FULL_PRESET}


def parse_stage_list(spec: str | Sequence[str]) -> tuple[str, ...]:
    """Stage names from a preset name (``"seed"``, ``"full"``), a comma list or a sequence.

    Raises:
      ConfigError: empty list, unknown or repeated stage name.
    """
    if isinstance(spec, str):
        spec = PRESETS.get(spec.strip().lower()) or [s for s in spec.split(",") if s.strip()]
    names = tuple(resolve_stage_name(n) for n in spec)
    if not names:
        raise ConfigError("an ISP needs at least one stage")
    repeated = sorted(n for n, count in Counter(names).items() if count > 1)  # linear, not O(n^2)
    if repeated:
        raise ConfigError(f"ISP stages may appear once each; repeated: {', '.join(repeated)}")
    return names


class ISP(nnx.Module):
    """A chain of learnable stages; the identity transform at initialisation.

    Example:
      >>> isp = ISP(SEED_PRESET)
      >>> isp.num_params()
      37
      >>> out = isp(images)  # (N, H, W, 3) in [0, 1] -> same shape, in [0, 1]
    """

    def __init__(self, stages: str | Sequence[str] = SEED_PRESET) -> None:
        self.stage_names = parse_stage_list(stages)
        self.stages = nnx.List([STAGES[name]() for name in self.stage_names])

    def __call__(self, images: jax.Array) -> jax.Array:
        """Run every stage in order. ``images``: ``(N, H, W, 3)`` float in [0, 1]."""
        images = check_images(images)
        for stage in self.stages:
            # One fused pass per stage: without the barrier XLA fuses stages into each other and
            # recomputes expensive producers (tone curve, power) once per consumer read.
            images = jax.lax.optimization_barrier(stage(images))
        return images

    def forward_train(self, images: jax.Array, key: jax.Array) -> tuple[jax.Array, dict]:
        """Training forward pass (the adaptive ISP's interface): no randomness, no penalty."""
        del key
        return self(images), {"penalty": jnp.zeros((), images.dtype)}

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


def fixed_gamma(images: jax.Array, gamma: float = 0.5) -> jax.Array:
    """The classic fixed ISP: one global gamma (0.5 brightens dark images)."""
    from diffisp.ops import adjust_gamma

    return adjust_gamma(images, jnp.float32(gamma))
