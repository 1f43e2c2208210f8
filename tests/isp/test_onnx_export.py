"""ONNX export (diffisp.isp.onnx_export): onnxruntime against JAX, on random and real inputs.

The tolerance asserted is ``onnx_export.TOLERANCE`` (1e-5, max abs difference in [0, 1]
outputs); each test prints the difference it measured (``pytest -s``).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
from test_tuning_file import make, randomise

from diffisp.capture.raw_capture import make_capture

pytest.importorskip("jax2onnx")
ort = pytest.importorskip("onnxruntime")

from diffisp.isp import onnx_export  # noqa: E402
from diffisp.isp.chain import ISP  # noqa: E402
from diffisp.isp.raw import build_raw_isp  # noqa: E402


def _shared_raw_dir() -> Path | None:
    """``shared/data/raw`` beside the repository (or beside one of its parents)."""
    for parent in Path(__file__).resolve().parents:
        if (parent / "shared" / "data" / "raw").is_dir():
            return parent / "shared" / "data" / "raw"
    return None


SHARED = _shared_raw_dir()


def run_onnx(blob: bytes, feeds: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


def raw_feeds(capture) -> dict[str, np.ndarray]:
    return {
        "mosaic": np.asarray(capture.mosaic),
        "wb_gains": np.asarray(capture.wb_gains),
        "cam_to_srgb": np.asarray(capture.cam_to_srgb),
    }


def check(isp, blob, inputs) -> float:
    feeds = raw_feeds(inputs) if hasattr(inputs, "mosaic") else {"images": np.asarray(inputs)}
    diff = float(np.abs(run_onnx(blob, feeds) - np.asarray(isp(inputs))).max())
    print(f"max abs difference ONNX vs JAX: {diff:.3g}")
    assert diff <= onnx_export.TOLERANCE
    return diff


@functools.cache
def small_global() -> tuple[ISP, bytes]:
    isp = ISP(("exposure", "tone_curve", "gamma", "sharpen"))
    randomise(isp, seed=3)
    return isp, onnx_export.export_onnx(isp)


def test_global_isp_dynamic_batch_and_size():
    isp, blob = small_global()
    rng = np.random.default_rng(1)
    for shape in [(2, 16, 16, 3), (1, 13, 40, 3)]:
        check(isp, blob, rng.uniform(size=shape).astype(np.float32))


def test_a_second_dynamic_size_sharpen_export_in_one_process():
    # Regression: jnp slicing with a symbolic bound once lowered to a gather that jax2onnx
    # could not convert, but only after another export in the same process.
    small_global()
    isp = ISP(("sharpen", "denoise", "gamma"))
    randomise(isp, seed=4)
    check(
        isp,
        onnx_export.export_onnx(isp),
        np.random.default_rng(2).uniform(size=(2, 9, 14, 3)).astype(np.float32),
    )


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["global0", "global1", "adaptive", "raw", "raw-adaptive"])
def test_every_stage_and_kind_round_trips(kind):
    isp, inputs = make(kind)
    randomise(isp)
    check(isp, onnx_export.export_onnx(isp, height=16, width=16, pattern="GRBG"), inputs)


@pytest.mark.slow
@pytest.mark.skipif(SHARED is None, reason="the shared RAW files (shared/data/raw) are absent")
@pytest.mark.parametrize("name", ["rawpipe_colorchecker.dng", "tinydng_colorchart.dng"])
def test_raw_isp_on_real_dng_crops(name):
    from diffisp.data.raw_file import read_raw

    capture, _ = read_raw(SHARED / name)
    _, h, w = capture.mosaic.shape
    size = 64
    tops = [0, (h // 2 - size // 2) // 2 * 2]  # even offsets keep the CFA pattern
    lefts = [0, (w // 2 - size // 2) // 2 * 2]
    crops = np.stack(
        [capture.mosaic[0, t : t + size, s : s + size] for t, s in zip(tops, lefts, strict=True)]
    )
    real = make_capture(
        crops,
        wb_gains=np.asarray(capture.wb_gains[0]),
        cam_to_srgb=np.asarray(capture.cam_to_srgb[0]),
        pattern=capture.pattern,
    )
    isp = build_raw_isp("raw_wb,demosaic,raw_ccm,gamma,tone_curve", ISP)
    randomise(isp, scale=0.2)
    blob = onnx_export.export_onnx(isp, height=size, width=size, pattern=capture.pattern)
    check(isp, blob, real)


def test_metadata_and_fixed_size_rules():
    import onnx

    isp, blob = small_global()
    props = {p.key: p.value for p in onnx.load_from_string(blob).metadata_props}
    assert props["format"] == onnx_export.FORMAT
    assert props["kind"] == "global" and props["stages"] == ",".join(isp.stage_names)
    raw = build_raw_isp("demosaic", ISP)
    with pytest.raises(Exception, match="fixed image size"):
        onnx_export.export_onnx(raw)
