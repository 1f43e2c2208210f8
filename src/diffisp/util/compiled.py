"""Building a Flax NNX module's parameters as one compiled program."""

from __future__ import annotations

from collections.abc import Callable

from flax import nnx


def compiled_init[M: nnx.Module](build: Callable[[nnx.Rngs], M], rngs: nnx.Rngs) -> M:
    """``build(rngs)``, run as one XLA program.

    Built eagerly, every initialiser of every parameter shape is compiled on its own (a dozen
    small programs, ~2 s on a 2-core CPU for the classifier and the adaptive ISP's
    predictor, paid on every first run); under :func:`flax.nnx.jit` they are one. The
    parameters are bit-identical and ``rngs`` advances as it would eagerly. ``build`` must be
    traceable: no reading of files or of parameter values on the host.
    """
    return nnx.jit(build)(rngs)
