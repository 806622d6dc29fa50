"""The Encoder base module and its registry.

An encoder turns the present rows of one modality into vectors; the model adds a
:class:`~omnibind.encoders.projection.Projection` to the shared width D after it. Every encoder has the
same constructor and call::

    encoder = create_encoder("conv2d", (3, 32, 32), width=16)
    h = encoder(x)  # x: Tensor [n, *input_shape], or list[str] of length n for text -> [n, output_dim]

Input shapes by kind: image ``[C, H, W]``; audio log-mel ``[1, n_mels, frames]``; signal ``[C, L]``;
tabular ``[n_columns]``; embedding ``[dim]``; text ``()`` (a batch is a list of strings).

Rows are encoded independently: no encoder uses batch statistics (GroupNorm / LayerNorm, never BatchNorm),
so in eval mode an item gets the same embedding whichever other items share its batch. That matters
because encoders only ever see the present rows of a batch. "The same" means up to float rounding: CPU
matrix kernels sum in a different order for one row than for many, which moves outputs by up to ~1e-6
(a plain ``nn.Linear`` already does); the contract tests hold every encoder to that tolerance.

Frozen pretrained backbones are kept out of ``state_dict`` (so a saved model does not carry 90 MB copies
of weights that anyone can reload from their package or folder): an encoder stores such a backbone with
:meth:`Encoder.hold_frozen`, which keeps it as a plain attribute rather than a submodule. ``.to()``,
``.float()`` and friends still reach it; ``.train()`` does not (a frozen backbone always runs in eval
mode). A backbone that trains, fully or in part, is an ordinary submodule and is saved with the model.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from omnibind.errors import ConfigError
from omnibind.registry import Registry, nearest


class Encoder(nn.Module):
    """Base class of every encoder.

    Subclasses set ``kinds`` (the modality kinds they accept), ``pretrained`` (whether they wrap a
    pretrained backbone and take the ``freeze`` option), set ``self.output_dim`` in ``__init__`` and
    implement ``forward``. Every constructor option is a keyword argument with a default, documented
    in the class docstring's Args section. A pretrained encoder whose weights come from a file may name
    the option holding it in ``checkpoint_option``: with ``model.save_backbones`` the model then saves the
    backbone and, when loading, builds the encoder with that option set to ``"none"`` (no file read)
    before restoring the saved weights.
    """

    kinds: ClassVar[tuple[str, ...]] = ()
    pretrained: ClassVar[bool] = False
    checkpoint_option: ClassVar[str | None] = None
    output_dim: int

    def __init__(self) -> None:
        super().__init__()
        # Names of frozen modules held outside the module tree (see the module docstring).
        self._frozen_names: list[str] = []

    def hold_frozen(self, name: str, module: nn.Module) -> None:
        """Keep ``module`` as attribute ``name`` without registering it: not saved, not trained.

        The module is put in eval mode and its parameters stop requiring gradients.
        """
        module.eval()
        module.requires_grad_(False)
        object.__setattr__(self, name, module)
        self._frozen_names.append(name)

    def held_modules(self) -> dict[str, nn.Module]:
        """The frozen modules kept by :meth:`hold_frozen`, by attribute name."""
        return {name: getattr(self, name) for name in self._frozen_names}

    def _apply(self, fn: Callable[..., Any], recurse: bool = True) -> Encoder:
        # Device and dtype moves must reach the held (unregistered) backbones too.
        super()._apply(fn, recurse)
        for name in self._frozen_names:
            getattr(self, name)._apply(fn, recurse)
        return self


ENCODERS: Registry[type[Encoder]] = Registry("encoder")


def encoder_options(name: str) -> list[str]:
    """The option names the encoder registered as ``name`` accepts (its constructor keywords)."""
    cls = ENCODERS.get(name)
    skip = {"self", "input_shape"}
    return [p for p in inspect.signature(cls.__init__).parameters if p not in skip]


def create_encoder(name: str, input_shape: tuple[int, ...], **options: Any) -> Encoder:
    """Instantiate the encoder registered as ``name`` for inputs of ``input_shape``.

    Args:
        name: a registered encoder name (see :func:`list_encoders`).
        input_shape: the shape of one input item (``()`` for text).
        options: the encoder's keyword options.

    Returns:
        The encoder; its ``output_dim`` is the width of what it returns.

    Raises:
        KeyError: ``name`` is not registered (the message names the nearest one).
        ConfigError: an option is not one of the encoder's, or a value does not fit the input shape.

    Example:
        >>> enc = create_encoder("mlp", (5,), hidden=8)
        >>> enc.output_dim
        8
    """
    allowed = encoder_options(name)
    for key in options:
        if key not in allowed:
            raise ConfigError(
                f"encoder '{name}' has no option '{key}'{nearest(key, allowed)}; "
                f"options: {', '.join(allowed) or 'none'}"
            )
    return ENCODERS.get(name)(tuple(input_shape), **options)


def list_encoders() -> list[str]:
    """Names of every registered encoder."""
    return ENCODERS.names()


def backbone_pixels(x: Tensor, size: tuple[int, int], mean: Tensor, std: Tensor, channels: int = 3) -> Tensor:
    """Images ``[n, C, H, W]`` in ``[-1, 1]`` (as the image kind makes them) -> what a pretrained image
    backbone wants: 1 channel repeated to ``channels``, resized to ``size`` (bilinear, antialiased),
    normalised with ``mean`` / ``std`` (``[1, C, 1, 1]``, of pixels in ``[0, 1]``).

    Returns ``[n, C, *size]``."""
    if x.shape[1] == 1 and channels == 3:
        x = x.expand(-1, 3, -1, -1)
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
    return ((x + 1) / 2 - mean) / std


def check_rank(name: str, input_shape: tuple[int, ...], rank: int, layout: str) -> None:
    """Raise ``ConfigError`` unless ``input_shape`` has ``rank`` dimensions (``layout`` names them)."""
    if len(input_shape) != rank or any(int(s) <= 0 for s in input_shape):
        raise ConfigError(f"encoder '{name}' expects an input shape {layout}, got {list(input_shape)}")
