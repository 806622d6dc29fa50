"""``timm``: any timm image model as a tower, pooled to its ``num_features``; weights from a local file.

timm is imported when the encoder is built (``pip install 'omnibind[backbones]'``; it needs torchvision).
The model is made with ``pretrained=False`` (nothing is downloaded); ``checkpoint: PATH`` then loads a
local state dict, all keys or none (the classifier's keys included, as timm saves them). Images arrive
in ``[-1, 1]``; they are resized to the model's input size (or ``size``) and renormalised to its
``pretrained_cfg`` mean and std. Batch norms keep their running statistics also when blocks train, so an
item's output never depends on its batch. Freezing and saving work as for the other pretrained encoders
(frozen: held outside the module tree, written into the model folder with ``model.save_backbones``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from omnibind.encoders.adapt import batchnorm_eval, load_checkpoint, lora
from omnibind.encoders.adapt import freeze as freeze_module
from omnibind.encoders.base import ENCODERS, Encoder, backbone_pixels, check_rank
from omnibind.errors import ConfigError

NO_WEIGHTS = "none"


def create_timm_model(model: str, checkpoint: str, options: dict[str, Any] | None) -> nn.Module:
    """A timm model without its classifier, weights from ``checkpoint`` (empty or "none": random)."""
    try:
        import timm
    except ImportError as exc:
        raise ConfigError(
            f"encoder 'timm' needs timm (pip install 'omnibind[backbones]'); importing it failed: {exc}"
        ) from None
    if model not in timm.list_models():
        from omnibind.registry import nearest

        raise ConfigError(f"encoder 'timm': unknown model '{model}'{nearest(model, timm.list_models())}")
    net = timm.create_model(model, pretrained=False, **(options or {}))
    if checkpoint and checkpoint != NO_WEIGHTS:
        load_checkpoint(net, checkpoint, f"encoder 'timm' ({model})")
    net.reset_classifier(0)  # pooled features [n, num_features]
    return net


def _blocks(net: nn.Module) -> list[nn.Module]:
    """What ``unfreeze_last`` counts: ``blocks`` (ViT, EfficientNet) or ``stages`` (ConvNeXt) when the
    model has them, else its children that hold parameters (ResNet's stem parts and ``layer1..4``)."""
    for name in ("blocks", "stages"):
        found = getattr(net, name, None)
        if isinstance(found, nn.Module) and len(list(found.children())) > 0:
            return list(found.children())
    return [c for c in net.children() if any(True for _ in c.parameters())]


@ENCODERS.register("timm")
class TimmEncoder(Encoder):
    """A timm image model (ResNet, ConvNeXt, ViT, EfficientNet, ...), pooled to ``num_features``.

    Args:
        input_shape: ``[C, H, W]``; C must be the model's input channels, or 1 (repeated to 3).
        model: a timm model name (``timm.list_models()``).
        checkpoint: a local ``.pth`` / ``.safetensors`` state dict of that model; empty means random
            weights (``pretrained=False``: nothing is ever downloaded).
        freeze: keep the backbone fixed (only the projection trains).
        size: resize images to ``size`` x ``size``; 0 (default) means the model's own input size.
        unfreeze_last: with ``freeze``, let the last this many blocks train (``blocks`` or ``stages``,
            else the model's children with parameters).
        lora_rank: with ``freeze``, add LoRA adapters of this rank to ``lora_targets`` (needs peft).
        lora_targets: name suffixes of the ``nn.Linear`` layers that get adapters (ViT's ``qkv``).
        model_options: keyword arguments of ``timm.create_model`` (e.g. ``{img_size: 32}``).

    Inputs:
        x: ``[n, C, H, W]`` float in ``[-1, 1]``.

    Returns:
        ``[n, num_features]``.

    Example:
        >>> import torch
        >>> TimmEncoder((3, 32, 32), model="resnet10t", size=32)(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 512])
    """

    kinds = ("image",)
    pretrained = True
    checkpoint_option = "checkpoint"

    def __init__(
        self,
        input_shape: tuple[int, ...],
        model: str = "resnet18",
        checkpoint: str = "",
        freeze: bool = True,
        size: int = 0,
        unfreeze_last: int = 0,
        lora_rank: int = 0,
        lora_targets: tuple[str, ...] = ("qkv",),
        model_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        check_rank("timm", input_shape, 3, "[C, H, W]")
        if (unfreeze_last > 0 or lora_rank > 0) and not freeze:
            raise ConfigError("encoder 'timm': unfreeze_last and lora_rank need freeze=true")
        net = create_timm_model(model, checkpoint, model_options)
        cfg = getattr(net, "pretrained_cfg", {}) or {}
        channels = int(cfg.get("input_size", (3,))[0])
        if input_shape[0] not in (1, channels):
            raise ConfigError(f"encoder 'timm': {input_shape[0]}-channel images, '{model}' wants {channels}")
        self.channels = channels
        native = getattr(getattr(net, "patch_embed", None), "img_size", None)  # a ViT's, after img_size=
        self.size = size or int(native[-1] if native else cfg.get("input_size", (3, input_shape[1]))[-1])
        self.output_dim = int(net.num_features)
        mean, std = cfg.get("mean", (0.5,)), cfg.get("std", (0.5,))
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)
        self.backbone: nn.Module
        self.frozen = freeze and unfreeze_last <= 0 and lora_rank <= 0
        if self.frozen:
            self.hold_frozen("backbone", net)
        else:
            if freeze:
                freeze_module(net)
                for block in _blocks(net)[-unfreeze_last:] if unfreeze_last > 0 else []:
                    block.requires_grad_(True)
            if lora_rank > 0:
                net = lora(net, lora_rank, lora_targets, owner=f"encoder 'timm' ({model})")
            self.backbone = net

    def train(self, mode: bool = True) -> TimmEncoder:
        super().train(mode)
        batchnorm_eval(self)
        return self

    def forward(self, x: Tensor) -> Tensor:
        x = backbone_pixels(x, (self.size, self.size), self.mean, self.std, self.channels)  # [n, C, S, S]
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            return self.backbone(x)  # [n, num_features]
