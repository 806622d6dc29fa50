"""Adapting pretrained backbones: freeze, partial unfreeze, LoRA.

``freeze`` stops every parameter from training. ``unfreeze_last`` then lets the last ``n`` blocks train
again, where the blocks are the entries of the longest ``nn.ModuleList`` in the module (the transformer
layers of BERT, ViT, AST and sentence-transformers models) or, when there is none, its direct children.
``lora`` adds low-rank adapters with peft, which omnibind does not install (``pip install peft``).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from omnibind.errors import OmnibindError


def freeze(module: nn.Module) -> nn.Module:
    """Make every parameter of ``module`` non-trainable; returns ``module``."""
    module.requires_grad_(False)
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


def lora(module: nn.Module, rank: int, targets: Sequence[str], alpha: float | None = None) -> nn.Module:
    """Add LoRA adapters of ``rank`` to the linear layers whose names end with one of ``targets``.

    Only the adapters train; the wrapped weights are frozen. ``alpha`` defaults to ``2 * rank``.

    Raises:
        OmnibindError: peft is not installed (``pip install peft``).
    """
    try:
        import peft
    except ImportError:
        raise OmnibindError(
            "LoRA needs the 'peft' package, which omnibind does not install: pip install peft"
        ) from None
    config = peft.LoraConfig(
        r=rank, lora_alpha=alpha if alpha is not None else 2 * rank, target_modules=list(targets)
    )
    module = peft.inject_adapter_in_model(config, module)
    for name, param in module.named_parameters():
        param.requires_grad_("lora_" in name)
    return module
