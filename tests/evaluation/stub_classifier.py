"""A classifier whose answers are known in advance, for the robustness and importance tests.

Modalities ``a``, ``b``, ``c`` are precomputed vectors of width ``D = C`` (kind ``embedding``); the encoders
are set to the identity and there is no projection, so an item's embedding is its value, L2-normalised.
The head (:class:`VoteHead`) adds ``10 x`` each present modality's vector as votes over the ``C``
classes; with nothing present it answers class 0 (its bias). So an item whose ``a`` is the one-hot of its
class is solved by ``a``, a zero vector says nothing, and a missing modality casts no vote.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from omnibind.config import config_from_dict
from omnibind.data.dataset import Dataset, prepare_dataset
from omnibind.data.kinds import create_kind
from omnibind.data.record import Record
from omnibind.fusion.base import FusionHead, FusionOutput
from omnibind.fusion.classifier import Classifier
from omnibind.types import Embeddings

MODALITIES = ("a", "b", "c")


class VoteHead(FusionHead):
    """``logits = 10 * sum of the present embeddings + bias``; the bias (1 for class 0) decides alone when
    nothing is present."""

    def __init__(self, modalities: tuple[str, ...], dim: int, num_classes: int) -> None:
        super().__init__(modalities, dim, num_classes)
        self.scale = nn.Linear(num_classes, num_classes)  # the layer that makes the logits
        with torch.no_grad():
            self.scale.weight.copy_(10 * torch.eye(num_classes))
            self.scale.bias.zero_()
            self.scale.bias[0] = 1.0

    def forward(self, embeddings: Embeddings, present: Tensor) -> FusionOutput:
        z = self.stack(embeddings, present)  # [B, M, D], absent rows zero
        return FusionOutput(logits=self.scale(z.sum(dim=1)))


def stub_classifier(
    classes: int = 4,
    missing: list[dict] | None = None,
    label: str = "label",
    modalities: tuple[str, ...] = MODALITIES,
) -> Classifier:
    """A :class:`Classifier` over ``modalities`` with identity encoders and a :class:`VoteHead`."""
    raw = {
        "modalities": {
            m: {"kind": "embedding", "dim": classes, "encoder": {"name": "linear", "width": classes}}
            for m in modalities
        },
        "data": {"source": "items.jsonl", "missing": missing or []},
        "model": {"dim": classes, "projection": "none"},
        "task": {"type": "classify", "label": label, "head": "late"},
    }
    cfg = config_from_dict(raw)
    assert cfg.task is not None
    cfg.task.classes = [str(k) for k in range(classes)]
    model = Classifier(cfg)
    with torch.no_grad():
        for m in modalities:
            layer = model.encoder.encoders[m].linear
            layer.weight.copy_(torch.eye(classes))
            layer.bias.zero_()
    model.head = VoteHead(modalities, classes, classes)
    return model.eval()


def onehot(k: int, classes: int = 4) -> np.ndarray:
    out = np.zeros(classes, dtype=np.float32)
    out[k] = 1.0
    return out


def stub_dataset(items: list[tuple[int, dict[str, np.ndarray]]], classes: int = 4) -> Dataset:
    """A dataset of ``(label, {modality: vector})`` items (absent modalities: no key)."""
    records = [
        Record(id=f"item-{i}", values=values, label=label, source="stub")
        for i, (label, values) in enumerate(items)
    ]
    kinds = {m: create_kind("embedding", {"dim": classes}) for m in MODALITIES}
    dataset, _ = prepare_dataset(records, kinds, progress=False)
    return dataset
