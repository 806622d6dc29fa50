"""Attention fusion: a small transformer over one token per modality plus a CLS token, absent tokens masked.

Each present modality becomes a token (its embedding, projected, plus a learned modality embedding); a
learned CLS token reads them through masked self-attention and the class comes from the CLS output. A
present token never attends to an absent one, so an absent modality has no effect at all (not the effect
of a zero vector). Cost per item: O(M) tokens, O(M^2) attention scores of width ``heads`` (tiny for the
M <= 16 modalities of a run).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from omnibind.errors import ConfigError
from omnibind.fusion.base import FUSION_HEADS, FusionHead, FusionOutput
from omnibind.types import Embeddings


def attention_mask(token_present: Tensor) -> Tensor:
    """``bool[B, 1, T, T]`` for ``scaled_dot_product_attention``: query i may read key j iff j is present.

    Every token may also read itself, so no row is fully masked (that would give NaN) even for an absent
    token; absent tokens' outputs are never read by present ones, so this changes nothing that matters.
    """
    t = token_present.shape[1]
    eye = torch.eye(t, dtype=torch.bool, device=token_present.device)  # [T, T]
    return (token_present[:, None, :] | eye).unsqueeze(1)  # [B, 1, T, T]


class TokenBlock(nn.Module):
    """A pre-norm transformer block over ``T`` tokens whose feed-forward part can be per token position.

    Args:
        width: token width.
        heads: attention heads (``width`` must be divisible by it).
        ffn_experts: 1 for one shared feed-forward network, or ``T``: token ``t`` uses network ``t``
            (modality-specific parameters, SkillNet / Mixture-of-Transformers style, no router).
        dropout: dropout on the attention and feed-forward outputs.
    """

    def __init__(self, width: int, heads: int, ffn_experts: int = 1, dropout: float = 0.1) -> None:
        super().__init__()
        if width % heads:
            raise ConfigError(f"attention width {width} is not divisible by heads = {heads}")
        self.heads = heads
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        self.norm2 = nn.ModuleList(nn.LayerNorm(width) for _ in range(ffn_experts))
        self.ffn = nn.ModuleList(
            nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))
            for _ in range(ffn_experts)
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """``x [B, T, W]``, ``mask bool[B, 1, T, T]`` (see :func:`attention_mask`) -> ``[B, T, W]``."""
        b, t, w = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # [B, H, T, W/H]
        x = x + self.drop(self.out(a.transpose(1, 2).reshape(b, t, w)))
        if len(self.ffn) == 1:
            return x + self.drop(self.ffn[0](self.norm2[0](x)))
        if len(self.ffn) != t:
            raise ValueError(f"block has {len(self.ffn)} feed-forward experts but got {t} tokens")
        # One expert per token position: O(T) small matmuls on [B, W] each.
        y = torch.stack([f(n(x[:, i])) for i, (n, f) in enumerate(zip(self.norm2, self.ffn, strict=True))], 1)
        return x + self.drop(y)


class ModalityTokens(nn.Module):
    """``[B, M, D]`` -> ``[B, M, W]`` tokens: a shared projection plus a learned modality embedding."""

    def __init__(self, num_modalities: int, dim: int, width: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, width)
        self.modality = nn.Parameter(torch.randn(num_modalities, width) * 0.02)

    def forward(self, z: Tensor) -> Tensor:
        return self.proj(z) + self.modality  # [B, M, W]


@FUSION_HEADS.register("attention")
class AttentionFusion(FusionHead):
    """Masked self-attention over a CLS token and one token per present modality.

    Args:
        modalities: the modality names (column order of ``present``).
        dim: width D of the embeddings.
        num_classes: number of classes C.
        width: token width inside the head.
        depth: number of transformer blocks.
        heads: attention heads per block.
        dropout: dropout inside the blocks.

    Inputs:
        embeddings: ``{modality: Tensor[B, D]}``; present: ``bool[B, M]``.

    Returns:
        :class:`FusionOutput` with ``logits [B, C]`` from the CLS token.

    Example:
        >>> head = AttentionFusion(["image", "audio"], dim=8, num_classes=3, width=16)
        >>> z = {"image": torch.randn(2, 8), "audio": torch.randn(2, 8)}
        >>> head(z, torch.tensor([[1, 0], [1, 1]], dtype=torch.bool)).logits.shape
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
        self.tokens = ModalityTokens(len(self.modalities), dim, width)
        self.cls = nn.Parameter(torch.randn(width) * 0.02)
        self.blocks = nn.ModuleList(TokenBlock(width, heads, 1, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.classify = nn.Linear(width, num_classes)

    def forward(self, embeddings: Embeddings, present: Tensor) -> FusionOutput:
        z = self.stack(embeddings, present)  # [B, M, D]
        b = z.shape[0]
        x = torch.cat([self.cls.expand(b, 1, -1), self.tokens(z)], dim=1)  # [B, 1 + M, W]
        token_present = torch.cat([present.new_ones(b, 1), present], dim=1)  # [B, 1 + M]: CLS always
        mask = attention_mask(token_present)
        for block in self.blocks:
            x = block(x, mask)
        return FusionOutput(logits=self.classify(self.norm(x[:, 0])))
