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


def test_the_fast_path_measures_the_model_alone_step_and_each_phase_against_it(capsys):
    from diffisp.experiments.bench import bench_fast, model_alone_fractions, print_bench
    from diffisp.training.config import TrainConfig
    from diffisp.training.state import PHASES

    data = synthetic_data(64, 16, image_size=16)
    cfg = TrainConfig.of(num_train=64, num_test=16, image_size=16, batch_size=16, bn_calibration=16)
    fast = bench_fast(data, cfg, epochs=1, phases=PHASES, flops=False)
    assert set(fast) == {"phase0", "phase1", "phase2"}  # phase 0: the model's own step
    fractions = model_alone_fractions(fast)
    assert set(fractions) == {"phase1", "phase2"}
    for phase, fraction in fractions.items():
        ratio = fast[phase]["images_per_s"] / fast["phase0"]["images_per_s"]
        assert fraction == ratio > 0

    row = {"images_per_s": 100.0, "gflops_per_s": 1.0, "compile_s": 0.5}
    result = {
        "config": {"batch_size": 16},
        "matmul_peak_gflops": 10.0,
        "reference": {"phase1": row, "phase2": row},
        "reference_with_diffisp_ops": {"phase1": row, "phase2": row},
        "fast": {"phase1": row, "phase2": row},
        "speedup": {"phase1": 1.0, "phase2": 1.0},
        "fraction_of_peak": {"phase1": 0.1, "phase2": 0.1},
        "model_alone": {"images_per_s": 125.0},
        "fraction_of_model_alone": {"phase1": 0.8, "phase2": 0.8},
        "inference": {"eval_images_per_s": 1.0, "isp_only_images_per_s": 1.0},
    }
    print_bench(result)
    assert "of the model alone (125 img/s)" in capsys.readouterr().out
