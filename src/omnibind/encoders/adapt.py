"""Adapting pretrained backbones: freeze, partial unfreeze, LoRA.

``freeze`` stops every parameter from training. ``unfreeze_last`` then lets the last ``n`` blocks train
again, where the blocks are the entries of the longest ``nn.ModuleList`` in the module (the transformer
layers of BERT, ViT, AST and sentence-transformers models) or, when there is none, its direct children.
``lora`` adds low-rank adapters with peft (``pip install 'omnibind[backbones]'``) to named ``nn.Linear``
layers. ``load_checkpoint`` reads a local weights file into a backbone and refuses one that does not fit.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from omnibind.errors import ConfigError, OmnibindError


def freeze(module: nn.Module) -> nn.Module:
    """Make every parameter of ``module`` non-trainable; returns ``module``."""
    module.requires_grad_(False)
    return module


def batchnorm_eval(module: nn.Module) -> nn.Module:
    """Put every batch norm of ``module`` in eval mode: running statistics, never the batch's, so a row's
    output does not depend on the other rows (call it after ``module.train()``)."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
    return module


def blocks(module: nn.Module) -> list[nn.Module]:
    """The repeated blocks of ``module``: the longest ``nn.ModuleList`` inside it, else its children."""
    lists = [m for m in module.modules() if isinstance(m, nn.ModuleList) and len(m) > 0]
    if lists:
        return list(max(lists, key=len))  # max keeps the first (outermost) of equally long lists
    return list(module.children())


def unfreeze_last(module: nn.Module, n: int) -> nn.Module:
    """Make the parameters of the last ``n`` blocks of ``module`` trainable (see :func:`blocks`).

    ``n`` larger than the number of blocks unfreezes them all; ``n <= 0`` does nothing. The rest of the
    module is left as it is, so call :func:`freeze` first for a partial fine-tune.
    """
    if n <= 0:
        return module
    for block in blocks(module)[-n:]:
        block.requires_grad_(True)
    return module


def lora(
    module: nn.Module, rank: int, targets: Sequence[str], alpha: float | None = None, owner: str = "lora"
) -> nn.Module:
    """Add LoRA adapters of ``rank`` to the linear layers named ``targets`` or ending in ``.target``.

    Only the adapters train; the wrapped weights are frozen. ``alpha`` defaults to ``2 * rank``.
    ``owner`` (e.g. ``"encoder 'hf'"``) starts the error messages.

    ``nn.MultiheadAttention`` layers (open_clip's towers) cannot be adapted: their fused input projection
    is no ``nn.Linear`` and their ``out_proj`` weight is used without calling the module; target the
    MLP's linear layers instead.

    Raises:
        OmnibindError: peft is not installed.
        ConfigError: no linear layer matches ``targets``, or a target names the ``out_proj`` of an
            ``nn.MultiheadAttention`` (the message lists the names that can be targeted).
    """
    try:
        import peft
    except ImportError:
        raise OmnibindError(
            "LoRA needs the 'peft' package, which omnibind does not install: pip install peft "
            "(or pip install 'omnibind[backbones]')"
        ) from None
    # nn.MultiheadAttention reads its out_proj weight directly (F.multi_head_attention_forward), never
    # calling the module, and its fused in_proj is no nn.Linear: adapters there would never run (open_clip
    # issue 585), so those layers cannot be targeted.
    fused = {
        f"{name}.out_proj" if name else "out_proj"
        for name, m in module.named_modules()
        if isinstance(m, nn.MultiheadAttention)
    }
    linear = [name for name, m in module.named_modules() if isinstance(m, nn.Linear) and name not in fused]

    def hit(name: str) -> bool:
        return any(name == t or name.endswith("." + t) for t in targets)

    matched = [name for name in linear if hit(name)]
    if any(hit(name) for name in fused):
        raise ConfigError(
            f"{owner}: lora_targets {list(targets)} name the out_proj of nn.MultiheadAttention, which "
            "calls its weights directly (adapters there would never run); target other linear layers: "
            f"{', '.join(sorted({n.rsplit('.', 1)[-1] for n in linear})) or 'none'}"
        )
    if not matched:
        leaves = sorted({name.rsplit(".", 1)[-1] for name in linear})
        raise ConfigError(
            f"{owner}: lora_targets {list(targets)} match no nn.Linear layer; linear layers end in: "
            f"{', '.join(leaves) or 'none (this backbone has no nn.Linear)'}"
        )
    config = peft.LoraConfig(
        r=rank, lora_alpha=alpha if alpha is not None else 2 * rank, target_modules=list(targets)
    )
    module = peft.inject_adapter_in_model(config, module)
    for name, param in module.named_parameters():
        param.requires_grad_("lora_" in name)
    return module


def count_parameters(modules: Sequence[nn.Module]) -> tuple[int, int]:
    """``(trainable, total)`` parameters of ``modules`` (each counted once)."""
    seen = {id(p): p for m in modules for p in m.parameters()}
    trainable = sum(p.numel() for p in seen.values() if p.requires_grad)
    return trainable, sum(p.numel() for p in seen.values())


def load_checkpoint(module: nn.Module, path: str | Path, owner: str) -> None:
    """Load a local ``.pth`` / ``.pt`` / ``.safetensors`` state dict into ``module``, all keys or nothing.

    A ``{"state_dict": ...}`` or ``{"model": ...}`` wrapper is unwrapped. Tensors are read without
    unpickling code (``weights_only``).

    Raises:
        ConfigError: the file does not exist, or it does not fit ``module`` (the message names a few
            missing, unexpected and mis-shaped keys).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{owner}: checkpoint '{path}' does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state: dict[str, torch.Tensor] = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    for wrapper in ("state_dict", "model"):
        if isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {list(state[k].shape)} (model: {list(v.shape)})"
        for k, v in own.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    problems = [
        f"{what} ({len(keys)}): {', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''}"
        for what, keys in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatch", shapes),
        )
        if keys
    ]
    if problems:
        raise ConfigError(f"{owner}: checkpoint '{path}' does not fit the model: {'; '.join(problems)}")
    module.load_state_dict(state)
