"""Checkpoints: round trips for every preset, atomic writes, and every error path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import invertible
from invertible import checkpoint as ckpt
from invertible.catalog import MODELS, ModelUnavailableError, build_model
from invertible.checkpoint import (
    CheckpointFormatError,
    CheckpointMismatchError,
    CheckpointNotFoundError,
    CheckpointVersionError,
    NonFiniteStateError,
    UnknownModelError,
)

VECTOR_MODELS = [name for name, spec in MODELS.items() if not spec.image]


def _flow(name: str = "realnvp", features: int = 4) -> invertible.Flow:
    return build_model(name, features, size="tiny", seed=0)


@pytest.mark.parametrize("name", VECTOR_MODELS)
def test_round_trip_identical_log_prob(tmp_path: Path, name: str) -> None:
    try:
        flow = _flow(name)
    except ModelUnavailableError:
        pytest.skip(f"{name} preset not installed")
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.01 * torch.randn_like(p))
    flow.eval()
    invertible.save(flow, tmp_path / "c", extra={"note": "hi"})
    again = invertible.load(tmp_path / "c")
    x = torch.randn(16, 4)
    assert type(again) is type(flow)
    assert torch.equal(flow.log_prob(x), again.log_prob(x))
    assert again.checkpoint_meta["extra"] == {"note": "hi"}
    files = sorted(p.name for p in (tmp_path / "c").iterdir())
    assert files == ["config.json", "model.safetensors"]  # no pickle anywhere


def test_round_trip_image_preset(tmp_path: Path) -> None:
    try:
        flow = build_model("realnvp-image", (1, 4, 4), size="tiny", seed=0)
    except (ModelUnavailableError, TypeError, ValueError) as e:
        pytest.skip(f"image preset unavailable: {e}")
    flow.eval()
    invertible.save(flow, tmp_path / "img")
    again = invertible.load(tmp_path / "img")
    x = torch.rand(3, 1, 4, 4) * 0.9 + 0.05
    assert torch.equal(flow.log_prob(x), again.log_prob(x))


def test_config_json_contents(tmp_path: Path) -> None:
    from types import SimpleNamespace

    import numpy as np

    data = SimpleNamespace(
        name="toy", features=4, info={"preprocessing": ["x"]}, mean=np.zeros(4), std=np.ones(4)
    )
    invertible.save(_flow(), tmp_path / "c", data=data)
    meta = json.loads((tmp_path / "c" / "config.json").read_text())
    assert meta["format"] == "invertible" and meta["format_version"] == ckpt.FORMAT_VERSION
    assert meta["model"] == "RealNVP" and meta["config"]["features"] == 4
    assert meta["torch"] == torch.__version__ and meta["invertible"] == invertible.__version__
    assert meta["data"]["name"] == "toy" and meta["data"]["std"] == [1.0] * 4


def test_failed_write_keeps_old_checkpoint(tmp_path: Path, monkeypatch) -> None:
    old = _flow()
    old.eval()
    invertible.save(old, tmp_path / "c")
    x = torch.randn(8, 4)
    expected = old.log_prob(x)

    new = _flow()
    with torch.no_grad():
        for p in new.parameters():
            p.add_(1.0)

    def boom(path, obj):  # the weights are written, then the config write fails
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(ckpt, "_write_json", boom)
    with pytest.raises(OSError, match="simulated"):
        invertible.save(new, tmp_path / "c")
    monkeypatch.undo()
    assert torch.equal(invertible.load(tmp_path / "c").log_prob(x), expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]  # no temp dirs left behind


def test_non_finite_state_refused(tmp_path: Path) -> None:
    flow = _flow()
    invertible.save(flow, tmp_path / "c")
    before = (tmp_path / "c" / "model.safetensors").read_bytes()
    with torch.no_grad():
        next(flow.parameters()).view(-1)[0] = float("nan")
    with pytest.raises(NonFiniteStateError, match="NaN or inf"):
        invertible.save(flow, tmp_path / "c")
    assert (tmp_path / "c" / "model.safetensors").read_bytes() == before
    with pytest.raises(NonFiniteStateError):
        invertible.save(flow, tmp_path / "never")
    assert not (tmp_path / "never").exists()


def _edit_config(path: Path, **changes) -> None:
    meta = json.loads((path / "config.json").read_text())
    for key, value in changes.items():
        if value is None:
            meta.pop(key)
        else:
            meta[key] = value
    (path / "config.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("preset", ["MAF", "IAF", "RealNVP", "GaussianAR"])
def test_version_1_checkpoint_keeps_its_data_unit_shift(preset: str, tmp_path: Path) -> None:
    """A format-1 checkpoint was trained with x = z·exp(α) + μ: it must load as that map,
    not as today's default (x = (z + b)·exp(α)), which would silently change its density."""
    torch.manual_seed(0)
    before_actnorm = {"actnorm": False} if preset in ("MAF", "RealNVP") else {}
    old = getattr(invertible, preset)(
        3, hidden_features=(8,), affine_shift="data", **before_actnorm
    )
    for p in old.parameters():  # away from the identity start, where both maps agree
        torch.nn.init.normal_(p, std=0.3)
    old.eval()
    invertible.save(old, tmp_path / "c")
    config = json.loads((tmp_path / "c" / "config.json").read_text())["config"]
    del config["affine_shift"]
    config.pop("actnorm", None)
    _edit_config(tmp_path / "c", format_version=1, config=config)
    x = torch.randn(5, 3)
    loaded = invertible.load(tmp_path / "c")
    assert loaded.config["affine_shift"] == "data"
    torch.testing.assert_close(loaded.log_prob(x), old.log_prob(x))
    latent = getattr(invertible, preset)(**{**config, **before_actnorm, "affine_shift": "latent"})
    latent.load_state_dict(old.state_dict())
    assert not torch.allclose(latent.eval().log_prob(x), old.log_prob(x))


@pytest.mark.parametrize("preset", ["MAF", "RealNVP"])
def test_version_2_checkpoint_loads_without_the_data_end_actnorm(
    preset: str, tmp_path: Path
) -> None:
    """Presets gained a data-end ActNorm (on by default) in format 3: an older checkpoint,
    whose config does not mention it, must rebuild the model it was saved from."""
    torch.manual_seed(0)
    old = getattr(invertible, preset)(3, hidden_features=(8,), actnorm=False).eval()
    invertible.save(old, tmp_path / "c")
    config = json.loads((tmp_path / "c" / "config.json").read_text())["config"]
    del config["actnorm"]
    _edit_config(tmp_path / "c", format_version=2, config=config)
    loaded = invertible.load(tmp_path / "c")
    assert loaded.config["actnorm"] is False
    x = torch.randn(5, 3)
    torch.testing.assert_close(loaded.log_prob(x), old.log_prob(x))
    assert getattr(invertible, preset)(**config).config["actnorm"] is True


def test_newer_format_version_refused(tmp_path: Path) -> None:
    invertible.save(_flow(), tmp_path / "c")
    _edit_config(tmp_path / "c", format_version=99)
    with pytest.raises(CheckpointVersionError, match="newer invertible; upgrade"):
        invertible.load(tmp_path / "c")


def test_missing_key_named(tmp_path: Path) -> None:
    invertible.save(_flow(), tmp_path / "c")
    _edit_config(tmp_path / "c", model=None)
    with pytest.raises(CheckpointFormatError, match=r"missing key.*model"):
        invertible.load(tmp_path / "c")


def test_unknown_model(tmp_path: Path) -> None:
    invertible.save(_flow(), tmp_path / "c")
    _edit_config(tmp_path / "c", model="NoSuchFlow")
    with pytest.raises(UnknownModelError, match="unknown model 'NoSuchFlow'"):
        invertible.load(tmp_path / "c")


def test_mismatched_tensor_named(tmp_path: Path) -> None:
    flow = _flow()
    invertible.save(flow, tmp_path / "c")
    config = dict(flow.config, hidden_features=[16, 8])
    _edit_config(tmp_path / "c", config=config)
    with pytest.raises(CheckpointMismatchError) as info:
        invertible.load(tmp_path / "c")
    message = str(info.value)
    assert "tensor '" in message and "shape [" in message and "expects [" in message
    assert "\n" not in message


def test_truncated_and_corrupt_weights(tmp_path: Path) -> None:
    invertible.save(_flow(), tmp_path / "c")
    weights = tmp_path / "c" / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointFormatError, match="corrupt or truncated"):
        invertible.load(tmp_path / "c")
    weights.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointFormatError, match="corrupt or truncated"):
        invertible.load(tmp_path / "c")


def test_corrupt_json_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointNotFoundError, match="not found"):
        invertible.load(tmp_path / "nothing")
    invertible.save(_flow(), tmp_path / "c")
    (tmp_path / "c" / "config.json").write_text('{"format": "invert')
    with pytest.raises(CheckpointFormatError, match="not valid JSON"):
        invertible.load(tmp_path / "c")
    (tmp_path / "c" / "config.json").unlink()
    with pytest.raises(CheckpointNotFoundError, match=r"config\.json"):
        invertible.load(tmp_path / "c")


def test_load_to_device_and_eval_mode(tmp_path: Path) -> None:
    flow = _flow("realnvp")
    flow.train()
    invertible.save(flow, tmp_path / "c")
    again = invertible.load(tmp_path / "c", map_location="cpu")
    assert not again.training


@pytest.mark.parametrize(
    "make",
    [
        lambda: invertible.MAF(3, num_layers=2, hidden_features=(8,)),
        lambda: invertible.RealNVP(3, num_layers=2, hidden_features=(8,)),
    ],
    ids=["MAF", "RealNVP"],
)
def test_round_trip_keeps_float64(tmp_path: Path, make) -> None:
    torch.manual_seed(0)
    flow = make().double().eval()
    invertible.save(flow, tmp_path / "c")
    assert json.loads((tmp_path / "c" / "config.json").read_text())["dtype"] == "float64"
    again = invertible.load(tmp_path / "c")
    assert all(p.dtype == torch.float64 for p in again.parameters())
    x = torch.randn(5, 3, dtype=torch.float64)
    assert torch.equal(flow.log_prob(x), again.log_prob(x))
