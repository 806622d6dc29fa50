"""Projection heads: from an encoder's width to the shared width D."""

from __future__ import annotations

from torch import Tensor, nn


class Projection(nn.Module):
    """A linear map, or a two-layer MLP, from an encoder's output to the shared embedding width.

    The model puts one projection after each modality's encoder; with a frozen pretrained encoder it is
    the part that learns (LiT style). Normalisation to unit length happens in the model, not here.

    Args:
        in_dim: the encoder's ``output_dim``.
        out_dim: the shared width D.
        hidden: width of the hidden layer; 0 (default) makes the projection a single linear map.
        bias: add a bias to the (last) linear layer.

    Inputs:
        x: ``[n, in_dim]``.

    Returns:
        ``[n, out_dim]``.

    Example:
        >>> import torch
        >>> Projection(128, 64)(torch.zeros(2, 128)).shape
        torch.Size([2, 64])
    """

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 0, bias: bool = False) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.out_dim = out_dim
        if hidden > 0:
            self.net: nn.Module = nn.Sequential(
                nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim, bias=bias)
            )
        else:
            self.net = nn.Linear(in_dim, out_dim, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
