"""The reference CNN: parameter count, shapes, batch-norm modes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from diffisp.models.classifier import SmallCNN, conv_im2col, count_params, recalibrate_batch_norm


def test_reference_parameter_count():
    model = SmallCNN(rngs=nnx.Rngs(0))
    assert count_params(model) == 391_946
    bn = sum(int(n.scale.size + n.bias.size) for n in model.norms)
    assert bn == 960


def test_logits_shape_for_any_image_size():
    model = SmallCNN(num_classes=7, rngs=nnx.Rngs(0))
    model.eval()
    assert model(jnp.zeros((3, 32, 32, 3))).shape == (3, 7)
    assert model(jnp.zeros((2, 48, 40, 3))).shape == (2, 7)


def test_train_mode_uses_batch_statistics_and_updates_running_averages():
    model = SmallCNN(rngs=nnx.Rngs(0))
    x = jax.random.uniform(jax.random.key(0), (8, 32, 32, 3))
    before = np.asarray(model.norms[0].mean[...]).copy()
    model.train()
    train_logits = model(x)
    assert not np.allclose(model.norms[0].mean[...], before)
    model.eval()
    frozen = np.asarray(model.norms[0].mean[...]).copy()
    eval_logits = model(x)
    np.testing.assert_array_equal(model.norms[0].mean[...], frozen)
    assert not np.allclose(train_logits, eval_logits)
    # Eval mode is per-image: a sample's logits do not depend on the rest of the batch.
    np.testing.assert_allclose(model(x[:1]), eval_logits[:1], atol=1e-5)


def test_batch_norm_recalibration_gives_exact_population_statistics():
    model = SmallCNN(rngs=nnx.Rngs(0))
    x = jax.random.uniform(jax.random.key(1), (64, 16, 16, 3))
    recalibrate_batch_norm(model, x)
    first = model.convs[0](x)
    np.testing.assert_allclose(model.norms[0].mean[...], first.mean(axis=(0, 1, 2)), atol=1e-5)
    np.testing.assert_allclose(model.norms[0].var[...], first.var(axis=(0, 1, 2)), atol=1e-5)
    # Deeper layers see the previous layers normalised with the new statistics.
    model.eval()
    h = nnx.relu(model.norms[0](first))
    second = model.convs[1](h)
    np.testing.assert_allclose(model.norms[1].mean[...], second.mean(axis=(0, 1, 2)), atol=1e-4)
    # The caller's modes and momentum are untouched.
    assert model.norms[0].momentum == 0.99


def test_im2col_convolution_equals_lax_convolution():
    model = SmallCNN(rngs=nnx.Rngs(0))
    x = jax.random.uniform(jax.random.key(2), (3, 17, 32, 3))  # odd size: asymmetric SAME padding
    for conv in model.convs:
        want = conv(x)
        got = conv_im2col(x, conv.kernel[...], conv.bias[...], conv.strides)
        np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-5)
        x = jax.nn.relu(want)
