"""diffisp's conventional pipeline against LibRaw on the two shared DNGs; the white-balance check.

    PYTHONPATH=src python scripts/compare_rawpy.py [--raw-dir DIR] [--figure PNG]

(defaults: the first ``shared/data/raw`` above the repository; docs/figures/raw_dngs.png).

For each file: diffisp's :func:`~diffisp.isp.raw.conventional_pipeline` (bilinear) and
``rawpy.postprocess`` with the same maths (:data:`~diffisp.experiments.raw_bench.RAWPY_EQUIVALENT`,
LINEAR demosaic, sRGB), PSNR over the whole image and without a 4-pixel border; then the grey
patches of the colour chart rendered (linear sRGB) with the white balance read three ways: the
file's value as LibRaw reports it (divided by G), that value taken as a neutral (inverted), and
the gains that make the chart's grey patches grey (measured here). Writes a figure: diffisp and
rawpy side by side, and diffisp with the measured white balance.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
import rawpy

from diffisp.data.raw_file import RawMetadataWarning, read_raw
from diffisp.experiments.raw_bench import psnr, rawpy_render
from diffisp.isp.raw import conventional_linear, conventional_pipeline
from diffisp.ops.raw import demosaic_bilinear

# Centres (row, column) of the chart's grey patches, brightest first, in the visible area; the
# half-size of the square sampled around each.
GREY_PATCHES = {
    "rawpipe_colorchecker.dng": ([(820, x) for x in (100, 350, 610, 870)], 25),
    "tinydng_colorchart.dng": ([(930, x) for x in (700, 810, 920, 1030)], 18),
}
BORDER = 4


def grey_patch_rgb(linear: np.ndarray, name: str) -> np.ndarray:
    """Mean linear RGB of each grey patch, ``(patches, 3)``."""
    centres, half = GREY_PATCHES[name]
    return np.array(
        [linear[y - half : y + half, x - half : x + half].mean((0, 1)) for y, x in centres]
    )


def chroma(rgb: np.ndarray) -> float:
    """Mean over patches of (max - min) / mean of the channels: 0 for perfectly grey patches."""
    return float(np.mean((rgb.max(1) - rgb.min(1)) / rgb.mean(1)))


def compare(path: Path) -> dict:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RawMetadataWarning)
        capture, info = read_raw(path)
    ours = np.asarray(conventional_pipeline(capture, tone=False))[0]
    with rawpy.imread(str(path)) as raw:
        reference = rawpy_render(raw).astype(np.float32) / 65535
    assert reference.shape == ours.shape, (reference.shape, ours.shape)
    inner = (slice(BORDER, -BORDER), slice(BORDER, -BORDER))
    gains = np.asarray(info.wb_gains)
    camera = np.asarray(demosaic_bilinear(capture.mosaic, capture.pattern))[0]
    camera_rgb = grey_patch_rgb(camera, path.name)
    # Gains that make the patches' *camera* RGB grey (before the matrix, whose rows sum to 1).
    measured = camera_rgb[:, 1].sum() / camera_rgb.sum(0)
    readings = {
        "as reported, / G (multipliers)": gains,
        "inverted (taken as a neutral)": (1 / gains) / (1 / gains[1]),
        "measured on the grey patches": measured,
    }
    wb = {}
    for label, g in readings.items():
        balanced = capture.replace(wb_gains=np.asarray(g, np.float32)[None])
        linear = np.asarray(conventional_linear(balanced))[0]
        wb[label] = {
            "gains": [round(float(v), 3) for v in g],
            "grey_chroma": chroma(grey_patch_rgb(linear, path.name)),
        }
    return {
        "name": path.name,
        "ours": ours,
        "reference": reference,
        "psnr": psnr(ours, reference),
        "psnr_inner": psnr(ours[inner], reference[inner]),
        "warnings": [str(w.message) for w in caught],
        "white_balance": wb,
        "grey_balanced": np.asarray(
            conventional_pipeline(
                capture.replace(wb_gains=np.asarray(measured, np.float32)[None]), tone=False
            )
        )[0],
    }


def figure(results: list[dict], out: Path, step: int = 3) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = {
        "ours": "diffisp conventional (bilinear)",
        "reference": "rawpy.postprocess (LINEAR), same settings",
        "grey_balanced": "diffisp, WB from the chart's grey patches",
    }
    fig, axes = plt.subplots(len(results), 3, figsize=(16, 3.9 * len(results)))
    for row, result in zip(axes, results, strict=True):
        for ax, (key, label) in zip(row, columns.items(), strict=True):
            ax.imshow(result[key][::step, ::step])
            ax.set_title(f"{result['name']}: {label}", fontsize=9)
            ax.axis("off")
        row[0].text(
            0.01,
            0.02,
            f"PSNR vs rawpy {result['psnr']:.1f} dB",
            transform=row[0].transAxes,
            color="w",
            fontsize=9,
        )
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)


def main() -> None:
    here = Path(__file__).resolve().parent.parent
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    shared = [d / "shared/data/raw" for d in here.parents if (d / "shared/data/raw").is_dir()]
    parser.add_argument("--raw-dir", type=Path, default=shared[0] if shared else None)
    parser.add_argument("--figure", type=Path, default=here / "docs" / "figures" / "raw_dngs.png")
    args = parser.parse_args()
    if args.raw_dir is None:
        parser.error("no shared/data/raw beside the repository or above it: give --raw-dir")
    results = [compare(args.raw_dir / name) for name in GREY_PATCHES]
    for result in results:
        print(
            f"{result['name']}: PSNR vs rawpy {result['psnr']:.2f} dB, without a "
            f"{BORDER}-pixel border {result['psnr_inner']:.2f} dB"
        )
        for message in result["warnings"]:
            print(f"  warning: {message}")
        for label, row in result["white_balance"].items():
            print(
                f"  WB {label:34s} gains {row['gains']}: grey-patch chroma {row['grey_chroma']:.3f}"
            )
    figure(results, args.figure)
    print(f"wrote {args.figure}")


if __name__ == "__main__":
    main()
