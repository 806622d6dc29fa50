"""Contract tests every registered encoder must pass: shape, gradients, determinism, batch independence,
documented options, option checking and a state-dict round trip."""

from __future__ import annotations

import inspect
import re
from typing import Any

import pytest
import torch

from omnibind.encoders import ENCODERS, Encoder, create_encoder, encoder_options
from omnibind.errors import ConfigError
from tests.encoders.backbones import TINY_CLIP, importorskip_backbone

# A representative input shape per kind, small enough for a 2-core CPU.
SHAPES: dict[str, tuple[int, ...]] = {
    "image": (3, 16, 16),
    "audio": (1, 16, 24),
    "signal": (2, 64),
    "tabular": (5,),
    "embedding": (6,),
    "text": (),
}
KNOWN_KINDS = set(SHAPES)
TEXTS = ["a red circle", "Blue square, small!", "", "the green triangle on the left", "ünïcode wörds 42"]
# Pretrained wrappers that load real weights are covered in tests/encoders/ instead.
LOADS_WEIGHTS = {"minilm", "sentence_transformers"}
# Wrappers of optional libraries (the backbones extra): skipped where the library does not import.
NEEDS = {"timm": "timm", "open_clip": "open_clip"}
TINY_OPTIONS: dict[str, dict[str, Any]] = {
    # a ViT: timm's ResNets start each block's last batch norm at zero, so early convs get no gradient
    "timm": {
        "model": "vit_tiny_patch16_224",
        "model_options": {"img_size": 16, "patch_size": 8, "depth": 1},
        "freeze": False,
    },
    "open_clip": {"config": TINY_CLIP, "freeze": False, "tower": "image"},
    "efficientnet_lite0": {"freeze": False, "checkpoint": "none", "size": 32},
    "hf": {
        "freeze": False,
        "config": {
            "model_type": "vit",
            "hidden_size": 16,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "intermediate_size": 32,
            "image_size": 16,
            "patch_size": 8,
            "hidden_dropout_prob": 0.0,
            "attention_probs_dropout_prob": 0.0,
        },
    },
}


def _build(name: str, seed: int = 0) -> tuple[Encoder, Any]:
    if name in LOADS_WEIGHTS:
        pytest.skip(f"'{name}' loads real weights; see tests/encoders/")
    if name in NEEDS:
        importorskip_backbone(NEEDS[name])
    cls = ENCODERS.get(name)
    kind = cls.kinds[0]
    torch.manual_seed(seed)
    encoder = create_encoder(name, SHAPES[kind], **TINY_OPTIONS.get(name, {}))
    gen = torch.Generator().manual_seed(1)
    x = TEXTS if kind == "text" else torch.randn(5, *SHAPES[kind], generator=gen)
    return encoder, x


def _rows(x: Any, index: list[int]) -> Any:
    return [x[i] for i in index] if isinstance(x, list) else x[index]


@pytest.mark.parametrize("name", ENCODERS.names())
def test_output_shape(name: str) -> None:
    encoder, x = _build(name)
    out = encoder(x)
    assert out.shape == (5, encoder.output_dim)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ENCODERS.names())
def test_every_parameter_gets_a_gradient(name: str) -> None:
    encoder, x = _build(name)
    encoder.train()
    encoder(x).square().sum().backward()
    trainable = [(n, p) for n, p in encoder.named_parameters() if p.requires_grad]
    assert trainable
    missing = [n for n, p in trainable if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"no gradient for {missing}"


@pytest.mark.parametrize("name", ENCODERS.names())
def test_deterministic_in_eval_mode(name: str) -> None:
    encoder, x = _build(name)
    encoder.eval()
    with torch.no_grad():
        assert torch.equal(encoder(x), encoder(x))


@pytest.mark.parametrize("name", ENCODERS.names())
def test_rows_do_not_depend_on_their_batch(name: str) -> None:
    # Not bit-identical: CPU matmul kernels sum one row in a different order than many (~1e-7 here).
    encoder, x = _build(name)
    encoder.eval()
    with torch.no_grad():
        batch = encoder(x)
        for i in range(5):
            alone = encoder(_rows(x, [i]))
            torch.testing.assert_close(alone[0], batch[i], atol=1e-6, rtol=1e-6)
        shuffled = encoder(_rows(x, [4, 2, 0, 3, 1]))
    torch.testing.assert_close(shuffled, batch[[4, 2, 0, 3, 1]], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("name", ENCODERS.names())
def test_state_dict_round_trip(name: str) -> None:
    first, x = _build(name, seed=0)
    second, _ = _build(name, seed=1)
    second.load_state_dict(first.state_dict())
    first.eval()
    second.eval()
    with torch.no_grad():
        torch.testing.assert_close(second(x), first(x), atol=0, rtol=0)


def _documented_args(doc: str) -> set[str]:
    section = re.search(r"^\s*Args:\n(.*?)(?:^\s*\w[\w ]*:\n|\Z)", doc, flags=re.S | re.M)
    assert section, "docstring has no Args section"
    entries = re.findall(r"^( +)(\w+):", section.group(1), flags=re.M)
    indent = min(len(space) for space, _ in entries)  # continuation lines are indented deeper
    return {arg for space, arg in entries if len(space) == indent}


@pytest.mark.parametrize("name", ENCODERS.names())
def test_every_constructor_argument_is_documented(name: str) -> None:
    cls = ENCODERS.get(name)
    params = [p for p in inspect.signature(cls.__init__).parameters.values() if p.name != "self"]
    assert params[0].name == "input_shape"
    for p in params[1:]:
        assert p.kind is p.POSITIONAL_OR_KEYWORD and p.default is not p.empty, (
            f"option '{p.name}' needs a default"
        )
    undocumented = {p.name for p in params} - _documented_args(inspect.getdoc(cls) or "")
    assert not undocumented, f"{name}: undocumented arguments {sorted(undocumented)}"


@pytest.mark.parametrize("name", ENCODERS.names())
def test_declares_known_kinds(name: str) -> None:
    cls = ENCODERS.get(name)
    assert cls.kinds and set(cls.kinds) <= KNOWN_KINDS
    assert isinstance(cls.pretrained, bool)
    assert ("freeze" in encoder_options(name)) == cls.pretrained


@pytest.mark.parametrize("name", ENCODERS.names())
def test_unknown_option_names_the_nearest(name: str) -> None:
    option = encoder_options(name)[0]
    with pytest.raises(ConfigError, match=rf"no option '{option}x'.*did you mean '{option}'"):
        create_encoder(name, SHAPES[ENCODERS.get(name).kinds[0]], **{option + "x": 1})
