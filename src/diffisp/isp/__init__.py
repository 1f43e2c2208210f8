"""The ISP layer: learnable stages with bounded parameters and the chains that run them.

* :mod:`~diffisp.isp.params` - bounded parameterisations (raw value -> valid range);
* :mod:`~diffisp.isp.stages` - one thin NNX module per stage around an op of :mod:`diffisp.ops`;
* :mod:`~diffisp.isp.chain` - the one stage chain (:func:`run_chain`), the :class:`LearnedISP`
  interface every ISP offers, and :class:`ISP`, a global (shared-parameter) ISP;
* :mod:`~diffisp.isp.adaptive` - the per-image ISP (predicted parameters, cost-aware gates);
* :mod:`~diffisp.isp.baselines` - classical, non-learned ISPs;
* :mod:`~diffisp.isp.operators` - datarax operator views of the stages.

May import :mod:`diffisp.capture`, :mod:`diffisp.ops`, :mod:`diffisp.util` and
:mod:`diffisp.errors`; nothing above.
"""

from diffisp.isp.chain import (
    FULL_PRESET,
    ISP,
    PRESETS,
    SEED_PRESET,
    LearnedISP,
    chain_steps,
    parse_stage_list,
    run_chain,
)
from diffisp.isp.stages import STAGES, Stage, resolve_stage_name

__all__ = [
    "FULL_PRESET",
    "ISP",
    "PRESETS",
    "SEED_PRESET",
    "STAGES",
    "LearnedISP",
    "Stage",
    "chain_steps",
    "parse_stage_list",
    "resolve_stage_name",
    "run_chain",
]
