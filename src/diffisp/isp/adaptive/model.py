"""The adaptive ISP: per-image parameters and per-image, cost-aware stage gates."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from diffisp.errors import ConfigError
from diffisp.isp.adaptive.costs import normalise_costs
from diffisp.isp.adaptive.hard import run_hard
from diffisp.isp.adaptive.predictor import (
    MID_GREY,
    ParameterPredictor,
    per_image_values,
)
from diffisp.isp.chain import FULL_PRESET, parse_stage_list, run_chain
from diffisp.isp.stages import STAGES
from diffisp.util.checks import check_images, is_concrete

# Initial gate logit: sigmoid(3) = 0.95, so stages start ON (see AdaptiveISP's docstring).
GATE_INIT = 3.0


def sample_gates(
    logits: jax.Array, key: jax.Array, temperature: float | jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Straight-through binary Concrete (Gumbel-sigmoid) gates.

    ``hard = [logits + L > 0]`` with logistic noise ``L``, so ``P(hard = 1) = sigmoid(logits)``
    exactly (the probability the cost penalty uses). The forward value is ``hard``, exactly 0 or
    1; the backward pass uses the relaxed sample ``soft = sigmoid((logits + L) / temperature)``.

    Args:
      logits: ``(N, S)`` gate logits.
      key: PRNG key for the noise.
      temperature: relaxation temperature > 0 (only the gradient depends on it).

    Returns:
      ``(gates, hard)``: ``gates`` ``(N, S)`` float, equal to ``hard`` in value, differentiable;
      ``hard`` ``(N, S)`` bool.
    """
    noisy = logits + jax.random.logistic(key, logits.shape, logits.dtype)
    soft = jax.nn.sigmoid(noisy / temperature)
    hard = noisy > 0
    # soft - stop_gradient(soft) is exactly 0.0 in the forward pass (x - x), so gates are
    # exactly 0 or 1 and a skipped stage contributes nothing; (hard + soft) - soft would not be.
    gates = hard.astype(logits.dtype) + (soft - jax.lax.stop_gradient(soft))
    return gates, hard


def expected_cost(probs: jax.Array, costs: jax.Array) -> jax.Array:
    """Mean over images of ``sum_s probs[n, s] * costs[s]``: the expected share of the chain run."""
    return jnp.mean(probs @ costs)


def _check_positive(name: str, value: Any, *, allow_zero: bool) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name} must be a number; got {value!r}") from exc
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{name} must be finite and {bound}; got {value}")
    return value


class AdaptiveISP(nnx.Module):
    """An ISP whose parameters and active stages are chosen per image by a small CNN.

    Args:
      stages: stage names, a comma list or a preset (default: AdaptiveISP's ten modules).
      gates: learn which stages to run per image; ``False`` runs every stage (per-image
        parameters only) and the penalty is 0.
      cost_weight: lambda >= 0 of the cost penalty.
      temperature: Gumbel-sigmoid temperature > 0 of the training-time gates.
      costs: cost per stage name (any positive unit); ``None`` uses the measured default table.
      gate_init: initial gate logit of every stage.
      rngs: initialisation of the predictor's convolutions and hidden layer.

    Gates, and why these: in training each stage is blended as ``x + g (stage(x) - x)`` with a
    straight-through Gumbel-sigmoid gate ``g`` (:func:`sample_gates`). The forward value of ``g``
    is a hard 0/1 sample drawn with probability ``p = sigmoid(logit)``, so training runs exactly
    the discrete chains that inference runs (no half-applied stages the model could learn to
    rely on and inference could not reproduce), and the penalty ``sum_s p_s cost_s`` is the
    exact expected cost of the sampled chain. The backward pass gives the gate the gradient
    ``<dL/d out, stage(x) - x>`` (times the relaxed sample's slope): how much this stage's
    current edit helps the task on this image. Both branches are computed in training, so this
    signal exists whether the sample was on or off.

    Initial state: parameters are the identity and gates start ON with logit 3 (p = 0.95), so
    the output is exactly the input. An identity stage gives its gate no task gradient at all
    (``stage(x) - x = 0``); the gate becomes informed only as the stage's parameters learn
    something, and parameters learn only on images where the gate is ON. Starting OFF would
    deadlock (no parameter gradient -> identity stage -> no gate gradient; only the penalty
    would act); starting at p = 0.5 would sit on the inference threshold and halve the
    parameter gradient. At 0.95 the sigmoid still has slope (0.045), so the penalty and the
    task can move the gate; the 5 % of images that skip a stage are a mild stage dropout that
    teaches later stages to cope without it; and a stage that learns nothing useful keeps a zero
    task gradient and is switched off by the penalty alone.

    Inference (``__call__``, ``hard=True``): gate = logit > 0, deterministic, per image.

    Implements :class:`diffisp.isp.chain.LearnedISP`.
    """

    per_image = True

    def __init__(
        self,
        stages: str | Sequence[str] = FULL_PRESET,
        *,
        gates: bool = True,
        cost_weight: float = 0.0,
        temperature: float = 1.0,
        costs: Mapping[str, float] | None = None,
        gate_init: float = GATE_INIT,
        thumb_size: int = 16,
        widths: Sequence[int] = (16, 32, 32),
        hidden: int = 64,
        rngs: nnx.Rngs,
    ) -> None:
        self.stage_names = parse_stage_list(stages)
        self.gates = bool(gates)
        self.cost_weight = _check_positive("cost_weight", cost_weight, allow_zero=True)
        self.temperature = _check_positive("temperature", temperature, allow_zero=False)
        gate_init = float(gate_init)
        if not math.isfinite(gate_init):
            raise ConfigError(f"gate_init must be finite; got {gate_init}")
        if not isinstance(thumb_size, int) or thumb_size < 2:
            raise ConfigError(f"thumb_size must be an integer >= 2; got {thumb_size!r}")
        self.stage_costs = normalise_costs(self.stage_names, costs)  # sums to 1
        # Offsets of each stage's slice in the predictor's flat raw vector (static).
        sizes = [STAGES[name].num_params() for name in self.stage_names]
        bounds = np.cumsum([0, *sizes])
        self.raw_slices = tuple((int(a), int(b)) for a, b in itertools.pairwise(bounds))
        identity = np.concatenate([STAGES[name].flat_identity_raw() for name in self.stage_names])
        num_gates = len(self.stage_names) if self.gates else 0
        self.predictor = ParameterPredictor(
            identity,
            np.full(num_gates, gate_init, np.float32),
            thumb_size=thumb_size,
            widths=widths,
            hidden=hidden,
            rngs=rngs,
        )

    # -- pieces ------------------------------------------------------------------------------

    def predict(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Raw parameters ``(N, P)`` and gate logits ``(N, S)`` (``+inf`` when gates are off)."""
        raw, logits = self.predictor(images)
        if not self.gates:
            logits = jnp.full((images.shape[0], len(self.stage_names)), jnp.inf, raw.dtype)
        return raw, logits

    def stage_values(self, raw: jax.Array) -> list[dict[str, jax.Array]]:
        """Constrained per-image parameters of each stage, from the flat raw ``(N, P)``."""
        return per_image_values(self.stage_names, self.raw_slices, raw)

    # -- the interface for training and evaluation ------------------------------------------

    def forward_train(
        self, images: jax.Array, key: jax.Array, *, temperature: float | jax.Array | None = None
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Training forward pass with sampled, straight-through gates.

        Args:
          images: ``(N, H, W, 3)`` in [0, 1].
          key: PRNG key for the gate noise (a fresh one every step).
          temperature: overrides the constructor's temperature (may be a traced scalar, for an
            annealing schedule inside a jitted step).

        Returns:
          ``(processed (N, H, W, 3) in [0, 1], aux)`` with ``aux``:
          ``"penalty"`` scalar ``cost_weight * expected_cost`` (add it to the task loss),
          ``"expected_cost"`` scalar ``mean_n sum_s p_ns cost_s`` (normalised, in [0, 1]),
          ``"gate_probs"`` ``(N, S)`` on-probabilities, ``"active"`` ``(N, S)`` bool, the hard
          gates used, ``"gate_logits"`` ``(N, S)``.
        """
        images = check_images(images)
        raw, logits = self.predict(images)
        n, num_stages = images.shape[0], len(self.stage_names)
        if not self.gates:
            ones = jnp.ones((n, num_stages), images.dtype)
            zero = jnp.zeros((), images.dtype)
            out = run_chain(images, self.stage_names, self.stage_values(raw))
            aux = {"penalty": zero, "expected_cost": zero, "gate_probs": ones}
            return out, aux | {"active": ones.astype(bool), "gate_logits": logits}
        tau = self.temperature if temperature is None else temperature
        if is_concrete(tau):
            _check_positive("temperature", np.asarray(tau), allow_zero=False)
        gates, hard = sample_gates(logits, key, tau)
        probs = jax.nn.sigmoid(logits)
        cost = expected_cost(probs, jnp.asarray(self.stage_costs, probs.dtype))
        out = run_chain(images, self.stage_names, self.stage_values(raw), gates=gates)
        aux = {
            "penalty": self.cost_weight * cost,
            "expected_cost": cost,
            "gate_probs": probs,
            "active": hard,
            "gate_logits": logits,
        }
        return out, aux

    def __call__(self, images: jax.Array) -> jax.Array:
        """Deterministic inference: per-image parameters, stage s runs where its logit > 0.

        ``(N, H, W, 3)`` in [0, 1] -> same shape, in [0, 1]. Jittable; every stage is still
        computed (a select cannot skip work): :func:`diffisp.isp.adaptive.run_hard` really skips.
        """
        images = check_images(images)
        raw, logits = self.predict(images)
        gates = logits > 0 if self.gates else None
        return run_chain(images, self.stage_names, self.stage_values(raw), gates=gates)

    def decisions(self, images: jax.Array) -> dict[str, Any]:
        """What the ISP decides for each image, for figures and reports.

        Returns ``{"stage_names": (S,) names, "active": (N, S) bool, "gate_probs": (N, S),
        "values": {stage: {param: (N, ...) constrained values}}}``.
        """
        images = check_images(images)
        raw, logits = self.predict(images)
        values = dict(zip(self.stage_names, self.stage_values(raw), strict=True))
        return {
            "stage_names": self.stage_names,
            "active": logits > 0,
            "gate_probs": jax.nn.sigmoid(logits),
            "values": values,
        }

    def parameter_summary(self, images: jax.Array) -> dict[str, Any]:
        """Per stage, the share of ``images`` it runs on and each parameter's spread over them.

        Returns ``{stage: {"active_rate": float, param: {"mean": list, "std": list}}}``; mean and
        std are over all ``images``, whether or not the stage runs on them.
        """
        decisions = self.decisions(images)
        active = np.asarray(decisions["active"], dtype=bool)
        out = {}
        for s, (stage, values) in enumerate(decisions["values"].items()):
            out[stage] = {"active_rate": float(active[:, s].mean())}
            for name, v in values.items():
                v = np.asarray(v)
                out[stage][name] = {"mean": v.mean(axis=0).tolist(), "std": v.std(axis=0).tolist()}
        return out

    def start_from_auto_exposure(self, target_level: float) -> None:
        """Set the predictor's linear pathway to classical auto-exposure and grey-world white
        balance, read from each image's own channel means.

        The exposure stage gets ``EV = log2(target_level / mean luminance)`` (the green mean
        when white balance runs first) and the white balance gains ``mean_G / mean_c``, both
        exactly linear in the stop features of
        :func:`~diffisp.isp.adaptive.predictor.log_exposure_features`. The bounded maps then
        saturate smoothly: the gain of a capture 4-5 stops under ``target_level`` falls short
        by about half a stop, and learning makes up the rest. Every other parameter and every
        gate is unchanged, and stages other than ``exposure`` and ``white_balance`` stay the
        identity. The phase-1 warm-up starts from here (:mod:`diffisp.training.warmup`): the
        network learns corrections to a good per-image exposure instead of finding the exposure
        from scratch (measured: from scratch it stayed weakly correlated with the brightness).

        Args:
          target_level: mean luminance in (0, 1) an image should have after exposure (the
            clean training images' average, for instance).

        Raises:
          ConfigError: ``target_level`` not in (0, 1).
        """
        level = _check_positive("target_level", target_level, allow_zero=False)
        if level >= 1.0:
            raise ConfigError(f"target_level must be in (0, 1); got {level}")
        num_raw = self.predictor.num_raw
        weights = np.array(self.predictor.stats_head.kernel[...][:, :num_raw], np.float32)
        offsets = np.asarray(self.predictor.global_raw[...], np.float32).copy()
        slices = dict(zip(self.stage_names, self.raw_slices, strict=True))
        if "exposure" in slices:
            start = slices["exposure"][0]
            weights[:, start] = 0.0
            # Stop features are log2(mean / mid-grey), (R, G, B, luminance). After grey-world
            # gains every channel mean is the green one, so an exposure that follows the white
            # balance levels the green mean; one before it, the luminance.
            follows_wb = "white_balance" in slices and slices["white_balance"][0] < start
            weights[1 if follows_wb else 3, start] = -1.0
            offsets[start] = math.log2(level / MID_GREY)
        if "white_balance" in slices:
            start = slices["white_balance"][0]
            weights[:, start : start + 3] = 0.0
            for channel in range(3):  # raw gains are natural logs: ln g_c = ln2 (f_G - f_c)
                weights[1, start + channel] += math.log(2.0)
                weights[channel, start + channel] -= math.log(2.0)
            offsets[start : start + 3] = 0.0
        self.predictor.set_linear_pathway(weights, offsets)

    def fastest_inference(self) -> Callable[[jax.Array], jax.Array]:
        """:func:`~diffisp.isp.adaptive.run_hard`: each image runs only its active stages."""
        return lambda images: run_hard(self, images)[0]

    def num_params(self) -> int:
        """Trainable scalars (all of them in the predictor)."""
        return sum(int(np.size(p)) for p in jax.tree.leaves(nnx.state(self, nnx.Param)))
