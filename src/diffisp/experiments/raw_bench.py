"""diffisp's conventional RAW pipeline against LibRaw (``rawpy.postprocess``): same maths, speed.

:data:`RAWPY_EQUIVALENT` are the ``postprocess`` settings that make LibRaw compute what
:func:`diffisp.isp.raw.conventional_pipeline` does: the as-shot white balance (LibRaw divides
the multipliers by their minimum, G for both shared files, diffisp by G), bilinear demosaicing
(LibRaw's ``LINEAR``), the camera's colour matrix to sRGB, the sRGB curve (``gamma=(2.4,
12.92)``), no brightening, the file's white level (LibRaw's default replaces it by the data
maximum), no flip, 16-bit output. Two differences remain by design: LibRaw
clips each channel at white *before* demosaicing (diffisp clips after the matrix), and LibRaw's
border pixels use its own border interpolation (diffisp reflects the mosaic).

:func:`bench_raw` times both at full resolution (12 MP by default: the shared DNG tiled up,
written as a DNG so that LibRaw reads it), each from the decoded mosaic in memory to a 16-bit
sRGB image in memory; file decoding is left out of both.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from diffisp.data.raw_file import SRGB_TO_XYZ, RawMetadataWarning, read_raw
from diffisp.experiments.usage import best_seconds
from diffisp.isp.raw import DEMOSAIC_METHODS, display_encode
from diffisp.ops.clip import clip_unit
from diffisp.ops.raw import apply_cfa_white_balance, camera_to_srgb, normalize_levels

RAWPY_EQUIVALENT: dict[str, Any] = {
    "use_camera_wb": True,
    "no_auto_bright": True,
    "output_bps": 16,
    "gamma": (2.4, 12.92),
    "user_flip": 0,
    # LibRaw's default (0.75) replaces the white level by the data maximum when that is above
    # 75 % of it: tinydng's 12128 of 15000, which brightens by 1.285 (a 29 dB PSNR gap).
    "adjust_maximum_thr": 0.0,
}
_CFA_CODES = {"R": 0, "G": 1, "B": 2}  # TIFF/EP CFAPattern colour codes
# ColorMatrix1 (XYZ -> camera) of the shared tinydng_colorchart.dng.
_TINYDNG_COLOR_MATRIX = np.array(
    [[0.6461, -0.1164, -0.0857], [-0.3825, 1.1597, 0.2534], [-0.0416, 0.1540, 0.6039]]
)


def rawpy_render(raw: Any) -> np.ndarray:
    """``raw.postprocess`` with :data:`RAWPY_EQUIVALENT` (bilinear, sRGB): ``(H, W, 3)`` uint16."""
    import rawpy

    return raw.postprocess(
        demosaic_algorithm=rawpy.DemosaicAlgorithm.LINEAR,
        output_color=rawpy.ColorSpace.sRGB,
        **RAWPY_EQUIVALENT,
    )


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two images in [0, 1] (inf if equal)."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def _rationals(values: Any, denominator: int = 1_000_000) -> tuple[int, ...]:
    return tuple(v for x in np.ravel(values) for v in (round(float(x) * denominator), denominator))


def write_bayer_dng(
    path: str | Path,
    counts: np.ndarray,
    *,
    pattern: str = "RGGB",
    black_level: int = 0,
    white_level: int = 65535,
    as_shot_neutral: Any = (1.0, 1.0, 1.0),
    color_matrix: Any = ((1, 0, 0), (0, 1, 0), (0, 0, 1)),
) -> Path:
    """Write a minimal uncompressed Bayer DNG that LibRaw reads (for benchmarks and tests).

    Args:
      counts: ``(H, W)`` uint16 sensor counts.
      pattern: the CFA pattern.
      black_level, white_level: the DNG's BlackLevel and WhiteLevel (any values, even wrong
        ones: tests use this to build files with metadata traps).
      as_shot_neutral: the DNG AsShotNeutral (camera RGB of a neutral surface; LibRaw reports
        its reciprocals as ``camera_whitebalance``); zeros write a file without white balance.
      color_matrix: the DNG ColorMatrix1, XYZ -> camera (3x3).
    """
    import tifffile

    counts = np.ascontiguousarray(counts, np.uint16)
    tags = [
        (33421, "H", 2, (2, 2), True),  # CFARepeatPatternDim
        (33422, "B", 4, tuple(_CFA_CODES[c] for c in pattern.upper()), True),  # CFAPattern
        (50706, "B", 4, (1, 4, 0, 0), True),  # DNGVersion
        (50714, "I", 1, int(black_level), True),  # BlackLevel
        (50717, "I", 1, int(white_level), True),  # WhiteLevel
        (50721, "2i", 9, _rationals(color_matrix), True),  # ColorMatrix1
        (50778, "H", 1, 21, True),  # CalibrationIlluminant1: D65
    ]
    if np.any(np.asarray(as_shot_neutral) != 0):
        tags.append((50728, "2I", 3, _rationals(as_shot_neutral), True))  # AsShotNeutral
    tifffile.imwrite(
        Path(path), counts, photometric=32803, extratags=tags, metadata=None, subfiletype=0
    )
    return Path(path)


def compiled_conventional(pattern: str, demosaic: str = "bilinear") -> Callable[..., jax.Array]:
    """The conventional pipeline from sensor counts to 16-bit sRGB, as one compiled function
    ``(counts (H, W) uint16, black (4,), white, gains (3,), matrix (3, 3)) -> (H, W, 3) uint16``."""
    demosaic_fn = DEMOSAIC_METHODS[demosaic]

    @jax.jit
    def render(counts, black, white, gains, matrix):
        mosaic = normalize_levels(counts[None], black, white)
        balanced = clip_unit(apply_cfa_white_balance(mosaic, gains, pattern))
        rgb = demosaic_fn(balanced, pattern)
        encoded = display_encode(camera_to_srgb(rgb, matrix), tone=False)[0]
        return jnp.round(encoded * 65535).astype(jnp.uint16)

    return render


def tiled_counts(counts: np.ndarray, height: int, width: int) -> np.ndarray:
    """``counts`` repeated to ``(height, width)`` (both even; whole 2x2 tiles are repeated)."""
    h, w = counts.shape[0] // 2 * 2, counts.shape[1] // 2 * 2
    reps = (-(-height // h), -(-width // w))
    return np.tile(counts[:h, :w], reps)[:height, :width]


def _source_mosaic(source: str | Path | None, height: int, width: int) -> dict[str, Any]:
    """Sensor counts and DNG metadata: ``source``'s tiled up, or a synthetic mosaic with the
    shared tinydng file's metadata (black 2056, white 15000, its white balance and matrix)."""
    if source is None:
        rng = np.random.default_rng(0)
        # Smooth content with noise: LibRaw's speed does not depend on it, but keep it natural.
        y, x = np.mgrid[0:height, 0:width]
        scene = 0.5 + 0.4 * np.sin(x / 97.0) * np.cos(y / 61.0)
        counts = 2056 + (15000 - 2056) * 0.3 * (scene + rng.normal(0, 0.02, scene.shape))
        return {
            "counts": np.clip(counts, 0, 65535).astype(np.uint16),
            "pattern": "RGGB",
            "black_level": 2056,
            "white_level": 15000,
            "as_shot_neutral": (0.4037, 1.0, 0.5903),
            "color_matrix": _TINYDNG_COLOR_MATRIX,
        }
    import rawpy

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RawMetadataWarning)  # the bench times, it does not check
        _, info = read_raw(source)
    with rawpy.imread(str(source)) as raw:
        counts = tiled_counts(np.array(raw.raw_image_visible), height, width)
    # The DNG ColorMatrix1 (XYZ -> camera) whose LibRaw matrix is the source's camera -> sRGB:
    # LibRaw normalises the rows, so the inverse chain up to row scale is enough.
    xyz_to_camera = np.linalg.inv(np.asarray(info.cam_to_srgb)) @ np.linalg.inv(SRGB_TO_XYZ)
    return {
        "counts": counts,
        "pattern": info.pattern,
        "black_level": round(info.black_levels[0]),
        "white_level": round(info.white_level),
        "as_shot_neutral": 1 / np.asarray(info.wb_gains),
        "color_matrix": xyz_to_camera,
    }


def bench_raw(
    source: str | Path | None = None,
    *,
    height: int = 3000,
    width: int = 4000,
    repeats: int = 3,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Megapixels per second of diffisp's compiled conventional pipeline (bilinear and Malvar)
    and of ``rawpy.postprocess`` (bilinear) on one ``height x width`` DNG.

    The DNG holds ``source``'s mosaic tiled up (or a synthetic one if ``source`` is None) and
    both pipelines use the metadata :func:`read_raw` reads from it. Both start from the decoded
    mosaic in memory and end with a 16-bit sRGB image in memory (file decoding left out of
    both); best of ``repeats`` after a warm-up (which compiles diffisp's pipeline).
    """
    import rawpy

    mosaic = _source_mosaic(source, height, width)
    counts = mosaic.pop("counts")
    megapixels = height * width / 1e6
    out: dict[str, Any] = {
        "source": "synthetic" if source is None else str(source),
        "height": height,
        "width": width,
        "repeats": repeats,
        "timed": "decoded uint16 mosaic in memory -> 16-bit sRGB in memory (no file decode)",
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = write_bayer_dng(Path(tmp) / "bench.dng", counts, **mosaic)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RawMetadataWarning)  # the matrix fallback, expected
            _, info = read_raw(path)
        with rawpy.imread(str(path)) as raw:
            log(f"rawpy.postprocess (LINEAR) on {width}x{height}")
            rawpy_render(raw)
            seconds = best_seconds(lambda: rawpy_render(raw), repeats)
            out["rawpy_linear"] = {"seconds": seconds, "megapixels_per_s": megapixels / seconds}
    black = np.asarray(info.black_levels, np.float32)
    args = (
        jnp.asarray(counts),
        black,
        np.float32(info.white_level),
        np.asarray(info.wb_gains, np.float32),
        np.asarray(info.cam_to_srgb, np.float32),
    )
    for method in ("bilinear", "malvar"):
        log(f"diffisp conventional pipeline ({method}) on {width}x{height}")
        render = compiled_conventional(info.pattern, method)
        render(*args).block_until_ready()
        seconds = best_seconds(lambda render=render: render(*args), repeats)
        out[f"diffisp_{method}"] = {"seconds": seconds, "megapixels_per_s": megapixels / seconds}
    rawpy_rate = out["rawpy_linear"]["megapixels_per_s"]
    out["speedup_vs_rawpy"] = {
        m: out[f"diffisp_{m}"]["megapixels_per_s"] / rawpy_rate for m in ("bilinear", "malvar")
    }
    return out


def print_raw_bench(result: dict[str, Any]) -> None:
    size = f"{result['width']}x{result['height']}"
    print(f"RAW -> 16-bit sRGB, {size} ({result['width'] * result['height'] / 1e6:.1f} MP)")
    for key, label in (
        ("rawpy_linear", "rawpy.postprocess, LINEAR"),
        ("diffisp_bilinear", "diffisp conventional, bilinear"),
        ("diffisp_malvar", "diffisp conventional, Malvar"),
    ):
        row = result[key]
        print(f"  {label:32s} {row['megapixels_per_s']:7.1f} MP/s  ({row['seconds'] * 1e3:.0f} ms)")
    speed = result["speedup_vs_rawpy"]
    print(f"  diffisp / rawpy: bilinear {speed['bilinear']:.2f}x, Malvar {speed['malvar']:.2f}x")


# -- batches: files per second from files on disk to files on disk --------------------------------

BATCH_SIZES = ((3000, 4000), (4000, 6000))  # 12 and 24 megapixels


def write_synthetic_folder(folder: Path, count: int, height: int, width: int) -> list[Path]:
    """``count`` synthetic Bayer DNGs of ``height x width`` (the synthetic mosaic of
    :func:`bench_raw`, each with its own noise) that both LibRaw and diffisp read."""
    folder.mkdir(parents=True, exist_ok=True)
    base = _source_mosaic(None, height, width)
    counts = base.pop("counts")
    rng = np.random.default_rng(1)
    paths = []
    for n in range(count):
        noise = rng.integers(-8, 9, counts.shape, dtype=np.int32)
        noisy = np.clip(counts.astype(np.int32) + noise, 0, 65535).astype(np.uint16)
        paths.append(write_bayer_dng(folder / f"bench_{n:03d}.dng", noisy, **base))
    return paths


def _rawpy_batch(paths: list[Path], out: Path) -> float:
    """Seconds for rawpy to read, render (:data:`RAWPY_EQUIVALENT`) and write every file as a
    16-bit TIFF, one after the other (LibRaw's demosaic is multi-threaded by OpenMP)."""
    import rawpy
    import tifffile

    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for path in paths:
        with rawpy.imread(str(path)) as raw:
            rgb = rawpy_render(raw)
        tifffile.imwrite(out / f"{path.stem}.tif", rgb, photometric="rgb", metadata=None)
    return time.perf_counter() - start


def _diffisp_batch(paths: list[Path], out: Path, workers: int) -> tuple[float, dict[str, int]]:
    """Seconds for ``diffisp apply --raw --conventional --format tiff --bits 16`` on ``paths``
    (compiled beforehand on one file of the same size), and the renderer's compile counts."""
    from diffisp.experiments.render import BatchOptions, Renderer, apply_batch

    renderer = Renderer(None, raw=True, tile=1024)
    options = BatchOptions(raw=True, fmt="tiff", bits=16, workers=workers, progress=False)
    quiet = lambda line: None  # noqa: E731
    apply_batch(paths[:1], out / "warm-up", None, options, log=quiet, warn=quiet, renderer=renderer)
    compiled = dict(renderer.traces)
    result = apply_batch(paths, out / "timed", None, options, log=quiet, warn=quiet,
                         renderer=renderer)  # fmt: skip
    if result.failed or dict(renderer.traces) != compiled:
        raise RuntimeError(f"bench batch failed or recompiled: {result.failed}, {renderer.traces}")
    return result.seconds, compiled


def bench_raw_batch(
    count: int = 8,
    *,
    sizes: tuple[tuple[int, int], ...] = BATCH_SIZES,
    workers: int = 2,
    folder: Path | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Files per second from DNG files to 16-bit TIFF files: ``rawpy`` (read, postprocess,
    tifffile) against ``diffisp apply --raw --conventional`` (decode threads, compiled once),
    on the same ``count`` synthetic files per size; everything from disk to disk."""
    rows, load_before = [], os.getloadavg()
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        for height, width in sizes:
            root = Path(tmp) / f"{height}x{width}"
            log(f"writing {count} synthetic DNGs of {width}x{height}")
            paths = write_synthetic_folder(root / "in", count, height, width)
            log(f"rawpy.postprocess + TIFF on {count} files")
            rawpy_seconds = _rawpy_batch(paths, root / "rawpy")
            log(f"diffisp apply --raw --conventional --format tiff --bits 16 on {count} files")
            diffisp_seconds, compiled = _diffisp_batch(paths, root / "diffisp", workers)
            rows.append(
                {
                    "height": height,
                    "width": width,
                    "megapixels": height * width / 1e6,
                    "files": count,
                    "rawpy_files_per_s": count / rawpy_seconds,
                    "diffisp_files_per_s": count / diffisp_seconds,
                    "speedup_vs_rawpy": rawpy_seconds / diffisp_seconds,
                    "compiles": compiled,
                }
            )
            shutil.rmtree(root, ignore_errors=True)
    return {
        "timed": "DNG files on disk -> 16-bit TIFF files on disk (decode, render, encode, write)",
        "workers": workers,
        "cpus": os.cpu_count(),
        # Others' jobs share the CPUs: the 1-minute load average before and after, to read the
        # numbers by.
        "load_average": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "rows": rows,
    }


def print_raw_batch(result: dict[str, Any]) -> None:
    print(f"RAW batches, files/s ({result['timed']}; diffisp with {result['workers']} workers)")
    for row in result["rows"]:
        print(
            f"  {row['megapixels']:4.0f} MP x {row['files']}: rawpy {row['rawpy_files_per_s']:.2f}"
            f", diffisp {row['diffisp_files_per_s']:.2f} files/s ({row['speedup_vs_rawpy']:.2f}x)"
        )
