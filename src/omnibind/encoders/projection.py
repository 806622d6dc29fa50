"""Projection heads: from an encoder's width to the shared width D."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class Standardize(nn.BatchNorm1d):
    """Each coordinate standardised (no affine part): over the batch in training, by running averages
    at evaluation.

    Unlike ``nn.BatchNorm1d`` it accepts a single row in training (a batch where one item has the
    modality), using the running averages for it, so that any batch the trainer builds works.
    """

    def __init__(self, dim: int) -> None:
        super().__init__(dim, affine=False)

    def forward(self, x: Tensor) -> Tensor:
        if self.training and x.shape[0] < 2:
            return F.batch_norm(x, self.running_mean, self.running_var, training=False, eps=self.eps)
        return super().forward(x)


class Projection(nn.Module):
    """A linear map, or a two-layer MLP, from an encoder's output to the shared embedding width.

    The model puts one projection after each modality's encoder; with a frozen pretrained encoder it is
    the part that learns (LiT style). Normalisation to unit length happens in the model, not here.

    With ``standardize=True`` (``model.projection: bn``) each input feature is first standardised
    (:class:`Standardize`: over the batch in training, by running averages at evaluation), then mapped
    linearly, and the output is scaled by a constant fixed at initialisation so that an embedding starts
    at about unit length. Meant for ``model.normalize: false`` on top of trained, frozen encoders
    (``model.init``): a weak feature (like a bit only a product of three modalities reveals, which
    Symile's score needs) enters with the same spread as the strong ones, and without unit-length rows
    the strong facts do not use up the length it needs to grow (docs/concepts.md). Rows are independent
    at evaluation only (training uses batch statistics).

    Args:
        in_dim: the encoder's ``output_dim``.
        out_dim: the shared width D.
        hidden: width of the hidden layer; 0 (default) makes the projection a single linear map.
        bias: add a bias to the (last) linear layer.
        standardize: the standardise -> linear form (``model.projection: bn``); ``hidden`` must be 0.

    Inputs:
        x: ``[n, in_dim]``.

    Returns:
        ``[n, out_dim]``.

    Example:
        >>> import torch
        >>> Projection(128, 64)(torch.zeros(2, 128)).shape
        torch.Size([2, 64])
    """

    def __init__(
        self, in_dim: int, out_dim: int, hidden: int = 0, bias: bool = False, standardize: bool = False
    ) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.out_dim = out_dim
        if standardize:
            if hidden > 0:
                raise ValueError("Projection: standardize=True takes no hidden layer")
            last = nn.Linear(in_dim, out_dim)
            self.net = nn.Sequential(Standardize(in_dim), last)
            # standardised inputs give output i a variance of |W_i|^2: start at unit expected length
            self.register_buffer("scale", 1.0 / last.weight.detach().norm().clamp(min=1e-6))
        elif hidden > 0:
            self.net: nn.Module = nn.Sequential(
                nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim, bias=bias)
            )
        else:
            self.net = nn.Linear(in_dim, out_dim, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        out = self.net(x)
        scale = getattr(self, "scale", None)
        return out if scale is None else out * scale
