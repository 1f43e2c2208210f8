"""The CLI used as a careless or hostile user would (issue 12): one-line errors or correct work.

Covers: resuming finished, interrupted or damaged runs; two runs in one directory; the second
Ctrl-C; unwritable output paths; apply's output names, image size limit and tiling; bench's
--out; capped error messages.
"""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers import TINY_CLI_ARGS, randomize
from PIL import Image

from diffisp.cli import main
from diffisp.errors import CheckpointError, InputError
from diffisp.util.io import LOCK_NAME, DirectoryLock


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("rel") / "run"
    assert main(["train", *TINY_CLI_ARGS, "--out", str(out)]) == 0
    return out


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    return err


def dark_png(path: Path, size=(20, 30), seed=0) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = (rng.uniform(0, 0.3, (*size, 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(path)
    return path


# -- resume ------------------------------------------------------------------------------------


def test_a_finished_run_releases_its_lock_and_resuming_it_says_finished(run_dir, capsys):
    assert not (run_dir / LOCK_NAME).exists()
    capsys.readouterr()
    assert main(["train", "--resume", str(run_dir)]) == 0
    assert "already finished" in capsys.readouterr().out


def test_resume_refuses_options_it_would_ignore(run_dir, capsys):
    assert main(["train", "--resume", str(run_dir), "--seed", "9", "--epochs-joint", "10"]) == 2
    err = one_line_error(capsys)
    assert "would ignore --epochs-joint, --seed (" in err and "config.json" in err
    assert main(["train", "--resume", str(run_dir), "--quick", "--no-progress"]) == 2
    assert "would ignore --quick/--full (" in one_line_error(capsys)


def test_resume_completes_an_interrupted_final_stage_past_a_damaged_epoch(
    run_dir, tmp_path, capsys
):
    """metrics.json missing (killed while writing figures), model/ present, last step damaged."""
    run = Path(shutil.copytree(run_dir, tmp_path / "run"))
    (run / "metrics.json").unlink()
    latest = max(int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit())
    weights = max(
        (p for p in (run / "checkpoints" / str(latest)).rglob("*") if p.is_file()),
        key=lambda p: p.stat().st_size,
    )
    weights.write_bytes(weights.read_bytes()[:-7])  # truncated
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"checkpoints/{latest} is damaged" in out and "set aside" in out
    assert f"epoch {latest}" in out and "resuming" in out  # from the epoch before
    assert (run / "metrics.json").is_file()
    assert main(["eval", "--checkpoint", str(run)]) == 0  # the overwritten model/ loads


def test_resume_without_a_checkpoint_says_it_starts_over(tmp_path):
    from diffisp.experiments.run import _restore_for_resume
    from diffisp.training.checkpoint import TrainingCheckpoints

    said = []
    _restore_for_resume(TrainingCheckpoints(tmp_path), None, 64, tmp_path, said.append)
    assert said == [f"no intact checkpoint in {tmp_path / 'checkpoints'}: training {tmp_path} "
                    "from the start"]  # fmt: skip


# -- two runs, one directory -------------------------------------------------------------------


def test_a_second_run_into_a_locked_directory_names_the_other_pid(tmp_path, capsys):
    out = tmp_path / "busy"
    with DirectoryLock(out):  # held through a separate open file: flock conflicts in-process too
        assert main(["demo", *TINY_CLI_ARGS, "--out", str(out)]) == 2
        err = one_line_error(capsys)
        import os

        assert f"{out} is in use by another diffisp run (pid {os.getpid()})" in err
    assert not (out / LOCK_NAME).exists()
    with DirectoryLock(out), pytest.raises(InputError, match="in use"), DirectoryLock(out):
        pass


def test_default_run_names_differ_within_one_second(tmp_path):
    from diffisp.experiments.run import default_run_dir

    names = {default_run_dir(tmp_path).name for _ in range(20)}
    assert len(names) == 20


# -- the second Ctrl-C -------------------------------------------------------------------------


def test_second_interrupt_exits_130_at_once(capsys):
    from diffisp.experiments.console import DeferredInterrupt

    said, exits = [], []
    handler = DeferredInterrupt(said.append, exit_now=exits.append)
    handler._handle(2, None)
    assert handler.requested and exits == [] and "finishing this epoch" in said[0]
    handler._handle(2, None)  # no KeyboardInterrupt into orbax's threads: a hard exit
    assert exits == [130]
    assert "interrupted again" in one_line_error(capsys)


# -- output paths ------------------------------------------------------------------------------


def _bad_out_paths(tmp_path: Path) -> dict[str, tuple[str, str]]:
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    return {
        "a file": (str(a_file), "not a directory"),
        "under a file": (str(a_file / "sub"), "is a file"),
        "proc": ("/proc/diffisp-test/out", "/proc/diffisp-test"),
        "too long": (str(tmp_path / ("n" * 300)), "longer than 255 bytes"),
    }


# An existing file is a valid --out where the output is a file (report, bench): overwritten.
OUTPUT_CASES = [
    (command, case)
    for command in ("apply", "train", "report", "bench")
    for case in ("a file", "under a file", "proc", "too long")
    if not (case == "a file" and command in ("report", "bench"))
]


@pytest.mark.parametrize(("command", "case"), OUTPUT_CASES)
def test_unwritable_output_paths_fail_in_one_line(command, case, tmp_path, capsys, monkeypatch):
    import diffisp.experiments.bench as bench

    monkeypatch.setattr(bench, "run_bench", lambda **_: pytest.fail("measured before checking"))
    out, message = _bad_out_paths(tmp_path)[case]
    image = dark_png(tmp_path / "x.png")
    (tmp_path / "run").mkdir()
    args = {
        "apply": ["apply", str(image), "--checkpoint", str(tmp_path / "none"), "--out", out],
        "train": ["train", *TINY_CLI_ARGS, "--out", out],
        "report": ["report", str(tmp_path / "run"), "--out", out],
        "bench": ["bench", "--out", out],
    }[command]
    assert main(args) == 2
    assert message in one_line_error(capsys)


@pytest.mark.parametrize(
    ("bad", "message"), [("", "empty path"), (" ", "empty path"), ("a\0b", "NUL byte")]
)
def test_empty_or_nul_paths_are_usage_errors(bad, message, capsys):
    with pytest.raises(SystemExit) as info:
        main(["apply", "x.png", "--checkpoint", "run", "--out", bad])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --out:" in err and message in err


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_a_full_or_read_only_disk_during_apply_is_one_line(
    code, run_dir, tmp_path, capsys, monkeypatch
):
    import diffisp.util.io as io

    def fail(path, data):
        raise OSError(code, __import__("os").strerror(code), str(path))

    monkeypatch.setattr(io, "atomic_write_bytes", fail)
    image = dark_png(tmp_path / "x.png")
    out = tmp_path / "out"
    assert main(["apply", str(image), "--checkpoint", str(run_dir), "--out", str(out)]) == 2
    err = one_line_error(capsys)
    assert str(out / "x_isp.png") in err and __import__("os").strerror(code) in err


def test_long_error_messages_are_capped(tmp_path, capsys, monkeypatch):
    import diffisp.training.checkpoint as checkpoint

    def fail(directory):
        raise CheckpointError("orbax said: " + '{"driver": "ocdbt", "spec": 1}' * 300)

    monkeypatch.setattr(checkpoint, "load_model", fail)
    assert main(["eval", "--checkpoint", str(tmp_path)]) == 2
    err = one_line_error(capsys)
    assert len(err) < 500 and "--debug" in err
    with pytest.raises(CheckpointError):
        main(["--debug", "eval", "--checkpoint", str(tmp_path)])


def test_bench_out_accepts_a_directory(tmp_path, monkeypatch):
    import diffisp.experiments.bench as bench

    monkeypatch.setattr(bench, "run_bench", lambda **_: {"measured": True})
    monkeypatch.setattr(bench, "print_bench", lambda result: None)
    assert main(["bench", "--out", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "bench.json").read_text()) == {"measured": True}


# -- apply -------------------------------------------------------------------------------------


def test_apply_never_overwrites_its_own_outputs(run_dir, tmp_path, capsys):
    images = [
        dark_png(tmp_path / "a" / "x.png", seed=1),
        dark_png(tmp_path / "b" / "x.png", seed=2),
        tmp_path / "b" / "x.jpg",
    ]
    Image.open(images[1]).save(images[2], quality=95)
    out = tmp_path / "out"
    capsys.readouterr()
    assert main(["apply", *map(str, images), "--checkpoint", str(run_dir), "--out", str(out)]) == 0
    names = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert names == ["x_isp-1.png", "x_isp-2.png", "x_isp.png"]
    printed = capsys.readouterr().out
    for image, name in zip(images, ["x_isp.png", "x_isp-1.png", "x_isp-2.png"], strict=True):
        assert f"{image} -> {out / name}" in printed
    first, second = (np.asarray(Image.open(out / n)) for n in ("x_isp.png", "x_isp-1.png"))
    assert not np.array_equal(first, second)


def test_apply_refuses_to_overwrite_an_input(run_dir, tmp_path, capsys):
    out = tmp_path / "out"
    victim = dark_png(out / "x_isp.png")
    before = victim.read_bytes()
    source = dark_png(tmp_path / "x.png")
    args = ["apply", str(source), str(victim), "--checkpoint", str(run_dir), "--out", str(out)]
    # A file in --out that apply did not write is never replaced: the output takes a new name.
    assert main(args) == 0
    assert victim.read_bytes() == before and (out / "x_isp-1.png").is_file()
    capsys.readouterr()
    assert main([*args, "--overwrite"]) == 2  # x.png -> x_isp.png, which is an input
    assert "would overwrite an input image" in one_line_error(capsys)
    assert victim.read_bytes() == before


def test_apply_refuses_a_huge_image_before_decoding(run_dir, tmp_path, capsys, monkeypatch):
    import diffisp.data as data

    monkeypatch.setattr(data, "load_image", lambda *a: pytest.fail("decoded"))
    image = tmp_path / "huge.png"
    Image.new("RGB", (12000, 12000)).save(image)  # a few hundred KB on disk
    args = ["apply", str(image), "--checkpoint", str(run_dir), "--out", str(tmp_path / "o")]
    assert main(args) == 1  # one failed file of the batch
    err = capsys.readouterr().err
    assert "1 of 1 files failed" in err
    assert "12000x12000 (144,000,000 pixels), above the limit" in err


# 190 s on 2 loaded cores since --tile 5 compiles each tile shape once: the slow suite.
@pytest.mark.slow
def test_tiled_apply_equals_untiled(run_dir, tmp_path):
    from diffisp.experiments.apply import run_isp_tiled
    from diffisp.isp.adaptive import AdaptiveISP
    from diffisp.isp.chain import ISP

    image = np.random.default_rng(0).uniform(0, 1, (21, 30, 3)).astype(np.float32)
    global_isp = randomize(ISP("full"), scale=0.5)  # sharpen, denoise and contrast included
    adaptive = randomize(AdaptiveISP("full", rngs=nnx.Rngs(0)), scale=0.3)
    for isp in (global_isp, adaptive):
        whole = np.asarray(isp(jnp.asarray(image[None])))[0]
        for tile in (4, 7, 64):
            np.testing.assert_allclose(run_isp_tiled(isp, image, tile), whole, atol=1e-6)
    # The CLI path with small tiles gives the same PNG as with one tile.
    src = dark_png(tmp_path / "x.png", size=(33, 41))
    for tile, out in ((5, "small"), (4096, "one")):
        args = ["apply", str(src), "--checkpoint", str(run_dir), "--out", str(tmp_path / out)]
        assert main([*args, "--tile", str(tile)]) == 0
    small, one = (np.asarray(Image.open(tmp_path / d / "x_isp.png")) for d in ("small", "one"))
    np.testing.assert_array_equal(small, one)
