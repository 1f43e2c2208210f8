"""datarax views of ISP stages: each stage as a ``ModalityOperator``.

The maths lives once, in :mod:`diffisp.ops`; an operator only moves the image field in and out of
a datarax record and calls the stage, which it shares (same ``nnx.Param`` objects) with the
:class:`~diffisp.isp.chain.ISP` it came from. So a datarax ``Pipeline`` or a
``CompositeOperatorModule`` built from an ISP trains and evaluates that very ISP.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from datarax import Pipeline
from datarax.core.modality import ModalityOperator, ModalityOperatorConfig
from datarax.operators.composite_operator import (
    CompositeOperatorConfig,
    CompositeOperatorModule,
    CompositionStrategy,
)
from datarax.sources.memory_source import MemorySource, MemorySourceConfig
from datarax.typing import Batch
from flax import nnx

from diffisp.errors import DataError
from diffisp.isp.chain import ISP
from diffisp.isp.stages import Stage, clip_output


class _ImageOperator(ModalityOperator):
    """A deterministic datarax ``ModalityOperator`` that maps one record's image field.

    ``apply`` handles one record (``(H, W, 3)``); datarax batches it with ``vmap`` (composites,
    ``apply_batch``, the pipeline's fused path), which gives the batched op's values and, measured,
    its speed, so no private datarax method is overridden.
    """

    def __init__(self, name: str, *, field_key: str = "image", target_key: str | None = None):
        config = ModalityOperatorConfig(field_key=field_key, target_key=target_key)
        super().__init__(config, rngs=None, name=name)

    def process(self, image: jax.Array) -> jax.Array:
        """``(H, W, 3)`` -> ``(H, W, 3)``."""
        raise NotImplementedError

    def apply(
        self,
        data: Any,
        state: Any,
        metadata: dict[str, Any] | None,
        key: jax.Array | None = None,
        stats: dict[str, Any] | None = None,
    ) -> tuple[Any, Any, dict[str, Any] | None]:
        image = self._extract_field(data, self.config.field_key)
        return self._remap_field(data, self.process(image)), state, metadata


class StageOperator(_ImageOperator):
    """A learnable ISP stage as a datarax operator (the same stage module, same parameters)."""

    def __init__(self, stage: Stage, *, field_key: str = "image", target_key: str | None = None):
        super().__init__(stage.name, field_key=field_key, target_key=target_key)
        self.stage = stage

    def process(self, image: jax.Array) -> jax.Array:
        return self.stage(image[None])[0]


class OutputClipOperator(_ImageOperator):
    """The chain's one clip (:func:`~diffisp.isp.stages.clip_output`) as the last operator.

    Stages do not clip; an ISP clips its output once. Its operator view ends the same way, so a
    datarax composite or pipeline gives exactly the ISP's output.
    """

    def __init__(self, *, field_key: str = "image", target_key: str | None = None):
        super().__init__("clip_output", field_key=field_key, target_key=target_key)

    def process(self, image: jax.Array) -> jax.Array:
        return clip_output(image)


def isp_operators(isp: ISP, *, field_key: str = "image") -> list[ModalityOperator]:
    """One datarax operator per stage of ``isp`` (sharing its parameters), then the output clip."""
    stages = [StageOperator(stage, field_key=field_key) for stage in isp.stages]
    return [*stages, OutputClipOperator(field_key=field_key)]


def isp_composite(isp: ISP, *, field_key: str = "image") -> CompositeOperatorModule:
    """``isp`` as a ``CompositeOperatorModule(SEQUENTIAL)``, for ``nnx.value_and_grad``."""
    config = CompositeOperatorConfig(
        strategy=CompositionStrategy.SEQUENTIAL,
        operators=isp_operators(isp, field_key=field_key),
    )
    return CompositeOperatorModule(config)


def apply_composite(
    composite: CompositeOperatorModule, images: jax.Array, field_key: str = "image"
) -> jax.Array:
    """Run a composite on a batch of images: ``(N, H, W, 3)`` -> ``(N, H, W, 3)``.

    Through datarax's public entry point (a ``Batch`` in, a ``Batch`` out); differentiable, so
    ``nnx.grad`` of a loss on its output reaches the stages' parameters.
    """
    return composite(Batch.from_parts({field_key: images}, {})).data[field_key]


def isp_pipeline(
    isp: ISP,
    data: dict[str, Any],
    *,
    batch_size: int = 32,
    shuffle: bool = False,
    seed: int = 0,
    field_key: str = "image",
) -> Pipeline:
    """A datarax ``Pipeline`` serving ``data`` (arrays of one common length) through ``isp``.

    Raises:
      DataError: ``data`` is empty or its arrays disagree in length.
    """
    lengths = {k: len(v) for k, v in data.items()}
    if not lengths or 0 in lengths.values():
        raise DataError(f"cannot build a pipeline over an empty data set: {lengths}")
    if len(set(lengths.values())) != 1:
        raise DataError(f"arrays in data must have the same length; got {lengths}")
    if field_key not in data:
        raise DataError(f"data has no {field_key!r} field; it has {sorted(data)}")
    source = MemorySource(
        MemorySourceConfig(shuffle=shuffle),
        {k: np.asarray(v) for k, v in data.items()},
        rngs=nnx.Rngs(seed),
    )
    return Pipeline(
        source=source,
        stages=isp_operators(isp, field_key=field_key),
        batch_size=batch_size,
        rngs=nnx.Rngs(seed),
    )
