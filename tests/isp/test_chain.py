"""The one stage chain: every former copy of the stage loop now goes through it, unchanged.

Each test keeps a verbatim copy of the loop a caller had before the chain was shared (the git
history has the originals) and checks that the caller's output is still exactly that, and that
it equals ``run_chain`` / ``chain_steps`` called directly.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers import randomize

from diffisp.errors import ConfigError
from diffisp.experiments.usage import isp_usage, parameter_summary
from diffisp.isp.adaptive import AdaptiveISP, run_hard
from diffisp.isp.adaptive.costs import measure_stage_costs
from diffisp.isp.chain import FULL_PRESET, ISP, LearnedISP, chain_steps, run_chain
from diffisp.isp.stages import STAGES

# Without denoise: its 25-tap filter takes seconds to compile on CPU (covered in test_stages).
LIGHT = tuple(s for s in FULL_PRESET if s != "denoise")


def dark_batch(n: int = 6, size: int = 8, seed: int = 0) -> jax.Array:
    rng = np.random.default_rng(seed)
    scale = np.geomspace(0.05, 0.5, n)[:, None, None, None]
    return jnp.asarray(rng.uniform(0, 1, (n, size, size, 3)) * scale, jnp.float32)


def mixed_gate_isp(stages=LIGHT, *, gates: bool = True) -> AdaptiveISP:
    """An adaptive ISP with random per-image parameters and gates that differ between images."""
    isp = AdaptiveISP(stages, gates=gates, rngs=nnx.Rngs(0))
    randomize(isp.predictor.head, seed=3, scale=0.3)
    return isp


# --- copies of the loops as they were before the shared chain --------------------------------
# Each ends with the chain's one clip (issue 11, step 5: stages no longer clip, the chain's
# output does), which the shared chain added after these loops were copied.


def _clip(x):
    return jnp.clip(x, 0.0, 1.0)


def old_global_call(isp: ISP, images):
    for stage in isp.stages:
        images = jax.lax.optimization_barrier(stage(images))
    return _clip(images)


def old_adaptive_chain(isp: AdaptiveISP, images, raw, gates):
    x = images
    for s, (name, values) in enumerate(zip(isp.stage_names, isp.stage_values(raw), strict=True)):
        y = STAGES[name].process(x, values)
        if gates is None:
            x = y
        elif gates.dtype == jnp.bool_:
            x = jnp.where(gates[:, s, None, None, None], y, x)
        else:
            x = x + gates[:, s, None, None, None] * (y - x)
    return _clip(x)


def old_hard_group(images, raw, index, chain):
    x, raw = images[index], raw[index]
    for name, start, stop in chain:
        cls = STAGES[name]
        x = cls.process(x, cls.constrain(cls.unflatten_raw(raw[:, start:stop])))
    return _clip(x)


def old_figure_steps(isp, dark):
    """The decisions figure's per-image loop: the image after each active stage, per image."""
    decisions = isp.decisions(dark)
    names = list(decisions["stage_names"])
    active = np.asarray(decisions["active"], dtype=bool)
    panels = {}
    for r in range(len(dark)):
        x = dark[r : r + 1]
        for s, name in enumerate(names):
            if active[r, s]:
                per_image = {k: v[r : r + 1] for k, v in decisions["values"][name].items()}
                x = np.asarray(STAGES[name].process(x, per_image))
                panels[r, s] = x[0] if s < len(names) - 1 else np.clip(x[0], 0.0, 1.0)
        panels[r, "output"] = np.clip(x[0], 0.0, 1.0)
    return panels


# --- each former caller now equals the chain ------------------------------------------------


def test_global_isp_is_run_chain_with_a_barrier_and_equals_the_old_loop():
    isp = randomize(ISP(LIGHT), seed=1, scale=0.3)
    x = dark_batch()
    out = isp(x)
    values = [stage.values() for stage in isp.stages]
    np.testing.assert_array_equal(out, run_chain(x, isp.stage_names, values, barrier=True))
    np.testing.assert_array_equal(out, old_global_call(isp, x))
    # The barrier only changes how XLA fuses, never the values.
    np.testing.assert_allclose(out, run_chain(x, isp.stage_names, values), atol=1e-6)
    assert float(jnp.abs(out - x).max()) > 0.01  # a real, non-identity chain


def test_adaptive_inference_is_the_chain_with_bool_gates_and_equals_the_old_loop():
    isp = mixed_gate_isp()
    x = dark_batch()
    raw, logits = isp.predict(x)
    gates = logits > 0
    assert 0 < int(gates.sum()) < gates.size  # some stages off for some images
    out = isp(x)
    np.testing.assert_array_equal(out, old_adaptive_chain(isp, x, raw, gates))
    np.testing.assert_array_equal(
        out, run_chain(x, isp.stage_names, isp.stage_values(raw), gates=gates)
    )


@pytest.mark.parametrize("gates", [True, False])
def test_adaptive_training_pass_equals_the_old_loop(gates):
    isp = mixed_gate_isp(gates=gates)
    x, key = dark_batch(), jax.random.key(2)
    out, aux = isp.forward_train(x, key)
    raw, _ = isp.predict(x)
    if gates:
        # The float gates the old loop blended with are the sampled ones (exactly 0 or 1).
        float_gates = aux["active"].astype(x.dtype)
        expected = old_adaptive_chain(isp, x, raw, float_gates)
        np.testing.assert_array_equal(out, expected)
        np.testing.assert_array_equal(
            out, run_chain(x, isp.stage_names, isp.stage_values(raw), gates=float_gates)
        )
    else:
        np.testing.assert_array_equal(out, old_adaptive_chain(isp, x, raw, None))


def test_hard_inference_groups_equal_the_old_group_loop_and_bool_gate_inference():
    isp = mixed_gate_isp(("exposure", "ccm", "sharpen", "tone_curve", "gamma"))
    x = dark_batch(8)
    out, timings = run_hard(isp, x)
    assert len(timings["groups"]) > 1  # really several gate patterns
    np.testing.assert_allclose(out, isp(x), atol=1e-5)
    # Each group's chain is the old per-group loop, to the bit.
    raw, logits = isp.predict(x)
    active = np.asarray(logits > 0)
    from diffisp.isp.adaptive.hard import _run_active_stages

    for pattern in np.unique(active, axis=0):
        index = jnp.asarray(np.flatnonzero((active == pattern).all(axis=1)), jnp.int32)
        chain = tuple(
            (name, a, b)
            for name, (a, b), on in zip(isp.stage_names, isp.raw_slices, pattern, strict=True)
            if on
        )
        if chain:
            np.testing.assert_array_equal(
                _run_active_stages(x, raw, index, chain),
                jax.jit(old_hard_group, static_argnames="chain")(x, raw, index, chain),
            )


def test_figure_intermediates_are_the_chain_steps_and_equal_the_old_per_image_loop(
    tmp_path, saved_figures
):
    from diffisp.report import figures

    isp = mixed_gate_isp(("exposure", "white_balance", "tone_curve", "gamma", "saturation"))
    dark = np.asarray(dark_batch(4))
    decisions = isp.decisions(dark)
    names = decisions["stage_names"]
    values = [decisions["values"][name] for name in names]
    steps = chain_steps(jnp.asarray(dark), names, values, gates=decisions["active"])
    figures.adaptive_decisions_figure(tmp_path / "d.png", isp, dark, [0, 1, 2, 3], "abcd")
    (fig,) = saved_figures
    axes = np.asarray(fig.axes).reshape(len(dark), len(names) + 2)
    old = old_figure_steps(isp, dark)
    active = np.asarray(decisions["active"])
    assert 0 < active.sum() < active.size
    for r in range(len(dark)):
        gain = figures.VIEW_GAIN  # images before the exposure stage ran are shown x4, as the input
        for s in range(len(names)):
            shown = axes[r, s + 1].images
            assert bool(shown) == bool(active[r, s])  # a skipped stage shows no image
            if names[s] == "exposure" and active[r, s]:
                gain = 1.0
            if active[r, s]:
                want = np.clip(steps[s][r] * gain, 0, 1)
                # The figure runs the chain compiled, these eager: equal up to float rounding.
                np.testing.assert_allclose(shown[0].get_array(), want, atol=1e-6)
                np.testing.assert_allclose(steps[s][r], old[r, s], atol=1e-6)
        final = axes[r, -1].images[0].get_array()
        np.testing.assert_allclose(final, np.clip(steps[-1][r], 0, 1), atol=1e-6)
        np.testing.assert_allclose(steps[-1][r], old[r, "output"], atol=1e-6)


def test_stage_costs_time_a_one_stage_chain():
    costs = measure_stage_costs(("exposure", "gamma"), image_size=4, batch=2, repeats=1)
    assert set(costs) == {"exposure", "gamma"} and all(v > 0 for v in costs.values())


# --- the chain itself ------------------------------------------------------------------------


def test_chain_steps_end_at_run_chain_and_an_empty_chain_is_the_identity():
    isp = randomize(ISP(("exposure", "gamma", "contrast")), seed=2, scale=0.5)
    x = dark_batch()
    values = [stage.values() for stage in isp.stages]
    steps = chain_steps(x, isp.stage_names, values)
    assert len(steps) == 3
    np.testing.assert_array_equal(steps[0], STAGES["exposure"].process(x, values[0]))
    np.testing.assert_array_equal(steps[-1], run_chain(x, isp.stage_names, values))
    assert run_chain(x, (), []) is x


def test_all_on_gates_equal_no_gates_and_all_off_gates_return_the_input():
    isp = randomize(ISP(("exposure", "gamma")), seed=2, scale=0.5)
    x = dark_batch()
    values = [stage.values() for stage in isp.stages]
    plain = run_chain(x, isp.stage_names, values)
    for dtype in (jnp.bool_, jnp.float32):  # inference (select) and training (blend) gates
        on, off = jnp.ones((6, 2), dtype), jnp.zeros((6, 2), dtype)
        gated_on = run_chain(x, isp.stage_names, values, gates=on)
        np.testing.assert_allclose(gated_on, plain, atol=1e-7)
        np.testing.assert_array_equal(run_chain(x, isp.stage_names, values, gates=off), x)


@pytest.mark.parametrize(
    ("names", "num_values", "gates_shape", "message"),
    [
        (("exposure", "blur"), 2, None, "unknown stage"),
        (("exposure", "gamma"), 1, None, "needs 2 value dicts"),
        (("exposure", "gamma"), 2, (6, 3), "gates must be"),
        (("exposure", "gamma"), 2, (5, 2), "gates must be"),
    ],
)
def test_bad_chain_input_is_a_clear_config_error(names, num_values, gates_shape, message):
    values = [{"ev": jnp.zeros(())}, {"gamma": jnp.ones(())}][:num_values]
    gates = None if gates_shape is None else jnp.ones(gates_shape, bool)
    with pytest.raises(ConfigError, match=message):
        run_chain(dark_batch(), names, values, gates=gates)


# --- one interface ---------------------------------------------------------------------------


@pytest.mark.parametrize("make", [lambda: ISP(("exposure", "gamma")), mixed_gate_isp])
def test_both_isps_offer_the_whole_interface(make):
    isp: LearnedISP = make()
    x = dark_batch()
    for member in LearnedISP.__annotations__:
        assert hasattr(isp, member)
    for method in ("forward_train", "decisions", "parameter_summary", "fastest_inference"):
        assert callable(getattr(isp, method))
    out, aux = isp.forward_train(x, jax.random.key(0))
    assert out.shape == x.shape and aux["penalty"].shape == ()
    decisions = isp.decisions(x)
    num_stages = len(isp.stage_names)
    assert decisions["active"].shape == decisions["gate_probs"].shape == (6, num_stages)
    for name, values in decisions["values"].items():
        assert all(v.shape[0] == 6 for v in values.values()), name
    np.testing.assert_allclose(isp.fastest_inference()(x), isp(x), atol=1e-5)
    usage = isp_usage(isp, x, repeats=1)
    assert 0 < usage["active_stages"] <= num_stages and usage["isp_ms_per_image"] > 0
    assert set(parameter_summary(isp, x)) == set(isp.stage_names)
    assert isp.num_params() > 0


def test_global_isp_decisions_are_its_shared_values_on_every_image():
    isp = randomize(ISP(("exposure", "white_balance")), seed=5, scale=0.5)
    decisions = isp.decisions(dark_batch())
    assert decisions["active"].dtype == jnp.bool_ and bool(decisions["active"].all())
    for name, values in isp.values().items():
        for k, v in values.items():
            np.testing.assert_array_equal(decisions["values"][name][k], jnp.stack([v] * 6))
    summary = isp.parameter_summary()
    assert (
        summary["white_balance"]["gains"]
        == np.asarray(isp.values()["white_balance"]["gains"]).tolist()
    )
    assert isp_usage(isp, dark_batch(), repeats=1)["stage_rates"] == {
        "exposure": 1.0,
        "white_balance": 1.0,
    }


def test_run_figures_pick_the_isp_figure_by_kind_not_by_class(tmp_path, saved_figures):
    """ReportFigures.run: the global ISP's parameter plot, the adaptive ISP's decisions figure,
    and a decisions figure for each per-image variant (none for a global variant)."""
    from types import SimpleNamespace

    from diffisp.models.task import CLASSIFY
    from diffisp.report.figures import FIGURES
    from diffisp.training.state import EpochRecord

    dark = np.asarray(dark_batch(8))
    data = SimpleNamespace(test_dark=dark, test_clean=dark * 3, test_labels=np.arange(8) % 4)
    history = [EpochRecord(1, "isp", 0, 1.0, 0.5, 0.5, 1.0)]
    results = {"no_isp": {"accuracy": 0.2}, "learned_isp_phase2": {"accuracy": 0.6}}
    dataset = SimpleNamespace(class_names=("a", "b", "c", "d"))
    global_isp, adaptive_isp = ISP(("exposure", "gamma")), mixed_gate_isp(("exposure", "gamma"))
    variants = [
        SimpleNamespace(key=key, label=key, isp=isp)
        for key, isp in (("global_full", global_isp), ("adaptive_l1", adaptive_isp))
    ]
    for isp, main_figure in ((global_isp, "learned_parameters"), (adaptive_isp, None)):
        state = SimpleNamespace(history=history, isp=isp, task=CLASSIFY)
        outcome = SimpleNamespace(state=state, data=data, methods=variants)
        paths = FIGURES.run(tmp_path, outcome, dataset, results)
        stems = [p.stem for p in paths]
        expected_main = main_figure or "adaptive_decisions"
        # The adaptive variant is the trainer's own ISP in the second run: drawn once.
        expected_variants = [] if isp is adaptive_isp else ["adaptive_decisions_adaptive_l1"]
        assert stems == [
            "samples",
            "training_curves",
            expected_main,
            "before_after",
            *expected_variants,
        ]
    assert len(saved_figures) == 5 + 4
