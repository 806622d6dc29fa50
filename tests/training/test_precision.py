"""``train.device`` and ``train.precision``: fp64 and bf16 runs on the CPU, and the errors of devices and
formats this machine cannot give."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from omnibind.cli.main import app
from omnibind.config import config_from_dict
from omnibind.errors import ConfigError
from omnibind.model import OmniModel
from omnibind.training.precision import Precision, resolve_device
from omnibind.training.trainer import train
from tests.helpers import tiny_shapes_config


def _cfg(**train_opts: object):  # noqa: ANN202
    raw = tiny_shapes_config("infonce", n=96, epochs=1, threads=1, **train_opts)
    raw["train"]["max_steps"] = 3
    raw.pop("eval")
    return config_from_dict(raw)


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().double() for k, v in model.state_dict().items()}


def test_fp64_trains_in_float64_and_matches_fp32_closely(tmp_path: Path) -> None:
    fp32 = train(_cfg(device="cpu"), tmp_path / "fp32").model
    fp64 = train(_cfg(device="cpu", precision="fp64"), tmp_path / "fp64").model
    assert all(p.dtype == torch.float64 for p in fp64.parameters())
    a, b = _weights(fp32), _weights(fp64)
    worst = max(float((a[k] - b[k]).abs().max() / (b[k].abs().max() + 1e-12)) for k in a)
    # rounding differs, the arithmetic is the same (Adam's first steps amplify rounding in tiny gradients)
    assert 0 < worst < 0.05, worst
    saved = OmniModel.load(tmp_path / "fp64" / "model", device="cpu")
    assert all(p.dtype == torch.float32 for p in saved.parameters())
    # the saved file keeps the float64 weights (exactness checks read them back)
    from safetensors.torch import load_file

    raw = load_file(str(tmp_path / "fp64" / "model" / "model.safetensors"))
    assert any(v.dtype == torch.float64 for v in raw.values())


def test_bf16_autocast_on_the_cpu_trains_with_fp32_losses(tmp_path: Path, monkeypatch) -> None:
    from omnibind.objectives.infonce import InfoNCE

    seen: list[torch.dtype] = []
    original = InfoNCE.forward

    def spy(self, embeddings, *args, **kwargs):  # noqa: ANN001, ANN202
        seen.extend(v.dtype for v in embeddings.values())
        return original(self, embeddings, *args, **kwargs)

    monkeypatch.setattr(InfoNCE, "forward", spy)
    result = train(_cfg(device="cpu", precision="bf16"), tmp_path / "bf16")
    assert seen and set(seen) == {torch.float32}, set(seen)
    losses = [row["train/loss"] for row in result.history if "train/loss" in row]
    assert result.steps == 2 and losses and all(torch.isfinite(torch.tensor(losses)))
    assert all(p.dtype == torch.float32 for p in result.model.parameters())


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_where_there_is_none_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="sees no CUDA device"):
        resolve_device("cuda:0")
    assert resolve_device("auto") == torch.device("cpu")
    args = ["train", "examples/xor-symile.yaml", "--out", str(tmp_path / "r"), "--set", "train.device=cuda"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "sees no CUDA device" in result.output
    assert not (tmp_path / "r").exists(), "nothing is written before the device is checked"


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("device", "gpu", "train.device must be one of"),
        ("device", "cuda:x", "train.device must be one of"),
        ("precision", "fp8", "train.precision must be one of"),
        ("precision", "bf61", "did you mean 'bf16'"),
    ],
)
def test_bad_device_or_precision_names(key: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _cfg(**{key: value})


def test_fp16_on_the_cpu_is_refused() -> None:
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device.*bf16"):
        Precision("fp16", torch.device("cpu"))
    cfg = _cfg(device="cpu", precision="fp16")
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        train(cfg, Path("/nonexistent/never-written"))


def test_classify_runs_refuse_what_they_do_not_support_yet(tmp_path: Path) -> None:
    from omnibind.errors import OmnibindError
    from omnibind.training.classify import train_classifier

    raw = tiny_shapes_config(n=60, epochs=1)
    raw.pop("eval")
    raw["task"] = {"type": "classify", "label": "shape"}
    raw["train"]["precision"] = "bf16"
    with pytest.raises(OmnibindError, match="train.precision: bf16 is for embedding runs"):
        train_classifier(config_from_dict(raw), tmp_path / "run")
    assert not (tmp_path / "run").exists()
