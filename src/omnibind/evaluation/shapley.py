"""Shapley values over modalities: exact over every subset, or Monte-Carlo over random orders.

A *value function* maps a subset of modalities (a ``frozenset`` of names) to a number or a tensor (for
instance the accuracy of a head that sees only that subset, or its logits ``[B, C]``). The Shapley value of
modality ``m`` is its average marginal contribution over every order in which the modalities could
arrive::

    phi_m = sum over S not containing m of |S|! (M - |S| - 1)! / M! * (v(S + {m}) - v(S))

so the values add up to ``v(all) - v(empty)``. Exact evaluation costs ``2^M`` calls of ``v``; with
``samples=K`` the orders are drawn at random (each draw also uses its reverse, which lowers the variance)
and ``v`` is called at most ``2 * K * M`` times, each subset once (values are cached). Both are used by
the diagnostics (``evaluation/importance.py``) and by AGM's balance policy (``training/balance/agm.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import combinations
from math import factorial
from typing import TypeVar

import torch

V = TypeVar("V", float, torch.Tensor)


def shapley_values(
    value: Callable[[frozenset[str]], V],
    modalities: Sequence[str],
    samples: int | None = None,
    generator: torch.Generator | None = None,
    empty: V | None = None,
) -> dict[str, V]:
    """Shapley value of each modality under ``value``.

    Args:
        value: ``v(S)`` for a subset ``S`` of ``modalities``; a float or a tensor (all of one shape).
        modalities: the players.
        samples: ``None`` for the exact sum over all ``2^M`` subsets; otherwise the number of random
            orders (each used with its reverse) of the Monte-Carlo estimate.
        generator: random source of the orders (Monte-Carlo only).
        empty: ``v`` of the empty set; by default ``value(frozenset())`` is called.

    Returns:
        ``{modality: phi}``; exact values sum to ``v(all) - v(empty)``, and so do Monte-Carlo ones (every
        sampled order telescopes).

    Raises:
        ValueError: no modalities, or ``samples`` < 1.

    Example:
        >>> v = lambda s: float(len(s & {"a", "b"}) == 2)          # a and b are needed together
        >>> shapley_values(v, ["a", "b", "c"])
        {'a': 0.5, 'b': 0.5, 'c': 0.0}
    """
    names = list(modalities)
    if not names:
        raise ValueError("shapley_values needs at least one modality")
    if samples is not None and samples < 1:
        raise ValueError(f"samples must be at least 1 (or None for the exact values), got {samples}")
    cache: dict[frozenset[str], V] = {}
    if empty is not None:
        cache[frozenset()] = empty

    def v(subset: frozenset[str]) -> V:
        if subset not in cache:
            cache[subset] = value(subset)
        return cache[subset]

    m = len(names)
    phi: dict[str, V] = {}
    if samples is None:
        weights = [factorial(k) * factorial(m - k - 1) / factorial(m) for k in range(m)]
        for name in names:
            others = [n for n in names if n != name]
            total = None
            for k in range(m):
                for rest in combinations(others, k):
                    s = frozenset(rest)
                    term = (v(s | {name}) - v(s)) * weights[k]
                    total = term if total is None else total + term
            phi[name] = total  # type: ignore[assignment]
        return phi

    sums: dict[str, V | None] = {name: None for name in names}
    for _ in range(samples):
        order = torch.randperm(m, generator=generator).tolist()
        for perm in (order, order[::-1]):
            before: frozenset[str] = frozenset()
            for j in perm:
                after = before | {names[j]}
                delta = v(after) - v(before)
                prev = sums[names[j]]
                sums[names[j]] = delta if prev is None else prev + delta
                before = after
    return {name: total / (2 * samples) for name, total in sums.items()}  # type: ignore[operator,misc]
