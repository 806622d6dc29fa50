"""Sequential modular fusion (MultiModN): a state updated by one module per present modality.

A learned initial state ``s_0`` is updated in turn by each modality's module; an item that lacks the
modality keeps its state (skipping is per item, unlike the reference code, which skips a module for the
whole batch when any value in it is missing). A shared decoder predicts from the state after every step,
so the head shows how the prediction moves as each modality arrives, and the loss rewards a good
prediction at every step. A penalty on the size of each state change keeps updates small.

Update of step t (modality m, presence bit p)::

    s_t = s_{t-1} + p * f_m([s_{t-1}, z_m])          # residual update; p = 0 leaves the state as it is
    loss = mean over items and their steps of CE(decoder(s_t), y) + state_penalty * mean ||s_t - s_{t-1}||^2
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from omnibind.errors import ConfigError
from omnibind.fusion.base import FUSION_HEADS, Criterion, FusionHead, FusionOutput
from omnibind.types import Embeddings


@FUSION_HEADS.register("sequential")
class SequentialFusion(FusionHead):
    """MultiModN: per-modality state updates in a fixed or per-batch shuffled order, a prediction per step.

    Args:
        modalities: the modality names (column order of ``present``; the ``fixed`` update order).
        dim: width D of the embeddings.
        num_classes: number of classes C.
        state: width of the state vector.
        hidden: hidden width of each modality's update module.
        order: ``fixed`` (the modality order) or ``shuffle`` (a new random order for every training
            batch, so the model does not depend on one order; evaluation uses the fixed order).
        state_penalty: weight of the mean squared state change (MultiModN uses 0.01).
        step_loss: train on the prediction after every step (MultiModN); False trains the last only.
        dropout: dropout inside the update modules.

    Inputs:
        embeddings: ``{modality: Tensor[B, D]}``; present: ``bool[B, M]``.

    Returns:
        :class:`FusionOutput` with ``logits [B, C]`` (the last state's prediction), ``step_logits
        [B, M + 1, C]``, ``step_mask bool[B, M + 1]``, ``step_order`` and ``aux_loss`` (the penalty).

    References:
        Swamy et al., "MultiModN: Multimodal, Multi-Task, Interpretable Modular Networks", NeurIPS 2023.

    Example:
        >>> head = SequentialFusion(["image", "audio"], dim=8, num_classes=3, state=16)
        >>> z = {"image": torch.randn(2, 8), "audio": torch.randn(2, 8)}
        >>> out = head(z, torch.tensor([[1, 0], [1, 1]], dtype=torch.bool))
        >>> out.logits.shape, out.step_logits.shape, out.step_order
        (torch.Size([2, 3]), torch.Size([2, 3, 3]), ('image', 'audio'))
    """

    def __init__(
        self,
        modalities: Sequence[str],
        dim: int,
        num_classes: int,
        state: int = 64,
        hidden: int = 64,
        order: str = "fixed",
        state_penalty: float = 0.01,
        step_loss: bool = True,
        dropout: float = 0.1,
    ) -> None:
        super().__init__(modalities, dim, num_classes)
        if order not in ("fixed", "shuffle"):
            raise ConfigError(f"sequential fusion: order must be 'fixed' or 'shuffle', got {order!r}")
        self.order = order
        self.state_penalty = state_penalty
        self.step_loss = step_loss
        self.initial = nn.Parameter(torch.randn(state) * 0.02)
        self.update = nn.ModuleDict(
            {
                m: nn.Sequential(
                    nn.Linear(state + dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, state)
                )
                for m in self.modalities
            }
        )
        self.decode = nn.Sequential(nn.LayerNorm(state), nn.Linear(state, num_classes))

    def _step_order(self) -> list[int]:
        if self.order == "shuffle" and self.training:
            return torch.randperm(len(self.modalities)).tolist()  # global RNG: seeded and checkpointed
        return list(range(len(self.modalities)))

    def forward(self, embeddings: Embeddings, present: Tensor) -> FusionOutput:
        z = self.stack(embeddings, present)  # [B, M, D]
        b = z.shape[0]
        s = self.initial.expand(b, -1)  # [B, S]
        states, changes = [s], []
        order = self._step_order()
        for j in order:
            p = present[:, j : j + 1]  # [B, 1]
            delta = self.update[self.modalities[j]](torch.cat([s, z[:, j]], dim=1))  # [B, S]
            delta = torch.where(p, delta, torch.zeros((), dtype=delta.dtype))  # absent: no change at all
            s = s + delta
            states.append(s)
            changes.append(delta.pow(2).sum(dim=1))  # [B]
        step_logits = self.decode(torch.stack(states, dim=1))  # [B, M + 1, C]
        step_mask = torch.cat([present.new_ones(b, 1), present[:, order]], dim=1)  # [B, M + 1]
        moved = step_mask[:, 1:]
        penalty = (torch.stack(changes, 1) * moved).sum() / moved.sum().clamp(min=1)
        return FusionOutput(
            logits=step_logits[:, -1],
            aux_loss=self.state_penalty * penalty,
            step_logits=step_logits,
            step_mask=step_mask,
            step_order=tuple(self.modalities[j] for j in order),
        )

    def loss(self, out: FusionOutput, targets: Tensor, criterion: Criterion) -> Tensor:
        """Mean over items of the mean ``criterion`` over the item's real steps, plus the state penalty."""
        if not self.step_loss or out.step_logits is None or out.step_mask is None:
            return super().loss(out, targets, criterion)
        b, steps, c = out.step_logits.shape
        repeat = targets.repeat_interleave(steps, dim=0)  # step-major per item, as flatten(0, 1) below
        per_step = criterion(out.step_logits.flatten(0, 1), repeat).view(b, steps)  # [B, S]
        weight = out.step_mask.to(per_step.dtype)
        per_item = (per_step * weight).sum(1) / weight.sum(1)  # the initial step always counts
        loss = per_item.mean()
        return loss if out.aux_loss is None else loss + out.aux_loss
