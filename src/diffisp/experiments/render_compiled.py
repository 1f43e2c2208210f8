"""The ISP of a ``diffisp apply`` batch compiled once per image size: :class:`Renderer` (RAW
front, chain, the cast to 8/16-bit samples) and :class:`CompiledRunner` (the tiled chain's
pieces), both counting their compilations in ``traces``.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from diffisp.errors import InputError


class CompiledRunner:
    """:class:`~diffisp.experiments.apply.ChainRunner` with each piece compiled once.

    ``jax.jit`` caches one compilation per input shape, so a tile shape (and with it an image
    size) is compiled once for the whole batch; ``traces`` counts the compilations by name.
    """

    def __init__(self, traces: collections.Counter) -> None:
        self.traces = traces
        self._decide: dict[int, Callable] = {}
        self._chains: dict[tuple, Callable] = {}

    def decide(self, isp: Any, batch: np.ndarray) -> tuple[list[str], list[dict], jax.Array]:
        names = list(isp.stage_names)
        key = id(isp)
        if key not in self._decide:
            graphdef, state = nnx.split(isp)

            def decide(state, images):
                self.traces["decisions"] += 1  # runs only while tracing
                decisions = nnx.merge(graphdef, state).decisions(images)
                values = [decisions["values"][name] for name in names]
                return values, decisions["active"].astype(bool)

            jitted = jax.jit(decide)
            self._decide[key] = lambda images: jitted(state, images)
        values, gates = self._decide[key](batch)
        return names, values, gates

    def chain(self, names: tuple[str, ...], *, clip: bool) -> Callable[..., jax.Array]:
        from diffisp.isp.chain import run_chain

        key = (names, clip)
        if key not in self._chains:

            def chain(images, values, gates):
                self.traces["chain"] += 1
                return run_chain(images, names, values, gates=gates, clip=clip)

            self._chains[key] = jax.jit(chain)
        return self._chains[key]


def _to_samples(x: jax.Array, bits: int) -> jax.Array:
    scaled = jnp.round(jnp.clip(x, 0, 1) * (2**bits - 1))
    return scaled.astype(jnp.uint8 if bits == 8 else jnp.uint16)


class Renderer:
    """Renders decoded inputs with one ISP, each piece compiled once per shape.

    Args:
      isp: an sRGB ISP, a :class:`~diffisp.isp.raw.RawISP` or ``None`` (the conventional RAW
        pipeline).
      raw: whether inputs are RAW captures (else ``(H, W, 3)`` sRGB images).
      tile: tile side for the chain ISP.
    """

    def __init__(self, isp: Any, *, raw: bool, tile: int) -> None:
        from diffisp.isp.raw import RawISP, conventional_linear, display_encode

        if isp is None and not raw:
            raise InputError("an sRGB batch needs an ISP (a checkpoint)")
        self.isp, self.raw, self.tile = isp, raw, tile
        self.traces: collections.Counter = collections.Counter()
        self._compiled: dict[tuple[str, int | None], Callable] = {}
        self.runner = CompiledRunner(self.traces)
        self.back = isp.back if isinstance(isp, RawISP) else isp
        if raw and isinstance(isp, RawISP):
            graphdef, self._state = nnx.split(isp.front)
            self._front_fn = lambda state, capture: nnx.merge(graphdef, state)(capture)
        else:
            self._state = None
            # No tone curve: real files are rendered as LibRaw renders them.
            self._front_fn = lambda state, capture: display_encode(
                conventional_linear(capture), tone=False
            )

    def _get(self, name: str, bits: int | None, fn: Callable) -> Callable:
        """``fn`` compiled, with the cast to ``bits``-bit samples fused in (None: float)."""
        key = (name, bits)
        if key not in self._compiled:

            def traced(*args):
                self.traces[name] += 1  # runs only while tracing
                out = fn(*args)
                return out if bits is None else _to_samples(out, bits)

            self._compiled[key] = jax.jit(traced)
        return self._compiled[key]

    def quantize(self, image: np.ndarray, bits: int) -> np.ndarray:
        """``image`` in [0, 1] as ``uint8``/``uint16`` samples (compiled: numpy's round and cast
        of a 12 MP image take as long as the whole conventional pipeline)."""
        return np.asarray(self._get("quantize", bits, lambda x: x)(image))

    def __call__(self, decoded: Any, bits: int | None = None) -> np.ndarray:
        """``(H, W, 3)`` float32 in [0, 1] for a capture (RAW) or an image (sRGB); with
        ``bits``, its ``uint8``/``uint16`` samples."""
        from diffisp.experiments.apply import run_isp_tiled

        if self.raw:
            fused = bits if self.back is None else None  # nothing follows: cast in the front
            rgb = np.asarray(self._get("front", fused, self._front_fn)(self._state, decoded))[0]
            if self.back is None:
                return rgb
        else:
            rgb = decoded
        out = run_isp_tiled(self.back, rgb, tile=self.tile, runner=self.runner)
        return out if bits is None else self.quantize(out, bits)
