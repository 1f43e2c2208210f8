"""The figures of a ``diffisp tune`` run: what the learned ISP does in front of the user's model.

Drawn for the experiments layer through :data:`TUNE_FIGURES` (passed in by the CLI, as the run
figures are), so ``experiments.tune`` never imports the report layer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import numpy as np

from diffisp.capture.raw_capture import RawCapture
from diffisp.isp.raw import conventional_pipeline
from diffisp.report.figures import (
    _chain_view,
    adaptive_decisions_figure,
    before_after_figure,
    parameters_figure,
)

SHOWN = 8


class TuneFigures:
    """Before/after and the learned ISP (its parameters, or per-image decisions when adaptive)."""

    def tune(
        self,
        directory: Path,
        isp: Any,
        data: Any,
        results: dict[str, dict],
        metric: str,
        class_names: Any,
    ) -> list[Path]:
        """Draw into ``directory`` for the test images of ``data`` (a ``RunData``); ``results``
        are :func:`~diffisp.experiments.tune.compare`'s rows, ``metric`` their headline key.
        Returns the files written."""
        directory.mkdir(parents=True, exist_ok=True)
        inputs = jax.tree.map(lambda a: a[:SHOWN], data.test_dark)  # images or a RawCapture
        raw = isinstance(inputs, RawCapture)
        dark = np.asarray(conventional_pipeline(inputs) if raw else inputs)
        processed = np.asarray(isp(inputs))
        n = len(dark)
        if metric == "accuracy":
            labels, names = np.asarray(data.test_labels[:n]), class_names
        else:  # detection: a scene has boxes, not one label
            labels, names = np.arange(n), [f"scene {i}" for i in range(n)]
        before = before_after_figure(
            directory / "before_after.png",
            dark,
            processed,
            labels,
            names,
            accuracies=(results["no_isp"][metric], results["learned_isp"][metric])
            if metric == "accuracy"
            else None,
            n=n,
        )
        chain_isp, chain_inputs = _chain_view(isp, data.test_dark, 6)
        if chain_isp is None:
            return [before]
        if chain_isp.per_image:
            view = adaptive_decisions_figure(
                directory / "adaptive_decisions.png", chain_isp, chain_inputs, labels[:6], names
            )
        else:
            view = parameters_figure(directory / "learned_parameters.png", chain_isp)
        return [before, view]


TUNE_FIGURES = TuneFigures()
