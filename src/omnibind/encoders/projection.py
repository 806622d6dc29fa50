"""Projection heads: from an encoder's width to the shared width D."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Standardize(nn.BatchNorm1d):
    """Each coordinate standardised (no affine part): over the batch in training, by running averages
    at evaluation.

    Unlike ``nn.BatchNorm1d`` it accepts a single row in training (a batch where one item has the
    modality), using the running averages for it, so that any batch the trainer builds works.

    Under torchrun (a process group of more than one process) the statistics in training are those of
    the global batch: the rows of every rank, summed across the ranks with gradients (the synchronised
    batch norm of several processes, on any backend, gloo included). Every rank must call it at the same
    points, also with zero rows (``OmniModel.encode`` does).
    """

    def __init__(self, dim: int) -> None:
        super().__init__(dim, affine=False)

    def forward(self, x: Tensor) -> Tensor:
        if self.training and _world_size() > 1:
            return self._synced(x)
        if self.training and x.shape[0] < 2:
            return F.batch_norm(x, self.running_mean, self.running_var, training=False, eps=self.eps)
        return super().forward(x)

    def _synced(self, x: Tensor) -> Tensor:
        """Batch norm over the rows of every rank: two passes (mean, then centred squares) of sums."""
        from omnibind.training.distributed import all_reduce_sum

        head = torch.cat([x.sum(dim=0), x.new_tensor([float(x.shape[0])])])  # [C + 1]
        total = all_reduce_sum(head)
        n = float(total[-1].detach())
        if n < 2:  # as for a lone row in one process: the running averages
            return F.batch_norm(x, self.running_mean, self.running_var, training=False, eps=self.eps)
        mean = total[:-1] / n
        var = all_reduce_sum(((x - mean) ** 2).sum(dim=0)) / n  # biased, as batch norm normalises
        with torch.no_grad():
            m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked + 1)
            self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
            self.running_var.mul_(1 - m).add_(var.detach() * (n / (n - 1)), alpha=m)
            self.num_batches_tracked.add_(1)
        return (x - mean) / torch.sqrt(var + self.eps)


def _world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


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
    at evaluation only (training uses batch statistics, those of the global batch under torchrun).

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
