"""Dense encoders: ``mlp`` for tabular rows, ``linear`` for precomputed embeddings."""

from __future__ import annotations

from torch import Tensor, nn

from omnibind.encoders.base import ENCODERS, Encoder, check_rank


@ENCODERS.register("mlp")
class MLPEncoder(Encoder):
    """An MLP over a row of (normalised) columns: ``depth`` blocks of Linear - LayerNorm - GELU.

    Args:
        input_shape: ``[n_columns]``.
        hidden: width of every block, and ``output_dim``.
        depth: number of blocks (at least 1).
        dropout: dropout after each block while training.

    Inputs:
        x: ``[n, n_columns]`` float.

    Returns:
        ``[n, hidden]``.

    Example:
        >>> import torch
        >>> MLPEncoder((5,), hidden=8)(torch.zeros(2, 5)).shape
        torch.Size([2, 8])
    """

    kinds = ("tabular",)

    def __init__(
        self, input_shape: tuple[int, ...], hidden: int = 64, depth: int = 2, dropout: float = 0.0
    ) -> None:
        super().__init__()
        check_rank("mlp", input_shape, 1, "[n_columns]")
        layers: list[nn.Module] = []
        width = input_shape[0]
        for _ in range(max(depth, 1)):
            layers += [nn.Linear(width, hidden), nn.LayerNorm(hidden), nn.GELU(), nn.Dropout(dropout)]
            width = hidden
        self.net = nn.Sequential(*layers)
        self.output_dim = hidden

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


@ENCODERS.register("linear")
class LinearEncoder(Encoder):
    """One linear map of a precomputed embedding (the encoders of Symile's synthetic experiments).

    The model still adds its projection after it; two linear maps compose to one, so "linear" plus a
    linear projection is a single affine map of the input.

    Args:
        input_shape: ``[dim]``.
        width: ``output_dim``.
        bias: learn a bias.

    Inputs:
        x: ``[n, dim]`` float.

    Returns:
        ``[n, width]``.

    Example:
        >>> import torch
        >>> LinearEncoder((5,))(torch.zeros(2, 5)).shape
        torch.Size([2, 16])
    """

    kinds = ("embedding",)

    def __init__(self, input_shape: tuple[int, ...], width: int = 16, bias: bool = True) -> None:
        super().__init__()
        check_rank("linear", input_shape, 1, "[dim]")
        self.linear = nn.Linear(input_shape[0], width, bias=bias)
        self.output_dim = width

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x)
