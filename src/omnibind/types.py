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
