"""Reading real RAW files: the two shared DNGs, written DNGs with known values and metadata traps,
and files LibRaw cannot read."""

from __future__ import annotations

import types
import warnings
from pathlib import Path

import numpy as np
import pytest

from diffisp.data.raw_file import (
    RawMetadataWarning,
    _pattern,
    check_raw_file,
    orient,
    read_raw,
)
from diffisp.errors import DataError, InputError
from diffisp.experiments.raw_bench import rawpy_render, write_bayer_dng
from diffisp.isp.raw import conventional_pipeline


def _shared_raw_dir() -> Path | None:
    """``shared/data/raw`` beside the repository (or beside one of its parents)."""
    for parent in Path(__file__).resolve().parents:
        if (parent / "shared" / "data" / "raw").is_dir():
            return parent / "shared" / "data" / "raw"
    return None


SHARED = _shared_raw_dir()
needs_shared = pytest.mark.skipif(
    SHARED is None, reason="the shared RAW files (shared/data/raw beside the repo) are absent"
)


# A real camera's ColorMatrix1 (tinydng_colorchart.dng's): XYZ -> camera RGB.
XYZ_TO_CAMERA = [[0.6461, -0.1164, -0.0857], [-0.3825, 1.1597, 0.2534], [-0.0416, 0.154, 0.6039]]


def _read(path, **kwargs):
    """read_raw with its warnings recorded (and returned) instead of shown."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RawMetadataWarning)
        capture, info = read_raw(path, **kwargs)
    assert [str(w.message) for w in caught] == list(info.warnings)
    assert all(w.category is RawMetadataWarning for w in caught)
    return capture, info


def _counts(height=30, width=40, low=1000, high=3000, seed=0):
    return np.random.default_rng(seed).integers(low, high, (height, width)).astype(np.uint16)


# --- the shared DNGs (values from their README) ------------------------------------------------


@needs_shared
def test_rawpipe_colorchecker_fields():
    capture, info = _read(SHARED / "rawpipe_colorchecker.dng")
    assert capture.mosaic.shape == (1, 968, 1424) and capture.pattern == "RGGB"
    assert info.black_levels == (256, 256, 256, 256) and info.white_level == 4095
    np.testing.assert_allclose(info.wb_gains, [1.7, 1.0, 2.4], rtol=1e-6)
    np.testing.assert_allclose(np.sum(info.cam_to_srgb, axis=1), 1, atol=1e-9)
    assert info.raw["rgb_xyz_matrix"] == [[0.0] * 3] * 4  # the trap
    assert any("rgb_xyz_matrix is all zeros" in m for m in info.warnings)
    assert any("ColorMatrix is the identity" in m for m in info.warnings)
    # Normalised: the darkest samples just below 0 (noise), the brightest about half of white.
    assert -0.01 < float(capture.mosaic.min()) < 0 and 0.4 < float(capture.mosaic.max()) < 0.5


@needs_shared
def test_tinydng_colorchart_fields_and_its_white_balance_trap():
    capture, info = _read(SHARED / "tinydng_colorchart.dng")
    # The visible area: the 152/26-pixel margins are cut off.
    assert info.raw["raw_image_shape"] == [1182, 1888] and info.raw["margins"] == [26, 152]
    assert capture.mosaic.shape == (1, 1156, 1734) and capture.pattern == "RGGB"
    assert info.black_levels == (2056,) * 4 and info.white_level == 15000
    # LibRaw reports 1 / AsShotNeutral = [1, 0.4037, 0.684]: multipliers with G != 1.
    np.testing.assert_allclose(info.raw["camera_whitebalance"][:3], [1.0, 0.4037, 0.684], atol=1e-3)
    np.testing.assert_allclose(info.wb_gains, [2.477, 1.0, 1.6943], atol=1e-3)
    assert any("camera_whitebalance" in m and "not 1" in m for m in info.warnings)
    assert any("rgb_xyz_matrix is all zeros" in m for m in info.warnings)


@needs_shared
def test_a_shared_dng_truncated_to_10_kb_is_a_data_error(tmp_path):
    truncated = tmp_path / "cut.dng"
    truncated.write_bytes((SHARED / "tinydng_colorchart.dng").read_bytes()[:10_240])
    with pytest.raises(DataError, match=r"cut\.dng.*truncated"):
        read_raw(truncated)


# --- written DNGs with known values --------------------------------------------------------------


@pytest.mark.parametrize("pattern", ["RGGB", "GRBG", "GBRG", "BGGR"])
def test_known_counts_levels_and_pattern(tmp_path, pattern):
    counts = _counts(high=3800)
    path = write_bayer_dng(
        tmp_path / "a.dng", counts, pattern=pattern, black_level=1000, white_level=4000,
        as_shot_neutral=(0.5, 1.0, 0.25), color_matrix=XYZ_TO_CAMERA,
    )  # fmt: skip
    capture, info = _read(path)
    assert capture.pattern == info.pattern == pattern
    np.testing.assert_allclose(capture.mosaic[0], (counts - 1000.0) / 3000.0, atol=1e-6)
    np.testing.assert_allclose(info.wb_gains, [2.0, 1.0, 4.0], rtol=1e-5)
    # Only the rgb_xyz_matrix fallback: every other field was plausible.
    assert len(info.warnings) == 1 and "rgb_xyz_matrix" in info.warnings[0]


def test_odd_sizes_are_cut_at_the_bottom_right(tmp_path):
    counts = _counts(31, 41)
    capture, info = _read(write_bayer_dng(tmp_path / "odd.dng", counts, black_level=900))
    assert capture.mosaic.shape == (1, 30, 40) and (info.height, info.width) == (30, 40)
    np.testing.assert_allclose(capture.mosaic[0], (counts[:30, :40] - 900.0) / (65535 - 900))


def test_conventional_pipeline_matches_rawpy_with_the_same_maths(tmp_path):
    """The settings of RAWPY_EQUIVALENT make LibRaw compute diffisp's conventional pipeline."""
    import rawpy

    y, x = np.mgrid[0:64, 0:96]
    scene = 1500 + 400 * (1 + np.sin(x / 7.0) * np.cos(y / 5.0))  # no channel clips
    path = write_bayer_dng(
        tmp_path / "s.dng", scene.astype(np.uint16), black_level=1024, white_level=4095,
        as_shot_neutral=(0.5, 1.0, 0.7), color_matrix=XYZ_TO_CAMERA,
    )  # fmt: skip
    capture, _ = _read(path)
    ours = np.asarray(conventional_pipeline(capture, tone=False))[0]
    with rawpy.imread(str(path)) as raw:
        reference = rawpy_render(raw) / 65535
    inner = (slice(4, -4), slice(4, -4))  # LibRaw's border interpolation differs
    mse = np.mean((ours[inner] - reference[inner]) ** 2)
    assert 10 * np.log10(1 / mse) > 60


# --- metadata traps: a named warning and a fallback -----------------------------------------------


def test_black_level_zero_above_dark_data_is_estimated(tmp_path):
    counts = _counts(low=1000, high=3000)
    _, info = _read(write_bayer_dng(tmp_path / "b.dng", counts, black_level=0, white_level=4095))
    assert any("black_level_per_channel is 0" in m for m in info.warnings)
    assert all(1000 <= b < 1030 for b in info.black_levels)  # the 0.1 % quantile of each position


def test_white_level_below_the_data_falls_back_to_the_bit_depth(tmp_path):
    counts = _counts(low=100, high=3000)
    capture, info = _read(write_bayer_dng(tmp_path / "w.dng", counts, white_level=1500))
    assert info.white_level == 4095 and any("white_level 1500" in m for m in info.warnings)
    assert float(capture.mosaic.max()) <= 1


def test_missing_white_balance_falls_back_to_daylight(tmp_path):
    path = write_bayer_dng(tmp_path / "n.dng", _counts(), as_shot_neutral=(0, 0, 0))
    _, info = _read(path)
    assert any(
        m.startswith("n.dng: camera_whitebalance") and "daylight" in m for m in info.warnings
    )
    assert info.wb_gains[1] == 1 and all(g > 0 for g in info.wb_gains)


def test_gray_world_white_balance_makes_the_mean_grey(tmp_path):
    counts = _counts(low=1000, high=1400)
    counts[0::2, 0::2] *= 2  # red twice as bright
    _, info = _read(write_bayer_dng(tmp_path / "g.dng", counts), white_balance="gray_world")
    np.testing.assert_allclose(info.wb_gains, [0.5, 1.0, 1.0], rtol=0.02)
    with pytest.raises(InputError, match="white balance"):
        read_raw(tmp_path / "g.dng", white_balance="auto")


# --- files LibRaw cannot read, and non-Bayer sensors ---------------------------------------------


def test_unreadable_files_are_data_errors_naming_the_file(tmp_path):
    from PIL import Image

    random_bytes = tmp_path / "random.dng"
    random_bytes.write_bytes(np.random.default_rng(0).bytes(4096))
    png = tmp_path / "photo.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(png)
    truncated = tmp_path / "short.dng"
    whole = write_bayer_dng(tmp_path / "whole.dng", _counts(200, 200)).read_bytes()
    truncated.write_bytes(whole[: len(whole) // 2])
    for path, reason in (
        (random_bytes, "not RAW"),
        (png, "not RAW"),
        (truncated, "truncated"),
        (tmp_path / "missing.dng", "not found"),
    ):
        with pytest.raises(DataError, match=reason) as error:
            read_raw(path)
        assert path.name in str(error.value)


def test_the_pixel_limit_is_checked_from_the_header(tmp_path):
    path = write_bayer_dng(tmp_path / "big.dng", _counts(40, 50))
    assert check_raw_file(path) == (50, 40)
    with pytest.raises(DataError, match="above the limit"):
        read_raw(path, max_pixels=1999)


def _fake_raw(**fields):
    import rawpy

    values = {
        "raw_type": rawpy.RawType.Flat,
        "raw_pattern": np.array([[0, 1], [3, 2]]),
        "raw_image": np.zeros((4, 4), np.uint16),
        "color_desc": b"RGBG",
        "num_colors": 3,
        "raw_colors_visible": np.array([[0, 1], [3, 2]]),
    }
    return types.SimpleNamespace(**{**values, **fields})


def test_non_bayer_sensors_are_refused_clearly():
    import rawpy

    assert _pattern(_fake_raw(), Path("ok.dng"))[0] == "RGGB"
    cases = {
        "X-Trans": _fake_raw(raw_pattern=np.zeros((6, 6), int)),
        "linear": _fake_raw(raw_type=rawpy.RawType.Stack, raw_pattern=None),
        "CMYG": _fake_raw(color_desc=b"CMYG", num_colors=4),
    }
    for what, raw in cases.items():
        with pytest.raises(DataError, match=f"Bayer RAW only.*{what}"):
            _pattern(raw, Path(f"{what}.raw"))


def test_orient_follows_libraw_flip_codes():
    image = np.arange(6).reshape(2, 3)
    assert orient(image, 0) is image
    np.testing.assert_array_equal(orient(image, 3), [[5, 4, 3], [2, 1, 0]])
    np.testing.assert_array_equal(orient(image, 5), [[2, 5], [1, 4], [0, 3]])  # 90 CCW
    np.testing.assert_array_equal(orient(image, 6), [[3, 0], [4, 1], [5, 2]])  # 90 CW
