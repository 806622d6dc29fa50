"""Modality importance against known answers: hand-made votes (exact values of every formula), then
classifiers trained on builtin:shapes with the task's facts placed by the generator, where the importance
ranking and the per-item categories must recover where the facts are."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from omnibind.config import config_from_dict
from omnibind.data.loading import build_kinds, build_splits
from omnibind.data.synthetic import shapes
from omnibind.evaluation.importance import (
    ablation_importance,
    categorise,
    competition_strength,
    competition_strength_from,
    fused_features,
    importance_report,
    item_categories,
    permutation_importance,
    shapley_importance,
    solved,
)
from omnibind.evaluation.robustness import EmbeddedSet, embed_dataset, random_order
from omnibind.fusion import create_head, list_heads
from omnibind.training.classify import train_classifier
from tests.evaluation.stub_classifier import onehot, stub_classifier, stub_dataset

ZERO = np.zeros(4, dtype=np.float32)


def _mix(strong: int, weak: int) -> np.ndarray:
    """A vote mostly for ``strong`` (0.8) and partly for ``weak`` (0.6): alone, it picks ``strong``."""
    return (0.8 * onehot(strong) + 0.6 * onehot(weak)).astype(np.float32)


def _needs_a_or_both() -> list:
    """20 items solved by ``a`` alone, 20 only by ``a`` and ``b`` together (each alone picks a wrong class);
    classes 1-3 only, so the empty answer (class 0) is always wrong."""
    items = []
    for i in range(20):
        y = 1 + i % 3
        items.append((y, {"a": onehot(y), "b": ZERO, "c": ZERO}))
    for i in range(20):
        y = 1 + i % 3
        y1, y2 = 1 + y % 3, 1 + (y + 1) % 3  # the two other classes
        items.append((y, {"a": _mix(y1, y), "b": _mix(y2, y), "c": ZERO}))
    return items


def _embedded(items: list) -> EmbeddedSet:
    model = stub_classifier()
    return embed_dataset(model, stub_dataset(items))


def test_shapley_and_ablation_by_hand() -> None:
    es = _embedded(_needs_a_or_both())
    # v(S): a -> 0.5, ab -> 1, abc -> 1, ac -> 0.5, everything without a -> 0.
    phi, empty = shapley_importance(es)
    assert empty == 0.0
    assert phi == pytest.approx({"a": 0.75, "b": 0.25, "c": 0.0})
    assert ablation_importance(es) == pytest.approx({"a": 1.0, "b": 0.5, "c": 0.0})
    sampled, _ = shapley_importance(es, samples=40, seed=1)
    assert sum(sampled.values()) == pytest.approx(1.0)  # sampled orders still add up to v(all) - v(empty)
    assert sampled == pytest.approx(phi, abs=0.1)


def test_permutation_shuffles_only_items_that_have_the_modality() -> None:
    classes = 8
    model = stub_classifier(classes=classes)
    items = [(y, {"a": onehot(y, classes)}) for y in range(classes)]
    items += [(3, {"b": onehot(3, classes)})] * 4  # no `a`: never shuffled, always right
    es = embed_dataset(model, stub_dataset(items, classes=classes))
    hits = [int((random_order(classes, 7, 0, k) == torch.arange(classes)).sum()) for k in range(5)]
    expected = 1.0 - (sum(hits) / 5 + 4) / 12
    assert permutation_importance(es, permutations=5, seed=7)["a"] == pytest.approx(expected)
    assert permutation_importance(es, permutations=5, seed=7)["b"] == 0.0  # the same vector everywhere
    with pytest.raises(ValueError, match="permutations"):
        permutation_importance(es, permutations=0)


def test_permutation_keeps_the_marginal_where_ablation_removes_the_modality() -> None:
    # Every item is class 1 and has only `b`, the same vector for all: shuffling changes nothing, removing
    # it leaves the head with its empty answer (class 0).
    es = _embedded([(1, {"b": onehot(1)}) for _ in range(10)])
    assert permutation_importance(es)["b"] == 0.0
    assert ablation_importance(es)["b"] == 1.0


def test_solved_needs_the_true_class_with_confidence() -> None:
    logits = torch.log(
        torch.tensor([[0.9, 0.1, 0.0], [0.5, 0.5, 0.0], [0.6, 0.4, 0.0], [0.1, 0.9, 0.0]]) + 1e-9
    )
    y = torch.tensor([0, 0, 0, 0])
    assert solved(logits, y).tolist() == [True, False, False, False]  # 2/3 by default
    assert solved(logits, y, confidence=0.55).tolist() == [True, False, True, False]
    multi = torch.tensor([[3.0, -3.0], [3.0, 0.2], [3.0, 3.0]])
    assert solved(multi, torch.tensor([[1.0, 0.0]] * 3)).tolist() == [True, False, False]


def test_categorise_applies_each_rule() -> None:
    mods = ("a", "b", "c")

    def row(*solving: str) -> list[bool]:
        sets = [frozenset(s) for s in solving]
        return [frozenset(m for j, m in enumerate(mods) if s >> j & 1) in sets for s in range(8)]

    right = torch.tensor(
        [
            row("a", "ab", "ac", "abc"),  # needs a
            row("a", "b", "c", "ab", "ac", "bc", "abc"),  # any
            row("ab", "abc"),  # combination
            row(),  # none
            row("a", "b", "ab", "ac", "bc", "abc"),  # mixed: a and b alone, not c
            row("a", "bc", "ab", "ac", "abc"),  # mixed: a alone, yet bc without a as well
            row("a", "b", "ab", "abc", "c"),  # any among its own modalities (c is not the item's)
            row("abc"),  # combination of the item's two (c is not its own, so abc means ab)
        ]
    )
    present = torch.ones(8, 3, dtype=torch.bool)
    present[6:, 2] = False
    right[7, 3] = True  # ab solves it; the table row for abc alone is not a subset of {a, b}
    assert categorise(right, present, mods) == [
        "needs a",
        "any",
        "combination",
        "none",
        "mixed",
        "mixed",
        "any",
        "combination",
    ]


def test_item_categories_from_the_heads_answers() -> None:
    items = [
        (1, {"a": onehot(1), "b": ZERO, "c": ZERO}),  # needs a
        (2, {"a": onehot(2), "b": onehot(2), "c": onehot(2)}),  # any
        (3, {"a": _mix(1, 3), "b": _mix(2, 3), "c": ZERO}),  # combination
        (3, {"a": ZERO, "b": ZERO, "c": ZERO}),  # none: the empty answer is class 0
        (1, {"a": onehot(1), "b": onehot(1), "c": onehot(2)}),  # mixed
        (2, {"c": onehot(2)}),  # needs c: its only modality
    ]
    assert item_categories(_embedded(items)) == ["needs a", "any", "combination", "none", "mixed", "needs c"]


def test_report_keys_counts_and_shares() -> None:
    model = stub_classifier()
    data = stub_dataset(_needs_a_or_both())
    report = importance_report(model, data, permutations=2)
    assert set(report) >= {"permutation", "ablation", "shapley", "categories", "items"}
    counts = report["categories"]["counts"]
    assert counts["needs a"] == 20 and counts["combination"] == 20 and sum(counts.values()) == 40
    assert report["categories"]["shares"]["needs a"] == 0.5
    assert report["items"][0] == {"id": "item-0", "category": "needs a"}
    assert all(
        isinstance(v, float) for part in ("permutation", "ablation", "shapley") for v in report[part].values()
    )


def test_competition_strength_is_the_unexplained_share_of_the_unimodal_output() -> None:
    gen = torch.Generator().manual_seed(0)
    uni_fit, uni_test = torch.randn(400, 5, generator=gen), torch.randn(300, 5, generator=gen)
    mix = torch.randn(5, 12, generator=gen)
    carried = competition_strength_from(uni_fit @ mix, uni_fit, uni_test @ mix, uni_test, ridge=1e-3)
    noise = competition_strength_from(
        torch.randn(400, 12, generator=gen),
        uni_fit,
        torch.randn(300, 12, generator=gen),
        uni_test,
        ridge=1e-3,
    )
    assert carried < 1e-4
    assert 0.95 < noise < 1.15
    half = torch.cat([uni_fit[:, :2], torch.randn(400, 3, generator=gen)], 1)
    half_test = torch.cat([uni_test[:, :2], torch.randn(300, 3, generator=gen)], 1)
    assert competition_strength_from(half, uni_fit, half_test, uni_test, ridge=1e-3) == pytest.approx(
        0.6, abs=0.05
    )


@pytest.mark.parametrize("name", list_heads())
def test_fused_features_feed_the_layer_that_makes_the_logits(name: str) -> None:
    model = stub_classifier()
    torch.manual_seed(0)
    model.head = create_head(name, model.modalities, 4, 4).eval()
    es = _embedded(_needs_a_or_both())
    es.model = model
    feats = fused_features(es)
    assert feats.shape[0] == 40 and feats.ndim == 2 and torch.isfinite(feats).all()


def test_competition_strength_end_to_end_on_the_vote_head() -> None:
    model = stub_classifier()
    solo = stub_classifier(modalities=("a",))
    rng = np.random.default_rng(0)
    silent = [
        (int(rng.integers(4)), {"a": rng.normal(size=4).astype(np.float32), "b": ZERO}) for _ in range(80)
    ]
    # With b and c silent, the fused votes are a's own: nothing of the unimodal output is lost.
    assert competition_strength(model, {"a": solo}, stub_dataset(silent), stub_dataset(silent), ridge=1e-6)[
        "a"
    ] == pytest.approx(0.0, abs=1e-6)
    loud = [(y, {**v, "b": rng.normal(size=4).astype(np.float32)}) for y, v in silent]
    strength = competition_strength(
        model, {"a": solo}, stub_dataset(loud), stub_dataset(loud[:40]), ridge=1e-6
    )
    assert strength["a"] > 0.2  # b's votes are mixed into the same four numbers


# --- ground truth on builtin:shapes -------------------------------------------------------------------

IMAGE = {"kind": "image", "size": 16, "encoder": {"name": "conv2d", "width": 8}}
CAPTION = {"kind": "text", "encoder": {"name": "bag_of_tokens", "width": 16, "buckets": 512}}
TABLE = {"kind": "tabular", "columns": ["width", "height", "x", "y"]}


def _train_shapes(tmp: Path, label: str, only: str, modalities: dict, n: int, epochs: int) -> dict:
    source = f"builtin:shapes?n={n}&image_size=16&seconds=0.1" + (f"&only={only}" if only else "")
    raw = {
        "modalities": modalities,
        "data": {"source": source},  # shapes' own split: 10% val, 10% test
        "model": {"dim": 16},
        # Modality dropout trains the head on subsets too, so subset scores are on its training distribution.
        "task": {"type": "classify", "label": label, "head": "late", "modality_dropout": 0.5},
        "train": {
            "epochs": epochs,
            "batch_size": 32,
            "lr": 0.003,
            "warmup_steps": 5,
            "progress": False,
            "threads": 1,
        },
    }
    model = train_classifier(config_from_dict(raw), tmp / "run", evaluate=False).model
    test = build_splits(model.config, build_kinds(model.config), ("test",), fit=False, progress=False)
    return importance_report(model, test.datasets["test"], permutations=3)


def _first(scores: dict[str, float]) -> str | None:
    """The modality a score ranks first: clearly above 0 (0.1) and more than twice the next one."""
    ranked = sorted(scores.items(), key=lambda kv: kv[1], reverse=True)
    (top, best), (_, second) = ranked[0], ranked[1]
    return top if best >= 0.1 and best > 2 * max(second, 0.0) else None


def _check(report: dict, first: str | None, truth: str) -> None:
    for score in ("shapley", "ablation", "permutation"):
        if first is None and score == "permutation":
            continue  # reliance, not necessity: among redundant modalities a head may trust one (docs)
        assert _first(report[score]) == first, (score, report[score])
    assert report["categories"]["shares"][truth] >= 0.9, report["categories"]["counts"]


def test_generator_puts_a_fact_in_the_chosen_modalities_only() -> None:
    data = shapes(n=400, seed=0, only="size:table")
    assert data.facts is not None and data.facts["size"].carriers == ["table"]
    said = [
        ("small" in r.values["caption"].lower()) or ("little" in r.values["caption"].lower())
        for r in data.records
    ]
    truth = [r.facts["size"] == "small" for r in data.records]
    agree = np.mean([a == b for a, b in zip(said, truth, strict=True)])
    assert 0.4 < agree < 0.6  # the caption's size is a coin flip, not the truth
    width = np.array([r.values["table"]["width"] for r in data.records])
    assert ((width > 0.38) == np.array([not t for t in truth])).mean() > 0.95  # the table tells it
    with pytest.raises(ValueError, match="sound"):
        shapes(n=10, only="size:sound")


def test_fact_only_in_the_table_is_found_there(tmp_path: Path) -> None:
    report = _train_shapes(
        tmp_path,
        "size+position",
        "size:table,position:table",
        {"image": IMAGE, "caption": CAPTION, "table": TABLE},
        600,
        6,
    )
    _check(report, "table", "needs table")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("label", "only", "names", "first", "truth"),
    [
        ("colour", "colour:image", ("image", "caption", "table"), "image", "needs image"),
        ("size+position", "", ("image", "table"), None, "any"),
        (
            "size+position",
            "size:image/table,position:image/table",
            ("image", "caption", "table"),
            None,
            "mixed",
        ),
        ("mark+tone", "", ("image", "caption", "table"), None, "combination"),
    ],
    ids=["only-image", "in-all", "in-two-of-three", "joint-mark-tone"],
)
def test_importance_recovers_where_the_facts_are(
    tmp_path: Path, label: str, only: str, names: tuple[str, ...], first: str | None, truth: str
) -> None:
    spec = {"image": IMAGE, "caption": CAPTION, "table": TABLE}
    report = _train_shapes(tmp_path, label, only, {m: spec[m] for m in names}, 1500, 10)
    _check(report, first, truth)
    if truth == "combination":  # both halves of the pair matter, the table not at all
        assert min(report["ablation"]["image"], report["ablation"]["caption"]) > 0.2
        assert abs(report["shapley"]["table"]) < 0.05
