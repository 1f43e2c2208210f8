"""``diffisp bench --stream``: in-memory against streamed training, on the same image folder.

Modes: ``memory`` (everything decoded first), ``stream`` (decoded from the files while training,
``--stream-cache off``), ``cache-build`` (streamed from a decoded cache built by this run: its
load time includes the decoding, by one process per CPU) and ``cache`` (the same cache, reused
by a later run: what every run after the first costs).

Each measurement trains phase 0 (the CNN on clean images, no ISP: the data path is what differs)
for ``epochs`` epochs in a fresh Python process, so that its peak resident memory
(``ru_maxrss``) is its own. Reported per mode and training-set size:

* ``load_seconds``: from nothing to the data on the device (in memory: decoding every image;
  streamed: listing the files, decoding the test set and the in-memory sample);
* ``epoch_seconds`` and ``images_per_s``: the median epoch after the first (the first
  compiles; the streamed path compiles once more for a shorter last chunk); streamed epochs
  include the decoding that the in-memory path did while loading;
* ``end_to_end_images_per_s``: images trained over everything, loading and compiling included;
* ``peak_rss_mib``: the process's peak resident memory, and ``rss_before_data_mib``: what it
  held before reading any data (Python, JAX, XLA), so the difference is the data's;
* ``of_memory``: the streamed modes' ``images_per_s`` as a fraction of the in-memory one.

A benchmark, not a test: nothing here is asserted.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from diffisp.data.generate import write_image_folder
from diffisp.data.scenes import write_scenes_coco
from diffisp.errors import DataError
from diffisp.experiments.run import load_run_data
from diffisp.experiments.usage import peak_rss_mib
from diffisp.training.config import TrainConfig
from diffisp.training.data import prepare_data
from diffisp.training.loop import train_epoch_of
from diffisp.training.state import PHASES, TrainState

STREAM_BENCH_SCHEMA = "diffisp.bench-stream/1"
MODES = ("memory", "stream", "cache-build", "cache")


def measure(
    mode: str,
    data: str,
    *,
    task: str = "classify",
    image_size: int | None = None,
    num_train: int,
    num_test: int = 256,
    epochs: int = 2,
    batch_size: int = 32,
    chunk_batches: int = 32,
    workers: int = 1,
    cache_dir: str | None = None,
) -> dict[str, Any]:
    """Train phase 0 of ``task`` on ``data`` (a ``folder:``, ``coco:`` or ``voc:`` spec) in
    this process, read as ``mode`` says (one of :data:`MODES`), and return the figures of the
    module docstring (``cache_dir``: where the cache modes keep the decoded images). Peak
    memory is only meaningful in a fresh process: :func:`measure_in_subprocess`."""
    if mode not in MODES:
        raise DataError(f"unknown streaming mode {mode!r}; one of {MODES}")
    if mode.startswith("cache") and cache_dir is None:
        raise DataError(f"mode {mode!r} needs a cache_dir")
    rss_before = peak_rss_mib()
    cfg = TrainConfig.of(
        task=task,
        data=data,
        image_size=image_size or (64 if task == "detect" else 32),
        num_train=num_train,
        num_test=num_test,
        batch_size=batch_size,
        epochs_clean=epochs,
        epochs_isp=0,
        epochs_joint=0,
        isp_warmup_epochs=0,
        stream=mode != "memory",
        stream_chunk_batches=chunk_batches,
        stream_workers=workers,
        stream_cache=cache_dir if mode.startswith("cache") else "off",
    )
    start = time.perf_counter()
    data = prepare_data(load_run_data(cfg), cfg)
    load_seconds = time.perf_counter() - start
    state = TrainState.create(cfg, data.num_classes)
    phase = PHASES[0]
    state.optimizer = state.new_optimizer(phase, data.num_train)
    epoch_seconds = []
    for epoch in range(epochs):
        started = time.perf_counter()
        train_epoch_of(state, data, phase, epoch)
        epoch_seconds.append(time.perf_counter() - started)
    trained = state.steps_per_epoch(data.num_train) * batch_size
    # The median epoch after the first: one slow epoch (another process) does not move it.
    steady = float(np.median(epoch_seconds[1:] or epoch_seconds))
    return {
        "mode": mode,
        "task": task,
        "image_size": cfg.data.image_size,
        "num_train": num_train,
        "num_test": num_test,
        "epochs": epochs,
        "load_seconds": round(load_seconds, 2),
        "epoch_seconds": [round(s, 2) for s in epoch_seconds],
        "images_per_s": round(trained / steady, 1),
        "end_to_end_images_per_s": round(trained * epochs / (load_seconds + sum(epoch_seconds)), 1),
        "rss_before_data_mib": round(rss_before, 1),
        "peak_rss_mib": round(peak_rss_mib(), 1),
    }


def measure_in_subprocess(mode: str, data: str, **options: Any) -> dict[str, Any]:
    """:func:`measure` in a fresh Python process (its own peak RSS).

    Raises:
      DataError: the measurement failed (its error output is in the message).
    """
    request = json.dumps({"mode": mode, "data": data, **options})
    result = subprocess.run(
        [sys.executable, "-m", "diffisp.experiments.stream_bench", request],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode:
        raise DataError(f"the {mode} measurement failed: {result.stderr.strip()[-800:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def folder_for(num_train: int, num_test: int, root: Path, num_classes: int = 10) -> Path:
    """A generated folder whose splits hold at least ``num_train`` and ``num_test`` images (20 %
    of every class is held out for testing)."""
    total = max(math.ceil(num_train / 0.8), math.ceil(num_test / 0.2)) + 2 * num_classes
    return write_image_folder(root, total, num_classes=num_classes)


def bench_streaming(
    sizes: list[int],
    *,
    data: str | None = None,
    task: str = "classify",
    epochs: int = 2,
    num_test: int = 256,
    log=print,
    **options: Any,
) -> dict[str, Any]:
    """Every mode at every training-set size in ``sizes``, each in a fresh process, on
    ``data`` (a ``folder:``, ``coco:`` or ``voc:`` spec; ``None``: a generated folder, or for
    ``task="detect"`` generated scenes written as COCO, per size in a temporary directory).
    Detection sets have no ``stream`` mode: they stream from their cache only."""
    runs = []
    detect = task == "detect"
    modes = [m for m in MODES if not (detect and m == "stream")]
    for size in sizes:
        with tempfile.TemporaryDirectory(prefix="diffisp-stream-") as tmp:
            if data is None:
                started = time.perf_counter()
                if detect:
                    out = Path(tmp) / "coco"
                    write_scenes_coco(out, size, num_test, options.get("image_size") or 64)
                    where = f"coco:{out}"
                else:
                    where = f"folder:{folder_for(size, num_test, Path(tmp) / 'images')}"
                log(
                    f"generated {where} for {size} training images in "
                    f"{time.perf_counter() - started:.0f} s"
                )
            else:
                where = data
            cache = str(Path(tmp) / "decoded")
            for mode in modes:
                run = measure_in_subprocess(
                    mode,
                    where,
                    task=task,
                    num_train=size,
                    num_test=num_test,
                    epochs=epochs,
                    cache_dir=cache,
                    **options,
                )
                if mode == "memory":
                    in_memory = run["images_per_s"]
                else:
                    run["of_memory"] = round(run["images_per_s"] / in_memory, 3)
                log(json.dumps(run))
                runs.append(run)
    return {
        "schema": STREAM_BENCH_SCHEMA,
        "data": data
        or (
            "generated (diffisp.data.scenes.write_scenes_coco, PNG scenes + COCO JSON)"
            if detect
            else "generated (diffisp.data.generate.write_image_folder, 32x32 PNGs)"
        ),
        "task": task,
        "python": sys.version.split()[0],
        "runs": runs,
    }


def print_stream_bench(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Streamed vs in-memory training (phase 0, fresh process per row)")
    columns = ("mode", "train images", "load s", "img/s", "of memory", "end-to-end img/s")
    for column in (*columns, "peak RSS"):
        table.add_column(column, justify="right")
    for run in result["runs"]:
        table.add_row(
            run["mode"],
            f"{run['num_train']:,}",
            f"{run['load_seconds']:.1f}",
            f"{run['images_per_s']:,.0f}",
            f"{run['of_memory']:.0%}" if "of_memory" in run else "",
            f"{run['end_to_end_images_per_s']:,.0f}",
            f"{run['peak_rss_mib']:,.0f} MiB",
        )
    Console().print(table)


if __name__ == "__main__":  # one measurement, for measure_in_subprocess
    request = json.loads(sys.argv[1])
    print(json.dumps(measure(request.pop("mode"), request.pop("data"), **request)))
