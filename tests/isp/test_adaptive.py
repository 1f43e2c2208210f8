"""Adaptive ISP: identity start, per-image parameters, gates and their cost, skipping inference."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from helpers import randomize

from diffisp.errors import ConfigError
from diffisp.isp.adaptive import (
    DEFAULT_STAGE_COSTS_US,
    AdaptiveISP,
    measure_predictor_cost,
    measure_stage_costs,
    normalise_costs,
    run_hard,
    sample_gates,
)
from diffisp.isp.adaptive.hard import batch_sizes
from diffisp.isp.chain import FULL_PRESET, ISP
from diffisp.isp.stages import STAGES
from diffisp.models.classifier import SmallCNN
from diffisp.models.evaluate import accuracy

# The full chain without denoise, whose 25-tap filter alone takes seconds to compile on CPU (it is
# in the identity and timing tests; its own range and gradients are covered in test_stages).
LIGHT = tuple(s for s in FULL_PRESET if s != "denoise")


def dark_batch(n: int = 8, size: int = 16, seed: int = 0) -> jax.Array:
    """Random textures, each scaled by its own brightness in [0.04, 0.5]: dark to less dark."""
    rng = np.random.default_rng(seed)
    scale = np.geomspace(0.04, 0.5, n)[:, None, None, None]
    return jnp.asarray(rng.uniform(0, 1, (n, size, size, 3)) * scale, jnp.float32)


def set_gates(isp: AdaptiveISP, logits) -> None:
    """Force every image's gate logits (the head's gate bias, with zero gate weights)."""
    head, p = isp.predictor.head, isp.predictor.num_raw
    head.kernel[...] = head.kernel[...].at[:, p:].set(0.0)
    head.bias[...] = head.bias[...].at[p:].set(jnp.asarray(logits, jnp.float32))


# Jitted entry points: eager execution of the full chain dispatches hundreds of small ops.
call = nnx.jit(lambda isp, x: isp(x))
forward_train = nnx.jit(lambda isp, x, key: isp.forward_train(x, key))
decide = nnx.jit(lambda isp, x: {k: v for k, v in isp.decisions(x).items() if k != "stage_names"})


def train(module, loss_fn, steps: int, lr: float):
    opt = nnx.Optimizer(module, optax.adam(lr), wrt=nnx.Param)

    @nnx.jit
    def step(module, opt):
        loss, grads = nnx.value_and_grad(loss_fn)(module)
        opt.update(module, grads)
        return loss

    for _ in range(steps):
        step(module, opt)
    return float(loss_fn(module))


@pytest.mark.parametrize(("stages", "gates"), [(FULL_PRESET, True), (("exposure", "gamma"), False)])
def test_identity_at_initialisation(stages, gates):
    x = dark_batch()
    isp = AdaptiveISP(stages, gates=gates, rngs=nnx.Rngs(0))
    out, aux = forward_train(isp, x, jax.random.key(1))
    np.testing.assert_allclose(out, x, atol=1e-5)
    np.testing.assert_allclose(call(isp, x), x, atol=1e-5)
    assert aux["gate_probs"].shape == aux["active"].shape == (8, len(stages))
    assert bool(jnp.all(decide(isp, x)["active"]))  # stages start ON (documented)
    if not gates:
        assert float(aux["penalty"]) == 0.0 and bool(jnp.all(aux["active"]))


def test_shape_and_range_with_random_predictor():
    x = dark_batch(6, 12)  # 12x12: not a multiple of the 16x16 thumbnail (resize path)
    isp = randomize(AdaptiveISP(LIGHT, cost_weight=0.1, rngs=nnx.Rngs(0)), seed=3, scale=0.5)
    train_out, aux = forward_train(isp, x, jax.random.key(0))
    for out in (call(isp, x), train_out):
        assert out.shape == x.shape and out.dtype == x.dtype
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert np.isfinite(float(aux["penalty"]))


def test_adaptive_beats_the_best_global_isp_when_images_need_different_exposures():
    # Toy task: every image's mean brightness should be 0.5. One global exposure cannot do
    # that for images 3.6 stops apart; a per-image one can.
    x = dark_batch(32, 16)

    def brightness_loss(out):
        return jnp.mean((out.mean(axis=(1, 2, 3)) - 0.5) ** 2)

    stages = ("exposure",)
    global_loss = train(ISP(stages), lambda m: brightness_loss(m(x)), steps=120, lr=1e-2)
    adaptive = AdaptiveISP(stages, gates=False, rngs=nnx.Rngs(0))
    adaptive_loss = train(adaptive, lambda m: brightness_loss(m(x)), steps=120, lr=1e-2)
    assert adaptive_loss < 0.1 * global_loss
    ev = np.asarray(decide(adaptive, x)["values"]["exposure"]["ev"])
    assert ev.std() > 0.05  # parameters really differ from image to image
    assert ev[0] > ev[-1]  # the darkest image gets the most exposure


def test_gradients_are_finite_and_reach_every_predictor_parameter():
    x = dark_batch()
    target = jax.random.uniform(jax.random.key(5), x.shape)
    isp = AdaptiveISP(LIGHT, cost_weight=0.1, rngs=nnx.Rngs(0))

    def loss(m):
        out, aux = m.forward_train(x, jax.random.key(2))
        return jnp.mean((out - target) ** 2) + aux["penalty"]

    grad = nnx.jit(nnx.grad(loss))

    def grad_norms(m):
        grads = grad(m)
        leaves = jax.tree.leaves_with_path(nnx.state(grads, nnx.Param))
        for _, g in leaves:
            assert np.isfinite(np.asarray(g)).all()
        return {jax.tree_util.keystr(path): float(jnp.abs(g).sum()) for path, g in leaves}

    # At initialisation the zero-weight head is the only layer with gradients.
    norms = grad_norms(isp)
    assert all(v > 0 for k, v in norms.items() if "head" in k)
    # Once the head is non-zero, every layer of the predictor learns.
    head = isp.predictor.head
    head.kernel[...] = 0.01 * jax.random.normal(jax.random.key(3), head.kernel[...].shape)
    norms = grad_norms(isp)
    assert all(v > 0 for v in norms.values()), norms


def test_penalty_grows_with_cost_weight_and_pushes_gates_off():
    x, key = dark_batch(4, 8), jax.random.key(0)
    stages = ("exposure", "white_balance", "gamma", "sharpen")  # the gate logic is per stage
    aux = {
        w: forward_train(AdaptiveISP(stages, cost_weight=w, rngs=nnx.Rngs(0)), x, key)[1]
        for w in (1, 4)
    }
    assert float(aux[1]["penalty"]) > 0
    np.testing.assert_allclose(aux[4]["penalty"], 4 * aux[1]["penalty"], rtol=1e-6)
    # All stages on with p = sigmoid(3): the expected cost is p times the whole chain's (1).
    np.testing.assert_allclose(aux[1]["expected_cost"], jax.nn.sigmoid(3.0), rtol=1e-5)

    isp = AdaptiveISP(stages, cost_weight=10.0, rngs=nnx.Rngs(0))
    before = int(decide(isp, x)["active"].sum())
    train(isp, lambda m: m.forward_train(x, key)[1]["penalty"], steps=15, lr=0.3)
    after = int(decide(isp, x)["active"].sum())
    assert before == x.shape[0] * len(stages) and after < before // 2


def test_sampled_gates_are_exactly_binary_with_the_right_probability():
    logits = jnp.broadcast_to(jnp.asarray([-2.0, 0.0, 1.5]), (4000, 3))
    gates, hard = sample_gates(logits, jax.random.key(0), 0.5)
    np.testing.assert_array_equal(gates, hard.astype(jnp.float32))
    np.testing.assert_allclose(hard.mean(0), jax.nn.sigmoid(logits[0]), atol=0.03)
    grad = jax.grad(lambda z: jnp.sum(sample_gates(z, jax.random.key(0), 0.5)[0]))(logits)
    # Positive everywhere, up to underflow where the relaxed sample saturates.
    assert np.isfinite(grad).all() and float(grad.min()) >= 0 and float(grad.mean()) > 0.05


def test_run_hard_equals_call_with_mixed_gate_patterns():
    x = dark_batch(12)
    stages = ("exposure", "ccm", "denoise", "sharpen", "tone_curve", "gamma", "desaturation")
    isp = AdaptiveISP(stages, rngs=nnx.Rngs(0))
    randomize(isp.predictor.head, seed=4, scale=0.3)  # per-image parameters
    # Sharpen and gamma gates vary per image, denoise is off, the rest on (few patterns).
    set_gates(isp, [-1.0 if s == "denoise" else 1.0 for s in stages])
    varying = [stages.index("sharpen"), stages.index("gamma")]
    head, p = isp.predictor.head, isp.predictor.num_raw
    cols = jnp.asarray(varying) + p
    head.kernel[...] = (
        head.kernel[...].at[:, cols].set(jax.random.normal(jax.random.key(6), (64, 2)))
    )
    head.bias[...] = head.bias[...].at[cols].set(0.0)
    active = np.asarray(decide(isp, x)["active"])
    assert len(np.unique(active, axis=0)) > 1  # the batch really splits into groups
    out, timings = run_hard(isp, x)
    np.testing.assert_allclose(out, call(isp, x), atol=1e-5)
    groups = timings["groups"]
    assert sum(g["count"] for g in groups) == 12
    assert all(b & (b - 1) == 0 for g in groups for b in g["batches"])
    # Every stage off for some images: they come back untouched.
    set_gates(isp, -5.0 * np.ones(len(stages)))
    out, timings = run_hard(isp, x)
    np.testing.assert_array_equal(out, x)
    assert timings["groups"][0]["active"] == ()


def test_batch_sizes_are_powers_of_two_with_little_padding():
    assert batch_sizes(130) == [128, 2] and batch_sizes(13) == [8, 8] and batch_sizes(5) == [8]
    for count in range(1, 300):
        sizes = batch_sizes(count)
        assert all(s & (s - 1) == 0 for s in sizes) and count <= sum(sizes) < count + 8


def test_run_hard_runs_only_the_active_stages_and_their_work(monkeypatch):
    # Deterministic: the chains run_hard actually executes (a spy on the compiled chain) and the
    # compiled chain's FLOP count. Wall-clock time is only printed: on a loaded machine it is noise.
    from diffisp.isp.adaptive import hard

    x = dark_batch(64, 32)
    stages = ("exposure", "denoise", "sharpen", "gamma")
    isp = AdaptiveISP(stages, rngs=nnx.Rngs(0))
    executed = []  # (stage names, batch size) of every compiled chain run_hard calls
    real = hard._run_active_stages

    def spy(images, raw, index, chain):
        executed.append(([name for name, _, _ in chain], int(index.shape[0])))
        return real(images, raw, index, chain)

    monkeypatch.setattr(hard, "_run_active_stages", spy)

    def run(on):
        set_gates(isp, [5.0 if s in on else -5.0 for s in stages])
        executed.clear()
        run_hard(isp, x)  # the first call of a pattern compiles
        seconds = min(run_hard(isp, x)[1]["stages"] for _ in range(3))
        names, slices = isp.stage_names, isp.raw_slices
        chain = tuple((n, a, b) for n, (a, b) in zip(names, slices, strict=True) if n in on)
        raw = jnp.zeros((x.shape[0], slices[-1][1]), jnp.float32)
        compiled = real.lower(x, raw, jnp.arange(x.shape[0], dtype=jnp.int32), chain).compile()
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        return list(executed), float(cost["flops"]), seconds

    every, every_flops, every_s = run(stages)
    few, few_flops, few_s = run(("exposure", "gamma"))
    assert every == [(list(stages), 64)] * 4  # one group, one batch of 64, on each of 4 calls
    assert few == [(["exposure", "gamma"], 64)] * 4  # denoise and sharpen never run
    assert 0 < few_flops < 0.5 * every_flops
    print(f"stages: all four {every_s * 1e3:.1f} ms, exposure+gamma {few_s * 1e3:.1f} ms")


def test_decisions_report_gates_and_constrained_values():
    x = dark_batch(5)
    isp = randomize(AdaptiveISP(("exposure", "tone_curve"), rngs=nnx.Rngs(0)), seed=1, scale=0.3)
    d = isp.decisions(x)
    assert d["stage_names"] == ("exposure", "tone_curve")
    assert d["active"].shape == d["gate_probs"].shape == (5, 2) and d["active"].dtype == bool
    assert d["values"]["exposure"]["ev"].shape == (5,)
    knots = np.asarray(d["values"]["tone_curve"]["knots"])
    assert knots.shape == (5, 16) and (np.diff(knots, axis=-1) > 0).all()


def test_jitted_eval_path_works_with_evaluate_accuracy():
    x = dark_batch(8, 16)
    isp = randomize(AdaptiveISP(("exposure", "tone_curve"), rngs=nnx.Rngs(0)), seed=2, scale=0.3)
    model = SmallCNN(num_classes=4, widths=(8, 16), rngs=nnx.Rngs(0))
    labels = jnp.arange(8) % 4
    acc = accuracy(model, x, labels, isp=isp)
    model.eval()  # what accuracy does inside its compiled copy
    expected = np.mean(np.argmax(np.asarray(model(isp(x))), axis=-1) == np.asarray(labels))
    assert acc == pytest.approx(expected, abs=1e-9) and acc * 8 == round(acc * 8)


def test_stage_costs_measured_and_normalised():
    costs = measure_stage_costs(("exposure", "gamma"), image_size=8, batch=4, repeats=2)
    assert set(costs) == {"exposure", "gamma"} and all(v > 0 for v in costs.values())
    assert set(DEFAULT_STAGE_COSTS_US) == set(STAGES)
    shares = normalise_costs(FULL_PRESET)
    assert len(shares) == len(FULL_PRESET) and abs(sum(shares) - 1) < 1e-9
    isp = AdaptiveISP(("exposure", "gamma"), costs={"exposure": 1, "gamma": 3}, rngs=nnx.Rngs(0))
    assert isp.stage_costs == (0.25, 0.75)
    report = measure_predictor_cost(isp.predictor, image_size=8, batch=4, repeats=2)
    assert report["params"] == isp.num_params() and report["flops_per_image"] > 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"stages": "exposure,blur"},
        {"stages": []},
        {"cost_weight": -0.1},
        {"cost_weight": float("nan")},
        {"temperature": 0.0},
        {"temperature": -1.0},
        {"costs": {"exposure": 1.0}},  # the other stages have none
        {"stages": ("exposure",), "costs": {"exposure": -1.0}},
        {"gate_init": float("inf")},
    ],
)
def test_bad_config_is_a_config_error(kwargs):
    with pytest.raises(ConfigError):
        AdaptiveISP(**kwargs, rngs=nnx.Rngs(0))


def test_bad_training_temperature_is_a_config_error():
    isp = AdaptiveISP(("exposure",), rngs=nnx.Rngs(0))
    with pytest.raises(ConfigError):
        isp.forward_train(dark_batch(2), jax.random.key(0), temperature=0.0)


def test_decisions_figure_marks_skipped_stages_and_keeps_its_title(tmp_path, saved_figures):
    from diffisp.report import figures

    stages = ("exposure", "tone_curve", "gamma")
    isp = AdaptiveISP(stages, rngs=nnx.Rngs(0))
    set_gates(isp, [5.0, -5.0, 5.0])  # tone curve skipped on every image
    figures.adaptive_decisions_figure(
        tmp_path / "d.png", isp, np.asarray(dark_batch(3)), [0, 1, 2], "abc", title="λ=2 run"
    )
    (fig,) = saved_figures
    assert fig._suptitle.get_text() == "λ=2 run"
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert texts.count("skipped") == 3
    assert [fig.axes[c].get_xlabel() for c in range(5)] == ["input x4", *stages, "output"]
