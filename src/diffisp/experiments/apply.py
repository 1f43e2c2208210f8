"""``diffisp apply``: a saved ISP over image files, safely.

Three things the naive loop got wrong, each handled by one function here:

* outputs that collide (``a/x.png`` and ``b/x.jpg`` both -> ``x_isp.png``) or overwrite an input:
  :func:`plan_outputs` decides every output name before anything is processed;
* images whose decoded size is far beyond their file size (a 445 KB PNG of 12000x12000 pixels):
  :func:`check_pixel_count` reads only the header;
* full-resolution images: :func:`run_isp_tiled` processes them in overlapping tiles, with the
  adaptive ISP's parameters predicted once from the whole image; the result equals the untiled
  one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from diffisp.data.images import DEFAULT_MAX_PIXELS as DEFAULT_MAX_PIXELS  # shared with readers
from diffisp.data.images import read_image_size
from diffisp.errors import DataError, InputError
from diffisp.isp.chain import LearnedISP, run_chain

DEFAULT_TILE = 1024

# How far each spatial stage reads beyond a pixel (sharpen: a 3x3 blur; denoise: 5x5 bilateral).
_STAGE_RADIUS = {"sharpen": 1, "denoise": 2}
# Stages that need a statistic of the whole image (contrast pivots on the mean luminance): they
# run on the whole image at once, between the tiled runs of the local stages around them.
_WHOLE_IMAGE_STAGES = frozenset({"contrast"})


def plan_outputs(images: Sequence[Path], out_dir: Path) -> dict[Path, Path]:
    """The output file of every input: ``<stem>_isp.png``, then ``<stem>_isp-1.png``, ...

    Inputs that are the same file are processed once. Names are made unique within this call;
    a file already in ``out_dir`` from an earlier call is overwritten as before.

    Raises:
      InputError: an output would replace one of the inputs.
    """
    inputs: dict[Path, Path] = {}
    for path in images:
        inputs.setdefault(path.resolve(), path)
    taken: set[Path] = set()
    plan = {}
    for path in inputs.values():
        target, n = out_dir / f"{path.stem}_isp.png", 0
        while target.resolve() in taken:
            n += 1
            target = out_dir / f"{path.stem}_isp-{n}.png"
        if target.resolve() in inputs:
            raise InputError(
                f"the output {target} of {path} would overwrite an input image; choose another "
                "--out"
            )
        taken.add(target.resolve())
        plan[path] = target
    return plan


def check_pixel_count(path: Path, max_pixels: int) -> tuple[int, int]:
    """``(width, height)`` from the image header, refused above ``max_pixels`` before decoding.

    Raises:
      DataError: too many pixels (the message gives the size and the limit) or no readable
        header (the message names the file).
    """
    import warnings

    from PIL import Image

    with warnings.catch_warnings():  # the limit is checked here, with a better message
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        width, height = read_image_size(path)
    if width * height > max_pixels:
        raise DataError(
            f"image {path} is {width}x{height} ({width * height:,} pixels), above the limit of "
            f"{max_pixels:,} (--max-pixels); one float copy would need "
            f"{width * height * 12 / 1e9:.2f} GB"
        )
    return width, height


class ChainRunner(Protocol):
    """How :func:`run_isp_tiled` evaluates the ISP: eagerly (:class:`EagerRunner`) or through
    functions compiled once (:class:`diffisp.experiments.render_compiled.CompiledRunner`)."""

    def decide(self, isp: Any, batch: np.ndarray) -> tuple[list[str], list[dict], jax.Array]:
        """``(stage names, per-stage values, (1, S) bool gates)`` for the whole image."""
        ...

    def chain(self, names: tuple[str, ...], *, clip: bool) -> Callable[..., jax.Array]:
        """``f(images, values, gates) -> images``: the stages ``names`` in order."""
        ...


class EagerRunner:
    """The ISP's own ``decisions`` and :func:`run_chain`, op by op (nothing compiled)."""

    def decide(self, isp: Any, batch: np.ndarray) -> tuple[list[str], list[dict], jax.Array]:
        decisions = isp.decisions(jnp.asarray(batch))
        names = list(decisions["stage_names"])
        values = [decisions["values"][name] for name in names]
        return names, values, jnp.asarray(decisions["active"], bool)

    def chain(self, names: tuple[str, ...], *, clip: bool) -> Callable[..., jax.Array]:
        return lambda images, values, gates: run_chain(
            images, names, values, gates=gates, clip=clip
        )


def _run_tiled(
    image: np.ndarray,
    names: Sequence[str],
    values: Sequence[dict],
    gates: jax.Array,
    tile: int,
    *,
    clip: bool,
    runner: ChainRunner,
) -> np.ndarray:
    """Local stages over ``(1, H, W, 3)`` tile by tile; each tile reads a halo wide enough."""
    halo = sum(_STAGE_RADIUS.get(name, 0) for name in names)
    _, height, width, _ = image.shape
    out = np.empty_like(image)
    run = runner.chain(tuple(names), clip=clip)
    for top in range(0, height, tile):
        for left in range(0, width, tile):
            # The halo is cut off at the image border, where the stages pad exactly as they do
            # for the whole image; inside, it holds the real neighbours.
            y0, x0 = max(top - halo, 0), max(left - halo, 0)
            y1, x1 = min(top + tile + halo, height), min(left + tile + halo, width)
            piece = jnp.asarray(image[:, y0:y1, x0:x1])
            x = run(piece, list(values), gates)
            h, w = min(tile, height - top), min(tile, width - left)
            out[:, top : top + h, left : left + w] = np.asarray(x)[
                :, top - y0 : top - y0 + h, left - x0 : left - x0 + w
            ]
    return out


def run_isp_tiled(
    isp: LearnedISP,
    image: np.ndarray,
    tile: int = DEFAULT_TILE,
    *,
    runner: ChainRunner | None = None,
) -> np.ndarray:
    """``isp(image[None])[0]``, computed in ``tile x tile`` pieces through the one stage chain.

    The ISP's decisions (per-stage values and gates; an adaptive ISP predicts them from the
    *whole* image, once - a tile's own thumbnail would give every tile a different ISP) are
    taken first; then the chain runs in segments: local stages tile by tile with a halo,
    whole-image stages (contrast) on the whole image. Only the last segment clips, as the
    untiled chain does.

    Args:
      isp: any ISP with the :class:`~diffisp.isp.chain.LearnedISP` interface.
      image: ``(H, W, 3)`` float32 in [0, 1].
      tile: side of the square tiles (>= 1); a halo of neighbours is added for spatial stages.
      runner: how the stages are evaluated (default: eagerly; ``diffisp apply`` passes a
        :class:`~diffisp.experiments.render_compiled.CompiledRunner`, which compiles each piece once
        per tile shape).

    Returns:
      ``(H, W, 3)`` float32 in [0, 1], equal to the untiled result up to float rounding.
    """
    if tile < 1:
        raise InputError(f"tile must be a positive number of pixels; got {tile}")
    runner = EagerRunner() if runner is None else runner
    batch = np.ascontiguousarray(image[None], dtype=np.float32)
    names, values, gates = runner.decide(isp, batch)
    # Segments of the chain: each whole-image stage alone, and the runs of local stages between.
    segments: list[tuple[bool, list[int]]] = []
    for s, name in enumerate(names):
        whole = name in _WHOLE_IMAGE_STAGES
        if whole or not segments or segments[-1][0]:
            segments.append((whole, [s]))
        else:
            segments[-1][1].append(s)
    for k, (whole, segment) in enumerate(segments):
        piece = (
            [names[s] for s in segment],
            [values[s] for s in segment],
            gates[:, segment],
        )
        last = k == len(segments) - 1
        if whole:
            run = runner.chain(tuple(piece[0]), clip=last)
            batch = np.asarray(run(jnp.asarray(batch), piece[1], piece[2]))
        else:
            batch = _run_tiled(batch, *piece, tile, clip=last, runner=runner)
    return batch[0]
