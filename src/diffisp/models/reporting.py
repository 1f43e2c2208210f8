"""How a task's results are reported: what the report, the CLI and the figures ask a task.

Results files (``metrics.json``, ``eval.json``) record the headline metric's key (``"metric"``);
:func:`reporting_for` gives the :class:`Reporting` of that key, so readers of a file never
compare metric names to guess the task.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Reporting:
    """The reporting side of a task.

    Attributes:
      metric: the headline metric's key (e.g. ``"accuracy"``); higher is better.
      label: how tables name it (``"Accuracy"``, ``"mAP@0.5"``).
      named_in_text: whether sentences name the metric before a value ("mAP@0.5 61.0 %")
        or let the value speak for itself (an accuracy).
      proportion: the metric is a share of test images answered right, so a binomial interval
        over the test images bounds its sampling error (mAP has no such closed form).
      one_label_per_image: the targets are one class per image (figures show labels, and pick
        images by their capture conditions); else objects with boxes.
      secondary: other metrics shown beside the headline (e.g. mAP@[.5:.95]).
      train_score_name, test_name: how the epoch log names the training score and the metric.
      loss_name: how figures name the training loss.
      model_name: how sentences and tables name the task model ("CNN", "detector").
      standin_note: what a result on the built-in stand-in data is called.
    """

    metric: str
    label: str
    named_in_text: bool
    proportion: bool
    one_label_per_image: bool
    secondary: tuple[str, ...] = ()
    train_score_name: str = "score"
    test_name: str = ""
    loss_name: str = "training loss"
    model_name: str = "model"
    standin_note: str = "built-in stand-in data"

    def named(self, metric: str | None = None) -> str:
        """The metric's name as a sentence puts it before a value ("" or "mAP@0.5 ")."""
        if metric is None or metric == self.metric:
            return f"{self.label} " if self.named_in_text else ""
        return f"{metric_label(metric)} "

    def format(self, value: float | None, digits: int = 1) -> str:
        """A value of the metric (a share in [0, 1]) as a percentage; a dash if missing."""
        if value is None or value != value:
            return "-"
        return f"{value:.{digits}%}"


CLASSIFY_REPORTING = Reporting(
    metric="accuracy",
    label="Accuracy",
    named_in_text=False,
    proportion=True,
    one_label_per_image=True,
    train_score_name="acc",
    test_name="acc",
    loss_name="cross-entropy",
    model_name="CNN",
    standin_note="built-in stand-in data, not CIFAR-10",
)
DETECT_REPORTING = Reporting(
    metric="map50",
    label="mAP@0.5",
    named_in_text=True,
    proportion=False,
    one_label_per_image=False,
    secondary=("map",),
    # A detector's training score is centre recall, not mAP.
    train_score_name="score",
    test_name="map50",
    model_name="detector",
    standin_note="generated stand-in scenes",
)
_BY_METRIC = {r.metric: r for r in (CLASSIFY_REPORTING, DETECT_REPORTING)}
# How tables name metrics that are not a headline.
METRIC_LABELS = {
    "accuracy": "Accuracy",
    "map50": "mAP@0.5",
    "map": "mAP@[.5:.95]",
    "map75": "mAP@0.75",
}


def metric_label(metric: str) -> str:
    """A table's name for any metric key (unknown keys as they are)."""
    return METRIC_LABELS.get(metric, metric)


def reporting_for(metric: str | None) -> Reporting:
    """The :class:`Reporting` of a results file's headline metric (``None``: files written
    before the field existed, which are classification files). An unknown metric is reported
    plainly: named, no interval, one label per image unknown (treated as objects)."""
    if metric is None:
        return CLASSIFY_REPORTING
    if metric in _BY_METRIC:
        return _BY_METRIC[metric]
    return Reporting(metric, metric_label(metric), True, False, False, test_name=metric)
