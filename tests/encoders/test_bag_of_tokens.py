"""The hashed bag-of-words text encoder and its stateless tokenizer."""

from __future__ import annotations

import os
import subprocess
import sys

import torch

from omnibind.encoders.builtin.bag_of_tokens import BagOfTokensEncoder, hash_words, words


def test_words_lowercases_and_splits_on_non_alphanumerics() -> None:
    assert words("A red-circle, size_2!") == ["a", "red", "circle", "size", "2"]
    assert words("Ünïcode wörds") == ["ünïcode", "wörds"]
    assert words(" ,.! ") == []


def test_hash_is_stable_across_processes() -> None:
    code = (
        "from omnibind.encoders.builtin.bag_of_tokens import hash_words; "
        "print(hash_words('a red circle', 8192))"
    )
    outputs = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        outputs.add(
            subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True).stdout
        )
    assert outputs == {str(hash_words("a red circle", 8192)) + "\n"}
    assert len(hash_words("a red circle", 8192)) == 3 + 2  # unigrams + bigrams
    assert len(hash_words("a red circle", 8192, bigrams=False)) == 3


def test_word_order_matters_only_through_bigrams() -> None:
    torch.manual_seed(0)
    enc = BagOfTokensEncoder((), bigrams=False).eval()
    out = enc(["red circle", "circle red"])
    torch.testing.assert_close(out[0], out[1])
    enc = BagOfTokensEncoder((), bigrams=True).eval()
    out = enc(["red circle", "circle red"])
    assert not torch.allclose(out[0], out[1])


def test_empty_batch_and_depth_zero() -> None:
    enc = BagOfTokensEncoder((), width=8, depth=0)
    assert enc([]).shape == (0, 8)
    assert torch.equal(enc(["?!"]), torch.zeros(1, 8))
