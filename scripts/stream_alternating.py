"""In-memory and cached-stream epochs of phase 0 alternated in one process.

``diffisp bench --stream`` runs every mode in its own process (its own peak memory), but on a
shared machine whole processes run fast or slow together; alternating the two data paths epoch
by epoch in one process compares them under the same conditions. Prints and writes the epoch
times and the ratio of the medians (cache speed / in-memory speed).

    PYTHONPATH=src python scripts/stream_alternating.py --data folder:PATH --num-train 50000 \
        [--task detect --image-size 64] [--rounds 4] [--cache DIR] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np

from diffisp.experiments.bench import machine_info
from diffisp.experiments.run import load_run_data
from diffisp.training.config import TrainConfig
from diffisp.training.data import prepare_data
from diffisp.training.loop import train_epoch_of
from diffisp.training.state import PHASES, TrainState
from diffisp.util.io import atomic_write_json


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True, help="folder:PATH, coco:PATH or voc:ROOT")
    parser.add_argument("--task", default="classify")
    parser.add_argument("--num-train", type=int, required=True)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--cache", default=None, help="decoded cache folder (default: temporary)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="diffisp-alternating-") as tmp:
        runs = {}
        for mode in ("memory", "cache"):
            cfg = TrainConfig.of(
                task=args.task,
                data=args.data,
                image_size=args.image_size,
                num_train=args.num_train,
                num_test=256,
                batch_size=32,
                epochs_clean=1,
                epochs_isp=0,
                epochs_joint=0,
                isp_warmup_epochs=0,
                stream=mode == "cache",
                stream_cache=args.cache or tmp,
            )
            data = prepare_data(load_run_data(cfg), cfg)
            state = TrainState.create(cfg, data.num_classes)
            state.optimizer = state.new_optimizer(PHASES[0], data.num_train)
            runs[mode] = (state, data)
        seconds: dict[str, list[float]] = {mode: [] for mode in runs}
        for epoch in range(args.rounds + 1):  # the first round compiles: not kept
            for mode, (state, data) in runs.items():
                start = time.perf_counter()
                train_epoch_of(state, data, PHASES[0], epoch)
                if epoch:
                    seconds[mode].append(round(time.perf_counter() - start, 3))
    ratio = float(np.median(seconds["memory"]) / np.median(seconds["cache"]))
    result = {
        "machine": machine_info(),
        "task": args.task,
        "data": args.data,
        "num_train": args.num_train,
        "image_size": args.image_size,
        "epoch_seconds": seconds,
        "cache_speed_of_memory": round(ratio, 3),
    }
    print(result)
    if args.out:
        atomic_write_json(args.out, result)


if __name__ == "__main__":
    main()
