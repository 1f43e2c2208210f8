"""The batch renderer behind ``diffisp apply`` (:mod:`diffisp.experiments.render`): compiled
once per size, EXIF carried, failures collected, resumable through the journal."""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest
from helpers import randomize
from PIL import Image

from diffisp.capture.raw_capture import make_capture
from diffisp.errors import InputError
from diffisp.experiments.render import (
    JOURNAL_NAME,
    BatchOptions,
    Renderer,
    apply_batch,
    collect_inputs,
    isp_digest,
)
from diffisp.isp.chain import ISP
from diffisp.isp.raw import conventional_linear, display_encode


def _png(path, size=(20, 30), seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray((rng.uniform(0, 0.4, (*size, 3)) * 255).astype(np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def isp():
    return randomize(ISP("gamma"), seed=1, scale=0.3)  # one stage: compiles fast


@pytest.fixture(scope="module")
def full_isp():
    return randomize(ISP("sharpen,contrast"), seed=1, scale=0.3)  # local, then whole-image


def test_the_chain_isp_is_compiled_once_per_image_size(full_isp):
    isp = full_isp
    renderer = Renderer(isp, raw=False, tile=16)
    rng = np.random.default_rng(0)
    images = [rng.uniform(0, 1, (20, 30, 3)).astype(np.float32) for _ in range(3)]
    first = renderer(images[0])
    traces = dict(renderer.traces)
    assert traces["chain"] >= 1 and traces["decisions"] == 1
    for image in images[1:]:
        out = renderer(image)
    assert dict(renderer.traces) == traces  # same size: nothing traced again
    np.testing.assert_allclose(out, np.asarray(isp(jnp.asarray(images[2][None])))[0], atol=1e-5)
    assert first.shape == (20, 30, 3)
    renderer(rng.uniform(0, 1, (21, 30, 3)).astype(np.float32))  # a new size compiles
    assert renderer.traces["decisions"] == 2


def test_the_raw_front_is_compiled_once_per_size():
    renderer = Renderer(None, raw=True, tile=64)
    rng = np.random.default_rng(0)
    captures = [make_capture(jnp.asarray(rng.uniform(0, 1, (1, 8, 12)))) for _ in range(3)]
    outs = [renderer(c) for c in captures]
    assert renderer.traces["front"] == 1
    expected = np.asarray(display_encode(conventional_linear(captures[2]), tone=False))[0]
    np.testing.assert_allclose(outs[2], expected, atol=1e-6)


def test_exif_is_carried_over_with_the_orientation_made_upright(isp, tmp_path):
    source = tmp_path / "photo.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    exif[0x010F] = "TestCam"
    Image.fromarray(np.full((10, 16, 3), 60, np.uint8)).save(source, exif=exif, quality=95)
    for bits in (8, 16):
        out = tmp_path / f"o{bits}"
        options = BatchOptions(raw=False, bits=bits, progress=False)
        result = apply_batch([source], out, isp, options, log=lambda line: None)
        assert not result.failed
        with Image.open(out / "photo_isp.png") as written:
            assert written.size == (10, 16)  # upright: the rotation is in the pixels
            tags = written.getexif()
        assert tags[0x010F] == "TestCam" and tags[0x0112] == 1


def test_an_srgb_batch_lists_its_failures_and_renders_the_rest(isp, tmp_path):
    good = [_png(tmp_path / "in" / f"{n}.png", seed=ord(n)) for n in ("a", "c")]
    corrupt = tmp_path / "in" / "b.png"
    corrupt.write_bytes(good[0].read_bytes()[:60])
    out = tmp_path / "o"
    lines = []
    options = BatchOptions(raw=False, progress=False)
    result = apply_batch([tmp_path / "in"], out, isp, options, log=lines.append)
    assert set(result.written) == set(good) and list(result.failed) == [corrupt]
    assert "b.png" in result.failed[corrupt]
    assert [line.split(" ")[0] for line in lines] == [str(good[0]), f"{corrupt}:", str(good[1])]


def test_an_interrupted_run_resumes_without_redoing_or_replacing(isp, tmp_path):
    sources = [_png(tmp_path / f"{n}.png", seed=k) for k, n in enumerate("abc")]
    out = tmp_path / "o"
    options = BatchOptions(raw=False, progress=False)
    apply_batch(sources[:2], out, isp, options, log=lambda line: None)
    journal = out / JOURNAL_NAME
    lines = journal.read_text().splitlines()
    # A crash after b_isp.png was renamed into place but before its "done" line, and half a line.
    entries = [json.loads(line) for line in lines]
    pending = {**entries[1], "state": "pending", "previous": None}
    journal.write_text(f"{lines[0]}\n{json.dumps(pending)}\n{lines[1][:40]}")
    result = apply_batch(sources, out, isp, options, log=lambda line: None)
    assert set(result.skipped) == set(sources[:2]) and set(result.written) == {sources[2]}
    assert len(journal.read_text().splitlines()) == 3  # compacted: one line per output


def test_a_different_checkpoint_is_refused_until_overwrite(isp, tmp_path):
    source = _png(tmp_path / "a.png")
    out = tmp_path / "o"
    options = BatchOptions(raw=False, progress=False)
    apply_batch([source], out, isp, options, log=lambda line: None)
    other = randomize(ISP("gamma"), seed=2, scale=0.3)
    assert isp_digest(other) != isp_digest(isp)
    assert isp_digest(randomize(ISP("gamma"), seed=1, scale=0.3)) == isp_digest(isp)
    with pytest.raises(InputError, match=r"a_isp.png holds a render of .* by another renderer"):
        apply_batch([source], out, other, options, log=lambda line: None)
    overwrite = BatchOptions(raw=False, progress=False, overwrite=True)
    result = apply_batch([source], out, other, overwrite, log=lambda line: None)
    assert list(result.written) == [source]


def test_collect_inputs_sorts_folders_and_renders_a_file_once(tmp_path):
    b, a = _png(tmp_path / "d" / "b.png"), _png(tmp_path / "d" / "sub" / "a.png")
    (tmp_path / "d" / "skip.txt").write_text("x")
    sources = collect_inputs([tmp_path / "d", b], raw=False)
    assert [s.path for s in sources] == [b, a]  # "b.png" < "sub/a.png"; b given twice, once
    assert [s.subdir.as_posix() for s in sources] == [".", "sub"]


def test_outputs_inside_an_input_folder_are_not_inputs_on_a_rerun(isp, tmp_path):
    _png(tmp_path / "d" / "a.png")
    out = tmp_path / "d" / "rendered"
    options = BatchOptions(raw=False, progress=False)
    apply_batch([tmp_path / "d"], out, isp, options, log=lambda line: None)
    result = apply_batch([tmp_path / "d"], out, isp, options, log=lambda line: None)
    assert len(result.skipped) == 1 and not result.written  # not rendered/a_isp.png again


@pytest.mark.slow  # about 50 s on 2 loaded cores: the predictor compiles for several shapes
def test_the_adaptive_isp_renders_compiled_as_it_does_whole():
    from flax import nnx

    from diffisp.isp.adaptive import AdaptiveISP

    adaptive = randomize(AdaptiveISP("seed", rngs=nnx.Rngs(0)), scale=0.3)
    image = np.random.default_rng(0).uniform(0, 1, (21, 30, 3)).astype(np.float32)
    out = Renderer(adaptive, raw=False, tile=16)(image)
    whole = np.asarray(adaptive(jnp.asarray(image[None])))[0]
    np.testing.assert_allclose(out, whole, atol=1e-5)
