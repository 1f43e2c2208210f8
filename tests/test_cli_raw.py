"""``diffisp apply --raw`` and ``diffisp bench --raw``: outputs, pipelines, clean errors."""

from __future__ import annotations

import json
import struct
import zlib

import numpy as np
import pytest
from flax import nnx
from helpers import randomize
from PIL import Image

from diffisp.cli import main
from diffisp.data.raw_file import read_raw
from diffisp.experiments.apply_raw import png_bytes, render_raw
from diffisp.experiments.raw_bench import write_bayer_dng
from diffisp.isp.chain import ISP
from diffisp.isp.raw import build_raw_isp, conventional_pipeline
from diffisp.models.classifier import SmallCNN
from diffisp.training.checkpoint import save_model
from diffisp.training.config import TrainConfig
from diffisp.training.state import build_isp

pytestmark = pytest.mark.filterwarnings("ignore::diffisp.data.raw_file.RawMetadataWarning")
HEIGHT, WIDTH = 24, 36


def read_png16(data: bytes) -> np.ndarray:
    """Decode the 16-bit RGB PNGs :func:`png_bytes` writes (one IDAT, filter 0 on every row)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, at = {}, 8
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        chunks[data[at + 4 : at + 8]] = data[at + 8 : at + 8 + length]
        at += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert (depth, colour) == (16, 2)
    rows = np.frombuffer(zlib.decompress(chunks[b"IDAT"]), np.uint8).reshape(height, -1)
    assert (rows[:, 0] == 0).all()
    return rows[:, 1:].copy().view(">u2").reshape(height, width, 3).astype(np.uint16)


@pytest.fixture
def dng(tmp_path):
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    counts = (1100 + 600 * (1 + np.sin(x / 3.0) * np.cos(y / 4.0))).astype(np.uint16)
    xyz_to_camera = [[0.6461, -0.1164, -0.0857], [-0.3825, 1.16, 0.2534], [-0.0416, 0.154, 0.6]]
    return write_bayer_dng(
        tmp_path / "shot.dng", counts, black_level=1024, white_level=4095,
        as_shot_neutral=(0.5, 1.0, 0.7), color_matrix=xyz_to_camera,
    )  # fmt: skip


def test_conventional_8_and_16_bit_outputs(dng, tmp_path, capsys):
    out8, out16 = tmp_path / "o8", tmp_path / "o16"
    assert main(["apply", "--raw", str(dng), "--conventional", "--out", str(out8)]) == 0
    args = ["apply", "--raw", str(dng), "--conventional", "--out", str(out16), "--bits", "16"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "conventional pipeline" in captured.out
    assert "rgb_xyz_matrix is all zeros" in captured.err  # the metadata fallback, reported
    eight = np.asarray(Image.open(out8 / "shot_isp.png"))
    sixteen = read_png16((out16 / "shot_isp.png").read_bytes())
    assert eight.shape == sixteen.shape == (HEIGHT, WIDTH, 3)
    assert eight.dtype == np.uint8 and sixteen.dtype == np.uint16
    expected = np.asarray(conventional_pipeline(read_raw(dng)[0], tone=False))[0]
    np.testing.assert_allclose(sixteen / 65535, expected, atol=0.5 / 65535 + 1e-6)
    np.testing.assert_allclose(eight / 255, expected, atol=0.5 / 255 + 1e-6)
    assert Image.open(out16 / "shot_isp.png").size == (WIDTH, HEIGHT)  # a valid PNG for Pillow


def test_png16_round_trip():
    image = np.random.default_rng(0).uniform(0, 1, (5, 7, 3))
    decoded = read_png16(png_bytes(image, 16))
    np.testing.assert_array_equal(decoded, np.round(image * 65535).astype(np.uint16))


def test_an_srgb_isp_runs_behind_the_conventional_front(dng, tmp_path, capsys):
    isp = ISP("seed")
    save_model(tmp_path / "m", isp, SmallCNN(rngs=nnx.Rngs(0)), {"image_size": 32})
    out = tmp_path / "o"
    args = ["apply", "--raw", str(dng), "--checkpoint", str(tmp_path / "m"), "--out", str(out)]
    assert main(args) == 0
    assert "sRGB ISP" in capsys.readouterr().out
    capture, _ = read_raw(dng)
    expected = np.asarray(isp(conventional_pipeline(capture, tone=False)))[0]
    np.testing.assert_allclose(
        np.asarray(Image.open(out / "shot_isp.png")) / 255, expected, atol=0.003
    )


def test_render_raw_with_a_raw_isp_equals_the_isp(dng):
    isp = build_raw_isp("raw-seed", ISP)
    capture, _ = read_raw(dng)
    # Tiles of 24 pixels: the chain behind the front runs in 2 pieces and must not show it.
    rendered = render_raw(capture, isp, tile=24)
    np.testing.assert_allclose(rendered, np.asarray(isp(capture))[0], atol=1e-5)


def test_apply_raw_with_a_raw_isp_checkpoint(dng, tmp_path, capsys):
    cfg = TrainConfig.of(input="raw")  # what a --input raw run saves with its model
    isp = randomize(build_isp(cfg), seed=0, scale=0.3)
    save_model(tmp_path / "m", isp, SmallCNN(rngs=nnx.Rngs(0)), {"config": cfg.to_dict()})
    out = tmp_path / "o"
    args = ["apply", "--raw", str(dng), "--checkpoint", str(tmp_path / "m"), "--out", str(out)]
    assert main(args) == 0
    assert "learned RAW ISP" in capsys.readouterr().out
    expected = np.asarray(isp(read_raw(dng)[0]))[0]
    np.testing.assert_allclose(
        np.asarray(Image.open(out / "shot_isp.png")) / 255, expected, atol=0.003
    )


def test_unreadable_raw_files_are_listed_with_their_reason(dng, tmp_path, capsys):
    random_bytes = tmp_path / "noise.dng"
    random_bytes.write_bytes(np.random.default_rng(1).bytes(5000))
    png = tmp_path / "picture.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(png)
    truncated = tmp_path / "half.dng"
    truncated.write_bytes(dng.read_bytes()[:1000])
    out = tmp_path / "out"
    files = [str(p) for p in (random_bytes, png, truncated)]
    assert main(["apply", "--raw", *files, "--conventional", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "3 of 3 files failed:" in err and "Traceback" not in err
    for path, reason in ((random_bytes, "not RAW"), (png, "not RAW"), (truncated, "truncated")):
        (line,) = [line for line in err.splitlines() if line.startswith(f"  {path}: ")]
        assert reason in line


def _good_dng(path, seed=0):
    rng = np.random.default_rng(seed)
    counts = rng.integers(1100, 3000, (HEIGHT, WIDTH)).astype(np.uint16)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_bayer_dng(path, counts, black_level=1024, white_level=4095)


def _apply_raw(files, out, *extra):
    return main(["apply", "--raw", *map(str, files), "--conventional", "--out", str(out), *extra])


def test_case_4_a_truncated_file_between_good_ones(dng, tmp_path, capsys):
    # Issue 27, case 4: the run used to stop at the truncated file, the later good file never
    # processed, exit 2, no list of what failed.
    good2 = _good_dng(tmp_path / "good2.dng", seed=2)
    truncated = tmp_path / "truncated.dng"
    truncated.write_bytes(good2.read_bytes()[: len(good2.read_bytes()) // 2])
    out = tmp_path / "o"
    assert _apply_raw([dng, truncated, good2], out) == 1
    captured = capsys.readouterr()
    assert (out / "shot_isp.png").is_file() and (out / "good2_isp.png").is_file()
    assert not (out / "truncated_isp.png").exists()
    assert "1 of 3 files failed:" in captured.err
    assert f"  {truncated}: " in captured.err and "truncated" in captured.err
    assert "2 written, 0 skipped (done earlier), 1 failed" in captured.out
    # A rerun renders nothing again: the two good files are done, the bad one fails again.
    assert _apply_raw([dng, truncated, good2], out) == 1
    assert "1 written" not in capsys.readouterr().out


def test_case_5_every_bad_file_is_named_and_every_good_one_rendered(dng, tmp_path, capsys):
    # Issue 27, case 5: an up-front header check used to fail the whole batch naming only the
    # first of three bad files.
    good2 = _good_dng(tmp_path / "good2.dng", seed=3)
    truncated = tmp_path / "truncated.dng"
    truncated.write_bytes(good2.read_bytes()[:1000])
    jpeg = tmp_path / "photo.dng"
    Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(jpeg, format="JPEG")
    empty = tmp_path / "empty.dng"
    empty.write_bytes(b"")
    out = tmp_path / "o"
    assert _apply_raw([dng, truncated, jpeg, good2, empty], out, "--no-progress") == 1
    err = capsys.readouterr().err
    assert "3 of 5 files failed:" in err
    for bad in (truncated, jpeg, empty):
        assert f"  {bad}: " in err
    assert sorted(p.name for p in out.glob("*.png")) == ["good2_isp.png", "shot_isp.png"]


def test_fail_fast_stops_at_the_first_failure(dng, tmp_path, capsys):
    bad = tmp_path / "bad.dng"
    bad.write_bytes(b"not a raw file at all" * 50)
    good2 = _good_dng(tmp_path / "good2.dng")
    out = tmp_path / "o"
    assert _apply_raw([bad, dng, good2], out, "--fail-fast", "--workers", "1") == 1
    err = capsys.readouterr().err
    assert f"  {bad}: " in err and "not processed (--fail-fast): 2 files" in err
    assert not list(out.glob("*.png"))


def test_case_6_a_second_apply_never_replaces_an_earlier_output(dng, tmp_path, capsys):
    # Issue 27, case 6: another file of the same name, in a second call into the same --out,
    # used to replace the first one's output silently.
    out = tmp_path / "o"
    assert _apply_raw([dng], out) == 0
    first = (out / "shot_isp.png").read_bytes()
    other = _good_dng(tmp_path / "elsewhere" / "shot.dng", seed=5)
    assert _apply_raw([other], out) == 0
    printed = capsys.readouterr().out
    assert (out / "shot_isp.png").read_bytes() == first
    assert f"{other} -> {out / 'shot_isp-1.png'} (shot_isp.png is taken)" in printed
    # The same file again: done, skipped; both inputs again: both skipped, same names.
    assert _apply_raw([dng, other], out) == 0
    printed = capsys.readouterr().out
    assert "0 written, 2 skipped" in printed
    assert f"{other} -> {out / 'shot_isp-1.png'} (done earlier, skipped)" in printed
    # Another renderer (16 bits) over the same outputs: refused, naming the file ...
    assert _apply_raw([dng], out, "--bits", "16") == 2
    err = capsys.readouterr().err
    assert f"{out / 'shot_isp.png'} holds a render of {dng} by another renderer" in err
    assert "--overwrite" in err and (out / "shot_isp.png").read_bytes() == first
    # ... unless --overwrite.
    assert _apply_raw([dng], out, "--bits", "16", "--overwrite") == 0
    assert read_png16((out / "shot_isp.png").read_bytes()).dtype == np.uint16


def test_a_changed_input_is_not_skipped_silently(dng, tmp_path, capsys):
    out = tmp_path / "o"
    assert _apply_raw([dng], out) == 0
    _good_dng(dng, seed=9)  # the same path, new content
    assert _apply_raw([dng], out) == 2
    assert "an earlier version of" in capsys.readouterr().err


def test_folders_are_searched_recursively_and_keep_their_subfolders(dng, tmp_path, capsys):
    shots = tmp_path / "shots"
    _good_dng(shots / "day1" / "a.dng")
    _good_dng(shots / "day2" / "a.DNG", seed=1)
    _good_dng(shots / ".hidden" / "b.dng")
    (shots / "notes.txt").write_text("not a raw file")
    out = tmp_path / "o"
    assert _apply_raw([shots], out) == 0
    rendered = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert rendered == ["day1/a_isp.png", "day2/a_isp.png"]
    # A folder named like a RAW file is a folder (it was "RAW file not found").
    folder = tmp_path / "x.dng"
    folder.mkdir()
    assert _apply_raw([folder], out) == 2
    assert f"{folder} is a folder with no RAW files" in capsys.readouterr().err


def test_a_full_disk_names_the_output(dng, tmp_path, capsys, monkeypatch):
    import errno

    import diffisp.util.io as io

    def full(path, data):  # what write() or fsync() raise: no file name
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(io, "atomic_write_bytes", full)
    out = tmp_path / "o"
    assert _apply_raw([dng], out) == 2
    (err,) = [e for e in capsys.readouterr().err.splitlines() if "warning" not in e]
    assert err.startswith("diffisp: error: No space left on device")
    assert str(out / "shot_isp.png") in err


def test_tiff_outputs_8_and_16_bit(dng, tmp_path):
    import tifffile

    for bits, dtype in ((8, np.uint8), (16, np.uint16)):
        out = tmp_path / f"o{bits}"
        assert _apply_raw([dng], out, "--format", "tiff", "--bits", str(bits)) == 0
        pixels = tifffile.imread(out / "shot_isp.tif")
        assert pixels.shape == (HEIGHT, WIDTH, 3) and pixels.dtype == dtype


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["x.png"], "one of the two"),  # images and --raw
        ([], "needs --checkpoint"),  # --raw without a checkpoint or --conventional
        (["--conventional", "--checkpoint", "m"], "--conventional goes with --raw"),
    ],
)
def test_apply_raw_argument_errors(dng, tmp_path, capsys, extra, message):
    assert main(["apply", "--raw", str(dng), "--out", str(tmp_path / "o"), *extra]) == 2
    assert message in capsys.readouterr().err


def test_bench_raw_tiny(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--raw", "--raw-size", "32x48", "--out", str(out)]) == 0
    result = json.loads(out.read_text())["raw"]
    assert (result["height"], result["width"], result["source"]) == (32, 48, "synthetic")
    for key in ("rawpy_linear", "diffisp_bilinear", "diffisp_malvar"):
        assert result[key]["megapixels_per_s"] > 0
    assert "diffisp / rawpy" in capsys.readouterr().out
    assert main(["bench", "--raw", "--raw-size", "31x48", "--out", str(out)]) == 2


def test_conventional_needs_raw_files(tmp_path, capsys):
    assert main(["apply", "x.png", "--conventional", "--out", str(tmp_path / "o")]) == 2
    assert "--conventional goes with --raw" in capsys.readouterr().err


def test_bench_raw_batch_tiny(tmp_path):
    from diffisp.experiments.raw_bench import bench_raw_batch

    result = bench_raw_batch(2, sizes=((32, 48),), folder=tmp_path, log=lambda line: None)
    (row,) = result["rows"]
    assert row["files"] == 2 and row["rawpy_files_per_s"] > 0 and row["diffisp_files_per_s"] > 0
    assert row["compiles"] == {"front": 1}  # the timed files compiled nothing
