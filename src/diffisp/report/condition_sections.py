"""The "by capture condition" section of a study with mixed conditions (``eval.json``'s
``by_condition``): accuracy per condition bin for the methods that matter, and which ISP stages
an adaptive ISP runs in each bin."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from diffisp.report.html import Markup, join, pct, pct_pm, table, tag
from diffisp.report.sections import as_dict

# Rows compared per bin, when present: the floor, the fair baseline, the learned ISPs, the
# ceiling; with the CNN fine-tuned behind the ISP (phase 2), and in front of the frozen
# clean-trained CNN (phase 1, the ISP variants' "_frozen" rows).
_TUNED = ("no_isp", "dark_cnn", "learned_isp_phase2", "global_full")
_FROZEN = ("no_isp", "learned_isp_phase1")
_CEILING = ("clean_oracle",)
_FROZEN_SUFFIX = "_frozen"  # of the ISP variants' phase-1 rows (experiments.protocol)


def _compared_methods(accuracy: Mapping[str, Any], frozen: bool) -> list[str]:
    if frozen:
        variants = [k for k in accuracy if k.endswith(_FROZEN_SUFFIX)]
        return [k for k in (*_FROZEN, *variants, *_CEILING) if k in accuracy] if variants else []
    adaptive = [k for k in accuracy if k.startswith("adaptive") and not k.endswith(_FROZEN_SUFFIX)]
    return [k for k in (*_TUNED, *adaptive, *_CEILING) if k in accuracy]


def _accuracy_tables(
    accuracy: Mapping[str, Any], methods: list[str], labels: Mapping[str, str], setting: str
) -> list[Any]:
    parts = []
    first = as_dict(accuracy[methods[0]])
    for kind, bins in first.items():
        rows = []
        for label, cell in as_dict(bins).items():
            count = as_dict(cell).get("num_samples")
            n = count[0] if isinstance(count, list) and count else count
            cells = [f"{label} (n={n})"]
            for key in methods:
                stat = as_dict(as_dict(as_dict(accuracy[key]).get(kind)).get(label))
                cells.append(pct_pm(stat.get("mean"), stat.get("std")))
            rows.append(cells)
        headers = [kind, *(labels.get(k, k) for k in methods)]
        parts.append(tag("h3", f"Accuracy by {kind}{setting}"))
        parts.append(table(headers, rows, numeric=range(1, len(headers))))
    return parts


def conditions_section(by_condition: Any, labels: Mapping[str, str]) -> Markup | str:
    """Tables: accuracy (mean ± s.d. over seeds) per bin of each condition kind; stage usage
    per darkness bin for each per-image ISP; distinct gate patterns per seed."""
    data = as_dict(by_condition)
    accuracy = as_dict(data.get("accuracy"))
    if not accuracy:
        return ""
    tuned, frozen = _compared_methods(accuracy, False), _compared_methods(accuracy, True)
    parts = [
        tag("h2", "Results by capture condition"),
        tag(
            "p",
            "Every test image has its own capture condition (mixed conditions): brightness, "
            "sensor gain and noise, a colour cast, optional blur. Rows are condition bins; n is "
            "the number of test images in the bin (first seed).",
        ),
    ]
    if frozen:
        parts += _accuracy_tables(accuracy, tuned, labels, ", ISP and CNN fine-tuned (phase 2)")
        parts += _accuracy_tables(accuracy, frozen, labels, ", frozen clean-trained CNN (phase 1)")
    else:
        parts += _accuracy_tables(accuracy, tuned, labels, "")
    usage = as_dict(data.get("gate_usage"))
    patterns = as_dict(data.get("distinct_gate_patterns"))
    for key, kinds in usage.items():
        if not key.startswith("adaptive"):
            continue
        darkness = as_dict(as_dict(kinds).get("darkness"))
        if not darkness:
            continue
        stages = list(as_dict(next(iter(darkness.values()))))
        rows = [
            [label, *(pct(as_dict(rates).get(s), 0) for s in stages)]
            for label, rates in darkness.items()
        ]
        counts = patterns.get(key)
        note = f"; distinct gate patterns per seed: {counts}" if counts else ""
        parts.append(tag("h3", f"{labels.get(key, key)}: share of images each stage runs on"))
        parts.append(tag("p", f"By darkness bin, mean over seeds{note}."))
        parts.append(table(["darkness", *stages], rows, numeric=range(1, len(stages) + 1)))
    return join(parts)
