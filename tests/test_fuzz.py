"""Fuzzing the public entry points: every input either works or raises a DiffispError.

"Works" is checked: a call that returns must return finite values of the documented shape and
range (a NaN that slips through validation is a bug, not a success).

Random shapes, dtypes and values go through the ops, the ISP, the low-light model and the config;
random bytes go through the image and data-set loaders. Anything else escaping (a JAX tracing
error, an IndexError from deep inside) is a bug: users must get our one-line errors.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from diffisp import ops
from diffisp.capture.low_light import LowLight, darken
from diffisp.data import load_dataset, load_image
from diffisp.errors import DiffispError
from diffisp.isp.chain import ISP
from diffisp.training.config import TrainConfig

DTYPES = [np.float32, np.float64, np.float16, np.uint8, np.int32, np.bool_, np.complex64, object]
FAST = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))


@st.composite
def valid_batches(draw, shapes=((1, 1, 1, 3), (2, 5, 3, 3), (3, 6, 6, 3))) -> np.ndarray:
    """A float ``(N, H, W, 3)`` batch in [0, 1], often touching 0 and 1 exactly.

    A few fixed shapes: every new shape recompiles every op (the eager ISP: ~10 s a shape).
    """
    shape = draw(st.sampled_from(shapes))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    values = rng.uniform(0, 1, shape)
    if draw(st.booleans()):
        values.flat[0], values.flat[-1] = 0.0, 1.0
    return values.astype(draw(st.sampled_from([np.float32, np.float64])))


@st.composite
def arrays(draw, valid_shapes=((1, 1, 1, 3), (2, 5, 3, 3), (3, 6, 6, 3))):
    if draw(st.integers(0, 2)) == 0:
        return draw(valid_batches(valid_shapes))  # a third valid: the output checks really run
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
    # Valid values for most ops (a strength, a gamma, gains, a colour matrix, curve knots).
    st.floats(0, 1, width=32),
    st.floats(0.125, 4, width=32),
    st.just(np.ones(3, np.float32)),
    st.just(np.eye(3, dtype=np.float32)),
    st.just(np.linspace(0, 1, 8, dtype=np.float32)),
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


RAISED = object()  # what call_or_our_error returns when the call raised a DiffispError


def call_or_our_error(fn, *args, **kwargs):
    """``fn(*args, **kwargs)``, or ``RAISED`` if it raised one of our errors (others escape)."""
    try:
        out = fn(*args, **kwargs)
    except DiffispError:
        event("raised our error")
        return RAISED
    event("returned: output checked")  # --hypothesis-show-statistics shows how often
    return out


def assert_images(out, shape: tuple[int, ...], *, unit_range: bool = True) -> None:
    """``out`` has ``shape`` and only finite values, in [0, 1] where the contract says so (an
    ISP's output; ops do not clip, so they promise finite values only)."""
    out = np.asarray(out, dtype=np.float64)
    assert out.shape == shape
    assert np.isfinite(out).all(), "a call that returned gave NaN/Inf"
    if unit_range:
        assert out.min() >= 0.0 and out.max() <= 1.0 + 1e-6, (out.min(), out.max())


@FAST
@given(arrays(), PARAMS, st.integers(0, len(OPS) - 1))
def test_ops_take_any_array_and_parameter(array, param, which):
    out = call_or_our_error(OPS[which], array, param)
    if out is not RAISED:  # then the input was a valid (N, H, W, 3) batch in [0, 1]
        luminance = which == len(OPS) - 1
        shape = (*array.shape[:3], 1) if luminance else array.shape
        assert_images(out, shape, unit_range=False)  # ops chain unclipped (dm-pix's contract)


@pytest.mark.parametrize("knots", [None, "ab", [[0.0, 1.0], [0.5]]])
def test_tone_curve_non_numeric_knots_is_our_error(knots):
    with pytest.raises(DiffispError, match="knots"):
        ops.tone_curve(np.full((1, 1, 1, 3), 0.5, np.float32), knots)


@FAST
@given(arrays(valid_shapes=((2, 5, 3, 3),)))
def test_isp_and_darkening_take_any_array(array):
    import jax

    out = call_or_our_error(ISP("seed"), array)
    if out is not RAISED:
        assert_images(out, array.shape)
    out = call_or_our_error(darken, jax.random.key(0), array)
    if out is not RAISED:
        dark, factors = out
        assert_images(dark, array.shape)
        factors = np.asarray(factors)
        assert factors.shape == (array.shape[0],)
        assert ((factors >= 0.1 - 1e-7) & (factors <= 0.3 + 1e-7)).all()  # the default range


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
    cfg = call_or_our_error(TrainConfig.from_dict, values)
    if cfg is not RAISED:  # a valid config survives its own round trip
        assert isinstance(cfg, TrainConfig) and TrainConfig.from_dict(cfg.to_dict()) == cfg


@FAST
@given(
    st.dictionaries(
        st.sampled_from(["brightness", "noise_sigma", "noise", "full_well"]),
        CONFIG_VALUES,
        max_size=3,
    )
)
def test_low_light_takes_any_settings(values):
    model = call_or_our_error(lambda: LowLight(**values))
    if model is not RAISED:  # the documented invariants hold on what was accepted
        low, high = model.brightness
        assert 0.0 < low <= high <= 1.0 and 0.0 <= model.noise_sigma <= 1.0
        assert model.noise in ("gaussian", "poisson_gaussian")


@st.composite
def image_files(draw) -> bytes:
    """The bytes of a small PNG or JPEG, sometimes with one byte changed; or random bytes."""
    from PIL import Image

    if draw(st.integers(0, 3)) == 0:
        return draw(st.binary(max_size=300))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    size = (draw(st.integers(1, 12)), draw(st.integers(1, 12)))
    mode = draw(st.sampled_from(["RGB", "L", "RGBA", "P"]))
    image = Image.fromarray(rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8)).convert(mode)
    buffer = io.BytesIO()
    image.convert("RGB" if mode == "RGBA" else mode).save(
        buffer, format=draw(st.sampled_from(["PNG", "JPEG"])) if mode != "P" else "PNG"
    )
    data = bytearray(buffer.getvalue())
    if draw(st.booleans()):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


@FAST
@given(image_files(), st.sampled_from([".png", ".jpg", ".jpeg", ".PNG"]))
def test_image_loader_takes_any_bytes(tmp_path_factory, data, suffix):
    path = tmp_path_factory.mktemp("fuzz") / f"image{suffix}"
    path.write_bytes(data)
    image = call_or_our_error(load_image, path)
    if image is not RAISED:
        assert image.dtype == np.float32 and image.ndim == 3
        assert_images(image, (*image.shape[:2], 3))


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
@given(st.lists(image_files(), min_size=0, max_size=6))
def test_folder_data_set_takes_any_files(tmp_path_factory, blobs):
    root = tmp_path_factory.mktemp("folder")
    for i, blob in enumerate(blobs):
        (root / f"class{i % 2}").mkdir(exist_ok=True)
        (root / f"class{i % 2}" / f"{i}.png").write_bytes(blob)
    ds = call_or_our_error(load_dataset, f"folder:{root}", num_train=None, num_test=None)
    if ds is not RAISED:
        for images, labels in (
            (ds.train_images, ds.train_labels),
            (ds.test_images, ds.test_labels),
        ):
            assert_images(images, (len(labels), *images.shape[1:3], 3))
            assert ((labels >= 0) & (labels < len(ds.class_names))).all()


# -- the command line: any argv ends in a usage line, one error line, or the (stubbed) work -------

_FLAG_VALUES = st.sampled_from(
    [
        *("", " ", "0", "-1", "1", "3", "4.5", "64e6", "1e400", "nan", "inf", "x", "a\0b"),
        *("1_0", "builtin", "folder:/nonexistent", "coco:/nonexistent", "voc:/", "scenes"),
        *("adaptive", "full", "seed", "gamma,nope", "/proc/version", "/dev/null", "/"),
        "127.0.0.1:1",
    ]
)
_FLAGS = [
    "--num-train", "--num-test", "--image-size", "--batch-size", "--epochs-clean",
    "--epochs-isp", "--epochs-joint", "--lr-isp", "--seed", "--data", "--isp", "--stages",
    "--cost-weight", "--brightness", "--noise-sigma", "--devices", "--config", "--out",
    "--num-processes", "--process-id", "--coordinator-timeout", "--stream-workers",
    "--resume", "--checkpoint", "--seeds", "--max-pixels", "--epochs", "--raw-size",
]  # fmt: skip
_COMMANDS = [
    *("train", "demo", "eval", "report", "bench", "scenes", "apply", "export", "tune", "nope")
]


class _WouldWork(Exception):
    """Raised by the stubbed long-running work: the arguments got that far."""


@pytest.fixture
def stubbed_work(monkeypatch):
    import diffisp.experiments.bench as bench
    import diffisp.experiments.detection_commands as detection_commands
    import diffisp.experiments.run as run
    import diffisp.experiments.study as study

    def stop(*args, **kwargs):
        raise _WouldWork

    import diffisp.experiments.tune as tune
    import diffisp.util.io as io

    for module, name in [
        (run, "run_experiment"),
        (study, "run_study"),
        (bench, "run_bench"),
        (detection_commands, "write_scenes"),
        (detection_commands, "bench_detection"),
        (tune, "load_run_data"),  # tune: the model is loaded, the data and training are not
        # No command writes a file: "/dev/null" as --out once replaced the device (as root).
        (io, "atomic_write_bytes"),
    ]:
        monkeypatch.setattr(module, name, stop)
    try:
        import jax2onnx
    except ImportError:
        pass
    else:  # export --format onnx: the size and pattern are checked, nothing is traced
        monkeypatch.setattr(jax2onnx, "to_onnx", stop)
    # Never join a real multi-process run (its wait is tested in test_reliability_processes).
    import diffisp.training.parallel as parallel

    monkeypatch.setattr(parallel, "initialize_distributed", stop)


@FAST
@given(
    st.sampled_from(_COMMANDS),
    st.lists(st.tuples(st.sampled_from(_FLAGS), _FLAG_VALUES), max_size=4),
    st.lists(_FLAG_VALUES, max_size=2),
)
def test_the_cli_never_shows_a_traceback(stubbed_work, capsys, command, options, positional):
    from diffisp.cli import main

    argv = [command, *positional]
    for flag, value in options:
        argv += [flag, value]
    try:
        status = main(argv)
    except SystemExit as exc:  # argparse: a usage line
        status = exc.code
    except _WouldWork:
        event("reached the work")
        return
    err = capsys.readouterr().err
    assert "Traceback" not in err, (argv, err)
    assert status in (0, 2), (argv, status, err)
    if status == 2:
        assert err.strip().splitlines()[-1].startswith(("diffisp: error:", "usage:")) or (
            "error:" in err
        ), (argv, err)


# export and tune need their required arguments to get past argparse: each example starts from
# one of a few (mostly valid) command lines, then adds random options.

# A RAW run: its ONNX export checks both --size and --pattern (saving a run takes seconds).
_RUNS = {"raw": TrainConfig.of(input="raw")}


@pytest.fixture(scope="module")
def fuzz_files(tmp_path_factory) -> dict[str, str]:
    """A saved run (untrained) for export, a damaged ONNX and weights file for tune."""
    from flax import nnx

    from diffisp.models.task import TASKS
    from diffisp.training.checkpoint import save_model
    from diffisp.training.state import build_isp

    root = tmp_path_factory.mktemp("fuzz-cli")
    files = {}
    for name, cfg in _RUNS.items():
        model = TASKS["classify"].build_model(10, rngs=nnx.Rngs(0))
        save_model(root / name / "model", build_isp(cfg), model, {"config": cfg.to_dict()})
        files[name] = str(root / name)
    (root / "bad.onnx").write_bytes(b"\x08\x07garbage")
    (root / "bad.pt").write_bytes(b"not a state dict")
    files["bad.onnx"], files["bad.pt"], files["out"] = (
        str(root / "bad.onnx"),
        str(root / "bad.pt"),
        str(root / "out"),
    )
    return files


_EXPORT_VALUES = st.one_of(
    _FLAG_VALUES,
    st.sampled_from(["8x8", "9x8", "0x0", "8x8x8", "16X16", "x8", "rggb", "BGGR", "XYZW"]),
    st.sampled_from(["onnx", "json"]),
)
_EXPORT_FLAGS = ["--format", "--out", "--size", "--pattern", "--seed"]
_TORCH_MODEL = "torch:diffisp.models.torch_reference:resnet10"
_TUNE_MODELS = [
    _TORCH_MODEL,
    *("torch:os:sep", "torch:os:getenv", "torch:..x:f", "torch:os", "torch:", "torch:nope.x:f"),
    *("model", "/nonexistent.onnx", "bad.onnx"),
]
_TUNE_VALUES = st.one_of(
    _FLAG_VALUES,
    st.sampled_from(["bad.pt", "labels", "consistency", "kl", "mse", "raw", "srgb", "mixed"]),
    st.sampled_from(["NCHW", "NHWC", "32x32", "0x4", "0,1", "1,0", "0,0,0", "0.5,0.5,0.5"]),
    st.sampled_from(["float16", "bfloat16", "logits", "-1", "quick", "full"]),
)
_TUNE_FLAGS = [
    "--weights", "--loss", "--consistency", "--data", "--data-dir", "--input", "--conditions",
    "--isp", "--preset", "--num-train", "--num-test", "--image-size", "--batch-size",
    "--epochs", "--warmup-epochs", "--lr-isp", "--seed", "--layout", "--model-size",
    "--value-range", "--mean", "--std", "--dtype", "--output", "--out", "--epochs-isp",
]  # fmt: skip


@st.composite
def export_or_tune_argv(draw) -> list[str]:
    """``["export", RUN, --format F, --out O, ...]`` or ``["tune", --model M, ...]`` with
    names (``raw``, ``bad.pt``, ...) standing for the fixture's files."""
    if draw(st.booleans()):
        argv = ["export", draw(st.sampled_from([*_RUNS, "/", "/nonexistent", "/proc/version"]))]
        argv += ["--format", draw(st.sampled_from(["onnx", "json"]))]
        argv += ["--out", draw(st.sampled_from(["out", "/", "/proc/version", "/dev/null"]))]
        flags, values = _EXPORT_FLAGS, _EXPORT_VALUES
    else:
        model = st.one_of(st.just(_TORCH_MODEL), st.sampled_from(_TUNE_MODELS))
        argv = ["tune", "--model", draw(model)]
        flags, values = _TUNE_FLAGS, _TUNE_VALUES
    for flag, value in draw(st.lists(st.tuples(st.sampled_from(flags), values), max_size=3)):
        argv += [flag, value]
    return argv


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(export_or_tune_argv())
def test_export_and_tune_never_show_a_traceback(stubbed_work, fuzz_files, capsys, argv):
    from diffisp.cli import main

    argv = [fuzz_files.get(a, a) for a in argv]
    try:
        status = main(argv)
    except SystemExit as exc:  # argparse: a usage line
        status = exc.code
    except _WouldWork:
        event(f"{argv[0]}: reached the work")
        return
    err = capsys.readouterr().err
    assert "Traceback" not in err, (argv, err)
    assert status == 2, (argv, status, err)  # every write is stubbed: no command can finish
    last = err.strip().splitlines()[-1]
    assert last.startswith(("diffisp: error:", f"diffisp {argv[0]}: error:")), (argv, err)
    event(f"{argv[0]}: {'our' if last.startswith('diffisp: error:') else 'usage'} error")
