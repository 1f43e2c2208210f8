"""Phase 1 warm-up: the ISP learns the clean images' channel statistics; the model is untouched."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers import toy_dataset

from diffisp.errors import ConfigError
from diffisp.training.config import TrainConfig
from diffisp.training.data import prepare_data
from diffisp.training.loop import train
from diffisp.training.state import TrainState
from diffisp.training.warmup import (
    StatisticsMatching,
    batch_statistics,
    clean_statistics,
    image_statistics,
    warm_up_isp,
)

CFG = TrainConfig.of(
    num_train=64,
    num_test=32,
    image_size=16,
    batch_size=16,
    epochs_clean=1,
    epochs_isp=1,
    epochs_joint=0,
    isp=("exposure", "gamma"),
    isp_warmup_epochs=3,
    lr_isp=5e-2,
)


@pytest.fixture(scope="module")
def data():
    return prepare_data(toy_dataset(num_train=64, num_test=32, size=16), CFG)


def test_batch_statistics_known_values():
    images = jnp.stack([jnp.zeros((4, 4, 3)), jnp.ones((4, 4, 3))])
    np.testing.assert_allclose(batch_statistics(images), [0.5] * 3 + [0.5] * 3, atol=1e-6)
    task = StatisticsMatching((0.5,) * 6)
    loss, sums = task.loss(None, images, None)
    assert float(loss) == pytest.approx(0.0, abs=1e-10) and "loss" in sums


def test_per_image_statistics_see_what_the_batch_hides():
    # A black and a white image: the batch matches (0.5, 0.5), but neither image is mid-grey.
    images = jnp.stack([jnp.zeros((4, 4, 3)), jnp.ones((4, 4, 3))])
    expected = [[0.0] * 6, [1.0] * 3 + [0.0] * 3]
    np.testing.assert_allclose(image_statistics(images), expected, atol=1e-4)  # std floor
    batch = StatisticsMatching((0.5,) * 6)
    per_image = StatisticsMatching((0.5,) * 3 + (0.0,) * 3, per_image=True)
    assert float(batch.loss(None, images, None)[0]) == pytest.approx(0.0, abs=1e-10)
    # Each image is 0.5 off in each of 3 channel means: 3 * 0.25 per image.
    assert float(per_image.loss(None, images, None)[0]) == pytest.approx(0.75, rel=1e-6)


def test_warm_up_brings_the_isp_output_to_the_clean_statistics(data):
    state = TrainState.create(CFG, data.num_classes)
    model_before = jax.tree.map(np.asarray, nnx.state(state.model))
    target = np.asarray(clean_statistics(data))

    def distance():
        return float(
            np.sum((np.asarray(batch_statistics(state.isp(data.train.captured))) - target) ** 2)
        )

    before = distance()
    warm_up_isp(state, data)
    after = distance()
    assert after < 0.3 * before, (before, after)
    # Exposure went up: the dark images were brought towards the clean brightness.
    assert float(state.isp.values()["exposure"]["ev"]) > 0.5
    model_after = jax.tree.map(np.asarray, nnx.state(state.model))
    jax.tree.map(np.testing.assert_array_equal, model_before, model_after)


def test_train_runs_the_warm_up_before_phase_1_only_when_asked(data):
    with_warmup = train(TrainState.create(CFG, data.num_classes), data)
    without = train(TrainState.create(CFG.replace(isp_warmup_epochs=0), data.num_classes), data)
    ev_with = float(with_warmup.isp.values()["exposure"]["ev"])
    ev_without = float(without.isp.values()["exposure"]["ev"])
    assert ev_with != pytest.approx(ev_without)
    assert [r.phase for r in with_warmup.history] == [0, 1]  # no extra history records


def test_bad_warmup_config():
    with pytest.raises(ConfigError, match="isp_warmup_epochs"):
        CFG.replace(isp_warmup_epochs=-1)


def test_statistics_have_finite_gradients_on_flat_images():
    import jax
    import jax.numpy as jnp

    from diffisp.training.warmup import batch_statistics, image_statistics

    flat = jnp.concatenate([jnp.zeros((1, 4, 4, 3)), jnp.ones((1, 4, 4, 3))])
    for statistics in (image_statistics, batch_statistics):
        grad = jax.grad(lambda x, f=statistics: jnp.sum(f(x)))(flat)
        assert bool(jnp.isfinite(grad).all()), statistics.__name__
    np_std = image_statistics(jnp.linspace(0, 1, 48).reshape(1, 4, 4, 3))[0, 3:]
    assert jnp.allclose(np_std, jnp.std(jnp.linspace(0, 1, 48).reshape(4, 4, 3), axis=(0, 1)))


def test_adaptive_warm_up_starts_from_per_image_auto_exposure():
    # Mixed captures (brightness 0.02-1): after the warm-up each image's predicted EV follows
    # its own light, about one stop more per halving (the closed-form start, then refined).
    cfg = CFG.replace(adaptive=True, isp=("white_balance", "exposure", "gamma"), conditions="mixed")
    data = prepare_data(toy_dataset(num_train=64, num_test=32, size=16), cfg)
    state = TrainState.create(cfg, data.num_classes)
    warm_up_isp(state, data)
    decisions = state.isp.decisions(data.train.captured)
    ev = np.asarray(decisions["values"]["exposure"]["ev"])
    stops = np.log2(np.asarray(data.train.captured).mean(axis=(1, 2, 3)) + 1e-3)
    slope = np.polyfit(stops, ev, 1)[0]
    assert -1.3 < slope < -0.6, slope
    assert np.corrcoef(stops, ev)[0, 1] < -0.9


def test_warm_up_starts_an_adaptive_chain_behind_the_raw_front_from_auto_exposure():
    # --input raw --isp adaptive: the adaptive ISP sits inside a RawISP. The warm-up used to
    # test isinstance(state.isp, AdaptiveISP) and so skipped its auto-exposure start there.
    cfg = CFG.replace(
        adaptive=True, input="raw", isp=("white_balance", "exposure"), isp_warmup_epochs=0
    )
    data = prepare_data(toy_dataset(num_train=64, num_test=32, size=16), cfg)
    state = TrainState.create(cfg, data.num_classes)
    chain = state.isp.back
    before = np.array(chain.predictor.stats_head.kernel[...])
    warm_up_isp(state, data)  # no epochs: only the closed-form start
    after = np.array(chain.predictor.stats_head.kernel[...])
    assert not np.allclose(before, after)  # the linear pathway was set
    ev = np.asarray(state.isp.decisions(data.train.captured)["values"]["exposure"]["ev"])
    assert ev.mean() > 1.0  # dark RAW captures get brightened per image from the start
