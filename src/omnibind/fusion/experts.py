"""Modality experts: a small shared transformer over modality tokens, feed-forward weights per modality.

The idea of SkillNet and Mixture-of-Transformers: attention is global and shared, so modalities read each
other, while each modality's tokens go through that modality's own feed-forward network (and layer norm).
Routing is by modality, fixed, with no learned router. The class is read from the mean of the present
modality tokens after the last block.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from omnibind.fusion.base import FUSION_HEADS, FusionHead, FusionOutput
from omnibind.fusion.cross_attention import ModalityTokens, TokenBlock, attention_mask
from omnibind.types import Embeddings


@FUSION_HEADS.register("experts")
class ModalityExperts(FusionHead):
    """Shared attention, per-modality feed-forward experts, masked mean read-out.

    Args:
        modalities: the modality names (column order of ``present``).
        dim: width D of the embeddings.
        num_classes: number of classes C.
        width: token width inside the head.
        depth: number of transformer blocks (each with M feed-forward experts).
        heads: attention heads per block.
        dropout: dropout inside the blocks.

    Inputs:
        embeddings: ``{modality: Tensor[B, D]}``; present: ``bool[B, M]``.

    Returns:
        :class:`FusionOutput` with ``logits [B, C]``.

    References:
        SkillNet (Tencent, 2022); Mixture-of-Transformers (Meta, TMLR 2025);
        ``shared/papers/fusion.md`` section 6.

    Example:
        >>> head = ModalityExperts(["image", "audio", "text"], dim=8, num_classes=3, width=16)
        >>> z = {m: torch.randn(2, 8) for m in ("image", "audio", "text")}
        >>> head(z, torch.tensor([[1, 0, 1], [0, 1, 0]], dtype=torch.bool)).logits.shape
        torch.Size([2, 3])
    """

    def __init__(
        self,
        modalities: Sequence[str],
        dim: int,
        num_classes: int,
        width: int = 64,
        depth: int = 1,
        heads: int = 4,
        dropout: float = 0.1,
    ) -> None:
        super().__init__(modalities, dim, num_classes)
        m = len(self.modalities)
        self.tokens = ModalityTokens(m, dim, width)
        self.blocks = nn.ModuleList(TokenBlock(width, heads, m, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.classify = nn.Linear(width, num_classes)

    def forward(self, embeddings: Embeddings, present: Tensor) -> FusionOutput:
        x = self.tokens(self.stack(embeddings, present))  # [B, M, W]
        mask = attention_mask(present)
        for block in self.blocks:
            x = block(x, mask)
        keep = present.unsqueeze(-1)  # [B, M, 1]
        pooled = torch.where(keep, x, torch.zeros((), dtype=x.dtype)).sum(1)  # [B, W]
        pooled = pooled / present.sum(1, keepdim=True).clamp(min=1)
        return FusionOutput(logits=self.classify(self.norm(pooled)))
