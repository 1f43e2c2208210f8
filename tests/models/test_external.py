"""External (PyTorch / ONNX) models as frozen JAX functions: spec, gradients, errors."""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from diffisp.errors import ConfigError
from diffisp.models.external import (
    ExternalModel,
    FrozenWeights,
    InputSpec,
    ModelTraceError,
    from_torch,
    load_model,
    require,
)
from diffisp.models.external_tasks import LabelCrossEntropy, OutputConsistency

torch = pytest.importorskip("torch")
pytest.importorskip("torchax")


class Tiny(torch.nn.Module):
    """Conv, batch norm (eval mode: running statistics), ReLU, pooling, linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.norm = torch.nn.BatchNorm2d(8)
        self.head = torch.nn.Linear(8, 5)

    def forward(self, x):
        return self.head(torch.relu(self.norm(self.conv(x))).mean((2, 3)))


def tiny() -> Tiny:
    torch.manual_seed(0)
    module = Tiny()
    with torch.no_grad():  # non-trivial running statistics
        module.norm.running_mean.uniform_(-0.2, 0.2)
        module.norm.running_var.uniform_(0.5, 2.0)
    return module


MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _images(n=4, size=16, seed=0):
    return np.random.default_rng(seed).random((n, size, size, 3), dtype=np.float32)


def test_forward_and_input_gradient_match_pytorch_autograd():
    module = tiny()
    model = from_torch(module, InputSpec(mean=MEAN, std=STD))
    x = _images()
    w = np.random.default_rng(1).standard_normal((4, 5)).astype(np.float32)
    out, grad = jax.jit(jax.value_and_grad(lambda a: jnp.sum(model(a) * w)))(x)

    xt = torch.tensor(x).permute(0, 3, 1, 2).requires_grad_(True)
    mean, std = torch.tensor(MEAN)[:, None, None], torch.tensor(STD)[:, None, None]
    yt = module((xt - mean) / std)
    (yt * torch.tensor(w)).sum().backward()
    expected = xt.grad.permute(0, 2, 3, 1).numpy()
    assert abs(float(out) - float((yt * torch.tensor(w)).sum().detach())) < 1e-4
    err = np.abs(np.asarray(grad) - expected).max() / np.abs(expected).max()
    assert err < 1e-5, err  # measured ~3e-7 (float32 rounding)


def test_weights_are_frozen_state_not_params():
    model = from_torch(tiny())
    assert not jax.tree.leaves(nnx.state(model, nnx.Param))
    frozen = jax.tree.leaves(nnx.state(model, FrozenWeights))
    assert sum(a.size for a in frozen) == sum(p.numel() for p in tiny().state_dict().values())


def test_spec_layout_resize_range_and_output_selection():
    class TwoOutputs(torch.nn.Module):
        def forward(self, x):
            return {"shape": x[:, :, 0, 0] * 0 + x.shape[2], "mean": x.mean()}

    spec = InputSpec(layout="NHWC", size=(8, 8), value_range=(0, 255), output="shape")
    model = from_torch(TwoOutputs(), spec)
    out = model(jnp.asarray(_images(2, 16)))
    assert out.shape == (2, 8) and float(out[0, 0]) == 8  # NHWC: axis 1 is H after resizing
    mean = from_torch(TwoOutputs(), InputSpec(value_range=(0, 255), output="mean"))
    assert float(mean(jnp.full((1, 4, 4, 3), 0.5))) == pytest.approx(127.5)
    with pytest.raises(ConfigError, match="no output 'logits'"):
        from_torch(TwoOutputs(), InputSpec(output="logits"))
    with pytest.raises(ConfigError, match="returns 2 outputs"):
        from_torch(TwoOutputs(), InputSpec())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"layout": "CHW"}, "layout"),
        ({"std": (1, 0, 1)}, "std must be positive"),
        ({"mean": (0, 0)}, "mean must be 3"),
        ({"value_range": (1, 0)}, "hi > lo"),
        ({"size": (0, 3)}, "size"),
        ({"dtype": "int8"}, "dtype"),
    ],
)
def test_bad_input_spec(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        InputSpec(**kwargs)


def test_wrong_input_channels_is_a_one_line_trace_error():
    class Gray(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 2, 3)

        def forward(self, x):
            return self.conv(x).mean((2, 3))

    with pytest.raises(ModelTraceError, match="does not trace") as err:
        from_torch(Gray())
    assert "\n" not in str(err.value)


def test_an_op_with_no_lowering_is_named():
    class Airy(torch.nn.Module):  # torchax 0.0.13 has no lowering for aten::special_airy_ai
        def forward(self, x):
            return torch.special.airy_ai(x).mean((2, 3))

    with pytest.raises(ModelTraceError, match="aten::special_airy_ai") as err:
        from_torch(Airy())
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("torch:..x:f", "absolute"),  # were TypeError tracebacks (a relative import)
        ("torch:.x:f", "absolute"),
        ("torch:os:sep", r"os\.sep is a str, not a factory"),  # a TypeError: not callable
        ("torch:os:path", r"os\.path is a module, not a factory"),
        ("torch:os:getenv", r"cannot call os\.getenv\(\): .*missing"),  # needs arguments
    ],
)
def test_load_torch_factory_refuses_what_is_no_factory(spec, message):
    with pytest.raises(ConfigError, match=message):
        load_model(spec)


def test_weights_torch_load_cannot_read_are_our_error(tmp_path):
    """Were an UnpicklingError, an EOFError or an IndexError from torch.load."""
    spec = "torch:diffisp.models.torch_reference:resnet10"
    for name, data in [("text.pt", b"not a state dict\n"), ("empty.pt", b"")]:
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ConfigError, match=f"{name}' is not a PyTorch state dict"):
            load_model(spec, weights=tmp_path / name)
    with pytest.raises(ConfigError, match="is not a regular file"):
        load_model(spec, weights=tmp_path)


def test_load_torch_factory_errors(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "usermodels.py").write_text(
        "import torch\n"
        "def tiny():\n"
        "    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(2))\n"
    )
    with pytest.raises(ConfigError, match="does not exist"):
        load_model("torch:usermodels:tiny", weights=tmp_path / "missing.pt")
    with pytest.raises(ConfigError, match="has no 'nope'"):
        load_model("torch:usermodels:nope")
    with pytest.raises(ConfigError, match="cannot import"):
        load_model("torch:not_a_module_xyz:f")
    with pytest.raises(ConfigError, match=r"torch:PKG\.MODULE:FACTORY"):
        load_model("model.pt")
    wrong = tmp_path / "wrong.pt"
    torch.save({"0.weight": torch.zeros(4, 3, 5, 5), "0.bias": torch.zeros(4)}, wrong)
    with pytest.raises(ConfigError, match="does not fit"):
        load_model("torch:usermodels:tiny", weights=wrong)
    good = tmp_path / "good.pt"
    sys.modules.pop("usermodels", None)
    import usermodels

    torch.save(usermodels.tiny().state_dict(), good)
    model = load_model("torch:usermodels:tiny", weights=good, input_spec=InputSpec(output=None))
    assert isinstance(model, ExternalModel)


def test_missing_extra_names_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx2torch", None)  # import fails as if not installed
    with pytest.raises(ConfigError, match=r"diffisp\[torch\]"):
        require("onnx2torch")


def test_losses_and_their_gradients_reach_the_input():
    model = from_torch(tiny())
    x = jnp.asarray(_images())
    labels = jnp.array([0, 1, 2, 3])
    clean = model(x)
    loss, sums = LabelCrossEntropy().loss(model, x, labels)
    assert np.isfinite(float(loss)) and 0 <= int(sums["correct"]) <= 4
    same, agree = OutputConsistency().loss(model, x, clean)
    assert float(same) == pytest.approx(0.0, abs=1e-6) and int(agree["agree"]) == 4
    grad = jax.grad(lambda a: OutputConsistency().loss(model, a, clean)[0])(x * 0.3)
    assert float(jnp.abs(grad).max()) > 0
    mse, _ = OutputConsistency(kind="mse").loss(model, x, clean + 1.0)
    assert float(mse) == pytest.approx(1.0, rel=1e-5)
    with pytest.raises(ConfigError, match="kind"):
        OutputConsistency(kind="l1")


def _export(module, path, opset):
    torch.onnx.export(
        module.eval(),
        (torch.zeros(1, 3, 16, 16),),
        str(path),
        dynamo=False,
        opset_version=opset,
        input_names=["x"],
        output_names=["y"],
        dynamic_axes={"x": {0: "n"}},
    )


def test_onnx_model_matches_onnxruntime_and_autograd(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx2torch")
    module = tiny()
    path = tmp_path / "tiny.onnx"
    _export(module, path, opset=17)
    model = load_model(str(path))
    x = _images()
    expected = ort.InferenceSession(str(path)).run(None, {"x": x.transpose(0, 3, 1, 2)})[0]
    assert np.abs(np.asarray(model(jnp.asarray(x))) - expected).max() < 1e-5
    grad = jax.grad(lambda a: jnp.sum(model(a) ** 2))(x)
    xt = torch.tensor(x).permute(0, 3, 1, 2).requires_grad_(True)
    (module(xt) ** 2).sum().backward()
    want = xt.grad.permute(0, 2, 3, 1).numpy()
    assert np.abs(np.asarray(grad) - want).max() / np.abs(want).max() < 1e-5


def test_onnx_errors(tmp_path):
    pytest.importorskip("onnx2torch")
    with pytest.raises(ConfigError, match="does not exist"):
        load_model(str(tmp_path / "missing.onnx"))
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ConfigError, match="not a valid ONNX model"):
        load_model(str(bad))
    with pytest.raises(ConfigError, match="drop --weights"):
        load_model(str(bad), weights=tmp_path / "w.pt")
    new = tmp_path / "opset19.onnx"
    _export(tiny(), new, opset=19)
    with pytest.raises(ModelTraceError, match="opset 19"):
        load_model(str(new))
