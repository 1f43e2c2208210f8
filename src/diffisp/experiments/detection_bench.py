"""``diffisp bench --task detect``: detection training and inference throughput on this machine.

A benchmark, not a test: it prints numbers and returns the ``bench.json`` dictionary. It runs
the real training path, :func:`diffisp.training.step.train_one_epoch` (what ``diffisp train``
runs: device-resident data, one compiled step, batch-norm re-estimation), with the ISP in front
of :class:`~diffisp.models.detector.SmallCenterNet` on the generated scenes, one phase at a
time. The first epoch of each phase is timed apart (compilation) and kept out of the
throughput. Inference is split into where its time goes: the ISP, the detector's forward pass,
peak decoding + NMS (the difference between the compiled prediction and the forward pass), and
the COCO evaluator on the host. Peak memory: the device's peak where the platform reports it,
else the process's peak resident memory (:func:`~diffisp.experiments.usage.peak_memory_mib`),
after each phase (it only grows) and at the end.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import jax
from flax import nnx

from diffisp.data.scenes import load_scenes
from diffisp.experiments.bench import machine_info, model_alone_fractions
from diffisp.experiments.usage import best_seconds, peak_memory_mib
from diffisp.models.evaluate import predict
from diffisp.training.config import TrainConfig
from diffisp.training.data import prepare_data
from diffisp.training.loop import train_epoch_of
from diffisp.training.state import PHASES, TrainState

DETECTION_BENCH_SCHEMA = "diffisp.bench-detect/1"
DEFAULT_IMAGE_SIZE = 64  # the scenes' default side


def run_detection_bench(
    *,
    num_train: int = 256,
    num_test: int = 128,
    epochs: int = 2,
    image_size: int = DEFAULT_IMAGE_SIZE,
    batch_size: int = 32,
    bn_calibration: int = 256,
    repeats: int = 3,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Time ``epochs`` epochs of each phase and the inference path; returns the JSON dict."""
    cfg = TrainConfig.of(
        task="detect",
        data="scenes",
        num_train=num_train,
        num_test=num_test,
        image_size=image_size,
        batch_size=batch_size,
        bn_calibration=bn_calibration,
    )
    log(f"generating {num_train} + {num_test} scenes at {image_size}x{image_size}")
    data = prepare_data(load_scenes(num_train, num_test, image_size, seed=0), cfg)
    state = TrainState.create(cfg, data.num_classes)
    params = sum(x.size for x in jax.tree.leaves(nnx.state(state.model, nnx.Param)))
    training = {}
    for phase in PHASES:
        log(f"training, phase {phase.index} ({phase.name})")
        state.optimizer = state.new_optimizer(phase, data.num_train)
        start = time.perf_counter()
        train_epoch_of(state, data, phase, 0)
        first = time.perf_counter() - start
        start = time.perf_counter()
        for epoch in range(1, epochs + 1):
            train_epoch_of(state, data, phase, epoch)
        elapsed = time.perf_counter() - start
        seen = epochs * (data.num_train // cfg.optim.batch_size) * cfg.optim.batch_size
        training[f"phase{phase.index}"] = {
            "images_per_s": seen / elapsed,
            "epoch_s": elapsed / epochs,
            "compile_s": max(first - elapsed / epochs, 0.0),
            "peak_memory_mib": round(peak_memory_mib()[0], 1),  # so far in this process
        }
    log("inference")
    inference = bench_detection_inference(state, data, repeats)
    peak, measured = peak_memory_mib()
    return {
        "schema": DETECTION_BENCH_SCHEMA,
        "machine": machine_info(),
        "config": {
            "num_train": num_train,
            "num_test": num_test,
            "image_size": image_size,
            "batch_size": batch_size,
            "epochs": epochs,
            "bn_calibration": bn_calibration,
            "isp": list(cfg.isp.stages),
        },
        "detector_parameters": int(params),
        "peak_memory_mib": round(peak, 1),
        "peak_memory_measured": measured,
        "training": training,
        # Phase 0 is the detector's training step alone (no ISP): the bound of the others.
        "fraction_of_model_alone": model_alone_fractions(training),
        "inference": inference,
    }


def bench_detection_inference(state: TrainState, data: Any, repeats: int = 3) -> dict[str, float]:
    """Images/s of the ISP alone, ISP + detector forward, the full compiled prediction
    (forward + decode + NMS) and the COCO evaluator (host), on the run's test set."""
    images, task, n = data.test_dark, state.task, int(data.test_clean.shape[0])
    isp_graph, isp_state = nnx.split(state.isp)
    both_graph, both_state = nnx.split((state.isp, state.model))
    state.model.eval()

    @jax.jit
    def isp_only(s, x):
        return nnx.merge(isp_graph, s)(x)

    @jax.jit
    def forward(s, x):
        isp, model = nnx.merge(both_graph, s)
        return model(isp(x))

    def run_predict():
        return predict(state.model, images, isp=state.isp, task=task)

    isp_only(isp_state, images).block_until_ready()
    jax.block_until_ready(forward(both_state, images))
    predictions = run_predict()
    isp_s = best_seconds(lambda: isp_only(isp_state, images), repeats)
    forward_s = best_seconds(lambda: forward(both_state, images), repeats)
    predict_s = best_seconds(run_predict, repeats)
    start = time.perf_counter()
    task.metrics(predictions, data.test_labels)
    metrics_s = time.perf_counter() - start
    return {
        "num_images": n,
        "isp_only_images_per_s": n / isp_s,
        "forward_images_per_s": n / forward_s,
        "predict_images_per_s": n / predict_s,
        "decode_nms_ms_per_image": 1000 * max(predict_s - forward_s, 0.0) / n,
        "coco_eval_images_per_s": n / metrics_s,
    }


def print_detection_bench(result: dict[str, Any]) -> None:
    cfg = result["config"]
    print(
        f"detection bench: {cfg['image_size']}x{cfg['image_size']} scenes, batch "
        f"{cfg['batch_size']}, {cfg['num_train']} train images, detector "
        f"{result['detector_parameters']:,} parameters; peak memory "
        f"{result['peak_memory_mib']:,.0f} MiB ({result['peak_memory_measured']})"
    )
    fractions = result.get("fraction_of_model_alone", {})
    for name, row in result["training"].items():
        bound = (
            f"; {fractions[name]:.0%} of the detector alone"
            if name in fractions
            else "; the detector alone"
        )
        print(
            f"  training {name}: {row['images_per_s']:,.0f} img/s "
            f"({row['epoch_s']:.2f} s/epoch, compile {row['compile_s']:.1f} s{bound})"
        )
    inf = result["inference"]
    print(
        f"  inference: ISP alone {inf['isp_only_images_per_s']:,.0f} img/s; ISP + detector "
        f"forward {inf['forward_images_per_s']:,.0f} img/s; with decode + NMS "
        f"{inf['predict_images_per_s']:,.0f} img/s ({inf['decode_nms_ms_per_image']:.2f} ms/image "
        f"in decode + NMS); COCO evaluator {inf['coco_eval_images_per_s']:,.0f} img/s"
    )


__all__ = ["DETECTION_BENCH_SCHEMA", "print_detection_bench", "run_detection_bench"]
