"""Every random stream of a run, derived from its one seed.

Each draw is a function of ``(seed, purpose, phase, epoch)`` only, so a run resumed from a
checkpoint continues exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import jax

# Fold-in tags that separate the random streams derived from one seed.
DARKEN_TRAIN, DARKEN_TEST, SHUFFLE, INIT = 1, 2, 3, 4


def epoch_key(seed: int, phase_index: int, epoch: int) -> jax.Array:
    """The key of one epoch's random draws."""
    key = jax.random.fold_in(jax.random.key(seed), SHUFFLE)
    return jax.random.fold_in(key, phase_index * 100_000 + epoch)


def epoch_permutation(seed: int, phase_index: int, epoch: int, n: int) -> jax.Array:
    """The order of the training images in one epoch."""
    return jax.random.permutation(epoch_key(seed, phase_index, epoch), n)
