"""compiled_init: one compiled program, the same parameters as building eagerly."""

from __future__ import annotations

import jax
import numpy as np
from flax import nnx

from diffisp.isp.adaptive import AdaptiveISP
from diffisp.models.classifier import SmallCNN
from diffisp.util.compiled import compiled_init


def test_compiled_init_builds_the_eager_parameters_and_advances_the_rngs_alike():
    for build in (lambda rngs: SmallCNN(10, rngs=rngs), lambda rngs: AdaptiveISP(rngs=rngs)):
        eager_rngs, compiled_rngs = nnx.Rngs(7), nnx.Rngs(7)
        eager, compiled = build(eager_rngs), compiled_init(build, compiled_rngs)
        assert type(compiled) is type(eager)
        for a, b in zip(
            jax.tree.leaves(nnx.state(eager)), jax.tree.leaves(nnx.state(compiled)), strict=True
        ):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        assert int(eager_rngs.default.count[...]) == int(compiled_rngs.default.count[...])
