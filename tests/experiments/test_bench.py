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
    assert data.train_dark.shape == (64, 8, 8, 3) and data.test_labels.shape == (16,)
