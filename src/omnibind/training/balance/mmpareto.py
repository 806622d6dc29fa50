"""MMPareto: mix the fused and the unimodal gradient of each modality without letting them conflict.

Each modality's encoder gets two gradients: ``g_f`` from the fused loss and ``g_u`` from its own
unimodal loss (the head with every other modality masked as absent). When they agree (cosine > 0) both
count equally; when they conflict, the mix with the smallest norm (the 2-task Pareto / MGDA answer)
decides the direction, and the magnitude is restored to at least that of the plain sum::

    w   = 1/2                      if cos(g_f, g_u) > 0
        = argmin_{w in [0, 1]} || w g_f + (1 - w) g_u ||   otherwise (closed form below)
    g   = 2 (w g_f + (1 - w) g_u)                          # per modality, over all its parameters
    g_t <- gamma * g_t * max(1, ||g_f,t + g_u,t|| / ||g_t||) for each parameter tensor t

The head (and any parameter outside the modality groups) gets the plain gradient of
``fused loss + sum of unimodal losses``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from omnibind.training.balance.base import BALANCE_METHODS, BalancePolicy, StepContext, check_option


def pareto_weight(fused: Tensor, unimodal: Tensor) -> float:
    """The weight ``w`` of the fused gradient: 1/2 when the two agree, else the min-norm mix.

    The min-norm weight of two vectors has a closed form: ``w* = <g_u, g_u - g_f> / ||g_f - g_u||^2``,
    clipped to ``[0, 1]``. A zero gradient (a modality absent from the step) gives 1/2.

    Inputs:
        fused, unimodal: flat gradients ``[P]`` of one modality's parameters.

    Example:
        >>> pareto_weight(torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0]))   # conflict
        0.6
    """
    if not fused.any() or not unimodal.any() or float(torch.dot(fused, unimodal)) > 0:
        return 0.5
    diff = fused - unimodal  # not zero: the two are not parallel with a positive cosine
    return min(max(float(torch.dot(unimodal, -diff)) / float(torch.dot(diff, diff)), 0.0), 1.0)


@BALANCE_METHODS.register("mmpareto")
class MMPareto(BalancePolicy):
    """MMPareto gradient mixing per modality group, for any number of modalities.

    ``backward`` runs two passes instead of one: the fused loss, then the sum of the M unimodal losses
    (all M unimodal predictions in one batched head call with gradient; each unimodal loss averages the
    items that have that modality). Because the other modalities are masked out, modality ``m``'s
    parameters get gradient only from its own unimodal loss in the second pass, so two passes give
    every ``g_f`` and ``g_u`` (the reference runs M + 2). Cosine and min-norm weight are taken over all of
    a modality's parameters together; the norm correction and ``gamma`` apply per parameter tensor.

    Args:
        gamma: factor on the mixed gradient of every modality group (> 0; the paper uses 1.5).

    References:
        Wei & Hu, "MMPareto: Boosting Multimodal Learning with Innocent Unimodal Assistance", ICML 2024;
        ``shared/papers/fusion.md`` section 4; ``docs/balance.md``.

    Example:
        >>> MMPareto(gamma=1.5).weights     # fused-loss weight per modality, filled by backward
        {}
    """

    def __init__(self, gamma: float = 1.5) -> None:
        number = isinstance(gamma, (int, float)) and not isinstance(gamma, bool)
        check_option(number and gamma > 0, "gamma", "a number > 0", gamma)
        self.gamma = float(gamma)
        self.weights: dict[str, float] = {}

    def backward(self, loss: Tensor, context: StepContext) -> None:
        names = context.head.modalities
        logits, _ = context.subset_logits([{m} for m in names], grad=True)  # [M, B, C]
        per_item = context.item_losses(logits)  # [M, B]
        has = context.present.T  # [M, B]
        unimodal = [per_item[j][has[j]].mean() for j in range(len(names)) if has[j].any()]

        loss.backward(retain_graph=bool(unimodal))
        params = [p for m in names for p in context.groups.get(m, [])]
        fused = {p: p.grad if p.grad is not None else torch.zeros_like(p) for p in params}
        for p in params:
            p.grad = None  # the second pass leaves g_u here; the head keeps accumulating the sum
        if unimodal:
            torch.stack(unimodal).sum().backward()

        self.weights = {}
        for m in names:
            group = context.groups.get(m, [])
            if not group:
                continue
            g_f = [fused[p] for p in group]
            g_u = [p.grad if p.grad is not None else torch.zeros_like(p) for p in group]
            w = pareto_weight(torch.cat([g.flatten() for g in g_f]), torch.cat([g.flatten() for g in g_u]))
            self.weights[m] = w
            for p, f, u in zip(group, g_f, g_u, strict=True):
                mixed = 2 * (w * f + (1 - w) * u)
                norm, plain = mixed.norm(), (f + u).norm()
                if norm > 0 and plain > norm:
                    mixed = mixed * (plain / norm)
                p.grad = mixed * self.gamma

    def metrics(self) -> dict[str, float]:
        return {f"balance/weight/{m}": w for m, w in self.weights.items()}
