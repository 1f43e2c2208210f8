"""The comparison's answers: best learned ISP against the best method without one, per group."""

from __future__ import annotations

import numpy as np
import pytest

from diffisp.experiments.protocol import compare_methods

# Each row's group and whether a learned ISP is in front (as evaluate_methods writes them).
KINDS = {
    "no_isp": ("frozen", False),
    "fixed_gamma": ("frozen", False),
    "learned_isp_phase1": ("frozen", True),
    "adaptive_frozen": ("frozen", True),
    "dark_cnn": ("retrained", False),
    "learned_isp_phase2": ("retrained", True),
    "clean_oracle": ("reference", False),
}


def _rows(**accuracy):
    return {
        k: {"accuracy": v, "group": KINDS[k][0], "learned": KINDS[k][1]}
        for k, v in accuracy.items()
    }


def test_each_question_takes_the_best_of_each_side_with_a_paired_interval():
    rows = _rows(
        no_isp=0.2,
        fixed_gamma=0.3,
        learned_isp_phase1=0.25,
        adaptive_frozen=0.4,
        dark_cnn=0.5,
        learned_isp_phase2=0.45,
        clean_oracle=0.9,
    )
    rng = np.random.default_rng(0)
    scores = {k: (rng.random(200) < r["accuracy"]).astype(float) for k, r in rows.items()}
    answers = compare_methods(rows, scores, "accuracy")
    frozen, retrained = answers["frozen"], answers["retrained"]
    assert (frozen["a"], frozen["b"]) == ("adaptive_frozen", "fixed_gamma")
    assert frozen["difference"] == pytest.approx(0.1)
    assert frozen["low"] < frozen["high"] and frozen["num_samples"] == 200
    # A learned ISP that loses is reported as losing, not left out.
    assert (retrained["a"], retrained["b"]) == ("learned_isp_phase2", "dark_cnn")
    assert retrained["difference"] == pytest.approx(-0.05)


def test_without_per_image_scores_there_is_no_interval_and_a_missing_side_no_answer():
    rows = _rows(no_isp=0.2, fixed_gamma=0.3, learned_isp_phase1=0.35, adaptive_frozen=0.1)
    answers = compare_methods(rows, {}, "map50")
    assert set(answers) == set()  # the metric is not in the rows: nothing to rank
    answers = compare_methods(rows, {}, "accuracy")
    assert set(answers) == {"frozen"} and "low" not in answers["frozen"]
    assert answers["frozen"]["a"] == "learned_isp_phase1"


def test_map_has_a_paired_bootstrap_interval_recomputed_on_the_same_draws():
    from diffisp.experiments.protocol import bootstrap_difference
    from diffisp.models.task import DETECT

    rng = np.random.default_rng(0)
    n = 24
    corner = rng.uniform(0, 40, (n, 1, 2))
    truth = {"boxes": np.concatenate([corner, corner + 12], -1), "labels": np.zeros((n, 1), int)}
    found = {
        "boxes": truth["boxes"],
        "scores": np.ones((n, 1)),
        "classes": np.zeros((n, 1), int),
        "valid": np.ones((n, 1), bool),
    }
    # b finds the object in half the images only: a - b is about +0.5 mAP@0.5.
    half = {**found, "valid": (np.arange(n) % 2 == 0)[:, None]}
    answer = bootstrap_difference(DETECT, found, half, truth, "map50", resamples=30)
    assert answer["num_samples"] == n and answer["resamples"] == 30
    assert 0.2 < answer["low"] < 0.5 < answer["high"] < 0.8
    same = bootstrap_difference(DETECT, found, found, truth, "map50", resamples=5)
    assert same["low"] == same["high"] == 0.0
