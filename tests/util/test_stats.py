"""Summary statistics: Wilson intervals and paired differences over the same test images."""

from __future__ import annotations

import numpy as np
import pytest

from diffisp.util.stats import paired_difference, wilson_interval


def test_wilson_interval_stays_in_0_1_and_narrows_with_n():
    assert wilson_interval(0.0, 10)[0] == 0.0 and wilson_interval(1.0, 10)[1] == 1.0
    low_small, high_small = wilson_interval(0.5, 50)
    low_big, high_big = wilson_interval(0.5, 5000)
    assert low_small < low_big < 0.5 < high_big < high_small


def test_paired_interval_is_narrower_than_the_unpaired_one_when_errors_are_shared():
    rng = np.random.default_rng(0)
    hard = rng.random(400) < 0.5  # images both methods get wrong
    a = (~hard | (rng.random(400) < 0.2)).astype(float)  # a also gets a fifth of the hard ones
    b = (~hard).astype(float)
    paired = paired_difference(a, b)
    assert paired["difference"] == pytest.approx(a.mean() - b.mean())
    assert paired["low"] < paired["difference"] < paired["high"]
    assert paired["low"] > 0  # a is better, and the pairing shows it
    # Two independent Wilson intervals would overlap: the unpaired reading says "unclear".
    assert wilson_interval(a.mean(), 400)[0] < wilson_interval(b.mean(), 400)[1]
    assert paired["num_samples"] == 400


def test_identical_methods_differ_by_exactly_nothing():
    scores = np.array([1.0, 0.0, 1.0, 1.0])
    assert paired_difference(scores, scores) == {
        "difference": 0.0,
        "low": 0.0,
        "high": 0.0,
        "num_samples": 4,
    }


def test_paired_difference_is_reproducible_and_refuses_unpaired_scores():
    a, b = np.array([1, 0, 1, 1, 0.0]), np.array([0, 0, 1, 0, 1.0])
    assert paired_difference(a, b) == paired_difference(a, b)
    with pytest.raises(ValueError, match="equal 1-D shapes"):
        paired_difference(a, b[:3])
    with pytest.raises(ValueError, match="equal 1-D shapes"):
        paired_difference([], [])
