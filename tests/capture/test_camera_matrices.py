"""The table of real camera colour matrices and the sRGB -> camera matrices made from it."""

from __future__ import annotations

import numpy as np

from diffisp.capture.camera_matrices import (
    ADOBE_XYZ_TO_CAMERA,
    CAMERA_NAMES,
    SRGB_TO_XYZ,
    srgb_to_camera_matrices,
    xyz_to_camera_matrices,
)


def test_at_least_eight_cameras_from_seven_makers():
    assert len(CAMERA_NAMES) >= 8 and len(set(CAMERA_NAMES)) == len(CAMERA_NAMES)
    assert len({name.split()[0] for name in CAMERA_NAMES}) >= 7
    assert all(len(coeffs) == 9 for _, coeffs in ADOBE_XYZ_TO_CAMERA)


def test_srgb_to_xyz_maps_white_to_d65():
    np.testing.assert_allclose(SRGB_TO_XYZ @ np.ones(3), [0.95047, 1.0, 1.08883], atol=1e-4)


def test_every_matrix_is_invertible_and_well_conditioned():
    for matrices in (xyz_to_camera_matrices(), srgb_to_camera_matrices()):
        assert matrices.shape == (len(CAMERA_NAMES), 3, 3)
        conditions = np.linalg.cond(matrices)
        assert (conditions < 5).all(), dict(zip(CAMERA_NAMES, conditions, strict=True))


def test_srgb_to_camera_rows_and_their_inverses_rows_sum_to_one():
    matrices = srgb_to_camera_matrices()
    np.testing.assert_allclose(matrices.sum(-1), 1.0, atol=1e-12)
    np.testing.assert_allclose(np.linalg.inv(matrices).sum(-1), 1.0, atol=1e-12)
    # Camera RGB of any sRGB colour in [0, 1] stays in [0, 1]: every entry is positive.
    assert (matrices > 0).all()
    assert not matrices.flags.writeable


def test_every_mixture_of_two_cameras_is_well_conditioned():
    matrices = srgb_to_camera_matrices()
    weights = np.linspace(0, 1, 11)[:, None, None, None, None]
    mixtures = weights * matrices[None, :, None] + (1 - weights) * matrices[None, None, :]
    assert np.linalg.cond(mixtures.reshape(-1, 3, 3)).max() < 5
