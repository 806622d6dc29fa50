"""Grouped batches (train.group_by): the order is a permutation, batches hold one group (or two), the share
of grouped batches is respected, and a missing field is a clear error."""

from __future__ import annotations

import pytest
import torch

from omnibind.data.record import Record
from omnibind.data.sampler import group_keys, grouped_order
from omnibind.data.synthetic import shapes
from omnibind.errors import DataError


def _groups_per_batch(keys: list, order: torch.Tensor, batch_size: int) -> list[int]:
    n_full = len(order) // batch_size
    return [len({keys[i] for i in order[b * batch_size : (b + 1) * batch_size].tolist()}) for b in range(n_full)]


def _keys(n: int, n_groups: int, seed: int = 0) -> list[int]:
    return torch.randint(0, n_groups, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def test_order_is_a_permutation_and_depends_only_on_the_generator() -> None:
    keys = _keys(1003, 7)
    a = grouped_order(keys, 64, torch.Generator().manual_seed(3), share=0.6)
    b = grouped_order(keys, 64, torch.Generator().manual_seed(3), share=0.6)
    c = grouped_order(keys, 64, torch.Generator().manual_seed(4), share=0.6)
    assert sorted(a.tolist()) == list(range(1003))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_full_share_batches_hold_one_group_or_two_neighbours() -> None:
    keys = _keys(3200, 16)  # ~200 items per group, batches of 128
    order = grouped_order(keys, 128, torch.Generator().manual_seed(0))
    counts = _groups_per_batch(keys, order, 128)
    assert max(counts) <= 2 and counts.count(1) >= 5
    # a random order mixes nearly every group into every batch
    assert min(_groups_per_batch(keys, torch.randperm(3200), 128)) >= 12


def test_share_sets_the_number_of_grouped_batches() -> None:
    keys = _keys(3200, 16)
    order = grouped_order(keys, 128, torch.Generator().manual_seed(1), share=0.4)
    counts = _groups_per_batch(keys, order, 128)
    assert sum(c <= 2 for c in counts) == round(0.4 * 25)
    assert min(_groups_per_batch(keys, grouped_order(keys, 128, torch.Generator(), share=0.0), 128)) > 2


def test_small_groups_fill_a_batch_with_neighbouring_groups() -> None:
    keys = _keys(500, 100)  # 5 items per group, batches of 50: about ten groups each, all contiguous
    order = grouped_order(keys, 50, torch.Generator().manual_seed(0))
    for b in range(10):
        batch = [keys[i] for i in order[b * 50 : (b + 1) * 50].tolist()]
        runs = 1 + sum(x != y for x, y in zip(batch, batch[1:], strict=False))
        assert runs == len(set(batch)), "each group's items in a batch are contiguous: no group is split up"


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="share"):
        grouped_order([0, 1], 2, torch.Generator(), share=1.5)
    with pytest.raises(ValueError, match="batch_size"):
        grouped_order([0, 1], 0, torch.Generator())


def test_group_keys_read_facts_and_label_and_name_a_missing_field() -> None:
    records = shapes(n=6, seed=2).records
    keys = group_keys(records, ["shape", "colour"])
    assert keys == [(str(r.facts["shape"]), str(r.facts["colour"])) for r in records]
    assert group_keys(records, ["label"]) == [(r.label,) for r in records]
    bare = Record(id="x-7", values={"caption": "hello"}, facts={"shape": "circle"}, source="items.jsonl")
    with pytest.raises(DataError, match=r"items\.jsonl.*id='x-7'.*field 'colour'.*shape"):
        group_keys([bare], ["shape", "colour"])
