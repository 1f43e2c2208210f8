"""The ISP parameter file (diffisp.isp.tuning_file): round trips and refusals."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from diffisp.capture.raw_capture import make_capture
from diffisp.errors import ConfigError, DataError
from diffisp.isp import tuning_file
from diffisp.isp.adaptive import AdaptiveISP
from diffisp.isp.chain import FULL_PRESET, ISP
from diffisp.isp.raw import build_raw_isp


def randomise(module: nnx.Module, seed: int = 0, scale: float = 0.5) -> None:
    """Move every parameter away from its initial value (saturating some bounded maps)."""
    state = nnx.state(module, nnx.Param)
    leaves, treedef = jax.tree.flatten(state)
    rng = np.random.default_rng(seed)  # numpy: no compilation per parameter shape
    moved = [jnp.asarray(x + scale * rng.standard_normal(x.shape), x.dtype) for x in leaves]
    nnx.update(module, jax.tree.unflatten(treedef, moved))


IMAGES = jnp.asarray(np.random.default_rng(0).uniform(size=(2, 16, 16, 3)).astype(np.float32))


# Two halves of the ten stages, so every stage's inversion is exercised by a fast test.
HALVES = (FULL_PRESET[:5], FULL_PRESET[5:])


def make(kind: str):
    if kind.startswith("global"):
        return ISP(HALVES[int(kind[-1])]), IMAGES
    if kind == "adaptive":
        return AdaptiveISP(("white_balance", "exposure", "tone_curve"), rngs=nnx.Rngs(0)), IMAGES
    back = ISP if kind == "raw" else (lambda s: AdaptiveISP(s, rngs=nnx.Rngs(1)))
    isp = build_raw_isp("raw_wb,demosaic,raw_ccm,gamma", back, residual=True)
    capture = make_capture(IMAGES[..., 1], wb_gains=[2.0, 1.0, 1.5], pattern="GRBG")
    return isp, capture


@pytest.mark.parametrize("kind", ["global0", "global1", "adaptive", "raw", "raw-adaptive"])
def test_round_trip_is_bit_identical(tmp_path, kind):
    isp, inputs = make(kind)
    randomise(isp)
    files = tuning_file.write(tmp_path / "isp.json", isp, config={"seed": 0})
    assert files[0].name == "isp.json"
    assert len(files) == (2 if "adaptive" in kind else 1)
    again = tuning_file.load(tmp_path / "isp.json")
    assert type(again) is type(isp)
    np.testing.assert_array_equal(np.asarray(again(inputs)), np.asarray(isp(inputs)))
    doc = json.loads((tmp_path / "isp.json").read_text())
    assert doc["schema"] == "diffisp.isp-tuning" and doc["version"] == 1
    assert len(doc["config_sha256"]) == 64


def test_values_are_physical_and_hand_edits_win(tmp_path):
    isp = ISP(("exposure", "gamma", "tone_curve"))
    isp.stage("exposure").ev_raw[...] = jnp.asarray(0.4)
    tuning_file.write(tmp_path / "isp.json", isp)
    doc = json.loads((tmp_path / "isp.json").read_text())
    exposure = doc["chain"]["stages"][0]
    assert exposure["name"] == "exposure" and exposure["order"] == 0
    assert exposure["values"]["ev"] == pytest.approx(8 * np.tanh(0.4 / 8), abs=1e-6)
    assert exposure["ranges"]["ev"] == [-8.0, 8.0]
    knots = doc["chain"]["stages"][2]["values"]["knots"]
    np.testing.assert_allclose(knots, np.linspace(0, 1, 16), atol=1e-6)
    exposure["values"]["ev"] = 1.5  # a camera engineer's edit; the stale raw is ignored
    (tmp_path / "isp.json").write_text(json.dumps(doc))
    edited = tuning_file.load(tmp_path / "isp.json")
    assert float(edited.stage("exposure").values()["ev"]) == pytest.approx(1.5, abs=1e-6)


@pytest.mark.parametrize(
    ("stage", "key", "value", "field"),
    [
        ("exposure", "ev", 9.0, "chain.stages[0].values.ev"),
        ("gamma", "gamma", 0.01, "chain.stages[1].values.gamma"),
        ("white_balance", "gains", [1.0, 5.0, 1.0], "chain.stages[2].values.gains[1]"),
    ],
)
def test_out_of_range_value_is_refused_by_name(tmp_path, stage, key, value, field):
    tuning_file.write(tmp_path / "isp.json", ISP(("exposure", "gamma", "white_balance")))
    doc = json.loads((tmp_path / "isp.json").read_text())
    entry = next(e for e in doc["chain"]["stages"] if e["name"] == stage)
    entry["values"][key] = value
    (tmp_path / "isp.json").write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match=rf"{field.replace('[', '.').replace(']', '.')}"):
        tuning_file.load(tmp_path / "isp.json")


def test_decreasing_tone_curve_is_refused(tmp_path):
    tuning_file.write(tmp_path / "isp.json", ISP(("tone_curve",)))
    doc = json.loads((tmp_path / "isp.json").read_text())
    doc["chain"]["stages"][0]["values"]["knots"][5] = 0.9
    (tmp_path / "isp.json").write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match=r"chain\.stages\[0\]\.values\.knots rises"):
        tuning_file.load(tmp_path / "isp.json")


def test_truncated_garbled_foreign_and_future_files_are_refused(tmp_path):
    path = tmp_path / "isp.json"
    tuning_file.write(path, ISP(("gamma",)))
    text = path.read_text()
    path.write_text(text[: len(text) // 2])
    with pytest.raises(DataError, match="truncated or garbled"):
        tuning_file.load(path)
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(DataError, match="truncated or garbled"):
        tuning_file.load(path)
    doc = json.loads(text)
    path.write_text(json.dumps({**doc, "schema": "fast-openisp"}))
    with pytest.raises(DataError, match="not a diffisp ISP parameter file"):
        tuning_file.load(path)
    path.write_text(json.dumps({**doc, "version": 2}))
    with pytest.raises(ConfigError, match="version 2; this diffisp"):
        tuning_file.load(path)


def test_adaptive_predictor_file_is_checked(tmp_path):
    isp = AdaptiveISP(("exposure", "gamma"), rngs=nnx.Rngs(0))
    json_file, npz_file = tuning_file.write(tmp_path / "isp.json", isp)
    assert npz_file.name == "isp.predictor.npz"
    data = bytearray(npz_file.read_bytes())
    data[-10] ^= 0xFF
    npz_file.write_bytes(bytes(data))
    with pytest.raises(DataError, match="SHA-256 differs"):
        tuning_file.load(json_file)
    npz_file.unlink()
    with pytest.raises(DataError, match=r"predictor weights .* are missing"):
        tuning_file.load(json_file)
