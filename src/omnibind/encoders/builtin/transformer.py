"""``transformer``: a tiny transformer over hashed words, mean-pooled over the real tokens."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from omnibind.encoders.base import ENCODERS, Encoder, check_rank
from omnibind.encoders.builtin.bag_of_tokens import hash_words
from omnibind.errors import ConfigError

_PAD, _START = 0, 1  # reserved ids; words hash into [2, buckets)


@ENCODERS.register("transformer")
class TransformerEncoder(Encoder):
    """A small pre-norm transformer over hashed words (the ``bag_of_tokens`` tokenizer, no bigrams).

    Every text becomes a start token plus its first ``max_tokens - 1`` words, padded to exactly
    ``max_tokens``: a fixed length means a text runs through the same shapes whatever its batch holds,
    and the start token means no row is all padding. The output is the mean over non-padding positions.

    Args:
        input_shape: ``()`` (text).
        buckets: number of hash buckets (2 ids are reserved for padding and start).
        width: model width and ``output_dim``.
        depth: number of transformer layers.
        heads: attention heads (must divide ``width``).
        max_tokens: sequence length, start token included; longer texts are cut.
        dropout: dropout inside the layers while training.

    Inputs:
        texts: ``list[str]`` of length n.

    Returns:
        ``[n, width]``.

    Example:
        >>> TransformerEncoder(())(["a red circle", "blue square"]).shape
        torch.Size([2, 64])
    """

    kinds = ("text",)

    def __init__(
        self,
        input_shape: tuple[int, ...] = (),
        buckets: int = 8192,
        width: int = 64,
        depth: int = 2,
        heads: int = 4,
        max_tokens: int = 32,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        check_rank("transformer", input_shape, 0, "() (text)")
        if width % heads != 0:
            raise ConfigError(f"encoder 'transformer': heads ({heads}) must divide width ({width})")
        if buckets < 3 or max_tokens < 2:
            raise ConfigError("encoder 'transformer' needs buckets >= 3 and max_tokens >= 2")
        self.buckets = buckets
        self.max_tokens = max_tokens
        self.tokens = nn.Embedding(buckets, width, padding_idx=_PAD)
        self.positions = nn.Parameter(torch.randn(max_tokens, width) * 0.02)
        layer = nn.TransformerEncoderLayer(
            width, heads, 4 * width, dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.layers = nn.TransformerEncoder(
            layer, depth, norm=nn.LayerNorm(width), enable_nested_tensor=False
        )
        self.output_dim = width

    def token_ids(self, texts: list[str]) -> Tensor:
        """``[n, max_tokens]`` ids: start, hashed words, padding."""
        ids = torch.full((len(texts), self.max_tokens), _PAD, dtype=torch.long)
        for row, text in enumerate(texts):
            words = [_START, *hash_words(text, self.buckets, bigrams=False, offset=2)][: self.max_tokens]
            ids[row, : len(words)] = torch.tensor(words)
        return ids

    def forward(self, texts: list[str]) -> Tensor:
        ids = self.token_ids(texts).to(self.positions.device)  # [n, T]
        pad = ids == _PAD  # [n, T]
        h = self.layers(self.tokens(ids) + self.positions, src_key_padding_mask=pad)  # [n, T, width]
        keep = (~pad).unsqueeze(-1).to(h.dtype)  # [n, T, 1]
        return (h * keep).sum(1) / keep.sum(1)  # [n, width]
