"""Adaptive ISP: a small CNN picks, for every image, the parameters and the stages to run.

For a camera engineer. A global learned ISP (:class:`diffisp.isp.chain.ISP`) applies one set of
parameters to every frame; a night scene and a dusk scene get the same exposure, tone curve and
denoising. Here a *parameter predictor* (a CNN of 20.6 k weights, 0.27 MFLOP per 32x32 frame,
4 % of the reference classifier's, plus two linear pathways of 265 weights) looks at a 16x16
thumbnail of each frame plus its global statistics (channel means, log mean luminance, spread)
and outputs

* every stage's parameters for that frame (exposure EV, white-balance gains, CCM, denoise
  strength, tone-curve knots, ...), through the same bounded parameterisations as the global
  ISP, so every value stays in its valid range; and
* one on/off *gate* per stage: whether this frame needs, say, denoising at all.

Everything is trained end to end by gradient descent on the downstream task's loss. A gate is
a discrete decision, so in training it is *relaxed*: a straight-through binary Concrete
(Gumbel-sigmoid) sample. The forward pass uses a hard 0/1 draw with on-probability
``p = sigmoid(logit)`` (training runs the same discrete chains as inference), the backward pass
the slope of a temperature-smoothed version of the draw. A cost term,
``cost_weight * mean_images sum_stages p_s * cost_s``, with ``cost_s`` each stage's measured
run time as a share of the whole chain's, makes every stage pay for itself: a stage stays on
for an image only if it helps the task there more than it costs.

At inference, gates are deterministic (``logit > 0``). Because masking a stage out still runs it,
:func:`run_hard` groups a batch by gate pattern and runs, per group, a compiled chain of only the
active stages, so a frame that needs three stages pays for three.

Relation to prior work. AdaptiveISP (Wang et al., NeurIPS 2024) chooses a per-image *sequence*
of ISP modules with reinforcement learning, an agent rewarded by detection quality minus a
cost/latency term; here the module order is fixed (a camera order) and the per-image *subset* is
learnt by plain backpropagation through relaxed gates, with the same kind of cost term. IA-YOLO
(Liu et al., AAAI 2022) predicts the parameters of a fixed differentiable filter chain with a
small CNN (CNN-PP) on a downsampled image; :class:`ParameterPredictor` is that idea, with
exposure-invariant inputs for dark captures and an identity initialisation.

Example:
  >>> isp = AdaptiveISP("full", cost_weight=0.05, rngs=nnx.Rngs(0))
  >>> out, aux = isp.forward_train(dark, key)     # training: loss = task + aux["penalty"]
  >>> out = isp(dark)                             # inference, jittable, hard gates
  >>> out, timings = run_hard(isp, dark)          # inference that skips inactive stages
"""

from diffisp.isp.adaptive.costs import (
    DEFAULT_STAGE_COSTS_US,
    measure_predictor_cost,
    measure_stage_costs,
    normalise_costs,
)
from diffisp.isp.adaptive.hard import run_hard
from diffisp.isp.adaptive.model import GATE_INIT, AdaptiveISP, expected_cost, sample_gates
from diffisp.isp.adaptive.predictor import ParameterPredictor, image_statistics, thumbnail

__all__ = [
    "DEFAULT_STAGE_COSTS_US",
    "GATE_INIT",
    "AdaptiveISP",
    "ParameterPredictor",
    "expected_cost",
    "image_statistics",
    "measure_predictor_cost",
    "measure_stage_costs",
    "normalise_costs",
    "run_hard",
    "sample_gates",
    "thumbnail",
]
