"""Results by capture condition: per-bin accuracy, gate usage and gate patterns, known answers."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from diffisp.capture.mixed import MixedConditions, condition_bins
from diffisp.errors import DataError, InputError
from diffisp.experiments.by_condition import (
    accuracy_by_bin,
    accuracy_by_condition,
    correct_per_image,
    distinct_gate_patterns,
    gate_patterns,
    gate_usage_by_bin,
    method_correct,
)
from diffisp.experiments.protocol import Method
from diffisp.isp.adaptive import AdaptiveISP
from diffisp.training.data import RunData


def _run_data(clean, dark, labels, conditions=None) -> RunData:
    """Only the test set matters here: the training source is never read."""
    return RunData(None, clean, dark, labels, 3, MixedConditions(), test_conditions=conditions)


def test_accuracy_by_bin_known_answers_in_display_order():
    correct = np.array([1, 1, 0, 0, 1, 0, 1, 1], bool)
    bins = {
        "darkness": ["bright", "dark", "dark", "very dark", "bright", "dark", "very dark", "dim"],
        "cast": ["tungsten"] * 4 + ["daylight"] * 4,
        "custom": ["b", "a", "b", "a", "b", "a", "b", "a"],
    }
    out = accuracy_by_bin(correct, bins)
    assert list(out["darkness"]) == ["very dark", "dark", "dim", "bright"]
    assert out["darkness"]["very dark"] == {"accuracy": 0.5, "num_samples": 2}
    assert out["darkness"]["dark"] == {"accuracy": pytest.approx(1 / 3), "num_samples": 3}
    assert out["darkness"]["dim"] == {"accuracy": 1.0, "num_samples": 1}
    assert out["darkness"]["bright"] == {"accuracy": 1.0, "num_samples": 2}
    assert list(out["cast"]) == ["daylight", "tungsten"]  # table order: daylight first
    assert out["cast"]["tungsten"]["accuracy"] == 0.5
    assert out["cast"]["daylight"]["accuracy"] == 0.75
    assert list(out["custom"]) == ["a", "b"]  # unknown kinds: sorted labels
    assert out["custom"]["a"]["accuracy"] == 0.5 and out["custom"]["b"]["accuracy"] == 0.75
    # Every image is counted once per kind.
    assert all(sum(v["num_samples"] for v in kind.values()) == 8 for kind in out.values())


def test_accuracy_by_bin_rejects_mismatched_inputs():
    with pytest.raises(InputError, match="one label per image"):
        accuracy_by_bin(np.ones(4, bool), {"darkness": ["dark"] * 3})
    with pytest.raises(InputError, match=r"\(N,\) vector"):
        accuracy_by_bin(np.ones((4, 2), bool), {"darkness": ["dark"] * 4})
    with pytest.raises(DataError, match="no condition bins"):
        accuracy_by_bin(np.ones(4, bool), {})


class ChannelClassifier(nnx.Module):
    """Class = the brightest channel on average (0 red, 1 green, 2 blue): known predictions."""

    def __call__(self, images: jnp.ndarray) -> jnp.ndarray:
        return images.mean(axis=(1, 2))


def _coloured(colours: list[tuple[float, float, float]]) -> jnp.ndarray:
    return jnp.broadcast_to(
        jnp.asarray(colours, jnp.float32)[:, None, None, :], (len(colours), 8, 8, 3)
    )


def test_per_image_correctness_through_the_evaluation_path_and_by_bin():
    images = _coloured([(0.9, 0.1, 0.1), (0.1, 0.9, 0.1), (0.1, 0.1, 0.9), (0.9, 0.1, 0.1)])
    labels = np.array([0, 1, 1, 2])  # right, right, wrong (blue), wrong (red)
    correct = correct_per_image(ChannelClassifier(), images, labels)
    np.testing.assert_array_equal(correct, [True, True, False, False])
    # A transform that swaps red and blue turns the first wrong answer's colour around.
    swap = lambda x: x[..., ::-1]  # noqa: E731
    swapped = correct_per_image(ChannelClassifier(), images, labels, transform=swap)
    np.testing.assert_array_equal(swapped, [False, True, False, True])
    method = Method("m", "M", "test", ChannelClassifier(), clean_input=True)
    np.testing.assert_array_equal(method_correct(method, images * 0, images, labels), correct)
    conditions = {
        "brightness": np.array([0.03, 0.03, 0.6, 0.6]),
        "gain": np.array([16.7, 16.7, 1.0, 1.0]),
        "illuminant": np.array([0, 5, 0, 5]),
        "blur_sigma": np.zeros(4),
    }
    out = accuracy_by_bin(correct, condition_bins(conditions))
    assert out["darkness"] == {
        "very dark": {"accuracy": 1.0, "num_samples": 2},
        "bright": {"accuracy": 0.0, "num_samples": 2},
    }
    assert out["noise"]["high"]["accuracy"] == 1.0 and out["noise"]["low"]["accuracy"] == 0.0
    assert out["cast"]["daylight"]["accuracy"] == 0.5


class StubISP:
    """Known gates: "denoise" runs on images darker than 0.1 mean, "exposure" on every one."""

    stage_names = ("exposure", "denoise")

    def decisions(self, images):
        dark = np.asarray(images).mean(axis=(1, 2, 3)) < 0.1
        return {"active": np.stack([np.ones_like(dark), dark], axis=1)}


def test_gate_usage_by_bin_with_known_gates():
    images = _coloured([(0.05,) * 3, (0.05,) * 3, (0.5,) * 3, (0.05,) * 3, (0.5,) * 3])
    bins = {"darkness": ["very dark", "very dark", "bright", "dark", "dark"]}
    out = gate_usage_by_bin(StubISP(), images, bins)
    assert out == {
        "darkness": {
            "very dark": {"exposure": 1.0, "denoise": 1.0},
            "dark": {"exposure": 1.0, "denoise": 0.5},
            "bright": {"exposure": 1.0, "denoise": 0.0},
        }
    }
    assert gate_patterns(StubISP(), images) == {"exposure+denoise": 3, "exposure": 2}
    assert distinct_gate_patterns(StubISP(), images) == 2


def _dark_gated_isp() -> AdaptiveISP:
    """A real adaptive ISP whose "denoise" gate opens only on dark images.

    One hidden unit carries the predictor's log2 mean luminance / 10 feature ``f`` (leaky ReLU:
    ``0.1 f`` for f < 0); denoise's gate logit is ``-100 * 0.1 f - 5 = -log2(L) - 5``: on for a
    mean luminance below 2**-5 (about 0.03). Exposure's gate stays at +3, gamma's at -3.
    """
    isp = AdaptiveISP(("exposure", "gamma", "denoise"), rngs=nnx.Rngs(0))
    predictor = isp.predictor
    log_luma = predictor.hidden.in_features - 3  # statistics end with log luma, std, max
    hidden = jnp.zeros_like(predictor.hidden.kernel[...]).at[log_luma, 0].set(1.0)
    predictor.hidden.kernel[...] = hidden
    predictor.hidden.bias[...] = jnp.zeros_like(predictor.hidden.bias[...])
    raw = predictor.num_raw
    predictor.head.kernel[...] = predictor.head.kernel[...].at[0, raw + 2].set(-100.0)
    predictor.head.bias[...] = predictor.head.bias[...].at[raw:].set(jnp.array([3.0, -3.0, -5.0]))
    return isp


def test_gate_usage_of_a_real_adaptive_isp_differs_between_bins():
    isp = _dark_gated_isp()
    images = _coloured([(0.01,) * 3, (0.012,) * 3, (0.3,) * 3, (0.6,) * 3])
    bins = {"darkness": ["very dark", "very dark", "dim", "bright"]}
    out = gate_usage_by_bin(isp, images, bins)["darkness"]
    assert out["very dark"] == {"exposure": 1.0, "gamma": 0.0, "denoise": 1.0}
    assert out["dim"] == {"exposure": 1.0, "gamma": 0.0, "denoise": 0.0}
    assert out["bright"] == out["dim"]
    assert gate_patterns(isp, images) == {"exposure": 2, "exposure+denoise": 2}
    assert distinct_gate_patterns(isp, images) == 2


def test_gate_patterns_name_the_empty_chain():
    class Off(StubISP):
        def decisions(self, images):
            return {"active": np.zeros((len(images), 2), bool)}

    assert gate_patterns(Off(), _coloured([(0.5,) * 3] * 3)) == {"none": 3}
    with pytest.raises(InputError, match="one label per image"):
        gate_usage_by_bin(Off(), _coloured([(0.5,) * 3] * 3), {"darkness": ["dark"]})


def test_accuracy_by_condition_splits_every_method_by_the_recorded_conditions():
    clean = _coloured([(0.9, 0.1, 0.1), (0.1, 0.9, 0.1), (0.1, 0.1, 0.9), (0.1, 0.9, 0.1)])
    labels = jnp.array([0, 1, 2, 0])  # the last image is wrong for any colour-faithful method
    # Tungsten-like dark captures: red dominates every dark image.
    dark = clean * jnp.array([0.5, 0.05, 0.01])
    conditions = {
        "brightness": np.array([0.03, 0.03, 0.6, 0.6]),
        "gain": np.array([16.7, 16.7, 1.0, 1.0]),
        "illuminant": np.array([5, 5, 5, 0]),
        "blur_sigma": np.zeros(4),
    }
    data = _run_data(clean, dark, labels, conditions)
    methods = [
        Method("no_isp", "No ISP", "dark in", ChannelClassifier()),
        Method("oracle", "Oracle", "clean in", ChannelClassifier(), clean_input=True),
    ]
    out = accuracy_by_condition(methods, data)
    # Dark: every prediction red -> right on images 0 and 3 (one per darkness bin).
    assert out["no_isp"]["darkness"]["very dark"]["accuracy"] == 0.5
    assert out["no_isp"]["darkness"]["bright"]["accuracy"] == 0.5
    assert out["oracle"]["darkness"]["very dark"]["accuracy"] == 1.0
    assert out["oracle"]["darkness"]["bright"]["accuracy"] == 0.5
    assert out["oracle"]["cast"] == {
        "daylight": {"accuracy": 0.0, "num_samples": 1},
        "tungsten": {"accuracy": 1.0, "num_samples": 3},
    }
    with pytest.raises(DataError, match="conditions='mixed'"):
        accuracy_by_condition(methods, _run_data(clean, dark, labels))


def _report(acc_dark: float, acc_bright: float, patterns: int) -> dict:
    return {
        "accuracy": {
            "adaptive_l0": {
                "darkness": {
                    "dark": {"accuracy": acc_dark, "num_samples": 10},
                    "bright": {"accuracy": acc_bright, "num_samples": 5},
                }
            }
        },
        "gate_usage": {
            "adaptive_l0": {
                "darkness": {
                    "dark": {"denoise": 1.0, "gamma": 1.0},
                    "bright": {"denoise": 0.0, "gamma": 1.0},
                }
            }
        },
        "gate_patterns": {"adaptive_l0": {f"p{i}": 1 for i in range(patterns)}},
    }


def test_seeds_aggregate_per_bin_and_the_report_shows_them():
    from diffisp.experiments.by_condition import aggregate_condition_reports
    from diffisp.report.condition_sections import conditions_section

    out = aggregate_condition_reports([_report(0.5, 0.9, 2), _report(0.7, 0.9, 3)])
    dark = out["accuracy"]["adaptive_l0"]["darkness"]["dark"]
    assert dark["accuracy"] == [0.5, 0.7] and dark["mean"] == pytest.approx(0.6)
    assert dark["std"] == pytest.approx(np.std([0.5, 0.7], ddof=1))
    assert out["accuracy"]["adaptive_l0"]["darkness"]["bright"]["std"] == 0.0
    assert out["gate_usage"]["adaptive_l0"]["darkness"]["bright"]["denoise"] == 0.0
    assert out["distinct_gate_patterns"] == {"adaptive_l0": [2, 3]}
    html = str(conditions_section(out, {"adaptive_l0": "Adaptive ISP, λ=0"}))
    assert "Accuracy by darkness" in html and "60.0" in html and "dark (n=10)" in html
    assert "share of images each stage runs on" in html and "[2, 3]" in html
    assert conditions_section(None, {}) == ""


def test_frozen_model_rows_get_their_own_tables():
    from diffisp.experiments.by_condition import aggregate_condition_reports
    from diffisp.report.condition_sections import conditions_section

    report = _report(0.5, 0.9, 2)
    report["accuracy"]["adaptive_l0_frozen"] = _report(0.25, 0.75, 1)["accuracy"]["adaptive_l0"]
    out = aggregate_condition_reports([report])
    html = str(conditions_section(out, {"adaptive_l0_frozen": "Adaptive, frozen CNN"}))
    tuned, frozen = html.split("frozen clean-trained CNN (phase 1)")
    assert "ISP and CNN fine-tuned (phase 2)" in tuned and "Adaptive, frozen CNN" not in tuned
    assert "Adaptive, frozen CNN" in frozen and "25.0" in frozen


def test_decision_figures_pick_images_across_the_brightness_range():
    from types import SimpleNamespace

    from diffisp.report.figures import _by_condition

    brightness = np.array([0.5, 0.02, 0.9, 0.1, 0.3, 0.05, 1.0, 0.2])
    picked = _by_condition(SimpleNamespace(test_conditions={"brightness": brightness}), 4)
    assert brightness[picked].tolist() == sorted(brightness[picked].tolist())
    assert brightness[picked][0] == 0.02 and brightness[picked][-1] == 1.0
    assert _by_condition(SimpleNamespace(test_conditions=None), 4) is None


@pytest.mark.slow
def test_a_mixed_conditions_study_records_and_reports_results_by_condition(tmp_path):
    import json

    from diffisp.experiments.study import run_study
    from diffisp.report.build import build_report
    from diffisp.report.figures import FIGURES
    from diffisp.training.config import TrainConfig

    cfg = TrainConfig.of(
        data="builtin",
        num_train=64,
        num_test=48,
        image_size=16,
        batch_size=16,
        epochs_clean=1,
        epochs_isp=1,
        epochs_joint=1,
        conditions="mixed",
        variants=("adaptive:0.5",),
    )
    out = tmp_path / "study"
    study = run_study(
        cfg,
        [0],
        out,
        progress=False,
        log=lambda m: None,
        brightness_values=(0.2,),
        noise_values=(0.05,),
        figures=FIGURES,
    )
    seed = json.loads((out / "seed0" / "metrics.json").read_text())["by_condition"]
    by_bin = seed["accuracy"]["adaptive_l0.5"]["darkness"]
    assert sum(cell["num_samples"] for cell in by_bin.values()) == 48
    assert set(seed["gate_usage"]) == {
        "learned_isp_phase1",
        "learned_isp_phase2",
        "adaptive_l0.5",
        "adaptive_l0.5_frozen",
    }
    assert seed["accuracy"]["adaptive_l0.5_frozen"]["darkness"]
    assert study["by_condition"]["distinct_gate_patterns"]["adaptive_l0.5"][0] >= 1
    assert (out / "seed0" / "figures" / "adaptive_decisions_adaptive_l0.5.png").exists()
    assert "Results by capture condition" in build_report(out).read_text()
