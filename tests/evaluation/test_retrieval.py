import math

import numpy as np
import pytest
import torch

from omnibind.data.sources import FactSpec
from omnibind.evaluation.retrieval import (
    counting_facts,
    evaluate_retrieval,
    joint_scores,
    rank_metrics,
    relevance_matrix,
    retrieval_matrix,
)

# ---------------------------------------------------------------- rank_metrics

SCORES = torch.tensor(
    [
        [0.9, 0.5, 0.1, 0.3],  # relevant: 1 -> rank 2
        [0.2, 0.8, 0.8, 0.1],  # relevant: 2, tied with non-relevant 1 -> optimistic 1, pessimistic 2
        [0.1, 0.2, 0.3, 0.4],  # relevant: 0 and 2, best is 2 (0.3) -> rank 2
        [0.5, 0.5, 0.5, 0.5],  # nothing relevant -> excluded
    ]
)
RELEVANT = torch.tensor(
    [
        [False, True, False, False],
        [False, False, True, False],
        [True, False, True, False],
        [False, False, False, False],
    ]
)


def test_rank_metrics_hand_computed_optimistic():
    m = rank_metrics(SCORES, RELEVANT, ks=(1, 2), ties="optimistic")
    assert m["n"] == 3
    assert m["r@1"] == pytest.approx(1 / 3)
    assert m["r@2"] == pytest.approx(1.0)
    assert m["mrr"] == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)
    assert m["median_rank"] == 2.0
    assert set(m) == {"r@1", "r@2", "mrr", "median_rank", "n"}


def test_rank_metrics_pessimistic_ties():
    m = rank_metrics(SCORES, RELEVANT, ks=(1, 2), ties="pessimistic")
    assert m["r@1"] == 0.0
    assert m["mrr"] == pytest.approx(0.5)


def test_rank_metrics_chunking_gives_same_result():
    assert rank_metrics(SCORES, RELEVANT, chunk_size=1) == rank_metrics(SCORES, RELEVANT)


def test_rank_metrics_default_keys_and_even_median():
    m = rank_metrics(torch.tensor([[0.9, 0.1], [0.8, 0.2]]), torch.eye(2, dtype=torch.bool))
    assert set(m) == {"r@1", "r@5", "r@10", "mrr", "median_rank", "n"}
    assert m["median_rank"] == 1.5  # ranks 1 and 2
    assert m["r@5"] == 1.0


def test_rank_metrics_no_relevant_is_nan():
    m = rank_metrics(torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.bool))
    assert m["n"] == 0 and math.isnan(m["r@1"]) and math.isnan(m["mrr"])


def test_rank_metrics_shape_mismatch():
    with pytest.raises(ValueError, match="shape"):
        rank_metrics(torch.zeros(2, 3), torch.zeros(3, 2, dtype=torch.bool))


# ---------------------------------------------------------------- relevance

IDS = ["i0", "i1", "i2", "i3"]
FACTS = [
    {"colour": "red", "shape": "circle", "secret": 1},
    {"colour": "red", "shape": "square", "secret": 2},
    {"colour": "blue", "shape": "circle", "secret": 1},
    {"colour": "red", "shape": "circle", "secret": 2},
]
SPECS = {
    "colour": FactSpec(carriers=["image", "audio", "text"]),
    "shape": FactSpec(carriers=["image", "text"]),
    "secret": FactSpec(carriers=["image", "audio", "text"], joint=True, owner="text"),
}
ALL = [0, 1, 2, 3]


def _rel(query_mods, target, mode="facts", labels=None, facts=FACTS, specs=SPECS):
    return relevance_matrix(ALL, ALL, query_mods, target, mode, IDS, labels, facts, specs)


def test_relevance_item_mode():
    r = relevance_matrix([0, 1], [0, 1, 2], ["image"], "text", "item", IDS)
    assert r.tolist() == [[True, False, False], [False, True, False]]


def test_relevance_label_mode_none_label_matches_only_itself():
    r = relevance_matrix([0, 3], ALL, ["image"], "text", "label", IDS, labels=[0, 1, 0, None])
    assert r.tolist() == [[True, False, True, False], [False, False, False, True]]


def test_non_joint_fact_needs_a_query_carrier():
    # audio carries colour but not shape; the joint fact belongs to text, not image
    assert counting_facts(["audio"], "image", FACTS, SPECS) == ("colour",)
    assert _rel(["audio"], "image")[0].tolist() == [True, True, False, True]


def test_joint_fact_needs_owner_target_and_all_other_carriers():
    assert counting_facts(["image"], "text", FACTS, SPECS) == ("colour", "shape")
    assert _rel(["image"], "text")[0].tolist() == [True, False, False, True]
    assert counting_facts(["image", "audio"], "text", FACTS, SPECS) == ("colour", "secret", "shape")
    r = _rel(["image", "audio"], "text")
    assert r[0].tolist() == [True, False, False, False]  # item 3 differs in the joint fact
    assert r[3].tolist() == [False, False, False, True]
    # the joint fact's owner as a query does not make it count
    assert "secret" not in counting_facts(["text", "audio"], "image", FACTS, SPECS)


def test_no_counting_fact_falls_back_to_item():
    assert counting_facts(["tabular"], "image", FACTS, SPECS) == ()
    assert torch.equal(_rel(["tabular"], "image"), torch.eye(4, dtype=torch.bool))


def test_without_specs_every_fact_counts():
    facts = [{"colour": "red"}, {"colour": "red", "shape": "x"}, {"colour": "blue"}, None]
    assert counting_facts(["a"], "b", facts, None) == ("colour", "shape")
    r = _rel(["a"], "b", facts=facts, specs=None)
    # a fact absent from an item is unknown: that item is relevant only to itself
    assert torch.equal(r, torch.eye(4, dtype=torch.bool))
    r = _rel(["a"], "b", facts=[{"c": 1}, {"c": 1}, {"c": 2}, {"c": [1, 2]}], specs=None)
    assert r[0].tolist() == [True, True, False, False]


def test_relevance_bad_mode():
    with pytest.raises(ValueError, match="relevance mode"):
        relevance_matrix([0], [0], ["a"], "b", "colour", IDS)
    with pytest.raises(ValueError, match="needs labels"):
        relevance_matrix([0], [0], ["a"], "b", "label", IDS)


# ---------------------------------------------------------------- joint_scores


def test_joint_scores_sum_and_mip_hand_computed():
    q = [torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, 4.0]])]
    t = torch.tensor([[5.0, 6.0]])
    assert joint_scores(q, t, "sum").item() == pytest.approx(17 + 39)
    assert joint_scores(q, t, "mip").item() == pytest.approx(1 * 3 * 5 + 2 * 4 * 6)


def test_joint_scores_single_modality_is_dot_product():
    g = torch.Generator().manual_seed(0)
    q, t = torch.randn(5, 8, generator=g), torch.randn(7, 8, generator=g)
    for similarity in ("sum", "mip"):
        assert torch.allclose(joint_scores([q], t, similarity), q @ t.T)
    with pytest.raises(ValueError, match="similarity"):
        joint_scores([q], t, "max")


# ---------------------------------------------------------------- evaluate_retrieval


def _one_hot_set(n=6, d=8, names=("a", "b", "c")):
    """Every modality of item i is the same one-hot vector: retrieval is perfect for sum and mip."""
    base = torch.eye(d)[torch.randperm(d, generator=torch.Generator().manual_seed(1))[:n]]  # [n, d]
    return {m: base.clone() for m in names}, torch.ones(n, len(names), dtype=torch.bool)


def test_perfect_retrieval_all_pairs_and_joint():
    emb, present = _one_hot_set()
    ids = [f"x{i}" for i in range(6)]
    for similarity in ("sum", "mip"):
        out = evaluate_retrieval(emb, present, ids, similarity=similarity)
        expected = ["a->b", "a->c", "b->a", "b->c", "c->a", "c->b", "b+c->a", "a+c->b", "a+b->c"]
        assert list(out) == expected
        for metrics in out.values():
            assert metrics["r@1"] == 1.0 and metrics["mrr"] == 1.0 and metrics["median_rank"] == 1.0
            assert metrics["n"] == 6


def test_joint_flags():
    emb, present = _one_hot_set()
    ids = list(range(6))
    assert not any("+" in k for k in evaluate_retrieval(emb, present, ids, joint=False))
    assert len(evaluate_retrieval(emb, present, ids, max_joint=1)) == 6
    emb4, present4 = _one_hot_set(names=("a", "b", "c", "d"))
    keys = list(evaluate_retrieval(emb4, present4, ids, max_joint=2))
    assert "b+c->a" in keys and "b+c+d->a" not in keys
    assert "b+c+d->a" in evaluate_retrieval(emb4, present4, ids)


def test_shuffled_targets_and_label_relevance():
    emb, present = _one_hot_set()
    ids = list(range(6))
    emb["b"] = emb["b"][torch.tensor([1, 0, 3, 2, 5, 4])]  # swap within pairs
    out = evaluate_retrieval(emb, present, ids, relevance="item", joint=False, ties="optimistic")
    assert out["a->b"]["r@1"] == 0.0 and out["a->b"]["median_rank"] == 2.0
    # pessimistic (default): the 4 other targets tie with the relevant one at 0 and rank above it
    out = evaluate_retrieval(emb, present, ids, relevance="item", joint=False)
    assert out["a->b"]["r@1"] == 0.0 and out["a->b"]["median_rank"] == 6.0
    assert out["a->c"]["r@1"] == 1.0
    labels = [0, 0, 1, 1, 2, 2]  # the swaps stay within a label
    out = evaluate_retrieval(emb, present, ids, labels=labels, joint=False)  # auto -> label
    assert out["a->b"]["r@1"] == 1.0


def test_missing_rows_are_excluded():
    emb, present = _one_hot_set()
    present[0, 1] = False  # item 0 has no b
    emb["b"][0] = 0.0
    present[5, 0] = False  # item 5 has no a
    emb["a"][5] = 0.0
    out = evaluate_retrieval(emb, present, list(range(6)), relevance="item")
    assert out["a->b"]["n"] == 4  # queries 0..4 have a; query 0's own b is missing
    assert out["b->a"]["n"] == 4
    assert out["a->c"]["n"] == 5 and out["c->a"]["n"] == 5
    assert out["a+c->b"]["n"] == 4
    assert all(m["r@1"] == 1.0 for m in out.values())


def test_combination_without_queries_is_skipped():
    emb, present = _one_hot_set()
    present[:, 2] = False
    out = evaluate_retrieval(emb, present, list(range(6)))
    assert list(out) == ["a->b", "b->a"]


def test_auto_uses_facts_with_specs():
    emb, present = _one_hot_set(n=4, names=("image", "audio", "text"))
    out = evaluate_retrieval(emb, present, IDS, facts=FACTS, fact_specs=SPECS, joint=True)
    assert out["audio->image"]["r@1"] == 1.0
    assert out["image+audio->text"]["n"] == 4


def test_chunked_evaluation_large():
    g = torch.Generator().manual_seed(0)
    z = torch.nn.functional.normalize(torch.randn(2500, 32, generator=g), dim=1)
    out = evaluate_retrieval({"a": z, "b": z.clone()}, torch.ones(2500, 2, dtype=torch.bool), range(2500))
    assert out["a->b"]["r@1"] == 1.0 and out["a->b"]["n"] == 2500


def test_retrieval_matrix():
    metrics = {"a->b": {"r@1": 0.5}, "b->a": {"r@1": 0.25}, "a+b->c": {"r@1": 1.0}}
    queries, targets, table = retrieval_matrix(metrics)
    assert queries == ["a", "b", "a+b"] and targets == ["a", "b", "c"]
    assert table[0, 1] == 0.5 and table[1, 0] == 0.25 and table[2, 2] == 1.0
    assert np.isnan(table[0, 0]) and np.isnan(table[0, 2])


def test_mean_rank_variance_by_hand() -> None:
    from omnibind.evaluation.retrieval import mean_rank_variance

    # item 0: ranks 1, 3 -> variance 1; item 1: ranks 2, 2, 5 -> mean 3, variance (1 + 1 + 4) / 3 = 2;
    # item 2: one view, left out; item 3: ranks 4 and 0 (nothing relevant) -> one ranked view, left out
    ranks = torch.tensor([1, 3, 2, 2, 5, 7, 4, 0])
    groups = torch.tensor([0, 0, 1, 1, 1, 2, 3, 3])
    assert mean_rank_variance(ranks, groups) == pytest.approx(1.5)
    assert math.isnan(mean_rank_variance(torch.tensor([1, 2]), torch.tensor([0, 1])))


def test_any_value_of_an_item_is_relevant_and_mrv_is_reported() -> None:
    from omnibind.evaluation.retrieval import evaluate_retrieval

    # items x, y with an image each; x has captions in rows 0 and 2, y in rows 1 and 3
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [0.0, 0.0]])
    caption = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [0.8, 0.6]])
    present = torch.tensor([[1, 1], [1, 1], [0, 1], [0, 1]], dtype=torch.bool)
    out = evaluate_retrieval(
        {"image": image, "caption": caption},
        present,
        ["x", "y", "x", "y"],
        relevance="item",
        groups=torch.tensor([0, 1, 0, 1]),
    )
    # caption->image: queries x1 (rank 1), y1 (1), x2 (rank 2: y's image scores 0.8), y2 (2)
    assert out["caption->image"]["n"] == 4 and out["caption->image"]["r@1"] == 0.5
    assert out["caption->image"]["mrv"] == pytest.approx(0.25)
    # image->caption: x's best caption is its own first one; any of its captions counts
    assert out["image->caption"]["r@1"] == 1.0 and "mrv" not in out["image->caption"]
