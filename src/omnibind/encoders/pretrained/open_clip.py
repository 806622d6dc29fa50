"""``open_clip``: the image or the text tower of an open_clip CLIP model, from a local checkpoint.

open_clip is imported when the encoder is built (``pip install 'omnibind[backbones]'``; it needs
torchvision). The architecture is a named open_clip config (``model: ViT-B-32``) or, for tests, a
``config`` dict of ``open_clip.CLIP`` arguments; it is built without weights and ``checkpoint: PATH`` loads
a local state dict of the whole CLIP model, all keys or none. ``tower`` picks the half that encodes this
modality; the other half is dropped. The output is the tower's own projection (``embed_dim`` values), so
a user starting from their CLIP checkpoint keeps its joint space and omnibind's projection maps it on.

Images arrive in ``[-1, 1]``, are resized to the tower's ``image_size`` and renormalised to the model's
mean and std (OpenAI's by default). Text is tokenised with the model's open_clip tokenizer (the bundled
BPE vocabulary for the CLIP configs: nothing is fetched).

LoRA: open_clip's transformers use ``nn.MultiheadAttention``, whose fused ``in_proj`` is no ``nn.Linear``
and whose ``out_proj`` weight is used without calling the module (open_clip issue 585), so the adapters go
on the MLP's linear layers (``c_fc``, ``c_proj``) by default; naming ``out_proj`` is refused.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from omnibind.encoders.adapt import freeze as freeze_module
from omnibind.encoders.adapt import load_checkpoint, lora
from omnibind.encoders.adapt import unfreeze_last as unfreeze_last_blocks
from omnibind.encoders.base import ENCODERS, Encoder, backbone_pixels, check_rank
from omnibind.errors import ConfigError

NO_WEIGHTS = "none"
_TOWERS = ("image", "text")


def _open_clip() -> Any:
    try:
        import open_clip
    except ImportError as exc:
        raise ConfigError(
            f"encoder 'open_clip' needs open_clip_torch (pip install 'omnibind[backbones]'); importing it "
            f"failed: {exc}"
        ) from None
    return open_clip


def create_clip(model: str, config: dict[str, Any] | None, checkpoint: str) -> nn.Module:
    """An open_clip CLIP model with the weights of ``checkpoint`` (empty or "none": random)."""
    open_clip = _open_clip()
    if config:
        clip = open_clip.CLIP(**config)
    elif model:
        if model not in open_clip.list_models():
            from omnibind.registry import nearest

            raise ConfigError(
                f"encoder 'open_clip': unknown model '{model}'{nearest(model, open_clip.list_models())}"
            )
        clip = open_clip.create_model(model, pretrained=None)
    else:
        raise ConfigError("encoder 'open_clip' needs 'model' (an open_clip config name) or 'config'")
    if checkpoint and checkpoint != NO_WEIGHTS:
        load_checkpoint(clip, checkpoint, f"encoder 'open_clip' ({model or 'config'})")
    return clip


class _TextTower(nn.Module):
    """The text half of a CLIP model: token ids ``[n, T]`` -> ``[n, embed_dim]``."""

    def __init__(self, clip: Any) -> None:
        super().__init__()
        clip.visual = None  # the other tower: dropped, so every kept parameter has a use
        for name in ("logit_scale", "logit_bias"):
            if getattr(clip, name, None) is not None:
                setattr(clip, name, None)
        self.clip = clip

    def forward(self, tokens: Tensor) -> Tensor:
        return self.clip.encode_text(tokens)


@ENCODERS.register("open_clip")
class OpenCLIPEncoder(Encoder):
    """One tower of an open_clip CLIP model (image or text), as CLIP embeds it (before normalisation).

    Args:
        input_shape: ``[C, H, W]`` for the image tower, ``()`` for the text tower.
        model: an open_clip model config name (``open_clip.list_models()``), built without weights.
        config: instead of ``model``, ``open_clip.CLIP`` keyword arguments (``embed_dim``, ``vision_cfg``,
            ``text_cfg``) for a randomly initialised model (tests).
        checkpoint: a local state dict of the whole CLIP model (``.pt``, ``.pth``, ``.bin`` or
            ``.safetensors``); empty means random weights.
        tower: ``image`` or ``text``; empty picks the one that fits ``input_shape``.
        freeze: keep the tower fixed (only the projection trains).
        unfreeze_last: with ``freeze``, let the last this many residual blocks train.
        lora_rank: with ``freeze``, add LoRA adapters of this rank to ``lora_targets`` (needs peft).
        lora_targets: name suffixes of the ``nn.Linear`` layers that get adapters; the MLP's by default
            (see the module docstring on ``nn.MultiheadAttention``).
        max_tokens: the text tower's context length cuts longer texts (0: the model's).

    Inputs:
        x: ``[n, C, H, W]`` float in ``[-1, 1]`` (image), or ``list[str]`` of length n (text).

    Returns:
        ``[n, embed_dim]``.
    """

    kinds = ("image", "text")
    pretrained = True
    checkpoint_option = "checkpoint"

    def __init__(
        self,
        input_shape: tuple[int, ...],
        model: str = "",
        config: dict[str, Any] | None = None,
        checkpoint: str = "",
        tower: str = "",
        freeze: bool = True,
        unfreeze_last: int = 0,
        lora_rank: int = 0,
        lora_targets: tuple[str, ...] = ("c_fc", "c_proj"),
        max_tokens: int = 0,
    ) -> None:
        super().__init__()
        tower = tower or ("text" if len(input_shape) == 0 else "image")
        if tower not in _TOWERS:
            raise ConfigError(f"encoder 'open_clip': tower must be image or text, got '{tower}'")
        if (unfreeze_last > 0 or lora_rank > 0) and not freeze:
            raise ConfigError("encoder 'open_clip': unfreeze_last and lora_rank need freeze=true")
        clip = create_clip(model, config, checkpoint)
        self.tower = tower
        self.output_dim = int(_embed_dim(clip))
        net: nn.Module
        if tower == "image":
            check_rank("open_clip", input_shape, 3, "[C, H, W] for the image tower")
            net = clip.visual
            size = net.image_size
            self.image_size = tuple(size) if isinstance(size, (list, tuple)) else (size, size)
            mean = getattr(net, "image_mean", None) or _open_clip().OPENAI_DATASET_MEAN
            std = getattr(net, "image_std", None) or _open_clip().OPENAI_DATASET_STD
            self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
            self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)
        else:
            check_rank("open_clip", input_shape, 0, "() for the text tower")
            length = int(clip.context_length)
            self.tokenizer = (
                _open_clip().get_tokenizer(model)
                if model
                else _open_clip().SimpleTokenizer(context_length=length)
            )
            self.max_tokens = min(max_tokens, length) if max_tokens > 0 else length
            net = _TextTower(clip)
        self.backbone: nn.Module
        self.frozen = freeze and unfreeze_last <= 0 and lora_rank <= 0
        if self.frozen:
            self.hold_frozen("backbone", net)
        else:
            if freeze:
                unfreeze_last_blocks(freeze_module(net), unfreeze_last)
            if lora_rank > 0:
                net = lora(net, lora_rank, lora_targets, owner=f"encoder 'open_clip' ({tower} tower)")
            self.backbone = net

    def _device(self) -> torch.device:
        return next(self.backbone.parameters()).device

    def forward(self, x: Tensor | list[str]) -> Tensor:
        if self.tower == "text":
            tokens = self.tokenizer(list(x))[:, : self.max_tokens]  # [n, T] token ids
            inputs = tokens.to(self._device())
        else:
            assert isinstance(x, Tensor)
            inputs = backbone_pixels(x, self.image_size, self.mean, self.std)  # [n, 3, S, S]
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            return self.backbone(inputs)  # [n, embed_dim]


def _embed_dim(clip: Any) -> int:
    proj = getattr(clip, "text_projection", None)
    if isinstance(proj, nn.Linear):
        return int(proj.out_features)
    if proj is not None:
        return int(proj.shape[1])
    return int(clip.visual.output_dim)
