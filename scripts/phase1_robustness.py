"""Phase 1 (ISP only, frozen clean-trained CNN) over several seeds, with and without warm-up.

For each seed: phase 0 once (the full preset's sizes), then phase 1 from the same clean-trained
CNN with each warm-up setting. Prints and writes the phase-1 test accuracy per seed and setting.

    PYTHONPATH=src python scripts/phase1_robustness.py --seeds 5 --warmups 0 1 \
        [--input raw] [--out docs/results/phase1/srgb.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np

from diffisp.experiments.run import load_run_data, prepare_run_data
from diffisp.training.config import TrainConfig
from diffisp.training.loop import train_clean_model, train_from_model
from diffisp.util.io import atomic_write_json
from diffisp.util.stats import mean_std


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--warmups", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--input", default="srgb")
    parser.add_argument("--conditions", default=None)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    extra = {"input": args.input}
    if args.conditions:
        extra["conditions"] = args.conditions
    results: dict[str, list[float]] = {str(w): [] for w in args.warmups}
    started = time.perf_counter()
    for seed in range(args.seeds):
        cfg = TrainConfig.preset_config("full", data="builtin", seed=seed, epochs_joint=0, **extra)
        data = prepare_run_data(load_run_data(cfg), cfg)
        clean_model = train_clean_model(cfg, data)
        for warmup in args.warmups:
            state = train_from_model(
                dataclasses.replace(cfg, isp_warmup_epochs=warmup), clean_model, data
            )
            acc = state.history[-1].test_acc
            results[str(warmup)].append(acc)
            print(f"seed {seed} warm-up {warmup}: phase 1 test accuracy {acc:.1%}", flush=True)
    summary = {
        w: {
            "accuracy": accs,
            **mean_std(accs),
            "worst_below_mean": float(np.mean(accs) - np.min(accs)),
        }
        for w, accs in results.items()
    }
    for w, row in summary.items():
        print(
            f"warm-up {w} epochs: {100 * row['mean']:.1f} ± {100 * row['std']:.1f} % "
            f"(worst {100 * row['worst_below_mean']:.1f} points below the mean)"
        )
    if args.out:
        atomic_write_json(
            args.out,
            {
                "command": "PYTHONPATH=src python scripts/phase1_robustness.py "
                + " ".join(
                    f"--{k} {' '.join(map(str, v)) if isinstance(v, list) else v}"
                    for k, v in vars(args).items()
                    if v is not None
                ),
                "num_test": cfg.num_test,
                "seeds": list(range(args.seeds)),
                "input": args.input,
                "conditions": args.conditions or "uniform",
                "phase1": summary,
                "seconds": time.perf_counter() - started,
            },
        )


if __name__ == "__main__":
    main()
