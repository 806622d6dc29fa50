"""Late fusion: pool the present modalities' embeddings, append the presence bits, classify with an MLP."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from omnibind.errors import ConfigError
from omnibind.fusion.base import FUSION_HEADS, FusionHead, FusionOutput, mlp
from omnibind.types import Embeddings

IMPUTE = ("none", "zeros", "zero-vectors")


@FUSION_HEADS.register("late")
class LateFusion(FusionHead):
    """Mean or concatenation of the present embeddings, with the presence bits, into an MLP.

    With ``pool="mean"`` the input is the mean over the item's present modalities (``[D]``) and with
    ``pool="concat"`` the ``M`` embeddings side by side (``[M * D]``, absent slots zero); either way the
    ``M`` presence bits are appended, so the MLP always knows what is missing.

    ``impute="zeros"`` is the explicit baseline that hand-rolled pipelines are: a missing value is filled
    with zeros *before its encoder* (a black image, a silent clip, a row of zeros, the empty string), the
    encoder's output for that zero input takes the absent slot, and no presence bits are given, so
    "missing" looks like a real input. Inside a :class:`~omnibind.fusion.classifier.Classifier` the head
    gets that output through :meth:`set_zero_input` and trains it along (the encoder can learn what a zero
    input means, which is how such pipelines pick up a shortcut when values go missing not at random).
    A head used on its own, without encoders, puts zero vectors in the absent slots instead, which is also
    what ``impute="zero-vectors"`` always does.

    Args:
        modalities: the modality names (column order of ``present``).
        dim: width D of the embeddings.
        num_classes: number of classes C.
        pool: ``concat`` (default) or ``mean``.
        impute: ``none`` (default: presence-aware), ``zeros`` or ``zero-vectors`` (the baselines above).
        hidden: width of the MLP's hidden layer.
        dropout: dropout before the MLP's last layer.

    Inputs:
        embeddings: ``{modality: Tensor[B, D]}``; present: ``bool[B, M]``.

    Returns:
        :class:`FusionOutput` with ``logits [B, C]``.

    Example:
        >>> head = LateFusion(["image", "audio"], dim=8, num_classes=3)
        >>> z = {"image": torch.randn(4, 8), "audio": torch.randn(4, 8)}
        >>> head(z, torch.tensor([[1, 1], [1, 0], [0, 1], [1, 1]], dtype=torch.bool)).logits.shape
        torch.Size([4, 3])
    """

    def __init__(
        self,
        modalities: Sequence[str],
        dim: int,
        num_classes: int,
        pool: str = "concat",
        impute: str = "none",
        hidden: int = 128,
        dropout: float = 0.1,
    ) -> None:
        super().__init__(modalities, dim, num_classes)
        if pool not in ("concat", "mean"):
            raise ConfigError(f"late fusion: pool must be 'concat' or 'mean', got {pool!r}")
        if impute not in IMPUTE:
            raise ConfigError(f"late fusion: impute must be one of {', '.join(IMPUTE)}, got {impute!r}")
        self.pool = pool
        self.impute = impute
        self._zero_input: Callable[[str], Tensor] | None = None
        m = len(self.modalities)
        width = (m * dim if pool == "concat" else dim) + (m if impute == "none" else 0)
        self.mlp = mlp(width, hidden, num_classes, dropout)

    def set_zero_input(self, encode: Callable[[str], Tensor] | None) -> None:
        """Give ``impute="zeros"`` the embedding of a zero input: ``encode(modality) -> [D]``.

        :class:`~omnibind.fusion.classifier.Classifier` passes its encoders'
        :meth:`~omnibind.model.OmniModel.encode_zero_input`; other imputation settings ignore it.
        """
        self._zero_input = encode

    def forward(self, embeddings: Embeddings, present: Tensor) -> FusionOutput:
        z = self.stack(embeddings, present)  # [B, M, D], absent rows zero
        if self.impute == "zeros" and self._zero_input is not None and not bool(present.all()):
            columns = []
            for m, name in enumerate(self.modalities):
                absent = ~present[:, m]
                if bool(absent.any()):
                    filled = self._zero_input(name).to(z.dtype)  # [D]
                    columns.append(torch.where(absent[:, None], filled, z[:, m]))
                else:
                    columns.append(z[:, m])
            z = torch.stack(columns, dim=1)  # [B, M, D]: absent slots hold the zero input's embedding
        if self.pool == "concat":
            pooled = z.flatten(1)  # [B, M * D]
        elif self.impute != "none":
            pooled = z.mean(dim=1)  # [B, D]: absent modalities count as zero vectors
        else:
            count = present.sum(dim=1, keepdim=True).clamp(min=1)  # [B, 1]; an item with none gives zeros
            pooled = z.sum(dim=1) / count  # [B, D]
        if self.impute == "none":
            pooled = torch.cat([pooled, present.to(pooled.dtype)], dim=1)  # [B, width + M]
        return FusionOutput(logits=self.mlp(pooled))
