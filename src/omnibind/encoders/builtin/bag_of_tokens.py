"""``bag_of_tokens``: hashed unigrams and bigrams, averaged in an ``nn.EmbeddingBag``.

The tokenizer is stateless (lower-case, split on anything that is not a letter or digit, hash each token
with CRC-32), so a saved model needs its weights and nothing else. CRC-32, not Python's ``hash()``: the
latter is salted per process, which would give each token a different row after a restart.
"""

from __future__ import annotations

import re
import zlib

import torch
from torch import Tensor, nn

from omnibind.encoders.base import ENCODERS, Encoder, check_rank
from omnibind.errors import ConfigError

_WORD = re.compile(r"[^\W_]+")  # runs of letters and digits, in any script


def words(text: str) -> list[str]:
    """Lower-cased runs of letters and digits: ``"A red-circle!"`` -> ``["a", "red", "circle"]``."""
    return _WORD.findall(text.lower())


def hash_token(token: str, buckets: int, offset: int = 0) -> int:
    """A stable bucket in ``[offset, buckets)`` for ``token`` (the same in every process and platform)."""
    return offset + zlib.crc32(token.encode("utf-8")) % (buckets - offset)


def hash_words(text: str, buckets: int, bigrams: bool = True, offset: int = 0) -> list[int]:
    """Bucket ids of the unigrams (then the bigrams, joined by a space) of ``text``."""
    tokens = words(text)
    if bigrams:
        # A unigram never contains a space, so "a b" cannot collide with a unigram by construction.
        tokens = tokens + [f"{a} {b}" for a, b in zip(tokens, tokens[1:], strict=False)]
    return [hash_token(t, buckets, offset) for t in tokens]


@ENCODERS.register("bag_of_tokens")
class BagOfTokensEncoder(Encoder):
    """Mean of hashed unigram and bigram embeddings, then ``depth`` GELU - Linear layers.

    A text without any letter or digit gets the zero bag (then the layers' biases).

    Args:
        input_shape: ``()`` (text).
        buckets: number of hash buckets (rows of the embedding table).
        width: embedding width and ``output_dim``.
        bigrams: hash adjacent word pairs as well as single words.
        depth: number of GELU - Linear layers after the bag (0: the bag itself is the output).

    Inputs:
        texts: ``list[str]`` of length n.

    Returns:
        ``[n, width]``.

    Example:
        >>> BagOfTokensEncoder(())(["a red circle", "blue square"]).shape
        torch.Size([2, 64])
    """

    kinds = ("text",)

    def __init__(
        self,
        input_shape: tuple[int, ...] = (),
        buckets: int = 8192,
        width: int = 64,
        bigrams: bool = True,
        depth: int = 1,
    ) -> None:
        super().__init__()
        check_rank("bag_of_tokens", input_shape, 0, "() (text)")
        if buckets < 2:
            raise ConfigError(f"encoder 'bag_of_tokens' needs buckets >= 2, got {buckets}")
        self.buckets = buckets
        self.bigrams = bigrams
        self.bag = nn.EmbeddingBag(buckets, width, mode="mean")
        layers: list[nn.Module] = []
        for _ in range(depth):
            layers += [nn.GELU(), nn.Linear(width, width)]
        self.head = nn.Sequential(*layers)
        self.output_dim = width

    def forward(self, texts: list[str]) -> Tensor:
        if not texts:
            return self.head(self.bag.weight.new_zeros(0, self.output_dim))
        ids = [hash_words(t, self.buckets, self.bigrams) for t in texts]
        device = self.bag.weight.device
        flat = torch.tensor([i for row in ids for i in row], dtype=torch.long, device=device)
        lengths = torch.tensor([0] + [len(row) for row in ids[:-1]], dtype=torch.long)
        offsets = lengths.cumsum(0).to(device)  # start of each text's ids in `flat`
        return self.head(self.bag(flat, offsets))  # [n, width]
