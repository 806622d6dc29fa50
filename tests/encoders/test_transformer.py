"""The tiny text transformer."""

from __future__ import annotations

import pytest
import torch

from omnibind.encoders.builtin.transformer import TransformerEncoder
from omnibind.errors import ConfigError


def test_token_ids_start_pad_and_cut() -> None:
    enc = TransformerEncoder((), max_tokens=4)
    ids = enc.token_ids(["a b c d e", "", "x"])
    assert ids.shape == (3, 4)
    assert ids[:, 0].tolist() == [1, 1, 1]
    assert (ids[0] >= 2).sum() == 3  # cut to max_tokens - 1 words
    assert ids[1, 1:].tolist() == [0, 0, 0]
    assert (ids[ids > 1] < enc.buckets).all()


def test_word_order_matters() -> None:
    torch.manual_seed(0)
    enc = TransformerEncoder(()).eval()
    out = enc(["red circle", "circle red"])
    assert not torch.allclose(out[0], out[1])


def test_words_past_max_tokens_are_ignored() -> None:
    enc = TransformerEncoder((), max_tokens=3).eval()
    out = enc(["a b c", "a b"])
    torch.testing.assert_close(out[0], out[1])


def test_heads_must_divide_width() -> None:
    with pytest.raises(ConfigError, match="heads"):
        TransformerEncoder((), width=30, heads=4)
