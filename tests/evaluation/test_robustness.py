"""MCAR curves and the MNAR test against answers known in advance (a vote head over one-hot modalities),
their agreement with the subset scores, determinism, every head's answer with nothing present, and the
robustness report."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from omnibind.errors import OmnibindError
from omnibind.evaluation.classification import evaluate_classifier
from omnibind.evaluation.robustness import (
    RATES,
    embed_dataset,
    flipped_class,
    mcar_curves,
    mnar_setting,
    mnar_test,
    robustness_report,
)
from omnibind.fusion import create_head, list_heads
from tests.evaluation.stub_classifier import onehot, stub_classifier, stub_dataset

ZERO = np.zeros(4, dtype=np.float32)


def _needs_a(per_class: int = 10) -> list[tuple[int, dict[str, np.ndarray]]]:
    """Items solved by ``a`` alone (its one-hot); ``b`` and ``c`` present but silent (zero vectors)."""
    return [(y, {"a": onehot(y), "b": ZERO, "c": ZERO}) for y in range(4) for _ in range(per_class)]


def test_mcar_drops_the_right_share_and_lands_on_the_empty_answer() -> None:
    model, data = stub_classifier(), stub_dataset(_needs_a())
    curves = mcar_curves(model, data)
    assert set(curves) == {"a", "b", "c"}
    a = curves["a"]
    assert [p["rate"] for p in a] == list(RATES)
    assert [p["dropped"] for p in a] == [int(round(r * 40)) for r in RATES]
    assert a[0]["accuracy"] == 1.0 and a[0]["n"] == 40
    # Every item has only `a` to go on: without it the head answers class 0, right for the 10 zeros.
    assert a[-1]["accuracy"] == pytest.approx(0.25)
    accs = [p["accuracy"] for p in a]
    assert all(x >= y for x, y in zip(accs, accs[1:], strict=False))  # nested drops: never better
    assert all(p["accuracy"] == 1.0 for p in curves["b"] + curves["c"])  # silent modalities cost nothing


def test_rate_zero_is_the_clean_score_and_rate_one_the_subset_without_the_modality() -> None:
    rng = np.random.default_rng(0)
    items = [
        (int(rng.integers(4)), {m: rng.normal(size=4).astype(np.float32) for m in "abc"}) for _ in range(60)
    ]
    model, data = stub_classifier(), stub_dataset(items)
    scored = evaluate_classifier(model, data)
    curves = mcar_curves(model, data, rates=(0.0, 1.0))
    for m in "abc":
        assert {k: curves[m][0][k] for k in ("accuracy", "macro_f1", "auroc")} == {
            k: scored["overall"][k] for k in ("accuracy", "macro_f1", "auroc")
        }
        rest = "+".join(x for x in "abc" if x != m)
        assert {k: curves[m][1][k] for k in ("accuracy", "macro_f1", "auroc")} == {
            k: scored["subsets"][rest][k] for k in ("accuracy", "macro_f1", "auroc")
        }


def test_mcar_is_deterministic_for_a_seed_and_validates_rates() -> None:
    rng = np.random.default_rng(1)
    items = [
        (int(rng.integers(4)), {m: rng.normal(size=4).astype(np.float32) for m in "abc"}) for _ in range(80)
    ]
    model, data = stub_classifier(), stub_dataset(items)
    assert mcar_curves(model, data, seed=3) == mcar_curves(model, data, seed=3)
    assert mcar_curves(model, data, seed=3) != mcar_curves(model, data, seed=4)
    with pytest.raises(ValueError, match="rates must be in"):
        mcar_curves(model, data, rates=(0.5, 1.5))


@pytest.mark.parametrize("name", list_heads())
def test_every_head_answers_a_constant_with_nothing_present(name: str) -> None:
    torch.manual_seed(0)
    head = create_head(name, ("x", "y"), 8, 5).eval()
    nothing = torch.zeros(6, 2, dtype=torch.bool)
    one = head({m: torch.randn(6, 8) for m in ("x", "y")}, nothing).logits
    two = head({m: torch.randn(6, 8) for m in ("x", "y")}, nothing).logits
    assert torch.isfinite(one).all()
    assert torch.allclose(one, one[:1].expand_as(one)) and torch.allclose(one, two)


def test_mnar_flipped_to_another_class_costs_what_the_shortcut_predicts() -> None:
    model, data = stub_classifier(), stub_dataset(_needs_a())
    out = mnar_test(model, data, "a", rate=0.5, flipped_label="1")
    # 5 of the 10 items of class 1 lose `a`; the head then says class 0 for them.
    assert out["dropped"] == 5
    assert out["clean"]["accuracy"] == 1.0
    assert out["flipped"]["accuracy"] == pytest.approx(35 / 40)
    assert out["drop"] == pytest.approx(5 / 40)
    assert out["affected"] == {"clean_accuracy": 1.0, "flipped_accuracy": 0.0}
    # Moved to class 0, the missingness agrees with the head's empty answer: nothing is lost.
    assert mnar_test(model, data, "a", rate=1.0, flipped_label="0")["drop"] == 0.0
    with pytest.raises(OmnibindError, match="not a class"):
        mnar_test(model, data, "a", 0.5, "7")
    with pytest.raises(OmnibindError, match="unknown modality"):
        mnar_test(model, data, "z", 0.5, "1")


def test_report_has_subsets_and_mcar_and_mnar_only_with_a_training_setting() -> None:
    data = stub_dataset(_needs_a(5))
    plain = robustness_report(stub_classifier(), data, rates=(0.0, 0.5, 1.0))
    assert set(plain) == {"overall", "subsets", "mcar"}
    assert len(plain["subsets"]) == 7 and len(plain["mcar"]["a"]) == 3

    setting = [{"modality": "a", "rate": 0.8, "value": 2, "splits": ["train"]}]
    model = stub_classifier(missing=setting)
    report = robustness_report(model, data, rates=(0.0,))
    mnar = report["mnar"]
    assert mnar["trained_label"] == "2" and mnar["flipped_label"] == "3" and mnar["rate"] == 0.8
    assert mnar == {
        **mnar_test(model, data, "a", 0.8, "3", embedded=embed_dataset(model, data)),
        "trained_label": "2",
    }
    # A setting on another field than the task's label, or test-only, is not a training MNAR setting.
    assert mnar_setting(stub_classifier(missing=[{**setting[0], "field": "speaker"}]).config) is None
    assert mnar_setting(stub_classifier(missing=[{**setting[0], "splits": ["test"]}]).config) is None


def test_flipped_class_is_the_next_one_cyclically() -> None:
    assert flipped_class(["0", "1", "2"], "1") == "2"
    assert flipped_class(["0", "1", "2"], "2") == "0"
    with pytest.raises(OmnibindError, match="at least two classes"):
        flipped_class(["0"], "0")
