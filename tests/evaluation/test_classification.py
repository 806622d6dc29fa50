"""Classification metrics against hand-computed values, and the subset list."""

from __future__ import annotations

import pytest
import torch

from omnibind.evaluation.classification import accuracy, auroc, classification_metrics, macro_f1, subsets


def test_accuracy_f1_and_auroc_by_hand() -> None:
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 3.0, 0.0], [1.0, 0.0, 0.0]])
    y = torch.tensor([0, 1, 2, 0])
    assert accuracy(logits, y) == 0.75
    # class 0: tp 2 -> F1 1; class 1: tp 1 fp 1 -> 2/3; class 2: fn 1 -> 0
    assert macro_f1(logits.argmax(1), y, 3) == pytest.approx((1 + 2 / 3 + 0) / 3)
    scores = torch.tensor([[0.9], [0.8], [0.3], [0.1]])
    assert auroc(scores, torch.tensor([[True], [False], [True], [False]])) == pytest.approx(0.75)
    assert auroc(scores, torch.ones(4, 1, dtype=torch.bool)) is None  # undefined with one class
    m = classification_metrics(logits, y)
    assert m["n"] == 4 and m["accuracy"] == 0.75


def test_multilabel_and_empty() -> None:
    logits = torch.tensor([[1.0, -1.0], [1.0, 1.0]])
    assert classification_metrics(logits, torch.tensor([[1.0, 0.0], [1.0, 0.0]]))["accuracy"] == 0.5
    assert classification_metrics(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))["accuracy"] is None


def test_subsets_are_every_non_empty_combination() -> None:
    assert subsets(("a", "b", "c")) == [
        ("a",),
        ("b",),
        ("c",),
        ("a", "b"),
        ("a", "c"),
        ("b", "c"),
        ("a", "b", "c"),
    ]
