"""datarax integration: the datarax paths compute exactly what the plain ISP computes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from datarax.typing import Batch
from flax import nnx
from helpers import randomize

from diffisp.errors import DataError
from diffisp.isp.chain import ISP
from diffisp.isp.operators import StageOperator, apply_composite, isp_composite, isp_pipeline
from diffisp.models.classifier import SmallCNN


def active_isp(stages: str, seed: int = 0) -> ISP:
    """An ISP away from the identity, with every strength switched on."""
    isp = randomize(ISP(stages), seed=seed, scale=0.2)
    for stage in isp.stages:
        if hasattr(stage, "strength_raw"):
            stage.strength_raw[...] = jnp.float32(0.3)
    return isp


@pytest.mark.parametrize("preset", ["seed", "full"])
def test_composite_equals_plain_isp(preset, images):
    isp = active_isp(preset)
    composite = isp_composite(isp)
    plain = isp(images)
    # The datarax route proper: a Batch through CompositeOperatorModule (per-record apply).
    via_batch = composite(Batch.from_parts({"image": images}, {})).data["image"]
    np.testing.assert_allclose(via_batch, plain, atol=1e-5)
    np.testing.assert_allclose(apply_composite(composite, images), plain, atol=1e-5)


def test_single_operator_record_path_equals_batched_path(images):
    stage = active_isp("seed").stages[-1]
    op = StageOperator(stage)
    record, _, _ = op.apply({"image": images[0]}, {}, None)
    np.testing.assert_allclose(record["image"], stage(images[:1])[0], atol=1e-6)


def test_pipeline_runs_the_isp_over_a_data_set(images):
    isp = active_isp("seed")
    labels = np.arange(images.shape[0])
    pipeline = isp_pipeline(isp, {"image": np.asarray(images), "label": labels}, batch_size=3)
    batches = list(pipeline)
    assert [b["image"].shape[0] for b in batches] == [3, 3, 2]
    got = np.concatenate([np.asarray(b["image"]) for b in batches])
    np.testing.assert_allclose(got, isp(images), atol=1e-5)
    np.testing.assert_array_equal(np.concatenate([b["label"] for b in batches]), labels)


def test_pipeline_rejects_empty_or_ragged_data(images):
    with pytest.raises(DataError, match="empty"):
        isp_pipeline(ISP(), {"image": np.zeros((0, 4, 4, 3), np.float32)})
    with pytest.raises(DataError, match="same length"):
        isp_pipeline(ISP(), {"image": np.asarray(images), "label": np.arange(3)})


@pytest.mark.parametrize("preset", ["seed", "full"])
def test_classification_gradients_reach_every_isp_parameter_through_datarax(preset):
    images = jax.random.uniform(jax.random.key(1), (16, 16, 16, 3))
    labels = jnp.arange(16) % 10
    isp = active_isp(preset, seed=1)
    composite = isp_composite(isp)
    model = SmallCNN(rngs=nnx.Rngs(0))
    model.eval()

    def loss_fn(composite):
        logits = model(apply_composite(composite, images))
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    grads = nnx.grad(loss_fn)(composite)
    leaves = jax.tree_util.tree_leaves_with_path(grads)
    assert sum(int(g.size) for _, g in leaves) == isp.num_params()
    for path, g in leaves:
        g = np.asarray(g)
        assert np.isfinite(g).all(), path
        assert np.all(np.abs(g) > 0), f"zero gradient at {jax.tree_util.keystr(path)}"


def test_optimising_the_composite_updates_the_shared_isp(images):
    isp = ISP("seed")
    composite = isp_composite(isp)
    opt = nnx.Optimizer(composite, optax.adam(1e-2), wrt=nnx.Param)
    target = jnp.clip(images * 1.5, 0, 1)

    def loss_fn(c):
        return jnp.mean((apply_composite(c, images * 0.5) - target) ** 2)

    before = float(loss_fn(composite))
    for _ in range(5):
        grads = nnx.grad(loss_fn)(composite)
        opt.update(composite, grads)
    assert float(loss_fn(composite)) < before
    # Same nnx.Param objects: the plain ISP sees the trained values.
    np.testing.assert_allclose(
        isp(images * 0.5), apply_composite(composite, images * 0.5), atol=1e-6
    )
