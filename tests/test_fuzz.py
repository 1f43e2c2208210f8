"""Fuzzing the public entry points: every input either works or raises a DiffispError.

Random shapes, dtypes and values go through the ops, the ISP, the low-light model and the config;
random bytes go through the image and data-set loaders. Anything else escaping (a JAX tracing
error, an IndexError from deep inside) is a bug: users must get our one-line errors.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from diffisp import ops
from diffisp.data import load_dataset, load_image
from diffisp.data.degrade import LowLight, darken
from diffisp.errors import DiffispError
from diffisp.isp.chain import ISP
from diffisp.training.config import TrainConfig

DTYPES = [np.float32, np.float64, np.float16, np.uint8, np.int32, np.bool_, np.complex64, object]
FAST = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))


@st.composite
def arrays(draw):
    rank = draw(st.integers(0, 5))
    shape = tuple(draw(st.lists(st.integers(0, 5), min_size=rank, max_size=rank)))
    if rank == 4 and draw(st.booleans()):
        shape = (*shape[:3], 3)  # often a valid layout, so values get checked too
    dtype = draw(st.sampled_from(DTYPES))
    kind = draw(st.sampled_from(["unit", "wide", "nan", "inf"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    values = rng.uniform(0, 1, shape) if kind == "unit" else rng.uniform(-300, 300, shape)
    if kind in ("nan", "inf") and values.size:
        values.flat[0] = np.nan if kind == "nan" else np.inf
    if dtype is object:
        return values.astype(object)
    with np.errstate(invalid="ignore", over="ignore"):
        return values.astype(dtype)


PARAMS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.integers(-5, 5),
    st.booleans(),
    st.text(max_size=3),
    st.lists(st.floats(-2, 2, width=32), max_size=5),
    st.lists(st.lists(st.floats(-2, 2, width=32), max_size=3), max_size=3),
    st.none(),
)

OPS = [
    lambda x, p: ops.adjust_gamma(x, p),
    lambda x, p: ops.adjust_exposure(x, p),
    lambda x, p: ops.apply_ccm(x, p),
    lambda x, p: ops.white_balance(x, p),
    lambda x, p: ops.desaturate(x, p),
    lambda x, p: ops.adjust_saturation(x, p),
    lambda x, p: ops.adjust_contrast(x, p),
    lambda x, p: ops.tone_curve(x, p),
    lambda x, p: ops.sharpen(x, p, np.ones((3, 3), np.float32) / 9),
    lambda x, p: ops.denoise(x, p, 0.1),
    lambda x, p: ops.luminance(x),
]


def works_or_our_error(fn, *args, **kwargs):
    with contextlib.suppress(DiffispError):
        fn(*args, **kwargs)


@FAST
@given(arrays(), PARAMS, st.integers(0, len(OPS) - 1))
def test_ops_take_any_array_and_parameter(array, param, which):
    works_or_our_error(OPS[which], array, param)


@FAST
@given(arrays())
def test_isp_and_darkening_take_any_array(array):
    import jax

    works_or_our_error(ISP("seed"), array)
    works_or_our_error(darken, jax.random.key(0), array)


CONFIG_VALUES = st.one_of(
    st.integers(-3, 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
    st.booleans(),
    st.none(),
    st.lists(st.integers(-2, 2), max_size=3),
)
CONFIG_KEYS = st.sampled_from(
    [
        "num_train",
        "batch_size",
        "lr_isp",
        "lr_cnn",
        "brightness",
        "noise_sigma",
        "noise",
        "isp",
        "seed",
        "epochs_isp",
        "schedule",
        "image_size",
        "cost_weight",
        "variants",
        "adaptive",
        "bogus_key",
    ]
)


@FAST
@given(st.dictionaries(CONFIG_KEYS, CONFIG_VALUES, max_size=4))
def test_config_takes_any_dict(values):
    works_or_our_error(TrainConfig.from_dict, values)


@FAST
@given(
    st.dictionaries(
        st.sampled_from(["brightness", "noise_sigma", "noise", "full_well"]),
        CONFIG_VALUES,
        max_size=3,
    )
)
def test_low_light_takes_any_settings(values):
    works_or_our_error(lambda: LowLight(**values))


@FAST
@given(st.binary(max_size=300), st.sampled_from([".png", ".jpg", ".jpeg", ".PNG"]))
def test_image_loader_takes_any_bytes(tmp_path_factory, data, suffix):
    path = tmp_path_factory.mktemp("fuzz") / f"image{suffix}"
    path.write_bytes(data)
    works_or_our_error(load_image, path)


def test_truncated_real_png_is_our_error(tmp_path):
    from PIL import Image

    good = tmp_path / "good.png"
    noise = np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)
    Image.fromarray(noise).save(good)
    data = good.read_bytes()
    # Cuts inside the header and the pixel data (a PNG missing only its 12-byte IEND trailer
    # and the last bytes of the zlib stream, its checksum, still holds every pixel).
    for cut in (8, 30, len(data) // 2, len(data) - 100):
        (tmp_path / "cut.png").write_bytes(data[:cut])
        with pytest.raises(DiffispError):
            load_image(tmp_path / "cut.png")


@FAST
@given(st.lists(st.binary(max_size=120), min_size=0, max_size=4))
def test_folder_data_set_takes_any_files(tmp_path_factory, blobs):
    root = tmp_path_factory.mktemp("folder")
    for i, blob in enumerate(blobs):
        (root / f"class{i % 2}").mkdir(exist_ok=True)
        (root / f"class{i % 2}" / f"{i}.png").write_bytes(blob)
    works_or_our_error(load_dataset, f"folder:{root}", num_train=None, num_test=None)
