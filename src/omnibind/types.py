"""Containers shared across the library.

``Embeddings`` maps a modality name to an ``[N, D]`` tensor. A presence mask ``present`` is a
``bool[N, M]`` tensor whose columns follow the iteration order of the embeddings dict: column ``m``
says which rows of the ``m``-th modality are real. Rows of absent items hold zeros and must be ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

Embeddings = dict[str, Tensor]


@dataclass
class HardNegatives:
    """Extra candidate items of a batch (hard negatives), scored by the objectives beside the batch's own.

    ``K`` items that are candidates only: never queries, never positives. In the pair ``a -> b`` the
    negatives that have ``b`` join the ``b`` candidates of every query row (an extra block of logit
    columns; the positive stays the query's own item); those without ``b`` are left out, never scored as
    zero vectors.

    Attributes:
        embeddings: modality name -> ``[K, D]`` (the keys and order of the batch's embeddings; rows of
            absent values are ignored whatever they hold).
        present: ``bool[K, M]``.
        allowed: ``bool[N, K]``: negative ``k`` may be scored against query row ``n`` (False where it is
            the row's own item, shares an identical value with it (an exact duplicate), or is padding).
    """

    embeddings: Embeddings
    present: Tensor
    allowed: Tensor


@dataclass
class LossOutput:
    """What every objective returns.

    Attributes:
        loss: the scalar to minimise.
        terms: named components (per anchor, per pair, ...) as detached floats, for logging.
        count: how many loss terms contributed (0 means the batch gave the objective nothing to learn).
    """

    loss: Tensor
    terms: dict[str, float] = field(default_factory=dict)
    count: int = 0
