"""The figures of a ``diffisp tune`` run: what the learned ISP does in front of the user's model.

Drawn for the experiments layer through :data:`TUNE_FIGURES` (passed in by the CLI, as the run
figures are), so ``experiments.tune`` never imports the report layer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from diffisp.models.reporting import reporting_for
from diffisp.report.figures import (
    _chain_view,
    adaptive_decisions_figure,
    before_after_figure,
    parameters_figure,
    shown_test_images,
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
        dark, processed, labels, names = shown_test_images(
            isp, data, class_names, one_label=reporting_for(metric).one_label_per_image, n=SHOWN
        )
        n = len(dark)
        before = before_after_figure(
            directory / "before_after.png",
            dark,
            processed,
            labels,
            names,
            accuracies=(results["no_isp"][metric], results["learned_isp"][metric])
            if reporting_for(metric).proportion
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
