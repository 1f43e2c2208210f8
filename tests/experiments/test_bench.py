"""The benchmark's reference loop must compute the same maths as diffisp (nothing timed here)."""

from __future__ import annotations

import numpy as np
from helpers import randomize

from diffisp.experiments.bench import reference_formulation, synthetic_data
from diffisp.isp.chain import ISP


def test_reference_formulation_computes_the_same_isp(images):
    isp = randomize(ISP("seed"), seed=4, scale=0.3)
    reference = reference_formulation(isp)
    assert [type(s).__name__ for s in reference.stages] != [type(s).__name__ for s in isp.stages]
    np.testing.assert_allclose(reference(images), isp(images), atol=1e-5)


def test_synthetic_data_shapes():
    data = synthetic_data(64, 16, image_size=8)
    assert data.train.captured.shape == (64, 8, 8, 3) and data.test_labels.shape == (16,)


def test_device_counts_are_powers_of_two_and_all_that_split_the_batch():
    from diffisp.experiments.bench import device_counts

    assert device_counts(1, 32) == [1]
    assert device_counts(8, 32) == [1, 2, 4, 8]
    assert device_counts(6, 32) == [1, 2, 4]  # 6 does not split 32
    assert device_counts(6, 24) == [1, 2, 4, 6]


def test_scaling_reports_one_device_as_speedup_one():
    from diffisp.experiments.bench import bench_scaling, synthetic_data
    from diffisp.training.config import TrainConfig

    data = synthetic_data(64, 16, image_size=16)
    cfg = TrainConfig.of(num_train=64, num_test=16, image_size=16, batch_size=16, bn_calibration=16)
    result = bench_scaling(data, cfg, epochs=1)
    assert list(result["phase2_images_per_s"]) == ["1"]  # this process has one CPU device
    assert result["phase2_images_per_s"]["1"] > 0
    assert result["speedup_over_1"] == {"1": 1.0}
