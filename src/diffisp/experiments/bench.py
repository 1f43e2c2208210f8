"""``diffisp bench``: training and inference throughput, side by side, on this machine.

A benchmark, not a test: it prints numbers and writes ``bench.json``; nothing here is asserted.
Everything runs in one process on the same data, ISP and CNN:

* **reference-style loop** - the way the reference script trains: a Python loop over a datarax
  ``Pipeline`` with batch size 32, each batch handed from the host to one ``nnx.jit`` step that
  runs the ISP through ``CompositeOperatorModule`` (datarax's per-record ``apply`` under vmap) and
  the CNN through ``nnx.Conv``, then the reference's eager (op-by-op) accuracy pass on the batch.
  Its ISP computes diffisp's maths in the reference's formulations (a depthwise convolution for
  the sharpening blur, an einsum for the colour matrix, ``jnp.interp`` for the tone curve);
* the same loop with **diffisp's ops** - to separate the gain of the loop from that of the ops;
* **diffisp's fast path** - :func:`diffisp.training.loop.train_one_epoch`, exactly what
  ``diffisp train`` runs (device-resident data, one compiled step with donated buffers, im2col
  convolutions, fused ISP ops, batch-norm re-estimation after each epoch);
* a **peak reference** - a 2048x2048 float32 matmul's GFLOP/s, measured right then.

Compile time is reported separately (the first epoch) and kept out of every throughput.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from datarax import Pipeline
from datarax.typing import Batch
from flax import nnx

from diffisp.capture.low_light import LowLight
from diffisp.data.source import InMemorySource
from diffisp.experiments.usage import best_seconds
from diffisp.isp import stages
from diffisp.isp.chain import ISP
from diffisp.isp.operators import isp_composite
from diffisp.models.classifier import SmallCNN
from diffisp.models.evaluate import predict
from diffisp.training.config import TrainConfig
from diffisp.training.data import RunData
from diffisp.training.loop import train_epoch_of
from diffisp.training.state import PHASES, Phase, TrainState
from diffisp.training.step import train_step

BENCH_SCHEMA = "diffisp.bench/1"


def matmul_peak(n: int = 2048, repeats: int = 10) -> float:
    """Achieved GFLOP/s of an ``n x n`` float32 matmul (best of ``repeats``)."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    matmul = jax.jit(jnp.matmul)
    matmul(a, b).block_until_ready()
    return 2 * n**3 / best_seconds(lambda: matmul(a, b), repeats) / 1e9


def synthetic_data(num_train: int, num_test: int, image_size: int = 32, seed: int = 0) -> RunData:
    """Random images and labels on the device: throughput does not depend on content."""
    rng = np.random.default_rng(seed)
    clean = rng.uniform(0, 1, (num_train, image_size, image_size, 3)).astype(np.float32)
    test = rng.uniform(0, 1, (num_test, image_size, image_size, 3)).astype(np.float32)
    darken = LowLight(brightness=(0.2, 0.2), noise_sigma=0.0)
    labels = rng.integers(0, 10, num_train).astype(np.int32)
    return RunData(
        train=InMemorySource(clean, labels, darken, jax.random.key(seed)),
        test_clean=jnp.asarray(test),
        test_dark=jnp.asarray(test * 0.2),
        test_labels=jnp.asarray(rng.integers(0, 10, num_test), jnp.int32),
        num_classes=10,
        capture_model=darken,
    )


# ------------------------------------------------ the reference's formulations of the same maths


class _ReferenceCCM(stages.ColorCorrection):
    @staticmethod
    def process(images, values):
        return jnp.clip(jnp.einsum("nhwj,ij->nhwi", images, values["matrix"]), 0.0, 1.0)


class _ReferenceToneCurve(stages.ToneCurve):
    @staticmethod
    def process(images, values):
        knots = values["knots"]
        xs = jnp.linspace(0.0, 1.0, knots.shape[-1])
        return jnp.clip(jnp.interp(images, xs, knots), 0.0, 1.0)


class _ReferenceSharpen(stages.Sharpen):
    @staticmethod
    def process(images, values):
        padded = jnp.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
        rhs = jnp.broadcast_to(values["kernel"][:, :, None, None], (3, 3, 1, 3))
        blur = jax.lax.conv_general_dilated(
            padded,
            rhs,
            (1, 1),
            "VALID",
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=3,
        )
        return jnp.clip(images + values["strength"] * (images - blur), 0.0, 1.0)


_REFERENCE_FORMS = {
    "ccm": _ReferenceCCM,
    "tone_curve": _ReferenceToneCurve,
    "sharpen": _ReferenceSharpen,
}


def reference_formulation(isp: ISP) -> ISP:
    """A copy of ``isp`` whose stages compute the same maths the way the reference script does."""
    copy = ISP(isp.stage_names)
    copy.stages = nnx.List(
        [
            _REFERENCE_FORMS.get(name, type(stage))()
            for name, stage in zip(isp.stage_names, isp.stages, strict=True)
        ]
    )
    nnx.update(copy, nnx.state(isp))
    return copy


# ---------------------------------------------------------------- the reference-style loop


def _cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def _composite_images(composite, images):
    return composite(Batch.from_parts({"image": images}, {})).data["image"]


@nnx.jit
def _reference_isp_step(composite, detector, isp_opt, images, labels):
    def loss_fn(composite):
        return _cross_entropy(detector(_composite_images(composite, images)), labels)

    loss, grads = nnx.value_and_grad(loss_fn)(composite)
    isp_opt.update(composite, grads)
    return loss


@nnx.jit
def _reference_joint_step(composite, detector, isp_opt, det_opt, images, labels):
    def loss_fn(composite, detector):
        return _cross_entropy(detector(_composite_images(composite, images)), labels)

    loss, (g_isp, g_det) = nnx.value_and_grad(loss_fn, argnums=(0, 1))(composite, detector)
    isp_opt.update(composite, g_isp)
    det_opt.update(detector, g_det)
    return loss


def reference_epoch(
    modules, images: np.ndarray, labels: np.ndarray, *, joint: bool, batch_size: int = 32
) -> int:
    """One epoch as the reference trains it; returns the number of images seen."""
    composite, detector, isp_opt, det_opt = modules
    pipeline = Pipeline.from_arrays(
        {"image": images, "label": labels}, batch_size=batch_size, seed=0
    )
    seen = 0
    for batch in pipeline:
        x, y = np.asarray(batch["image"]), np.asarray(batch["label"])  # handed over from the host
        if joint:
            detector.train()
            loss = _reference_joint_step(composite, detector, isp_opt, det_opt, x, y)
        else:
            detector.eval()
            loss = _reference_isp_step(composite, detector, isp_opt, x, y)
        detector.eval()  # the reference's accuracy on the batch: eager, op by op
        logits = detector(_composite_images(composite, jnp.asarray(x)))
        _ = float(loss), float(jnp.mean(jnp.argmax(logits, -1) == jnp.asarray(y)))
        seen += len(y)
    return seen


def bench_reference(data: RunData, epochs: int, *, reference_ops: bool) -> dict[str, Any]:
    images, labels = np.asarray(data.train.captured), np.asarray(data.train.targets)
    out = {}
    for name, joint in (("phase1", False), ("phase2", True)):
        isp = reference_formulation(ISP()) if reference_ops else ISP()
        detector = SmallCNN(rngs=nnx.Rngs(0), im2col=False)  # nnx.Conv, as the reference
        composite = isp_composite(isp)
        modules = (
            composite,
            detector,
            nnx.Optimizer(composite, optax.adam(1e-2), wrt=nnx.Param),
            nnx.Optimizer(detector, optax.adam(1e-3), wrt=nnx.Param),
        )
        start = time.perf_counter()
        reference_epoch(modules, images[:64], labels[:64], joint=joint)  # compiles everything
        warmup = time.perf_counter() - start
        start = time.perf_counter()
        seen = sum(reference_epoch(modules, images, labels, joint=joint) for _ in range(epochs))
        out[name] = {"images_per_s": seen / (time.perf_counter() - start), "warmup_s": warmup}
    return out


# ---------------------------------------------------------------- the fast path


def step_flops(state: TrainState, data: RunData, phase: Phase) -> float:
    """FLOPs of one compiled training step, from XLA's cost analysis."""
    optimizer = state.new_optimizer(phase, data.num_train)
    graphdef, train_state = nnx.split((state.learner, optimizer))
    step = jax.jit(train_step, static_argnames=("graphdef", "phase", "task", "batch_size"))
    lowered = step.lower(
        graphdef,
        train_state,
        data.train.captured,
        data.train.targets,
        jnp.arange(data.num_train),
        jax.random.key(0),
        0,
        0,
        phase=phase,
        task=state.task,
        batch_size=state.cfg.optim.batch_size,
    )
    cost = lowered.compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost.get("flops", 0.0))


def bench_fast(
    data: RunData,
    cfg: TrainConfig,
    epochs: int,
    phases: tuple[Phase, ...] = PHASES[1:],
    flops: bool = True,
) -> dict[str, Any]:
    state = TrainState.create(cfg, data.num_classes)
    out = {}

    def epoch_of(phase: Phase, epoch: int) -> None:
        train_epoch_of(state, data, phase, epoch)

    for phase in phases:
        state.optimizer = state.new_optimizer(phase, data.num_train)
        start = time.perf_counter()
        epoch_of(phase, 0)
        first = time.perf_counter() - start
        start = time.perf_counter()
        for epoch in range(1, epochs + 1):
            epoch_of(phase, epoch)
        elapsed = time.perf_counter() - start
        steps = epochs * (data.num_train // cfg.optim.batch_size)
        out[f"phase{phase.index}"] = {
            "images_per_s": steps * cfg.optim.batch_size / elapsed,
            "compile_s": max(first - elapsed / epochs, 0.0),
        }
        if flops:
            count = step_flops(state, data, phase)
            out[f"phase{phase.index}"] |= {
                "flops_per_step": count,
                "gflops_per_s": count * steps / elapsed / 1e9,
            }
    return out


def device_counts(available: int, batch_size: int) -> list[int]:
    """1, 2, 4, ... up to ``available`` (and ``available`` itself): the counts that split
    ``batch_size`` evenly."""
    powers = {2**k for k in range(available.bit_length())}
    counts = sorted({n for n in powers if n <= available} | {available})
    return [n for n in counts if batch_size % n == 0]


def bench_scaling(data: RunData, cfg: TrainConfig, epochs: int) -> dict[str, Any]:
    """Phase 2 throughput of the data-parallel fast path on 1, 2, 4, ... devices (the same
    global batch split over them), and its speed-up over one device."""
    images_per_s = {}
    for n in device_counts(jax.device_count(), cfg.optim.batch_size):
        result = bench_fast(data, cfg.replace(devices=n), epochs, (PHASES[2],), flops=False)
        images_per_s[str(n)] = result["phase2"]["images_per_s"]
    one = images_per_s["1"]
    return {
        "platform": jax.devices()[0].platform,
        "phase2_images_per_s": images_per_s,
        "speedup_over_1": {n: v / one for n, v in images_per_s.items()},
    }


def bench_inference(data: RunData, repeats: int = 5) -> dict[str, float]:
    isp, model = ISP(), SmallCNN(rngs=nnx.Rngs(0))
    images = data.test_dark
    n = images.shape[0]
    predict(model, images, isp=isp)
    evaluate_s = best_seconds(lambda: predict(model, images, isp=isp), repeats)
    graphdef, state = nnx.split(isp)
    isp_only = jax.jit(lambda state, x: nnx.merge(graphdef, state)(x))
    isp_only(state, images).block_until_ready()
    isp_s = best_seconds(lambda: isp_only(state, images), repeats)
    return {"eval_images_per_s": n / evaluate_s, "isp_only_images_per_s": n / isp_s}


def run_bench(
    *,
    num_train: int = 2048,
    epochs: int = 3,
    reference_epochs: int = 1,
    batch_size: int = 32,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Measure everything in one process; returns the ``bench.json`` dictionary."""
    data = synthetic_data(num_train, 1024)
    cfg = TrainConfig.of(num_train=num_train, num_test=1024, batch_size=batch_size)
    log("peak: 2048x2048 float32 matmul")
    peak = matmul_peak()
    log("reference-style loop (reference formulations of the ISP maths)")
    reference = bench_reference(data, reference_epochs, reference_ops=True)
    log("reference-style loop with diffisp's ISP ops")
    reference_ops = bench_reference(data, reference_epochs, reference_ops=False)
    log("diffisp fast path, and the model's own step alone (phase 0: no ISP, clean images)")
    fast = bench_fast(data, cfg, epochs, phases=PHASES)
    log(f"data-parallel scaling over 1..{jax.device_count()} devices")
    scaling = bench_scaling(data, cfg, epochs)
    log("inference")
    inference = bench_inference(data)
    phases = ("phase1", "phase2")
    return {
        "schema": BENCH_SCHEMA,
        "machine": machine_info(),
        "config": {
            "num_train": num_train,
            "batch_size": batch_size,
            "epochs": epochs,
            "reference_epochs": reference_epochs,
        },
        "matmul_peak_gflops": peak,
        "reference": reference,
        "reference_with_diffisp_ops": reference_ops,
        "fast": fast,
        "scaling": scaling,
        "inference": inference,
        "speedup": {p: fast[p]["images_per_s"] / reference[p]["images_per_s"] for p in phases},
        "fraction_of_peak": {p: fast[p]["gflops_per_s"] / peak for p in phases},
        # The bound every phase is read against: the task model's training step alone (no ISP,
        # the same batch and input size). Phase 1 trains the ISP only, so it can exceed it.
        "model_alone": {"images_per_s": fast["phase0"]["images_per_s"]},
        "fraction_of_model_alone": model_alone_fractions(fast),
    }


def model_alone_fractions(training: dict[str, dict[str, float]]) -> dict[str, float]:
    """Each ISP phase's throughput over the model-alone step's (``phase0``)."""
    alone = training["phase0"]["images_per_s"]
    return {p: row["images_per_s"] / alone for p, row in training.items() if p != "phase0"}


def print_bench(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"Training throughput, batch {result['config']['batch_size']} "
        f"(matmul peak {result['matmul_peak_gflops']:.0f} GFLOP/s)"
    )
    for column in ("", "phase 1 (ISP only)", "phase 2 (joint)"):
        table.add_column(column, justify="right" if column else "left")
    rows = (
        ("reference-style loop", "reference"),
        ("  same loop, diffisp ops", "reference_with_diffisp_ops"),
        ("diffisp fast path", "fast"),
    )
    for label, key in rows:
        table.add_row(
            label, *(f"{result[key][p]['images_per_s']:,.0f} img/s" for p in ("phase1", "phase2"))
        )
    fast = result["fast"]
    table.add_row("speed-up", *(f"{result['speedup'][p]:.1f}x" for p in ("phase1", "phase2")))
    table.add_row(
        "fast path GFLOP/s (XLA count)",
        *(
            f"{fast[p]['gflops_per_s']:.0f} ({result['fraction_of_peak'][p]:.0%} of peak)"
            for p in ("phase1", "phase2")
        ),
    )
    table.add_row(
        "fast path compile", *(f"{fast[p]['compile_s']:.1f} s" for p in ("phase1", "phase2"))
    )
    if "fraction_of_model_alone" in result:
        alone = result["model_alone"]["images_per_s"]
        table.add_row(
            f"of the model alone ({alone:,.0f} img/s)",
            *(f"{result['fraction_of_model_alone'][p]:.0%}" for p in ("phase1", "phase2")),
        )
    Console().print(table)
    scaling = result.get("scaling")
    if scaling:
        print(
            f"phase 2 data parallel ({scaling['platform']}): "
            + ", ".join(
                f"{n} device{'s' if n != '1' else ''} {v:,.0f} img/s "
                f"({scaling['speedup_over_1'][n]:.2f}x)"
                for n, v in scaling["phase2_images_per_s"].items()
            )
        )
    inference = result["inference"]
    print(
        f"evaluation (ISP + CNN, eval mode): {inference['eval_images_per_s']:,.0f} img/s; "
        f"ISP alone: {inference['isp_only_images_per_s']:,.0f} img/s"
    )


def machine_info() -> dict[str, Any]:
    """What a bench figure was measured on."""
    return {
        "cpu_count": os.cpu_count(),
        "processor": platform.processor(),
        "devices": [str(d) for d in jax.devices()],
    }
