"""Colour matrices of real cameras, for simulating their RAW colour (see :mod:`.unprocess`).

Each entry is a camera's Adobe DNG ``ColorMatrix`` (CIE XYZ, D65 -> the camera's raw RGB; rows
are camera channels), as LibRaw's ``adobe_coeff`` table lists them (``trans[]``, scaled by
10000; "all matrices are from Adobe DNG Converter unless otherwise noted", and none of these is
noted otherwise). Source: github.com/LibRaw/LibRaw, ``src/tables/colordata.cpp`` at commit
e419de08001de28ae6988ecb22df47e52b9c5eaa (2026-07-18); the comment above each entry gives its
line and the table's model prefix. The numbers are copied verbatim; only Bayer sensors are
listed (no Fujifilm X-Trans, no Sigma Foveon).
"""

from __future__ import annotations

import functools

import numpy as np

# (camera, XYZ -> camera matrix x 10000, row-major).
ADOBE_XYZ_TO_CAMERA: tuple[tuple[str, tuple[int, ...]], ...] = (
    # colordata.cpp line 61: { LIBRAW_CAMERAMAKER_Canon, "EOS 5D Mark IV", ... }
    ("Canon EOS 5D Mark IV", (6446, -366, -864, -4436, 12204, 2513, -952, 2496, 6348)),
    # colordata.cpp line 83: { LIBRAW_CAMERAMAKER_Canon, "EOS 80D", ... }
    ("Canon EOS 80D", (7457, -671, -937, -4849, 12495, 2643, -1213, 2354, 5492)),
    # colordata.cpp line 988: { LIBRAW_CAMERAMAKER_Nikon, "D850", ... }
    ("Nikon D850", (10405, -3755, -1270, -5461, 13787, 1793, -1040, 2015, 6785)),
    # colordata.cpp line 961: { LIBRAW_CAMERAMAKER_Nikon, "D7500", ... }
    ("Nikon D7500", (8813, -3210, -1036, -4703, 12868, 2021, -1054, 1940, 6129)),
    # colordata.cpp line 1780: { LIBRAW_CAMERAMAKER_Sony, "ILCE-7M3", ... }
    ("Sony ILCE-7M3 (a7 III)", (7374, -2389, -551, -5435, 13162, 2519, -1006, 1795, 6552)),
    # colordata.cpp line 1756: { LIBRAW_CAMERAMAKER_Sony, "ILCE-7RM3", ... }
    ("Sony ILCE-7RM3 (a7R III)", (6640, -1847, -503, -5238, 13010, 2474, -993, 1673, 6527)),
    # colordata.cpp line 422: { LIBRAW_CAMERAMAKER_Fujifilm, "GFX 50", ... }
    ("Fujifilm GFX 50S", (11756, -4754, -874, -3056, 11045, 2305, -381, 1457, 6006)),
    # colordata.cpp line 521: { LIBRAW_CAMERAMAKER_Fujifilm, "X-A5", ... }
    ("Fujifilm X-A5", (11673, -4760, -1041, -3988, 12058, 2166, -771, 1417, 5569)),
    # colordata.cpp line 1151: { LIBRAW_CAMERAMAKER_Olympus, "E-M1 Mark II", ... }
    ("Olympus E-M1 Mark II", (9383, -3170, -763, -2457, 10702, 2020, -384, 1236, 5552)),
    # colordata.cpp line 1408: { LIBRAW_CAMERAMAKER_Panasonic, "DC-GH5", ... }
    ("Panasonic DC-GH5", (7641, -2336, -605, -3218, 11299, 2187, -485, 1338, 5121)),
    # colordata.cpp line 1241: { LIBRAW_CAMERAMAKER_Pentax, "K-1", ... }
    ("Pentax K-1", (8596, -2981, -639, -4202, 12046, 2431, -685, 1424, 6122)),
    # colordata.cpp line 795: { LIBRAW_CAMERAMAKER_Leica, "M (Typ 2", ... }
    ("Leica M (Typ 240)", (7199, -2140, -712, -4005, 13327, 649, -810, 2521, 6673)),
    # colordata.cpp line 1609: { LIBRAW_CAMERAMAKER_Samsung, "NX1", ... }
    ("Samsung NX1", (10686, -4042, -1052, -3595, 13238, 276, -464, 1259, 5931)),
)

# Linear sRGB (D65) -> CIE XYZ, IEC 61966-2-1 (Lindbloom's 7-digit values, as Brooks et al. use).
SRGB_TO_XYZ = np.array(
    [
        [0.4124564, 0.3575761, 0.1804375],
        [0.2126729, 0.7151522, 0.0721750],
        [0.0193339, 0.1191920, 0.9503041],
    ]
)

CAMERA_NAMES: tuple[str, ...] = tuple(name for name, _ in ADOBE_XYZ_TO_CAMERA)


def xyz_to_camera_matrices() -> np.ndarray:
    """The table as ``(K, 3, 3)`` float64 XYZ -> camera matrices (the DNG values / 10000)."""
    return np.array([coeffs for _, coeffs in ADOBE_XYZ_TO_CAMERA], np.float64).reshape(-1, 3, 3) / (
        10000.0
    )


@functools.cache
def _srgb_to_camera() -> np.ndarray:
    srgb_to_camera = xyz_to_camera_matrices() @ SRGB_TO_XYZ
    # Brooks et al. normalise the rows: the sRGB white (1, 1, 1) then maps to the camera's
    # (1, 1, 1), i.e. white-balanced camera RGB, which the white-balance gains then un-balance.
    srgb_to_camera /= srgb_to_camera.sum(axis=-1, keepdims=True)
    srgb_to_camera.setflags(write=False)
    return srgb_to_camera


def srgb_to_camera_matrices() -> np.ndarray:
    """Linear sRGB -> white-balanced camera RGB of every camera in the table.

    ``xyz_to_camera @ SRGB_TO_XYZ`` with each row divided by its sum (Brooks et al., 2019), so
    every row sums to 1 and so does every row of the inverse, the camera -> sRGB matrix
    (``M 1 = 1`` implies ``M^-1 1 = 1``): white stays white both ways.

    Returns:
      ``(K, 3, 3)`` float64, read-only, rows = camera channels, in the order of
      :data:`CAMERA_NAMES`; apply one with ``camera_rgb = M @ srgb_rgb`` per pixel.
    """
    return _srgb_to_camera()
