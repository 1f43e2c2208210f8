"""The run's figures (matplotlib, Agg backend, PNG, written atomically)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from flax import nnx

from diffisp.capture.raw_capture import RawCapture
from diffisp.isp.chain import ISP, LearnedISP, chain_steps
from diffisp.isp.raw import conventional_pipeline
from diffisp.models.reporting import reporting_for
from diffisp.report.detection_figures import run_detections_figure
from diffisp.training.state import EpochRecord
from diffisp.util.io import atomic_savefig

DPI = 120


def _save(fig: plt.Figure, path: Path) -> Path:
    atomic_savefig(fig, path, dpi=DPI, bbox_inches="tight", facecolor="white")
    plt.close(fig)
    return path


def _image_rows(rows: Sequence[tuple[str, np.ndarray]], titles: Sequence[str], suptitle: str):
    cols = len(rows[0][1])
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.6 * cols, 1.75 * len(rows)), squeeze=False)
    for r, (label, images) in enumerate(rows):
        for c in range(cols):
            ax = axes[r, c]
            ax.imshow(np.clip(images[c], 0, 1), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(titles[c], fontsize=8)
        axes[r, 0].set_ylabel(label, fontsize=9)
    fig.suptitle(suptitle, fontsize=11)
    fig.tight_layout()
    return fig


def samples_figure(
    path: Path, clean: np.ndarray, dark: np.ndarray, labels: np.ndarray, class_names, *, n: int = 8
) -> Path:
    """Clean / dark / dark x4 for the first ``n`` images."""
    n = min(n, len(labels))
    titles = [class_names[int(label)] for label in labels[:n]]
    rows = [("clean", clean[:n]), ("dark", dark[:n]), ("dark x4", np.clip(dark[:n] * 4, 0, 1))]
    mean = float(np.mean(dark)) / max(float(np.mean(clean)), 1e-8)
    fig = _image_rows(rows, titles, f"Low-light simulation (dark/clean mean ratio {mean:.2f})")
    return _save(fig, path)


def training_curves_figure(
    path: Path, history: Sequence[EpochRecord], metric: str = "accuracy"
) -> Path:
    """Loss and the test ``metric`` (the task's headline) per epoch across the phases, with the
    phase boundaries marked."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    x = np.arange(1, len(history) + 1)
    loss = [r.loss for r in history]
    ax_loss.plot(x, loss, "o-", color="tab:blue", label="train loss")
    ax_acc.plot(x, [r.train_acc for r in history], "o-", color="tab:orange", label="train (batch)")
    ax_acc.plot(x, [r.test_acc for r in history], "s--", color="tab:green", label="test")
    names = {0: "phase 0: CNN on clean", 1: "phase 1: ISP only, dark", 2: "phase 2: joint, dark"}
    colours = {0: "tab:gray", 1: "tab:purple", 2: "tab:olive"}
    for ax in (ax_loss, ax_acc):
        for phase in sorted({r.phase for r in history}):
            epochs = [i + 1 for i, r in enumerate(history) if r.phase == phase]
            ax.axvspan(
                min(epochs) - 0.5,
                max(epochs) + 0.5,
                color=colours[phase],
                alpha=0.12,
                label=names[phase] if ax is ax_loss else None,
            )
        ax.set_xlabel("epoch (all phases)")
        ax.grid(alpha=0.3)
    reporting = reporting_for(metric)
    ax_loss.set_ylabel(reporting.loss_name)
    label = reporting.label
    ax_acc.set_ylabel(label if reporting.proportion else f"{label} (test), score (train)")
    ax_acc.set_ylim(0, 1)
    ax_loss.legend(fontsize=8)
    ax_acc.legend(loc="lower right", fontsize=8)
    fig.suptitle(f"Training curves (test {metric}: test images in the phase's condition)")
    fig.tight_layout()
    return _save(fig, path)


def parameters_figure(path: Path, isp: ISP) -> Path:
    """Tone curve vs identity, CCM heatmap, and every scalar parameter of the learned ISP."""
    values = {stage: {k: np.asarray(v) for k, v in p.items()} for stage, p in isp.values().items()}
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ax_tone, ax_ccm, ax_bar = axes
    if "tone_curve" in values:
        knots = values["tone_curve"]["knots"]
        xs = np.linspace(0, 1, len(knots))
        ax_tone.plot([0, 1], [0, 1], "k--", alpha=0.4, label="identity")
        ax_tone.plot(xs, np.clip(knots, 0, 1), "o-", color="crimson", label="learned")
        ax_tone.set_xlim(0, 1)
        ax_tone.set_ylim(0, 1.02)
        ax_tone.legend()
        ax_tone.set_xlabel("input")
        ax_tone.set_ylabel("output")
        ax_tone.grid(alpha=0.3)
    else:
        ax_tone.axis("off")
    ax_tone.set_title("Tone curve")
    if "ccm" in values:
        m = values["ccm"]["matrix"]
        limit = max(1.0, float(np.abs(m).max()))
        im = ax_ccm.imshow(m, cmap="RdBu_r", vmin=-limit, vmax=limit)
        for r in range(3):
            for c in range(3):
                ax_ccm.text(c, r, f"{m[r, c]:.2f}", ha="center", va="center", fontsize=11)
        ax_ccm.set_xticks(range(3), ["R in", "G in", "B in"])
        ax_ccm.set_yticks(range(3), ["R out", "G out", "B out"])
        fig.colorbar(im, ax=ax_ccm, shrink=0.8)
    else:
        ax_ccm.axis("off")
    ax_ccm.set_title("Colour correction matrix")
    scalars = scalar_parameters(values)
    if scalars:
        names, vals = zip(*scalars.items(), strict=True)
        bars = ax_bar.barh(names, vals, color="tab:blue")
        for bar, v in zip(bars, vals, strict=True):
            ax_bar.text(
                bar.get_width(),
                bar.get_y() + bar.get_height() / 2,
                f" {v:.3g}",
                va="center",
                fontsize=8,
            )
        ax_bar.axvline(0, color="black", linewidth=0.8)
        ax_bar.invert_yaxis()
    ax_bar.set_title("Scalar parameters (identity: gains/factors 1, strengths 0)")
    fig.suptitle("Learned ISP parameters")
    fig.tight_layout()
    return _save(fig, path)


def scalar_parameters(values: dict[str, dict[str, np.ndarray]]) -> dict[str, float]:
    """Every scalar (and per-channel gain) parameter as ``"stage.name": value``."""
    out: dict[str, float] = {}
    for stage, params in values.items():
        for name, v in params.items():
            if v.ndim == 0:
                out[f"{stage}.{name}"] = float(v)
            elif stage == "white_balance":
                for channel, g in zip("RGB", v, strict=True):
                    out[f"wb.{channel}"] = float(g)
    return out


def before_after_figure(
    path: Path,
    dark: np.ndarray,
    processed: np.ndarray,
    labels: np.ndarray,
    class_names,
    *,
    accuracies: tuple[float, float] | None = None,
    n: int = 8,
) -> Path:
    """Dark input, dark x4 and the learned ISP's output for ``n`` test images."""
    n = min(n, len(labels))
    titles = [class_names[int(label)] for label in labels[:n]]
    rows = [
        ("dark", dark[:n]),
        ("dark x4", np.clip(dark[:n] * 4, 0, 1)),
        ("learned ISP", processed[:n]),
    ]
    title = "Before / after the learned ISP"
    if accuracies is not None:
        title += f" (test accuracy: no ISP {accuracies[0]:.1%} -> learned {accuracies[1]:.1%})"
    return _save(_image_rows(rows, titles, title), path)


_SWEEP_STYLE = {
    "no_isp": ("tab:gray", ":"),
    "fixed_gamma": ("tab:brown", ":"),
    "auto_isp": ("tab:pink", ":"),
    "histogram_eq": ("tab:olive", ":"),
    "dark_cnn": ("tab:blue", "--"),
    "fixed_gamma_cnn": ("tab:cyan", "--"),
    "learned_isp_phase1": ("tab:orange", "-"),
    "learned_isp_phase2": ("tab:red", "-"),
    "clean_oracle": ("black", "-."),
}
_VARIANT_COLOURS = ("tab:green", "tab:purple", "navy", "magenta", "darkgoldenrod", "lime", "teal")


def sweep_figure(path: Path, data: dict, methods: dict) -> Path:
    """Accuracy (mean +- std over seeds) of every method along one sweep; trained range shaded."""
    xs = np.asarray(data["values"], dtype=float)
    log_x = data["parameter"].startswith("brightness")
    fig, ax = plt.subplots(figsize=(8.5, 5))
    low, high = data["trained_range"]
    if high > low:
        ax.axvspan(low, high, color="gold", alpha=0.2, label="training range")
    else:
        ax.axvline(low, color="goldenrod", linewidth=6, alpha=0.3, label="training value")
    variant_colours = iter(_VARIANT_COLOURS)
    for key, curve in data["methods"].items():
        # ISP variants (global-full, adaptive...) get colours no fixed row uses, and square
        # markers, so that no two curves look alike.
        if key in _SWEEP_STYLE:
            (colour, style), marker = _SWEEP_STYLE[key], "o"
        else:
            colour, style, marker = next(variant_colours, None), "-", "s"
        mean, std = np.asarray(curve["mean"]), np.asarray(curve["std"])
        label = methods.get(key, {}).get("label", key)
        (line,) = ax.plot(xs, mean, style, marker=marker, markersize=3, color=colour, label=label)
        band = line.get_color()  # the band matches its line even when the colour was automatic
        ax.fill_between(xs, mean - std, mean + std, color=band, alpha=0.12, linewidth=0)
    if log_x:
        ax.set_xscale("log")
    ax.set_xticks(xs, [f"{x:g}" for x in xs])
    ax.set_xlabel(
        data["parameter"] + "  (" + ", ".join(f"{k} {v}" for k, v in data["fixed"].items()) + ")"
    )
    metric = data.get("metric", "accuracy")  # studies before detection have no "metric"
    ax.set_ylabel(f"test {metric}")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.set_title(f"{metric} vs {data['parameter']} (ISP trained once on the shaded range)")
    fig.tight_layout()
    return _save(fig, path)


# Dark inputs are brightened this much for viewing in the figures (never for a metric).
VIEW_GAIN = 4.0


def adaptive_decisions_figure(
    path: Path,
    isp: LearnedISP,
    dark: np.ndarray,
    labels,
    class_names,
    *,
    title: str = "Adaptive ISP: stages run per image (grey: skipped) and the image after each",
) -> Path:
    """AdaptiveISP-style: per test image, the stages that ran and the image after each of them.

    The images after each stage are :func:`~diffisp.isp.chain.chain_steps` of the ISP's own
    decisions (per-image values, boolean gates): what the ISP's inference computes.
    """
    names = list(isp.stage_names)
    active, values, steps = jax.tree.map(np.asarray, _decided_steps(isp, jnp.asarray(dark)))
    active = active.astype(bool)
    output = steps[-1] if steps else dark
    rows, cols = len(dark), len(names) + 2
    fig, axes = plt.subplots(rows, cols, figsize=(1.25 * cols, 1.45 * rows), squeeze=False)
    for r in range(rows):
        # The input is shown x4 for viewing; so is every image before the exposure stage has
        # run, else a stage there (white balance) would seem to darken the image.
        gain = VIEW_GAIN
        axes[r, 0].imshow(np.clip(dark[r] * gain, 0, 1), interpolation="nearest")
        axes[r, 0].set_ylabel(class_names[int(labels[r])], fontsize=8)
        for s, name in enumerate(names):
            ax = axes[r, s + 1]
            if name == "exposure" and active[r, s]:
                gain = 1.0
            if active[r, s]:
                ax.imshow(np.clip(steps[s][r] * gain, 0, 1), interpolation="nearest")
                shown = " (x4)" if gain != 1.0 else ""
                ax.set_title(
                    _short_value(name, {k: v[r] for k, v in values[s].items()}) + shown,
                    fontsize=6,
                )
            else:
                ax.set_facecolor("#eeeeee")
                ax.text(
                    0.5,
                    0.5,
                    "skipped",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="grey",
                    transform=ax.transAxes,
                )
        axes[r, -1].imshow(np.clip(output[r], 0, 1), interpolation="nearest")
        axes[r, -1].set_title(f"{int(active[r].sum())} stages", fontsize=7)
    for c, column in enumerate(["input x4", *names, "output"]):
        axes[0, c].set_xlabel(column, fontsize=7)
        axes[0, c].xaxis.set_label_position("top")
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


@nnx.jit
def _decided_steps(isp: LearnedISP, dark: jax.Array) -> tuple[jax.Array, list, list]:
    """The adaptive ISP's gates, per-image values and image after each stage, in one compiled
    call (run op by op, the figure spent seconds compiling each small op)."""
    decisions = isp.decisions(dark)
    names = list(decisions["stage_names"])
    values = [decisions["values"][name] for name in names]
    steps = chain_steps(dark, names, values, gates=decisions["active"])
    return decisions["active"], values, steps


def _short_value(stage: str, values: dict) -> str:
    """One number that says what a stage did to one image, for figure titles."""
    first = {
        "exposure": "ev",
        "gamma": "gamma",
        "contrast": "factor",
        "saturation": "factor",
        "desaturation": "strength",
        "sharpen": "strength",
        "denoise": "strength",
    }
    key = first.get(stage)
    if key is None:
        return ""
    return f"{key} {float(np.asarray(values[key]).ravel()[0]):.2f}"


def _chain_view(isp: Any, inputs: Any, n: int) -> tuple[Any, np.ndarray]:
    """The stage-chain ISP and its input for the first ``n`` inputs: for a RAW ISP, the chain
    behind its RAW front (``None`` if there is none) and the front's output."""
    inputs = jax.tree.map(lambda a: a[:n], inputs)
    if isinstance(inputs, RawCapture):
        return isp.back, np.asarray(isp.front(inputs))
    return isp, np.asarray(inputs)


def shown_test_images(
    isp: Any, data: Any, class_names: Any, *, one_label: bool, n: int = 8
) -> tuple[np.ndarray, np.ndarray, np.ndarray, Any]:
    """The first ``n`` test images of ``data`` (a ``RunData``) as a person sees them (a RAW
    capture through the camera's conventional pipeline), ``isp``'s output for them, and
    their row titles: class labels and names, or ``scene i`` for detection (``one_label``
    false: a scene has boxes, not one label)."""
    inputs = jax.tree.map(lambda a: a[:n], data.test_dark)  # images or a RawCapture
    raw = isinstance(inputs, RawCapture)
    dark = np.asarray(conventional_pipeline(inputs) if raw else inputs)
    processed = np.asarray(_processed(isp, inputs) if isinstance(isp, nnx.Module) else isp(inputs))
    n = len(dark)
    if one_label:
        return dark, processed, np.asarray(data.test_labels[:n]), class_names
    return dark, processed, np.arange(n), [f"scene {i}" for i in range(n)]


@nnx.jit
def _processed(isp: Any, inputs: Any) -> jax.Array:
    # One compiled call (op by op, an ISP's stages compiled some 80 small programs).
    return isp(inputs)


def _by_condition(data: Any, n: int) -> np.ndarray | None:
    """Indices of ``n`` test images evenly spread over the recorded brightness, darkest first
    (``None`` without recorded capture conditions)."""
    conditions = getattr(data, "test_conditions", None)
    if not conditions or "brightness" not in conditions:
        return None
    order = np.argsort(np.asarray(conditions["brightness"]))
    return order[np.linspace(0, len(order) - 1, min(n, len(order))).round().astype(int)]


class ReportFigures:
    """The figures of a run and of a study, drawn for the run layer (``diffisp train``/``eval``)."""

    def run(
        self, directory: Path, outcome: Any, dataset: Any, results: dict[str, dict]
    ) -> list[Path]:
        """Samples, training curves, the learned ISP, before/after, adaptive decisions.

        ``outcome`` is the run's :class:`diffisp.experiments.run.RunOutcome`.
        """
        state, data, methods = outcome.state, outcome.data, outcome.methods
        n = 8
        inputs = jax.tree.map(lambda a: a[:n], data.test_dark)  # images or a RawCapture
        metric, reporting = state.task.headline, state.task.reporting
        dark, processed, labels, names = shown_test_images(
            state.isp, data, dataset.class_names, one_label=reporting.one_label_per_image, n=n
        )
        # AdaptiveISP-style figures for the adaptive variants: which stages ran on which image.
        # With mixed capture conditions the six images span the brightness range, darkest first.
        picked = _by_condition(data, 6) if reporting.one_label_per_image else None
        shown = inputs if picked is None else jax.tree.map(lambda a: a[picked], data.test_dark)
        shown_labels = labels[:6] if picked is None else np.asarray(data.test_labels)[picked]
        variants = [
            adaptive_decisions_figure(
                directory / f"adaptive_decisions_{m.key}.png",
                *_chain_view(m.isp, shown, 6),
                shown_labels,
                names,
                title=f"{m.label}: stages run per image (grey: skipped) and the image after each",
            )
            for m in methods
            if m.isp is not None and m.isp.per_image and m.isp is not state.isp
        ]
        chain_isp, chain_inputs = _chain_view(state.isp, shown, 6)
        if chain_isp is None:
            isp_figure = None
        elif chain_isp.per_image:  # which stages ran on which image
            isp_figure = adaptive_decisions_figure(
                directory / "adaptive_decisions.png", chain_isp, chain_inputs, shown_labels, names
            )
        else:  # a global ISP: its one parameter set
            isp_figure = parameters_figure(directory / "learned_parameters.png", chain_isp)
        curves = training_curves_figure(directory / "training_curves.png", state.history, metric)
        if not reporting.one_label_per_image:
            boxes = run_detections_figure(
                directory / "detections.png", methods, data, state.task, dataset.class_names
            )
            return [f for f in (boxes, curves, isp_figure, *variants) if f is not None]
        figures = [
            samples_figure(
                directory / "samples.png", np.asarray(data.test_clean[:n]), dark, labels, names
            ),
            curves,
            isp_figure,
            before_after_figure(
                directory / "before_after.png",
                dark,
                processed,
                labels,
                names,
                accuracies=(
                    results["no_isp"]["accuracy"],
                    results["learned_isp_phase2"]["accuracy"],
                ),
            ),
            *variants,
        ]
        return [f for f in figures if f is not None]

    def sweeps(
        self, directory: Path, sweeps: dict[str, Any], methods: dict[str, Any]
    ) -> list[Path]:
        return [
            sweep_figure(directory / "sweep_brightness.png", sweeps["brightness"], methods),
            sweep_figure(directory / "sweep_noise.png", sweeps["noise_sigma"], methods),
        ]


FIGURES = ReportFigures()
