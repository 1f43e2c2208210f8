"""Issue 12, data/config/numeric items: hostile files, configs and sizes end in one-line errors.

Every case here crashed with a traceback, ran for minutes, used the wrong decoder or silently
gave wrong data before the fix.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import EpsImagePlugin, Image

from diffisp.capture.low_light import MAX_FULL_WELL, LowLight, darken
from diffisp.cli import main
from diffisp.data import load_builtin, load_folder, load_image
from diffisp.data.memory import check_fits_in_memory
from diffisp.data.split import compare_split, load_folder_split, split_record
from diffisp.errors import ConfigError, DataError
from diffisp.isp.baselines import equalize_histogram
from diffisp.isp.chain import parse_stage_list
from diffisp.training.config import MAX_CONFIG_BYTES, MAX_SEED, TrainConfig

# A minimal Encapsulated PostScript file; Pillow identifies it as EPS whatever it is called and
# renders it by running Ghostscript.
EPS = (
    b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n"
    b"newpath 0 0 moveto 8 8 lineto stroke showpage\n%%EOF\n"
)


def _one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str], match: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("diffisp: error: ") and err.count("\n") == 1, err
    assert match in err, err
    return err


# --- item 1: images are decoded by content, only in the supported formats ------------------


@pytest.fixture
def ghostscript_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records every entry into Pillow's EPS plugin (opening or running Ghostscript)."""
    calls: list[str] = []
    original_open = EpsImagePlugin.EpsImageFile._open

    def spy_open(self):
        calls.append("EpsImageFile._open")
        return original_open(self)

    def spy_ghostscript(*args, **kwargs):
        calls.append("Ghostscript")
        raise AssertionError("Ghostscript must never run")

    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", spy_open)
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", spy_ghostscript)
    return calls


def test_postscript_named_png_is_refused_without_ghostscript(tmp_path, ghostscript_calls):
    evil = tmp_path / "evil.png"
    evil.write_bytes(EPS)
    # Without a format list Pillow would take this file for EPS (the danger the fix removes).
    with Image.open(evil) as image:
        assert image.format == "EPS"
    ghostscript_calls.clear()
    with pytest.raises(DataError, match=r"evil\.png: not a PNG, JPEG, TIFF, BMP, WEBP file"):
        load_image(evil)
    assert ghostscript_calls == []


def test_postscript_in_a_class_folder_is_refused_naming_the_file(tmp_path, ghostscript_calls):
    for name in ("cats", "dogs"):
        (tmp_path / name).mkdir()
        for i in range(3):
            Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(tmp_path / name / f"{i}.png")
    (tmp_path / "dogs" / "2.png").write_bytes(EPS)
    with pytest.raises(DataError, match=r"dogs/2\.png: not a PNG"):
        load_folder(tmp_path, image_size=8)
    assert ghostscript_calls == []


def test_cli_apply_refuses_postscript_named_png(tmp_path, capsys, ghostscript_calls):
    from flax import nnx

    from diffisp.isp.chain import ISP
    from diffisp.models.classifier import SmallCNN
    from diffisp.training.checkpoint import save_model

    save_model(tmp_path / "m", ISP("seed"), SmallCNN(rngs=nnx.Rngs(0)), {"image_size": 32})
    evil = tmp_path / "evil.png"
    evil.write_bytes(EPS)
    argv = ["apply", str(evil), "--checkpoint", str(tmp_path / "m"), "--out", str(tmp_path / "o")]
    # apply is a batch: the file is listed as failed, with its reason, and the call exits 1.
    from diffisp.cli import main

    assert main(argv) == 1
    assert "evil.png: not a PNG, JPEG, TIFF, BMP, WEBP file" in capsys.readouterr().err
    assert ghostscript_calls == [] and not list((tmp_path / "o").glob("*.png"))


def test_supported_formats_still_decode(tmp_path):
    for fmt, suffix in (("PNG", ".png"), ("JPEG", ".jpg"), ("TIFF", ".tif"), ("BMP", ".bmp")):
        path = tmp_path / f"x{suffix}"
        Image.new("RGB", (4, 4), (255, 255, 255)).save(path, format=fmt)
        assert load_image(path).min() > 0.99, fmt


# --- item 9: config edge cases -------------------------------------------------------------


def test_seed_is_bounded_to_what_jax_accepts(capsys):
    with pytest.raises(ConfigError, match=r"seed must be in \[0, 2\*\*32 - 1"):
        TrainConfig.of(seed=18446744073709551615)
    jax.random.key(TrainConfig.of(seed=MAX_SEED).seed)  # the largest accepted seed works
    _one_line_error(capsys, ["train", "--seed", "18446744073709551615"], "seed must be in")


def test_config_path_edge_cases_are_one_line_errors(tmp_path, capsys):
    cases = {
        str(tmp_path): "is a directory, not a JSON file",
        str(tmp_path / ("x" * 300 + ".json")): "File name too long",
        "/dev/zero": f"larger than {MAX_CONFIG_BYTES // 1024} KiB",
    }
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    cases[str(deep)] = "nests arrays or objects too deeply"
    big = tmp_path / "big.json"
    big.write_text('{"data": "' + " " * MAX_CONFIG_BYTES + '"}')
    cases[str(big)] = "larger than"
    digits = tmp_path / "digits.json"
    digits.write_text('{"seed": ' + "9" * 5000 + "}")
    cases[str(digits)] = "is not valid JSON"
    for path, message in cases.items():
        with pytest.raises(ConfigError, match=message):
            TrainConfig.load(path)
        _one_line_error(capsys, ["train", "--config", path], message)


def test_config_of_exactly_the_size_limit_is_read(tmp_path):
    path = tmp_path / "padded.json"
    text = '{"seed": 3}'
    path.write_text(text + " " * (MAX_CONFIG_BYTES - len(text)))
    assert path.stat().st_size == MAX_CONFIG_BYTES
    assert TrainConfig.load(path).seed == 3


def test_long_repeated_stage_list_is_refused_quickly():
    stages = ",".join(["gamma", "ccm", "sharpen", "desaturation", "tone_curve"] * 50_000)
    start = time.perf_counter()
    with pytest.raises(ConfigError, match="repeated: ccm, desaturation, gamma, sharpen"):
        parse_stage_list(stages)
    # Was 22 s (a quadratic duplicate count); linear it takes well under a second.
    assert time.perf_counter() - start < 3.0


# --- item 8: sizes that cannot fit in memory are refused before allocating -----------------


@pytest.mark.parametrize(
    ("values", "option"),
    [({"num_train": 1_000_000_000}, "--num-train"), ({"image_size": 100_000}, "--image-size")],
)
def test_config_refuses_data_that_cannot_fit_in_memory(values, option, capsys):
    cfg = TrainConfig.of(**values)  # a config is only values: it loads on any machine
    with pytest.raises(ConfigError, match=r"need about [\d.]+ [GT]iB .* lower num_train"):
        cfg.check_resources()  # a run starting on this one is refused
    flag, value = option, str(next(iter(values.values())))
    _one_line_error(capsys, ["train", "--data", "builtin", flag, value], option)


def test_loaders_refuse_data_that_cannot_fit_in_memory():
    with pytest.raises(ConfigError, match=r"need about .*--num-train"):
        load_builtin(1_000_000_000, 10)
    with pytest.raises(ConfigError, match=r"need about .*--image-size"):
        load_builtin(10, 10, image_size=100_000)


def test_absurd_counts_from_a_config_file_are_refused(tmp_path):
    path = tmp_path / "huge.json"
    path.write_text(json.dumps({"num_train": 10**400}))
    with pytest.raises(ConfigError, match="need about more than 1 PiB"):
        TrainConfig.load(path).check_resources()


def test_available_memory_respects_a_container_limit(tmp_path, monkeypatch):
    import diffisp.data.memory as memory

    (tmp_path / "memory.max").write_text("1073741824\n")
    (tmp_path / "memory.current").write_text("268435456\n")
    monkeypatch.setattr(memory, "_CGROUP", str(tmp_path))
    monkeypatch.setattr(memory, "_MEMINFO", str(tmp_path / "meminfo"))
    (tmp_path / "meminfo").write_text("MemTotal: 99999999 kB\nMemAvailable: 8388608 kB\n")
    assert memory.available_memory() == 768 * 2**20  # the cgroup's headroom, not 8 GiB
    (tmp_path / "memory.max").write_text("max\n")
    assert memory.available_memory() == 8 * 2**30


def test_memory_estimate_against_a_given_limit():
    one_image = 32 * 32 * 3 * 4
    check_fits_in_memory(10, 32, copies=3, options="x", limit=30 * one_image)
    with pytest.raises(ConfigError, match=r"10 images of 32x32 need about 360 KiB \(3 float32"):
        check_fits_in_memory(10, 32, copies=3, options="x", limit=30 * one_image - 1)


# --- item 10: the exact folder split is recorded and reloaded -----------------------------


def _folder(root: Path, per_class: int, start: int = 0) -> Path:
    """Two classes; image ``i`` of a class has a unique grey level, so pixels identify files."""
    for c, name in enumerate(("cats", "dogs")):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(start, start + per_class):
            level = 10 + 100 * c + 2 * i
            Image.new("RGB", (8, 8), (level, level, level)).save(root / name / f"{i:03d}.png")
    return root


def _files(ds) -> tuple[set[str], set[str]]:
    return {f.path for f in ds.train_files}, {f.path for f in ds.test_files}


def test_recorded_split_survives_added_images(tmp_path):
    root = _folder(tmp_path / "photos", per_class=10)
    ds = load_folder(root, image_size=8, seed=0)
    record = json.loads(json.dumps(split_record(ds)))  # what a run writes and eval reads
    train, test = _files(ds)
    _folder(root, per_class=20, start=10)
    # The leak the record prevents: re-splitting the grown folder moves training images into
    # the test set.
    assert _files(load_folder(root, image_size=8, seed=0))[1] & train
    with pytest.warns(UserWarning, match="40 image.* not in the recorded split .* ignored"):
        again = load_folder_split(record)
    assert _files(again) == (train, test)
    np.testing.assert_array_equal(again.test_images, ds.test_images)
    np.testing.assert_array_equal(again.train_images, ds.train_images)
    np.testing.assert_array_equal(again.test_labels, ds.test_labels)
    changes = compare_split(record)
    assert len(changes.added) == 40 and not changes.removed and not changes.changed


def test_recorded_test_image_missing_or_changed_is_an_error(tmp_path):
    root = _folder(tmp_path / "photos", per_class=6)
    record = split_record(load_folder(root, image_size=8))
    test_file = record["test"][0]["file"]
    Image.new("RGB", (8, 8), (1, 2, 3)).save(root / test_file)
    assert compare_split(record).changed == (test_file,)
    with pytest.raises(DataError, match=f"1 changed: {test_file}"):
        load_folder_split(record)
    (root / test_file).unlink()
    assert compare_split(record).removed == (test_file,)
    with pytest.raises(DataError, match=rf"test set .*\(1 missing: {test_file}"):
        load_folder_split(record)


def test_recorded_training_image_missing_is_left_out_with_a_warning(tmp_path):
    root = _folder(tmp_path / "photos", per_class=6)
    ds = load_folder(root, image_size=8)
    record = split_record(ds)
    gone = record["train"][0]["file"]
    (root / gone).unlink()
    with pytest.warns(UserWarning, match=f"1 recorded training image.* left out: {gone}"):
        again = load_folder_split(record)
    assert again.num_train == ds.num_train - 1 and gone not in _files(again)[0]
    np.testing.assert_array_equal(again.train_images, ds.train_images[1:])


def test_recorded_training_image_overwritten_with_garbage_is_left_out(tmp_path):
    root = _folder(tmp_path / "photos", per_class=6)
    ds = load_folder(root, image_size=8)
    record = split_record(ds)
    spoiled = record["train"][-1]["file"]
    (root / spoiled).write_bytes(EPS)  # the hash check comes before any decoding
    with pytest.warns(UserWarning, match=f"left out: {spoiled}"):
        again = load_folder_split(record)
    np.testing.assert_array_equal(again.train_images, ds.train_images[:-1])
    assert compare_split(record) == ((), (), (spoiled,))


@pytest.mark.slow
def test_eval_checkpoint_uses_the_recorded_split(tmp_path, monkeypatch, capsys):
    root = _folder(tmp_path / "photos", per_class=10)
    monkeypatch.chdir(tmp_path)
    sizes = ["--num-train", "16", "--num-test", "4", "--batch-size", "8", "--image-size", "16"]
    epochs = ["--epochs-clean", "1", "--epochs-isp", "1", "--epochs-joint", "1"]
    train = ["train", "--data", "folder:photos", *sizes, *epochs, "--no-progress", "--out", "run"]
    assert main(train) == 0
    record = json.loads((tmp_path / "run" / "split.json").read_text())
    assert record["root"] == str(root) and len(record["test"]) == 4
    _folder(root, per_class=10, start=10)
    monkeypatch.chdir(tmp_path.parent)  # from another directory, after the folder grew
    capsys.readouterr()
    with pytest.warns(UserWarning, match="20 image.* not in the recorded split .* ignored"):
        assert main(["eval", "--checkpoint", str(tmp_path / "run")]) == 0
    assert "test set, 4 images" in capsys.readouterr().out


def test_folder_root_is_recorded_absolute(tmp_path, monkeypatch):
    _folder(tmp_path / "photos", per_class=3)
    monkeypatch.chdir(tmp_path)
    ds = load_folder("photos", image_size=8)
    assert ds.root == str(tmp_path / "photos") and ds.name == f"folder:{tmp_path / 'photos'}"
    monkeypatch.chdir(tmp_path.parent)  # evaluating from elsewhere still finds the files
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_folder_split(split_record(ds)).num_test == ds.num_test


def test_config_records_a_folder_spec_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = TrainConfig.of(data="folder:photos")
    assert str(cfg.data.source) == f"folder:{tmp_path / 'photos'}"
    monkeypatch.chdir(tmp_path.parent)
    assert (
        TrainConfig.from_dict(cfg.to_dict()).data.source == cfg.data.source
    )  # stable when reloaded
    assert str(TrainConfig.of(data="builtin").data.source) == "builtin"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r["test"][0].update(file="../../etc/passwd"), "not a path <class>/<file>"),
        (lambda r: r["test"][0].update(file="/etc/passwd"), "not a path <class>/<file>"),
        (lambda r: r["test"][0].update(label=5), "label must be an int"),
        (lambda r: r["test"][0].update(sha256="x"), "64 lowercase hex"),
        (lambda r: r.update(root="relative/path"), "absolute path"),
        (lambda r: r.update(format="other"), "not a folder split record"),
        (lambda r: r["train"].append(r["test"][0]), "listed twice"),
    ],
)
def test_tampered_split_record_is_refused(tmp_path, change, message):
    record = split_record(load_folder(_folder(tmp_path / "photos", per_class=3), image_size=8))
    change(record)
    with pytest.raises(DataError, match=message):
        load_folder_split(record)


def test_split_record_needs_a_folder_data_set():
    with pytest.raises(DataError, match="was not loaded from a folder"):
        split_record(load_builtin(10, 10))


# --- item 12 ------------------------------------------------------------------------------


def test_more_images_than_a_small_folder_has_names_the_option(tmp_path, capsys):
    root = _folder(tmp_path / "photos", per_class=5)
    with pytest.raises(DataError, match=r"lower num_train \(--num-train\) to at most 8") as info:
        load_folder(root, num_train=2000, image_size=8)
    assert "None" not in str(info.value)
    # A preset's count is an upper bound (it is fitted to the folder); the user's is not.
    assert load_folder(root, num_train=2000, image_size=8, up_to=["train"]).num_train == 8
    argv = ["train", "--full", "--num-train", "2000", "--data", f"folder:{root}"]
    err = _one_line_error(capsys, [*argv, "--out", str(tmp_path / "r")], "")
    assert "--num-train" in err and "None" not in err


@pytest.mark.parametrize("value", [0.0, 0.3, 1.0])
def test_equalisation_of_a_constant_image_matches_scikit_image(value):
    exposure = pytest.importorskip("skimage.exposure")
    image = np.full((6, 6, 3), value, np.float32)
    # One grey plane: scikit-image's histogram of it is that of all three equal channels.
    expected = exposure.equalize_hist(image[..., 0])
    out = np.asarray(equalize_histogram(jnp.asarray(image[None])))[0]
    np.testing.assert_allclose(out, np.repeat(expected[..., None], 3, axis=-1), atol=1e-6)
    assert out.dtype == np.float32


def test_poisson_full_well_beyond_the_faithful_range_is_refused():
    with pytest.raises(ConfigError, match="full_well must be a number of electrons in"):
        LowLight(noise="poisson_gaussian", full_well=1e10)
    # At the largest accepted full well a white image keeps its brightness and shot noise.
    config = LowLight(
        brightness=(0.5, 0.5), noise_sigma=0.0, noise="poisson_gaussian", full_well=MAX_FULL_WELL
    )
    dark, _ = darken(jax.random.key(0), jnp.ones((4, 64, 64, 3)), config)
    assert abs(float(dark.mean()) - 0.5) < 1e-4
    expected_std = np.sqrt(0.5 / MAX_FULL_WELL)
    assert abs(float(dark.std()) / expected_std - 1) < 0.05
