"""A user's own PyTorch or ONNX model, frozen, as a JAX function an ISP can be trained for.

diffisp's ISPs output ``(N, H, W, 3)`` float32 images in [0, 1]. A deployed model wants its own
input: channels first or last, a fixed size, a value range (0-1 or 0-255), a mean/std
normalisation, a dtype. :class:`InputSpec` says which; :class:`ExternalModel` applies it, runs
the model's traced JAX function and picks the outputs to use (:attr:`InputSpec.output`).

The PyTorch model is traced once by torchax (``torchax.extract_jax``): every aten op becomes
JAX, so gradients reach the ISP through the model. Its weights (parameters and buffers, e.g.
batch norm's running statistics) are held as :class:`FrozenWeights`, an ``nnx.Variable`` that
is not an ``nnx.Param``: the training core trains ``nnx.Param`` only, so they never change, and
as state (not constants closed over) they are arguments of the compiled step instead of being
baked into its graph. ONNX files go through onnx2torch first, then the same path.

torch, torchax, onnx and onnx2torch are the optional extra ``diffisp[torch]``; this module
imports them only when a model is loaded, so diffisp works without them.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from diffisp.errors import ConfigError, DiffispError, InputError

EXTRA = "torch"
LAYOUTS = ("NCHW", "NHWC")
DTYPES = ("float32", "bfloat16", "float16")


class ModelTraceError(DiffispError, RuntimeError):
    """A user's model could not be turned into a JAX function (an op with no JAX lowering)."""


def require(package: str) -> Any:
    """Import ``package`` from the optional extra, or say how to install it."""
    try:
        return importlib.import_module(package)
    except ImportError as err:
        raise ConfigError(
            f"{package} is needed for external models; install diffisp's optional extra: "
            f"pip install 'diffisp[{EXTRA}]' ({err})"
        ) from None


@dataclass(frozen=True)
class InputSpec:
    """What a user's model expects, and which of its outputs to use.

    The ISP's ``(N, H, W, 3)`` images ``x`` in [0, 1] become
    ``(lo + (hi - lo) * resize(x, size) - mean) / std`` (per channel), laid out as ``layout``
    and cast to ``dtype``; torchvision's ImageNet models, for instance, want
    ``value_range=(0, 1), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)``.

    Attributes:
      layout: ``"NCHW"`` (PyTorch's) or ``"NHWC"``.
      size: ``(H, W)`` to resize to (bilinear, differentiable), or ``None`` to pass the ISP's
        size through.
      value_range: ``(lo, hi)`` that [0, 1] maps to before normalisation.
      mean, std: per-channel normalisation in that range (3 values each, std > 0).
      dtype: the model's compute dtype (``float32``, ``bfloat16``, ``float16``); outputs are
        returned as float32.
      output: which output to use when the model returns several: an index into a tuple/list or
        a key of a dict; ``None`` for a model with one output.
    """

    layout: str = "NCHW"
    size: tuple[int, int] | None = None
    value_range: tuple[float, float] = (0.0, 1.0)
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    dtype: str = "float32"
    output: int | str | None = None

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ConfigError(f"layout must be one of {', '.join(LAYOUTS)}; got {self.layout!r}")
        if self.size is not None:
            size = tuple(self.size)
            if len(size) != 2 or not all(isinstance(s, int) and s >= 1 for s in size):
                raise ConfigError(f"size must be two positive ints (H, W); got {self.size!r}")
            object.__setattr__(self, "size", size)
        for name in ("value_range", "mean", "std"):
            values = tuple(float(v) for v in getattr(self, name))
            expected = 2 if name == "value_range" else 3
            if len(values) != expected or not all(np.isfinite(values)):
                raise ConfigError(f"{name} must be {expected} finite numbers; got {values!r}")
            object.__setattr__(self, name, values)
        if self.value_range[1] <= self.value_range[0]:
            raise ConfigError(f"value_range must be (lo, hi) with hi > lo; got {self.value_range}")
        if min(self.std) <= 0:
            raise ConfigError(f"std must be positive; got {self.std}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}; got {self.dtype!r}")

    def prepare(self, images: jax.Array) -> jax.Array:
        """ISP output ``(N, H, W, 3)`` in [0, 1] -> the model's input."""
        if images.ndim != 4 or images.shape[-1] != 3:
            raise InputError(f"expected (N, H, W, 3) images; got shape {images.shape}")
        x = images.astype(jnp.float32)
        if self.size is not None and tuple(x.shape[1:3]) != self.size:
            x = jax.image.resize(x, (x.shape[0], *self.size, 3), method="bilinear")
        lo, hi = self.value_range
        x = lo + (hi - lo) * x
        x = (x - jnp.asarray(self.mean)) / jnp.asarray(self.std)
        if self.layout == "NCHW":
            x = jnp.transpose(x, (0, 3, 1, 2))
        return x.astype(self.dtype)

    def select(self, outputs: Any) -> jax.Array:
        """The output to use, as float32."""
        if self.output is not None:
            try:
                outputs = outputs[self.output]
            except (KeyError, IndexError, TypeError):
                keys = list(outputs) if isinstance(outputs, dict) else f"{len(outputs)} outputs"
                raise ConfigError(
                    f"the model has no output {self.output!r} (it returns {keys})"
                ) from None
        elif isinstance(outputs, (tuple, list, dict)):
            raise ConfigError(
                f"the model returns {len(outputs)} outputs; choose one with output=INDEX or KEY"
            )
        return jnp.asarray(outputs).astype(jnp.float32)


class FrozenWeights(nnx.Variable):
    """A user model's weight: state of the model, never trained (not an ``nnx.Param``)."""


class ExternalModel(nnx.Module):
    """A frozen external model: ``model(images)`` for ``(N, H, W, 3)`` images in [0, 1].

    ``fn(weights, x)`` is the model's JAX function (``weights`` a dict of arrays by name, ``x``
    the prepared input); ``weights`` are held as :class:`FrozenWeights`.
    ``eval()``/``train()`` change nothing: the model was put in eval mode before tracing.
    """

    def __init__(
        self,
        fn: Callable[[dict[str, jax.Array], jax.Array], Any],
        weights: dict[str, Any],
        spec: InputSpec,
        *,
        source: str = "",
    ) -> None:
        self.fn = fn
        self.spec = spec
        self.source = source
        self.names = tuple(weights)
        self.weights = nnx.List(
            [
                FrozenWeights(jnp.asarray(weights[n]).astype(_weight_dtype(weights[n], spec)))
                for n in self.names
            ]
        )

    def __call__(self, images: jax.Array) -> jax.Array:
        weights = {n: w[...] for n, w in zip(self.names, self.weights, strict=True)}
        return self.spec.select(self.fn(weights, self.spec.prepare(images)))

    @property
    def num_weights(self) -> int:
        return sum(int(w[...].size) for w in self.weights)


def _weight_dtype(weight: Any, spec: InputSpec) -> Any:
    """Floating weights take the spec's dtype; integer buffers (batch norm's counter) stay."""
    return spec.dtype if jnp.issubdtype(jnp.asarray(weight).dtype, jnp.floating) else None


def from_torch(
    module: Any, spec: InputSpec | None = None, *, sample_size: tuple[int, int] = (32, 32)
) -> ExternalModel:
    """A PyTorch ``nn.Module`` as a frozen :class:`ExternalModel` (traced by torchax).

    The module is put in eval mode (batch norm's running statistics, no dropout) and traced on
    a zero batch of ``spec.size`` (or ``sample_size``), so an op torchax cannot lower fails here
    with a one-line :class:`ModelTraceError` naming it, not inside training.
    """
    torch = require("torch")
    torchax = require("torchax")
    spec = InputSpec() if spec is None else spec
    if not isinstance(module, torch.nn.Module):
        raise ConfigError(f"expected a torch.nn.Module; got {type(module).__name__}")
    module.eval()
    try:
        weights, jax_fn = torchax.extract_jax(module)
    except Exception as err:  # torchax raises many kinds; all mean "could not convert"
        raise ModelTraceError(f"torchax could not convert the model: {_op_message(err)}") from None

    def fn(weights: dict[str, jax.Array], x: jax.Array) -> Any:
        return jax_fn(weights, (x,))

    model = ExternalModel(fn, dict(weights), spec, source=type(module).__name__)
    check_traces(model, sample_size if spec.size is None else spec.size)
    return model


def check_traces(model: ExternalModel, size: tuple[int, int]) -> None:
    """Trace ``model`` abstractly (no compute) on a ``(1, *size, 3)`` batch and its gradient.

    Raises:
      ModelTraceError: an op has no JAX lowering (named), or the model fails on the input spec.
    """
    x = jax.ShapeDtypeStruct((1, *size, 3), jnp.float32)

    def total(images):
        return jnp.sum(model(images))

    try:
        jax.eval_shape(jax.grad(total), x)
    except ConfigError:
        raise
    except Exception as err:
        raise ModelTraceError(
            f"{model.source or 'the model'} does not trace to JAX on a {size[0]}x{size[1]} "
            f"{model.spec.layout} input: {_op_message(err)}"
        ) from None


_OP = re.compile(r"(aten::?[\w.]+|aten\.[\w.]+|torch\.ops\.[\w.]+|prims\.[\w.]+)")


def _op_message(err: BaseException) -> str:
    """One line about ``err``, naming the op when its message has one."""
    text = f"{type(err).__name__}: {err}"
    found = _OP.search(text)
    first = text.strip().splitlines()[0] if text.strip() else type(err).__name__
    first = first if len(first) <= 200 else first[:197] + "..."
    return f"no JAX lowering for {found.group(1)} ({first})" if found else first


def load_torch_factory(target: str, weights: str | Path | None = None, **kwargs: Any) -> Any:
    """``PKG.MODULE:FACTORY`` called with ``kwargs``, with the state dict of ``weights`` loaded.

    Raises:
      ConfigError: the module or factory does not exist (or is no callable of no arguments),
        the weights file is missing or not a state dict ``torch.load`` reads, or its keys or
        shapes do not fit the model (the first mismatches are named).
    """
    torch = require("torch")
    module_name, _, factory_name = target.partition(":")
    if not module_name or not factory_name:
        raise ConfigError(f"a torch model is PKG.MODULE:FACTORY; got {target!r}")
    if module_name.startswith("."):
        raise ConfigError(f"a torch model's module is absolute (no leading '.'); got {target!r}")
    try:
        factory = getattr(importlib.import_module(module_name), factory_name)
    except (ImportError, ValueError) as err:  # ValueError: an empty part, e.g. 'a..b'
        raise ConfigError(f"cannot import {module_name!r} for {target!r}: {err}") from None
    except AttributeError:
        raise ConfigError(f"{module_name} has no {factory_name!r} ({target!r})") from None
    if not callable(factory):
        raise ConfigError(
            f"{module_name}.{factory_name} is a {type(factory).__name__}, not a factory "
            f"(a function or class returning the model) ({target!r})"
        )
    try:
        module = factory(**kwargs)
    except TypeError as err:  # it needs arguments: not a factory of no arguments
        raise ConfigError(f"cannot call {module_name}.{factory_name}(): {err}") from err
    if weights is None:
        return module
    path = Path(weights)
    if not path.is_file():
        problem = "is not a regular file" if path.exists() else "does not exist"
        raise ConfigError(f"weights file {str(path)!r} {problem}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except OSError:
        raise
    except Exception as err:  # a file torch.load cannot read (not a state dict, truncated)
        first = (str(err).strip().splitlines() or [""])[0][:120]
        raise ConfigError(
            f"weights file {str(path)!r} is not a PyTorch state dict "
            f"(torch.load(weights_only=True): {type(err).__name__}: {first})"
        ) from err
    if isinstance(state, dict) and "state_dict" in state and len(state) <= 4:
        state = state["state_dict"]  # a training checkpoint's usual layout
    try:
        result = module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        raise ConfigError(
            f"{path.name} does not fit {target}: {' '.join(lines[1:4])[:400]}"
        ) from None
    del result
    return module


def load_onnx(path: str | Path) -> Any:
    """An ONNX file as a PyTorch module (onnx2torch), for :func:`from_torch`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"ONNX file {str(path)!r} does not exist")
    onnx = require("onnx")
    onnx2torch = require("onnx2torch")
    try:
        graph = onnx.load(str(path))
        onnx.checker.check_model(graph)
    except Exception as err:
        raise ConfigError(f"{path.name} is not a valid ONNX model: {err}") from None
    try:
        return onnx2torch.convert(graph)
    except NotImplementedError as err:
        raise ModelTraceError(
            f"onnx2torch cannot convert {path.name}: {err} (opset {_opset(graph)}; opset 17 "
            "exports convert with onnx2torch 1.5.15, 19's Constant does not)"
        ) from None


def _opset(graph: Any) -> int | str:
    versions = [o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")]
    return versions[0] if versions else "?"


def load_model(
    spec_string: str, *, weights: str | Path | None = None, input_spec: InputSpec | None = None
) -> ExternalModel:
    """``torch:PKG.MODULE:FACTORY`` (with ``weights``, a state-dict file) or ``PATH.onnx``."""
    if spec_string.startswith("torch:"):
        module = load_torch_factory(spec_string.removeprefix("torch:"), weights)
    elif spec_string.endswith(".onnx"):
        if weights is not None:
            raise ConfigError("an ONNX file holds its weights; drop --weights")
        module = load_onnx(spec_string)
    else:
        raise ConfigError(
            f"--model must be torch:PKG.MODULE:FACTORY or a .onnx file; got {spec_string!r}"
        )
    return from_torch(module, input_spec)
