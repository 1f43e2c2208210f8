"""What a per-image exposure and white balance could be worth on mixed capture conditions.

The 10-stage global ISP (phases 1-2 from one clean-trained CNN, the full preset's sizes) is
trained on four versions of the same mixed captures:

* ``captured``: the captures as they are (what the study's global ISP sees);
* ``oracle``: each capture divided by its *true* brightness and illuminant cast (recorded by
  :func:`diffisp.capture.mixed.capture_mixed`), i.e. perfect per-image exposure and white
  balance: an upper bound no ISP that only sees the image can reach;
* ``oracle-exposure``: divided by the true brightness only (times 0.5), the cast left in;
* ``auto``: grey-world white balance then auto-exposure to the clean images' mean luminance,
  both read from the capture itself: what image statistics alone give (the closed-form start of
  the adaptive ISP, :meth:`diffisp.isp.adaptive.AdaptiveISP.start_from_auto_exposure`).

The gaps bound what a per-image ISP can win over the global one on these data.

    PYTHONPATH=src python scripts/mixed_headroom.py --seeds 3 \
        [--out docs/results/study-mixed/headroom.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import jax
import jax.numpy as jnp

from diffisp.capture.mixed import ILLUMINANT_CASTS, capture_mixed
from diffisp.experiments.run import load_run_data, prepare_run_data
from diffisp.ops import luminance
from diffisp.training import keys
from diffisp.training.config import TrainConfig
from diffisp.training.loop import train_clean_model, train_from_model
from diffisp.training.variants import parse_variant
from diffisp.util.io import atomic_write_json
from diffisp.util.stats import mean_std

INPUTS = ("captured", "oracle", "oracle-exposure", "auto")
_FLOOR = 1.0 / 1024.0


def recorded_conditions(cfg: TrainConfig, clean: jax.Array, stream: int) -> dict[str, jax.Array]:
    """The conditions ``prepare_data`` drew for a split (same key, so the same draws)."""
    key = jax.random.fold_in(jax.random.key(cfg.seed), stream)
    return capture_mixed(key, clean, cfg.mixed_conditions())[1]


def normalised(dark: jax.Array, cond: dict[str, jax.Array], kind: str, level: float) -> jax.Array:
    """One split's captures as the global ISP gets them under input ``kind``."""
    if kind == "captured":
        return dark
    brightness = cond["brightness"][:, None, None, None]
    if kind == "oracle-exposure":
        return jnp.clip(dark * 0.5 / brightness, 0.0, 1.0)
    if kind == "oracle":
        cast = jnp.asarray(ILLUMINANT_CASTS, dark.dtype)[cond["illuminant"]][:, None, None, :]
        return jnp.clip(dark / (brightness * cast), 0.0, 1.0)
    means = dark.mean(axis=(1, 2), keepdims=True) + _FLOOR
    balanced = dark * means[..., 1:2] / means
    luma = luminance(balanced).mean(axis=(1, 2, 3), keepdims=True) + _FLOOR
    return jnp.clip(balanced * level / luma, 0.0, 1.0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--inputs", nargs="+", default=list(INPUTS), choices=INPUTS)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    _, _, overrides = parse_variant("global-full")
    results: dict[str, list[float]] = {kind: [] for kind in args.inputs}
    started = time.perf_counter()
    for seed in range(args.seeds):
        cfg = TrainConfig.preset_config("full", data="builtin", seed=seed, conditions="mixed")
        data = prepare_run_data(load_run_data(cfg), cfg)
        level = float(luminance(data.train_clean).mean())
        train_cond = recorded_conditions(cfg, data.train_clean, keys.DARKEN_TRAIN)
        test_cond = recorded_conditions(cfg, data.test_clean, keys.DARKEN_TEST)
        clean_model = train_clean_model(cfg, data)
        for kind in args.inputs:
            view = dataclasses.replace(
                data,
                train_dark=normalised(data.train_dark, train_cond, kind, level),
                test_dark=normalised(data.test_dark, test_cond, kind, level),
            )
            state = train_from_model(dataclasses.replace(cfg, **overrides), clean_model, view)
            acc = state.history[-1].test_acc
            results[kind].append(acc)
            print(f"seed {seed} {kind}: global ISP test accuracy {acc:.1%}", flush=True)
    summary = {kind: {"accuracy": accs, **mean_std(accs)} for kind, accs in results.items()}
    for kind, row in summary.items():
        print(f"{kind:16s} {row['mean']:.1%} +- {row['std']:.1%}  {row['accuracy']}")
    if args.out:
        atomic_write_json(
            args.out,
            {
                "what": "global 10-stage ISP on mixed captures, by how they are normalised",
                "num_test": cfg.num_test,
                "seeds": list(range(args.seeds)),
                "results": summary,
                "wall_seconds": time.perf_counter() - started,
            },
        )


if __name__ == "__main__":
    main()
