"""A multi-seed study: the whole protocol per seed, mean +- std per method, darkness/noise sweeps.

Output directory: ``seed<k>/`` (a complete training run per seed, and its sweeps in
``seed<k>/sweeps.json``), ``eval.json`` (schema ``diffisp.eval/1``),
``figures/sweep_brightness.png`` and ``figures/sweep_noise.png``.

Resuming (``resume=True``) keeps a finished seed whose saved config and sweeps match what is
asked (nothing of it is re-trained) and continues or starts the others.
"""

from __future__ import annotations

import datetime as _dt
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from diffisp.errors import ConfigError
from diffisp.experiments.by_condition import aggregate_condition_reports
from diffisp.experiments.protocol import BRIGHTNESS_SWEEP, NOISE_SWEEP, question_pairs, sweep
from diffisp.experiments.run import (
    FigureWriter,
    environment,
    is_finished,
    resumed_config,
    run_experiment,
)
from diffisp.training.config import TrainConfig
from diffisp.util.io import atomic_write_json
from diffisp.util.stats import mean_std

EVAL_SCHEMA = "diffisp.eval/1"
SWEEPS_SCHEMA = "diffisp.sweeps/1"
SWEEPS_FILE = "sweeps.json"


def run_study(
    cfg: TrainConfig,
    seeds: Sequence[int],
    out_dir: str | Path,
    *,
    resume: bool = False,
    command: str | None = None,
    log: Callable[[str], None] = print,
    progress: bool = True,
    brightness_values: Sequence[float] = BRIGHTNESS_SWEEP,
    noise_values: Sequence[float] = NOISE_SWEEP,
    figures: FigureWriter | None = None,
) -> dict[str, Any]:
    """Run the protocol for every seed, then aggregate (and plot, given ``figures``).

    Returns the ``eval.json`` dict.
    """
    started = time.perf_counter()
    seeds = list(seeds)
    if not seeds or len(set(seeds)) != len(seeds) or any(s < 0 for s in seeds):
        raise ConfigError(f"seeds must be distinct non-negative integers; got {seeds}")
    out_dir = Path(out_dir)
    if (out_dir / "eval.json").exists() and not resume:
        raise ConfigError(f"{out_dir} already holds a study; use --resume or another --out")
    runs, sweeps_per_seed = [], []
    for seed in seeds:
        run_dir = out_dir / f"seed{seed}"
        log(f"seed {seed}: {run_dir}")
        seed_cfg = cfg.replace(seed=seed)
        values = {"brightness": list(brightness_values), "noise_sigma": list(noise_values)}
        kept = _finished_seed(run_dir, seed_cfg, values) if resume else None
        if kept is not None:
            log(f"seed {seed}: finished, kept ({run_dir / 'metrics.json'}, {SWEEPS_FILE})")
            runs.append(kept[0])
            sweeps_per_seed.append(kept[1])
            continue
        again = resume and (run_dir / "config.json").exists()
        # The seed's saved config must be the one asked for (run_experiment refuses and names
        # the difference): a resumed study that silently kept or mixed old settings would
        # aggregate runs of different experiments.
        outcome = run_experiment(
            seed_cfg,
            run_dir,
            resume=again,
            command=command,
            log=log,
            progress=progress,
            figures=figures,
            resume_command=_resume_command(command, out_dir),
        )
        runs.append(outcome.metrics)
        seed_sweeps = {
            "brightness": sweep(
                outcome.methods,
                outcome.data,
                outcome.state.cfg,
                "brightness",
                brightness_values,
                outcome.state.task,
            ),
            "noise_sigma": sweep(
                outcome.methods,
                outcome.data,
                outcome.state.cfg,
                "noise_sigma",
                noise_values,
                outcome.state.task,
            ),
        }
        sweeps_per_seed.append(seed_sweeps)
        atomic_write_json(
            run_dir / SWEEPS_FILE,
            {"schema": SWEEPS_SCHEMA, "values": values, "sweeps": seed_sweeps},
        )
    metric = runs[0].get("metric", "accuracy")
    methods = _aggregate_methods(runs, metric)
    # What each sweep holds as trained: the capture model's own ranges (mixed conditions
    # train on another brightness range than uniform low light).
    capture_model = cfg.capture.model()
    sweeps = {
        kind: _aggregate_sweep(
            sweeps_per_seed,
            kind,
            label,
            values,
            fixed={other: list(capture_model.trained_range(other))},
            trained=list(capture_model.trained_range(kind)),
            metric=metric,
        )
        for kind, label, values, other in (
            ("brightness", "brightness factor", brightness_values, "noise_sigma"),
            ("noise_sigma", "noise sigma", noise_values, "brightness"),
        )
    }
    figure_paths = [] if figures is None else figures.sweeps(out_dir / "figures", sweeps, methods)
    study = {
        "schema": EVAL_SCHEMA,
        "created": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": command,
        "task": cfg.task.name,
        "metric": metric,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "dataset": runs[0]["dataset"],
        "config": {k: v for k, v in cfg.to_dict().items() if k != "seed"},
        "seeds": seeds,
        "methods": methods,
        "comparisons": seed_comparisons(runs, metric),
        "sweeps": sweeps,
        "runs": [f"seed{s}" for s in seeds],
        "figures": [str(p.relative_to(out_dir)) for p in figure_paths],
        "environment": environment(),
    }
    if all("by_condition" in run for run in runs):
        study["by_condition"] = aggregate_condition_reports([run["by_condition"] for run in runs])
    atomic_write_json(out_dir / "eval.json", study)
    return study


def _resume_command(command: str | None, out_dir: Path) -> str:
    """What continues an interrupted study: the study's own command with ``--resume``."""
    if command is None:
        return f"diffisp eval --seeds N --out {out_dir} --resume (with the study's options)"
    return command if " --resume" in f" {command}" else f"{command} --resume"


def _finished_seed(
    run_dir: Path, cfg: TrainConfig, values: dict[str, list[float]]
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """A finished seed's metrics and sweeps, when its run is finished with ``cfg`` and its
    sweeps are over ``values``; ``None`` when it must run (or re-run its final stage).

    A finished seed of other settings is refused, naming them, as ``run_experiment`` does.
    """
    if not (is_finished(run_dir) and (run_dir / SWEEPS_FILE).is_file()):
        return None
    resumed_config(cfg, run_dir)
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text())
        cached = json.loads((run_dir / SWEEPS_FILE).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None  # damaged: the seed's final stage is redone
    if cached.get("schema") != SWEEPS_SCHEMA or cached.get("values") != values:
        return None  # other sweep points: redo the final stage to measure them
    return metrics, cached["sweeps"]


# Metrics aggregated beside the headline, when the runs' rows have them (detection: the
# COCO mAP@[.5:.95] next to the headline mAP@0.5).
SECONDARY_METRICS = ("map",)


def _aggregate_methods(
    runs: list[dict[str, Any]], metric: str = "accuracy"
) -> dict[str, dict[str, Any]]:
    """Per method: the headline ``metric`` per seed (under its own key), its mean and std,
    the gap closed, and ``secondary`` ``{name: {"values", "mean", "std"}}`` for
    :data:`SECONDARY_METRICS` other than the headline that every run reports."""
    out = {}
    for key, first in runs[0]["results"].items():
        rows = [run["results"][key] for run in runs]
        values = [row[metric] for row in rows]
        gaps = [row.get("gap_closed") for row in rows]
        out[key] = {
            "label": first.get("label", key),
            **{k: first[k] for k in ("group", "learned") if k in first},
            "description": first["description"],
            metric: values,
            **mean_std(values),
            "num_samples": first["num_samples"],
            "gap_closed": None if any(g is None for g in gaps) else mean_std(gaps),
        }
        secondary = {
            name: {"values": [row[name] for row in rows], **mean_std([row[name] for row in rows])}
            for name in SECONDARY_METRICS
            if name != metric and all(name in row for row in rows)
        }
        if secondary:
            out[key]["secondary"] = secondary
        for extra in ("active_stages", "isp_ms_per_image"):
            if all(extra in row for row in rows):
                out[key][extra] = mean_std([row[extra] for row in rows])
    return out


def seed_comparisons(runs: list[dict[str, Any]], metric: str) -> dict[str, dict[str, Any]]:
    """The run's two questions (:func:`~diffisp.experiments.protocol.question_pairs`) over
    seeds: per group, the learned ISP and the method without one of best mean ``metric``, and
    their difference per seed (both on the seed's same test images) with its mean and s.d.

    Returns ``{"retrained"|"frozen": {"a", "b", "differences", "mean", "std"}}``; a question
    whose rows the runs do not have (or rows without groups, from older runs) is left out.
    """

    def mean(key: str) -> float:
        return float(np.mean([run["results"][key][metric] for run in runs]))

    out = {}
    for group, (a, b) in question_pairs(runs[0]["results"], mean).items():
        differences = [run["results"][a][metric] - run["results"][b][metric] for run in runs]
        out[group] = {"a": a, "b": b, "differences": differences, **mean_std(differences)}
    return out


def _aggregate_sweep(
    per_seed, kind, parameter, values, *, fixed, trained, metric="accuracy"
) -> dict[str, Any]:
    keys = per_seed[0][kind].keys()
    methods = {}
    for key in keys:
        curves = np.asarray([s[kind][key] for s in per_seed])  # (seeds, points)
        std = curves.std(axis=0, ddof=1) if len(curves) > 1 else np.zeros(curves.shape[1])
        methods[key] = {"mean": curves.mean(axis=0).tolist(), "std": std.tolist()}
    return {
        "parameter": parameter,
        "metric": metric,
        "values": list(values),
        "fixed": fixed,
        "trained_range": trained,
        "methods": methods,
    }


def headline(study: dict[str, Any]) -> list[str]:
    """Plain-language lines about the sweeps: where the learned ISP helps most and least."""
    lines = []
    for data in study["sweeps"].values():
        learned = np.asarray(data["methods"]["learned_isp_phase2"]["mean"])
        rivals = [k for k in ("dark_cnn", "fixed_gamma_cnn") if k in data["methods"]]
        best = np.max([data["methods"][k]["mean"] for k in rivals], axis=0)
        advantage = learned - best
        values = data["values"]
        i, j = int(np.argmax(advantage)), int(np.argmin(advantage))
        lines.append(
            f"{data['parameter']}: learned ISP (phase 2) minus the best fine-tuned baseline is "
            f"largest at {values[i]:g} ({advantage[i]:+.1%}) and smallest at {values[j]:g} "
            f"({advantage[j]:+.1%})"
        )
    return lines


__all__ = ["EVAL_SCHEMA", "headline", "run_study"]
