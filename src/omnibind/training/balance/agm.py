"""AGM: adaptive gradient modulation from Shapley mono-modal responses, for any number of modalities.

The fused logits are split into one *response* per modality, its Shapley value over the subsets of
modalities the head sees (others masked as absent; the empty set is worth 0, so the responses add up to
the fused logits). How well each response alone predicts the label, compared with the other modalities
and with its own running average, sets a coefficient on that modality's gradients::

    phi_m   = Shapley value of m for v(S) = head(z | only S)        # [B, C], exact or Monte-Carlo
    c_m     = mean_i criterion(phi_m,i, y_i)                         # -log softmax(phi_m)_y
    r_m     = exp(mean_{n != m} c_n - c_m)                           # = exp(2 (cbar - c_m)) for M = 2
    r*_m    = the same from running averages C_m of c_m (before this step's update)
    kappa_m = exp(alpha * min(r*_m - r_m, 10));   g <- kappa_m * g for every gradient of modality m

A modality that improves faster than its history says (``r_m > r*_m``) is slowed down, one that lags
is sped up.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor

from omnibind.errors import OmnibindError
from omnibind.evaluation.shapley import shapley_values
from omnibind.training.balance.base import (
    BALANCE_METHODS,
    BalancePolicy,
    StepContext,
    check_option,
    check_window,
)

_MAX_LOSS = -math.log(1e-8)  # the reference floors the true-class probability at 1e-8
_MAX_GAP = 10.0  # and caps r* - r at 10 before the exponential
_GROUPS = 8  # Monte-Carlo: groups of items with their own orders (more costs Python time, not head rows)


def _visited(
    names: list[str], samples: int | None, generator: torch.Generator | None
) -> list[frozenset[str]]:
    """The non-empty subsets :func:`shapley_values` asks for (advances ``generator`` as it would)."""
    needed: set[frozenset[str]] = set()

    def record(subset: frozenset[str]) -> float:
        needed.add(subset)
        return 0.0

    shapley_values(record, names, samples, generator, empty=0.0)
    return sorted(needed, key=lambda s: (len(s), sorted(s)))


def shapley_responses(
    context: StepContext, samples: int | None, generator: torch.Generator | None = None
) -> tuple[dict[str, Tensor], int]:
    """Each modality's Shapley share of the head's logits, over subsets masked as absent.

    ``v(S)`` for item ``i`` is the head's logits when it sees only the modalities of ``S`` that ``i``
    has, and 0 when it has none of them; so an absent modality's share is exactly 0 and the shares of
    an item add up to its fused logits. Every subset needed goes through the head in one batched pass
    without gradient (eval mode).

    Monte-Carlo: the items are dealt into up to ``_GROUPS`` groups and each group draws its own
    ``samples`` orders (each used with its reverse), so the estimates of different items are not tied to
    one order while the head still runs only on the subsets each item's orders visit. The orders of a
    group are drawn twice from the same generator state: once to list the subsets, once to combine them.

    Args:
        context: the step (its embeddings, presence and head).
        samples: ``None`` for the exact values (``2^M - 1`` subsets per item), else the number of random
            orders per item (each with its reverse: at most ``2 samples (M - 1) + 1`` subsets per item).
        generator: random source of the orders (Monte-Carlo only; if ``None``, one seeded from the
            global generator).

    Returns:
        ``{modality: phi [B, C]}`` and the number of head rows evaluated (items x subsets).
    """
    names = list(context.head.modalities)
    b, m = context.present.shape
    device = context.present.device
    if samples is not None and generator is None:  # a private generator, seeded from the global one
        generator = torch.Generator().manual_seed(int(torch.randint(2**62, (1,))))
    if samples is None:
        groups = [torch.arange(b, device=device)]
    else:
        groups = [torch.arange(g, b, _GROUPS, device=device) for g in range(min(_GROUPS, b))]
    plans = []  # per group: its items, the subsets its orders visit, the generator state that draws them
    for items in groups:
        state = generator.get_state() if generator is not None else None
        plans.append((items, _visited(names, samples, generator), state))

    rows, masks = [], []
    for items, subsets, _ in plans:
        keep = torch.tensor([[n in s for n in names] for s in subsets], dtype=torch.bool, device=device)
        block = context.present[items].unsqueeze(0) & keep.unsqueeze(1)  # [S_g, n_g, M]
        masks.append(block.reshape(-1, m))
        rows.append(items.repeat(len(subsets)))
    mask = torch.cat(masks)
    logits = context.masked_logits(torch.cat(rows), mask)  # [R, C]
    values = logits * mask.any(dim=1, keepdim=True)  # an item with none of S: value 0, like the empty set

    phi = {n: logits.new_zeros(b, logits.shape[1]) for n in names}
    offset = 0
    for items, subsets, state in plans:
        block = values[offset : offset + len(subsets) * len(items)].view(len(subsets), len(items), -1)
        offset += block.shape[0] * block.shape[1]
        table = {s: block[k] for k, s in enumerate(subsets)}
        if generator is not None and state is not None:
            generator.set_state(state)
        shares = shapley_values(
            table.__getitem__, names, samples, generator, empty=torch.zeros_like(block[0])
        )
        for n in names:
            phi[n][items] = shares[n]
    return phi, len(mask)


def agm_coefficients(losses: dict[str, float], running: dict[str, float], alpha: float) -> dict[str, float]:
    """AGM's coefficient of each modality from its response loss now and its running average.

    Args:
        losses: ``{modality: c_m}`` of this step (modalities absent from the step left out).
        running: ``{modality: C_m}``, the running averages before this step; a modality without one
            takes its current loss (no history: no modulation from it).
        alpha: modulation strength (>= 0).

    Returns:
        ``{modality: kappa_m}``; all 1 when fewer than two modalities have a loss.

    Example:
        >>> ks = agm_coefficients({"a": 0.5, "b": 1.5}, {"a": 1.0, "b": 1.0}, alpha=1.0)
        >>> round(ks["a"], 3), round(ks["b"], 3)      # a improved faster than its history: slowed
        (0.179, 1.882)
    """
    if len(losses) < 2:
        return {m: 1.0 for m in losses}
    history = {m: running.get(m, c) for m, c in losses.items()}

    def ratio(values: dict[str, float], m: str) -> float:
        others = [v for n, v in values.items() if n != m]
        return math.exp(sum(others) / len(others) - values[m])

    return {m: math.exp(alpha * min(ratio(history, m) - ratio(losses, m), _MAX_GAP)) for m in losses}


@BALANCE_METHODS.register("agm")
class AGM(BalancePolicy):
    """Adaptive gradient modulation with Shapley responses over masked modalities.

    After the plain backward pass of the fused loss, the Shapley responses ``phi_m`` are computed without
    gradient (:func:`shapley_responses`), their losses against the labels give the coefficients
    (:func:`agm_coefficients`), and every gradient tensor of ``groups[m]`` is multiplied by
    ``kappa_m``. The head keeps the plain gradient of the fused loss.

    Why scale ``groups[m]`` after backward instead of hooking ``phi_m`` as the reference does: the
    reference backpropagates ``sum_m phi_m`` (which equals the fused logits) with the gradient into
    ``phi_m`` multiplied by ``kappa_m``. For a head that is additive over modalities (late fusion with
    a linear classifier, the reference's setting) ``phi_m`` depends on encoder ``m`` only, so encoder
    ``m``'s gradient is exactly ``kappa_m`` times the plain one: what this policy does. For other heads
    the hooked version would mix the coefficients of several modalities into one encoder and needs a
    differentiable pass through every subset (``2^M`` head passes with a graph); scaling the groups keeps
    the cost at one no-grad batched head pass and gives the head the exact gradient of its loss. (The
    reference also scales the head's per-modality weights; here the head is not modulated.)

    Args:
        alpha: modulation strength (>= 0); the reference uses 2.5 on AV-MNIST.
        momentum: ``None`` for the reference's running average (the mean of every step so far), or a
            weight in ``[0, 1)`` for an exponential moving average ``C <- momentum C + (1 - momentum) c``.
        samples: random orders per item (each with its reverse) when Monte-Carlo Shapley is used.
        exact_max: use exact Shapley (``2^M - 1`` subsets) up to this many modalities and Monte-Carlo
            above; 0 always uses Monte-Carlo.
        budget: head rows the Shapley pass may use per step, as a multiple of the batch size ``B``. An
            item needs ``2^M - 1`` rows (exact) or up to ``2 samples (M - 1) + 1`` (Monte-Carlo); when
            the whole batch would need more, the responses come from a random subset of the items
            (with the default 3: every item at M = 2, 27 of 64 at M = 3, 12 of 64 at M = 8). ``None``
            always uses every item.
        start: first fraction of the run's steps at which modulation is on.
        end: fraction of the run's steps after which modulation is off again.

    References:
        Li et al., "Boosting Multi-modal Model Performance with Adaptive Gradient Modulation", ICCV 2023;
        ``shared/papers/fusion.md`` section 4; ``docs/balance.md``.

    Example:
        >>> policy = AGM(alpha=2.5, samples=1, exact_max=4, budget=3.0)
        >>> policy.state_dict()
        {'running': {}, 'count': {}}
    """

    def __init__(
        self,
        alpha: float = 2.5,
        momentum: float | None = None,
        samples: int = 1,
        exact_max: int = 4,
        budget: float | None = 3.0,
        start: float = 0.0,
        end: float = 1.0,
    ) -> None:
        number = isinstance(alpha, (int, float)) and not isinstance(alpha, bool)
        check_option(number and alpha >= 0, "alpha", "a number >= 0", alpha)
        ok = momentum is None or (isinstance(momentum, (int, float)) and 0.0 <= momentum < 1.0)
        check_option(
            ok and not isinstance(momentum, bool), "momentum", "null or a number in [0, 1)", momentum
        )
        check_option(type(samples) is int and samples >= 1, "samples", "an integer >= 1", samples)
        check_option(type(exact_max) is int and exact_max >= 0, "exact_max", "an integer >= 0", exact_max)
        number = isinstance(budget, (int, float)) and not isinstance(budget, bool)
        check_option(budget is None or (number and budget > 0), "budget", "null or a number > 0", budget)
        check_window(start, end)
        self.alpha = float(alpha)
        self.momentum = momentum
        self.samples = samples
        self.exact_max = exact_max
        self.budget = budget
        self.start, self.end = start, end
        self.running: dict[str, float] = {}
        self.count: dict[str, int] = {}
        self.coefficients: dict[str, float] = {}

    def response_losses(self, context: StepContext) -> dict[str, float]:
        """``{modality: c_m}``: mean loss of each modality's Shapley response over the items that have it.

        Modalities no item of the step has are left out. The items (when the budget asks for a subset)
        and the Monte-Carlo orders are drawn from a generator seeded with the step number, so a resumed
        run draws the same ones without any state to save.
        """
        names = list(context.head.modalities)
        exact = len(names) <= self.exact_max
        generator = torch.Generator().manual_seed(context.step)
        full = 2 ** len(names) - 1
        per_item = full if exact else min(full, 2 * self.samples * (len(names) - 1) + 1)
        b = len(context.present)
        n = b if self.budget is None else max(1, min(b, int(self.budget * b / per_item)))
        if n < b:
            idx = torch.randperm(b, generator=generator)[:n].to(context.present.device)
            z = {m: e[idx] for m, e in context.embeddings.items()}
            context = replace(
                context, embeddings=z, present=context.present[idx], targets=context.targets[idx]
            )
        phi, _ = shapley_responses(context, None if exact else self.samples, generator)
        loss = context.item_losses(torch.stack([phi[m] for m in names])).clamp(max=_MAX_LOSS)  # [M, n]
        has = context.present.T  # [M, n]
        return {m: float(loss[j][has[j]].mean()) for j, m in enumerate(names) if has[j].any()}

    def after_backward(self, context: StepContext) -> None:
        self.coefficients = {}
        losses = self.response_losses(context)
        coefficients = agm_coefficients(losses, self.running, self.alpha)
        for m, c in losses.items():  # the running averages move after the coefficients are taken
            self.count[m] = self.count.get(m, 0) + 1
            if m not in self.running:
                self.running[m] = c
            elif self.momentum is None:
                self.running[m] += (c - self.running[m]) / self.count[m]
            else:
                self.running[m] = self.momentum * self.running[m] + (1 - self.momentum) * c
        if not context.active(self.start, self.end):
            return
        self.coefficients = coefficients
        for m, params in context.groups.items():
            k = coefficients.get(m, 1.0)
            for p in params:
                if p.grad is not None:
                    p.grad.mul_(k)

    def metrics(self) -> dict[str, float]:
        return {f"balance/coeff/{m}": k for m, k in self.coefficients.items()}

    def state_dict(self) -> dict[str, Any]:
        return {"running": dict(self.running), "count": dict(self.count)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "running" not in state or "count" not in state:
            raise OmnibindError(
                "task.balance: agm: the checkpoint holds no AGM running averages; it was written by a run "
                "with other balance settings (resume with the settings it was started with)"
            )
        self.running = {m: float(v) for m, v in state["running"].items()}
        self.count = {m: int(v) for m, v in state["count"].items()}
